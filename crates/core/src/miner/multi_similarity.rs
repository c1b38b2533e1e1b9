//! Multi-similarity mining (Wang et al., "Multi-Similarity Loss with General Pair Weighting").
//!
//! A positive pair is kept when it is less similar than the anchor's most similar negative plus
//! ε; a negative pair when it is more similar than the anchor's least similar positive minus ε.
//! The reference sorts every row to find these; comparing against the row's extreme value with
//! masks selects the same pairs without the sort.

use serde::{Deserialize, Serialize};

use super::blocks::{finfo_max, pairs_from_masks};
use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::fused::{SelfBatch, SelfKind};
use crate::tuples::{Batch, Pairs, Tuples};
use tch::Tensor;

fn default_epsilon() -> f64 {
    0.1
}

/// Parameters of [`MultiSimilarityMiner`] (reference default: epsilon 0.1, cosine similarity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiSimilarityMinerParams {
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
}

impl Default for MultiSimilarityMinerParams {
    fn default() -> Self {
        MultiSimilarityMinerParams { epsilon: default_epsilon() }
    }
}

impl MinerParams for MultiSimilarityMinerParams {
    fn validate(&self) -> Result<()> {
        if !self.epsilon.is_finite() {
            return Err(invalid("multi_similarity miner", "epsilon must be finite"));
        }
        Ok(())
    }
    fn default_distance(&self) -> Distance {
        Distance::cosine()
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(MultiSimilarityMiner { epsilon: self.epsilon, distance }))
    }
}

/// For a similarity `s`: positives with `s_ap − ε < max_n s_an`, negatives with
/// `s_an + ε > min_p s_ap` (per anchor); for a distance the mirror image.
///
/// # Shapes
/// embeddings [n, d] → pairs.
pub struct MultiSimilarityMiner {
    pub epsilon: f64,
    pub distance: Distance,
}

impl Miner for MultiSimilarityMiner {
    fn name(&self) -> &'static str {
        "MultiSimilarityMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        if let Some(p) = self.mine_fused(batch) {
            return Ok(Tuples::Pairs(p));
        }
        self.mine_reference(batch)
    }
}

impl MultiSimilarityMiner {
    /// A float32 CPU self batch with the cosine similarity, a dot product or the Euclidean
    /// distance: one single-threaded pass in Rust ([`crate::fused::multi_similarity_pairs`]);
    /// `None` when that does not apply.
    pub(crate) fn mine_fused(&self, batch: &Batch) -> Option<Pairs> {
        let input = SelfBatch::for_distance(&self.distance, batch, SelfKind::ALL)?;
        let e = input.matrix()?;
        let (pos, neg) = crate::fused::multi_similarity_pairs(&e.values, e.n, &input.labels, self.epsilon, self.distance.is_inverted())?;
        let col = |v: &[(i64, i64)], first: bool| Tensor::from_slice(&v.iter().map(|p| if first { p.0 } else { p.1 }).collect::<Vec<i64>>());
        Some(Pairs { pos_anchor: col(&pos, true), pos_other: col(&pos, false), neg_anchor: col(&neg, true), neg_other: col(&neg, false) })
    }

    /// The tensor formulation (any device, dtype or reference set).
    pub(crate) fn mine_reference(&self, batch: &Batch) -> Result<Tuples> {
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let (matches, diffs) = batch.label_masks();
        if matches.any().int64_value(&[]) == 0 || diffs.any().int64_value(&[]) == 0 {
            let none = mat.zeros_like().to_kind(tch::Kind::Bool);
            return Ok(Tuples::Pairs(pairs_from_masks(&none, &none)));
        }
        let big = finfo_max(mat.kind());
        let eps = self.epsilon;
        let (pos_keep, neg_keep) = if self.distance.is_inverted() {
            let hardest_neg = mat.masked_fill(&diffs.logical_not(), -big).amax(1, true);
            let easiest_pos = mat.masked_fill(&matches.logical_not(), big).amin(1, true);
            ((&mat - eps).lt_tensor(&hardest_neg), (&mat + eps).gt_tensor(&easiest_pos))
        } else {
            let hardest_neg = mat.masked_fill(&diffs.logical_not(), big).amin(1, true);
            let easiest_pos = mat.masked_fill(&matches.logical_not(), -big).amax(1, true);
            ((&mat + eps).gt_tensor(&hardest_neg), (&mat - eps).lt_tensor(&easiest_pos))
        };
        Ok(Tuples::Pairs(pairs_from_masks(&matches.logical_and(&pos_keep), &diffs.logical_and(&neg_keep))))
    }
}
