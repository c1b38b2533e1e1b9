//! An experiment as one TOML file: data, split, sampler, augmentation, model, loss, miner,
//! optimizer, schedule and loop settings — validated completely when loaded, before any image is
//! decoded, so a typo fails in a second rather than mid-epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proxima_core::loss::BuildContext;
use proxima_core::{LossSpec, MinerSpec};
use proxima_data::{Dataset, Loader, LoaderConfig, MPerClassConfig, MPerClassSampler, Normalize, Pipeline, PipelineConfig, ScanOptions, Split, SplitConfig};
use proxima_models::{EmbeddingConfig, EmbeddingModel};
use serde::{Deserialize, Serialize};
use tch::{Device, nn};

use crate::error::{Result, TrainError};
use crate::model::trainable_with_prefix;
use crate::optim::{Optimizer, OptimizerConfig, ParamGroup};
use crate::schedule::Schedule;
use crate::trainer::{self, Event, LoopConfig, Parts, TrainState};

/// How long a rank waits for the others (to join, or inside a collective) before failing: long
/// enough for rank 0's validation and checkpoint between two steps.
const DIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

fn default_device() -> String {
    "cpu".into()
}
fn default_image_size() -> u32 {
    64
}

/// Where the images are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A class-per-folder tree…
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// …or a manifest (CSV or JSONL: path, label, optional box).
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// Square input side in pixels.
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    /// Loader threads (0 = all cores).
    #[serde(default)]
    pub workers: usize,
    /// Keep decoded images in memory across epochs.
    #[serde(default)]
    pub cache: bool,
}

/// Learning rates per parameter group; unset groups use the optimizer's `lr`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRates {
    #[serde(default)]
    pub trunk: Option<f64>,
    #[serde(default)]
    pub head: Option<f64>,
    /// The loss's own weights (proxies, class centres).
    #[serde(default)]
    pub loss: Option<f64>,
}

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    #[serde(default)]
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    pub data: DataConfig,
    /// How classes are split (class-disjoint); ignored when `split_file` is given.
    pub split: SplitConfig,
    /// A split written earlier (`split.json` of a run) to reuse exactly.
    #[serde(default)]
    pub split_file: Option<PathBuf>,
    pub sampler: MPerClassConfig,
    /// Training augmentation (default: the train preset at `data.image_size`, no flips).
    #[serde(default)]
    pub augment: Option<PipelineConfig>,
    pub model: EmbeddingConfig,
    pub loss: LossSpec,
    #[serde(default)]
    pub miner: Option<MinerSpec>,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub lr: GroupRates,
    #[serde(default)]
    pub schedule: Schedule,
    pub train: LoopConfig,
}

/// Parses `text`, applies `key.path=value` overrides, and validates everything.
pub fn load(text: &str, overrides: &[String]) -> Result<ExperimentConfig> {
    let mut value: toml::Table = toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?;
    for o in overrides {
        apply_override(&mut value, o)?;
    }
    let cfg: ExperimentConfig = value.try_into().map_err(|e: toml::de::Error| TrainError::Config(e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Reads and validates an experiment file.
pub fn load_file(path: &Path, overrides: &[String]) -> Result<ExperimentConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    load(&text, overrides).map_err(|e| match e {
        TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
        e => e,
    })
}

/// Applies one `--set key.path=value` (the value parsed as TOML, else taken as a string).
fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let (key, raw) = o.split_once('=').ok_or_else(|| TrainError::Config(format!("--set expects key=value, got '{o}'")))?;
    let value: toml::Value =
        toml::from_str::<toml::Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(raw.to_string()));
    set_dotted(table, key, value).map_err(|e| TrainError::Config(format!("--set {e}")))
}

/// Sets `key` (dotted, e.g. `optimizer.lr`) in `table`, creating intermediate tables; the error
/// names the part that is not a table. The one override of `--set` and of bench grids.
pub fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.trim().split('.').map(str::trim).collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let next = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        cur = next.as_table_mut().ok_or_else(|| format!("{key}: '{p}' is not a table"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Removes `key` (dotted) from `table`; a missing key is not an error.
pub fn unset_dotted(table: &mut toml::Table, key: &str) {
    let parts: Vec<&str> = key.trim().split('.').map(str::trim).collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        match cur.get_mut(*p).and_then(|v| v.as_table_mut()) {
            Some(t) => cur = t,
            None => return,
        }
    }
    cur.remove(parts[parts.len() - 1]);
}

impl ExperimentConfig {
    /// Checks every section (types were checked by parsing).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.data.root.is_some() == self.data.manifest.is_some() {
            return bad("data: set exactly one of root (class folders) or manifest".into());
        }
        if !(8..=1024).contains(&self.data.image_size) {
            return bad(format!("data.image_size must be in 8..=1024, got {}", self.data.image_size));
        }
        parse_device(&self.device)?;
        self.model.validate().map_err(|e| TrainError::Config(format!("model: {e}")))?;
        if let Some(p) = &self.model.pretrained
            && !p.is_file()
        {
            return bad(format!("model.pretrained: no weight file at {} (scripts/fetch-weights.sh fetches the EfficientNet-Lite0 one)", p.display()));
        }
        self.loss.validate().map_err(|e| TrainError::Config(format!("loss: {e}")))?;
        if let Some(m) = &self.miner {
            m.validate().map_err(|e| TrainError::Config(format!("miner: {e}")))?;
        }
        self.optimizer.validate().map_err(|e| match e {
            proxima_models::ModelError::Config(m) => TrainError::Config(format!("optimizer: {m}")),
            other => other.into(),
        })?;
        self.schedule.validate()?;
        if let Some(a) = &self.augment {
            a.validate().map_err(|e| TrainError::Config(format!("augment: {e}")))?;
        }
        if self.sampler.m == 0 || !self.sampler.batch_size.is_multiple_of(self.sampler.m) || self.sampler.batch_size / self.sampler.m < 2 {
            return bad(format!("sampler: batch_size ({}) must be a multiple of m ({}) with at least 2 classes per batch", self.sampler.batch_size, self.sampler.m));
        }
        if self.train.epochs == 0 {
            return bad("train.epochs must be ≥ 1".into());
        }
        Ok(())
    }
}

/// `cpu`, `cuda` or `cuda:N` as a device.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| TrainError::Config(format!("device must be cpu, cuda or cuda:N, got '{s}'"))),
    }
}

/// [`parse_device`], then checks that the device can be used: `cuda` needs a CUDA-enabled build
/// (`--features cuda`, which links `libtorch_cuda.so`) and a visible GPU; `cuda:N` needs more than
/// N GPUs. Device selection consults `tch::Cuda::is_available()` here and nowhere else.
pub fn available_device(s: &str) -> Result<Device> {
    let device = parse_device(s)?;
    if let Device::Cuda(i) = device {
        if !tch::Cuda::is_available() {
            return Err(TrainError::Config(format!(
                "device '{s}': CUDA is not available (build with `--features cuda`, and check that the GPU and its driver are visible: nvidia-smi)"
            )));
        }
        let count = tch::Cuda::device_count();
        if i as i64 >= count {
            return Err(TrainError::Config(format!("device '{s}': only {count} CUDA device(s) are visible")));
        }
    }
    Ok(device)
}

/// Loads the data set of an experiment (scan problems are reported, not fatal, unless no class is left).
pub fn load_dataset(cfg: &DataConfig) -> Result<(Dataset, Vec<proxima_data::Issue>)> {
    let data_err = |e: proxima_data::DataError| TrainError::Config(format!("data: {e}"));
    let (ds, issues) = match (&cfg.root, &cfg.manifest) {
        (Some(root), _) => {
            let r = Dataset::scan_folder(root, &ScanOptions::default()).map_err(data_err)?;
            (r.dataset, r.issues)
        }
        (None, Some(m)) => (Dataset::from_manifest(m).map_err(data_err)?, Vec::new()),
        (None, None) => unreachable!("validated"),
    };
    if ds.num_classes() < 2 {
        return Err(TrainError::Config(format!("data: metric learning needs at least 2 classes, found {}", ds.num_classes())));
    }
    Ok((ds, issues))
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub state: TrainState,
    pub train_classes: usize,
    pub val_classes: usize,
    pub test_classes: usize,
    /// Test metrics of the untrained and the trained (best) model, when there is a test part.
    pub test_before: Option<trainer::EvalSummary>,
    pub test_after: Option<trainer::EvalSummary>,
}

fn normalize_of(model: &EmbeddingModel) -> Normalize {
    let n = model.normalization();
    Normalize { mean: n.mean.map(|x| x as f32), std: n.std.map(|x| x as f32) }
}

/// Runs (or resumes) an experiment into `run_dir`.
///
/// Under a torchrun-style environment (`WORLD_SIZE` set, see [`proxima_dist::WorldEnv`]) this
/// process joins the data-parallel job first; rank 0 writes every file, the others only train
/// (their summary has no test metrics), and a CUDA run uses device `cuda:LOCAL_RANK`.
pub fn run(cfg: &ExperimentConfig, run_dir: &Path, resume: bool, on_event: &mut dyn FnMut(&Event)) -> Result<RunSummary> {
    let world = match proxima_dist::WorldEnv::from_env()? {
        Some(env) => {
            let cuda = match parse_device(&cfg.device)? {
                Device::Cuda(_) => proxima_dist::CudaCollectives::from_env()?,
                _ => proxima_dist::CudaCollectives::HostStaged,
            };
            Some((proxima_dist::ProcessGroup::connect_with(&env, DIST_TIMEOUT, cuda)?, env.local_rank))
        }
        None => None,
    };
    let is_main = world.as_ref().is_none_or(|(w, _)| w.is_main());
    let device = match (available_device(&cfg.device)?, &world) {
        // One device per local rank; more ranks than devices share them round-robin (a one-GPU
        // check of the data-parallel path; Gloo stages CUDA tensors through host memory).
        (Device::Cuda(_), Some((_, local_rank))) => available_device(&format!("cuda:{}", local_rank % tch::Cuda::device_count().max(1) as usize))?,
        (device, _) => device,
    };
    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))?;
    let resolved_path = run_dir.join("config.toml");
    if resume && resolved_path.exists() {
        let saved = load_file(&resolved_path, &[])?;
        if &saved != cfg {
            return Err(TrainError::Config(format!("--resume: the configuration differs from the one the run started with ({})", resolved_path.display())));
        }
    }
    if is_main {
        crate::checkpoint::write_atomic(&resolved_path, toml::to_string_pretty(cfg).map_err(|e| TrainError::Config(e.to_string()))?.as_bytes())?;
    }
    let (dataset, _issues) = load_dataset(&cfg.data)?;
    let split_path = run_dir.join("split.json");
    let split = match (&cfg.split_file, resume && split_path.exists()) {
        (_, true) => Split::load(&split_path),
        (Some(f), false) => Split::load(f),
        (None, false) => proxima_data::make_split(&dataset.classes, &cfg.split, cfg.seed),
    }
    .map_err(|e| TrainError::Config(format!("split: {e}")))?;
    if is_main {
        split.save(&split_path)?;
    }
    let (train_ds, val_ds, test_ds) = split.apply(&dataset).map_err(|e| TrainError::Config(format!("split: {e}")))?;
    if train_ds.num_classes() < 2 {
        return Err(TrainError::Config(format!("split: training needs at least 2 classes, got {}", train_ds.num_classes())));
    }
    let sampler = MPerClassSampler::new(&train_ds.labels(), cfg.sampler, cfg.seed).map_err(|e| TrainError::Config(format!("sampler: {e}")))?;

    tch::manual_seed(cfg.seed as i64);
    let mut model = EmbeddingModel::new(cfg.model.clone(), device)?;
    let normalize = normalize_of(&model);
    let size = cfg.data.image_size;
    let mut augment = cfg.augment.clone().unwrap_or_else(|| PipelineConfig::train(size));
    augment.normalize = normalize;
    let mut eval_pipe = PipelineConfig::eval(size);
    eval_pipe.normalize = normalize;
    let lcfg = LoaderConfig { image_size: [size, size], workers: cfg.data.workers, cache: cfg.data.cache, ..Default::default() };
    let loader = |ds: &Dataset, pipe: &PipelineConfig, seed: u64| {
        Ok::<_, TrainError>(Loader::new(Arc::new(ds.clone()), Pipeline::new(pipe.clone(), seed).map_err(|e| TrainError::Config(format!("augment: {e}")))?, lcfg)?)
    };
    let train_loader = loader(&train_ds, &augment, cfg.seed)?;
    let val_loader = if val_ds.num_classes() >= 2 { Some(loader(&val_ds, &eval_pipe, 0)?) } else { None };
    let test_loader = if test_ds.num_classes() >= 2 { Some(loader(&test_ds, &eval_pipe, 0)?) } else { None };

    let loss_vs = nn::VarStore::new(device);
    let loss_root = loss_vs.root();
    let ctx = BuildContext { num_classes: Some(train_ds.num_classes() as i64), embedding_size: Some(cfg.model.embedding_size), vars: &loss_root };
    let loss = cfg.loss.build(&ctx)?;
    let miner = cfg.miner.as_ref().map(MinerSpec::build).transpose()?;
    let base = cfg.optimizer.lr();
    let groups = vec![
        ParamGroup { name: "trunk".into(), lr: cfg.lr.trunk.unwrap_or(base), params: trainable_with_prefix(model.var_store(), "trunk.") },
        ParamGroup { name: "head".into(), lr: cfg.lr.head.unwrap_or(base), params: trainable_with_prefix(model.var_store(), "head.") },
        ParamGroup { name: "loss".into(), lr: cfg.lr.loss.unwrap_or(base), params: trainable_with_prefix(&loss_vs, "") },
    ];
    let mut optimizer = Optimizer::new(cfg.optimizer.clone(), groups)?;

    // The model is freshly initialised from the seed here (a resume restores its weights inside
    // the loop), so this is the untrained baseline for a resumed run too.
    let test_before = match &test_loader {
        Some(l) if is_main => Some(trainer::EvalSummary::from(&trainer::evaluate(&model, l, device)?)),
        _ => None,
    };
    let state = trainer::run(
        Parts {
            device,
            seed: cfg.seed,
            model: &mut model,
            loss_vars: &loss_vs,
            loss: &loss,
            miner: miner.as_ref(),
            classifier: None,
            optimizer: &mut optimizer,
            schedule: &cfg.schedule,
            sampler: &sampler,
            train_loader: &train_loader,
            val_loader: val_loader.as_ref(),
            config: &cfg.train,
            run_dir,
            world: world.as_ref().map(|(w, _)| w),
        },
        resume,
        on_event,
    )?;
    if !is_main {
        let (train_classes, val_classes, test_classes) = (train_ds.num_classes(), val_ds.num_classes(), test_ds.num_classes());
        return Ok(RunSummary { run_dir: run_dir.to_path_buf(), state, train_classes, val_classes, test_classes, test_before: None, test_after: None });
    }
    // The model directory holds the best weights (or the last when there was no validation).
    let best = trainer::best_checkpoint(run_dir);
    let source = if best.exists() { best } else { trainer::last_checkpoint(run_dir) };
    proxima_models::model_dir::load_model_weights(&model, &source)?;
    let test_after = match &test_loader {
        Some(l) => Some(trainer::EvalSummary::from(&trainer::evaluate(&model, l, device)?)),
        None => None,
    };
    proxima_models::model_dir::save_model_dir(&model, size, &run_dir.join("model"))?;
    let summary = RunSummary {
        run_dir: run_dir.to_path_buf(),
        state,
        train_classes: train_ds.num_classes(),
        val_classes: val_ds.num_classes(),
        test_classes: test_ds.num_classes(),
        test_before,
        test_after,
    };
    crate::checkpoint::write_atomic(&run_dir.join("metrics.json"), serde_json::to_string_pretty(&summary).expect("serialisable").as_bytes())?;
    write_plots(&summary.state, run_dir)?;
    Ok(summary)
}

/// Loss and validation-metric curves per epoch (`loss.png/svg`, `validation.png/svg`).
pub fn write_plots(state: &TrainState, dir: &Path) -> Result<()> {
    use proxima_report::{LineChart, Series, line_chart};
    let plot_err = |e: proxima_report::ReportError| TrainError::Config(format!("plots: {e}"));
    let epochs = |f: &dyn Fn(&crate::trainer::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        state.history.iter().filter_map(|r| f(r).map(|v| ((r.epoch + 1) as f64, v))).filter(|p| p.1.is_finite()).collect()
    };
    let loss = epochs(&|r| Some(r.mean_loss));
    if !loss.is_empty() {
        let chart = LineChart {
            title: "Training loss".into(),
            x_label: "epoch".into(),
            y_label: "mean loss".into(),
            series: vec![Series { name: "loss".into(), points: loss }],
            ..Default::default()
        };
        line_chart(dir, "loss", &chart).map_err(plot_err)?;
    }
    let map = epochs(&|r| r.eval.map(|e| e.map_at_r));
    if !map.is_empty() {
        let series = vec![
            Series { name: "MAP@R".into(), points: map },
            Series { name: "R-Precision".into(), points: epochs(&|r| r.eval.map(|e| e.r_precision)) },
            Series { name: "P@1".into(), points: epochs(&|r| r.eval.map(|e| e.precision_at_1)) },
        ];
        let chart = LineChart {
            title: "Validation (held-out classes)".into(),
            x_label: "epoch".into(),
            y_label: "metric".into(),
            series,
            y_range: Some(0.0..1.0),
            ..Default::default()
        };
        line_chart(dir, "validation", &chart).map_err(plot_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../../../examples/experiments/synth_small_cnn.toml");

    #[test]
    fn the_example_experiment_loads_and_overrides_apply() {
        let cfg = load(BASE, &["train.epochs=3".into(), "loss.type=\"contrastive\"".into(), "data.root=\"/tmp/x\"".into()]).unwrap();
        assert_eq!(cfg.train.epochs, 3);
        assert_eq!(cfg.loss.kind.reference_name(), "ContrastiveLoss");
        assert_eq!(cfg.data.root.as_deref(), Some(Path::new("/tmp/x")));
    }

    #[test]
    fn every_shipped_experiment_file_loads() {
        // The weights file is fetched by a script, so it is replaced by a file that exists here.
        let weights = tempfile::NamedTempFile::new().unwrap();
        let pretrained = format!("model.pretrained=\"{}\"", weights.path().display());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/experiments");
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let overrides = if text.contains("pretrained") { vec![pretrained.clone()] } else { Vec::new() };
                load(&text, &overrides).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        assert!(checked.iter().any(|f| f == "flickrlogos27_openset_effnet_lite0.toml"), "{checked:?}");
        assert!(checked.len() >= 7, "{checked:?}");
    }

    #[test]
    fn bad_configurations_fail_when_loaded_with_a_clear_message() {
        let err = |overrides: &[&str]| load(BASE, &overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err().to_string();
        assert!(err(&["train.epochz=3"]).contains("epochz"), "unknown keys are named");
        assert!(err(&["train.epochs=\"many\""]).contains("epochs"), "wrong types are named");
        assert!(err(&["sampler.batch_size=30"]).contains("multiple of m"));
        assert!(err(&["device=\"gpu\""]).contains("device"));
        assert!(err(&["loss.margin=1"]).contains("margin"), "a parameter the loss does not have");
        assert!(err(&["optimizer.lr=-1"]).contains("lr"));
        assert!(err(&["model.backbone.type=\"resnet19\""]).contains("resnet19"));
        assert!(load(BASE, &["train.epochs".into()]).unwrap_err().to_string().contains("key=value"));
    }

    #[test]
    fn data_problems_are_reported_before_training() {
        let dir = tempfile::tempdir().unwrap();
        proxima_data::synth(1, 4, 16, 0, 0.0, &dir.path().join("one")).unwrap();
        let cfg = DataConfig { root: Some(dir.path().join("one")), manifest: None, image_size: 16, workers: 1, cache: false };
        assert!(load_dataset(&cfg).unwrap_err().to_string().contains("at least 2 classes"));
        let missing = DataConfig { root: Some(dir.path().join("nope")), ..cfg };
        assert!(load_dataset(&missing).unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn a_missing_pretrained_file_is_named_when_loading() {
        let e = load(BASE, &["model.pretrained=\"/no/such/weights.pth\"".into()]).unwrap_err().to_string();
        assert!(e.contains("/no/such/weights.pth"), "{e}");
    }
}
