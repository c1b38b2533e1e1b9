//! Softmax classifiers with an angular margin on the target class: LargeMarginSoftmax, SphereFace,
//! ArcFace, SubCenterArcFace and CosFace; plus NormalizedSoftmax and P2SGrad.
//!
//! They all learn a class matrix `W` [embedding_size × classes] and score an embedding by its
//! cosine to each class column. The margin variants only differ in how the target class's cosine
//! is made harder (multiplied angle, added angle, subtracted cosine) and how logits are scaled, so
//! they share one implementation, [`MarginSoftmaxLoss`], parameterised by [`MarginVariant`] — the
//! same structure as the reference library, where all of them subclass `LargeMarginSoftmaxLoss`.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::checks::{check_angle, check_scale, finite, integer_margin};
use super::class_common::{as_embeddings_kind, check_classification_batch, classes_and_dim, cross_entropy, element_term, miner_weights, one_hot, weight};
use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::LossTerm;
use crate::tuples::{Batch, Tuples};

/// How the target class's cosine is modified and the logits scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MarginVariant {
    /// `cos(mθ)` (Chebyshev expansion) with the sign fix of the paper; logits × ‖W_c‖‖x‖ × scale.
    LargeMargin { m: i64 },
    /// As `LargeMargin`, logits × ‖x‖ × scale.
    SphereFace { m: i64 },
    /// `cos(θ + m)` (m in radians), kept monotone past π − m; logits × scale.
    ArcFace { m: f64 },
    /// ArcFace on the best of `sub_centers` centres per class.
    SubCenterArcFace { m: f64, sub_centers: i64 },
    /// `cos θ − m`; logits × scale.
    CosFace { m: f64 },
}

fn cosine_only(loss: &str, distance: Option<Distance>) -> Result<Distance> {
    match distance {
        None => Ok(Distance::cosine()),
        Some(d @ Distance::Cosine { .. }) => Ok(d),
        Some(d) => Err(invalid(loss, format!("this loss needs the cosine distance, got {d:?}"))),
    }
}

/// Parameters of LargeMarginSoftmaxLoss (reference defaults: `margin = 4`, `scale = 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LargeMarginSoftmaxParams {
    /// The angle multiplier m (a whole number).
    pub margin: f64,
    pub scale: f64,
}

impl Default for LargeMarginSoftmaxParams {
    fn default() -> Self {
        LargeMarginSoftmaxParams { margin: 4.0, scale: 1.0 }
    }
}

/// Parameters of SphereFaceLoss (reference defaults: `margin = 4`, `scale = 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SphereFaceParams {
    /// The angle multiplier m (a whole number).
    pub margin: f64,
    pub scale: f64,
}

impl Default for SphereFaceParams {
    fn default() -> Self {
        SphereFaceParams { margin: 4.0, scale: 1.0 }
    }
}

/// Parameters of ArcFaceLoss (reference defaults: `margin = 28.6` degrees, `scale = 64`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArcFaceParams {
    /// Additive angular margin, in degrees.
    pub margin: f64,
    pub scale: f64,
}

impl Default for ArcFaceParams {
    fn default() -> Self {
        ArcFaceParams { margin: 28.6, scale: 64.0 }
    }
}

/// Parameters of SubCenterArcFaceLoss (reference defaults: `margin = 28.6`, `scale = 64`,
/// `sub_centers = 3`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubCenterArcFaceParams {
    /// Additive angular margin, in degrees.
    pub margin: f64,
    pub scale: f64,
    /// Centres per class.
    pub sub_centers: i64,
}

impl Default for SubCenterArcFaceParams {
    fn default() -> Self {
        SubCenterArcFaceParams { margin: 28.6, scale: 64.0, sub_centers: 3 }
    }
}

/// Parameters of CosFaceLoss (reference defaults: `margin = 0.35`, `scale = 64`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CosFaceParams {
    /// Additive cosine margin.
    pub margin: f64,
    pub scale: f64,
}

impl Default for CosFaceParams {
    fn default() -> Self {
        CosFaceParams { margin: 0.35, scale: 64.0 }
    }
}

impl LossParams for LargeMarginSoftmaxParams {
    fn validate(&self) -> Result<()> {
        integer_margin("LargeMarginSoftmaxLoss", self.margin)?;
        check_scale("LargeMarginSoftmaxLoss", self.scale)
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let m = integer_margin("LargeMarginSoftmaxLoss", self.margin)?;
        MarginSoftmaxLoss::new(MarginVariant::LargeMargin { m }, self.scale, distance, ctx).map(|l| Box::new(l) as _)
    }
}

impl LossParams for SphereFaceParams {
    fn validate(&self) -> Result<()> {
        integer_margin("SphereFaceLoss", self.margin)?;
        check_scale("SphereFaceLoss", self.scale)
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let m = integer_margin("SphereFaceLoss", self.margin)?;
        MarginSoftmaxLoss::new(MarginVariant::SphereFace { m }, self.scale, distance, ctx).map(|l| Box::new(l) as _)
    }
}

impl LossParams for ArcFaceParams {
    fn validate(&self) -> Result<()> {
        check_angle("ArcFaceLoss", self.margin)?;
        check_scale("ArcFaceLoss", self.scale)
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        MarginSoftmaxLoss::new(MarginVariant::ArcFace { m: self.margin.to_radians() }, self.scale, distance, ctx).map(|l| Box::new(l) as _)
    }
}

impl LossParams for SubCenterArcFaceParams {
    fn validate(&self) -> Result<()> {
        check_angle("SubCenterArcFaceLoss", self.margin)?;
        check_scale("SubCenterArcFaceLoss", self.scale)?;
        if self.sub_centers < 1 {
            return Err(invalid("SubCenterArcFaceLoss", format!("sub_centers must be at least 1, got {}", self.sub_centers)));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let v = MarginVariant::SubCenterArcFace { m: self.margin.to_radians(), sub_centers: self.sub_centers };
        MarginSoftmaxLoss::new(v, self.scale, distance, ctx).map(|l| Box::new(l) as _)
    }
}

impl LossParams for CosFaceParams {
    fn validate(&self) -> Result<()> {
        finite("CosFaceLoss", &[("margin", self.margin)])?;
        check_scale("CosFaceLoss", self.scale)
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        MarginSoftmaxLoss::new(MarginVariant::CosFace { m: self.margin }, self.scale, distance, ctx).map(|l| Box::new(l) as _)
    }
}

/// A softmax classifier on cosines with a margin on the target class.
///
/// With `c_ij = cos(x_i, W_j)` and target `y_i`, the logits are `c_ij` except
/// `ψ(c_{i,y_i})` at the target, then scaled (see [`MarginVariant`]); the loss of row i is
/// `−log softmax(logits_i)[y_i]` times its miner weight. For LargeMargin/SphereFace,
/// `ψ(c) = (−1)^k cos(mθ) − 2k` with `θ = acos c`, `k = ⌊θ m / π⌋` and
/// `cos(mθ) = Σ_n (−1)^n C(m, 2n) c^{m−2n} (1 − c²)^n`.
///
/// # Shapes
/// embeddings [n, embedding_size], labels [n] in `0..num_classes`; `W` [embedding_size ×
/// num_classes·sub_centers] → element term `loss` [n].
pub struct MarginSoftmaxLoss {
    pub variant: MarginVariant,
    pub scale: f64,
    pub num_classes: i64,
    pub embedding_size: i64,
    pub distance: Distance,
    w: Tensor,
}

impl MarginSoftmaxLoss {
    /// The reference class name of the variant (for error messages).
    fn name(&self) -> &'static str {
        variant_name(self.variant)
    }

    /// Builds the loss and creates `W` (normal(0, 1), as the reference) in the context.
    pub fn new(variant: MarginVariant, scale: f64, distance: Option<Distance>, ctx: &BuildContext) -> Result<Self> {
        let name = variant_name(variant);
        let distance = cosine_only(name, distance)?;
        let (c, d) = classes_and_dim(ctx, name)?;
        let columns = match variant {
            MarginVariant::SubCenterArcFace { sub_centers, .. } => c * sub_centers,
            _ => c,
        };
        let w = weight(ctx, "W", &[d, columns], nn::Init::Randn { mean: 0.0, stdev: 1.0 })?;
        Ok(MarginSoftmaxLoss { variant, scale, num_classes: c, embedding_size: d, distance, w })
    }

    /// The class logits of embeddings (before any margin), scaled as in training — for inference.
    ///
    /// # Shapes
    /// `embeddings` [n, embedding_size] → [n, num_classes].
    pub fn logits(&self, embeddings: &Tensor) -> Result<Tensor> {
        let w = as_embeddings_kind(&self.w, embeddings, variant_name(self.variant))?;
        let cosine = self.cosine(embeddings, &w)?;
        Ok(self.scale_logits(&cosine, embeddings, &w))
    }

    fn cosine(&self, emb: &Tensor, w: &Tensor) -> Result<Tensor> {
        let cos = self.distance.matrix(emb, Some(&w.tr()))?;
        Ok(match self.variant {
            MarginVariant::SubCenterArcFace { sub_centers, .. } => cos.view([-1, self.num_classes, sub_centers]).max_dim(2, false).0,
            _ => cos,
        })
    }

    fn scale_logits(&self, logits: &Tensor, emb: &Tensor, w: &Tensor) -> Tensor {
        match self.variant {
            MarginVariant::LargeMargin { .. } => {
                let en = emb.norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
                let wn = w.norm_scalaropt_dim(2.0, [0i64].as_slice(), false);
                logits * (wn.unsqueeze(0) * en.unsqueeze(1)) * self.scale
            }
            MarginVariant::SphereFace { .. } => logits * emb.norm_scalaropt_dim(2.0, [1i64].as_slice(), false).unsqueeze(1) * self.scale,
            _ => logits * self.scale,
        }
    }

    fn modify_target(&self, cos_t: &Tensor) -> Tensor {
        let angles = || cos_t.clamp(-1.0, 1.0).acos();
        match self.variant {
            MarginVariant::LargeMargin { m } | MarginVariant::SphereFace { m } => {
                let with_margin = cos_m_theta(cos_t, m);
                let k = tch::no_grad(|| (angles() / (PI / m as f64)).floor());
                // (−1)^k for whole k.
                let sign = (&k * PI).cos().round();
                sign * with_margin - k * 2.0
            }
            MarginVariant::ArcFace { m } | MarginVariant::SubCenterArcFace { m, .. } => {
                let a = angles();
                let plus = (&a + m).cos();
                let cos_theta = a.cos();
                plus.where_self(&a.le(PI - m), &(cos_theta - m * m.sin()))
            }
            MarginVariant::CosFace { m } => cos_t - m,
        }
    }
}

/// `cos(mθ)` from `c = cos θ` by the multiple-angle formula, exactly as the reference computes it
/// (power tensors `c^(m−2n)` and `(1 − c²)^n`, summed over n = 0..⌊m/2⌋).
///
/// # Shapes
/// `c` [k] → [k].
fn cos_m_theta(c: &Tensor, m: i64) -> Tensor {
    let (kind, device) = (c.kind(), c.device());
    let ns: Vec<i64> = (0..=m / 2).collect();
    let t = |v: Vec<f64>| Tensor::from_slice(&v).to_kind(kind).to_device(device);
    let n_range = t(ns.iter().map(|&n| n as f64).collect());
    let choose = t(ns.iter().map(|&n| binomial(m, 2 * n)).collect());
    let cos_powers = t(ns.iter().map(|&n| (m - 2 * n) as f64).collect());
    let alternating = t(ns.iter().map(|&n| if n % 2 == 0 { 1.0 } else { -1.0 }).collect());
    let c = c.unsqueeze(1);
    let cos_powered = c.pow(&cos_powers);
    let sin_powered = (-c.square() + 1.0).pow(&n_range);
    (alternating * choose * cos_powered * sin_powered).sum_dim_intlist(1, false, None::<Kind>)
}

fn binomial(n: i64, k: i64) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

fn variant_name(v: MarginVariant) -> &'static str {
    match v {
        MarginVariant::LargeMargin { .. } => "LargeMarginSoftmaxLoss",
        MarginVariant::SphereFace { .. } => "SphereFaceLoss",
        MarginVariant::ArcFace { .. } => "ArcFaceLoss",
        MarginVariant::SubCenterArcFace { .. } => "SubCenterArcFaceLoss",
        MarginVariant::CosFace { .. } => "CosFaceLoss",
    }
}

impl MetricLoss for MarginSoftmaxLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let name = self.name();
        let labels = check_classification_batch(batch, name, self.num_classes, self.embedding_size)?;
        let emb = batch.embeddings;
        let w = as_embeddings_kind(&self.w, emb, name)?;
        let mw = miner_weights(tuples, batch.len(), false, emb.kind(), emb.device());
        let mask = one_hot(&labels, self.num_classes, emb.kind());
        let cosine = self.cosine(emb, &w)?;
        let cos_t = cosine.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
        let diff = (self.modify_target(&cos_t) - &cos_t).unsqueeze(1);
        let logits = self.scale_logits(&(&cosine + &mask * diff), emb, &w);
        Ok(vec![element_term(cross_entropy(&logits, &labels) * mw)])
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("W", self.w.shallow_clone())]
    }

    fn regularized_weights(&self) -> Option<Tensor> {
        Some(self.w.tr())
    }
}

/// Parameters of NormalizedSoftmaxLoss (reference default: `temperature = 0.05`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizedSoftmaxParams {
    pub temperature: f64,
}

impl Default for NormalizedSoftmaxParams {
    fn default() -> Self {
        NormalizedSoftmaxParams { temperature: 0.05 }
    }
}

impl LossParams for NormalizedSoftmaxParams {
    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(invalid("NormalizedSoftmaxLoss", format!("temperature must be positive, got {}", self.temperature)));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::dot_product())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let name = "NormalizedSoftmaxLoss";
        let distance = match distance {
            None => Distance::dot_product(),
            Some(d @ Distance::DotProduct { .. }) => d,
            Some(d) => return Err(invalid(name, format!("this loss needs the dot_product distance, got {d:?}"))),
        };
        let (c, d) = classes_and_dim(ctx, name)?;
        let w = weight(ctx, "W", &[d, c], nn::Init::Randn { mean: 0.0, stdev: 1.0 })?;
        Ok(Box::new(NormalizedSoftmaxLoss { temperature: self.temperature, num_classes: c, embedding_size: d, distance, w }))
    }
}

/// Normalized softmax: cross-entropy of `sim(x_i, Ŵ_j) / temperature`, with `Ŵ` the
/// L2-normalised class columns and `sim` the (normalising) dot product.
///
/// # Shapes
/// embeddings [n, embedding_size], labels [n]; `W` [embedding_size × num_classes] → element term
/// `loss` [n].
pub struct NormalizedSoftmaxLoss {
    pub temperature: f64,
    pub num_classes: i64,
    pub embedding_size: i64,
    pub distance: Distance,
    w: Tensor,
}

impl NormalizedSoftmaxLoss {
    fn name(&self) -> &'static str {
        "NormalizedSoftmaxLoss"
    }
}

impl MetricLoss for NormalizedSoftmaxLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let labels = check_classification_batch(batch, self.name(), self.num_classes, self.embedding_size)?;
        let emb = batch.embeddings;
        let w = as_embeddings_kind(&self.w, emb, self.name())?;
        let mw = miner_weights(tuples, batch.len(), false, emb.kind(), emb.device());
        let wn = &w / w.norm_scalaropt_dim(2.0, [0i64].as_slice(), true).clamp_min(1e-12);
        let exponent = self.distance.matrix(emb, Some(&wn.tr()))? / self.temperature;
        Ok(vec![element_term(cross_entropy(&exponent, &labels) * mw)])
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("W", self.w.shallow_clone())]
    }

    fn regularized_weights(&self) -> Option<Tensor> {
        Some(self.w.tr())
    }
}

/// Parameters of P2SGradLoss (none beyond the build context's sizes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2SGradParams {}

impl LossParams for P2SGradParams {
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        None
    }
    fn build(&self, _distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let name = "P2SGradLoss";
        let (c, d) = classes_and_dim(ctx, name)?;
        let w = weight(ctx, "weight", &[d, c], nn::Init::Uniform { lo: -1.0, up: 1.0 })?;
        tch::no_grad(|| w.shallow_clone().copy_(&(w.renorm(2.0, 1, 1e-5) * 1e5)));
        Ok(Box::new(P2SGradLoss { num_classes: c, embedding_size: d, w }))
    }
}

/// P2SGrad: mean squared error between `clamp(cos(x_i, w_j), −1, 1)` and the one-hot target,
/// over all rows and classes; the class columns are renormalised to unit length before every
/// call (not differentiated), as the reference does.
///
/// # Shapes
/// embeddings [n, embedding_size], labels [n]; `weight` [embedding_size × num_classes] → one
/// already-reduced term `loss`.
pub struct P2SGradLoss {
    pub num_classes: i64,
    pub embedding_size: i64,
    w: Tensor,
}

impl P2SGradLoss {
    fn name(&self) -> &'static str {
        "P2SGradLoss"
    }
}

impl MetricLoss for P2SGradLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if tuples.is_some() {
            return Err(CoreError::Unsupported("P2SGradLoss does not use mined tuples".into()));
        }
        let labels = check_classification_batch(batch, self.name(), self.num_classes, self.embedding_size)?;
        tch::no_grad(|| self.w.shallow_clone().copy_(&(self.w.renorm(2.0, 1, 1e-5) * 1e5)));
        let emb = batch.embeddings;
        let w = as_embeddings_kind(&self.w, emb, self.name())?;
        let x_modulus = emb.square().sum_dim_intlist(1, false, None::<Kind>).sqrt();
        let cos = (emb.mm(&w) / x_modulus.view([-1, 1])).clamp(-1.0, 1.0);
        let target = tch::no_grad(|| one_hot(&labels, self.num_classes, emb.kind()));
        let loss = (cos - target).square().mean(None::<Kind>);
        Ok(vec![LossTerm::reduced("loss", loss)])
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("weight", self.w.shallow_clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chebyshev_expansion_is_cos_of_multiple_angle() {
        let c = Tensor::from_slice(&[-0.9f64, -0.3, 0.0, 0.2, 0.7, 0.99]);
        for m in 1..=6 {
            let got = Vec::<f64>::try_from(cos_m_theta(&c, m)).unwrap();
            let want = Vec::<f64>::try_from((c.acos() * m as f64).cos()).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "m = {m}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn binomial_coefficients() {
        assert_eq!(binomial(4, 2), 6.0);
        assert_eq!(binomial(5, 0), 1.0);
        assert_eq!(binomial(6, 4), 15.0);
    }
}
