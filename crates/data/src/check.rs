//! `check`: audit a data set before training on it.
//!
//! Why: a training run that dies at epoch 3 on a truncated JPEG, or silently learns from 4
//! classes because a folder was empty, wastes hours. `check` decodes everything once (in
//! parallel) and reports what is usable, what is not (with reasons), and how balanced classes are.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Issue, ScanOptions, reason_of};

/// One bin of the class-size histogram: classes with `lo..=hi` images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistBin {
    /// Smallest class size in the bin.
    pub lo: usize,
    /// Largest class size in the bin.
    pub hi: usize,
    /// Number of classes in the bin.
    pub count: usize,
}

/// The result of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Number of decodable images.
    pub images: usize,
    /// Number of classes with at least one decodable image.
    pub classes: usize,
    /// Entries that could not be used, with reasons.
    pub unreadable: Vec<Issue>,
    /// Classes left with no decodable image.
    pub empty_classes: Vec<String>,
    /// Decodable images per class.
    pub class_sizes: BTreeMap<String, usize>,
    /// Class-size histogram in power-of-two bins (1, 2–3, 4–7, …).
    pub histogram: Vec<HistBin>,
}

impl CheckReport {
    /// Renders the report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report is always serialisable")
    }
}

/// Checks a class-per-folder tree (or a `.csv`/`.jsonl` manifest file) with default options.
pub fn check(root: &Path) -> CheckReport {
    check_with(root, &ScanOptions { verify: true, ..Default::default() })
}

/// Checks a tree or manifest with explicit options.
pub fn check_with(root: &Path, opts: &ScanOptions) -> CheckReport {
    let scanned = if root.is_file() { Dataset::from_manifest(root).map(|ds| ds.verify(opts)) } else { Dataset::scan_folder(root, opts) };
    let report = match scanned {
        Ok(r) => r,
        Err(e) => {
            return CheckReport { unreadable: vec![Issue::new(root, reason_of(&e))], ..Default::default() };
        }
    };
    let ds = &report.dataset;
    let counts = ds.class_counts();
    let class_sizes = ds.classes.iter().cloned().zip(counts.iter().copied()).collect();
    CheckReport {
        images: ds.len(),
        classes: ds.num_classes(),
        unreadable: report.issues,
        empty_classes: report.empty_classes,
        class_sizes,
        histogram: histogram(&counts),
    }
}

/// Power-of-two histogram of class sizes (empty bins omitted).
pub fn histogram(sizes: &[usize]) -> Vec<HistBin> {
    let mut bins: BTreeMap<u32, usize> = BTreeMap::new();
    for &s in sizes.iter().filter(|&&s| s > 0) {
        *bins.entry(usize::BITS - 1 - s.leading_zeros()).or_default() += 1;
    }
    bins.into_iter().map(|(k, count)| HistBin { lo: 1 << k, hi: (1 << (k + 1)) - 1, count }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins() {
        let h = histogram(&[1, 2, 3, 4, 7, 8, 0]);
        assert_eq!(
            h,
            vec![HistBin { lo: 1, hi: 1, count: 1 }, HistBin { lo: 2, hi: 3, count: 2 }, HistBin { lo: 4, hi: 7, count: 2 }, HistBin { lo: 8, hi: 15, count: 1 },]
        );
    }

    #[test]
    fn missing_root_is_reported_not_fatal() {
        let r = check(Path::new("/definitely/not/here"));
        assert_eq!(r.images, 0);
        assert_eq!(r.unreadable.len(), 1);
        assert!(r.unreadable[0].reason.contains("No such file"), "{:?}", r.unreadable);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(v["unreadable"][0]["path"].is_string() && v["unreadable"][0]["reason"].is_string());
    }
}
