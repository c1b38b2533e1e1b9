//! Proxy-based losses: ProxyAnchor, ProxyNCA and SoftTriple.
//!
//! Instead of comparing batch elements with each other (O(B²) pairs), these compare each element
//! with a few learnable proxies per class (O(B·C)); they converge fast and need no mining. All
//! three work per class or per row with masks and a log-sum-exp, never materialising tuples.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::checks::finite;
use super::class_common::{
    as_embeddings_kind, check_classification_batch, classes_and_dim, cross_entropy, element_term, kaiming_uniform_sqrt5, masked_logsumexp, miner_weights, one_hot, weight,
};
use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{Result, invalid};
use crate::reducer::{LossTerm, Reducer, TermIndices};
use crate::tuples::{Batch, Tuples};

/// Parameters of ProxyAnchorLoss (reference defaults: `margin = 0.1`, `alpha = 32`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyAnchorParams {
    pub margin: f64,
    pub alpha: f64,
}

impl Default for ProxyAnchorParams {
    fn default() -> Self {
        ProxyAnchorParams { margin: 0.1, alpha: 32.0 }
    }
}

impl LossParams for ProxyAnchorParams {
    fn validate(&self) -> Result<()> {
        finite("ProxyAnchorLoss", &[("margin", self.margin), ("alpha", self.alpha)])
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let (c, d) = classes_and_dim(ctx, "ProxyAnchorLoss")?;
        // kaiming_normal_(mode = "fan_out") on [C, D]: std = √2 / √C.
        let std = (2.0 / c as f64).sqrt();
        let proxies = weight(ctx, "proxies", &[c, d], nn::Init::Randn { mean: 0.0, stdev: std })?;
        Ok(Box::new(ProxyAnchorLoss { params: self.clone(), num_classes: c, embedding_size: d, distance: distance.unwrap_or_else(Distance::cosine), proxies }))
    }
}

/// Proxy-Anchor loss (Kim et al. 2020). With `s_ic = sim(x_i, p_c)` and miner weights `w_i`:
///
/// `pos_c = log(1 + Σ_{i: y_i = c} exp(α·m(s_ic, δ) + w_i − 1))`,
/// `neg_c = log(1 + Σ_{i: y_i ≠ c} exp(α·m(−δ, s_ic) + w_i − 1))`,
/// two element terms over classes: `pos_loss` divided by the number of classes present in the
/// batch, `neg_loss` by the number of classes (the divisor reducer by default).
///
/// # Shapes
/// embeddings [n, embedding_size], labels [n]; `proxies` [num_classes × embedding_size] → terms [C].
pub struct ProxyAnchorLoss {
    pub params: ProxyAnchorParams,
    pub num_classes: i64,
    pub embedding_size: i64,
    pub distance: Distance,
    proxies: Tensor,
}

impl ProxyAnchorLoss {
    fn name(&self) -> &'static str {
        "ProxyAnchorLoss"
    }
}

impl MetricLoss for ProxyAnchorLoss {
    fn default_reducer(&self) -> Reducer {
        Reducer::Divisor
    }

    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let labels = check_classification_batch(batch, self.name(), self.num_classes, self.embedding_size)?;
        let emb = batch.embeddings;
        let proxies = as_embeddings_kind(&self.proxies, emb, self.name())?;
        let mw = miner_weights(tuples, batch.len(), false, emb.kind(), emb.device()).unsqueeze(1) - 1.0;
        let cos = self.distance.matrix(emb, Some(&proxies))?;
        let pos_mask = one_hot(&labels, self.num_classes, Kind::Bool);
        let neg_mask = pos_mask.logical_not();
        let num_pos_proxies = tch::no_grad(|| pos_mask.any_dim(0, false).sum(Kind::Int64).int64_value(&[]));
        let alpha = self.params.alpha;
        let pos_exp = self.distance.margin_to(&cos, self.params.margin) * alpha + &mw;
        let neg_exp = self.distance.margin_from(-self.params.margin, &cos) * alpha + &mw;
        let pos_term = masked_logsumexp(&pos_exp, &pos_mask, true, 0);
        let neg_term = masked_logsumexp(&neg_exp, &neg_mask, true, 0);
        let classes = || Tensor::arange(self.num_classes, (Kind::Int64, emb.device()));
        let mut pos = LossTerm::new("pos_loss", pos_term, TermIndices::Element(classes()));
        pos.divisor = Some(num_pos_proxies as f64);
        let mut neg = LossTerm::new("neg_loss", neg_term, TermIndices::Element(classes()));
        neg.divisor = Some(self.num_classes as f64);
        Ok(vec![pos, neg])
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("proxies", self.proxies.shallow_clone())]
    }

    fn regularized_weights(&self) -> Option<Tensor> {
        Some(self.proxies.shallow_clone())
    }
}

/// Parameters of ProxyNCALoss (reference default: `softmax_scale = 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyNcaParams {
    pub softmax_scale: f64,
}

impl Default for ProxyNcaParams {
    fn default() -> Self {
        ProxyNcaParams { softmax_scale: 1.0 }
    }
}

impl LossParams for ProxyNcaParams {
    fn validate(&self) -> Result<()> {
        finite("ProxyNCALoss", &[("softmax_scale", self.softmax_scale)])
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::lp_squared())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let (c, d) = classes_and_dim(ctx, "ProxyNCALoss")?;
        let proxies = weight(ctx, "proxies", &[c, d], nn::Init::Randn { mean: 0.0, stdev: 1.0 })?;
        Ok(Box::new(ProxyNcaLoss {
            softmax_scale: self.softmax_scale,
            num_classes: c,
            embedding_size: d,
            distance: distance.unwrap_or_else(Distance::lp_squared),
            proxies,
        }))
    }
}

/// ProxyNCA (Movshovitz-Attias et al. 2017): NCA against one proxy per class,
/// `L_i = −log softmax_c(scale · s_ic)[y_i]` with `s = −d` for a distance (`sim` for a
/// similarity), times the anchor's miner weight; rows whose probability underflows to 0 are
/// dropped, as in the reference.
///
/// # Shapes
/// embeddings [n, embedding_size], labels [n]; `proxies` [num_classes × embedding_size] → element
/// term `loss` [≤ n].
pub struct ProxyNcaLoss {
    pub softmax_scale: f64,
    pub num_classes: i64,
    pub embedding_size: i64,
    pub distance: Distance,
    proxies: Tensor,
}

impl ProxyNcaLoss {
    fn name(&self) -> &'static str {
        "ProxyNCALoss"
    }
}

impl MetricLoss for ProxyNcaLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let labels = check_classification_batch(batch, self.name(), self.num_classes, self.embedding_size)?;
        let emb = batch.embeddings;
        let proxies = as_embeddings_kind(&self.proxies, emb, self.name())?;
        let mw = miner_weights(tuples, batch.len(), true, emb.kind(), emb.device());
        let mat = self.distance.matrix(emb, Some(&proxies))?;
        let mat = if self.distance.is_inverted() { mat } else { -mat };
        let same = one_hot(&labels, self.num_classes, emb.kind());
        let prob = ((mat * self.softmax_scale).softmax(1, None::<Kind>) * same).sum_dim_intlist(1, false, None::<Kind>);
        let keep = prob.ne(0.0);
        let rows = Tensor::arange(batch.len(), (Kind::Int64, emb.device())).masked_select(&keep);
        let loss = -prob.masked_select(&keep).log() * mw.masked_select(&keep);
        Ok(vec![LossTerm::new("loss", loss, TermIndices::Element(rows))])
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("proxies", self.proxies.shallow_clone())]
    }

    fn regularized_weights(&self) -> Option<Tensor> {
        Some(self.proxies.shallow_clone())
    }
}

/// Parameters of SoftTripleLoss (reference defaults: `centers_per_class = 10`, `la = 20`,
/// `gamma = 0.1`, `margin = 0.01`). The reference's intra-class centre regularizer is the
/// `sparse_centers` weight regularizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftTripleParams {
    pub centers_per_class: i64,
    /// λ: scale of the class logits.
    pub la: f64,
    /// γ: temperature of the soft assignment to a class's centres.
    pub gamma: f64,
    /// δ: margin subtracted from the target class's similarity.
    pub margin: f64,
}

impl Default for SoftTripleParams {
    fn default() -> Self {
        SoftTripleParams { centers_per_class: 10, la: 20.0, gamma: 0.1, margin: 0.01 }
    }
}

impl LossParams for SoftTripleParams {
    fn validate(&self) -> Result<()> {
        let name = "SoftTripleLoss";
        if self.centers_per_class < 1 {
            return Err(invalid(name, format!("centers_per_class must be at least 1, got {}", self.centers_per_class)));
        }
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(invalid(name, format!("gamma must be positive, got {}", self.gamma)));
        }
        finite(name, &[("la", self.la), ("margin", self.margin)])
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let name = "SoftTripleLoss";
        let distance = match distance {
            None => Distance::cosine(),
            Some(d @ Distance::Cosine { .. }) => d,
            Some(d) => return Err(invalid(name, format!("this loss needs the cosine distance, got {d:?}"))),
        };
        let (c, d) = classes_and_dim(ctx, name)?;
        let total = c * self.centers_per_class;
        let fc = weight(ctx, "fc", &[d, total], kaiming_uniform_sqrt5(total))?;
        Ok(Box::new(SoftTripleLoss { params: self.clone(), num_classes: c, embedding_size: d, distance, fc }))
    }
}

/// SoftTriple (Qian et al. 2019): each class has `K` centres; the similarity to a class is the
/// softmax(`s/γ`)-weighted mean of the similarities to its centres, and the loss is the
/// cross-entropy of `λ (S_ic − δ·[c = y_i])`, times the miner weight.
///
/// # Shapes
/// embeddings [n, embedding_size], labels [n]; `fc` [embedding_size × num_classes·K] → element
/// term `loss` [n].
pub struct SoftTripleLoss {
    pub params: SoftTripleParams,
    pub num_classes: i64,
    pub embedding_size: i64,
    pub distance: Distance,
    fc: Tensor,
}

impl SoftTripleLoss {
    fn name(&self) -> &'static str {
        "SoftTripleLoss"
    }
}

impl MetricLoss for SoftTripleLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let labels = check_classification_batch(batch, self.name(), self.num_classes, self.embedding_size)?;
        let emb = batch.embeddings;
        let fc = as_embeddings_kind(&self.fc, emb, self.name())?;
        let mw = miner_weights(tuples, batch.len(), false, emb.kind(), emb.device());
        let sim = self.distance.matrix(emb, Some(&fc.tr()))?.view([-1, self.num_classes, self.params.centers_per_class]);
        let prob = (&sim * (1.0 / self.params.gamma)).softmax(2, None::<Kind>);
        let sim_to_classes = (prob * &sim).sum_dim_intlist(2, false, None::<Kind>);
        let margin = one_hot(&labels, self.num_classes, emb.kind()) * self.params.margin;
        let loss = cross_entropy(&((sim_to_classes - margin) * self.params.la), &labels) * mw;
        Ok(vec![element_term(loss)])
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("fc", self.fc.shallow_clone())]
    }

    fn regularized_weights(&self) -> Option<Tensor> {
        Some(self.fc.tr())
    }
}
