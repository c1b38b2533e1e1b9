//! Ranking-based losses: FastAP, Smooth-AP, PNP (rank of positives among negatives),
//! histogram loss and ranked-list loss.
//!
//! They optimise a smoothed retrieval metric of each anchor's ranked list rather than
//! individual pairs, so their terms are per anchor (or already reduced).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::checks::cosine_only;
use super::pair_softmax::miner_weights;
use super::{BuildContext, DistanceLoss, DistanceLossParams, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::{LossTerm, TermIndices};
use crate::tuples::{Batch, Tuples};

fn no_reference(batch: &Batch, loss: &str) -> Result<()> {
    if batch.is_self() { Ok(()) } else { Err(CoreError::Unsupported(format!("{loss} does not support a separate reference set"))) }
}

/// Parameters of [`FastAPLoss`] (reference default: 10 bins; squared normalised Euclidean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FastAPParams {
    pub num_bins: u32,
}

impl Default for FastAPParams {
    fn default() -> Self {
        FastAPParams { num_bins: 10 }
    }
}

impl DistanceLossParams for FastAPParams {
    fn default_distance() -> Distance {
        Distance::lp_squared()
    }
    fn validate(&self) -> Result<()> {
        if self.num_bins == 0 {
            return Err(invalid("fast_ap loss", "num_bins must be at least 1"));
        }
        Ok(())
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        match distance {
            Distance::Lp { normalize_embeddings: true, p: 2.0, .. } => {}
            _ => return Err(invalid("fast_ap loss", "only the normalised Euclidean distance (lp, p = 2) is supported")),
        }
        Ok(())
    }
}

/// FastAP: average precision from soft distance histograms.
///
/// Distances are binned into `num_bins + 1` triangular kernels on `[0, 2^power]`; with `h⁺`,
/// `h` the positive and total histograms of anchor i and `H⁺`, `H` their cumulative sums:
/// `AP_i = Σ_k h⁺_k H⁺_k / H_k / N⁺_i`, `L_i = (1 − AP_i) · w_i` (miner weights) for anchors with
/// positives. Mean-reduced.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar; O(num_bins · n²) memory.
pub type FastAPLoss = DistanceLoss<FastAPParams>;

impl MetricLoss for FastAPLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        no_reference(batch, "fast_ap loss")?;
        let kind = batch.embeddings.kind();
        let n = batch.len();
        let weights = miner_weights(tuples, n, kind, batch.device());
        let (matches, diffs) = batch.label_masks();
        let i_pos = matches.to_kind(kind);
        let i_neg = diffs.to_kind(kind);
        let n_pos = i_pos.sum_dim_intlist(1, false, kind);
        let safe_n = n_pos.gt(0.0);
        if safe_n.any().int64_value(&[]) == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let mat = self.distance.matrix(batch.embeddings, None)?;
        let power = match self.distance {
            Distance::Lp { power, .. } => power,
            _ => 1.0,
        };
        let bins = self.params.num_bins as i64;
        let hist_max = 2f64.powf(power);
        let delta = hist_max / bins as f64;
        let mids = Tensor::linspace(0.0, hist_max, bins + 1, (kind, mat.device()));
        let mut pos_cols = Vec::with_capacity(bins as usize + 1);
        let mut neg_cols = Vec::with_capacity(bins as usize + 1);
        for k in 0..=bins {
            let pulse = (-((&mat - mids.get(k)).abs() / delta) + 1.0).relu();
            pos_cols.push((&pulse * &i_pos).sum_dim_intlist(1, false, kind));
            neg_cols.push((&pulse * &i_neg).sum_dim_intlist(1, false, kind));
        }
        let pos_hist = Tensor::stack(&pos_cols, 1);
        let neg_hist = Tensor::stack(&neg_cols, 1);
        let total_pos = pos_hist.cumsum(1, kind);
        let total = (&pos_hist + &neg_hist).cumsum(1, kind);
        let product = &pos_hist * &total_pos;
        let safe_h = product.gt(0.0).logical_and(&total.gt(0.0));
        if safe_h.any().int64_value(&[]) == 0 {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let ratio = (&product / total.where_self(&safe_h, &total.ones_like())).where_self(&safe_h, &product.zeros_like());
        let ap = ratio.sum_dim_intlist(1, false, kind);
        let ap = ap.masked_select(&safe_n) / n_pos.masked_select(&safe_n);
        let losses = (-ap + 1.0) * weights.masked_select(&safe_n);
        let rows = Tensor::arange(n, (Kind::Int64, mat.device())).masked_select(&safe_n);
        Ok(vec![LossTerm::new("loss", losses, TermIndices::Element(rows))])
    }
}

// ---------------------------------------------------------------------------------------------
// Histogram loss.

/// Parameters of [`HistogramLoss`] (reference: `n_bins = 100` when neither is given,
/// `delta = 2 / n_bins`; cosine similarity).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistogramParams {
    pub n_bins: Option<u32>,
    pub delta: Option<f64>,
}

impl HistogramParams {
    fn resolved_delta(&self) -> f64 {
        match (self.delta, self.n_bins) {
            (Some(d), _) => d,
            (None, Some(n)) => 2.0 / n as f64,
            (None, None) => 2.0 / 100.0,
        }
    }
}

impl LossParams for HistogramParams {
    fn validate(&self) -> Result<()> {
        if let (Some(d), Some(n)) = (self.delta, self.n_bins)
            && (d - 2.0 / n as f64).abs() > 1e-12
        {
            return Err(invalid("histogram loss", format!("delta and n_bins must satisfy delta = 2 / n_bins, got delta = {d}, n_bins = {n}")));
        }
        if self.n_bins == Some(0) {
            return Err(invalid("histogram loss", "n_bins must be at least 1"));
        }
        let d = self.resolved_delta();
        if !(d.is_finite() && d > 0.0 && d <= 2.0) || ((2.0 / d).round() - 2.0 / d).abs() > 1e-9 {
            return Err(invalid("histogram loss", format!("delta must divide 2 (delta = 2 / n_bins), got {d}")));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, _ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        Ok(Box::new(HistogramLoss { delta: self.resolved_delta(), distance: distance.unwrap_or_else(Distance::cosine) }))
    }
}

/// Histogram loss ("Learning deep embeddings with histogram loss").
///
/// Soft histograms (linear interpolation onto `2/delta + 1` nodes of `[−1, 1]`) of the
/// similarities of the distinct positive pairs `p⁺` and negative pairs `p⁻` that take part in
/// some triplet; `L = Σ_r p⁻_r Σ_{q ≤ r} p⁺_q` (already reduced).
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub struct HistogramLoss {
    pub delta: f64,
    pub distance: Distance,
}

impl HistogramLoss {
    fn density(&self, values: &Tensor) -> Tensor {
        let nodes = (2.0 / self.delta).round() as i64 + 1;
        let r = ((values.detach().to_kind(Kind::Float) + 1.0) / self.delta).floor().clamp(0.0, (nodes - 2) as f64);
        let r_idx = r.to_kind(Kind::Int64);
        let r = r.to_kind(values.kind());
        let a = (values + 1.0 - &r * self.delta) / self.delta;
        let b = ((&r + 1.0) * self.delta - 1.0 - values) / self.delta;
        let zero = Tensor::zeros([nodes], (values.kind(), values.device()));
        let density = zero.scatter_add(0, &(&r_idx + 1), &a).scatter_add(0, &r_idx, &b);
        density / values.size()[0] as f64
    }
}

impl MetricLoss for HistogramLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        no_reference(batch, "histogram loss")?;
        let t = batch.to_triplets(tuples);
        if t.is_empty() {
            return Ok(vec![LossTerm::zero("loss")]);
        }
        let n = batch.len();
        let mat = self.distance.matrix(batch.embeddings, None)?;
        // Distinct unordered pairs {a, p} and {a, n} of the triplets.
        let unordered = |x: &Tensor, y: &Tensor| {
            let m = Tensor::zeros([n, n], (Kind::Bool, mat.device())).index_put(
                &[Some(x.shallow_clone()), Some(y.shallow_clone())],
                &Tensor::ones([1], (Kind::Bool, mat.device())),
                false,
            );
            let m = m.logical_or(&m.tr());
            let upper = Tensor::ones([n, n], (Kind::Bool, mat.device())).triu(0);
            mat.masked_select(&m.logical_and(&upper))
        };
        let p_pos = self.density(&unordered(&t.anchor, &t.positive));
        let p_neg = self.density(&unordered(&t.anchor, &t.negative));
        let phi = p_pos.cumsum(0, p_pos.kind());
        Ok(vec![LossTerm::reduced("loss", (p_neg * phi).sum(mat.kind()))])
    }
}

// ---------------------------------------------------------------------------------------------
// Ranked list loss.

fn half() -> f64 {
    0.5
}

/// Parameters of [`RankedListLoss`] (reference: `margin` and `Tn` required, `imbalance = 0.5`,
/// `alpha = 1 + margin / 2` when absent, `Tp = 0`; normalised Euclidean distance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedListParams {
    pub margin: f64,
    #[serde(rename = "Tn")]
    pub tn: f64,
    #[serde(default = "half")]
    pub imbalance: f64,
    #[serde(default)]
    pub alpha: Option<f64>,
    #[serde(rename = "Tp", default)]
    pub tp: f64,
}

impl DistanceLossParams for RankedListParams {
    fn default_distance() -> Distance {
        Distance::lp()
    }
    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.imbalance) {
            return Err(invalid("ranked_list loss", format!("imbalance must be in [0, 1], got {}", self.imbalance)));
        }
        for (name, v) in [("margin", self.margin), ("Tn", self.tn), ("Tp", self.tp), ("alpha", self.alpha.unwrap_or(0.0))] {
            if !v.is_finite() {
                return Err(invalid("ranked_list loss", format!("{name} must be finite, got {v}")));
            }
        }
        Ok(())
    }
}

/// Ranked list loss (RLL).
///
/// With `α` the negative boundary and `α − margin` the positive one: positives beyond
/// `α − margin` are weighted `w = e^{Tp (d − (α − m))}`, negatives within `α` by
/// `w = e^{Tn (α − d)}`; `L_P = Σ w (d − (α − m)) / Σ w`, `L_N = Σ w (α − d) / Σ w`,
/// `L_i = (1 − imbalance) L_P + imbalance L_N`. Mean-reduced per element. A part without any
/// violating pair is 0 (the reference leaves `L_P` NaN in that case).
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type RankedListLoss = DistanceLoss<RankedListParams>;

impl MetricLoss for RankedListLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        no_reference(batch, "ranked_list loss")?;
        if tuples.is_some() {
            return Err(CoreError::Unsupported("ranked_list loss does not use mined tuples".into()));
        }
        let p = &self.params;
        let alpha = p.alpha.unwrap_or(1.0 + p.margin / 2.0);
        let pos_bound = alpha - p.margin;
        let n = batch.len();
        let eye = Tensor::eye(n, (Kind::Bool, batch.device()));
        let mat = self.distance.matrix(batch.embeddings, None)?.masked_fill(&eye, 0.0);
        let kind = mat.kind();
        let (matches, diffs) = batch.label_masks();
        let zero = mat.zeros_like();
        let n_star = mat.where_self(&diffs.logical_and(&mat.lt(alpha)), &zero);
        let p_star = mat.where_self(&matches.logical_and(&mat.gt(pos_bound)), &zero);
        let p_sel = p_star.gt(pos_bound);
        let n_sel = n_star.gt(0.0);
        let w_p = ((&p_star - pos_bound) * p.tp).exp().where_self(&p_sel, &zero);
        let w_n = ((-&n_star + alpha) * p.tn).exp().where_self(&n_sel, &zero);
        let ratio = |num: Tensor, den: Tensor| {
            let empty = den.eq(0.0);
            (num / den.masked_fill(&empty, 1.0)).masked_fill(&empty, 0.0)
        };
        let loss_p = ratio((&w_p * (&p_star - pos_bound)).sum_dim_intlist(1, false, kind), w_p.sum_dim_intlist(1, false, kind));
        let loss_n = ratio((&w_n * (-&n_star + alpha)).sum_dim_intlist(1, false, kind), w_n.sum_dim_intlist(1, false, kind));
        let losses = loss_p * (1.0 - p.imbalance) + loss_n * p.imbalance;
        Ok(vec![LossTerm::new("loss", losses, TermIndices::Element(Tensor::arange(n, (Kind::Int64, mat.device()))))])
    }
}

// ---------------------------------------------------------------------------------------------
// PNP and Smooth-AP: smoothed ranks.

/// `1 / (1 + e^{clamp(−x/τ, −50, 50)})`, the reference's temperature sigmoid.
fn temp_sigmoid(x: &Tensor, temp: f64) -> Tensor {
    ((-x / temp).clamp(-50.0, 50.0).exp() + 1.0).reciprocal()
}

/// The PNP variant (how a positive's count of negatives ranked before it is penalised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PnpVariant {
    Ds,
    Dq,
    Iu,
    Ib,
    O,
}

/// Parameters of [`PNPLoss`] (reference defaults: b 2, alpha 1, anneal 0.01, variant "O"; cosine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PNPParams {
    pub b: f64,
    pub alpha: f64,
    pub anneal: f64,
    pub variant: PnpVariant,
}

impl Default for PNPParams {
    fn default() -> Self {
        PNPParams { b: 2.0, alpha: 1.0, anneal: 0.01, variant: PnpVariant::O }
    }
}

impl DistanceLossParams for PNPParams {
    fn default_distance() -> Distance {
        Distance::cosine()
    }
    fn validate(&self) -> Result<()> {
        if !(self.anneal.is_finite() && self.anneal > 0.0) {
            return Err(invalid("pnp loss", format!("anneal must be positive, got {}", self.anneal)));
        }
        if !(self.b.is_finite() && self.b > 0.0 && self.alpha.is_finite()) {
            return Err(invalid("pnp loss", "b must be positive and alpha finite"));
        }
        Ok(())
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        cosine_only("pnp loss", distance)
    }
}

/// PNP loss ("Rethinking the optimization of average precision: only penalizing negative
/// instances before positive ones is enough").
///
/// For anchor i and each j in `P_i ∪ {i}`: `R_ij = Σ_{k neg of i} σ((s_ik − s_ij)/anneal)`,
/// transformed by the variant (`O`: R; `Ds`: log(1+R); `Dq`: (1+R)^−α; `Iu`: (1+R)log(1+R);
/// `Ib`: (bR − log(1+bR))/b²); `L = (1/n) Σ_i mean_j f(R_ij)` (`1 − L` for `Dq`). Already
/// reduced. Only the (anchor, positive) rows are formed: O(n · P) memory, not n³.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type PNPLoss = DistanceLoss<PNPParams>;

impl MetricLoss for PNPLoss {
    fn terms(&self, batch: &Batch, _tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        no_reference(batch, "pnp loss")?;
        let n = batch.len();
        let (matches, diffs) = batch.label_masks();
        let eye = Tensor::eye(n, (Kind::Bool, batch.device()));
        let i_pos = matches.logical_or(&eye);
        let sim = self.distance.matrix(batch.embeddings, None)?;
        let kind = sim.kind();
        let pairs = i_pos.nonzero();
        let (a, j) = (pairs.select(1, 0), pairs.select(1, 1));
        let rows = sim.index_select(0, &a);
        let s_aj = sim.index(&[Some(&a), Some(&j)]).unsqueeze(1);
        let negf = diffs.index_select(0, &a).to_kind(kind);
        let rank = (temp_sigmoid(&(rows - s_aj), self.params.anneal) * negf).sum_dim_intlist(1, false, kind);
        let (b, alpha) = (self.params.b, self.params.alpha);
        let f = match self.params.variant {
            PnpVariant::O => rank,
            PnpVariant::Ds => (rank + 1.0).log(),
            PnpVariant::Dq => (rank + 1.0).pow_tensor_scalar(-alpha),
            PnpVariant::Iu => (&rank + 1.0) * (&rank + 1.0).log(),
            PnpVariant::Ib => (&rank * b - (&rank * b + 1.0).log()) / (b * b),
        };
        let per_row = Tensor::zeros([n], (kind, sim.device())).index_add(0, &a, &f);
        let n_pos = i_pos.sum_dim_intlist(1, false, kind);
        let loss = (per_row / n_pos).sum(kind) / n as f64;
        let loss = if self.params.variant == PnpVariant::Dq { -loss + 1.0 } else { loss };
        Ok(vec![LossTerm::reduced("loss", loss)])
    }
}

/// Parameters of [`SmoothAPLoss`] (reference default: `temperature = 0.01`; cosine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmoothAPParams {
    pub temperature: f64,
}

impl Default for SmoothAPParams {
    fn default() -> Self {
        SmoothAPParams { temperature: 0.01 }
    }
}

impl DistanceLossParams for SmoothAPParams {
    fn default_distance() -> Distance {
        Distance::cosine()
    }
    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(invalid("smooth_ap loss", format!("temperature must be positive, got {}", self.temperature)));
        }
        Ok(())
    }
    fn check_distance(distance: &Distance) -> Result<()> {
        cosine_only("smooth_ap loss", distance)
    }
}

/// Smooth-AP loss.
///
/// As the reference, the batch must hold the same number of elements per class; it is split
/// into `nb = n / u` consecutive blocks of `n / nb` rows (`u` distinct labels) — the reference's
/// arithmetic, which matches the classes for a label-sorted batch. For a row
/// i and a row j of its block: `R_all(i,j) = 1 + Σ_{k≠j} σ((s_ik − s_ij)/τ)`,
/// `R_pos(i,j) = 1 + Σ_{k in block, k≠j} σ((s_ik − s_ij)/τ)`;
/// `L = 1 − Σ_blocks Σ_{i,j} (R_pos/R_all) / (block size · n)`. Already reduced; only the
/// (row, block row) pairs are formed.
///
/// # Shapes
/// embeddings [n, d], labels [n] → scalar.
pub type SmoothAPLoss = DistanceLoss<SmoothAPParams>;

impl MetricLoss for SmoothAPLoss {
    fn terms(&self, batch: &Batch, _tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        no_reference(batch, "smooth_ap loss")?;
        let labels: Vec<i64> = Vec::try_from(batch.labels.to_device(tch::Device::Cpu).to_kind(Kind::Int64)).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for l in &labels {
            *counts.entry(*l).or_insert(0i64) += 1;
        }
        let distinct: std::collections::BTreeSet<i64> = counts.values().copied().collect();
        if distinct.len() != 1 {
            return Err(CoreError::Unsupported(format!(
                "smooth_ap loss needs the same number of elements in every class, got counts {:?}",
                counts.values().collect::<Vec<_>>()
            )));
        }
        let n = batch.len();
        let num_blocks = n / counts.len() as i64;
        let block = n / num_blocks;
        if num_blocks * block != n {
            return Err(CoreError::Unsupported(format!("smooth_ap loss: a batch of {n} cannot be split into {num_blocks} equal blocks")));
        }
        let sim = self.distance.matrix(batch.embeddings, None)?;
        let kind = sim.kind();
        let device = sim.device();
        // Every (i, j) with j in the block of i.
        let idx: Vec<i64> = (0..n).collect();
        let (mut ii, mut jj) = (Vec::new(), Vec::new());
        for &i in &idx {
            let start = (i / block) * block;
            for j in start..start + block {
                ii.push(i);
                jj.push(j);
            }
        }
        let (i_t, j_t) = (Tensor::from_slice(&ii).to_device(device), Tensor::from_slice(&jj).to_device(device));
        let rows = sim.index_select(0, &i_t);
        let s_ij = sim.index(&[Some(&i_t), Some(&j_t)]).unsqueeze(1);
        let cols = Tensor::arange(n, (Kind::Int64, device)).unsqueeze(0);
        let not_j = cols.ne_tensor(&j_t.unsqueeze(1));
        let same_block = cols.divide_scalar_mode(block, "floor").eq_tensor(&(i_t.unsqueeze(1).divide_scalar_mode(block, "floor")));
        let sig = ((rows - s_ij) / self.params.temperature).sigmoid();
        let r_all = (&sig * not_j.to_kind(kind)).sum_dim_intlist(1, false, kind) + 1.0;
        let r_pos = (&sig * not_j.logical_and(&same_block).to_kind(kind)).sum_dim_intlist(1, false, kind) + 1.0;
        let ap = (r_pos / r_all).sum(kind) / (block as f64 * n as f64);
        Ok(vec![LossTerm::reduced("loss", -ap + 1.0)])
    }
}
