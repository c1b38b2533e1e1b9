//! Parallel batch loader with bounded prefetch and an optional decoded-image cache.
//!
//! Why: decoding and augmenting JPEGs is the usual bottleneck of metric-learning training on a
//! CPU host. A producer thread assembles batches on a dedicated rayon pool (one sample per task)
//! and hands them over a bounded channel, so at most `prefetch` finished batches wait in memory
//! and the trainer never blocks on I/O while the next ones are being made. Augmentation is seeded
//! by `(epoch, sample index)`, so batches are identical whatever the number of workers.

use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::{Pipeline, PipelineConfig, resize_rgb};
use crate::dataset::Dataset;
use crate::decode::{DecodeOptions, decode_file};
use crate::error::{DataError, Result};
use crate::sampler::{MPerClassConfig, MPerClassSampler, SamplerState, SmallClassPolicy};

/// Loader configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// Output `[height, width]`.
    pub image_size: [u32; 2],
    /// Worker threads (0 = number of CPUs).
    pub workers: usize,
    /// Finished batches allowed to wait in the channel.
    pub prefetch: usize,
    /// Keep decoded (and bbox-cropped, shrunk) images in memory across epochs.
    pub cache: bool,
    /// With `cache`, shrink cached images so their longer side is at most this (0 = keep).
    pub cache_max_side: u32,
    /// Crop samples to their bounding box before augmenting.
    pub crop_to_bbox: bool,
    /// Decoding options.
    pub decode: DecodeOptions,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig { image_size: [128, 128], workers: 0, prefetch: 2, cache: false, cache_max_side: 256, crop_to_bbox: true, decode: DecodeOptions::default() }
    }
}

/// One batch: images `[B, 3, H, W]` row-major, labels and data-set indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Normalised pixels, `B × 3 × H × W`.
    pub images: Vec<f32>,
    /// Class labels.
    pub labels: Vec<i64>,
    /// Data-set sample indices.
    pub indices: Vec<usize>,
    /// `[B, 3, H, W]`.
    pub shape: [usize; 4],
    /// Epoch the batch belongs to (its augmentation seed).
    pub epoch: u64,
}

/// The loader.
pub struct Loader {
    dataset: Arc<Dataset>,
    pipeline: Arc<Pipeline>,
    cfg: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    cache: Arc<Vec<OnceLock<Arc<RgbImage>>>>,
}

impl Loader {
    /// Builds a loader over `dataset` with `pipeline`.
    pub fn new(dataset: Arc<Dataset>, pipeline: Pipeline, cfg: LoaderConfig) -> Result<Self> {
        if cfg.image_size[0] == 0 || cfg.image_size[1] == 0 {
            return Err(DataError::Config("loader: image_size must be > 0".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.workers)
            .thread_name(|i| format!("proxima-data-{i}"))
            .build()
            .map_err(|e| DataError::Config(format!("loader: cannot start worker pool: {e}")))?;
        let cache = Arc::new((0..if cfg.cache { dataset.len() } else { 0 }).map(|_| OnceLock::new()).collect());
        Ok(Loader { dataset, pipeline: Arc::new(pipeline), cfg, pool: Arc::new(pool), cache })
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    fn source(&self, index: usize) -> Result<Arc<RgbImage>> {
        source(&self.dataset, &self.cfg, &self.cache, index)
    }

    /// Loads one sample as normalised CHW floats.
    pub fn load_sample(&self, index: usize, epoch: u64) -> Result<Vec<f32>> {
        let [h, w] = self.cfg.image_size;
        let mut out = vec![0f32; 3 * (h * w) as usize];
        let img = self.source(index)?;
        self.pipeline.run_into(&img, epoch, index as u64, self.cfg.image_size, &mut out);
        Ok(out)
    }

    /// Loads one batch synchronously (in parallel on the worker pool).
    pub fn load_batch(&self, indices: &[usize], epoch: u64) -> Result<Batch> {
        make_batch(&self.dataset, &self.pipeline, &self.cfg, &self.cache, &self.pool, indices, epoch)
    }

    /// Starts producing `plan` (`(epoch, indices)` per batch) in the background.
    pub fn iter<I>(&self, plan: I) -> BatchIter
    where
        I: IntoIterator<Item = (u64, Vec<usize>)>,
        I::IntoIter: Send + 'static,
    {
        let (tx, rx) = sync_channel(self.cfg.prefetch.max(1) - 1);
        let (ds, pl, cfg, cache, pool) = (self.dataset.clone(), self.pipeline.clone(), self.cfg, self.cache.clone(), self.pool.clone());
        let plan = plan.into_iter();
        let handle = std::thread::Builder::new()
            .name("proxima-data-producer".into())
            .spawn(move || {
                for (epoch, indices) in plan {
                    let b = make_batch(&ds, &pl, &cfg, &cache, &pool, &indices, epoch);
                    if tx.send(b).is_err() {
                        break; // consumer dropped the iterator
                    }
                }
            })
            .expect("spawning the producer thread");
        BatchIter { rx: Some(rx), handle: Some(handle) }
    }

    /// Convenience: all batches of one epoch of `batches`.
    pub fn iter_epoch(&self, batches: Vec<Vec<usize>>, epoch: u64) -> BatchIter {
        self.iter(batches.into_iter().map(move |b| (epoch, b)))
    }
}

fn source(ds: &Dataset, cfg: &LoaderConfig, cache: &[OnceLock<Arc<RgbImage>>], index: usize) -> Result<Arc<RgbImage>> {
    let s = ds.samples.get(index).ok_or_else(|| DataError::Invalid(format!("sample index {index} out of range ({} samples)", ds.len())))?;
    if let Some(c) = cache.get(index).and_then(|c| c.get()) {
        return Ok(c.clone());
    }
    let mut img = decode_file(&s.path, &cfg.decode)?;
    if cfg.crop_to_bbox
        && let Some(b) = s.bbox
    {
        let (w, h) = img.dimensions();
        if let Some(c) = crate::flickr::clamp_box([b.x1 as i64, b.y1 as i64, b.x2.ceil() as i64, b.y2.ceil() as i64], w, h, 0.0) {
            img = image::imageops::crop_imm(&img, c[0], c[1], c[2] - c[0], c[3] - c[1]).to_image();
        }
    }
    if let Some(slot) = cache.get(index) {
        let (w, h) = img.dimensions();
        let m = cfg.cache_max_side;
        if m > 0 && w.max(h) > m {
            let s = m as f64 / w.max(h) as f64;
            img = resize_rgb(&img, None, ((w as f64 * s).round() as u32).max(1), ((h as f64 * s).round() as u32).max(1));
        }
        return Ok(slot.get_or_init(|| Arc::new(img)).clone());
    }
    Ok(Arc::new(img))
}

fn make_batch(
    ds: &Dataset,
    pl: &Pipeline,
    cfg: &LoaderConfig,
    cache: &[OnceLock<Arc<RgbImage>>],
    pool: &rayon::ThreadPool,
    indices: &[usize],
    epoch: u64,
) -> Result<Batch> {
    let [h, w] = cfg.image_size;
    let per = 3 * (h * w) as usize;
    let mut images = vec![0f32; per * indices.len()];
    pool.install(|| {
        images.par_chunks_mut(per).zip(indices.par_iter()).try_for_each(|(out, &i)| -> Result<()> {
            let img = source(ds, cfg, cache, i)?;
            pl.run_into(&img, epoch, i as u64, cfg.image_size, out);
            Ok(())
        })
    })?;
    let labels = indices.iter().map(|&i| ds.samples[i].label as i64).collect();
    Ok(Batch { images, labels, indices: indices.to_vec(), shape: [indices.len(), 3, h as usize, w as usize], epoch })
}

/// Iterator over background-produced batches; dropping it stops the producer.
pub struct BatchIter {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Throughput measurement of [`bench_loader`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Images produced.
    pub images: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Images per second (decode + augment + batch).
    pub images_per_sec: f64,
    /// Worker threads used.
    pub workers: usize,
}

/// Measures decode + train-augment + batching throughput at 128×128 over `dataset`
/// (M-per-class batches of `batch_size`, `m = 4`, no cache so every image is decoded).
pub fn bench_loader(dataset: &Dataset, batch_size: usize, batches: usize, workers: usize) -> Result<BenchResult> {
    let m = 4;
    let bs = (batch_size / m).max(1) * m;
    let sampler = MPerClassSampler::new(&dataset.labels(), MPerClassConfig { m, batch_size: bs, small_classes: SmallClassPolicy::Replace, batches_per_epoch: None }, 0)?;
    let pipeline = Pipeline::new(PipelineConfig::train(128), 0)?;
    let cfg = LoaderConfig { image_size: [128, 128], workers, ..Default::default() };
    let loader = Loader::new(Arc::new(dataset.clone()), pipeline, cfg)?;
    let start = Instant::now();
    let mut images = 0;
    for b in loader.iter(sampler.iter_from(SamplerState::default()).take(batches)) {
        images += b?.labels.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(BenchResult { images, seconds, images_per_sec: images as f64 / seconds.max(1e-9), workers: loader.pool.current_num_threads() })
}

/// [`bench_loader`] on a class-per-folder tree.
pub fn bench_loader_dir(root: &Path, batch_size: usize, batches: usize, workers: usize) -> Result<BenchResult> {
    let scan = Dataset::scan_folder(root, &crate::dataset::ScanOptions { verify: false, ..Default::default() })?;
    bench_loader(&scan.dataset, batch_size, batches, workers)
}
