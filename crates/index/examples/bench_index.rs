//! HNSW vs exact search: recall@10 and queries/s on clustered unit vectors, one JSON line.
//!
//! `cargo run --release -p proxima-index --example bench_index -- [N] [D] [QUERIES] [SEED] [M] [EF_CONSTRUCTION] [EF_SEARCH]`
//! (defaults: 100000 128 1000 0 and the default HNSW parameters).

use proxima_index::{HnswConfig, bench_index_with};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    let d = HnswConfig::default();
    let config = HnswConfig { m: arg(4, d.m), ef_construction: arg(5, d.ef_construction), ef_search: arg(6, d.ef_search), exact_below: 0 };
    let report = bench_index_with(arg(0, 100_000), arg(1, 128), arg(2, 1_000), arg(3, 0) as u64, config)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
