//! The training loop: M-per-class batches → embeddings → (miner) → loss → optimizer step, with
//! validation on held-out classes, best/last checkpoints, early stopping and exact resume.
//!
//! Determinism is by construction rather than by saved RNG state: batches come from the sampler
//! (a pure function of seed, epoch and position), augmentation from the loader (seeded by epoch
//! and sample index), and libtorch's generator is re-seeded from (seed, step) before every step.
//! A run killed mid-epoch and resumed from its last checkpoint therefore replays the same steps.
//!
//! Data parallel (a [`ProcessGroup`] in [`Parts::world`]): every rank draws the same global batch
//! from the sampler and loads its own contiguous slice of it, so the global batch keeps its
//! m-per-class structure and its augmentation (seeded per sample) whatever the world size. The
//! embeddings and labels of all ranks are gathered before mining, so the miner and the loss see
//! the global batch on every rank (gradients flow back to each rank's own part only); the model's
//! gradients are then summed over the ranks and the loss's own variables' averaged, which is the
//! gradient one process would compute for the global batch. Rank 0 alone validates, writes
//! checkpoints and logs, and emits events; checkpoints hold no world size, so a run resumes with
//! any number of processes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use proxima_core::{Batch as CoreBatch, Loss, MinerBox};
use proxima_data::{Dataset, Loader, MPerClassSampler, SamplerState};
use proxima_dist::{DEFAULT_BUCKET_BYTES, GradientReduction, ProcessGroup};
use proxima_eval::{Embeddings, RetrievalConfig, RetrievalMetrics, evaluate_retrieval};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

/// bfloat16 autocast (`[train] autocast_bf16`), from `proxima_models`, where the localiser uses it too.
pub use proxima_models::autocast_bf16;

use crate::checkpoint;
use crate::error::{Result, TrainError};
use crate::model::EmbeddingNet;
use crate::optim::Optimizer;
use crate::schedule::Schedule;
use proxima_models::tensor_file;

/// Loop settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    pub epochs: usize,
    /// Validate every this many epochs (and after the last).
    #[serde(default = "one")]
    pub eval_every: usize,
    /// Stop when validation MAP@R has not improved for this many evaluations.
    #[serde(default)]
    pub early_stopping_patience: Option<usize>,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Write a checkpoint every this many steps within an epoch (0 = end of epoch only).
    #[serde(default)]
    pub checkpoint_every_steps: usize,
    /// Weight of the optional classifier head's cross-entropy.
    #[serde(default)]
    pub classifier_weight: f64,
    /// Run the model's forward pass under bfloat16 autocast (on the run's device, CPU or CUDA);
    /// the embeddings are cast back to float32, so miner, loss and backward seeds stay float32.
    #[serde(default)]
    pub autocast_bf16: bool,
}

fn one() -> usize {
    1
}

/// What happened, for progress display and logs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    EpochStart { epoch: usize, steps: usize },
    Step { epoch: usize, step: usize, global_step: usize, loss: f64, lr_factor: f64 },
    Eval { epoch: usize, metrics: EvalSummary },
    EpochEnd { epoch: usize, mean_loss: f64, seconds: f64, images_per_second: f64 },
}

/// The validation metrics the trainer tracks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub precision_at_1: f64,
    pub r_precision: f64,
    pub map_at_r: f64,
}

impl From<&RetrievalMetrics> for EvalSummary {
    fn from(m: &RetrievalMetrics) -> Self {
        EvalSummary { precision_at_1: m.metrics.precision_at_1, r_precision: m.metrics.r_precision, map_at_r: m.metrics.mean_average_precision_at_r }
    }
}

/// Persistent training state (saved in every checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Where the next batch comes from.
    pub sampler: SamplerState,
    pub global_step: usize,
    pub best_map_at_r: Option<f64>,
    pub evals_without_improvement: usize,
    /// Per-epoch records.
    pub history: Vec<EpochRecord>,
    /// Running loss sum and count of the current epoch (so a resumed epoch reports the same mean).
    pub epoch_loss_sum: f64,
    pub epoch_loss_count: usize,
    /// Early stopping ended the run (a resume does nothing more).
    pub finished: bool,
}

/// One epoch's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub mean_loss: f64,
    pub lr_factor: f64,
    pub eval: Option<EvalSummary>,
}

/// Everything the loop works with, already built.
pub struct Parts<'a> {
    pub device: Device,
    pub seed: u64,
    pub model: &'a mut dyn EmbeddingNet,
    /// Variables of the loss (proxies, class weights) and the optional classifier head.
    pub loss_vars: &'a nn::VarStore,
    pub loss: &'a Loss,
    pub miner: Option<&'a MinerBox>,
    /// Optional classifier head (embeddings → logits) trained with weighted cross-entropy.
    pub classifier: Option<&'a nn::Linear>,
    pub optimizer: &'a mut Optimizer,
    pub schedule: &'a Schedule,
    pub sampler: &'a MPerClassSampler,
    pub train_loader: &'a Loader,
    /// Validation data (held-out classes) with its loader; None skips validation.
    pub val_loader: Option<&'a Loader>,
    pub config: &'a LoopConfig,
    /// Run directory: `last.safetensors`, `best.safetensors`, `log.jsonl`.
    pub run_dir: &'a Path,
    /// The data-parallel job this process is part of; None for a single process.
    pub world: Option<&'a ProcessGroup>,
}

impl Parts<'_> {
    /// True when this process writes checkpoints and logs (rank 0, or the only process).
    pub fn is_main(&self) -> bool {
        self.world.is_none_or(ProcessGroup::is_main)
    }
}

/// Paths of the checkpoints in a run directory.
pub fn last_checkpoint(run_dir: &Path) -> PathBuf {
    run_dir.join("last.safetensors")
}
/// Path of the best checkpoint.
pub fn best_checkpoint(run_dir: &Path) -> PathBuf {
    run_dir.join("best.safetensors")
}

fn named(prefix: &str, vars: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vars.into_iter().map(|(n, t)| (format!("{prefix}{n}"), t)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Saves model, loss variables, optimizer and state atomically.
fn save(parts: &Parts, path: &Path, state: &TrainState) -> Result<()> {
    let mut tensors = named("model/", parts.model.variables());
    tensors.extend(named("loss/", parts.loss_vars.variables().into_iter().collect()));
    tensors.extend(parts.optimizer.state_tensors().into_iter().map(|(n, t)| (format!("optim/{n}"), t)));
    checkpoint::save(path, &tensors, &serde_json::to_value(state).expect("state serialises"))
}

/// Loads a checkpoint into the parts; returns its training state.
pub fn restore(parts: &mut Parts, path: &Path) -> Result<TrainState> {
    let (tensors, state) = checkpoint::load(path)?;
    let err = |message: String| TrainError::Checkpoint { path: path.to_path_buf(), message };
    let loss_vars: Vec<(String, Tensor)> = parts.loss_vars.variables().into_iter().collect();
    for (prefix, vars) in [("model/", parts.model.variables()), ("loss/", loss_vars)] {
        tensor_file::copy_into(&vars, &tensors, prefix).map_err(err)?;
    }
    parts.optimizer.load_state(&tensor_file::with_prefix(&tensors, "optim/")).map_err(|e| err(e.to_string()))?;
    serde_json::from_value(state).map_err(|e| err(format!("bad training state: {e}")))
}

/// Embeds every sample of a loader's data set (eval mode, no gradients).
pub fn embed_all(model: &dyn EmbeddingNet, loader: &Loader, device: Device, batch_size: usize) -> Result<(Vec<f32>, Vec<i64>)> {
    Ok(proxima_models::model_dir::embed_loader(loader, batch_size, |x| model.forward_t(&x.to_device(device), false))?)
}

/// Retrieval metrics of a model on a loader's data (query = reference, k = max bin count).
pub fn evaluate(model: &dyn EmbeddingNet, loader: &Loader, device: Device) -> Result<RetrievalMetrics> {
    let (emb, labels) = embed_all(model, loader, device, 64)?;
    let dim = model.embedding_size() as usize;
    let e = Embeddings::new("embeddings", &emb, dim)?;
    Ok(evaluate_retrieval(e, &labels, None, &RetrievalConfig::default())?)
}

/// Runs (or resumes) training until the configured epochs or early stopping.
///
/// `on_event` sees every step, evaluation and epoch end (progress bars, logs).
pub fn run(mut parts: Parts, resume: bool, on_event: &mut dyn FnMut(&Event)) -> Result<TrainState> {
    std::fs::create_dir_all(parts.run_dir).map_err(|e| TrainError::io(parts.run_dir, e))?;
    let last = last_checkpoint(parts.run_dir);
    let mut state = if resume && last.exists() { restore(&mut parts, &last)? } else { TrainState::default() };
    if let Some(world) = parts.world {
        check_batch_divides(parts.sampler.config().batch_size, world.world_size())?;
        synchronise_replicas(&parts, world, &state)?;
    }
    let log_path = parts.run_dir.join("log.jsonl");
    let mut log = match parts.is_main() {
        true => Some(std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| TrainError::io(&log_path, e))?),
        false => None,
    };
    let mut emit = |event: &Event, on_event: &mut dyn FnMut(&Event)| -> Result<()> {
        use std::io::Write;
        if let Some(log) = &mut log {
            writeln!(log, "{}", serde_json::to_string(event).expect("event serialises")).map_err(|e| TrainError::io(&log_path, e))?;
            on_event(event);
        }
        Ok(())
    };
    let cfg = parts.config;
    let steps_per_epoch = parts.sampler.batches_per_epoch();
    let world_size = parts.world.map_or(1, ProcessGroup::world_size);
    let total_epochs = cfg.epochs as f64;
    while !state.finished && (state.sampler.epoch as usize) < cfg.epochs {
        let epoch = state.sampler.epoch as usize;
        let start_position = state.sampler.position;
        parts.model.begin_epoch(epoch);
        emit(&Event::EpochStart { epoch, steps: steps_per_epoch }, on_event)?;
        let started = Instant::now();
        let batches: Vec<Vec<usize>> = parts.sampler.epoch(epoch as u64).into_iter().skip(start_position).map(|b| rank_slice(b, parts.world)).collect();
        let mut images = 0usize;
        let mut lr_factor = parts.schedule.factor(epoch as f64, total_epochs);
        for (offset, batch) in parts.train_loader.iter_epoch(batches, epoch as u64).enumerate() {
            let batch = batch.map_err(|e| TrainError::Config(format!("loading training images: {e}")))?;
            let step = start_position + offset;
            lr_factor = parts.schedule.factor(epoch as f64 + step as f64 / steps_per_epoch as f64, total_epochs);
            tch::manual_seed((parts.seed as i64).wrapping_mul(1_000_003).wrapping_add(state.global_step as i64));
            let value = train_step(&mut parts, &batch, lr_factor, epoch, step)?;
            images += batch.shape[0] * world_size;
            state.global_step += 1;
            state.epoch_loss_sum += value;
            state.epoch_loss_count += 1;
            state.sampler = SamplerState { epoch: epoch as u64, position: step + 1 };
            emit(&Event::Step { epoch, step, global_step: state.global_step, loss: value, lr_factor }, on_event)?;
            if cfg.checkpoint_every_steps > 0 && (step + 1) % cfg.checkpoint_every_steps == 0 && step + 1 < steps_per_epoch && parts.is_main() {
                save(&parts, &last, &state)?;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let mean_loss = state.epoch_loss_sum / state.epoch_loss_count.max(1) as f64;
        let mut record = EpochRecord { epoch, mean_loss, lr_factor, eval: None };
        let is_last = epoch + 1 == cfg.epochs;
        if let Some(metrics) = validate_epoch(&parts, &mut state, &mut record, is_last)? {
            emit(&Event::Eval { epoch, metrics }, on_event)?;
        }
        emit(&Event::EpochEnd { epoch, mean_loss, seconds, images_per_second: images as f64 / seconds.max(1e-9) }, on_event)?;
        state.history.push(record);
        state.sampler = SamplerState { epoch: epoch as u64 + 1, position: 0 };
        state.epoch_loss_sum = 0.0;
        state.epoch_loss_count = 0;
        if let Some(p) = cfg.early_stopping_patience
            && state.evals_without_improvement >= p
        {
            state.finished = true;
        }
        if parts.is_main() {
            save(&parts, &last, &state)?;
        }
    }
    Ok(state)
}

/// This rank's contiguous share of a global batch (all of it for a single process).
fn rank_slice(batch: Vec<usize>, world: Option<&ProcessGroup>) -> Vec<usize> {
    match world {
        Some(w) => {
            let per_rank = batch.len() / w.world_size();
            batch[w.rank() * per_rank..(w.rank() + 1) * per_rank].to_vec()
        }
        None => batch,
    }
}

fn check_batch_divides(batch_size: usize, world_size: usize) -> Result<()> {
    if !batch_size.is_multiple_of(world_size) {
        return Err(TrainError::Config(format!(
            "sampler.batch_size {batch_size} must be a multiple of the number of processes ({world_size}): each takes an equal share of the global batch"
        )));
    }
    Ok(())
}

/// Makes every rank start from rank 0's weights, and checks that all resumed at the same step
/// (a rank that could not read the run directory's checkpoint would otherwise silently diverge).
fn synchronise_replicas(parts: &Parts, world: &ProcessGroup, state: &TrainState) -> Result<()> {
    let step = Tensor::from_slice(&[state.global_step as i64]);
    for (rank, their) in world.all_gather(&step)?.iter().enumerate() {
        let their = their.int64_value(&[0]);
        if their != state.global_step as i64 {
            return Err(TrainError::Config(format!(
                "rank {rank} starts at step {} but rank {} at step {}: every rank must see the same run directory ({}) to resume",
                their,
                world.rank(),
                state.global_step,
                parts.run_dir.display()
            )));
        }
    }
    let mut vars: Vec<Tensor> = named("", parts.model.variables()).into_iter().map(|(_, t)| t).collect();
    vars.extend(named("", parts.loss_vars.variables().into_iter().collect()).into_iter().map(|(_, t)| t));
    world.broadcast(&vars, 0)?;
    Ok(())
}

/// Sums the model's gradients over the ranks (each holds its own samples' part) and averages
/// the loss variables' (each already holds the whole gradient of the global-batch loss).
fn reduce_gradients(parts: &Parts, world: &ProcessGroup) -> Result<()> {
    let trainable = |vars: Vec<(String, Tensor)>| -> Vec<Tensor> { named("", vars).into_iter().map(|(_, t)| t).filter(Tensor::requires_grad).collect() };
    world.all_reduce_gradients(&trainable(parts.model.variables()), GradientReduction::Sum, DEFAULT_BUCKET_BYTES)?;
    world.all_reduce_gradients(&trainable(parts.loss_vars.variables().into_iter().collect()), GradientReduction::Mean, DEFAULT_BUCKET_BYTES)?;
    Ok(())
}

/// One optimisation step on a loaded batch: forward (under bfloat16 autocast when configured),
/// mining, the loss (plus the classifier head's cross-entropy), the divergence checks, backward,
/// gradient clipping and the update. Returns the loss value.
fn train_step(parts: &mut Parts, batch: &proxima_data::Batch, lr_factor: f64, epoch: usize, step: usize) -> Result<f64> {
    let cfg = parts.config;
    let [b, c, h, w] = batch.shape.map(|x| x as i64);
    let x = Tensor::from_slice(&batch.images).view([b, c, h, w]).to_device(parts.device);
    let labels = Tensor::from_slice(&batch.labels).to_device(parts.device);
    let emb = if cfg.autocast_bf16 { autocast_bf16(parts.device, || parts.model.forward_t(&x, true)).to_kind(Kind::Float) } else { parts.model.forward_t(&x, true) };
    // Data parallel: the miner, the loss and the classifier see the global batch.
    let (emb, labels) = match parts.world {
        Some(w) => (w.gather_with_grad(&emb)?, Tensor::cat(&w.all_gather(&labels)?, 0)),
        None => (emb, labels),
    };
    if tch::no_grad(|| emb.isfinite().all().int64_value(&[]) == 0) {
        return Err(TrainError::Diverged { what: "the embeddings".into(), epoch, step });
    }
    let core_batch = CoreBatch::new(&emb, &labels);
    let tuples = match parts.miner {
        Some(m) => Some(m.mine(&core_batch)?),
        None => None,
    };
    let mut loss = parts.loss.forward(&core_batch, tuples.as_ref())?;
    if let Some(head) = parts.classifier {
        let logits = emb.apply(head);
        // Out of place (not `+=`): the loss is a node of the autograd graph.
        #[allow(clippy::assign_op_pattern)]
        {
            loss = loss + logits.cross_entropy_for_logits(&labels) * cfg.classifier_weight;
        }
    }
    let value = loss.double_value(&[]);
    if !value.is_finite() {
        return Err(TrainError::Diverged { what: format!("the loss ({value})"), epoch, step });
    }
    if !loss.requires_grad() {
        return Err(TrainError::Config(format!(
            "nothing to train in epoch {}: the loss depends on no trainable weight (a frozen trunk under an identity head?); set model.freeze_trunk_epochs = 0 or use a head with weights",
            epoch + 1
        )));
    }
    parts.optimizer.zero_grad();
    loss.backward();
    if let Some(world) = parts.world {
        reduce_gradients(parts, world)?;
    }
    if let Some(clip) = cfg.grad_clip {
        parts.optimizer.clip_grad_norm(clip);
    }
    parts.optimizer.step(lr_factor);
    Ok(value)
}

/// The end-of-epoch validation when it is due (every `eval_every` epochs and after the last):
/// its metrics, recorded in `record`; a better MAP@R than before also writes the best
/// checkpoint (resuming from it starts the next epoch) and resets the early-stopping count.
///
/// Data parallel: rank 0 validates and writes; the others receive the early-stopping state.
fn validate_epoch(parts: &Parts, state: &mut TrainState, record: &mut EpochRecord, is_last: bool) -> Result<Option<EvalSummary>> {
    let epoch = record.epoch;
    if parts.val_loader.is_none() {
        return Ok(None);
    }
    if !((epoch + 1).is_multiple_of(parts.config.eval_every.max(1)) || is_last) {
        return Ok(None);
    }
    if let Some(world) = parts.world {
        if world.is_main() {
            let metrics = validate_main(parts, state, record)?;
            let shared = Tensor::from_slice(&[state.best_map_at_r.unwrap_or(f64::NAN), state.evals_without_improvement as f64]);
            world.broadcast(std::slice::from_ref(&shared), 0)?;
            return Ok(Some(metrics));
        }
        let shared = Tensor::from_slice(&[f64::NAN, 0.0]);
        world.broadcast(std::slice::from_ref(&shared), 0)?;
        let v: Vec<f64> = Vec::<f64>::try_from(&shared).map_err(TrainError::from)?;
        state.best_map_at_r = Some(v[0]).filter(|m| !m.is_nan());
        state.evals_without_improvement = v[1] as usize;
        return Ok(None);
    }
    validate_main(parts, state, record).map(Some)
}

/// Validation on the process that writes: metrics, best checkpoint, early-stopping count.
fn validate_main(parts: &Parts, state: &mut TrainState, record: &mut EpochRecord) -> Result<EvalSummary> {
    let epoch = record.epoch;
    let val = parts.val_loader.expect("validate_epoch checked the loader");
    let metrics = EvalSummary::from(&evaluate(&*parts.model, val, parts.device)?);
    record.eval = Some(metrics);
    if state.best_map_at_r.is_none_or(|b| metrics.map_at_r > b) {
        state.best_map_at_r = Some(metrics.map_at_r);
        state.evals_without_improvement = 0;
        state.history.push(record.clone());
        let mut best_state = state.clone();
        best_state.sampler = SamplerState { epoch: epoch as u64 + 1, position: 0 };
        save(parts, &best_checkpoint(parts.run_dir), &best_state)?;
        state.history.pop();
    } else {
        state.evals_without_improvement += 1;
    }
    Ok(metrics)
}

/// Shared handle to a data set (the loaders need `Arc`).
pub fn shared(ds: Dataset) -> Arc<Dataset> {
    Arc::new(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_batch_that_the_ranks_cannot_share_equally_is_refused() {
        assert!(check_batch_divides(16, 2).is_ok() && check_batch_divides(16, 1).is_ok());
        let err = check_batch_divides(16, 3).unwrap_err().to_string();
        assert!(err.contains("sampler.batch_size 16") && err.contains("(3)"), "{err}");
    }
}
