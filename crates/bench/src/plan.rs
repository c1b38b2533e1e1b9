//! From configurations to runs: data preparation, the fixed class-disjoint folds, one resolved
//! experiment per (configuration, seed, fold), and the run's stable id.
//!
//! Why the bench makes the splits itself: an experiment's k-fold split is seeded by the
//! experiment's seed, so different training seeds would see different test classes. "A Metric
//! Learning Reality Check" keeps one test set fixed; here the folds are made once per data set
//! with `split_seed`, saved under `<out>/splits/`, and handed to every run as `split_file`.
//!
//! Why ids hash the split's classes and the data's identity rather than file paths: the same
//! bench resumed from another working directory (or with `<out>` spelled differently) must find
//! its runs again; what makes a run a run is its configuration, its classes and its data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proxima_train::experiment::{self, ExperimentConfig};
use serde::{Deserialize, Serialize};

use crate::config::{LoadedBench, Variant, expand, fnv64, set_dotted};
use crate::error::{BenchError, Result};

/// One run to do.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Stable id (16 hex digits).
    pub id: String,
    /// Configuration name.
    pub config: String,
    /// For a search trial, the configuration it samples.
    pub search_of: Option<String>,
    /// Data set label.
    pub dataset: String,
    pub seed: u64,
    pub fold: usize,
    pub folds: usize,
    /// The configuration's overrides.
    pub overrides: Vec<String>,
    /// The resolved, validated experiment.
    pub experiment: ExperimentConfig,
}

/// What `plan.json` records (so `--report-only` knows what was planned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub id: String,
    pub config: String,
    pub dataset: String,
    pub seed: u64,
    pub fold: usize,
}

/// The bench's title and its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// Report title.
    pub name: String,
    /// Every planned run, in order.
    pub runs: Vec<PlanEntry>,
}

impl RunSpec {
    /// The run's directory under the bench output.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join("runs").join(&self.id)
    }

    /// The plan entry.
    pub fn entry(&self) -> PlanEntry {
        PlanEntry { id: self.id.clone(), config: self.config.clone(), dataset: self.dataset.clone(), seed: self.seed, fold: self.fold }
    }
}

/// Where the data of an experiment is, and what it is called in the report and in ids.
struct DataResolution {
    identity: String,
}

/// Replaces a missing `data.root` by synthetic data in `<out>/data` when `[data_prep]` asks.
fn prepare_data(bench: &LoadedBench, table: &mut toml::Table, out: &Path) -> Result<DataResolution> {
    let root = table.get("data").and_then(|d| d.get("root")).and_then(|r| r.as_str()).map(PathBuf::from);
    let manifest = table.get("data").and_then(|d| d.get("manifest")).and_then(|r| r.as_str()).map(PathBuf::from);
    if let (Some(root), Some(prep)) = (&root, &bench.config.data_prep)
        && !root.exists()
    {
        let s = &prep.synth;
        let data = out.join("data");
        if !data.exists() {
            // Render into a temporary folder and rename, so a killed bench never leaves half a data set.
            let tmp = out.join("data.partial");
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| BenchError::io(&tmp, e))?;
            }
            proxima_data::synth(s.brands, s.per_brand, s.size, s.seed, s.difficulty, &tmp)?;
            std::fs::rename(&tmp, &data).map_err(|e| BenchError::io(&data, e))?;
        }
        let data_str = data.to_str().ok_or_else(|| BenchError::Config(format!("{} is not valid UTF-8", data.display())))?;
        set_dotted(table, "data.root", toml::Value::String(data_str.to_string()))?;
        return Ok(DataResolution {
            identity: format!("synthetic logos ({} brands × {}, {} px, seed {}, difficulty {})", s.brands, s.per_brand, s.size, s.seed, s.difficulty),
        });
    }
    let identity = match (root, manifest) {
        (Some(r), _) => r.display().to_string(),
        (None, Some(m)) => m.display().to_string(),
        (None, None) => "(no data)".into(),
    };
    Ok(DataResolution { identity })
}

/// The saved k-fold splits of one data set (fold i at index i) and their hash.
struct Folds {
    files: Vec<PathBuf>,
    hashes: Vec<u64>,
}

fn make_folds(cfg: &ExperimentConfig, identity: &str, k: usize, test_ratio: f32, split_seed: u64, out: &Path) -> Result<Folds> {
    let (dataset, _) = experiment::load_dataset(&cfg.data)?;
    let splits = proxima_data::kfold_class_disjoint(&dataset.classes, k, test_ratio, split_seed)?;
    let dir = out.join("splits").join(format!("{:016x}", fnv64(format!("{identity}|{k}|{test_ratio}|{split_seed}").as_bytes())));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(&dir, e))?;
    let mut files = Vec::new();
    let mut hashes = Vec::new();
    for (i, s) in splits.iter().enumerate() {
        let path = dir.join(format!("fold{i}.json"));
        s.save(&path)?;
        hashes.push(fnv64(format!("{:?}|{:?}|{:?}", s.train, s.val, s.test).as_bytes()));
        files.push(path);
    }
    Ok(Folds { files, hashes })
}

fn to_config(table: toml::Table, what: &str) -> Result<ExperimentConfig> {
    let cfg: ExperimentConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| BenchError::Config(format!("configuration '{what}': {e}")))?;
    cfg.validate().map_err(|e| BenchError::Config(format!("configuration '{what}': {e}")))?;
    Ok(cfg)
}

/// The id of a run: FNV-1a of the resolved experiment (with paths replaced by the data's
/// identity and the split's class lists).
pub fn run_id(cfg: &ExperimentConfig, data_identity: &str, split_hash: u64) -> String {
    let mut c = cfg.clone();
    c.split_file = None;
    c.data.root = None;
    c.data.manifest = None;
    let text = toml::to_string(&c).expect("experiment configs serialise");
    format!("{:016x}", fnv64(format!("{text}\ndata={data_identity}\nsplit={split_hash:016x}").as_bytes()))
}

/// Resolves every run of a bench: prepares data and folds under `out`, validates every experiment.
pub fn plan(bench: &LoadedBench, out: &Path) -> Result<Vec<RunSpec>> {
    let variants: Vec<Variant> = expand(&bench.config)?;
    let c = &bench.config;
    let mut folds_cache: BTreeMap<String, Folds> = BTreeMap::new();
    let mut specs = Vec::new();
    for v in &variants {
        let mut table = v.apply(&bench.base)?;
        let data = prepare_data(bench, &mut table, out)?;
        for &seed in &c.seeds {
            set_dotted(&mut table, "seed", toml::Value::Integer(seed as i64))?;
            let n_folds = c.folds.unwrap_or(1);
            for fold in 0..n_folds {
                let mut t = table.clone();
                let split_hash = match c.folds {
                    Some(k) => {
                        let mut split = toml::Table::new();
                        split.insert("type".into(), "k_fold".into());
                        split.insert("k".into(), toml::Value::Integer(k as i64));
                        split.insert("fold".into(), toml::Value::Integer(fold as i64));
                        split.insert("test_ratio".into(), toml::Value::Float(c.test_ratio as f64));
                        t.insert("split".into(), toml::Value::Table(split));
                        let probe = to_config(t.clone(), &v.name)?;
                        if !folds_cache.contains_key(&data.identity) {
                            let f = make_folds(&probe, &data.identity, k, c.test_ratio, c.split_seed, out)?;
                            folds_cache.insert(data.identity.clone(), f);
                        }
                        let f = &folds_cache[&data.identity];
                        let file = f.files[fold].to_str().ok_or_else(|| BenchError::Config(format!("{} is not valid UTF-8", f.files[fold].display())))?;
                        t.insert("split_file".into(), toml::Value::String(file.to_string()));
                        f.hashes[fold]
                    }
                    None => 0,
                };
                let cfg = to_config(t, &v.name)?;
                specs.push(RunSpec {
                    id: run_id(&cfg, &data.identity, split_hash),
                    config: v.name.clone(),
                    search_of: v.search_of.clone(),
                    dataset: data.identity.clone(),
                    seed,
                    fold,
                    folds: n_folds,
                    overrides: v.describe(),
                    experiment: cfg,
                });
            }
        }
    }
    let mut ids = BTreeMap::new();
    for s in &specs {
        if let Some(other) = ids.insert(s.id.clone(), s.config.clone()) {
            return Err(BenchError::Config(format!("configurations '{other}' and '{}' resolve to the same experiment (seed {}, fold {})", s.config, s.seed, s.fold)));
        }
    }
    Ok(specs)
}

/// Validates every configuration of a bench without touching data (no synthesis, no scan):
/// returns the number of runs it would plan.
pub fn check(bench: &LoadedBench) -> Result<usize> {
    let variants = expand(&bench.config)?;
    let c = &bench.config;
    for v in &variants {
        let mut t = v.apply(&bench.base)?;
        if let Some(k) = c.folds {
            let mut split = toml::Table::new();
            split.insert("type".into(), "k_fold".into());
            split.insert("k".into(), toml::Value::Integer(k as i64));
            split.insert("fold".into(), toml::Value::Integer(0));
            split.insert("test_ratio".into(), toml::Value::Float(c.test_ratio as f64));
            t.insert("split".into(), toml::Value::Table(split));
        }
        to_config(t, &v.name)?;
    }
    Ok(variants.len() * c.seeds.len() * c.folds.unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [data]
        root = "DATA"
        image_size = 32
        [split]
        type = "ratio"
        train = 0.6
        val = 0.2
        test = 0.2
        [sampler]
        m = 2
        batch_size = 8
        [model]
        embedding_size = 8
        backbone = { type = "small_cnn", widths = [4, 8] }
        [loss]
        type = "contrastive"
        [optimizer]
        type = "adam"
        lr = 0.001
        [train]
        epochs = 1
    "#;

    fn bench(dir: &Path, extra: &str) -> LoadedBench {
        std::fs::write(dir.join("exp.toml"), BASE.replace("DATA", dir.join("missing").to_str().unwrap())).unwrap();
        let text = format!("base = \"exp.toml\"\nseeds = [0, 1]\nfolds = 2\ntest_ratio = 0.25\n[data_prep]\nsynth = {{ brands = 8, per_brand = 3, size = 16 }}\n{extra}");
        crate::config::load(&text, dir, &dir.join("bench.toml")).unwrap()
    }

    #[test]
    fn one_run_per_config_seed_fold_with_stable_distinct_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let b = bench(tmp.path(), "[grid]\n\"loss\" = [ {type=\"contrastive\"}, {type=\"triplet_margin\", margin=0.1} ]\n");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let specs = plan(&b, &out).unwrap();
        assert_eq!(specs.len(), 2 * 2 * 2);
        assert!(out.join("data").is_dir(), "synthetic data was created");
        // Ids are stable across planning again and distinct across runs.
        let again = plan(&b, &out).unwrap();
        assert_eq!(specs.iter().map(|s| &s.id).collect::<Vec<_>>(), again.iter().map(|s| &s.id).collect::<Vec<_>>());
        let ids: std::collections::BTreeSet<&String> = specs.iter().map(|s| &s.id).collect();
        assert_eq!(ids.len(), specs.len());
        // Same test classes for every seed and fold; validation folds differ.
        let split = |s: &RunSpec| proxima_data::Split::load(s.experiment.split_file.as_ref().unwrap()).unwrap();
        let first = split(&specs[0]);
        assert_eq!(first.test.len(), 2);
        for s in &specs {
            assert_eq!(split(s).test, first.test);
            assert_eq!(s.experiment.seed, s.seed);
        }
        assert_ne!(split(&specs[0]).val, split(&specs[1]).val);
        // Moving the output folder does not change the ids (paths are not part of them).
        let out2 = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&out2).unwrap();
        let moved = plan(&b, &out2).unwrap();
        assert_eq!(specs.iter().map(|s| &s.id).collect::<Vec<_>>(), moved.iter().map(|s| &s.id).collect::<Vec<_>>());
        // A changed hyper-parameter changes the id.
        let mut cfg = specs[0].experiment.clone();
        cfg.optimizer = toml::from_str("type = \"adam\"\nlr = 0.002").unwrap();
        assert_ne!(run_id(&cfg, &specs[0].dataset, 1), run_id(&specs[0].experiment, &specs[0].dataset, 1));
    }

    #[test]
    fn an_invalid_resolved_experiment_names_its_configuration() {
        let tmp = tempfile::tempdir().unwrap();
        let b = bench(tmp.path(), "[[runs]]\nname = \"broken\"\nset = { \"sampler.batch_size\" = 7 }\n");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let e = plan(&b, &out).unwrap_err().to_string();
        assert!(e.contains("'broken'") && e.contains("batch_size"), "{e}");
    }
}
