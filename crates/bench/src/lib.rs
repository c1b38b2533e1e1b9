//! Benchmarks of metric-learning configurations: a grid (and/or named override sets, and an
//! optional random search) over one base experiment, each configuration trained once per seed
//! and class-disjoint fold, every trained model evaluated on a fixed set of held-out test
//! classes, and a report with 95% confidence intervals.
//!
//! Why this shape: "A Metric Learning Reality Check" (Musgrave et al., 2020) showed that
//! published gains largely vanish under a fair protocol — same base settings, class-disjoint
//! cross-validation, held-out test classes, several runs, reported with their spread. A bench
//! is long, so it is resumable by construction: every run has a stable id (a hash of its
//! resolved configuration), its own directory with checkpoints, and a result line appended
//! atomically to `results.jsonl` when it finishes; an interrupted bench skips what is done and
//! resumes the run that was cut off. The report is rebuilt from `results.jsonl` alone.
//!
//! Random search samples `[search]` ranges per configuration; trials are selected by mean
//! validation MAP@R. TPE is not offered: the Rust `tpe` crate has seen no release in years.

pub mod config;
pub mod error;
pub mod plan;
pub mod report;
pub mod stats;
pub mod store;

use std::path::Path;
use std::time::Instant;

use proxima_train::experiment::{self, RunSummary};
use proxima_train::trainer::Event;

pub use config::{BenchConfig, LoadedBench, Variant, expand};
pub use error::{BenchError, Result};
pub use plan::{PlanFile, RunSpec, plan};
pub use report::{ReportFiles, build_report};
pub use store::{ResultsStore, RunResult};

/// What a bench reports while it works.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The plan is ready: `total` runs, `done` of them already finished.
    Planned { total: usize, done: usize },
    /// `results.jsonl` ended in a partial line (a killed write) of this many bytes; it was cut.
    TornTail { bytes: usize },
    /// A run starts (`index` is 0-based among all runs).
    Start { index: usize, total: usize, spec: &'a RunSpec, resume: bool },
    /// A training event of the current run.
    Train(&'a Event),
    /// A run finished and its result line was written.
    Finished { spec: &'a RunSpec, result: &'a RunResult },
    /// A run failed; the bench goes on and the run is retried next time.
    Failed { spec: &'a RunSpec, error: &'a BenchError },
}

/// A run that failed (it is retried when the bench runs again).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Configuration name.
    pub config: String,
    /// Training seed.
    pub seed: u64,
    /// Fold (0-based).
    pub fold: usize,
    /// The error.
    pub message: String,
}

/// What a bench did.
#[derive(Debug)]
pub struct Outcome {
    /// Runs trained now.
    pub ran: usize,
    /// Runs skipped because their result line existed.
    pub skipped: usize,
    /// Runs that failed.
    pub failed: Vec<Failure>,
    /// The report written at the end.
    pub report: ReportFiles,
}

/// Output of `git rev-parse HEAD` in the current directory, if git and a repository are there.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).stderr(std::process::Stdio::null()).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The result line of a finished run.
pub fn result_of(spec: &RunSpec, summary: &RunSummary, seconds: f64, resumed: bool, commit: Option<String>) -> RunResult {
    let history = &summary.state.history;
    RunResult {
        id: spec.id.clone(),
        config: spec.config.clone(),
        search_of: spec.search_of.clone(),
        dataset: spec.dataset.clone(),
        seed: spec.seed,
        fold: spec.fold,
        folds: spec.folds,
        overrides: spec.overrides.clone(),
        resolved: toml::to_string(&spec.experiment).expect("experiment configs serialise"),
        test_before: summary.test_before,
        test_after: summary.test_after,
        best_val_map_at_r: summary.state.best_map_at_r,
        val_curve: history
            .iter()
            .filter_map(|r| r.eval.map(|e| store::CurvePoint { epoch: r.epoch + 1, map_at_r: e.map_at_r, r_precision: e.r_precision, precision_at_1: e.precision_at_1 }))
            .collect(),
        loss_curve: history.iter().map(|r| r.mean_loss).collect(),
        train_classes: summary.train_classes,
        val_classes: summary.val_classes,
        test_classes: summary.test_classes,
        seconds,
        resumed,
        finished_unix: unix_now(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        commit,
    }
}

/// Trains one run: `(spec, run_dir, resume, on_event)`.
pub type Runner<'r> = dyn FnMut(&RunSpec, &Path, bool, &mut dyn FnMut(&Event)) -> Result<RunSummary> + 'r;

/// Runs every spec without a result line (resuming a run whose directory holds a checkpoint),
/// appending one result line per finished run. Returns (ran, skipped, failed).
pub fn execute(specs: &[RunSpec], out: &Path, store: &mut ResultsStore, runner: &mut Runner, on: &mut dyn FnMut(Progress)) -> Result<(usize, usize, Vec<Failure>)> {
    let commit = git_commit();
    let (mut ran, mut skipped, mut failed) = (0, 0, Vec::new());
    for (index, spec) in specs.iter().enumerate() {
        if store.is_done(&spec.id) {
            skipped += 1;
            continue;
        }
        let dir = spec.dir(out);
        let resume = proxima_train::trainer::last_checkpoint(&dir).exists();
        on(Progress::Start { index, total: specs.len(), spec, resume });
        let started = Instant::now();
        let outcome = runner(spec, &dir, resume, &mut |e| on(Progress::Train(e)));
        match outcome {
            Ok(summary) => {
                let result = result_of(spec, &summary, started.elapsed().as_secs_f64(), resume, commit.clone());
                store.append(&result)?;
                ran += 1;
                on(Progress::Finished { spec, result: &result });
            }
            Err(error) => {
                on(Progress::Failed { spec, error: &error });
                failed.push(Failure { config: spec.config.clone(), seed: spec.seed, fold: spec.fold, message: error.to_string() });
            }
        }
    }
    Ok((ran, skipped, failed))
}

/// Runs (or resumes) the bench described by `config_path` into `out`, then writes the report.
pub fn run_bench(config_path: &Path, out: &Path, on: &mut dyn FnMut(Progress)) -> Result<Outcome> {
    let bench = config::load_file(config_path)?;
    std::fs::create_dir_all(out).map_err(|e| BenchError::io(out, e))?;
    let specs = plan::plan(&bench, out)?;
    let title = bench.config.name.clone().unwrap_or_else(|| config_path.file_stem().map_or("bench".into(), |s| s.to_string_lossy().into_owned()));
    let plan_file = PlanFile { name: title, runs: specs.iter().map(RunSpec::entry).collect() };
    let plan_path = out.join("plan.json");
    proxima_report::write_atomic(&plan_path, serde_json::to_string_pretty(&plan_file).expect("plan serialises").as_bytes())?;
    let (mut store, loaded) = ResultsStore::open(&out.join("results.jsonl"))?;
    if let Some(bytes) = loaded.torn_tail {
        on(Progress::TornTail { bytes });
    }
    on(Progress::Planned { total: specs.len(), done: specs.iter().filter(|s| store.is_done(&s.id)).count() });
    let mut runner = |spec: &RunSpec, dir: &Path, resume: bool, on_event: &mut dyn FnMut(&Event)| -> Result<RunSummary> {
        Ok(experiment::run(&spec.experiment, dir, resume, on_event)?)
    };
    let (ran, skipped, failed) = execute(&specs, out, &mut store, &mut runner, on)?;
    let report = build_report(out)?;
    Ok(Outcome { ran, skipped, failed, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxima_train::trainer::{EpochRecord, EvalSummary, TrainState};

    fn spec(id: &str, config: &str) -> RunSpec {
        let cfg: proxima_train::experiment::ExperimentConfig = toml::from_str(
            "[data]\nroot = \"d\"\n[split]\ntype = \"ratio\"\ntrain = 1.0\nval = 0.0\ntest = 0.0\n[sampler]\nm = 2\nbatch_size = 4\n[model]\nembedding_size = 4\nbackbone = { type = \"small_cnn\" }\n[loss]\ntype = \"contrastive\"\n[optimizer]\ntype = \"adam\"\nlr = 0.001\n[train]\nepochs = 1\n",
        )
        .unwrap();
        RunSpec { id: id.into(), config: config.into(), search_of: None, dataset: "d".into(), seed: 0, fold: 0, folds: 1, overrides: vec![], experiment: cfg }
    }

    fn summary(dir: &Path) -> RunSummary {
        let eval = EvalSummary { precision_at_1: 0.5, r_precision: 0.4, map_at_r: 0.3 };
        let state =
            TrainState { best_map_at_r: Some(0.3), history: vec![EpochRecord { epoch: 0, mean_loss: 1.0, lr_factor: 1.0, eval: Some(eval) }], ..Default::default() };
        RunSummary { run_dir: dir.to_path_buf(), state, train_classes: 2, val_classes: 2, test_classes: 2, test_before: None, test_after: Some(eval) }
    }

    #[test]
    fn finished_runs_are_skipped_and_interrupted_ones_resumed() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let specs = vec![spec("aaaa", "a"), spec("bbbb", "b"), spec("cccc", "c"), spec("dddd", "d")];
        let (mut store, _) = ResultsStore::open(&out.join("results.jsonl")).unwrap();
        store.append(&result_of(&specs[0], &summary(out), 1.0, false, None)).unwrap();
        // "c" was killed after a checkpoint; "d" fails.
        std::fs::create_dir_all(specs[2].dir(out)).unwrap();
        std::fs::write(proxima_train::trainer::last_checkpoint(&specs[2].dir(out)), b"x").unwrap();
        let mut calls: Vec<(String, bool)> = Vec::new();
        let mut runner = |s: &RunSpec, dir: &Path, resume: bool, _: &mut dyn FnMut(&Event)| -> Result<RunSummary> {
            calls.push((s.id.clone(), resume));
            assert_eq!(dir, s.dir(out));
            if s.id == "dddd" { Err(BenchError::Config("boom".into())) } else { Ok(summary(dir)) }
        };
        let (ran, skipped, failed) = execute(&specs, out, &mut store, &mut runner, &mut |_| {}).unwrap();
        assert_eq!(calls, [("bbbb".to_string(), false), ("cccc".to_string(), true), ("dddd".to_string(), false)]);
        assert_eq!((ran, skipped, failed.len()), (2, 1, 1));
        assert!(failed[0].message.contains("boom"));
        let lines = store::load(&out.join("results.jsonl")).unwrap().results;
        assert_eq!(lines.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["aaaa", "bbbb", "cccc"]);
        assert!(lines[2].resumed && !lines[1].resumed);
        assert_eq!(lines[1].val_curve[0].epoch, 1);
        // A second pass runs only the failed one.
        let (mut store, _) = ResultsStore::open(&out.join("results.jsonl")).unwrap();
        let mut again = Vec::new();
        let mut runner = |s: &RunSpec, dir: &Path, _: bool, _: &mut dyn FnMut(&Event)| -> Result<RunSummary> {
            again.push(s.id.clone());
            Ok(summary(dir))
        };
        let (ran, skipped, _) = execute(&specs, out, &mut store, &mut runner, &mut |_| {}).unwrap();
        assert_eq!(again, ["dddd"]);
        assert_eq!((ran, skipped), (1, 3));
    }
}
