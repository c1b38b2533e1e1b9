//! Performance workloads for `proxima perf`: how long the losses and miners take, and how much
//! memory they need, on batches of the sizes training uses.
//!
//! Each [`Workload`] is a loss (forward + backward on random embeddings that require grad) or a
//! miner (one mining call) at a batch size B and embedding size D, with 8 samples per class
//! (labels `i / 8`). Names follow `loss/<ReferenceName>/B=<b>,D=<d>` and
//! `miner/<ReferenceName>/B=<b>,D=<d>` so results line up with the reference library's timings.
//!
//! Components are built from their JSON configuration at run time, so the list can name losses
//! that this build does not have yet: running such a workload returns a result carrying the
//! configuration error instead of failing to compile or panicking.
//!
//! Memory is the resident-set high-water mark (`VmHWM` of `/proc/self/status`): a *process*
//! peak. [`run`] first tries [`reset_peak_rss`] (Linux ≥ 4.0 resets `VmHWM` to the current RSS
//! when "5" is written to `/proc/self/clear_refs`); when that works the figure is the peak during
//! this workload, including the process's baseline (libtorch itself, ~hundreds of MB). Where the
//! reset is not permitted, it is the peak of the whole process so far, so run each workload in a
//! fresh process for a per-workload figure. GPU memory is not included.

use std::time::Instant;

use serde_json::{Value, json};
use tch::{Device, Kind, Tensor, nn};

use crate::loss::{BuildContext, LossSpec};
use crate::miner::MinerSpec;
use crate::tuples::Batch;

/// Samples per class in every workload batch (labels are `i / 8`).
pub const SAMPLES_PER_CLASS: i64 = 8;

/// What a workload measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Forward and backward of a loss.
    Loss,
    /// One call of a miner.
    Miner,
}

/// One timed workload: a component configuration at a batch size and embedding size.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `loss/<Name>/B=<b>,D=<d>` or `miner/<Name>/B=<b>,D=<d>`.
    pub name: String,
    pub kind: WorkloadKind,
    /// The component's configuration (a [`LossSpec`] or [`MinerSpec`] as JSON).
    pub config: Value,
    /// Batch size B.
    pub batch_size: i64,
    /// Embedding size D.
    pub dim: i64,
}

impl Workload {
    /// A loss workload; the name is derived from the configuration's `type`.
    pub fn loss(config: Value, batch_size: i64, dim: i64) -> Self {
        Self::new(WorkloadKind::Loss, "loss", config, batch_size, dim)
    }
    /// A miner workload; the name is derived from the configuration's `type`.
    pub fn miner(config: Value, batch_size: i64, dim: i64) -> Self {
        Self::new(WorkloadKind::Miner, "miner", config, batch_size, dim)
    }
    fn new(kind: WorkloadKind, prefix: &str, config: Value, batch_size: i64, dim: i64) -> Self {
        let ty = config["type"].as_str().unwrap_or("?");
        Workload { name: format!("{prefix}/{ty}/B={batch_size},D={dim}"), kind, config, batch_size, dim }
    }
}

/// The outcome of [`run`]: the median time of one call and the peak resident memory.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfResult {
    /// Median wall time of one sample in seconds (NaN when the workload failed).
    pub median_s: f64,
    /// Resident-set high-water mark in MiB (see the module docs for what it covers; NaN on failure).
    pub peak_rss_mb: f64,
    /// Every sample's time in seconds.
    pub samples_s: Vec<f64>,
    /// Whether the peak was reset before the workload (else it is the process peak so far).
    pub peak_is_per_workload: bool,
    /// Why the workload could not run (e.g. a loss this build does not have).
    pub error: Option<String>,
}

impl PerfResult {
    fn failed(error: String) -> Self {
        PerfResult { median_s: f64::NAN, peak_rss_mb: f64::NAN, samples_s: Vec::new(), peak_is_per_workload: false, error: Some(error) }
    }
}

/// The standard workloads of `proxima perf` (D = 128).
pub fn workloads() -> Vec<Workload> {
    let d = 128;
    let mut w = Vec::new();
    for b in [256, 1024, 4096] {
        w.push(Workload::loss(json!({"type": "TripletMarginLoss", "margin": 0.1, "triplets_per_anchor": "all"}), b, d));
    }
    for b in [1024, 4096] {
        w.push(Workload::loss(json!({"type": "ContrastiveLoss"}), b, d));
    }
    for b in [1024, 4096] {
        w.push(Workload::loss(json!({"type": "MultiSimilarityLoss"}), b, d));
    }
    for b in [256, 1024, 4096] {
        w.push(Workload::loss(json!({"type": "NTXentLoss"}), b, d));
    }
    for b in [1024, 4096] {
        w.push(Workload::loss(json!({"type": "CircleLoss"}), b, d));
    }
    w.push(Workload::miner(json!({"type": "TripletMarginMiner", "margin": 0.2, "type_of_triplets": "semihard"}), 1024, d));
    w.push(Workload::miner(json!({"type": "BatchHardMiner"}), 1024, d));
    w.push(Workload::miner(json!({"type": "MultiSimilarityMiner"}), 1024, d));
    w.push(Workload::miner(json!({"type": "BatchEasyHardMiner"}), 1024, d));
    w
}

/// Runs `workload` on the CPU: one untimed warm-up, then `samples` timed calls (at least one).
pub fn run(workload: &Workload, samples: usize) -> PerfResult {
    run_on(workload, samples, Device::Cpu)
}

/// [`run`] on a given device (CUDA work is synchronised before each sample's clock stops).
pub fn run_on(workload: &Workload, samples: usize, device: Device) -> PerfResult {
    let peak_is_per_workload = reset_peak_rss().is_ok();
    let b = workload.batch_size;
    if b < 1 || workload.dim < 1 {
        return PerfResult::failed("batch size and dimension must be positive".into());
    }
    let labels = (Tensor::arange(b, (Kind::Int64, device)) / SAMPLES_PER_CLASS).to_kind(Kind::Int64);
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let call: Box<dyn Fn() -> crate::Result<()>> = match workload.kind {
        WorkloadKind::Loss => {
            let spec: LossSpec = match serde_json::from_value(workload.config.clone()) {
                Ok(s) => s,
                Err(e) => return PerfResult::failed(format!("loss configuration: {e}")),
            };
            let ctx = BuildContext { num_classes: Some((b + SAMPLES_PER_CLASS - 1) / SAMPLES_PER_CLASS), embedding_size: Some(workload.dim), vars: &root };
            let loss = match spec.build(&ctx) {
                Ok(l) => l,
                Err(e) => return PerfResult::failed(e.to_string()),
            };
            let emb = Tensor::randn([b, workload.dim], (Kind::Float, device)).set_requires_grad(true);
            let labels = labels.shallow_clone();
            Box::new(move || {
                let mut emb = emb.shallow_clone();
                emb.zero_grad();
                let value = loss.forward(&Batch::new(&emb, &labels), None)?;
                value.backward();
                Ok(())
            })
        }
        WorkloadKind::Miner => {
            let spec: MinerSpec = match serde_json::from_value(workload.config.clone()) {
                Ok(s) => s,
                Err(e) => return PerfResult::failed(format!("miner configuration: {e}")),
            };
            let miner = match spec.build() {
                Ok(m) => m,
                Err(e) => return PerfResult::failed(e.to_string()),
            };
            let emb = Tensor::randn([b, workload.dim], (Kind::Float, device));
            let labels = labels.shallow_clone();
            Box::new(move || {
                miner.mine(&Batch::new(&emb, &labels))?;
                Ok(())
            })
        }
    };
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut times = Vec::with_capacity(samples.max(1));
    for i in 0..=samples.max(1) {
        sync();
        let start = Instant::now();
        if let Err(e) = call() {
            return PerfResult::failed(e.to_string());
        }
        sync();
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    PerfResult { median_s: median(&times), peak_rss_mb: peak_rss_mb().unwrap_or(f64::NAN), samples_s: times, peak_is_per_workload, error: None }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The process's resident-set high-water mark (`VmHWM`) in MiB, if `/proc/self/status` has it.
pub fn peak_rss_mb() -> Option<f64> {
    status_kb("VmHWM:").map(|kb| kb / 1024.0)
}

/// The process's current resident set (`VmRSS`) in MiB.
pub fn current_rss_mb() -> Option<f64> {
    status_kb("VmRSS:").map(|kb| kb / 1024.0)
}

fn status_kb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resets the resident-set high-water mark to the current RSS by writing "5" to
/// `/proc/self/clear_refs` (Linux ≥ 4.0); an error where that is not available or permitted.
pub fn reset_peak_rss() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_follow_the_convention() {
        let w = workloads();
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        for n in [
            "loss/TripletMarginLoss/B=256,D=128",
            "loss/TripletMarginLoss/B=4096,D=128",
            "loss/ContrastiveLoss/B=1024,D=128",
            "loss/MultiSimilarityLoss/B=4096,D=128",
            "loss/NTXentLoss/B=256,D=128",
            "loss/CircleLoss/B=4096,D=128",
            "miner/TripletMarginMiner/B=1024,D=128",
            "miner/BatchHardMiner/B=1024,D=128",
        ] {
            assert!(names.contains(&n), "{n} missing");
        }
    }

    #[test]
    fn small_workloads_run_and_unknown_components_fail_cleanly() {
        let ok = run(&Workload::loss(json!({"type": "TripletMarginLoss", "margin": 0.1}), 32, 8), 2);
        assert!(ok.error.is_none(), "{:?}", ok.error);
        assert!(ok.median_s > 0.0 && ok.samples_s.len() == 2 && ok.peak_rss_mb > 0.0);
        let m = run(&Workload::miner(json!({"type": "TripletMarginMiner", "type_of_triplets": "semihard"}), 64, 8), 1);
        assert!(m.error.is_none(), "{:?}", m.error);
        let bad = run(&Workload::loss(json!({"type": "NoSuchLoss"}), 32, 8), 1);
        assert!(bad.error.is_some() && bad.median_s.is_nan());
    }

    #[test]
    fn peak_rss_can_be_reset_on_this_kernel() {
        let Some(before) = peak_rss_mb() else { return };
        // Touch 256 MiB, release it, and check that the reset forgets the peak.
        let big = vec![1u8; 256 << 20];
        assert!(std::hint::black_box(&big).iter().step_by(4096).all(|&x| x == 1));
        let with_big = peak_rss_mb().unwrap();
        assert!(with_big >= before.max(200.0));
        drop(big);
        if reset_peak_rss().is_err() {
            eprintln!("SKIPPED: /proc/self/clear_refs is not writable here");
            return;
        }
        let after = peak_rss_mb().unwrap();
        assert!(after < with_big - 128.0, "VmHWM {after} MiB after the reset, {with_big} MiB before");
    }
}
