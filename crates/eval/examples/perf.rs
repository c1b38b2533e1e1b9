//! Timing of k-NN + retrieval metrics on synthetic data.
//!
//! Usage: `cargo run --release -p proxima-eval --example perf -- N D [SEED] [RUNS]`

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |i: usize, default: u64| args.get(i).map_or(default, |s| s.parse().expect("integer argument"));
    let (n, d, seed, runs) = (get(0, 10_000) as usize, get(1, 128) as usize, get(2, 0), get(3, 3) as usize);
    match proxima_eval::perf_accuracy_runs(n, d, seed, runs) {
        Ok(r) => println!("{}", serde_json::to_string_pretty(&r).expect("serialisable")),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
