//! Throwaway timing of the perf workloads: `cargo run --release -p proxima-core --example perf_miners [filter] [samples]`.
fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let samples = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    if std::env::var("T1").is_ok() {
        tch::set_num_threads(1);
    }
    let mut extra = vec![proxima_core::perf::Workload::miner(serde_json::json!({"type": "AngularMiner"}), 1024, 128)];
    extra.push(proxima_core::perf::Workload::miner(serde_json::json!({"type": "TripletMarginMiner", "type_of_triplets": "semihard"}), 4096, 128));
    extra.push(proxima_core::perf::Workload::miner(serde_json::json!({"type": "DistanceWeightedMiner"}), 1024, 128));
    extra.push(proxima_core::perf::Workload::miner(serde_json::json!({"type": "UniformHistogramMiner"}), 1024, 128));
    extra.push(proxima_core::perf::Workload::miner(serde_json::json!({"type": "HDCMiner"}), 1024, 128));
    extra.push(proxima_core::perf::Workload::miner(serde_json::json!({"type": "PairMarginMiner"}), 1024, 128));
    for w in proxima_core::perf::workloads().iter().chain(extra.iter()).filter(|w| w.name.contains(&filter)) {
        let r = proxima_core::perf::run(w, samples);
        let min = r.samples_s.iter().cloned().fold(f64::NAN, f64::min);
        println!("{:45} median {:8.4} s  min {:8.4} s  peak {:7.1} MiB  {}", w.name, r.median_s, min, r.peak_rss_mb, r.error.unwrap_or_default());
    }
}
