//! Class-disjoint splits, k-fold cross-validation and within-class query/gallery splits.
//!
//! Why class-disjoint: metric learning is judged on classes never seen in training (the
//! retrieval / open-set setting), so train, validation and test must not share a class — "A Metric
//! Learning Reality Check" (Musgrave et al., 2020) also asks for k-fold cross-validation over
//! *classes* for honest hyper-parameter search. Splits store class *names* (not indices) so a
//! saved split stays valid if the data set is rescanned; they are deterministic by seed and
//! round-trip through JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, write_file};
use crate::error::{DataError, Result};
use crate::rng::Rng;

/// How to split classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitConfig {
    /// Random class-disjoint split by ratios (must sum to 1).
    Ratio {
        /// Fraction of classes for training.
        train: f32,
        /// Fraction for validation.
        val: f32,
        /// Fraction for testing.
        test: f32,
    },
    /// Explicit class lists.
    Explicit {
        /// Training classes.
        train: Vec<String>,
        /// Validation classes.
        #[serde(default)]
        val: Vec<String>,
        /// Test classes.
        #[serde(default)]
        test: Vec<String>,
    },
    /// Hold out `test_ratio` of classes as test, split the rest into `k` class-disjoint folds and
    /// use fold `fold` as validation.
    KFold {
        /// Number of folds (≥ 2).
        k: usize,
        /// Which fold is validation (0-based, < k).
        fold: usize,
        /// Fraction of classes held out as test before folding.
        #[serde(default)]
        test_ratio: f32,
    },
}

/// A class-disjoint split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// Seed used.
    pub seed: u64,
    /// How it was made.
    pub config: SplitConfig,
    /// Training classes (sorted).
    pub train: Vec<String>,
    /// Validation classes (sorted).
    pub val: Vec<String>,
    /// Test classes (sorted).
    pub test: Vec<String>,
}

impl Split {
    /// Checks that the three parts are pairwise disjoint and without duplicates.
    pub fn validate(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for c in self.train.iter().chain(&self.val).chain(&self.test) {
            if !seen.insert(c) {
                return Err(DataError::Config(format!("split: class {c:?} appears twice")));
            }
        }
        Ok(())
    }

    /// Writes the split as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| DataError::Json { path: path.to_path_buf(), source: e })?;
        write_file(path, &bytes)
    }

    /// Reads and validates a split written by [`Split::save`].
    pub fn load(path: &Path) -> Result<Split> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let s: Split = serde_json::from_slice(&bytes).map_err(|e| DataError::Json { path: path.to_path_buf(), source: e })?;
        s.validate()?;
        Ok(s)
    }

    /// The train / val / test sub-data-sets (each relabelled 0..).
    pub fn apply(&self, ds: &Dataset) -> Result<(Dataset, Dataset, Dataset)> {
        Ok((ds.select_classes(&self.train)?, ds.select_classes(&self.val)?, ds.select_classes(&self.test)?))
    }
}

fn shuffled(classes: &[String], seed: u64, salt: u64) -> Vec<String> {
    let mut v: Vec<String> = classes.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    Rng::from_parts(&[seed, salt]).shuffle(&mut v);
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Splits `classes` according to `cfg`, deterministically by `seed`.
pub fn make_split(classes: &[String], cfg: &SplitConfig, seed: u64) -> Result<Split> {
    let n = classes.iter().collect::<BTreeSet<_>>().len();
    if n == 0 {
        return Err(DataError::Invalid("cannot split zero classes".into()));
    }
    let (train, val, test) = match cfg {
        SplitConfig::Ratio { train, val, test } => {
            if [*train, *val, *test].iter().any(|r| !(0.0..=1.0).contains(r)) || (train + val + test - 1.0).abs() > 1e-3 {
                return Err(DataError::Config(format!("split ratios must be in [0,1] and sum to 1, got {train}/{val}/{test}")));
            }
            let order = shuffled(classes, seed, 0x0005_9117);
            let n_test = (n as f32 * test).round() as usize;
            let n_val = (n as f32 * val).round() as usize;
            if n_test + n_val >= n && *train > 0.0 {
                return Err(DataError::Config(format!("{n} classes leave none for training with ratios {train}/{val}/{test}")));
            }
            let n_val = n_val.min(n - n_test);
            let test_v = order[..n_test].to_vec();
            let val_v = order[n_test..n_test + n_val].to_vec();
            let train_v = order[n_test + n_val..].to_vec();
            (train_v, val_v, test_v)
        }
        SplitConfig::Explicit { train, val, test } => {
            let known: BTreeSet<&String> = classes.iter().collect();
            for c in train.iter().chain(val).chain(test) {
                if !known.contains(c) {
                    return Err(DataError::UnknownClass(c.clone()));
                }
            }
            (train.clone(), val.clone(), test.clone())
        }
        SplitConfig::KFold { k, fold, test_ratio } => {
            if *k < 2 || fold >= k || !(0.0..1.0).contains(test_ratio) {
                return Err(DataError::Config(format!("k-fold needs k >= 2, fold < k, test_ratio in [0,1); got k={k} fold={fold} test_ratio={test_ratio}")));
            }
            let order = shuffled(classes, seed, 0xF01D);
            let n_test = (n as f32 * test_ratio).round() as usize;
            let rest = &order[n_test..];
            if rest.len() < *k {
                return Err(DataError::Config(format!("{} non-test classes cannot form {k} folds", rest.len())));
            }
            let (mut tr, mut va) = (Vec::new(), Vec::new());
            for (i, c) in rest.iter().enumerate() {
                if i % k == *fold { va.push(c.clone()) } else { tr.push(c.clone()) }
            }
            (tr, va, order[..n_test].to_vec())
        }
    };
    let s = Split { seed, config: cfg.clone(), train: sorted(train), val: sorted(val), test: sorted(test) };
    s.validate()?;
    Ok(s)
}

/// All `k` class-disjoint folds (same held-out test set in each; validation folds partition the rest).
pub fn kfold_class_disjoint(classes: &[String], k: usize, test_ratio: f32, seed: u64) -> Result<Vec<Split>> {
    (0..k).map(|fold| make_split(classes, &SplitConfig::KFold { k, fold, test_ratio }, seed)).collect()
}

/// Sample indices for retrieval evaluation inside one set of classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryGallery {
    /// Query sample indices (sorted).
    pub query: Vec<usize>,
    /// Gallery sample indices (sorted).
    pub gallery: Vec<usize>,
}

/// Within-class query/gallery split: per class about `query_fraction` of its groups (photos;
/// each sample is its own group when `group` is unset) become queries, at least one group stays
/// in the gallery; classes with a single group go wholly to the gallery.
pub fn query_gallery_split(ds: &Dataset, query_fraction: f32, seed: u64) -> Result<QueryGallery> {
    if !(0.0..1.0).contains(&query_fraction) {
        return Err(DataError::Config(format!("query_fraction must be in [0, 1), got {query_fraction}")));
    }
    let (mut query, mut gallery) = (Vec::new(), Vec::new());
    for (class, idx) in ds.indices_by_class().iter().enumerate() {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in idx {
            let key = ds.samples[i].group.clone().unwrap_or_else(|| format!("\u{0}{i}"));
            groups.entry(key).or_default().push(i);
        }
        let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
        Rng::from_parts(&[seed, 0x09_6A11, class as u64]).shuffle(&mut groups);
        let ng = groups.len();
        let nq = if ng < 2 { 0 } else { ((ng as f32 * query_fraction).round() as usize).clamp(usize::from(query_fraction > 0.0), ng - 1) };
        for (g, members) in groups.into_iter().enumerate() {
            if g < nq { query.extend(members) } else { gallery.extend(members) }
        }
    }
    query.sort_unstable();
    gallery.sort_unstable();
    Ok(QueryGallery { query, gallery })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i:02}")).collect()
    }

    #[test]
    fn ratio_split_sizes_and_determinism() {
        let cfg = SplitConfig::Ratio { train: 0.6, val: 0.2, test: 0.2 };
        let a = make_split(&names(10), &cfg, 1).unwrap();
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (6, 2, 2));
        assert_eq!(a, make_split(&names(10), &cfg, 1).unwrap());
        assert_ne!(a, make_split(&names(10), &cfg, 2).unwrap());
        assert!(make_split(&names(10), &SplitConfig::Ratio { train: 0.5, val: 0.2, test: 0.2 }, 1).is_err());
    }

    #[test]
    fn explicit_rejects_unknown_and_overlap() {
        let c = names(3);
        let ok = SplitConfig::Explicit { train: vec!["c00".into()], val: vec!["c01".into()], test: vec![] };
        assert!(make_split(&c, &ok, 0).is_ok());
        let unknown = SplitConfig::Explicit { train: vec!["zz".into()], val: vec![], test: vec![] };
        assert!(matches!(make_split(&c, &unknown, 0), Err(DataError::UnknownClass(_))));
        let overlap = SplitConfig::Explicit { train: vec!["c00".into()], val: vec!["c00".into()], test: vec![] };
        assert!(make_split(&c, &overlap, 0).is_err());
    }

    #[test]
    fn kfold_val_folds_partition_non_test_classes() {
        let c = names(23);
        let folds = kfold_class_disjoint(&c, 4, 0.25, 7).unwrap();
        let test = &folds[0].test;
        assert_eq!(test.len(), 6);
        let mut all_val: Vec<String> = folds.iter().flat_map(|f| f.val.clone()).collect();
        all_val.sort();
        let mut expect: Vec<String> = c.iter().filter(|x| !test.contains(x)).cloned().collect();
        expect.sort();
        assert_eq!(all_val, expect);
        for f in &folds {
            assert_eq!(&f.test, test);
            assert_eq!(f.train.len() + f.val.len(), 17);
        }
    }

    #[test]
    fn query_gallery_keeps_groups_together() {
        let mut recs = Vec::new();
        for c in 0..3 {
            for g in 0..4 {
                for k in 0..3 {
                    recs.push((format!("{c}_{g}_{k}").into(), format!("c{c}"), None, Some(format!("photo{c}_{g}"))));
                }
            }
        }
        recs.push(("single".into(), "lonely".into(), None, None));
        let ds = Dataset::from_records(recs);
        let qg = query_gallery_split(&ds, 0.5, 3).unwrap();
        let qset: BTreeSet<usize> = qg.query.iter().copied().collect();
        for i in 0..ds.len() {
            for j in 0..ds.len() {
                if ds.samples[i].group.is_some() && ds.samples[i].group == ds.samples[j].group {
                    assert_eq!(qset.contains(&i), qset.contains(&j));
                }
            }
        }
        assert_eq!(qg.query.len(), 3 * 2 * 3);
        let lonely = ds.samples.iter().position(|s| s.path.to_str() == Some("single")).unwrap();
        assert!(qg.gallery.contains(&lonely));
    }
}
