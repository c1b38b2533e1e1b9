//! Prints the full [`proxima_eval::perf_accuracy_runs`] report (k-NN time, GEMM rate per
//! thread, metrics) as JSON: `cargo run --release -p proxima-eval --example perf_accuracy -- N D RUNS`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let n = args.first().copied().unwrap_or(10_000);
    let d = args.get(1).copied().unwrap_or(128);
    let runs = args.get(2).copied().unwrap_or(3);
    let report = proxima_eval::perf_accuracy_runs(n, d, 0, runs)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
