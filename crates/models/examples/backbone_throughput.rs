//! Forward+backward throughput of an embedding model on the CPU (a measurement, not a test).
//!
//! `cargo run --release -p proxima-models --example backbone_throughput -- [backbone] [batch] [size] [iters] [threads]`
//! e.g. `... -- resnet18 32 224 5 2`. Prints seconds per step and images per second.

use std::time::Instant;

use proxima_models::{EmbeddingConfig, EmbeddingModel};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let backbone = arg(0, "resnet18");
    let batch: i64 = arg(1, "32").parse()?;
    let size: i64 = arg(2, "224").parse()?;
    let iters: usize = arg(3, "5").parse()?;
    let threads: i32 = arg(4, "2").parse()?;
    tch::set_num_threads(threads);
    let device = if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu };
    let config = EmbeddingConfig::from_json_str(&format!(r#"{{"backbone": {{"type": "{backbone}"}}, "embedding_size": 128}}"#))?;
    let model = EmbeddingModel::new(config, device)?;
    let xs = Tensor::rand([batch, 3, size, size], (Kind::Float, device));
    let step = || {
        model.var_store().variables().values().for_each(|v| {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        });
        let e = model.embed(&xs).expect("embed");
        e.square().sum(Kind::Float).backward();
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
    };
    step(); // warm-up
    let t = Instant::now();
    for _ in 0..iters {
        step();
    }
    let per_step = t.elapsed().as_secs_f64() / iters as f64;
    println!("{backbone} batch {batch} {size}x{size} on {device:?} ({threads} threads): {per_step:.3} s/step forward+backward, {:.1} images/s", batch as f64 / per_step);
    Ok(())
}
