//! Contrastive (Siamese) loss: pull positive pairs within `pos_margin`, push negative pairs
//! beyond `neg_margin`.
//!
//! With all pairs of a float32 CPU batch and the Euclidean distance (the default), each term is
//! a [`StreamedTerm`] computed by one fused scan over the distance matrix
//! ([`crate::fused::contrastive_scan`]) instead of explicit pair lists: at B = 1024 the explicit
//! form gathers a million negative distances and scatters their gradients back, which costs
//! several times the distance computation itself. The gradient with respect to the embeddings
//! is computed in closed form from the kept pairs and attached with `value + x·g − (x·g)ᵈᵉᵗ`.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::checks::finite;
use super::{DistanceLoss, DistanceLossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::Result;
use crate::fused::{ContrastiveSide, SelfBatch, SelfKind, SelfMatrix, contrastive_scan};
use crate::reducer::{LossTerm, Reducer, Separable, StreamedTerm, TermIndices, TermLosses, zero_loss};
use crate::tuples::{Batch, Tuples};

/// Parameters of [`ContrastiveLoss`] (reference defaults: `pos_margin = 0`, `neg_margin = 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContrastiveParams {
    pub pos_margin: f64,
    pub neg_margin: f64,
}

impl Default for ContrastiveParams {
    fn default() -> Self {
        ContrastiveParams { pos_margin: 0.0, neg_margin: 1.0 }
    }
}

impl DistanceLossParams for ContrastiveParams {
    fn default_distance() -> Distance {
        Distance::lp()
    }
    fn validate(&self) -> Result<()> {
        finite("contrastive loss", &[("pos_margin", self.pos_margin), ("neg_margin", self.neg_margin)])
    }
}

/// Contrastive loss.
///
/// `L_pos(a,p) = [m(d_ap, pos_margin)]₊`, `L_neg(a,n) = [m(neg_margin, d_an)]₊` where
/// `m(x, y) = x − y` for a distance and `y − x` for a similarity; two terms (`pos_loss`,
/// `neg_loss`), each reduced by avg-non-zero by default, then summed.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type ContrastiveLoss = DistanceLoss<ContrastiveParams>;

impl MetricLoss for ContrastiveLoss {
    fn default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
    }

    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if tuples.is_none()
            && let Some(terms) = self.terms_fused(batch)
        {
            return Ok(terms);
        }
        self.terms_reference(batch, tuples)
    }
}

impl ContrastiveLoss {
    /// The two terms of all pairs of a self batch as fused streamed terms, when the batch and
    /// distance allow it (see the module docs); `None` otherwise.
    pub(crate) fn terms_fused(&self, batch: &Batch) -> Option<Vec<LossTerm>> {
        let input = SelfBatch::for_distance(&self.distance, batch, &[SelfKind::Euclidean])?;
        let (np, nn) = input.pair_counts();
        if np <= 1 && nn <= 1 {
            return Some(vec![LossTerm::zero("pos_loss"), LossTerm::zero("neg_loss")]);
        }
        let e = Arc::new(input.upper_matrix()?);
        let labels = Arc::new(input.labels);
        let scans = Arc::new(Mutex::new(None));
        let term = |name: &'static str, positive: bool, count: i64| {
            if count == 0 {
                return LossTerm::zero(name);
            }
            let streamed = FusedContrastiveTerm {
                e: e.clone(),
                labels: labels.clone(),
                embeddings: batch.embeddings.shallow_clone(),
                label_tensor: batch.labels.shallow_clone(),
                positive,
                margins: [self.params.pos_margin, self.params.neg_margin],
                scans: scans.clone(),
                loss: ContrastiveLoss { params: self.params.clone(), distance: self.distance.clone() },
            };
            LossTerm { name, losses: TermLosses::Streamed(Box::new(streamed)), indices: TermIndices::AlreadyReduced, divisor: None }
        };
        Some(vec![term("pos_loss", true, np), term("neg_loss", false, nn)])
    }

    /// The terms as explicit pair values (any device, distance, or mined tuples).
    pub(crate) fn terms_reference(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let pairs = batch.to_pairs(tuples);
        let (np, nn) = (pairs.num_pos(), pairs.num_neg());
        if np <= 1 && nn <= 1 {
            return Ok(vec![LossTerm::zero("pos_loss"), LossTerm::zero("neg_loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, batch.reference.map(|r| r.0))?;
        let gather = |a: &Tensor, o: &Tensor| mat.index(&[Some(a), Some(o)]);
        let pos = if np > 0 {
            let v = self.distance.margin_to(&gather(&pairs.pos_anchor, &pairs.pos_other), self.params.pos_margin).relu();
            LossTerm::new("pos_loss", v, TermIndices::PosPair(pairs.pos_anchor.shallow_clone(), pairs.pos_other.shallow_clone()))
        } else {
            LossTerm::zero("pos_loss")
        };
        let neg = if nn > 0 {
            let v = self.distance.margin_from(self.params.neg_margin, &gather(&pairs.neg_anchor, &pairs.neg_other)).relu();
            LossTerm::new("neg_loss", v, TermIndices::NegPair(pairs.neg_anchor.shallow_clone(), pairs.neg_other.shallow_clone()))
        } else {
            LossTerm::zero("neg_loss")
        };
        Ok(vec![pos, neg])
    }
}

/// One contrastive term (positives or negatives) of a self batch, reduced by a fused scan.
struct FusedContrastiveTerm {
    e: Arc<SelfMatrix>,
    labels: Arc<Vec<i64>>,
    /// The embeddings the gradient is attached to.
    embeddings: Tensor,
    label_tensor: Tensor,
    positive: bool,
    /// `[pos_margin, neg_margin]`.
    margins: [f64; 2],
    /// One scan gives both terms: the first term reduced keeps the other's result here, keyed
    /// by the reducer's `(low, high)`.
    scans: Arc<Mutex<Option<SharedScan>>>,
    loss: ContrastiveLoss,
}

/// Both terms' scans for one `(low, high)`, each taken by its term.
type SharedScan = ((Option<f64>, Option<f64>), [Option<ContrastiveSide>; 2]);

impl StreamedTerm for FusedContrastiveTerm {
    fn reduce(&self, how: Separable) -> Result<Tensor> {
        let side = usize::from(!self.positive);
        let key = (how.low, how.high);
        let mine = {
            let mut cache = self.scans.lock().unwrap_or_else(|p| p.into_inner());
            match cache.as_mut() {
                Some((k, sides)) if *k == key && sides[side].is_some() => sides[side].take(),
                _ => None,
            }
            .unwrap_or_else(|| {
                let [pos, neg] = contrastive_scan(&self.e, &self.labels, self.margins, how.low, how.high);
                let (mine, other) = if self.positive { (pos, neg) } else { (neg, pos) };
                let mut sides = [None, None];
                sides[1 - side] = Some(other);
                *cache = Some((key, sides));
                mine
            })
        };
        let (sum, kept, active) = mine;
        let denominator = how.denominator.divisor(kept as f64);
        if denominator == 0.0 {
            return Ok(zero_loss(&self.embeddings));
        }
        Ok(self.e.attach_pair_weights(&self.embeddings, sum, denominator, active))
    }

    fn materialize(&self) -> Result<(Tensor, TermIndices)> {
        let batch = Batch::new(&self.embeddings, &self.label_tensor);
        let mut terms = self.loss.terms_reference(&batch, None)?;
        // terms_reference returns [pos_loss, neg_loss].
        let term = terms.swap_remove(if self.positive { 0 } else { 1 });
        match term.losses {
            TermLosses::Values(v) => Ok((v, term.indices)),
            _ => Err(crate::error::CoreError::Unsupported("contrastive term without values".into())),
        }
    }
}
