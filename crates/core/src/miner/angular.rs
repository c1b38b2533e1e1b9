//! Angular mining (Wang et al., "Deep Metric Learning with Angular Loss"): triplets whose angle
//! at the negative exceeds a threshold.
//!
//! As in the reference, the angle is `atan(‖a − p‖ / (2‖n − c‖))` with `c = (a + p) / 2`, computed
//! with `pairwise_distance` on the embeddings as given (not normalised). The reference builds all
//! triplets at once; here positive pairs are streamed in blocks of [block, m, d] temporaries.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::blocks::{collect_triplets, is_unit_euclidean};
use super::{Miner, MinerParams};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::tuples::{Batch, Tuples};

fn default_angle() -> f64 {
    20.0
}

/// Parameters of [`AngularMiner`]: the threshold angle in degrees (reference default 20).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AngularMinerParams {
    #[serde(default = "default_angle")]
    pub angle: f64,
}

impl Default for AngularMinerParams {
    fn default() -> Self {
        AngularMinerParams { angle: default_angle() }
    }
}

impl MinerParams for AngularMinerParams {
    fn validate(&self) -> Result<()> {
        if !(self.angle.is_finite() && (0.0..=90.0).contains(&self.angle)) {
            return Err(invalid("angular miner", format!("angle must be in [0, 90] degrees, got {}", self.angle)));
        }
        Ok(())
    }
    fn build(&self, distance: Distance) -> Result<Box<dyn Miner>> {
        if !is_unit_euclidean(&distance) {
            return Err(invalid("angular miner", "needs the lp distance with p = 2, power = 1 and normalize_embeddings = true"));
        }
        Ok(Box::new(AngularMiner { angle_rad: self.angle.to_radians() }))
    }
}

/// The triplets (a, p, n) with `atan(‖a − p‖ / (2‖n − (a + p)/2‖)) > angle`.
///
/// # Shapes
/// embeddings [n, d] → up to n·(M−1)·(n−M) triplets; temporaries [block, m, d] within the budget.
pub struct AngularMiner {
    /// The threshold in radians.
    pub angle_rad: f64,
}

impl Miner for AngularMiner {
    fn name(&self) -> &'static str {
        "AngularMiner"
    }

    fn mine_tuples(&self, batch: &Batch) -> Result<Tuples> {
        let emb = batch.embeddings;
        let refs = batch.ref_embeddings();
        let (matches, diffs) = batch.label_masks();
        let dim = emb.size()[1];
        let negatives = refs.unsqueeze(0);
        // Non-negatives are masked after the angle, which needs every column's distance anyway.
        let triplets = collect_triplets(&matches, batch.ref_len() * dim, batch.device(), |a, p| {
            let anchors = emb.index_select(0, a);
            let positives = refs.index_select(0, p);
            let centers = ((&anchors + &positives) / 2.0).unsqueeze(1);
            let ap = Tensor::pairwise_distance(&anchors, &positives, 2.0, 1e-6, false).unsqueeze(1);
            let nc = Tensor::pairwise_distance(&negatives, &centers, 2.0, 1e-6, false);
            let angles = (ap / (nc * 2.0)).atan();
            Ok(angles.gt(self.angle_rad).logical_and_(&diffs.index_select(0, a)))
        })?;
        Ok(Tuples::Triplets(triplets))
    }
}
