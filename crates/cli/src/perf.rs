//! `proxima perf`: speed and memory of the core workloads, one JSON line each.
//!
//! Peak memory is a per-process high-water mark, so by default every workload runs in a fresh
//! child process (`proxima perf --only NAME --in-process`) and the parent forwards its line.
//!
//! `--device cuda` runs the loss, miner and training workloads on the GPU (a `--features cuda`
//! build); the evaluation workloads always run on the CPU. Peak memory is host memory only.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::Args;
use proxima_core::loss::BuildContext;
use proxima_core::{Batch, LossSpec};
use proxima_models::{BackboneSpec, EmbeddingConfig, EmbeddingModel};
use proxima_train::trainer::autocast_bf16;
use proxima_train::{Optimizer, OptimizerConfig, ParamGroup};
use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};

/// Arguments of `proxima perf`.
#[derive(Args)]
pub struct PerfArgs {
    /// Run only the workloads whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Run exactly this workload.
    #[arg(long, conflicts_with = "filter")]
    only: Option<String>,
    /// Timed repetitions per workload (the median is reported).
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Run in this process instead of one child process per workload (peak memory is then shared).
    #[arg(long)]
    in_process: bool,
    /// List the workload names and exit.
    #[arg(long)]
    list: bool,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// One result line, fields in the documented order.
#[derive(Serialize)]
struct Line<'a> {
    workload: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    median_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_mb: Option<f64>,
    /// Training workloads: images per second at the median step time.
    #[serde(skip_serializing_if = "Option::is_none")]
    images_per_s: Option<f64>,
    /// Evaluation workloads: GEMM rate of one thread inside the k-NN tiles (GFLOP/s), median run.
    #[serde(skip_serializing_if = "Option::is_none")]
    gemm_gflops_per_thread: Option<f64>,
    /// Evaluation workloads: the k-NN's exact candidate pass (unit, share of chunks recomputed).
    #[serde(skip_serializing_if = "Option::is_none")]
    knn_candidate_pass: Option<String>,
    /// Evaluation workloads: thread-seconds in the k-NN's tile products (GEMM or candidate tiles)
    /// and in selecting the top-k from them (certify and recompute, or the fp32 scan), median run.
    #[serde(skip_serializing_if = "Option::is_none")]
    knn_thread_s: Option<[f64; 2]>,
    /// Set when not the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What one workload measured.
struct Measured {
    /// Median seconds of one sample.
    median_s: f64,
    /// GEMM rate of one thread (evaluation workloads only).
    gemm_gflops_per_thread: Option<f64>,
    /// The k-NN candidate pass and thread-seconds (evaluation workloads only).
    knn_candidate_pass: Option<String>,
    knn_thread_s: Option<[f64; 2]>,
}

impl From<f64> for Measured {
    fn from(median_s: f64) -> Self {
        Measured { median_s, gemm_gflops_per_thread: None, knn_candidate_pass: None, knn_thread_s: None }
    }
}

/// One benchmark workload: `run(samples, device)` returns the median seconds of one sample.
struct Workload {
    name: String,
    /// Images per sample (training workloads), for `images_per_s`.
    images: Option<usize>,
    run: Box<dyn Fn(usize, Device) -> Result<Measured>>,
}

fn workloads() -> Vec<Workload> {
    let mut all: Vec<Workload> = proxima_core::perf::workloads()
        .into_iter()
        .map(|w| Workload {
            name: w.name.clone(),
            images: None,
            run: Box::new(move |samples, device| {
                let r = proxima_core::perf::run_on(&w, samples, device);
                match r.error {
                    Some(e) => bail!("{e}"),
                    None => Ok(r.median_s.into()),
                }
            }),
        })
        .collect();
    for (n, d) in [(10_000usize, 128usize), (50_000, 128), (200_000, 128)] {
        all.push(Workload {
            name: format!("eval/accuracy/N={n},D={d}"),
            images: None,
            run: Box::new(move |samples, _device| {
                let report = proxima_eval::perf_accuracy_runs(n, d, 0, samples).with_context(|| format!("eval/accuracy N={n}"))?;
                let pass = match report.candidate_unit {
                    Some(unit) => format!("{unit:?}, {:.1} % of chunks recomputed", 100.0 * report.recomputed_fraction),
                    None => "off (fp32 GEMM)".to_string(),
                };
                Ok(Measured {
                    median_s: report.median_seconds,
                    gemm_gflops_per_thread: Some((report.gemm_gflops_per_thread * 10.0).round() / 10.0),
                    knn_candidate_pass: Some(pass),
                    knn_thread_s: Some([report.gemm_thread_seconds, report.scan_thread_seconds].map(|s| (s * 1000.0).round() / 1000.0)),
                })
            }),
        });
    }
    for (size, batch) in [(224, 256), (64, 32)] {
        for (variant, bf16) in [("resnet18", false), ("resnet18-bf16", true)] {
            all.push(Workload {
                name: format!("train/{variant}/size={size},batch={batch}"),
                images: Some(batch as usize),
                run: Box::new(move |samples, device| train_steps(size, batch, bf16, samples, device).map(Measured::from)),
            });
        }
    }
    // Training steps of the find recipe's two models, for the side-by-side with
    // benchmarks/pytorch_find_steps.py (the same steps written in PyTorch).
    // The `-bf16` variants run the forward under bfloat16 autocast (`localiser train --bf16`,
    // `[train] autocast_bf16`).
    for (variant, bf16) in [("localiser-finetune", false), ("localiser-finetune-bf16", true)] {
        all.push(Workload {
            name: format!("train/{variant}/size=384,batch=16,from=5"),
            images: Some(16),
            run: Box::new(move |samples, device| localiser_steps(384, 16, 5, bf16, samples, device).map(Measured::from)),
        });
    }
    for (variant, bf16) in [("embed-efficientnet_lite0", false), ("embed-efficientnet_lite0-bf16", true)] {
        all.push(Workload {
            name: format!("train/{variant}/size=128,batch=32"),
            images: Some(32),
            run: Box::new(move |samples, device| embed_steps(128, 32, bf16, samples, device).map(Measured::from)),
        });
    }
    // Inference of the find recipe's embedding model, for the side-by-side with an exported model
    // run by onnxruntime (benchmarks/export_latency.sh): one 128-px crop, and a batch of 32.
    for batch in [1i64, 32] {
        all.push(Workload {
            name: format!("infer/efficientnet_lite0/size=128,batch={batch}"),
            images: Some(batch as usize),
            run: Box::new(move |samples, device| infer_steps(BackboneSpec::EfficientnetLite0 {}, 128, batch, samples, device).map(Measured::from)),
        });
    }
    all.push(Workload {
        name: "train-data/resnet18/size=64,batch=32".into(),
        images: Some(32),
        run: Box::new(|samples, device| train_steps_with_data(64, 32, samples, device).map(Measured::from)),
    });
    all
}

/// The image folder of the `train-data/…` workloads: `PROXIMA_PERF_DATA`, else the FlickrLogos-27
/// crops that `proxima data import flickrlogos27` writes to `data/fl27/crops`.
fn perf_data_dir() -> std::path::PathBuf {
    std::env::var_os("PROXIMA_PERF_DATA").map(Into::into).unwrap_or_else(|| "data/fl27/crops".into())
}

/// As [`train_steps`] but every step takes its batch from the data loader: class folders decoded
/// from disk each time (no cache), random resized crop (scale 0.6–1) and horizontal flip to
/// `size`², 4 images per class, the loader's default workers. A step's time includes waiting for
/// its batch, so a loader slower than the model shows. The same pipeline as
/// `data_loader` in `benchmarks/pytorch_train_step.py` (torchvision `ImageFolder` + `DataLoader`).
fn train_steps_with_data(size: u32, batch: usize, samples: usize, device: Device) -> Result<f64> {
    use proxima_data::{Dataset, Loader, LoaderConfig, MPerClassConfig, MPerClassSampler, Normalize, Pipeline, PipelineConfig, ScanOptions, Transform};
    let root = perf_data_dir();
    let report = Dataset::scan_folder(&root, &ScanOptions { verify: false, ..ScanOptions::default() })
        .with_context(|| format!("reading the image folders of {} (set PROXIMA_PERF_DATA, or run `proxima data import flickrlogos27`)", root.display()))?;
    let dataset = std::sync::Arc::new(report.dataset);
    let transforms = vec![Transform::RandomResizedCrop { size: [size, size], scale: [0.6, 1.0], ratio: [0.75, 4.0 / 3.0] }, Transform::HorizontalFlip { p: 0.5 }];
    let pipeline = Pipeline::new(PipelineConfig { transforms, normalize: Normalize::default() }, 0)?;
    let loader = Loader::new(dataset.clone(), pipeline, LoaderConfig { image_size: [size, size], crop_to_bbox: false, ..LoaderConfig::default() })?;
    let labels: Vec<usize> = dataset.samples.iter().map(|s| s.label).collect();
    let sampler = MPerClassSampler::new(&labels, MPerClassConfig { m: 4, batch_size: batch, small_classes: Default::default(), batches_per_epoch: None }, 0)?;
    let plan = (0u64..).flat_map(move |epoch| sampler.epoch(epoch).into_iter().map(move |b| (epoch, b)));
    let mut batches = loader.iter(plan);
    let mut parts = TrainParts::new(device)?;
    median_step_time(samples, device, || {
        let b = batches.next().context("the loader stopped")??;
        let [n, c, h, w] = b.shape.map(|v| v as i64);
        let x = Tensor::from_slice(&b.images).view([n, c, h, w]).to_device(device);
        let y = Tensor::from_slice(&b.labels).to_device(device);
        parts.step(&x, &y, false)
    })
}

/// The model, loss and optimiser of the training workloads: ResNet-18 + linear 512→128,
/// TripletMarginLoss (margin 0.1, all triplets), SGD (lr 0.01, momentum 0.9).
struct TrainParts {
    model: EmbeddingModel,
    loss: proxima_core::Loss,
    optimizer: Optimizer,
}

impl TrainParts {
    fn new(device: Device) -> Result<Self> {
        tch::manual_seed(0);
        let model = EmbeddingModel::new(EmbeddingConfig::new(BackboneSpec::Resnet18 {}, 128), device)?;
        let loss_vs = nn::VarStore::new(device);
        let spec: LossSpec = serde_json::from_value(serde_json::json!({"type": "TripletMarginLoss", "margin": 0.1, "triplets_per_anchor": "all"}))?;
        let loss = spec.build(&BuildContext { num_classes: None, embedding_size: Some(128), vars: &loss_vs.root() })?;
        let params = proxima_train::model::trainable_with_prefix(model.var_store(), "");
        let sgd = OptimizerConfig::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 0.0, nesterov: false };
        let optimizer = Optimizer::new(sgd, vec![ParamGroup { name: "model".into(), lr: 0.01, params }])?;
        Ok(TrainParts { model, loss, optimizer })
    }

    /// One full SGD step on images `x` with `labels` (the forward under bfloat16 autocast with
    /// `bf16`, as `[train] autocast_bf16`).
    fn step(&mut self, x: &Tensor, labels: &Tensor, bf16: bool) -> Result<()> {
        self.optimizer.zero_grad();
        let device = x.device();
        let emb = if bf16 { autocast_bf16(device, || self.model.embed_t(x, true)).to_kind(Kind::Float) } else { self.model.embed_t(x, true) };
        let value = self.loss.forward(&Batch::new(&emb, labels), None)?;
        value.backward();
        self.optimizer.step(1.0);
        Ok(())
    }
}

/// The median time of `samples` calls of `step` (at least one) after one untimed warm-up, CUDA
/// work synchronised before each clock stops.
fn median_step_time(samples: usize, device: Device, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut times = Vec::with_capacity(samples.max(1));
    for i in 0..=samples.max(1) {
        sync();
        let start = std::time::Instant::now();
        step()?;
        sync();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    Ok(if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2.0 })
}

/// Fine-tuning steps of the find recipe's localiser (`proxima_detect::FineTuneStep`: trunk blocks
/// `first..` and the head, Adam, CenterNet loss, clipping) on random normalised images, two boxes
/// each (the forward under bfloat16 autocast with `bf16`). One untimed warm-up, then the median
/// of `samples`.
fn localiser_steps(size: i64, batch: i64, first: usize, bf16: bool, samples: usize, device: Device) -> Result<f64> {
    tch::manual_seed(0);
    let mut step = proxima_detect::FineTuneStep::new(size as u32, first, bf16, device)?;
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, device));
    let s = size as f32;
    let boxes: Vec<Vec<[f32; 4]>> = (0..batch as usize)
        .map(|i| {
            let o = (i % 5) as f32 * 0.1 * s;
            vec![[o + 0.05 * s, o + 0.1 * s, o + 0.25 * s, o + 0.2 * s], [0.6 * s, 0.55 * s, 0.9 * s, 0.7 * s]]
        })
        .collect();
    median_step_time(samples, device, || {
        step.step(&x, &boxes)?;
        Ok(())
    })
}

/// Training steps of the find recipe's identification embedding (examples/experiments/
/// simple_icons_effnet_lite0.toml): EfficientNet-Lite0 + linear 1280→128, L2-normalised,
/// multi-similarity miner and loss, AdamW (trunk 3e-4, head 1e-3, weight decay 1e-4), gradient
/// clipping at 10, BatchNorm in training mode; labels `i / 4`; the forward under bfloat16
/// autocast with `bf16`. Median of `samples` after a warm-up.
fn embed_steps(size: i64, batch: i64, bf16: bool, samples: usize, device: Device) -> Result<f64> {
    tch::manual_seed(0);
    let model = EmbeddingModel::new(EmbeddingConfig::new(BackboneSpec::EfficientnetLite0 {}, 128), device)?;
    let loss_vs = nn::VarStore::new(device);
    let spec: LossSpec = serde_json::from_value(serde_json::json!({"type": "multi_similarity"}))?;
    let loss = spec.build(&BuildContext { num_classes: None, embedding_size: Some(128), vars: &loss_vs.root() })?;
    let miner: proxima_core::MinerSpec = serde_json::from_value(serde_json::json!({"type": "multi_similarity"}))?;
    let miner = miner.build()?;
    let group = |name: &str, prefix: &str, lr: f64| ParamGroup { name: name.into(), lr, params: proxima_train::model::trainable_with_prefix(model.var_store(), prefix) };
    let adamw = OptimizerConfig::AdamW { lr: 3e-4, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-4 };
    let mut opt = Optimizer::new(adamw, vec![group("trunk", "trunk.", 3e-4), group("head", "head.", 1e-3)])?;
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, device));
    let labels = Tensor::arange(batch, (Kind::Int64, device)).floor_divide_scalar(4);
    median_step_time(samples, device, || {
        opt.zero_grad();
        let emb = if bf16 { autocast_bf16(device, || model.embed_t(&x, true)).to_kind(Kind::Float) } else { model.embed_t(&x, true) };
        let b = Batch::new(&emb, &labels);
        let tuples = miner.mine(&b)?;
        let value = loss.forward(&b, Some(&tuples))?;
        value.backward();
        opt.clip_grad_norm(10.0);
        opt.step(1.0);
        Ok(())
    })
}

/// Forward passes of an embedding model (linear head to 128, L2-normalised) in inference mode on
/// random images `[batch, 3, size, size]`: what `proxima embed` runs per batch once images are
/// decoded. One untimed warm-up, then the median of `samples`.
fn infer_steps(backbone: BackboneSpec, size: i64, batch: i64, samples: usize, device: Device) -> Result<f64> {
    tch::manual_seed(0);
    let mut model = EmbeddingModel::new(EmbeddingConfig::new(backbone, 128), device)?;
    model.eval();
    let x = Tensor::rand([batch, 3, size, size], (Kind::Float, device));
    median_step_time(samples, device, || {
        let e = tch::no_grad(|| model.embed_t(&x, false));
        let _ = e.sum(Kind::Float).double_value(&[]);
        Ok(())
    })
}

/// Full training steps of a ResNet-18 embedding model on random images (see [`TrainParts`]):
/// the same work as `benchmarks/pytorch_train_step.py`. With `bf16` the forward runs under
/// bfloat16 autocast. One untimed warm-up step, then `samples` timed steps; the median step time.
fn train_steps(size: i64, batch: i64, bf16: bool, samples: usize, device: Device) -> Result<f64> {
    let mut parts = TrainParts::new(device)?;
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, device));
    let labels = (Tensor::arange(batch, (Kind::Int64, device)) / 4).to_kind(Kind::Int64);
    median_step_time(samples, device, || parts.step(&x, &labels, bf16))
}

/// Runs `proxima perf`.
pub fn run(args: PerfArgs) -> Result<ExitCode> {
    let all = workloads();
    let selected: Vec<&Workload> = all
        .iter()
        .filter(|w| match (&args.only, &args.filter) {
            (Some(o), _) => &w.name == o,
            (None, Some(f)) => w.name.contains(f.as_str()),
            (None, None) => true,
        })
        .collect();
    if selected.is_empty() {
        bail!("no workload matches; `proxima perf --list` shows them");
    }
    if args.list {
        selected.iter().for_each(|w| println!("{}", w.name));
        return Ok(ExitCode::SUCCESS);
    }
    let device = proxima_train::experiment::available_device(&args.device)?;
    let device_field = (device != Device::Cpu).then(|| args.device.clone());
    let mut failed = false;
    for w in selected {
        if args.in_process {
            match (w.run)(args.samples, device) {
                Ok(Measured { median_s: median, gemm_gflops_per_thread, knn_candidate_pass, knn_thread_s }) => {
                    let line = Line {
                        workload: &w.name,
                        median_s: Some(median),
                        gemm_gflops_per_thread,
                        knn_candidate_pass,
                        knn_thread_s,
                        peak_rss_mb: proxima_core::perf::peak_rss_mb().map(|m| m.round()),
                        images_per_s: w.images.map(|n| (n as f64 / median * 10.0).round() / 10.0),
                        device: device_field.clone(),
                        error: None,
                    };
                    println!("{}", serde_json::to_string(&line)?);
                }
                Err(e) => {
                    failed = true;
                    let line = Line {
                        workload: &w.name,
                        median_s: None,
                        peak_rss_mb: None,
                        images_per_s: None,
                        gemm_gflops_per_thread: None,
                        knn_candidate_pass: None,
                        knn_thread_s: None,
                        device: device_field.clone(),
                        error: Some(format!("{e:#}")),
                    };
                    println!("{}", serde_json::to_string(&line)?);
                }
            }
        } else {
            let exe = std::env::current_exe().context("cannot locate the proxima executable")?;
            let out = Command::new(exe)
                .args(["perf", "--in-process", "--device", &args.device, "--samples", &args.samples.to_string(), "--only", &w.name])
                .output()
                .with_context(|| format!("cannot start a child process for {}", w.name))?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                failed = true;
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
