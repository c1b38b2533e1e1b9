//! Training the localiser head on cached trunk features.
//!
//! Why cache: the trunk is frozen, so its feature maps of a training view never change; computing
//! them once (a few augmented views per scene: random scale, placement and mirror) and training
//! the light head for many epochs over the cache costs minutes on two CPU cores instead of hours.
//! The price is that augmentation is fixed per view, which more views per scene buys back.
//!
//! Targets follow CenterNet: an elliptical Gaussian per box on the stride-8 heat map (peak cell
//! exactly 1), penalty-reduced focal loss on it, L1 on `ln(w/8)`, `ln(h/8)` and the sub-cell
//! offset at the peak cell. Scenes are split into training and validation by a hash of their
//! image path and the seed; validation AP@0.5 is reported per scene kind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use proxima_data::{DecodeOptions, Scene, decode_file};
use proxima_eval::{ApResult, ScoredBox, average_precision};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{DetectError, Result};
use crate::letterbox::place;
use crate::localiser::{Localiser, LocaliserConfig, STRIDE};
use proxima_models::Normalization;
use proxima_models::optim::{Optimizer, OptimizerConfig, ParamGroup};

/// Localiser training options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainLocaliserOptions {
    pub config: LocaliserConfig,
    /// EfficientNet-Lite0 ImageNet weights for the trunk (`.pth` or safetensors).
    pub pretrained: Option<PathBuf>,
    /// Augmented views cached per training scene (the first is the plain letterbox).
    pub views_per_scene: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam learning rate (cosine-annealed to 1 % over the epochs).
    pub lr: f64,
    /// Share of scenes held out for validation.
    pub val_fraction: f64,
    pub seed: u64,
    /// Keep the cached trunk features in this file and reuse them when the scenes, views, input
    /// size and seed are the same (retraining the head then skips the trunk entirely).
    pub feature_cache: Option<PathBuf>,
    /// Fine-tune the trunk's blocks from this one on (EfficientNet-Lite0 has 16; 5 is the start of
    /// the stride-16 stage), with a fresh augmented view of every scene in every epoch instead of
    /// cached features. `None` keeps the trunk frozen and caches `views_per_scene` views.
    pub fine_tune_from: Option<usize>,
    /// Learning rate of the fine-tuned trunk blocks relative to the head's.
    pub trunk_lr_factor: f64,
    /// Continue the unfinished run in the output directory from its last epoch checkpoint.
    pub resume: bool,
    /// Run the trunk and the head under bfloat16 autocast (convolutions in bfloat16, the loss in
    /// float32); meant for GPUs: on an AMX CPU it made the fine-tuning step slower than fp32.
    pub bf16: bool,
}

impl Default for TrainLocaliserOptions {
    fn default() -> Self {
        TrainLocaliserOptions {
            config: LocaliserConfig::default(),
            pretrained: None,
            views_per_scene: 2,
            epochs: 12,
            batch_size: 16,
            lr: 1e-3,
            val_fraction: 0.15,
            seed: 0,
            feature_cache: None,
            fine_tune_from: None,
            trunk_lr_factor: 0.1,
            resume: false,
            bf16: false,
        }
    }
}

impl TrainLocaliserOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        if self.views_per_scene == 0 || self.epochs == 0 || self.batch_size == 0 {
            return Err(DetectError::Config("views_per_scene, epochs and batch_size must be > 0".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(DetectError::Config(format!("lr must be > 0, got {}", self.lr)));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(DetectError::Config(format!("val_fraction must be in [0, 1), got {}", self.val_fraction)));
        }
        if let Some(first) = self.fine_tune_from {
            if first > 16 {
                return Err(DetectError::Config(format!("fine_tune_from must be a block of EfficientNet-Lite0 (0..=16), got {first}")));
            }
            if self.feature_cache.is_some() {
                return Err(DetectError::Config("a feature cache needs a frozen trunk: drop feature_cache or fine_tune_from".into()));
            }
            if !(self.trunk_lr_factor >= 0.0 && self.trunk_lr_factor.is_finite()) {
                return Err(DetectError::Config(format!("trunk_lr_factor must be ≥ 0, got {}", self.trunk_lr_factor)));
            }
        }
        Ok(())
    }
}

/// What [`train_localiser`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainLocaliserReport {
    pub train_scenes: usize,
    pub val_scenes: usize,
    pub views: usize,
    /// Mean training loss per epoch.
    pub epoch_loss: Vec<f64>,
    /// Validation AP@0.5 per scene kind and `"all"`.
    pub val_ap50: BTreeMap<String, ApResult>,
    /// Seconds spent computing trunk features.
    pub feature_seconds: f64,
    /// Seconds spent training the head.
    pub head_seconds: f64,
}

/// True when `path` falls in the validation part for `seed`.
///
/// Decided by the file name alone (not the whole path), so that the same scenes are held out
/// wherever the data set lives: a copy or a move of the scene folder must not change the
/// localiser's validation set or its reported AP.
pub fn is_validation(path: &Path, seed: u64, fraction: f64) -> bool {
    let name = path.file_name().unwrap_or(path.as_os_str());
    let h = proxima_data::rng::fnv1a64(seed, name.to_string_lossy().as_bytes());
    let u = (proxima_data::rng::mix64(h) >> 11) as f64 / (1u64 << 53) as f64;
    u < fraction
}

/// One cached view: trunk features and boxes in input pixels.
struct View {
    f8: Tensor,
    f16: Tensor,
    f32: Tensor,
    boxes: Vec<[f32; 4]>,
}

/// Trains a localiser on `scenes` (only those with boxes) and saves it to `out`.
///
/// After every epoch the weights and the optimizer state go to `out/checkpoint.safetensors`
/// (atomically); with `opts.resume` training continues from it and ends where an uninterrupted
/// run would. The checkpoint is removed once the localiser is saved, so a directory that holds
/// one is an unfinished run: starting it over needs the file removed first.
pub fn train_localiser(scenes: &[Scene], opts: &TrainLocaliserOptions, device: Device, out: &Path, log: &mut dyn FnMut(&str)) -> Result<TrainLocaliserReport> {
    opts.validate()?;
    let annotated: Vec<&Scene> = scenes.iter().filter(|s| s.boxes.is_some()).collect();
    let (val, train): (Vec<&Scene>, Vec<&Scene>) = annotated.iter().partition(|s| is_validation(&s.image, opts.seed, opts.val_fraction));
    if train.is_empty() {
        return Err(DetectError::Training("no scene with boxes to train on".into()));
    }
    if train.iter().all(|s| s.boxes.as_ref().is_some_and(Vec::is_empty)) {
        return Err(DetectError::Training("the training scenes contain no logo box".into()));
    }
    let mut loc = Localiser::new(opts.config.clone(), opts.pretrained.as_deref(), device)?;
    loc.init_head(opts.seed);
    if let Some(first) = opts.fine_tune_from {
        loc.unfreeze_trunk_from(first);
    }
    let mut opt = adam(&loc, opts)?;
    let ckpt = Checkpoint { path: out.join(CHECKPOINT), key: run_key(&train, opts) };
    let progress = if opts.resume {
        let p = ckpt.restore(&loc, &mut opt)?;
        log(&format!("resuming after epoch {}/{} from {}", p.1.len(), opts.epochs, ckpt.path.display()));
        p
    } else if ckpt.path.exists() {
        return Err(DetectError::Config(format!(
            "{} holds an unfinished training run: resume it (--resume) or remove {} to start over",
            out.display(),
            ckpt.path.display()
        )));
    } else {
        (0, Vec::new())
    };
    let run = Run { loc: &loc, opt: &mut opt, ckpt: &ckpt, opts, device };
    let (epoch_loss, feature_seconds, head_seconds, views) = match opts.fine_tune_from {
        None => train_on_cached_features(run, progress, &train, log)?,
        Some(first) => train_online(run, progress, &train, first, log)?,
    };

    // 3. Validation AP@0.5 per kind.
    let val_ap50 = evaluate_ap(&loc, &val, 0.5)?;
    if let Some(all) = val_ap50.get("all") {
        log(&format!("validation AP@0.5 {:.3} (recall {:.3}) on {} scenes", all.ap, all.recall, val.len()));
    }
    let report = TrainLocaliserReport { train_scenes: train.len(), val_scenes: val.len(), views, epoch_loss, val_ap50, feature_seconds, head_seconds };
    let trained_on: BTreeSet<PathBuf> = train.iter().map(|s| s.image.clone()).collect();
    loc.save(out, trained_on, serde_json::to_value(&report).expect("report serialises"))?;
    match std::fs::remove_file(&ckpt.path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(DetectError::io(&ckpt.path, e)),
        _ => {}
    }
    Ok(report)
}

/// File name of the per-epoch training checkpoint inside the output directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// Adam (PyTorch's rule) over the head (`opts.lr`) and the trainable trunk blocks
/// (`opts.lr · trunk_lr_factor`), with state that a checkpoint can hold.
fn adam(loc: &Localiser, opts: &TrainLocaliserOptions) -> Result<Optimizer> {
    let (mut head, mut trunk) = (Vec::new(), Vec::new());
    for (name, t) in loc.variables() {
        if t.requires_grad() {
            if name.starts_with("trunk.") { trunk.push((name, t)) } else { head.push((name, t)) }
        }
    }
    let config = OptimizerConfig::Adam { lr: opts.lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 };
    Ok(Optimizer::new(
        config,
        vec![ParamGroup { name: "head".into(), lr: opts.lr, params: head }, ParamGroup { name: "trunk".into(), lr: opts.lr * opts.trunk_lr_factor, params: trunk }],
    )?)
}

/// Identifies a training run: its scenes and every option that changes what it computes.
fn run_key(train: &[&Scene], opts: &TrainLocaliserOptions) -> String {
    let o = TrainLocaliserOptions { feature_cache: None, resume: false, ..opts.clone() };
    let text = serde_json::to_string(&(train.iter().map(|s| (&s.image, &s.boxes)).collect::<Vec<_>>(), o)).expect("key serialises");
    proxima_models::model_dir::fingerprint(text.as_bytes())
}

/// What both training paths work with: the localiser, its optimizer and checkpoint, the options.
struct Run<'a> {
    loc: &'a Localiser,
    opt: &'a mut Optimizer,
    ckpt: &'a Checkpoint,
    opts: &'a TrainLocaliserOptions,
    device: Device,
}

/// The per-epoch checkpoint: every variable, the optimizer state, the epoch losses so far.
struct Checkpoint {
    path: PathBuf,
    key: String,
}

impl Checkpoint {
    /// Writes the state after `losses.len()` epochs (atomically).
    fn save(&self, loc: &Localiser, opt: &Optimizer, losses: &[f64]) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DetectError::io(dir, e))?;
        }
        let mut tensors: Vec<(String, Tensor)> = loc.variables().into_iter().map(|(n, t)| (format!("var/{n}"), t)).collect();
        tensors.extend(opt.state_tensors().into_iter().map(|(n, t)| (format!("optim/{n}"), t)));
        let state = serde_json::json!({"kind": "proxima-localiser-checkpoint", "key": self.key, "epoch_loss": losses});
        Ok(proxima_models::tensor_file::save(&self.path, &tensors, &state)?)
    }

    /// Loads the weights and optimizer state; returns the epochs done and their losses.
    fn restore(&self, loc: &Localiser, opt: &mut Optimizer) -> Result<(usize, Vec<f64>)> {
        let bad = |message: String| DetectError::Artifact { path: self.path.clone(), message };
        if !self.path.is_file() {
            return Err(bad("no checkpoint to resume from".into()));
        }
        let (tensors, state) = proxima_models::tensor_file::load(&self.path)?;
        if state["key"].as_str() != Some(self.key.as_str()) {
            return Err(bad("the checkpoint is of a run with other scenes or options; resume with the same ones".into()));
        }
        let losses: Vec<f64> = serde_json::from_value(state["epoch_loss"].clone()).map_err(|e| bad(format!("bad epoch losses: {e}")))?;
        proxima_models::tensor_file::copy_into(&loc.variables(), &tensors, "var/").map_err(bad)?;
        opt.load_state(&proxima_models::tensor_file::with_prefix(&tensors, "optim/")).map_err(|e| bad(e.to_string()))?;
        Ok((losses.len(), losses))
    }
}

/// The learning-rate factor of `progress` ∈ [0, 1]: cosine from 1 to 0.01.
fn cosine_factor(progress: f64) -> f64 {
    0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Frozen trunk: caches (or reuses) the trunk features of `views_per_scene` views per scene, then
/// trains the head over them from epoch `progress.0`. Returns the epoch losses, feature and head
/// seconds, and the number of views.
fn train_on_cached_features(run: Run<'_>, progress: (usize, Vec<f64>), train: &[&Scene], log: &mut dyn FnMut(&str)) -> Result<(Vec<f64>, f64, f64, usize)> {
    let (loc, opts, device) = (run.loc, run.opts, run.device);
    let side = opts.config.input_size;
    // 1. Cache trunk features of every view (or reuse the cache file).
    let t0 = Instant::now();
    let key = cache_key(train, opts);
    let cached = match &opts.feature_cache {
        Some(p) if p.is_file() => load_cache(p, &key).ok().flatten(),
        _ => None,
    };
    let views = match cached {
        Some(v) => {
            log(&format!("reusing {} cached views from {}", v.len(), opts.feature_cache.as_ref().map_or(String::new(), |p| p.display().to_string())));
            v
        }
        None => {
            let v = compute_views(loc, train, opts, device, &t0, log)?;
            if let Some(p) = &opts.feature_cache {
                save_cache(p, &key, &v)?;
            }
            v
        }
    };
    let feature_seconds = t0.elapsed().as_secs_f64();
    log(&format!("{} views of {} scenes ready in {feature_seconds:.0} s", views.len(), train.len()));

    // 2. Train the head.
    let t1 = Instant::now();
    let grid = side as i64 / STRIDE;
    let epoch_loss = run_epochs(run, views.len(), 0xe90c, progress, log, |_, batch| {
        let stack = |f: fn(&View) -> &Tensor| Tensor::stack(&batch.iter().map(|&i| f(&views[i])).collect::<Vec<_>>(), 0).to_device(device).to_kind(Kind::Float);
        // Stacked (and made float32) outside autocast, which refuses half-precision inputs.
        let (f8, f16, f32) = (stack(|v| &v.f8), stack(|v| &v.f16), stack(|v| &v.f32));
        let out = maybe_bf16(opts.bf16, device, || loc.head_forward(&f8, &f16, &f32));
        Ok(Targets::build(batch.iter().map(|&i| views[i].boxes.as_slice()), grid).loss(&out, device))
    })?;
    Ok((epoch_loss, feature_seconds, t1.elapsed().as_secs_f64(), views.len()))
}

/// Runs epochs `progress.0..opts.epochs` over `n` training items in batches of
/// `opts.batch_size`, each epoch's order a shuffle by `(seed, salt, epoch)`. `loss_of(epoch,
/// batch)` gives a batch's loss; the optimizer steps on it (gradient norm clipped at 10, the
/// cosine schedule's learning-rate factor) and the checkpoint is written after every epoch.
/// Logs every 25 steps and every epoch; returns every epoch's mean loss.
fn run_epochs(
    run: Run<'_>,
    n: usize,
    salt: u64,
    progress: (usize, Vec<f64>),
    log: &mut dyn FnMut(&str),
    mut loss_of: impl FnMut(usize, &[usize]) -> Result<Tensor>,
) -> Result<Vec<f64>> {
    let Run { loc, opt, ckpt, opts, .. } = run;
    let t = Instant::now();
    let steps_per_epoch = n.div_ceil(opts.batch_size);
    let (start, mut epoch_loss) = progress;
    for epoch in start..opts.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        proxima_data::rng::Rng::from_parts(&[opts.seed, salt, epoch as u64]).shuffle(&mut order);
        let (mut sum, mut count) = (0.0, 0usize);
        for (k, batch) in order.chunks(opts.batch_size).enumerate() {
            let progress = (epoch * steps_per_epoch + k) as f64 / (opts.epochs * steps_per_epoch) as f64;
            let loss = loss_of(epoch, batch)?;
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(DetectError::Training(format!("loss became {value} at epoch {}, step {}", epoch + 1, k + 1)));
            }
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(10.0);
            opt.step(cosine_factor(progress));
            sum += value;
            count += 1;
            if k % 25 == 24 {
                let (e, mean, secs) = (epoch + 1, sum / count as f64, t.elapsed().as_secs_f64());
                log(&format!("epoch {e}/{}, step {}/{steps_per_epoch}: loss {mean:.4} ({secs:.0} s)", opts.epochs, k + 1));
            }
        }
        let mean = sum / count.max(1) as f64;
        epoch_loss.push(mean);
        ckpt.save(loc, opt, &epoch_loss)?;
        log(&format!("epoch {}/{}: loss {mean:.4} ({:.0} s)", epoch + 1, opts.epochs, t.elapsed().as_secs_f64()));
    }
    Ok(epoch_loss)
}

/// Fine-tuning: the trunk's blocks from `first` on train with the head, on a fresh augmented view
/// of every scene in every epoch. Returns the epoch losses, the decode seconds, the training
/// seconds and the number of views seen.
///
/// Why fresh views: with cached features the head memorises a few fixed views (training loss far
/// below validation quality); a new scale, placement and mirror each epoch is the augmentation a
/// detector needs, and it costs only the trunk's forward pass, which fine-tuning pays anyway.
fn train_online(run: Run<'_>, progress: (usize, Vec<f64>), train: &[&Scene], first: usize, log: &mut dyn FnMut(&str)) -> Result<(Vec<f64>, f64, f64, usize)> {
    let (loc, opts, device) = (run.loc, run.opts, run.device);
    let side = opts.config.input_size;
    let t0 = Instant::now();
    // Decoded once, shrunk to what the largest view needs (1.8 × the letterbox scale).
    let limit = (side as f32 * MAX_VIEW_SCALE).ceil() as u32;
    let images: Vec<(RgbImage, Vec<proxima_data::SceneBox>)> = train
        .par_iter()
        .map(|s| {
            let img = decode_file(&s.image, &DecodeOptions::default())?;
            Ok(shrink_scene(img, s.boxes.as_deref().unwrap_or(&[]), limit))
        })
        .collect::<Result<_>>()?;
    let decode_seconds = t0.elapsed().as_secs_f64();
    log(&format!("{} training scenes decoded in {decode_seconds:.0} s; fine-tuning trunk blocks {first}.. and the head", images.len()));

    let norm = loc.normalization();
    let grid = side as i64 / STRIDE;
    let s = side as i64;
    let t1 = Instant::now();
    let epoch_loss = run_epochs(run, images.len(), 0x0411, progress, log, |epoch, batch| {
        let views: Vec<(Vec<[f32; 4]>, Vec<f32>)> = batch
            .par_iter()
            .map(|&i| {
                let mut r = proxima_data::rng::Rng::from_parts(&[opts.seed, 0x0412, epoch as u64, i as u64]);
                // One view in five is the plain letterbox that inference sees.
                let plain = r.chance(0.2);
                make_view(&images[i].0, &images[i].1, side, plain, &mut r, &norm)
            })
            .collect();
        let data: Vec<f32> = views.iter().flat_map(|v| v.1.iter().copied()).collect();
        let xs = Tensor::from_slice(&data).view([views.len() as i64, 3, s, s]).to_device(device);
        let out = maybe_bf16(opts.bf16, device, || {
            let [f8, f16, f32] = loc.tuned_trunk_features(&xs, first);
            loc.head_forward(&f8, &f16, &f32)
        });
        Ok(Targets::build(views.iter().map(|v| v.0.as_slice()), grid).loss(&out, device))
    })?;
    Ok((epoch_loss, decode_seconds, t1.elapsed().as_secs_f64(), images.len() * opts.epochs))
}

/// One fine-tuning step of the find recipe's localiser (`localiser train --fine-tune-from F`) on
/// given images and boxes: trunk blocks `F..` and the head, Adam with the recipe's learning rates,
/// the CenterNet loss, gradient clipping at 10. For `proxima perf`'s side-by-side with
/// `benchmarks/pytorch_find_steps.py`, which writes the same step in PyTorch.
pub struct FineTuneStep {
    loc: Localiser,
    opt: Optimizer,
    first: usize,
    grid: i64,
    bf16: bool,
}

impl FineTuneStep {
    /// A localiser of `input_size` (random trunk: the time does not depend on the weights) with
    /// blocks `first..` trainable; its forward under bfloat16 autocast with `bf16`.
    pub fn new(input_size: u32, first: usize, bf16: bool, device: Device) -> Result<Self> {
        let opts = TrainLocaliserOptions { config: LocaliserConfig { input_size, ..Default::default() }, fine_tune_from: Some(first), lr: 2e-3, ..Default::default() };
        let mut loc = Localiser::new(opts.config.clone(), None, device)?;
        loc.init_head(opts.seed);
        loc.unfreeze_trunk_from(first);
        let opt = adam(&loc, &opts)?;
        Ok(FineTuneStep { loc, opt, first, grid: input_size as i64 / STRIDE, bf16 })
    }

    /// One step on `xs` (`[N, 3, S, S]`, normalised) with each image's boxes (input pixels);
    /// returns the loss.
    pub fn step(&mut self, xs: &Tensor, boxes: &[Vec<[f32; 4]>]) -> Result<f64> {
        let out = maybe_bf16(self.bf16, xs.device(), || {
            let [f8, f16, f32] = self.loc.tuned_trunk_features(xs, self.first);
            self.loc.head_forward(&f8, &f16, &f32)
        });
        let loss = Targets::build(boxes.iter().map(Vec::as_slice), self.grid).loss(&out, xs.device());
        self.opt.zero_grad();
        loss.backward();
        self.opt.clip_grad_norm(10.0);
        self.opt.step(1.0);
        Ok(loss.double_value(&[]))
    }
}

/// `f()`, under bfloat16 autocast when `bf16` is set; tensors come back as float32.
fn maybe_bf16<T: IntoFloat>(bf16: bool, device: Device, f: impl FnOnce() -> T) -> T {
    if bf16 { proxima_models::autocast_bf16(device, f).into_float() } else { f() }
}

/// Tensors that [`maybe_bf16`] turns back to float32.
trait IntoFloat {
    fn into_float(self) -> Self;
}

impl IntoFloat for Tensor {
    fn into_float(self) -> Self {
        self.to_kind(Kind::Float)
    }
}

impl IntoFloat for [Tensor; 3] {
    fn into_float(self) -> Self {
        self.map(|t| t.to_kind(Kind::Float))
    }
}

/// Largest random view scale relative to the plain letterbox.
const MAX_VIEW_SCALE: f32 = 1.8;

/// `img` and its boxes scaled down so that the long side is at most `limit` pixels.
fn shrink_scene(img: RgbImage, boxes: &[proxima_data::SceneBox], limit: u32) -> (RgbImage, Vec<proxima_data::SceneBox>) {
    let long = img.width().max(img.height());
    if long <= limit {
        return (img, boxes.to_vec());
    }
    let f = limit as f32 / long as f32;
    let (w, h) = (((img.width() as f32 * f).round() as u32).max(1), ((img.height() as f32 * f).round() as u32).max(1));
    let small = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
    let boxes = boxes
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b.bbox = b.bbox.map(|v| v * f);
            b
        })
        .collect();
    (small, boxes)
}

/// Trunk features of `views_per_scene` augmented views of every training scene.
fn compute_views(loc: &Localiser, train: &[&Scene], opts: &TrainLocaliserOptions, device: Device, t0: &Instant, log: &mut dyn FnMut(&str)) -> Result<Vec<View>> {
    let side = opts.config.input_size;
    let mut views: Vec<View> = Vec::with_capacity(train.len() * opts.views_per_scene);
    let chunk = 16;
    for (ci, part) in train.chunks(chunk).enumerate() {
        let decoded: Vec<Result<RgbImage>> = part.par_iter().map(|s| Ok(decode_file(&s.image, &DecodeOptions::default())?)).collect();
        let mut bufs: Vec<f32> = Vec::new();
        let mut boxes: Vec<Vec<[f32; 4]>> = Vec::new();
        for (k, (scene, img)) in part.iter().zip(decoded).enumerate() {
            let img = img?;
            for v in 0..opts.views_per_scene {
                let mut rng = proxima_data::rng::Rng::from_parts(&[opts.seed, 0x7a1e, (ci * chunk + k) as u64, v as u64]);
                let (b, data) = make_view(&img, scene.boxes.as_deref().unwrap_or(&[]), side, v == 0, &mut rng, &loc.normalization());
                bufs.extend(data);
                boxes.push(b);
            }
        }
        let n = boxes.len() as i64;
        let s = side as i64;
        let xs = Tensor::from_slice(&bufs).view([n, 3, s, s]);
        for start in (0..n).step_by(8) {
            let len = (n - start).min(8);
            let [f8, f16, f32] = maybe_bf16(opts.bf16, device, || loc.trunk_features(&xs.narrow(0, start, len).to_device(device)));
            for i in 0..len {
                views.push(View {
                    f8: f8.get(i).to_kind(Kind::Half).to_device(Device::Cpu).contiguous(),
                    f16: f16.get(i).to_kind(Kind::Half).to_device(Device::Cpu).contiguous(),
                    f32: f32.get(i).to_kind(Kind::Half).to_device(Device::Cpu).contiguous(),
                    boxes: boxes[(start + i) as usize].clone(),
                });
            }
        }
        if ci % 10 == 0 {
            log(&format!("features: {}/{} scenes ({:.0} s)", (ci * chunk + part.len()), train.len(), t0.elapsed().as_secs_f64()));
        }
    }
    Ok(views)
}

/// Identifies a feature cache: the training scenes, views, input size and seed.
fn cache_key(train: &[&Scene], opts: &TrainLocaliserOptions) -> String {
    let text = serde_json::to_string(&(
        train.iter().map(|s| (&s.image, &s.boxes)).collect::<Vec<_>>(),
        opts.views_per_scene,
        opts.config.input_size,
        opts.seed,
        &opts.pretrained,
        3u32,
        opts.bf16,
    ))
    .expect("key serialises");
    proxima_models::model_dir::fingerprint(text.as_bytes())
}

fn save_cache(path: &Path, key: &str, views: &[View]) -> Result<()> {
    let stack = |f: fn(&View) -> &Tensor| Tensor::stack(&views.iter().map(f).collect::<Vec<_>>(), 0);
    let boxes = serde_json::to_value(views.iter().map(|v| &v.boxes).collect::<Vec<_>>()).expect("boxes serialise");
    let tensors = vec![("f8".to_string(), stack(|v| &v.f8)), ("f16".to_string(), stack(|v| &v.f16)), ("f32".to_string(), stack(|v| &v.f32))];
    proxima_models::tensor_file::save(path, &tensors, &serde_json::json!({"key": key, "boxes": boxes}))?;
    Ok(())
}

/// The cached views when `path` holds the cache for `key`, else None.
fn load_cache(path: &Path, key: &str) -> Result<Option<Vec<View>>> {
    let (tensors, state) = proxima_models::tensor_file::load(path)?;
    if state["key"].as_str() != Some(key) {
        return Ok(None);
    }
    let boxes: Vec<Vec<[f32; 4]>> =
        serde_json::from_value(state["boxes"].clone()).map_err(|e| DetectError::Artifact { path: path.to_path_buf(), message: format!("corrupt cache: {e}") })?;
    let get = |n: &str| tensors.iter().find(|(k, _)| k == n).map(|(_, t)| t.shallow_clone());
    let (Some(f8), Some(f16), Some(f32)) = (get("f8"), get("f16"), get("f32")) else { return Ok(None) };
    if f8.size()[0] as usize != boxes.len() {
        return Ok(None);
    }
    Ok(Some(boxes.into_iter().enumerate().map(|(i, b)| View { f8: f8.get(i as i64), f16: f16.get(i as i64), f32: f32.get(i as i64), boxes: b }).collect()))
}

/// AP@`iou` of the localiser on `scenes` with boxes, per scene source and over all (`"all"`); a
/// group without a single box (no-logo scenes only) has no AP and is left out.
///
/// A scene's source is its kind up to the first `/` (`browser/card/dark/mobile/mono` counts as
/// `browser`): the finer kinds of browser pages split 500 validation scenes into a hundred groups of
/// a few scenes each, whose AP says nothing; `benchmarks/pages_goals.py` gives per-variant rows.
pub fn evaluate_ap(loc: &Localiser, scenes: &[&Scene], iou: f32) -> Result<BTreeMap<String, ApResult>> {
    let mut per_kind: BTreeMap<String, (Vec<Vec<ScoredBox>>, Vec<Vec<[f32; 4]>>)> = BTreeMap::new();
    for part in scenes.chunks(8) {
        let imgs: Vec<RgbImage> = part.par_iter().map(|s| decode_file(&s.image, &DecodeOptions::default())).collect::<std::result::Result<_, _>>()?;
        let dets = loc.detect_batch(&imgs)?;
        for (s, (d, _)) in part.iter().zip(dets) {
            let det: Vec<ScoredBox> = d.iter().map(|d| ScoredBox { bbox: d.bbox, score: d.score }).collect();
            let gt: Vec<[f32; 4]> = s.boxes.as_ref().map(|b| b.iter().map(|b| b.bbox).collect()).unwrap_or_default();
            for key in [scene_source(&s.kind).to_string(), "all".to_string()] {
                let e = per_kind.entry(key).or_default();
                e.0.push(det.clone());
                e.1.push(gt.clone());
            }
        }
    }
    let mut ap: BTreeMap<String, ApResult> = per_kind.into_iter().map(|(k, (d, g))| Ok((k, average_precision(&d, &g, iou)?))).collect::<Result<_>>()?;
    ap.retain(|_, v| v.num_gt > 0);
    Ok(ap)
}

/// The source of a scene kind: the kind up to its first `/`.
fn scene_source(kind: &str) -> &str {
    kind.split('/').next().unwrap_or(kind)
}

/// A training view of `img`: letterbox (plain) or random scale/placement/mirror; boxes follow.
fn make_view(
    img: &RgbImage,
    boxes: &[proxima_data::SceneBox],
    side: u32,
    plain: bool,
    rng: &mut proxima_data::rng::Rng,
    norm: &Normalization,
) -> (Vec<[f32; 4]>, Vec<f32>) {
    let s = side as f32;
    let (w, h) = (img.width() as f32, img.height() as f32);
    let base = s / w.max(h);
    let (scale, offset, flip) = if plain {
        (base, [0.0, 0.0], false)
    } else {
        let scale = base * rng.range_f32(0.6, MAX_VIEW_SCALE);
        let (sw, sh) = (w * scale, h * scale);
        // Keep a random box in view when the image is larger than the input.
        let focus = if boxes.is_empty() {
            [w / 2.0, h / 2.0]
        } else {
            let b = boxes[rng.below(boxes.len())].bbox;
            [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]
        };
        let pick = |size: f32, f: f32, r: &mut proxima_data::rng::Rng| {
            if size <= s { r.range_f32(0.0, s - size) } else { (s / 2.0 - f * scale + r.range_f32(-s / 4.0, s / 4.0)).clamp(s - size, 0.0) }
        };
        let ox = pick(sw, focus[0], rng);
        let oy = pick(sh, focus[1], rng);
        (scale, [ox, oy], rng.chance(0.5))
    };
    let mut data = vec![0f32; 3 * (side * side) as usize];
    let lb = place(img, side, scale, offset, flip, norm, &mut data);
    let mut out = Vec::new();
    for b in boxes {
        let mut t = b.bbox;
        if flip {
            t = [w - t[2], t[1], w - t[0], t[3]];
        }
        let t = lb.to_input(t);
        let c = [t[0].clamp(0.0, s), t[1].clamp(0.0, s), t[2].clamp(0.0, s), t[3].clamp(0.0, s)];
        let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
        if area(&c) >= 0.5 * area(&t) && c[2] - c[0] >= 3.0 && c[3] - c[1] >= 3.0 {
            out.push(c);
        }
    }
    (out, data)
}

/// CenterNet targets of a batch.
struct Targets {
    heat: Vec<f32>,
    ind: Vec<i64>,
    reg: Vec<f32>,
    mask: Vec<f32>,
    n: i64,
    m: i64,
    grid: i64,
    num_pos: f64,
}

impl Targets {
    fn build<'a>(batch: impl Iterator<Item = &'a [[f32; 4]]>, grid: i64) -> Targets {
        let batch: Vec<&[[f32; 4]]> = batch.collect();
        let n = batch.len() as i64;
        let m = batch.iter().map(|b| b.len()).max().unwrap_or(0).max(1) as i64;
        let g = grid as usize;
        let mut t = Targets {
            heat: vec![0.0; n as usize * g * g],
            ind: vec![0; (n * m) as usize],
            reg: vec![0.0; (n * 4 * m) as usize],
            mask: vec![0.0; (n * m) as usize],
            n,
            m,
            grid,
            num_pos: 0.0,
        };
        let st = STRIDE as f32;
        for (i, boxes) in batch.iter().enumerate() {
            let heat = &mut t.heat[i * g * g..(i + 1) * g * g];
            for (j, b) in boxes.iter().enumerate() {
                let (cx, cy) = ((b[0] + b[2]) / 2.0 / st, (b[1] + b[3]) / 2.0 / st);
                let (bw, bh) = ((b[2] - b[0]) / st, (b[3] - b[1]) / st);
                let (ix, iy) = ((cx.floor() as i64).clamp(0, grid - 1), (cy.floor() as i64).clamp(0, grid - 1));
                let (sx, sy) = ((0.54 * bw / 6.0 * 2.0).max(0.5), (0.54 * bh / 6.0 * 2.0).max(0.5));
                let (rx, ry) = ((3.0 * sx).ceil() as i64, (3.0 * sy).ceil() as i64);
                for y in (iy - ry).max(0)..=(iy + ry).min(grid - 1) {
                    for x in (ix - rx).max(0)..=(ix + rx).min(grid - 1) {
                        let (dx, dy) = ((x - ix) as f32, (y - iy) as f32);
                        let v = (-(dx * dx) / (2.0 * sx * sx) - (dy * dy) / (2.0 * sy * sy)).exp();
                        let cell = &mut heat[y as usize * g + x as usize];
                        *cell = cell.max(v);
                    }
                }
                heat[iy as usize * g + ix as usize] = 1.0;
                let k = i * m as usize + j;
                t.ind[k] = iy * grid + ix;
                t.mask[k] = 1.0;
                let base = i * 4 * m as usize;
                t.reg[base + j] = bw.max(1e-3).ln();
                t.reg[base + m as usize + j] = bh.max(1e-3).ln();
                t.reg[base + 2 * m as usize + j] = cx - ix as f32;
                t.reg[base + 3 * m as usize + j] = cy - iy as f32;
                t.num_pos += 1.0;
            }
        }
        t
    }

    /// Focal loss on the heat map plus L1 on sizes and offsets at the peaks.
    ///
    /// # Shapes
    /// `out`: `[N, 5, G, G]`.
    fn loss(&self, out: &Tensor, device: Device) -> Tensor {
        let (n, m, g) = (self.n, self.m, self.grid);
        let heat_t = Tensor::from_slice(&self.heat).view([n, 1, g, g]).to_device(device);
        let logit = out.narrow(1, 0, 1);
        let pos = heat_t.eq(1.0).to_kind(Kind::Float);
        let neg = pos.ones_like() - &pos;
        let p = logit.sigmoid();
        let pos_loss = (logit.log_sigmoid() * (p.ones_like() - &p).pow_tensor_scalar(2) * &pos).sum(Kind::Float);
        let neg_w = (heat_t.ones_like() - &heat_t).pow_tensor_scalar(4);
        let neg_loss = ((-&logit).log_sigmoid() * p.pow_tensor_scalar(2) * neg_w * neg).sum(Kind::Float);
        let norm = self.num_pos.max(1.0);
        let focal = -(pos_loss + neg_loss) / norm;
        let ind = Tensor::from_slice(&self.ind).view([n, 1, m]).to_device(device).expand([n, 4, m], false);
        let pred = out.narrow(1, 1, 4).reshape([n, 4, g * g]).gather(2, &ind, false);
        let target = Tensor::from_slice(&self.reg).view([n, 4, m]).to_device(device);
        let mask = Tensor::from_slice(&self.mask).view([n, 1, m]).to_device(device);
        let l1 = ((pred - target).abs() * mask).sum(Kind::Float) / norm;
        focal + l1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scene_source_is_the_kind_before_its_first_slash() {
        assert_eq!(scene_source("browser/card/dark/mobile/mono"), "browser");
        assert_eq!(scene_source("flickrlogos27"), "flickrlogos27");
        assert_eq!(scene_source(""), "");
    }

    #[test]
    fn targets_put_one_peak_per_box_with_log_sizes() {
        let boxes = [[16.0f32, 8.0, 48.0, 24.0]];
        let t = Targets::build([&boxes[..], &[][..]].into_iter(), 8);
        assert_eq!((t.n, t.m), (2, 1));
        // Centre (32, 16) → cell (4, 2).
        assert_eq!(t.ind[0], 2 * 8 + 4);
        assert_eq!(t.heat[2 * 8 + 4], 1.0);
        assert_eq!(t.heat.iter().filter(|&&v| v == 1.0).count(), 1);
        assert!((t.reg[0] - 4f32.ln()).abs() < 1e-6 && (t.reg[1] - 2f32.ln()).abs() < 1e-6);
        assert_eq!(t.mask, [1.0, 0.0]);
        assert!(t.heat[64..].iter().all(|&v| v == 0.0), "the empty view has no heat");
    }

    #[test]
    fn loss_is_lower_for_the_right_answer() {
        let boxes = [[16.0f32, 8.0, 48.0, 24.0]];
        let t = Targets::build([&boxes[..]].into_iter(), 8);
        let wrong = Tensor::zeros([1, 5, 8, 8], (Kind::Float, Device::Cpu));
        let right = Tensor::full([1, 5, 8, 8], -8.0, (Kind::Float, Device::Cpu));
        let _ = right.get(0).get(0).get(2).get(4).fill_(8.0);
        let _ = right.get(0).get(1).get(2).get(4).fill_(4f64.ln());
        let _ = right.get(0).get(2).get(2).get(4).fill_(2f64.ln());
        let _ = right.get(0).get(3).get(2).get(4).fill_(0.0);
        let _ = right.get(0).get(4).get(2).get(4).fill_(0.0);
        let lw = t.loss(&wrong, Device::Cpu).double_value(&[]);
        let lr = t.loss(&right, Device::Cpu).double_value(&[]);
        assert!(lr < 0.1 && lw > 1.0, "right {lr}, wrong {lw}");
    }

    #[test]
    fn validation_split_is_stable() {
        let p = Path::new("/data/x.jpg");
        assert_eq!(is_validation(p, 3, 0.5), is_validation(p, 3, 0.5));
        // The folder does not matter: the same scenes are held out wherever the data lives.
        for i in 0..200 {
            let name = format!("scene_{i:04}.png");
            assert_eq!(is_validation(&Path::new("/data/a").join(&name), 7, 0.3), is_validation(&Path::new("/tmp/copy/b").join(&name), 7, 0.3));
        }
        let n = (0..1000).filter(|i| is_validation(Path::new(&format!("/d/{i}.jpg")), 0, 0.2)).count();
        assert!((150..250).contains(&n), "{n}");
    }

    #[test]
    fn fine_tuning_options_are_checked_when_given() {
        let ok = TrainLocaliserOptions { fine_tune_from: Some(5), ..Default::default() };
        ok.validate().unwrap();
        for f in [-0.1, f64::NAN, f64::INFINITY] {
            let e = TrainLocaliserOptions { trunk_lr_factor: f, ..ok.clone() }.validate().unwrap_err().to_string();
            assert!(e.contains("trunk_lr_factor"), "{e}");
        }
        // A frozen trunk ignores the factor: nothing of the trunk trains.
        TrainLocaliserOptions { trunk_lr_factor: -1.0, fine_tune_from: None, ..Default::default() }.validate().unwrap();
    }
}
