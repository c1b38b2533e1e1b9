//! Batch-hard mining (Hermans et al., "In Defense of the Triplet Loss").

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::Result;
use crate::tuples::{Batch, Triplets, Tuples};

/// Parameters of [`BatchHardMiner`] (it has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchHardParams {}

impl MinerParams for BatchHardParams {
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        Ok(Box::new(BatchHardMiner { distance }))
    }
}

/// For every anchor with a positive and a negative: its farthest positive and closest negative.
///
/// # Shapes
/// embeddings [n, d] → at most n triplets.
pub struct BatchHardMiner {
    pub distance: Distance,
}

impl Miner for BatchHardMiner {
    fn name(&self) -> &'static str {
        "BatchHardMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        if let Some(t) = fused_self(&self.distance, batch) {
            return Ok(Tuples::Triplets(t));
        }
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        if let Some(t) = fused_cpu(&mat, batch, self.distance.is_inverted()) {
            return Ok(Tuples::Triplets(t));
        }
        self.mine_with_tensors(&mat, batch)
    }
}

/// A self batch with the Euclidean distance, cosine or dot product: distances and scan entirely
/// in Rust, single-threaded ([`crate::fused::EuclideanSelf`]), no libtorch call in between.
fn fused_self(distance: &Distance, batch: &Batch) -> Option<Triplets> {
    if !batch.is_self() {
        return None;
    }
    let e = match *distance {
        Distance::Lp { normalize_embeddings, p, power } if p == 2.0 && power == 1.0 => crate::fused::EuclideanSelf::new(batch.embeddings, normalize_embeddings)?,
        Distance::Cosine { p, power, .. } if p == 2.0 && power == 1.0 => crate::fused::EuclideanSelf::gram(batch.embeddings, true)?,
        Distance::DotProduct { normalize_embeddings, p, power } if p == 2.0 && power == 1.0 => crate::fused::EuclideanSelf::gram(batch.embeddings, normalize_embeddings)?,
        _ => return None,
    };
    let labels = crate::fused::cpu_labels(batch.labels)?;
    let rows = crate::fused::batch_hard_rows(&e.dist, e.n, e.n, &labels, &labels, distance.is_inverted(), true)?;
    Some(triplets_from_rows(&rows))
}

/// Three index tensors from `(anchor, positive, negative)` rows.
fn triplets_from_rows(rows: &[(i64, i64, i64)]) -> Triplets {
    let col = |f: fn(&(i64, i64, i64)) -> i64| Tensor::from_slice(&rows.iter().map(f).collect::<Vec<i64>>());
    Triplets { anchor: col(|t| t.0), positive: col(|t| t.1), negative: col(|t| t.2) }
}

/// The single-pass CPU scan ([`crate::fused::batch_hard_rows`]), when it applies.
fn fused_cpu(mat: &Tensor, batch: &Batch, inverted: bool) -> Option<Triplets> {
    let (v, n, m) = crate::fused::cpu_f32_matrix(mat)?;
    let labels = crate::fused::cpu_labels(batch.labels)?;
    let ref_labels = match batch.reference {
        Some((_, l)) => crate::fused::cpu_labels(l)?,
        None => labels.clone(),
    };
    let rows = crate::fused::batch_hard_rows(&v, n, m, &labels, &ref_labels, inverted, batch.is_self())?;
    Some(triplets_from_rows(&rows))
}

impl BatchHardMiner {
    /// The tensor formulation (any device or dtype).
    fn mine_with_tensors(&self, mat: &Tensor, batch: &Batch) -> Result<Tuples> {
        let (matches, diffs) = batch.label_masks();
        let worst = self.distance.worst_value();
        // Hardest positive: the farthest, so non-positives are set to the closest possible value.
        let pos = mat.masked_fill(&matches.logical_not(), -worst);
        let (_, hard_p) = self.distance.largest_along(&pos, 1);
        let neg = mat.masked_fill(&diffs.logical_not(), worst);
        let (_, hard_n) = self.distance.smallest_along(&neg, 1);
        let valid = matches.any_dim(1, false).logical_and(&diffs.any_dim(1, false));
        let anchors = valid.nonzero().flatten(0, -1);
        Ok(Tuples::Triplets(Triplets {
            positive: hard_p.index_select(0, &anchors).to_kind(Kind::Int64),
            negative: hard_n.index_select(0, &anchors).to_kind(Kind::Int64),
            anchor: anchors,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The all-Rust path (its own distances) equals the tensor formulation on libtorch's
    /// distances: exactly on integer data without normalisation (every distance exact, many
    /// ties), and on random normalised data.
    #[test]
    fn fused_self_equals_tensor_formulation() {
        tch::manual_seed(4);
        let ints = (Tensor::randn([128, 6], (Kind::Float, Device::Cpu)) * 2.0).round();
        let rand = Tensor::randn([128, 32], (Kind::Float, Device::Cpu));
        let labels = Tensor::arange(128, (Kind::Int64, Device::Cpu)).remainder(9);
        let cases = [
            (&ints, Distance::Lp { normalize_embeddings: false, p: 2.0, power: 1.0 }),
            (&ints, Distance::DotProduct { normalize_embeddings: false, p: 2.0, power: 1.0 }),
            (&rand, Distance::lp()),
            (&rand, Distance::cosine()),
        ];
        for (emb, distance) in cases {
            let batch = Batch::new(emb, &labels);
            let fused = fused_self(&distance, &batch).expect("fused path applies");
            let mat = distance.matrix(emb, None).unwrap();
            let miner = BatchHardMiner { distance: distance.clone() };
            let Tuples::Triplets(plain) = miner.mine_with_tensors(&mat, &batch).unwrap() else { panic!("triplets expected") };
            assert_eq!(fused.len(), 128);
            assert_eq!(fused.to_vec(), plain.to_vec(), "{distance:?}");
        }
        assert!(fused_self(&Distance::lp_squared(), &Batch::new(&rand, &labels)).is_none());
    }

    /// The fused scan and the tensor formulation agree, ties included.
    #[test]
    fn fused_scan_equals_tensor_formulation() {
        tch::manual_seed(3);
        // Rounded embeddings: many equal distances, so the first-index tie rule matters.
        let emb = (Tensor::randn([96, 4], (Kind::Float, Device::Cpu)) * 2.0).round();
        let labels = Tensor::arange(96, (Kind::Int64, Device::Cpu)).remainder(7);
        let ref_emb = (Tensor::randn([40, 4], (Kind::Float, Device::Cpu)) * 2.0).round();
        let ref_labels = Tensor::arange(40, (Kind::Int64, Device::Cpu)).remainder(5);
        for distance in [Distance::Lp { normalize_embeddings: false, p: 2.0, power: 1.0 }, Distance::lp(), Distance::cosine(), Distance::dot_product()] {
            let miner = BatchHardMiner { distance: distance.clone() };
            for batch in [Batch::new(&emb, &labels), Batch::with_reference(&emb, &labels, &ref_emb, &ref_labels)] {
                let mat = distance.matrix(batch.embeddings, batch.reference.map(|r| r.0)).unwrap();
                let fused = fused_cpu(&mat, &batch, distance.is_inverted()).expect("fused path applies");
                let Tuples::Triplets(plain) = miner.mine_with_tensors(&mat, &batch).unwrap() else { panic!("triplets expected") };
                assert!(fused.len() > 10);
                assert_eq!(fused.to_vec(), plain.to_vec(), "{distance:?}, reference: {}", batch.reference.is_some());
            }
        }
    }
}
