//! Measures synthetic-logo generation speed and loader throughput at 128×128.
//!
//! `cargo run --release -p proxima-data --example data_bench [flickrlogos27_source_dir]`
//! (with a source dir, it is imported first and the loader is measured on its crops).

use std::time::Instant;

use proxima_data::loader::bench_loader_dir;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = std::env::temp_dir().join(format!("proxima-data-bench-{}", std::process::id()));
    let t = Instant::now();
    let r = proxima_data::synth(40, 30, 64, 0, 0.5, &tmp.join("s64"))?;
    println!("synth 40x30 @64px: {} images in {:.2}s", r.images, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let r = proxima_data::synth(40, 30, 128, 0, 0.5, &tmp.join("s128"))?;
    println!("synth 40x30 @128px: {} images in {:.2}s", r.images, t.elapsed().as_secs_f64());
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let b = bench_loader_dir(&tmp.join("s128"), 64, 30, workers)?;
    println!("loader (synthetic 128px PNGs -> train aug @128): {:.0} images/s ({} images, {:.2}s, {} workers)", b.images_per_sec, b.images, b.seconds, b.workers);
    if let Some(src) = std::env::args().nth(1) {
        let t = Instant::now();
        let imp = proxima_data::import_flickrlogos27(std::path::Path::new(&src), &tmp.join("flickr"), &Default::default())?;
        println!("import FlickrLogos-27: {} crops of {} classes in {:.2}s", imp.crops, imp.crops_per_class.len(), t.elapsed().as_secs_f64());
        let b = bench_loader_dir(&imp.crops_dir, 64, 30, workers)?;
        println!("loader (FlickrLogos-27 crops -> train aug @128): {:.0} images/s ({} images, {:.2}s, {} workers)", b.images_per_sec, b.images, b.seconds, b.workers);
    }
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}
