//! `results.jsonl`: one JSON line per finished run — the bench's only source of truth for
//! "done" and the only input of the report.
//!
//! Why append-only lines: a bench is killed at arbitrary moments (pre-emption, Ctrl-C, power
//! loss). Each result is one `write_all` of a buffer that ends in `\n`, followed by `fsync`, on
//! a file opened in append mode, so a line is either wholly present or (at worst) a torn tail
//! without its newline. Loading ignores and reports such a tail; [`ResultsStore::open`] cuts it
//! off before the next append so a new line never glues onto half an old one.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use proxima_train::trainer::EvalSummary;
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Validation metrics after one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// 1-based epoch.
    pub epoch: usize,
    pub map_at_r: f64,
    pub r_precision: f64,
    pub precision_at_1: f64,
}

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Stable id (hash of the resolved configuration and split).
    pub id: String,
    /// Configuration name.
    pub config: String,
    /// For a search trial, the configuration it samples.
    #[serde(default)]
    pub search_of: Option<String>,
    /// Data set label.
    pub dataset: String,
    pub seed: u64,
    pub fold: usize,
    /// Number of folds (1 without cross-validation).
    pub folds: usize,
    /// The overrides that make the configuration.
    pub overrides: Vec<String>,
    /// The exact resolved experiment (TOML).
    pub resolved: String,
    /// Test metrics of the untrained model (absent for a resumed run).
    pub test_before: Option<EvalSummary>,
    /// Test metrics of the trained (best-on-validation) model.
    pub test_after: Option<EvalSummary>,
    /// Best validation MAP@R over the epochs.
    pub best_val_map_at_r: Option<f64>,
    /// Validation metrics per evaluated epoch.
    pub val_curve: Vec<CurvePoint>,
    /// Mean training loss per epoch.
    pub loss_curve: Vec<f64>,
    pub train_classes: usize,
    pub val_classes: usize,
    pub test_classes: usize,
    /// Wall time of this invocation of the run, in seconds.
    pub seconds: f64,
    /// Whether the run continued an interrupted one.
    pub resumed: bool,
    /// Unix time when it finished.
    pub finished_unix: u64,
    /// Proxima version that ran it.
    pub version: String,
    /// `git rev-parse HEAD` where it ran, if available.
    pub commit: Option<String>,
}

/// What a `results.jsonl` holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The complete lines, in file order.
    pub results: Vec<RunResult>,
    /// Length in bytes of a trailing partial line (no `\n`), ignored.
    pub torn_tail: Option<usize>,
    /// Byte length of the complete lines.
    pub complete_len: u64,
}

/// Reads a results file (missing = empty); ignores a trailing partial line, rejects a bad complete line.
pub fn load(path: &Path) -> Result<Loaded> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(BenchError::io(path, e)),
    };
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let tail = bytes.len() - complete_len;
    let mut results = Vec::new();
    for (i, line) in bytes[..complete_len].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let r: RunResult = serde_json::from_slice(line).map_err(|e| BenchError::Corrupt { path: path.to_path_buf(), line: i + 1, message: e.to_string() })?;
        results.push(r);
    }
    Ok(Loaded { results, torn_tail: (tail > 0).then_some(tail), complete_len: complete_len as u64 })
}

/// The results file of a bench, opened for appending.
#[derive(Debug)]
pub struct ResultsStore {
    path: PathBuf,
    done: BTreeSet<String>,
}

impl ResultsStore {
    /// Loads `path`, cuts off a torn tail (returned as its length), and remembers finished ids.
    pub fn open(path: &Path) -> Result<(ResultsStore, Loaded)> {
        let loaded = load(path)?;
        if loaded.torn_tail.is_some() {
            let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| BenchError::io(path, e))?;
            f.set_len(loaded.complete_len).map_err(|e| BenchError::io(path, e))?;
            f.sync_all().map_err(|e| BenchError::io(path, e))?;
        }
        let done = loaded.results.iter().map(|r| r.id.clone()).collect();
        Ok((ResultsStore { path: path.to_path_buf(), done }, loaded))
    }

    /// Whether a run with this id has a result line.
    pub fn is_done(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// Appends one result as a single line (one `write_all`, then fsync).
    pub fn append(&mut self, r: &RunResult) -> Result<()> {
        let mut buf = serde_json::to_vec(r).expect("results serialise");
        buf.push(b'\n');
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| BenchError::io(&self.path, e))?;
        f.write_all(&buf).map_err(|e| BenchError::io(&self.path, e))?;
        f.sync_data().map_err(|e| BenchError::io(&self.path, e))?;
        self.done.insert(r.id.clone());
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
pub(crate) fn sample_result(id: &str, config: &str, fold: usize, map: f64) -> RunResult {
    let e = EvalSummary { precision_at_1: map + 0.1, r_precision: map + 0.05, map_at_r: map };
    RunResult {
        id: id.into(),
        config: config.into(),
        search_of: None,
        dataset: "synthetic".into(),
        seed: 0,
        fold,
        folds: 2,
        overrides: vec![format!("loss={config}")],
        resolved: "seed = 0\n".into(),
        test_before: Some(EvalSummary { precision_at_1: 0.1, r_precision: 0.1, map_at_r: 0.05 }),
        test_after: Some(e),
        best_val_map_at_r: Some(map),
        val_curve: vec![
            CurvePoint { epoch: 1, map_at_r: map / 2.0, r_precision: 0.0, precision_at_1: 0.0 },
            CurvePoint { epoch: 2, map_at_r: map, r_precision: 0.0, precision_at_1: 0.0 },
        ],
        loss_curve: vec![1.0, 0.5],
        train_classes: 4,
        val_classes: 2,
        test_classes: 2,
        seconds: 1.5,
        resumed: false,
        finished_unix: 0,
        version: "0.1.0".into(),
        commit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail_is_ignored_then_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        assert_eq!(load(&path).unwrap(), Loaded::default());
        let (mut store, _) = ResultsStore::open(&path).unwrap();
        let (a, b) = (sample_result("a", "x", 0, 0.5), sample_result("b", "x", 1, 0.25));
        store.append(&a).unwrap();
        store.append(&b).unwrap();
        assert!(store.is_done("a") && store.is_done("b") && !store.is_done("c"));
        // Simulate a crash in the middle of a third write.
        let full = serde_json::to_string(&sample_result("c", "x", 0, 0.1)).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
        drop(f);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.results, vec![a.clone(), b.clone()]);
        assert_eq!(loaded.torn_tail, Some(full.len() / 2));
        // Opening for append cuts the tail; the next line is intact.
        let (mut store, seen) = ResultsStore::open(&path).unwrap();
        assert_eq!(seen.torn_tail, Some(full.len() / 2));
        assert!(!store.is_done("c"));
        let c = sample_result("c", "x", 0, 0.1);
        store.append(&c).unwrap();
        let again = load(&path).unwrap();
        assert_eq!(again.results, vec![a, b, c]);
        assert_eq!(again.torn_tail, None);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let good = serde_json::to_string(&sample_result("a", "x", 0, 0.5)).unwrap();
        std::fs::write(&path, format!("{good}\n{{not json}}\n")).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("results.jsonl") && e.contains("line 2"), "{e}");
    }
}
