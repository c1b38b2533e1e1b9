//! The bench file (`bench.toml`): a base experiment, a grid and/or named override sets, seeds,
//! folds and an optional random search — expanded here into named configurations.
//!
//! Why overrides rather than whole experiment files per configuration: a comparison is only
//! fair when configurations differ in exactly the keys under study; writing them as `--set`
//! style dotted keys on one shared base makes the difference explicit (and it is what the
//! report prints next to each result). Expansion is deterministic (keys in sorted order,
//! search trials seeded by configuration name and trial number), so run ids stay stable across
//! invocations and a bench can be resumed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proxima_data::rng::{Rng, derive_seed};
use proxima_train::experiment;
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

fn default_seeds() -> Vec<u64> {
    vec![0]
}
fn default_test_ratio() -> f32 {
    0.3
}
fn default_difficulty() -> f32 {
    0.5
}

/// A whole bench file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Title of the report.
    #[serde(default)]
    pub name: Option<String>,
    /// The experiment every configuration starts from.
    pub base: Base,
    /// Dotted key → list of values; the cartesian product gives configurations.
    #[serde(default)]
    pub grid: toml::Table,
    /// Explicit named override sets (combined with every grid point when both are given).
    #[serde(default)]
    pub runs: Vec<NamedRun>,
    /// Training seeds; every configuration runs once per seed and fold.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Class-disjoint k-fold cross-validation; unset uses the base experiment's split as is.
    #[serde(default)]
    pub folds: Option<usize>,
    /// Fraction of classes held out as the fixed test set (with `folds`).
    #[serde(default = "default_test_ratio")]
    pub test_ratio: f32,
    /// Seed of the class split (fixed across training seeds, so the test set is too).
    #[serde(default)]
    pub split_seed: u64,
    /// Random search per configuration.
    #[serde(default)]
    pub search: Option<SearchConfig>,
    /// Data to create when the experiment's data root does not exist.
    #[serde(default)]
    pub data_prep: Option<DataPrep>,
}

/// The base experiment: a file (relative to the bench file) or an inline table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Base {
    /// Path of an experiment TOML file.
    File(PathBuf),
    /// The experiment itself.
    Inline(toml::Table),
}

/// One named override set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedRun {
    /// Name shown in the report.
    pub name: String,
    /// Dotted key → value.
    #[serde(default)]
    pub set: toml::Table,
    /// Dotted keys to remove from the base (e.g. `miner`).
    #[serde(default)]
    pub unset: Vec<String>,
}

/// Random search: `trials` samples of `space` per configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// Trial budget per configuration.
    pub trials: usize,
    /// Seed of the sampler.
    #[serde(default)]
    pub seed: u64,
    /// Dotted key → distribution.
    pub space: BTreeMap<String, Distribution>,
}

/// A search distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    /// Uniform on [low, high].
    Uniform { low: f64, high: f64 },
    /// Log-uniform on [low, high] (both > 0), e.g. learning rates.
    LogUniform { low: f64, high: f64 },
    /// Uniform integer in low..=high.
    IntUniform { low: i64, high: i64 },
    /// One of the values, uniformly.
    Choice { values: Vec<toml::Value> },
}

/// Data preparation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPrep {
    /// Render synthetic logos into `<out>/data` when `data.root` is missing.
    pub synth: SynthPrep,
}

/// Parameters of `proxima_data::synth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthPrep {
    pub brands: usize,
    pub per_brand: usize,
    pub size: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_difficulty")]
    pub difficulty: f32,
}

/// A bench file read from disk, with its base experiment as a table.
#[derive(Debug, Clone)]
pub struct LoadedBench {
    /// The bench file's settings.
    pub config: BenchConfig,
    /// The base experiment (file contents or inline table).
    pub base: toml::Table,
    /// Where the bench file is (for messages).
    pub path: PathBuf,
}

/// Parses and validates a bench file given as text; `dir` resolves a relative `base` path.
pub fn load(text: &str, dir: &Path, path: &Path) -> Result<LoadedBench> {
    let config: BenchConfig = toml::from_str(text).map_err(|e| BenchError::Config(format!("{}: {e}", path.display())))?;
    config.validate().map_err(|e| match e {
        BenchError::Config(m) => BenchError::Config(format!("{}: {m}", path.display())),
        e => e,
    })?;
    let base = match &config.base {
        Base::Inline(t) => t.clone(),
        Base::File(p) => {
            let p = dir.join(p);
            let text = std::fs::read_to_string(&p).map_err(|e| BenchError::io(&p, e))?;
            toml::from_str(&text).map_err(|e| BenchError::Config(format!("{}: {e}", p.display())))?
        }
    };
    Ok(LoadedBench { config, base, path: path.to_path_buf() })
}

/// Reads and validates a bench file.
pub fn load_file(path: &Path) -> Result<LoadedBench> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
    load(&text, path.parent().unwrap_or(Path::new(".")), path)
}

fn check_key(key: &str) -> Result<()> {
    if key.trim().is_empty() || key.split('.').any(|p| p.trim().is_empty()) {
        return Err(BenchError::Config(format!("'{key}' is not a dotted key like optimizer.lr")));
    }
    Ok(())
}

impl BenchConfig {
    /// Checks everything that can be checked without the base experiment.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(BenchError::Config(m));
        for (k, v) in &self.grid {
            check_key(k)?;
            match v.as_array() {
                Some(a) if !a.is_empty() => {}
                _ => return bad(format!("grid.\"{k}\" must be a non-empty list of values")),
            }
        }
        let mut names = BTreeSet::new();
        for r in &self.runs {
            if r.name.trim().is_empty() {
                return bad("every [[runs]] entry needs a non-empty name".into());
            }
            if !names.insert(r.name.as_str()) {
                return bad(format!("two [[runs]] are named '{}'", r.name));
            }
            for k in r.set.keys().chain(r.unset.iter()) {
                check_key(k)?;
            }
        }
        if self.seeds.is_empty() {
            return bad("seeds must not be empty".into());
        }
        if self.seeds.iter().collect::<BTreeSet<_>>().len() != self.seeds.len() {
            return bad(format!("seeds has duplicates: {:?}", self.seeds));
        }
        if let Some(k) = self.folds
            && k < 2
        {
            return bad(format!("folds must be >= 2 (or left out to use the experiment's split), got {k}"));
        }
        if !(0.0..1.0).contains(&self.test_ratio) {
            return bad(format!("test_ratio must be in [0, 1), got {}", self.test_ratio));
        }
        if let Some(s) = &self.search {
            if s.trials == 0 {
                return bad("search.trials must be >= 1".into());
            }
            if s.space.is_empty() {
                return bad("search.space is empty".into());
            }
            for (k, d) in &s.space {
                check_key(k)?;
                d.validate().map_err(|m| BenchError::Config(format!("search.space.\"{k}\": {m}")))?;
            }
        }
        if let Some(p) = &self.data_prep {
            let s = &p.synth;
            if s.brands < 2 || s.per_brand < 2 || s.size < 8 {
                return bad(format!("data_prep.synth needs brands >= 2, per_brand >= 2, size >= 8; got {}, {}, {}", s.brands, s.per_brand, s.size));
            }
        }
        Ok(())
    }
}

impl Distribution {
    fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Distribution::Uniform { low, high } if low.is_finite() && high.is_finite() && low <= high => Ok(()),
            Distribution::LogUniform { low, high } if *low > 0.0 && high.is_finite() && low <= high => Ok(()),
            Distribution::IntUniform { low, high } if low <= high => Ok(()),
            Distribution::Choice { values } if !values.is_empty() => Ok(()),
            Distribution::Choice { .. } => Err("choice needs at least one value".into()),
            d => Err(format!("{d:?}: needs low <= high (and low > 0 for log_uniform)")),
        }
    }

    /// One sample.
    pub fn sample(&self, rng: &mut Rng) -> toml::Value {
        match self {
            Distribution::Uniform { low, high } => toml::Value::Float(low + (high - low) * rng.f64()),
            Distribution::LogUniform { low, high } => toml::Value::Float((low.ln() + (high.ln() - low.ln()) * rng.f64()).exp()),
            Distribution::IntUniform { low, high } => {
                let span = (high - low) as u64 + 1;
                toml::Value::Integer(low + (rng.next_u64() % span) as i64)
            }
            Distribution::Choice { values } => values[rng.below(values.len())].clone(),
        }
    }
}

/// One configuration: a name and the overrides that make it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Unique name (report rows, plan).
    pub name: String,
    /// Dotted key → value, applied in order.
    pub set: Vec<(String, toml::Value)>,
    /// Dotted keys removed before `set` is applied.
    pub unset: Vec<String>,
    /// For a search trial, the configuration it belongs to.
    pub search_of: Option<String>,
}

/// A value as short text for names: `triplet_margin(margin=0.1)`, `0.001`, `[1, 2]`.
pub fn short(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f}"),
        toml::Value::Table(t) => {
            let head = t.get("type").and_then(|x| x.as_str()).unwrap_or("");
            let rest: Vec<String> = t.iter().filter(|(k, _)| k.as_str() != "type").map(|(k, v)| format!("{k}={}", short(v))).collect();
            if rest.is_empty() { head.to_string() } else { format!("{head}({})", rest.join(",")) }
        }
        toml::Value::Array(a) => format!("[{}]", a.iter().map(short).collect::<Vec<_>>().join(",")),
        v => v.to_string(),
    }
}

/// Expands the grid, the named runs and the search into configurations (names unique).
pub fn expand(cfg: &BenchConfig) -> Result<Vec<Variant>> {
    // Cartesian product of the grid, keys in sorted order.
    // (name parts, overrides) of every grid point built so far.
    type Point = (Vec<String>, Vec<(String, toml::Value)>);
    let mut points: Vec<Point> = vec![(Vec::new(), Vec::new())];
    for (key, values) in &cfg.grid {
        let values = values.as_array().expect("validated");
        let mut next = Vec::with_capacity(points.len() * values.len());
        for (names, set) in &points {
            for v in values {
                let mut names = names.clone();
                if values.len() > 1 {
                    names.push(format!("{key}={}", short(v)));
                }
                let mut set = set.clone();
                set.push((key.clone(), v.clone()));
                next.push((names, set));
            }
        }
        points = next;
    }
    let runs: Vec<NamedRun> = if cfg.runs.is_empty() { vec![NamedRun { name: String::new(), set: Default::default(), unset: Vec::new() }] } else { cfg.runs.clone() };
    let mut out = Vec::new();
    for r in &runs {
        for (names, set) in &points {
            let mut parts: Vec<String> = Vec::new();
            if !r.name.is_empty() {
                parts.push(r.name.clone());
            }
            parts.extend(names.iter().cloned());
            let name = if parts.is_empty() { "base".to_string() } else { parts.join(", ") };
            let mut all: Vec<(String, toml::Value)> = r.set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            all.extend(set.iter().cloned());
            out.push(Variant { name, set: all, unset: r.unset.clone(), search_of: None });
        }
    }
    if let Some(s) = &cfg.search {
        let mut trials = Vec::new();
        for v in &out {
            for t in 0..s.trials {
                let mut rng = Rng::new(derive_seed(&[s.seed, fnv64(v.name.as_bytes()), t as u64]));
                let mut set = v.set.clone();
                set.extend(s.space.iter().map(|(k, d)| (k.clone(), d.sample(&mut rng))));
                trials.push(Variant { name: format!("{} #t{t}", v.name), set, unset: v.unset.clone(), search_of: Some(v.name.clone()) });
            }
        }
        out = trials;
    }
    let mut seen = BTreeSet::new();
    for v in &out {
        if !seen.insert(v.name.as_str()) {
            return Err(BenchError::Config(format!("two configurations are named '{}'; give the [[runs]] distinct names", v.name)));
        }
    }
    Ok(out)
}

/// FNV-1a, 64 bit: a hash that is stable across Rust versions and platforms (run ids).
pub fn fnv64(bytes: &[u8]) -> u64 {
    proxima_data::rng::fnv1a64(0, bytes)
}

/// Sets `key` (dotted) in `table`, creating intermediate tables ([`experiment::set_dotted`]).
pub fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    experiment::set_dotted(table, key, value).map_err(BenchError::Config)
}

impl Variant {
    /// The base table with this configuration's overrides applied.
    pub fn apply(&self, base: &toml::Table) -> Result<toml::Table> {
        let mut t = base.clone();
        for k in &self.unset {
            experiment::unset_dotted(&mut t, k);
        }
        for (k, v) in &self.set {
            set_dotted(&mut t, k, v.clone())?;
        }
        Ok(t)
    }

    /// The overrides as `key=value` lines (for the report).
    pub fn describe(&self) -> Vec<String> {
        let mut d: Vec<String> = self.unset.iter().map(|k| format!("unset {k}")).collect();
        d.extend(self.set.iter().map(|(k, v)| format!("{k}={v}")));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BenchConfig {
        let b = toml::from_str::<BenchConfig>(text).unwrap();
        b.validate().unwrap();
        b
    }

    #[test]
    fn grid_is_the_cartesian_product_with_named_points() {
        let b = parse(
            r#"
            base = "x.toml"
            [grid]
            "loss" = [ {type="contrastive"}, {type="triplet_margin", margin=0.1} ]
            "optimizer.lr" = [1e-3, 3e-4]
            "train.epochs" = [2]
            "#,
        );
        let v = expand(&b).unwrap();
        assert_eq!(v.len(), 4);
        let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "loss=contrastive, optimizer.lr=0.001",
                "loss=contrastive, optimizer.lr=0.0003",
                "loss=triplet_margin(margin=0.1), optimizer.lr=0.001",
                "loss=triplet_margin(margin=0.1), optimizer.lr=0.0003",
            ]
        );
        // Single-valued keys are applied but do not clutter names.
        assert!(v.iter().all(|v| v.set.iter().any(|(k, x)| k == "train.epochs" && x.as_integer() == Some(2))));
        let mut base: toml::Table = toml::from_str("[optimizer]\ntype = \"adamw\"\nlr = 1.0\n[train]\nepochs = 9").unwrap();
        base.insert("miner".into(), toml::Value::Table(toml::from_str("type = \"batch_hard\"").unwrap()));
        let t = v[3].apply(&base).unwrap();
        assert_eq!(t["optimizer"]["lr"].as_float(), Some(3e-4));
        assert_eq!(t["optimizer"]["type"].as_str(), Some("adamw"));
        assert_eq!(t["loss"]["margin"].as_float(), Some(0.1));
        assert_eq!(t["train"]["epochs"].as_integer(), Some(2));
    }

    #[test]
    fn runs_combine_with_the_grid_and_can_unset() {
        let b = parse(
            r#"
            base = "x.toml"
            [grid]
            "optimizer.lr" = [1e-3, 1e-2]
            [[runs]]
            name = "plain"
            unset = ["miner"]
            [[runs]]
            name = "hard"
            set = { miner = { type = "batch_hard" } }
            "#,
        );
        let v = expand(&b).unwrap();
        assert_eq!(
            v.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["plain, optimizer.lr=0.001", "plain, optimizer.lr=0.01", "hard, optimizer.lr=0.001", "hard, optimizer.lr=0.01"]
        );
        let base: toml::Table = toml::from_str("[miner]\ntype = \"multi_similarity\"").unwrap();
        assert!(!v[0].apply(&base).unwrap().contains_key("miner"));
        assert_eq!(v[2].apply(&base).unwrap()["miner"]["type"].as_str(), Some("batch_hard"));
        // Neither grid nor runs: the base alone.
        let only = expand(&parse("base = \"x.toml\"")).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].name, "base");
    }

    #[test]
    fn search_samples_within_ranges_deterministically() {
        let text = r#"
            base = "x.toml"
            [[runs]]
            name = "a"
            [search]
            trials = 5
            space."optimizer.lr" = { type = "log_uniform", low = 1e-4, high = 1e-2 }
            space."loss.margin" = { type = "uniform", low = 0.05, high = 0.5 }
            space."sampler.m" = { type = "choice", values = [2, 4] }
            space."train.epochs" = { type = "int_uniform", low = 1, high = 3 }
        "#;
        let v = expand(&parse(text)).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v, expand(&parse(text)).unwrap());
        assert!(v.iter().all(|t| t.search_of.as_deref() == Some("a")));
        assert_eq!(v[4].name, "a #t4");
        let get = |t: &Variant, k: &str| t.set.iter().find(|(key, _)| key == k).unwrap().1.clone();
        for t in &v {
            let lr = get(t, "optimizer.lr").as_float().unwrap();
            assert!((1e-4..=1e-2).contains(&lr), "{lr}");
            let m = get(t, "loss.margin").as_float().unwrap();
            assert!((0.05..=0.5).contains(&m));
            assert!([2, 4].contains(&get(t, "sampler.m").as_integer().unwrap()));
            assert!((1..=3).contains(&get(t, "train.epochs").as_integer().unwrap()));
        }
        // Trials differ from each other.
        assert_ne!(get(&v[0], "optimizer.lr"), get(&v[1], "optimizer.lr"));
    }

    #[test]
    fn invalid_bench_files_are_rejected_with_the_reason() {
        let err = |text: &str| toml::from_str::<BenchConfig>(text).map_err(|e| e.to_string()).and_then(|b| b.validate().map_err(|e| e.to_string())).unwrap_err();
        assert!(err("base = \"x\"\nfolds = 1").contains("folds must be >= 2"));
        assert!(err("base = \"x\"\nseeds = []").contains("seeds must not be empty"));
        assert!(err("base = \"x\"\n[grid]\n\"optimizer.lr\" = 0.1").contains("non-empty list"));
        assert!(err("base = \"x\"\n[grid]\n\"a..b\" = [1]").contains("dotted key"));
        assert!(err("base = \"x\"\nfoldz = 3").contains("foldz"));
        assert!(err("base = \"x\"\n[search]\ntrials = 2\nspace.\"a\" = { type = \"log_uniform\", low = 0.0, high = 1.0 }").contains("low > 0"));
        assert!(err("base = \"x\"\n[[runs]]\nname = \"a\"\n[[runs]]\nname = \"a\"").contains("two [[runs]]"));
    }
}
