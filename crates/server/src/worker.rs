//! The model worker: one thread owns the model and embeds micro-batches from a bounded queue.
//!
//! Why one thread: a tch model is not meant to be shared freely between threads, and on a CPU
//! a forward pass already uses every core through libtorch's own thread pool, so parallel
//! forwards would only fight over them. Why micro-batches: one forward of N images costs far
//! less than N forwards of one, so under load the worker takes the first waiting request,
//! waits at most `batch_wait` for more (up to `max_batch` images) and embeds them together;
//! an idle server pays at most that wait. Why a *bounded* queue: when requests arrive faster
//! than the model can embed them, an unbounded queue turns overload into ever-growing latency
//! and memory; a bounded one turns it into an immediate 429 the client can retry.
//!
//! Decoding and resizing happen before the queue, in the request's own blocking task, so the
//! worker does nothing but tensor work. Jobs whose client has gone (timed out) are dropped
//! unembedded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use proxima_data::PipelineConfig;
use proxima_models::model_dir::TrainedModel;
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// What the rest of the server needs to know about the model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Fingerprint of the weights (galleries are bound to it).
    pub fingerprint: String,
    /// Square input side in pixels.
    pub image_size: u32,
    /// Embedding dimension.
    pub dim: usize,
    /// The evaluation pipeline (resize + normalisation) the model expects.
    pub pipeline: PipelineConfig,
}

/// Micro-batching parameters.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Jobs waiting in the queue before new ones are refused.
    pub queue_capacity: usize,
    /// Most images embedded in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more jobs after the first one of a batch.
    pub batch_wait: Duration,
}

/// Called by the worker before every forward pass with the number of images (a test hook).
pub type BeforeBatch = Arc<dyn Fn(usize) + Send + Sync>;

/// Embeddings of one job (`n × dim`, row-major), or why the forward pass failed.
pub type JobResult = Result<Vec<f32>, String>;

struct Job {
    /// `n × 3 × s × s` preprocessed pixels.
    pixels: Vec<f32>,
    n: usize,
    reply: oneshot::Sender<JobResult>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: retry later.
    Full,
    /// The worker has stopped.
    Closed,
}

/// A cheap handle that queues jobs for the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    per_image: usize,
}

impl WorkerHandle {
    /// Queues `n` preprocessed images (`n × 3·s·s` floats); the receiver yields their embeddings.
    pub fn submit(&self, pixels: Vec<f32>, n: usize) -> Result<oneshot::Receiver<JobResult>, SubmitError> {
        debug_assert_eq!(pixels.len(), n * self.per_image);
        let (reply, rx) = oneshot::channel();
        // Count before sending so the worker's decrement can never underflow the gauge.
        self.depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Job { pixels, n, reply }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Closed,
                })
            }
        }
    }

    /// Jobs waiting in the queue (not counting the batch being embedded).
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }
}

/// Starts the worker thread, loads the model in it, and returns once the model is ready.
///
/// The model is created inside the thread and never leaves it. The thread ends when every
/// [`WorkerHandle`] is dropped.
pub fn spawn(
    load: Box<dyn FnOnce() -> proxima_models::Result<TrainedModel> + Send>,
    cfg: BatchConfig,
    metrics: Arc<Metrics>,
    before_batch: Option<BeforeBatch>,
) -> Result<(WorkerHandle, ModelInfo), String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(cfg.queue_capacity.max(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<ModelInfo, String>>();
    let depth = Arc::new(AtomicUsize::new(0));
    let worker_depth = depth.clone();
    std::thread::Builder::new()
        .name("proxima-model".into())
        .spawn(move || {
            let model = match load() {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("loading the model: {e}")));
                    return;
                }
            };
            let info = ModelInfo { fingerprint: model.fingerprint().to_string(), image_size: model.image_size(), dim: model.dim(), pipeline: model.pipeline() };
            if ready_tx.send(Ok(info)).is_err() {
                return;
            }
            run(&model, &rx, cfg, &worker_depth, &metrics, before_batch.as_ref());
        })
        .map_err(|e| format!("cannot start the model thread: {e}"))?;
    let info = ready_rx.recv().map_err(|_| "the model thread stopped while loading".to_string())??;
    let per_image = 3 * (info.image_size as usize) * (info.image_size as usize);
    Ok((WorkerHandle { tx, depth, per_image }, info))
}

fn run(model: &TrainedModel, rx: &Receiver<Job>, cfg: BatchConfig, depth: &AtomicUsize, metrics: &Metrics, hook: Option<&BeforeBatch>) {
    let max_batch = cfg.max_batch.max(1);
    while let Ok(first) = rx.recv() {
        depth.fetch_sub(1, Ordering::SeqCst);
        let mut jobs = vec![first];
        let mut images = jobs[0].n;
        let deadline = Instant::now() + cfg.batch_wait;
        while images < max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => {
                    depth.fetch_sub(1, Ordering::SeqCst);
                    images += j.n;
                    jobs.push(j);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // Clients that gave up (timeout, disconnect) need no embedding.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let n: usize = jobs.iter().map(|j| j.n).sum();
        if let Some(h) = hook {
            h(n);
        }
        let result = embed_chunks(model, &jobs, max_batch);
        metrics.record_batch(n);
        match result {
            Ok(emb) => {
                let dim = emb.len() / n;
                let mut at = 0;
                for j in jobs {
                    let rows = emb[at * dim..(at + j.n) * dim].to_vec();
                    at += j.n;
                    let _ = j.reply.send(Ok(rows));
                }
            }
            Err(e) => {
                for j in jobs {
                    let _ = j.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Embeds all images of `jobs` in forward passes of at most `max_batch` images.
fn embed_chunks(model: &TrainedModel, jobs: &[Job], max_batch: usize) -> JobResult {
    let s = model.image_size() as i64;
    let per = (3 * s * s) as usize;
    let pixels: Vec<f32> = jobs.iter().flat_map(|j| j.pixels.iter().copied()).collect();
    let mut out = Vec::new();
    for chunk in pixels.chunks(per * max_batch) {
        let n = (chunk.len() / per) as i64;
        // libtorch reports some failures as panics through tch; never let one kill the worker.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Vec<f32>, String> {
            let x = Tensor::from_slice(chunk).view([n, 3, s, s]).to_device(model.device);
            let e = tch::no_grad(|| model.embed_t(&x)).to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            Vec::<f32>::try_from(e.flatten(0, -1)).map_err(|e| e.to_string())
        }));
        match r {
            Ok(Ok(v)) => out.extend(v),
            Ok(Err(e)) => return Err(format!("forward pass failed: {e}")),
            Err(_) => return Err("forward pass panicked".into()),
        }
    }
    Ok(out)
}
