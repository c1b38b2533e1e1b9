//! The integration-test binary of `proxima-train`: the loop learns, and a killed run resumes to
//! the same result as an uninterrupted one.

use std::path::Path;
use std::sync::Arc;

use proxima_core::loss::BuildContext;
use proxima_core::{Loss, LossSpec};
use proxima_data::{Dataset, Loader, LoaderConfig, MPerClassConfig, MPerClassSampler, Pipeline, PipelineConfig, ScanOptions};
use proxima_dist::{ProcessGroup, WorldEnv};
use proxima_train::model::{EmbeddingNet, trainable_with_prefix};
use proxima_train::trainer::{self, Event, LoopConfig, Parts, TrainState};
use proxima_train::{Optimizer, OptimizerConfig, ParamGroup, Schedule};
use tch::{Device, Tensor, nn, nn::Module};

/// A tiny CNN: conv → ReLU → conv → global average pool → linear head.
struct TinyNet {
    vars: Vec<(String, Tensor)>,
    trunk_params: Vec<Tensor>,
    c1: nn::Conv2D,
    c2: nn::Conv2D,
    head: nn::Linear,
}

impl TinyNet {
    fn new(vs: &nn::VarStore) -> Self {
        let root = vs.root();
        let t = &root / "trunk";
        let cfg = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
        let (c1, c2) = (nn::conv2d(&t / "c1", 3, 8, 3, cfg), nn::conv2d(&t / "c2", 8, 16, 3, cfg));
        let trunk_params = trainable_with_prefix(vs, "trunk").into_iter().map(|(_, t)| t).collect();
        let head = nn::linear(&root / "head" / "fc", 16, 8, Default::default());
        TinyNet { vars: vs.variables().into_iter().collect(), trunk_params, c1, c2, head }
    }
}

impl EmbeddingNet for TinyNet {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Tensor {
        let h = x.apply(&self.c1).relu().apply(&self.c2).relu().mean_dim(&[2i64, 3][..], false, tch::Kind::Float);
        self.head.forward(&h)
    }
    fn embedding_size(&self) -> i64 {
        8
    }
    fn variables(&self) -> Vec<(String, Tensor)> {
        self.vars.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()
    }
    fn begin_epoch(&mut self, epoch: usize) {
        // Exercise trunk freezing: the first epoch trains the head only.
        for t in &self.trunk_params {
            let _ = t.set_requires_grad(epoch >= 1);
        }
    }
}

fn synthetic_data(dir: &Path) -> (Dataset, Dataset) {
    proxima_data::synth(8, 8, 32, 5, 0.3, dir).expect("synth");
    let ds = Dataset::scan_folder(dir, &ScanOptions::default()).expect("scan").dataset;
    let names: Vec<String> = ds.classes.clone();
    let train = ds.select_classes(&names[..6]).expect("train classes");
    let val = ds.select_classes(&names[6..]).expect("val classes");
    (train, val)
}

/// libtorch's random generator and thread count are process-wide: tests that seed it must not
/// interleave, or two runs of the same seed draw different weights.
static TORCH_GLOBALS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_lock() -> std::sync::MutexGuard<'static, ()> {
    TORCH_GLOBALS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Run {
    state: TrainState,
    final_params: Vec<f32>,
}

/// Trains from scratch (or resumes) in `run_dir`; `kill_at` panics inside the loop at that step.
fn train(data: &(Dataset, Dataset), run_dir: &Path, resume: bool, kill_at: Option<usize>, lr: f64) -> std::thread::Result<proxima_train::Result<Run>> {
    train_in(data, run_dir, resume, kill_at, lr, None)
}

/// [`train`] as one rank of a data-parallel job.
fn train_in(
    data: &(Dataset, Dataset),
    run_dir: &Path,
    resume: bool,
    kill_at: Option<usize>,
    lr: f64,
    world: Option<&ProcessGroup>,
) -> std::thread::Result<proxima_train::Result<Run>> {
    let (train_ds, val_ds) = data;
    // Seeding and drawing the weights as one step: ranks on two threads share libtorch's
    // generator, and interleaved draws would give rank 0 other weights than a single process.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let init = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut net = TinyNet::new(&vs);
    drop(init);
    let loss_vs = nn::VarStore::new(Device::Cpu);
    let spec: LossSpec = toml::from_str("type = \"triplet_margin\"\nmargin = 0.2").unwrap();
    let root = loss_vs.root();
    let loss: Loss = spec.build(&BuildContext { num_classes: None, embedding_size: Some(8), vars: &root }).unwrap();
    let groups = vec![
        ParamGroup { name: "trunk".into(), lr, params: trainable_with_prefix(&vs, "trunk") },
        ParamGroup { name: "head".into(), lr, params: trainable_with_prefix(&vs, "head") },
    ];
    let mut opt = Optimizer::new(OptimizerConfig::Adam { lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 }, groups).unwrap();
    let sampler =
        MPerClassSampler::new(&train_ds.labels(), MPerClassConfig { m: 4, batch_size: 16, small_classes: Default::default(), batches_per_epoch: Some(6) }, 3).unwrap();
    let lcfg = LoaderConfig { image_size: [32, 32], workers: 2, ..Default::default() };
    let train_loader = Loader::new(Arc::new(train_ds.clone()), Pipeline::new(PipelineConfig::train(32), 9).unwrap(), lcfg).unwrap();
    let val_loader = Loader::new(Arc::new(val_ds.clone()), Pipeline::new(PipelineConfig::eval(32), 0).unwrap(), lcfg).unwrap();
    let schedule = Schedule::Cosine { warmup_epochs: 0.5, min_factor: 0.1 };
    let config = LoopConfig {
        epochs: 3,
        eval_every: 1,
        early_stopping_patience: None,
        grad_clip: Some(5.0),
        checkpoint_every_steps: 2,
        classifier_weight: 0.0,
        autocast_bf16: false,
    };
    let parts = Parts {
        device: Device::Cpu,
        seed: 7,
        model: &mut net,
        loss_vars: &loss_vs,
        loss: &loss,
        miner: None,
        classifier: None,
        optimizer: &mut opt,
        schedule: &schedule,
        sampler: &sampler,
        train_loader: &train_loader,
        val_loader: Some(&val_loader),
        config: &config,
        run_dir,
        world,
    };
    let mut on_event = |e: &Event| {
        if let (Event::Step { global_step, .. }, Some(k)) = (e, kill_at)
            && *global_step == k
        {
            panic!("simulated kill at step {k}");
        }
    };
    let vs_ref = &vs;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let state = trainer::run(parts, resume, &mut on_event)?;
        let mut final_params = Vec::new();
        for (_, t) in trainable_with_prefix(vs_ref, "") {
            final_params.extend(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap());
        }
        Ok(Run { state, final_params })
    }))
}

#[test]
fn a_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one() {
    let _guard = torch_lock();
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data(&dir.path().join("data"));

    let full = train(&data, &dir.path().join("full"), false, None, 0.01).expect("no panic").expect("uninterrupted run");
    assert_eq!(full.state.history.len(), 3);
    let losses: Vec<f64> = full.state.history.iter().map(|r| r.mean_loss).collect();
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(dir.path().join("full/best.safetensors").exists() && dir.path().join("full/last.safetensors").exists());
    let log = std::fs::read_to_string(dir.path().join("full/log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"step\"")).count(), 18);

    // Kill mid-epoch 1 (global step 9 of 18; the last checkpoint is at step 8), then resume.
    let killed = train(&data, &dir.path().join("resumed"), false, Some(9), 0.01);
    assert!(killed.is_err(), "the simulated kill must stop the run");
    let resumed = train(&data, &dir.path().join("resumed"), true, None, 0.01).expect("no panic").expect("resumed run");
    assert_eq!(resumed.state.global_step, full.state.global_step);
    assert_eq!(resumed.state.history.len(), 3);
    for (a, b) in full.state.history.iter().zip(&resumed.state.history) {
        assert!((a.mean_loss - b.mean_loss).abs() < 1e-5, "epoch {}: loss {} vs {}", a.epoch, a.mean_loss, b.mean_loss);
        let (ea, eb) = (a.eval.unwrap(), b.eval.unwrap());
        assert!((ea.map_at_r - eb.map_at_r).abs() < 1e-5, "epoch {}: MAP@R {} vs {}", a.epoch, ea.map_at_r, eb.map_at_r);
    }
    let max_diff = full.final_params.iter().zip(&resumed.final_params).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-5, "final parameters differ by {max_diff}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_keeps_its_last_checkpoint() {
    let _guard = torch_lock();
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data(&dir.path().join("data"));
    let run_dir = dir.path().join("run");
    let err = train(&data, &run_dir, false, None, 1e38).expect("no panic").err().expect("a learning rate of 1e38 must diverge");
    let msg = err.to_string();
    assert!(matches!(err, proxima_train::TrainError::Diverged { .. }), "{msg}");
    assert!(msg.contains("non-finite") && msg.contains("last good checkpoint"), "{msg}");
    let last = trainer::last_checkpoint(&run_dir);
    if last.exists() {
        proxima_models::tensor_file::load(&last).expect("the kept checkpoint is readable");
    }
}

/// Runs [`train_in`] on two ranks (threads, each with its own process group over 127.0.0.1).
fn train_two_ranks(data: &(Dataset, Dataset), run_dir: &Path, kill_at: Option<usize>) -> Vec<std::thread::Result<proxima_train::Result<Run>>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let (data, run_dir) = (data.clone(), run_dir.to_path_buf());
            std::thread::spawn(move || {
                let group = ProcessGroup::connect(&WorldEnv::local(rank, 2, port), std::time::Duration::from_secs(30)).expect("join");
                train_in(&data, &run_dir, false, kill_at, 0.01, Some(&group))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
}

#[test]
fn two_ranks_train_like_one_process_and_a_run_killed_under_two_resumes_in_one() {
    let _guard = torch_lock();
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data(&dir.path().join("data"));
    let full = train(&data, &dir.path().join("full"), false, None, 0.01).expect("no panic").expect("single-process run");

    // Two ranks, 8 samples each of every 16-sample global batch.
    let ranks: Vec<Run> = train_two_ranks(&data, &dir.path().join("two"), None).into_iter().map(|r| r.expect("no panic").expect("rank run")).collect();
    assert_eq!(ranks[0].final_params, ranks[1].final_params, "the ranks must hold bit-identical weights");
    assert_eq!(ranks[0].state.global_step, full.state.global_step);
    for (a, b) in full.state.history.iter().zip(&ranks[0].state.history) {
        assert!((a.mean_loss - b.mean_loss).abs() < 1e-5, "epoch {}: loss {} (one process) vs {} (two)", a.epoch, a.mean_loss, b.mean_loss);
    }
    let max_diff = full.final_params.iter().zip(&ranks[0].final_params).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "two ranks end {max_diff} away from one process");
    let log = std::fs::read_to_string(dir.path().join("two/log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"step\"")).count(), 18, "rank 0 alone writes the log");

    // Kill rank 0 at global step 9 (last checkpoint at step 8); rank 1 must fail, not hang.
    let killed = train_two_ranks(&data, &dir.path().join("switch"), Some(9));
    assert!(killed[0].is_err(), "rank 0 was killed");
    assert!(matches!(&killed[1], Ok(Err(_))), "rank 1 must stop with an error when rank 0 dies");
    let resumed = train(&data, &dir.path().join("switch"), true, None, 0.01).expect("no panic").expect("resumed in one process");
    assert_eq!(resumed.state.global_step, full.state.global_step);
    let max_diff = full.final_params.iter().zip(&resumed.final_params).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "resumed run ends {max_diff} away from the uninterrupted one");
}

#[test]
fn ranks_that_resume_from_different_steps_are_refused_with_the_run_directory_named() {
    let _guard = torch_lock();
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_data(&dir.path().join("data"));
    // Rank 0 resumes a finished run (step 18); rank 1 sees an empty directory (step 0).
    train(&data, &dir.path().join("done"), false, None, 0.01).expect("no panic").expect("single-process run");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let handles: Vec<_> = [dir.path().join("done"), dir.path().join("empty")]
        .into_iter()
        .enumerate()
        .map(|(rank, run_dir)| {
            let data = data.clone();
            std::thread::spawn(move || {
                let group = ProcessGroup::connect(&WorldEnv::local(rank, 2, port), std::time::Duration::from_secs(30)).expect("join");
                train_in(&data, &run_dir, true, None, 0.01, Some(&group)).expect("no panic").err().map(|e| e.to_string())
            })
        })
        .collect();
    for (rank, h) in handles.into_iter().enumerate() {
        let err = h.join().unwrap().unwrap_or_else(|| panic!("rank {rank} must refuse to train"));
        assert!(err.contains("starts at step") && err.contains("same run directory"), "rank {rank}: {err}");
    }
}
