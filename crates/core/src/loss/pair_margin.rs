//! Pair losses with margins and soft maxima over each anchor's pairs: multi-similarity, circle,
//! lifted structure (original and generalised), tuplet margin, intra-pair variance and
//! signal-to-noise-ratio contrastive.
//!
//! The reference computes lifted structure and tuplet margin on a `[positive pairs × negative
//! pairs]` matrix; both reduce, per positive pair, a log-sum-exp over the negatives of the same
//! anchor (and, for lifted structure, of the positive too), so here those log-sum-exps are taken
//! once per row of the `[n × m]` matrix and combined per pair — O(B²) time and memory.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::checks::{cosine_only, finite, positive};
use super::pair_common::{PairMasks, PosPairsNegCounts, arange_like, masked_lse, weighted_row_lse};
use super::{DistanceLoss, DistanceLossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::fused::{SelfBatch, SelfKind, SelfMatrix};
use crate::reducer::{LossTerm, Reducer, Separable, StreamedTerm, TermIndices, TermLosses, zero_loss};
use crate::tuples::{Batch, Tuples};

fn ref_of<'a>(batch: &Batch<'a>) -> Option<&'a Tensor> {
    batch.reference.map(|r| r.0)
}

fn elements(name: &'static str, losses: Tensor) -> LossTerm {
    let n = losses.size()[0];
    let rows = arange_like(n, &losses);
    LossTerm::new(name, losses, TermIndices::Element(rows))
}

// ---------------------------------------------------------------------------------------------
// Multi-similarity.

/// Parameters of [`MultiSimilarityLoss`] (reference defaults: alpha 2, beta 50, base 0.5, cosine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultiSimilarityParams {
    pub alpha: f64,
    pub beta: f64,
    pub base: f64,
}

impl Default for MultiSimilarityParams {
    fn default() -> Self {
        MultiSimilarityParams { alpha: 2.0, beta: 50.0, base: 0.5 }
    }
}

impl DistanceLossParams for MultiSimilarityParams {
    fn default_distance() -> Distance {
        Distance::cosine()
    }
    fn validate(&self) -> Result<()> {
        positive("multi_similarity loss", "alpha", self.alpha)?;
        positive("multi_similarity loss", "beta", self.beta)?;
        finite("multi_similarity loss", &[("base", self.base)])
    }
}

/// Multi-similarity loss.
///
/// With `m(x, y)` the distance's margin (`y − x` for a similarity):
/// `L_i = (1/α) log(1 + Σ_{p} e^{α m(s_ip, base)}) + (1/β) log(1 + Σ_{n} e^{β m(base, s_in)})`.
/// One value per element, mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; O(n·m) memory.
pub type MultiSimilarityLoss = DistanceLoss<MultiSimilarityParams>;

impl MetricLoss for MultiSimilarityLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if tuples.is_none()
            && let Some(terms) = self.terms_fused(batch)
        {
            return Ok(terms);
        }
        self.terms_reference(batch, tuples)
    }
}

impl MultiSimilarityLoss {
    /// The loss as one fused streamed term: all pairs of a float32 CPU self batch with the
    /// cosine similarity (or a dot product); `None` when that does not apply.
    ///
    /// Why: the tensor form makes ~20 passes over the B×B matrix (masks, fills, a concatenated
    /// zero column, two log-sum-exps, their backward); the fused form is one GEMM, one pass with
    /// one `exp` per pair, and one GEMM for the gradient.
    pub(crate) fn terms_fused(&self, batch: &Batch) -> Option<Vec<LossTerm>> {
        let (e, labels) = match fused_similarities(&self.distance, batch)? {
            Some(s) => s,
            None => return Some(vec![LossTerm::zero("loss")]),
        };
        let p = &self.params;
        let rows = crate::fused::multi_similarity_rows(&e, &labels, p.alpha, p.beta, p.base);
        let streamed = FusedRowTerm {
            e,
            rows,
            embeddings: batch.embeddings.shallow_clone(),
            labels: batch.labels.shallow_clone(),
            reference: {
                let loss = MultiSimilarityLoss { params: self.params.clone(), distance: self.distance.clone() };
                Box::new(move |b: &Batch| loss.terms_reference(b, None))
            },
        };
        Some(vec![LossTerm { name: "loss", losses: TermLosses::Streamed(Box::new(streamed)), indices: TermIndices::AlreadyReduced, divisor: None }])
    }

    /// The tensor formulation (any device, distance, or mined tuples).
    pub(crate) fn terms_reference(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let masks = PairMasks::new(batch, tuples);
        if masks.trivial() {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, ref_of(batch))?;
        let p = &self.params;
        let pos_exp = self.distance.margin_to(&mat, p.base);
        let neg_exp = self.distance.margin_from(p.base, &mat);
        let pos = masked_lse(&(pos_exp * p.alpha), &masks.pos, true) / p.alpha;
        let neg = masked_lse(&(neg_exp * p.beta), &masks.neg, true) / p.beta;
        Ok(vec![elements("loss", pos + neg)])
    }
}

/// Per-row values of a self batch with their `∂v_i/∂s_ij`, reduced by the reducer's separable
/// form (filter the rows, sum, divide) with the gradient attached in closed form.
struct FusedRowTerm {
    e: SelfMatrix,
    rows: crate::fused::RowValues,
    embeddings: Tensor,
    labels: Tensor,
    /// The loss's tensor formulation, for reducers that need every value with its index.
    reference: Box<dyn Fn(&Batch) -> Result<Vec<LossTerm>> + Send>,
}

/// The inner products and labels of a float32 CPU self batch for the fused similarity losses
/// (cosine, or a dot product, with p = 2 and power 1): `None` when the fused path does not apply,
/// `Some(None)` when the batch has no pair to score (the loss is a zero term).
fn fused_similarities(distance: &Distance, batch: &Batch) -> Option<Option<(SelfMatrix, Vec<i64>)>> {
    let input = SelfBatch::for_distance(distance, batch, &[SelfKind::Dot])?;
    let (np, nn) = input.pair_counts();
    if np <= 1 && nn <= 1 {
        return Some(None);
    }
    Some(Some((input.matrix()?, input.labels)))
}

impl StreamedTerm for FusedRowTerm {
    fn reduce(&self, how: Separable) -> Result<Tensor> {
        let n = self.e.n;
        let keep: Vec<bool> = self.rows.values.iter().map(|&v| how.low.is_none_or(|l| v as f64 > l) && how.high.is_none_or(|h| (v as f64) < h)).collect();
        let kept = keep.iter().filter(|&&k| k).count();
        let denominator = how.denominator.divisor(kept as f64);
        if denominator == 0.0 {
            return Ok(zero_loss(&self.embeddings));
        }
        let sum: f64 = self.rows.values.iter().zip(&keep).filter(|(_, k)| **k).map(|(&v, _)| v as f64).sum();
        let inv = (1.0 / denominator) as f32;
        let weights: Vec<f32> = keep.iter().map(|&k| if k { inv } else { 0.0 }).collect();
        let g = self.e.grad_from_gram_weights(&self.rows.dv_ds, &weights);
        let g = Tensor::from_slice(&g).view([n as i64, self.e.d as i64]);
        let attach = self.embeddings.reshape([-1]).dot(&g.reshape([-1]));
        Ok(Tensor::from((sum / denominator) as f32) + &attach - attach.detach())
    }

    fn materialize(&self) -> Result<(Tensor, TermIndices)> {
        let batch = Batch::new(&self.embeddings, &self.labels);
        let mut terms = (self.reference)(&batch)?;
        let term = terms.swap_remove(0);
        match term.losses {
            TermLosses::Values(v) => Ok((v, term.indices)),
            _ => Err(crate::error::CoreError::Unsupported("fused row term without values".into())),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Circle.

/// Parameters of [`CircleLoss`] (reference defaults: m 0.4, gamma 80, cosine similarity only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircleParams {
    pub m: f64,
    pub gamma: f64,
}

impl Default for CircleParams {
    fn default() -> Self {
        CircleParams { m: 0.4, gamma: 80.0 }
    }
}

impl DistanceLossParams for CircleParams {
    fn default_distance() -> Distance {
        Distance::cosine()
    }
    fn validate(&self) -> Result<()> {
        finite("circle loss", &[("m", self.m)])?;
        positive("circle loss", "gamma", self.gamma)
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        cosine_only("circle loss", distance)
    }
}

/// Circle loss.
///
/// `l_p = −γ [1 + m − s_p]₊ (s_p − (1 − m))`, `l_n = γ [s_n + m]₊ (s_n − m)` (the weights
/// `[·]₊` detached); `L_i = softplus(LSE_p l_p + LSE_n l_n)` for rows with positives and
/// negatives, else 0. One value per element, avg-non-zero reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; O(n·m) memory.
pub type CircleLoss = DistanceLoss<CircleParams>;

impl MetricLoss for CircleLoss {
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

impl CircleLoss {
    /// As [`MultiSimilarityLoss`]'s fused terms: all pairs of a float32 CPU self batch with the
    /// cosine similarity (or a dot product), one pass with one `exp` per pair
    /// ([`crate::fused::circle_rows`]); `None` when that does not apply.
    pub(crate) fn terms_fused(&self, batch: &Batch) -> Option<Vec<LossTerm>> {
        let (e, labels) = match fused_similarities(&self.distance, batch)? {
            Some(s) => s,
            None => return Some(vec![LossTerm::zero("loss")]),
        };
        let rows = crate::fused::circle_rows(&e, &labels, self.params.m, self.params.gamma);
        let loss = CircleLoss { params: self.params.clone(), distance: self.distance.clone() };
        let streamed = FusedRowTerm {
            e,
            rows,
            embeddings: batch.embeddings.shallow_clone(),
            labels: batch.labels.shallow_clone(),
            reference: Box::new(move |b: &Batch| loss.terms_reference(b, None)),
        };
        Some(vec![LossTerm { name: "loss", losses: TermLosses::Streamed(Box::new(streamed)), indices: TermIndices::AlreadyReduced, divisor: None }])
    }

    /// The tensor formulation (any device, distance, or mined tuples).
    pub(crate) fn terms_reference(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let masks = PairMasks::new(batch, tuples);
        if masks.trivial() {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, ref_of(batch))?;
        let (m, gamma) = (self.params.m, self.params.gamma);
        let detached = mat.detach();
        let logit_p = ((-&detached + (1.0 + m)).relu() * -gamma) * (&mat - (1.0 - m));
        let logit_n = ((&detached + m).relu() * gamma) * (&mat - m);
        let zero = mat.zeros_like();
        let logit_p = logit_p.where_self(&masks.pos, &zero);
        let logit_n = logit_n.where_self(&masks.neg, &zero);
        let lse = masked_lse(&logit_p, &masks.pos, false) + masked_lse(&logit_n, &masks.neg, false);
        let losses = lse.softplus();
        let valid = masks.pos.any_dim(1, false).logical_and(&masks.neg.any_dim(1, false));
        let losses = losses * valid.to_kind(mat.kind());
        Ok(vec![elements("loss", losses)])
    }
}

// ---------------------------------------------------------------------------------------------
// Lifted structure.

/// Parameters of [`LiftedStructureLoss`] and [`GeneralizedLiftedStructureLoss`] (reference
/// defaults: `neg_margin = 1`, `pos_margin = 0`, Euclidean distance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiftedStructureParams {
    pub neg_margin: f64,
    pub pos_margin: f64,
}

impl Default for LiftedStructureParams {
    fn default() -> Self {
        LiftedStructureParams { neg_margin: 1.0, pos_margin: 0.0 }
    }
}

/// Parameters of [`GeneralizedLiftedStructureLoss`] (same as the original's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneralizedLiftedStructureParams {
    pub neg_margin: f64,
    pub pos_margin: f64,
}

impl Default for GeneralizedLiftedStructureParams {
    fn default() -> Self {
        GeneralizedLiftedStructureParams { neg_margin: 1.0, pos_margin: 0.0 }
    }
}

impl DistanceLossParams for LiftedStructureParams {
    fn default_distance() -> Distance {
        Distance::lp()
    }
    fn validate(&self) -> Result<()> {
        finite("lifted_structure loss", &[("neg_margin", self.neg_margin), ("pos_margin", self.pos_margin)])
    }
}

impl DistanceLossParams for GeneralizedLiftedStructureParams {
    fn default_distance() -> Distance {
        Distance::lp()
    }
    fn validate(&self) -> Result<()> {
        finite("generalized_lifted_structure loss", &[("neg_margin", self.neg_margin), ("pos_margin", self.pos_margin)])
    }
}

/// Lifted structure loss.
///
/// For a positive pair (a, p): `J = LSE_{(i,n) neg, i ∈ {a, p}} m(neg_margin, d_in) + m(d_ap, pos_margin)`,
/// `L(a,p) = [J]₊² / 2`. Each row's negative log-sum-exp is computed once and the two rows of a
/// pair are combined with `logaddexp`. One value per positive pair, mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; O(n·m) memory.
pub type LiftedStructureLoss = DistanceLoss<LiftedStructureParams>;

impl MetricLoss for LiftedStructureLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let pp = PosPairsNegCounts::new(batch, tuples, batch.embeddings.kind());
        if pp.trivial() || pp.num_pos == 0 || pp.num_neg == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, ref_of(batch))?;
        let remaining_neg = self.distance.margin_from(self.params.neg_margin, &mat);
        let row_lse = weighted_row_lse(&remaining_neg, &pp.neg_count); // [n], −∞ when empty
        // The reference matches a negative pair's anchor against both elements of the positive
        // pair, so a positive that is not a batch row (a separate reference set) matches nothing.
        let (n, m) = (batch.len(), batch.ref_len());
        let padded = if m > n {
            Tensor::cat(&[row_lse.shallow_clone(), Tensor::full([m - n], f64::NEG_INFINITY, (row_lse.kind(), row_lse.device()))], 0)
        } else {
            row_lse.shallow_clone()
        };
        let (a, p) = (&pp.pos_anchor, &pp.pos_other);
        let la = padded.index_select(0, a);
        let lp = padded.index_select(0, p).masked_fill(&a.eq_tensor(p), f64::NEG_INFINITY);
        let both_empty = la.isinf().logical_and(&lp.isinf());
        let la = la.masked_fill(&both_empty, 0.0);
        let lp = lp.masked_fill(&both_empty, 0.0);
        let neg_lse = la.logaddexp(&lp).masked_fill(&both_empty, 0.0);
        let remaining_pos = self.distance.margin_to(&mat.index(&[Some(a), Some(p)]), self.params.pos_margin);
        let losses = (neg_lse + remaining_pos).relu().square() / 2.0;
        Ok(vec![LossTerm::new("loss", losses, TermIndices::PosPair(pp.pos_anchor, pp.pos_other))])
    }
}

/// Generalised lifted structure loss ("In defense of the triplet loss", eq. 4).
///
/// `L_i = [LSE_p m(d_ip, pos_margin) + LSE_n m(neg_margin, d_in)]₊`; one value per element,
/// mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type GeneralizedLiftedStructureLoss = DistanceLoss<GeneralizedLiftedStructureParams>;

impl MetricLoss for GeneralizedLiftedStructureLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let masks = PairMasks::new(batch, tuples);
        if masks.trivial() {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, ref_of(batch))?;
        let pos = masked_lse(&self.distance.margin_to(&mat, self.params.pos_margin), &masks.pos, false);
        let neg = masked_lse(&self.distance.margin_from(self.params.neg_margin, &mat), &masks.neg, false);
        Ok(vec![elements("loss", (pos + neg).relu())])
    }
}

// ---------------------------------------------------------------------------------------------
// Tuplet margin.

/// Parameters of [`TupletMarginLoss`] (reference defaults: margin 5.73°, scale 64, cosine only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TupletMarginParams {
    /// Angular margin in degrees.
    pub margin: f64,
    pub scale: f64,
}

impl Default for TupletMarginParams {
    fn default() -> Self {
        TupletMarginParams { margin: 5.73, scale: 64.0 }
    }
}

impl DistanceLossParams for TupletMarginParams {
    fn default_distance() -> Distance {
        Distance::cosine()
    }
    fn validate(&self) -> Result<()> {
        finite("tuplet_margin loss", &[("margin", self.margin)])?;
        positive("tuplet_margin loss", "scale", self.scale)
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        cosine_only("tuplet_margin loss", distance)
    }
}

/// Tuplet margin loss.
///
/// `L(a,p) = log(1 + Σ_n e^{s (cos θ_an − cos(θ_ap − margin))}) = softplus(LSE_n(s cos θ_an) − s cos(θ_ap − margin))`,
/// the negatives' log-sum-exp taken once per anchor. One value per positive pair, mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; O(n·m) memory.
pub type TupletMarginLoss = DistanceLoss<TupletMarginParams>;

impl MetricLoss for TupletMarginLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let pp = PosPairsNegCounts::new(batch, tuples, batch.embeddings.kind());
        if pp.trivial() || pp.num_pos == 0 || pp.num_neg == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, ref_of(batch))?;
        let s = self.params.scale;
        let pos = mat.index(&[Some(&pp.pos_anchor), Some(&pp.pos_other)]);
        let pos = (pos.acos() - self.params.margin.to_radians()).cos();
        let row_lse = weighted_row_lse(&(&mat * s), &pp.neg_count);
        let losses = (row_lse.index_select(0, &pp.pos_anchor) - pos * s).softplus();
        Ok(vec![LossTerm::new("loss", losses, TermIndices::PosPair(pp.pos_anchor, pp.pos_other))])
    }
}

// ---------------------------------------------------------------------------------------------
// Intra-pair variance.

/// Parameters of [`IntraPairVarianceLoss`] (reference defaults: `pos_eps = neg_eps = 0.01`, cosine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntraPairVarianceParams {
    pub pos_eps: f64,
    pub neg_eps: f64,
}

impl Default for IntraPairVarianceParams {
    fn default() -> Self {
        IntraPairVarianceParams { pos_eps: 0.01, neg_eps: 0.01 }
    }
}

impl DistanceLossParams for IntraPairVarianceParams {
    fn default_distance() -> Distance {
        Distance::cosine()
    }
    fn validate(&self) -> Result<()> {
        finite("intra_pair_variance loss", &[("pos_eps", self.pos_eps), ("neg_eps", self.neg_eps)])
    }
}

/// Intra-pair variance loss.
///
/// With `μ₊`, `μ₋` the mean positive and negative pair values: for a similarity,
/// `L_pos = [(1 − ε₊) μ₊ − s_p]₊²`, `L_neg = [s_n − (1 + ε₋) μ₋]₊²` (the roles swap for a
/// distance). Terms `pos_loss` (per positive pair) and `neg_loss` (per negative pair), each
/// mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type IntraPairVarianceLoss = DistanceLoss<IntraPairVarianceParams>;

impl IntraPairVarianceLoss {
    fn variance_with_eps(pairs: &Tensor, eps: f64, incentivize_increase: bool) -> Tensor {
        let mean = pairs.mean(pairs.kind());
        let v = if incentivize_increase { mean * (1.0 - eps) - pairs } else { pairs - mean * (1.0 + eps) };
        v.relu().square()
    }
}

impl MetricLoss for IntraPairVarianceLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let pairs = batch.to_pairs(tuples);
        let (np, nn) = (pairs.num_pos(), pairs.num_neg());
        if np <= 1 && nn <= 1 {
            return Ok(vec![LossTerm::zero("pos_loss"), LossTerm::zero("neg_loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, ref_of(batch))?;
        let inverted = self.distance.is_inverted();
        let pos = if np > 0 {
            let v = mat.index(&[Some(&pairs.pos_anchor), Some(&pairs.pos_other)]);
            LossTerm::new(
                "pos_loss",
                Self::variance_with_eps(&v, self.params.pos_eps, inverted),
                TermIndices::PosPair(pairs.pos_anchor.shallow_clone(), pairs.pos_other.shallow_clone()),
            )
        } else {
            LossTerm::zero("pos_loss")
        };
        let neg = if nn > 0 {
            let v = mat.index(&[Some(&pairs.neg_anchor), Some(&pairs.neg_other)]);
            LossTerm::new(
                "neg_loss",
                Self::variance_with_eps(&v, self.params.neg_eps, !inverted),
                TermIndices::NegPair(pairs.neg_anchor.shallow_clone(), pairs.neg_other.shallow_clone()),
            )
        } else {
            LossTerm::zero("neg_loss")
        };
        Ok(vec![pos, neg])
    }
}

// ---------------------------------------------------------------------------------------------
// Signal-to-noise-ratio contrastive.

/// Parameters of [`SignalToNoiseRatioContrastiveLoss`] (reference defaults: `pos_margin = 0`,
/// `neg_margin = 1`, SNR distance only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnrContrastiveParams {
    pub pos_margin: f64,
    pub neg_margin: f64,
}

impl Default for SnrContrastiveParams {
    fn default() -> Self {
        SnrContrastiveParams { pos_margin: 0.0, neg_margin: 1.0 }
    }
}

impl DistanceLossParams for SnrContrastiveParams {
    fn default_distance() -> Distance {
        Distance::snr()
    }
    fn validate(&self) -> Result<()> {
        finite("signal_to_noise_ratio_contrastive loss", &[("pos_margin", self.pos_margin), ("neg_margin", self.neg_margin)])
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        if !matches!(distance, Distance::Snr { .. }) {
            return Err(invalid("signal_to_noise_ratio_contrastive loss", "only the snr distance is supported"));
        }
        Ok(())
    }
}

/// Signal-to-noise-ratio contrastive loss.
///
/// `L_pos = [d_ap − pos_margin]₊`, `L_neg = [neg_margin − d_an]₊` with the SNR distance
/// `Var(x_a − x_j) / Var(x_a)`; terms `pos_loss` and `neg_loss`, each avg-non-zero reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type SignalToNoiseRatioContrastiveLoss = DistanceLoss<SnrContrastiveParams>;

impl MetricLoss for SignalToNoiseRatioContrastiveLoss {
    fn default_reducer(&self) -> Reducer {
        Reducer::AvgNonZero
    }

    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let pairs = batch.to_pairs(tuples);
        let (np, nn) = (pairs.num_pos(), pairs.num_neg());
        if np <= 1 && nn <= 1 {
            return Ok(vec![LossTerm::zero("pos_loss"), LossTerm::zero("neg_loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, ref_of(batch))?;
        let pos = if np > 0 {
            let v = (mat.index(&[Some(&pairs.pos_anchor), Some(&pairs.pos_other)]) - self.params.pos_margin).relu();
            LossTerm::new("pos_loss", v, TermIndices::PosPair(pairs.pos_anchor.shallow_clone(), pairs.pos_other.shallow_clone()))
        } else {
            LossTerm::zero("pos_loss")
        };
        let neg = if nn > 0 {
            let v = (-mat.index(&[Some(&pairs.neg_anchor), Some(&pairs.neg_other)]) + self.params.neg_margin).relu();
            LossTerm::new("neg_loss", v, TermIndices::NegPair(pairs.neg_anchor.shallow_clone(), pairs.neg_other.shallow_clone()))
        } else {
            LossTerm::zero("neg_loss")
        };
        Ok(vec![pos, neg])
    }
}
