//! Manifold loss (Aziere & Todorovic, CVPR 2019): similarities are measured *along the data
//! manifold* by a random walk over a graph of the batch and K learnable proxies, instead of
//! directly in the embedding space.
//!
//! Why unsupervised: the reference ignores labels. Each embedding is assigned to a random
//! meta-class (every proxy gets at least one), and the loss asks each embedding to be closer,
//! on the manifold, to its own proxy than to the others. The random walk's stationary
//! similarities are `F = (1−α)(I − α S̄)⁻¹`, one `(B+K)²` matrix inverse per call.
//!
//! Deviations from the reference: the inverse is taken in the embeddings' precision (the
//! reference always casts to float32); `lambdaC = ∞` means "context loss only" (the reference
//! would multiply by ∞). Mined tuples and reference sets are rejected, as the reference does.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

use super::{BuildContext, LossParams, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::LossTerm;
use crate::tuples::{Batch, Tuples};

/// Parameters of [`ManifoldLoss`] (reference defaults: K 50, lambdaC 1, alpha 0.8, margin 5e-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifoldParams {
    /// Embedding size; when absent it comes from the build context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l: Option<i64>,
    /// Number of proxies (meta-classes).
    #[serde(rename = "K")]
    pub k: i64,
    /// Weight of the context loss (`loss = int + λ_C · ctx`; ∞ = context loss only).
    #[serde(rename = "lambdaC")]
    pub lambda_c: f64,
    /// Random-walk parameter in (0, 1).
    pub alpha: f64,
    pub margin: f64,
}

impl Default for ManifoldParams {
    fn default() -> Self {
        ManifoldParams { l: None, k: 50, lambda_c: 1.0, alpha: 0.8, margin: 5e-4 }
    }
}

const NAME: &str = "manifold loss";

impl LossParams for ManifoldParams {
    fn validate(&self) -> Result<()> {
        if self.k < 1 {
            return Err(invalid(NAME, format!("K must be at least 1, got {}", self.k)));
        }
        if let Some(l) = self.l
            && l < 1
        {
            return Err(invalid(NAME, format!("l must be at least 1, got {l}")));
        }
        if self.lambda_c.is_nan() || self.lambda_c < 0.0 {
            return Err(invalid(NAME, format!("lambdaC must be non-negative, got {}", self.lambda_c)));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(invalid(NAME, format!("alpha must be in (0, 1), got {}", self.alpha)));
        }
        if !self.margin.is_finite() {
            return Err(invalid(NAME, format!("margin must be finite, got {}", self.margin)));
        }
        Ok(())
    }
    fn default_distance(&self) -> Option<Distance> {
        Some(Distance::cosine())
    }
    fn build(&self, distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        Ok(Box::new(ManifoldLoss::new(self.clone(), distance.unwrap_or_else(Distance::cosine), ctx)?))
    }
}

/// Manifold loss.
///
/// With `X = [E; P]` (embeddings then proxies), `S = exp(2·[sim(X, X)]₊)` with a zero diagonal,
/// `S̄ = D^{-1/2} S D^{-1/2}` (`D` the row sums), `F = (1−α)(I − α S̄)⁻¹`, and `c_i` the
/// meta-class of embedding i:
/// - intrinsic: `v_ik = F_{i,B+k} − F_{i,B+c_i} + margin`;
/// - context: `v_ik = cos(F_i·, F_{B+k}·) − cos(F_i·, F_{B+c_i}·) + margin`;
///
/// each `mean_i log(1 + Σ_{k≠c_i, v_ik ≥ 0} e^{v_ik})`, and `L = int + λ_C · ctx` (already
/// reduced).
///
/// # Shapes
/// embeddings [B, l] with B ≥ K, proxies [K, l] (learnable, `proxies`) → scalar.
pub struct ManifoldLoss {
    pub params: ManifoldParams,
    pub distance: Distance,
    proxies: Tensor,
}

impl ManifoldLoss {
    /// Builds the loss, creating the proxies `[K, l]` (standard normal) in `ctx.vars`.
    pub fn new(params: ManifoldParams, distance: Distance, ctx: &BuildContext) -> Result<ManifoldLoss> {
        params.validate()?;
        let l = match (params.l, ctx.embedding_size) {
            (Some(l), Some(e)) if l != e => return Err(invalid(NAME, format!("l = {l} differs from the embedding size {e}"))),
            (Some(l), _) | (None, Some(l)) => l,
            (None, None) => return Err(invalid(NAME, "needs the embedding size (l or the build context's embedding_size)")),
        };
        let proxies = ctx.vars.var("proxies", &[params.k, l], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        Ok(ManifoldLoss { params, distance, proxies })
    }

    /// Random meta-classes as the reference draws them: `0..K` once each, the rest uniform,
    /// then shuffled.
    pub fn random_meta_classes(&self, n: i64, device: Device) -> Result<Tensor> {
        let k = self.params.k;
        if n < k {
            return Err(CoreError::Shape(format!("manifold loss needs at least K = {k} embeddings, got {n}")));
        }
        let opts = (Kind::Int64, Device::Cpu);
        let rest = Tensor::randint(k, [n - k], opts);
        let mc = Tensor::cat(&[Tensor::arange(k, opts), rest], 0);
        Ok(mc.index_select(0, &Tensor::randperm(n, opts)).to_device(device))
    }

    /// The loss for explicit meta-classes (int64 [B], values in `0..K`).
    pub fn loss_with_meta_classes(&self, embeddings: &Tensor, meta_classes: &Tensor) -> Result<Tensor> {
        let (n, k) = (embeddings.size()[0], self.params.k);
        let l = self.proxies.size()[1];
        if embeddings.dim() != 2 || embeddings.size()[1] != l {
            return Err(CoreError::Shape(format!("manifold loss was built for embeddings of size {l}, got {:?}", embeddings.size())));
        }
        if meta_classes.size() != [n] {
            return Err(CoreError::Shape(format!("meta-classes must have shape [{n}], got {:?}", meta_classes.size())));
        }
        let (lo, hi) = (meta_classes.min().int64_value(&[]), meta_classes.max().int64_value(&[]));
        if lo < 0 || hi >= k {
            return Err(CoreError::LabelOutOfRange { label: if lo < 0 { lo } else { hi }, num_classes: k });
        }
        let kind = embeddings.kind();
        let mc = meta_classes.to_device(embeddings.device()).to_kind(Kind::Int64).unsqueeze(1);
        let x = Tensor::cat(&[embeddings.shallow_clone(), self.proxies.to_device(embeddings.device()).to_kind(kind)], 0);
        let eye = Tensor::eye(n + k, (kind, x.device()));
        let s = (self.distance.matrix(&x, None)?.clamp_min(0.0) / 0.5).exp();
        let s = &s - &s * &eye;
        let d = s.sum_dim_intlist(1, false, kind).pow_tensor_scalar(-0.5);
        let s_bar = d.unsqueeze(1) * s * d.unsqueeze(0);
        let inv_kind = if matches!(kind, Kind::Half | Kind::BFloat16) { Kind::Float } else { kind };
        let f = Tensor::linalg_inv(&(eye.to_kind(inv_kind) - s_bar.to_kind(inv_kind) * self.params.alpha)).to_kind(kind) * (1.0 - self.params.alpha);
        let margin = self.params.margin;
        let own = Tensor::arange(k, (Kind::Int64, x.device())).unsqueeze(0).eq_tensor(&mc).logical_not();
        let soft = |v: Tensor| -> Tensor {
            let v = &v - v.gather(1, &mc, false) + margin;
            let keep = own.logical_and(&v.ge(0.0));
            (v.masked_fill(&keep.logical_not(), f64::NEG_INFINITY).exp().sum_dim_intlist(1, false, kind) + 1.0).log().mean(kind)
        };
        let ctx = || {
            let rows = |t: Tensor| {
                let norm = t.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-8);
                t / norm
            };
            let fe = rows(f.narrow(0, 0, n));
            let fp = rows(f.narrow(0, n, k));
            soft(fe.matmul(&fp.tr()))
        };
        Ok(if self.params.lambda_c.is_infinite() { ctx() } else { soft(f.narrow(0, 0, n).narrow(1, n, k)) + ctx() * self.params.lambda_c })
    }
}

impl MetricLoss for ManifoldLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if tuples.is_some() {
            return Err(CoreError::Unsupported("manifold loss takes no mined tuples (its meta-classes are random)".into()));
        }
        if !batch.is_self() {
            return Err(CoreError::Unsupported("manifold loss does not support a separate reference set".into()));
        }
        let mc = self.random_meta_classes(batch.len(), batch.device())?;
        Ok(vec![LossTerm::reduced("loss", self.loss_with_meta_classes(batch.embeddings, &mc)?)])
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("proxies", self.proxies.shallow_clone())]
    }
}
