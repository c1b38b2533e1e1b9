use std::time::Instant;
fn main() {
    let w = &proxima_core::perf::workloads().into_iter().find(|w| w.name.starts_with("miner/TripletMarginMiner")).unwrap();
    if std::env::var("T1").is_ok() { tch::set_num_threads(1); }
    for _ in 0..2 {
        let r = proxima_core::perf::run(w, 7);
        let mut s = r.samples_s.clone(); s.sort_by(f64::total_cmp);
        println!("median {:.4} min {:.4} peak {:.0}", r.median_s, s[0], r.peak_rss_mb);
    }
    let _ = Instant::now();
}
