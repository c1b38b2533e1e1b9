//! Throwaway timing of the perf workloads: `cargo run --release -p proxima-core --example perf_miners [filter]`.
fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    for w in proxima_core::perf::workloads().iter().filter(|w| w.name.contains(&filter)) {
        let r = proxima_core::perf::run(w, 5);
        println!("{:45} median {:9.4} s  peak {:8.1} MiB  {:?}", w.name, r.median_s, r.peak_rss_mb, r.error);
    }
}
