//! VICReg (variance–invariance–covariance regularisation) for two views of the same inputs.
//!
//! VICReg compares two embeddings of each input rather than labelled pairs. Here the second
//! view is the batch's reference set: call the loss with
//! `Batch::with_reference(view1, labels, view2, labels)` (labels are not used). It has no
//! distance and no miner.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::{LossTerm, TermIndices};
use crate::tuples::{Batch, Tuples};

/// Parameters of [`VICRegLoss`] (reference defaults: λ 25, μ 25, ν 1, eps 1e-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VICRegParams {
    pub invariance_lambda: f64,
    pub variance_mu: f64,
    pub covariance_v: f64,
    pub eps: f64,
}

impl Default for VICRegParams {
    fn default() -> Self {
        VICRegParams { invariance_lambda: 25.0, variance_mu: 25.0, covariance_v: 1.0, eps: 1e-4 }
    }
}

impl LossParams for VICRegParams {
    fn validate(&self) -> Result<()> {
        for (name, v) in [("invariance_lambda", self.invariance_lambda), ("variance_mu", self.variance_mu), ("covariance_v", self.covariance_v)] {
            if !v.is_finite() {
                return Err(invalid("vicreg loss", format!("{name} must be finite, got {v}")));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(invalid("vicreg loss", format!("eps must be positive, got {}", self.eps)));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        None
    }
    fn build(&self, _distance: Option<Distance>, _ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        Ok(Box::new(VICRegLoss { params: self.clone() }))
    }
}

/// VICReg loss of two views `Z` (the embeddings) and `Z'` (the reference embeddings).
///
/// Terms: `invariance_loss_i = λ mean_d (z_id − z'_id)²` (per row);
/// `variance_loss1_d = μ [1 − sqrt(Var(z_·d) + eps)]₊ / 2` and `variance_loss2` for `Z'` (per
/// dimension); `covariance_loss = ν (Σ_{d≠e} C(Z)²_de + Σ_{d≠e} C(Z')²_de) / D` (already
/// reduced). Mean-reduced by default.
///
/// # Shapes
/// embeddings [n, d], reference embeddings [n, d], n ≥ 2 → scalar.
pub struct VICRegLoss {
    pub params: VICRegParams,
}

fn off_diagonal_sq_sum(x: &Tensor) -> Tensor {
    let (n, d) = (x.size()[0], x.size()[1]);
    let centred = x - x.mean_dim(0, true, x.kind());
    let cov = centred.tr().matmul(&centred) / (n - 1) as f64;
    let off = Tensor::eye(d, (Kind::Bool, x.device())).logical_not();
    cov.masked_select(&off).square().sum(x.kind()) / d as f64
}

impl MetricLoss for VICRegLoss {
    fn terms(&self, batch: &Batch, _tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        let Some((other, _)) = batch.reference else {
            return Err(CoreError::Unsupported("vicreg loss needs the second view as the batch's reference embeddings".into()));
        };
        let z = batch.embeddings;
        if other.size() != z.size() {
            return Err(CoreError::Shape(format!("vicreg views must have the same shape, got {:?} and {:?}", z.size(), other.size())));
        }
        let (n, d) = (z.size()[0], z.size()[1]);
        if n < 2 {
            return Err(CoreError::Shape("vicreg needs at least 2 rows (variances)".into()));
        }
        let p = &self.params;
        let kind = z.kind();
        let invariance = (z - other).square().mean_dim(1, false, kind) * p.invariance_lambda;
        let std = |x: &Tensor| (x.var_dim(0, true, false) + p.eps).sqrt();
        let var1 = (-std(z) + 1.0).relu() / 2.0 * p.variance_mu;
        let var2 = (-std(other) + 1.0).relu() / 2.0 * p.variance_mu;
        let cov = (off_diagonal_sq_sum(z) + off_diagonal_sq_sum(other)) * p.covariance_v;
        let rows = Tensor::arange(n, (Kind::Int64, z.device()));
        let dims = Tensor::arange(d, (Kind::Int64, z.device()));
        Ok(vec![
            LossTerm::new("invariance_loss", invariance, TermIndices::Element(rows)),
            LossTerm::new("variance_loss1", var1, TermIndices::Element(dims.shallow_clone())),
            LossTerm::new("variance_loss2", var2, TermIndices::Element(dims)),
            LossTerm::reduced("covariance_loss", cov),
        ])
    }
}
