//! Batch samplers: M-per-class (the standard for pair/triplet losses) and fixed triplets.
//!
//! Why M-per-class: pair-based losses and miners need several positives per class inside each
//! batch; uniform sampling over thousands of classes gives almost none. Batches here always hold
//! exactly `batch_size / m` distinct classes with exactly `m` samples each. An epoch's batches are
//! a pure function of `(seed, epoch)`, so the sampler state is just `(epoch, position)`: saving
//! it in a checkpoint and resuming reproduces the remaining batches exactly.

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::rng::Rng;

/// What to do with classes that have fewer than `m` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmallClassPolicy {
    /// Use them, drawing with replacement to reach `m`.
    #[default]
    Replace,
    /// Leave them out (listed in [`MPerClassSampler::skipped_classes`]).
    Skip,
    /// Refuse with [`DataError::ClassTooSmall`].
    Error,
}

/// M-per-class sampler configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MPerClassConfig {
    /// Samples per class in a batch.
    pub m: usize,
    /// Batch size; must be a multiple of `m`.
    pub batch_size: usize,
    /// Policy for classes smaller than `m`.
    #[serde(default)]
    pub small_classes: SmallClassPolicy,
    /// Batches per epoch (default: usable samples / batch size, at least 1).
    #[serde(default)]
    pub batches_per_epoch: Option<usize>,
}

/// Where a sampler is: the next batch is batch `position` of epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SamplerState {
    /// Epoch number.
    pub epoch: u64,
    /// Index of the next batch within the epoch.
    pub position: usize,
}

/// The M-per-class sampler.
#[derive(Debug, Clone)]
pub struct MPerClassSampler {
    cfg: MPerClassConfig,
    seed: u64,
    /// `(label, sample indices)` of usable classes.
    classes: Vec<(usize, Vec<usize>)>,
    skipped: Vec<(usize, usize)>,
    batches_per_epoch: usize,
}

impl MPerClassSampler {
    /// Builds a sampler over `labels` (one per sample; labels need not be contiguous).
    pub fn new(labels: &[usize], cfg: MPerClassConfig, seed: u64) -> Result<Self> {
        if cfg.m == 0 || cfg.batch_size == 0 || !cfg.batch_size.is_multiple_of(cfg.m) {
            return Err(DataError::Config(format!("M-per-class: batch_size ({}) must be a positive multiple of m ({})", cfg.batch_size, cfg.m)));
        }
        let max_label = labels.iter().copied().max().map_or(0, |l| l + 1);
        let mut by = vec![Vec::new(); max_label];
        for (i, &l) in labels.iter().enumerate() {
            by[l].push(i);
        }
        let (mut classes, mut skipped) = (Vec::new(), Vec::new());
        for (l, idx) in by.into_iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            if idx.len() < cfg.m {
                match cfg.small_classes {
                    SmallClassPolicy::Replace => {}
                    SmallClassPolicy::Skip => {
                        skipped.push((l, idx.len()));
                        continue;
                    }
                    SmallClassPolicy::Error => {
                        return Err(DataError::ClassTooSmall { class: l.to_string(), have: idx.len(), need: cfg.m });
                    }
                }
            }
            classes.push((l, idx));
        }
        let per_batch = cfg.batch_size / cfg.m;
        if classes.len() < per_batch {
            return Err(DataError::Invalid(format!(
                "M-per-class: a batch needs {per_batch} distinct classes but only {} are usable ({} skipped as smaller than m = {})",
                classes.len(),
                skipped.len(),
                cfg.m
            )));
        }
        let usable: usize = classes.iter().map(|(_, v)| v.len().max(cfg.m)).sum();
        let batches_per_epoch = cfg.batches_per_epoch.unwrap_or(usable / cfg.batch_size).max(1);
        Ok(MPerClassSampler { cfg, seed, classes, skipped, batches_per_epoch })
    }

    /// Classes left out by [`SmallClassPolicy::Skip`], as `(label, sample count)`.
    pub fn skipped_classes(&self) -> &[(usize, usize)] {
        &self.skipped
    }

    /// Number of batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.batches_per_epoch
    }

    /// The configuration.
    pub fn config(&self) -> &MPerClassConfig {
        &self.cfg
    }

    /// All batches (sample indices) of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let m = self.cfg.m;
        let per_batch = self.cfg.batch_size / m;
        let mut rng = Rng::from_parts(&[self.seed, 0x3A3F_C1A5, epoch]);
        let mut pools: Vec<(Vec<usize>, usize)> = self
            .classes
            .iter()
            .map(|(_, v)| {
                let mut v = v.clone();
                rng.shuffle(&mut v);
                (v, 0)
            })
            .collect();
        let mut order: Vec<usize> = (0..self.classes.len()).collect();
        rng.shuffle(&mut order);
        let mut cursor = 0;
        let mut out = Vec::with_capacity(self.batches_per_epoch);
        for _ in 0..self.batches_per_epoch {
            let mut chosen: Vec<usize> = Vec::with_capacity(per_batch);
            while chosen.len() < per_batch {
                if cursor == order.len() {
                    rng.shuffle(&mut order);
                    cursor = 0;
                }
                let c = order[cursor];
                cursor += 1;
                if !chosen.contains(&c) {
                    chosen.push(c);
                }
            }
            let mut batch = Vec::with_capacity(self.cfg.batch_size);
            for c in chosen {
                let (pool, pos) = &mut pools[c];
                if pool.len() < m {
                    let mut all = pool.clone();
                    rng.shuffle(&mut all);
                    batch.extend_from_slice(&all);
                    for _ in all.len()..m {
                        batch.push(pool[rng.below(pool.len())]);
                    }
                } else {
                    if *pos + m > pool.len() {
                        rng.shuffle(pool);
                        *pos = 0;
                    }
                    batch.extend_from_slice(&pool[*pos..*pos + m]);
                    *pos += m;
                }
            }
            out.push(batch);
        }
        out
    }

    /// Endless iterator of `(state after this batch, batch)` starting at `state`.
    pub fn iter_from(&self, state: SamplerState) -> MPerClassIter {
        MPerClassIter { sampler: self.clone(), state, current: None }
    }
}

/// Iterator returned by [`MPerClassSampler::iter_from`].
#[derive(Debug, Clone)]
pub struct MPerClassIter {
    sampler: MPerClassSampler,
    state: SamplerState,
    current: Option<(u64, Vec<Vec<usize>>)>,
}

impl MPerClassIter {
    /// The state of the next batch to be produced (save this to resume).
    pub fn state(&self) -> SamplerState {
        self.state
    }
}

impl Iterator for MPerClassIter {
    /// `(epoch of the batch, batch indices)`.
    type Item = (u64, Vec<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.state.position >= self.sampler.batches_per_epoch {
            self.state = SamplerState { epoch: self.state.epoch + 1, position: 0 };
        }
        let epoch = self.state.epoch;
        if self.current.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.current = Some((epoch, self.sampler.epoch(epoch)));
        }
        let batch = self.current.as_ref().expect("set above").1[self.state.position].clone();
        self.state.position += 1;
        Some((epoch, batch))
    }
}

/// A fixed list of `(anchor, positive, negative)` triplets, deterministic by seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripletSampler {
    /// The triplets, as sample indices.
    pub triplets: Vec<[usize; 3]>,
}

impl TripletSampler {
    /// Draws `n` triplets: anchor and positive distinct samples of one class, negative of another.
    pub fn new(labels: &[usize], n: usize, seed: u64) -> Result<Self> {
        let max_label = labels.iter().copied().max().map_or(0, |l| l + 1);
        let mut by = vec![Vec::new(); max_label];
        for (i, &l) in labels.iter().enumerate() {
            by[l].push(i);
        }
        let anchor_classes: Vec<usize> = (0..max_label).filter(|&l| by[l].len() >= 2).collect();
        let nonempty = by.iter().filter(|v| !v.is_empty()).count();
        if anchor_classes.is_empty() || nonempty < 2 {
            return Err(DataError::Invalid("triplets need a class with >= 2 samples and at least 2 classes".into()));
        }
        let mut rng = Rng::from_parts(&[seed, 0x7121_9137]);
        let mut triplets = Vec::with_capacity(n);
        for _ in 0..n {
            let c = anchor_classes[rng.below(anchor_classes.len())];
            let a = rng.below(by[c].len());
            let mut p = rng.below(by[c].len() - 1);
            if p >= a {
                p += 1;
            }
            let neg = loop {
                let j = rng.below(labels.len());
                if labels[j] != c {
                    break j;
                }
            };
            triplets.push([by[c][a], by[c][p], neg]);
        }
        Ok(TripletSampler { triplets })
    }

    /// Batches of `per_batch` triplets, flattened as `[a0, p0, n0, a1, p1, n1, …]`.
    pub fn batches(&self, per_batch: usize) -> Vec<Vec<usize>> {
        self.triplets.chunks(per_batch.max(1)).map(|c| c.iter().flatten().copied().collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn cfg(m: usize, bs: usize, p: SmallClassPolicy) -> MPerClassConfig {
        MPerClassConfig { m, batch_size: bs, small_classes: p, batches_per_epoch: None }
    }

    proptest! {
        #[test]
        fn every_batch_has_m_per_class(sizes in proptest::collection::vec(1usize..12, 2..15), m in 1usize..5, c in 1usize..4, seed in 0u64..1000) {
            let labels: Vec<usize> = sizes.iter().enumerate().flat_map(|(l, &n)| std::iter::repeat_n(l, n)).collect();
            let policy = if seed % 2 == 0 { SmallClassPolicy::Replace } else { SmallClassPolicy::Skip };
            match MPerClassSampler::new(&labels, cfg(m, m * c, policy), seed) {
                Err(DataError::Invalid(_)) => {
                    let usable = sizes.iter().filter(|&&n| policy == SmallClassPolicy::Replace || n >= m).count();
                    prop_assert!(usable < c);
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
                Ok(s) => {
                    for batch in s.epoch(3) {
                        prop_assert_eq!(batch.len(), m * c);
                        let mut per: BTreeMap<usize, usize> = BTreeMap::new();
                        for &i in &batch { *per.entry(labels[i]).or_default() += 1; }
                        prop_assert_eq!(per.len(), c);
                        prop_assert!(per.values().all(|&v| v == m));
                        if policy == SmallClassPolicy::Skip {
                            prop_assert!(per.keys().all(|&l| sizes[l] >= m));
                        }
                        for &l in per.keys() {
                            // Without replacement whenever the class is large enough.
                            if sizes[l] >= m {
                                let mut ids: Vec<usize> = batch.iter().copied().filter(|&i| labels[i] == l).collect();
                                ids.sort(); ids.dedup();
                                prop_assert_eq!(ids.len(), m);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn deterministic_and_resumable() {
        let labels: Vec<usize> = (0..200).map(|i| i % 13).collect();
        let s = MPerClassSampler::new(&labels, cfg(4, 16, SmallClassPolicy::Replace), 5).unwrap();
        assert_eq!(s.epoch(2), s.epoch(2));
        assert_ne!(s.epoch(2), s.epoch(3));
        let full: Vec<(u64, Vec<usize>)> = s.iter_from(SamplerState::default()).take(30).collect();
        let mut it = s.iter_from(SamplerState::default());
        let _first: Vec<_> = it.by_ref().take(17).collect();
        let saved = serde_json::to_string(&it.state()).unwrap();
        let resumed: Vec<_> = s.iter_from(serde_json::from_str(&saved).unwrap()).take(13).collect();
        assert_eq!(&full[17..], &resumed[..]);
        assert!(full.iter().any(|(e, _)| *e == 2), "30 batches of 12 per epoch reach epoch 2");
    }

    #[test]
    fn small_class_policies() {
        let labels = vec![0, 0, 0, 0, 1, 1, 1, 1, 2];
        assert!(matches!(MPerClassSampler::new(&labels, cfg(2, 4, SmallClassPolicy::Error), 0), Err(DataError::ClassTooSmall { have: 1, need: 2, .. })));
        let s = MPerClassSampler::new(&labels, cfg(2, 4, SmallClassPolicy::Skip), 0).unwrap();
        assert_eq!(s.skipped_classes(), &[(2, 1)]);
        assert!(MPerClassSampler::new(&labels, cfg(2, 6, SmallClassPolicy::Skip), 0).is_err());
        assert!(MPerClassSampler::new(&labels, cfg(2, 6, SmallClassPolicy::Replace), 0).is_ok());
        assert!(MPerClassSampler::new(&labels, cfg(3, 4, SmallClassPolicy::Replace), 0).is_err());
    }

    #[test]
    fn triplets_are_valid() {
        let labels: Vec<usize> = (0..50).map(|i| i % 5).collect();
        let t = TripletSampler::new(&labels, 100, 1).unwrap();
        for [a, p, n] in &t.triplets {
            assert_ne!(a, p);
            assert_eq!(labels[*a], labels[*p]);
            assert_ne!(labels[*a], labels[*n]);
        }
        assert_eq!(t, TripletSampler::new(&labels, 100, 1).unwrap());
        assert_eq!(t.batches(32).len(), 4);
        assert!(TripletSampler::new(&[0, 1, 2], 5, 0).is_err());
    }
}
