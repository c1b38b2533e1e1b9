//! Batch-hard mining (Hermans et al., "In Defense of the Triplet Loss").

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::Result;
use crate::fused::{MatrixScan, SelfBatch, SelfKind};
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
        if let Some(t) = self.mine_fused(batch) {
            return Ok(Tuples::Triplets(t));
        }
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        if let Some(t) = self.mine_fused_on(&mat, batch) {
            return Ok(Tuples::Triplets(t));
        }
        self.mine_reference(&mat, batch)
    }
}

/// Three index tensors from `(anchor, positive, negative)` rows.
fn triplets_from_rows(rows: &[(i64, i64, i64)]) -> Triplets {
    let col = |f: fn(&(i64, i64, i64)) -> i64| Tensor::from_slice(&rows.iter().map(f).collect::<Vec<i64>>());
    Triplets { anchor: col(|t| t.0), positive: col(|t| t.1), negative: col(|t| t.2) }
}

impl BatchHardMiner {
    /// A float32 CPU self batch with the Euclidean distance, cosine or dot product: distances
    /// and scan entirely in Rust, single-threaded ([`crate::fused::batch_hard_rows`]), no
    /// libtorch call in between; `None` when that does not apply.
    pub(crate) fn mine_fused(&self, batch: &Batch) -> Option<Triplets> {
        let input = SelfBatch::for_distance(&self.distance, batch, SelfKind::ALL)?;
        let e = input.matrix()?;
        let rows = crate::fused::batch_hard_rows(&e.values, e.n, e.n, &input.labels, &input.labels, self.distance.is_inverted(), true)?;
        Some(triplets_from_rows(&rows))
    }

    /// The same scan over a matrix libtorch computed (any distance, a reference set allowed),
    /// when it is a float32 CPU matrix; `None` otherwise.
    pub(crate) fn mine_fused_on(&self, mat: &Tensor, batch: &Batch) -> Option<Triplets> {
        let s = MatrixScan::for_matrix(mat, batch)?;
        let rows = crate::fused::batch_hard_rows(&s.values, s.n, s.m, &s.labels, &s.ref_labels, self.distance.is_inverted(), batch.is_self())?;
        Some(triplets_from_rows(&rows))
    }

    /// The tensor formulation (any device or dtype).
    pub(crate) fn mine_reference(&self, mat: &Tensor, batch: &Batch) -> Result<Tuples> {
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
