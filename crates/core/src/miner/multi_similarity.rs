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
        if let Some(p) = self.fused_self(batch) {
            return Ok(Tuples::Pairs(p));
        }
        self.mine_with_tensors(batch)
    }
}

impl MultiSimilarityMiner {
    /// A float32 CPU self batch with the cosine similarity, a dot product or the Euclidean
    /// distance: one single-threaded pass in Rust ([`crate::fused::multi_similarity_pairs`]).
    fn fused_self(&self, batch: &Batch) -> Option<Pairs> {
        if !batch.is_self() {
            return None;
        }
        let e = match self.distance {
            Distance::Lp { normalize_embeddings, p, power } if p == 2.0 && power == 1.0 => crate::fused::EuclideanSelf::new(batch.embeddings, normalize_embeddings)?,
            Distance::Cosine { p, power, .. } if p == 2.0 && power == 1.0 => crate::fused::EuclideanSelf::gram(batch.embeddings, true)?,
            Distance::DotProduct { normalize_embeddings, p, power } if p == 2.0 && power == 1.0 => {
                crate::fused::EuclideanSelf::gram(batch.embeddings, normalize_embeddings)?
            }
            _ => return None,
        };
        let labels = crate::fused::cpu_labels(batch.labels)?;
        let (pos, neg) = crate::fused::multi_similarity_pairs(&e.dist, e.n, &labels, self.epsilon, self.distance.is_inverted())?;
        let col = |v: &[(i64, i64)], first: bool| Tensor::from_slice(&v.iter().map(|p| if first { p.0 } else { p.1 }).collect::<Vec<i64>>());
        Some(Pairs { pos_anchor: col(&pos, true), pos_other: col(&pos, false), neg_anchor: col(&neg, true), neg_other: col(&neg, false) })
    }

    /// The tensor formulation (any device, dtype or reference set).
    fn mine_with_tensors(&self, batch: &Batch) -> Result<Tuples> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The single-pass Rust miner selects the same pairs, in the same order, as the tensor
    /// formulation: exactly on integer data (exact distances, many ties), and on random data.
    #[test]
    fn fused_equals_tensor_formulation() {
        tch::manual_seed(8);
        let ints = (Tensor::randn([100, 5], (Kind::Float, Device::Cpu)) * 2.0).round();
        let rand = Tensor::randn([100, 24], (Kind::Float, Device::Cpu));
        let labels = Tensor::arange(100, (Kind::Int64, Device::Cpu)).remainder(7);
        let cases = [
            (&ints, Distance::Lp { normalize_embeddings: false, p: 2.0, power: 1.0 }, 1.0),
            (&ints, Distance::DotProduct { normalize_embeddings: false, p: 2.0, power: 1.0 }, 2.0),
            (&rand, Distance::cosine(), 0.1),
            (&rand, Distance::lp(), 0.1),
        ];
        for (emb, distance, epsilon) in cases {
            let miner = MultiSimilarityMiner { epsilon, distance: distance.clone() };
            let batch = Batch::new(emb, &labels);
            let fused = miner.fused_self(&batch).expect("fused path applies");
            let Tuples::Pairs(plain) = miner.mine_with_tensors(&batch).unwrap() else { panic!("pairs expected") };
            let (f, p) = (fused.to_vecs(), plain.to_vecs());
            assert!(!f.0.is_empty() && !f.1.is_empty(), "{distance:?}: degenerate");
            assert_eq!(f, p, "{distance:?}");
        }
        // No negative pair at all: nothing is mined.
        let one_class = Tensor::zeros([100], (Kind::Int64, Device::Cpu));
        let miner = MultiSimilarityMiner { epsilon: 0.1, distance: Distance::cosine() };
        let none = miner.fused_self(&Batch::new(&rand, &one_class)).unwrap();
        assert_eq!((none.num_pos(), none.num_neg()), (0, 0));
    }
}
