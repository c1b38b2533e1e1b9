//! Distances and similarities between embeddings.
//!
//! pytorch-metric-learning separates *what is compared* (the distance) from *how it is
//! penalised* (the loss). Every loss asks its distance for a matrix and then uses
//! [`Distance::is_inverted`]-aware helpers (`margin`, `smallest`, …) so the same loss works with a
//! distance (smaller is closer) or a similarity (larger is closer). The numbers follow
//! pytorch-metric-learning 2.9 exactly (same normalisation epsilon, `torch.cdist` for Lp).

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{CoreError, Result, invalid};

fn default_true() -> bool {
    true
}
fn default_p() -> f64 {
    2.0
}
fn default_power() -> f64 {
    1.0
}

/// A distance or similarity between embeddings, as a tagged configuration (`type = "lp"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Distance {
    /// `‖x − y‖_p ^ power` (pytorch-metric-learning's `LpDistance`).
    Lp {
        #[serde(default = "default_true")]
        normalize_embeddings: bool,
        #[serde(default = "default_p")]
        p: f64,
        #[serde(default = "default_power")]
        power: f64,
    },
    /// `x̂ · ŷ` of L2-normalised embeddings (`CosineSimilarity`); a similarity.
    /// `normalize_embeddings` must stay true (it is what makes it a cosine).
    Cosine {
        #[serde(default = "default_true")]
        normalize_embeddings: bool,
        #[serde(default = "default_p")]
        p: f64,
        #[serde(default = "default_power")]
        power: f64,
    },
    /// `x · y` (`DotProductSimilarity`); a similarity.
    DotProduct {
        #[serde(default = "default_true")]
        normalize_embeddings: bool,
        #[serde(default = "default_p")]
        p: f64,
        #[serde(default = "default_power")]
        power: f64,
    },
    /// Signal-to-noise ratio `Var(x − y) / Var(x)` (`SNRDistance`).
    Snr {
        #[serde(default = "default_true")]
        normalize_embeddings: bool,
        #[serde(default = "default_p")]
        p: f64,
        #[serde(default = "default_power")]
        power: f64,
    },
}

impl Default for Distance {
    fn default() -> Self {
        Distance::lp()
    }
}

impl Distance {
    /// Euclidean distance of normalised embeddings (the library default).
    pub fn lp() -> Self {
        Distance::Lp { normalize_embeddings: true, p: 2.0, power: 1.0 }
    }
    /// Squared Euclidean distance of normalised embeddings.
    pub fn lp_squared() -> Self {
        Distance::Lp { normalize_embeddings: true, p: 2.0, power: 2.0 }
    }
    /// Cosine similarity.
    pub fn cosine() -> Self {
        Distance::Cosine { normalize_embeddings: true, p: 2.0, power: 1.0 }
    }
    /// Dot product of normalised embeddings.
    pub fn dot_product() -> Self {
        Distance::DotProduct { normalize_embeddings: true, p: 2.0, power: 1.0 }
    }
    /// Signal-to-noise-ratio distance.
    pub fn snr() -> Self {
        Distance::Snr { normalize_embeddings: true, p: 2.0, power: 1.0 }
    }

    /// Checks the parameters (called when a configuration is loaded).
    pub fn validate(&self) -> Result<()> {
        let (p, power) = self.p_power();
        if !(p.is_finite() && p > 0.0) {
            return Err(invalid("distance", format!("p must be a positive number, got {p}")));
        }
        if !(power.is_finite() && power > 0.0) {
            return Err(invalid("distance", format!("power must be a positive number, got {power}")));
        }
        if let Distance::Cosine { normalize_embeddings: false, .. } = self {
            return Err(invalid("distance", "cosine similarity needs normalize_embeddings = true (use dot_product otherwise)"));
        }
        Ok(())
    }

    fn p_power(&self) -> (f64, f64) {
        match *self {
            Distance::Lp { p, power, .. } | Distance::Cosine { p, power, .. } | Distance::DotProduct { p, power, .. } | Distance::Snr { p, power, .. } => (p, power),
        }
    }

    /// True for similarities (larger means closer).
    pub fn is_inverted(&self) -> bool {
        matches!(self, Distance::Cosine { .. } | Distance::DotProduct { .. })
    }

    /// Whether embeddings are L_p-normalised before comparison.
    pub fn normalizes(&self) -> bool {
        match *self {
            Distance::Lp { normalize_embeddings, .. }
            | Distance::Cosine { normalize_embeddings, .. }
            | Distance::DotProduct { normalize_embeddings, .. }
            | Distance::Snr { normalize_embeddings, .. } => normalize_embeddings,
        }
    }

    /// `x / max(‖x‖_p, 1e-12)` row-wise when this distance normalises, else `x` itself.
    pub fn maybe_normalize(&self, x: &Tensor) -> Tensor {
        if self.normalizes() { normalize(x, self.p_power().0) } else { x.shallow_clone() }
    }

    /// The matrix between every query row and every reference row.
    ///
    /// # Shapes
    /// `query` [n, d], `reference` [m, d] (or `None` for the query itself) → [n, m].
    pub fn matrix(&self, query: &Tensor, reference: Option<&Tensor>) -> Result<Tensor> {
        check_pair(query, reference)?;
        let q = self.maybe_normalize(query);
        let r = match reference {
            Some(r) => self.maybe_normalize(r),
            None => q.shallow_clone(),
        };
        let (p, power) = self.p_power();
        let mat = match self {
            Distance::Lp { .. } => Tensor::cdist(&q, &r, p, None::<i64>),
            Distance::Cosine { .. } | Distance::DotProduct { .. } => q.matmul(&r.tr()),
            Distance::Snr { .. } => snr_matrix(&q, &r),
        };
        Ok(if power != 1.0 { mat.pow_tensor_scalar(power) } else { mat })
    }

    /// The distance between row i of `a` and row i of `b` (tuple-wise, not all pairs).
    ///
    /// # Shapes
    /// `a`, `b` [n, d] → [n].
    pub fn pairwise(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let a = self.maybe_normalize(a);
        let b = self.maybe_normalize(b);
        let (p, power) = self.p_power();
        let d = match self {
            // torch.nn.functional.pairwise_distance: ‖a − b + eps‖_p with eps = 1e-6.
            Distance::Lp { .. } => (&a - &b + 1e-6).norm_scalaropt_dim(p, [1i64].as_slice(), false),
            Distance::Cosine { .. } | Distance::DotProduct { .. } => (&a * &b).sum_dim_intlist(1, false, a.kind()),
            Distance::Snr { .. } => (&a - &b).var_dim(1, true, false) / a.var_dim(1, true, false),
        };
        if power != 1.0 { d.pow_tensor_scalar(power) } else { d }
    }

    /// How far `x` is from being better than `y`: `x − y` for a distance, `y − x` for a similarity.
    pub fn margin(&self, x: &Tensor, y: &Tensor) -> Tensor {
        if self.is_inverted() { y - x } else { x - y }
    }

    /// [`Distance::margin`] with a constant second argument.
    pub fn margin_to(&self, x: &Tensor, y: f64) -> Tensor {
        if self.is_inverted() { -x + y } else { x - y }
    }

    /// [`Distance::margin`] with a constant first argument.
    pub fn margin_from(&self, x: f64, y: &Tensor) -> Tensor {
        if self.is_inverted() { y - x } else { -y + x }
    }

    /// The closer of two values element-wise (min for a distance, max for a similarity).
    pub fn smallest(&self, x: &Tensor, y: &Tensor) -> Tensor {
        if self.is_inverted() { x.maximum(y) } else { x.minimum(y) }
    }

    /// The closest value along `dim` (min for a distance, max for a similarity) with its index.
    pub fn smallest_along(&self, x: &Tensor, dim: i64) -> (Tensor, Tensor) {
        if self.is_inverted() { x.max_dim(dim, false) } else { x.min_dim(dim, false) }
    }

    /// The farthest value along `dim` (max for a distance, min for a similarity) with its index.
    pub fn largest_along(&self, x: &Tensor, dim: i64) -> (Tensor, Tensor) {
        if self.is_inverted() { x.min_dim(dim, false) } else { x.max_dim(dim, false) }
    }

    /// `x` closer than `y` (x < y for a distance, x > y for a similarity); `or_equal` includes ties.
    pub fn closer(&self, x: &Tensor, y: &Tensor, or_equal: bool) -> Tensor {
        match (self.is_inverted(), or_equal) {
            (false, false) => x.lt_tensor(y),
            (false, true) => x.le_tensor(y),
            (true, false) => x.gt_tensor(y),
            (true, true) => x.ge_tensor(y),
        }
    }

    /// The value meaning "as far as possible" (−∞ for a similarity, +∞ for a distance) — for masking.
    pub fn worst_value(&self) -> f64 {
        if self.is_inverted() { f64::NEG_INFINITY } else { f64::INFINITY }
    }
}

/// Row-wise `x / max(‖x‖_p, 1e-12)` (torch.nn.functional.normalize).
///
/// # Shapes
/// `x` [n, d] → [n, d].
pub fn normalize(x: &Tensor, p: f64) -> Tensor {
    let norm = x.norm_scalaropt_dim(p, [1i64].as_slice(), true).clamp_min(1e-12);
    x / norm
}

/// `Var(q_i − r_j) / Var(q_i)` with the unbiased variance, without an [n, m, d] temporary.
///
/// `Var(q − r) = (‖q‖² + ‖r‖² − 2 q·r − (Σq − Σr)² / d) / (d − 1)`.
fn snr_matrix(q: &Tensor, r: &Tensor) -> Tensor {
    let d = q.size()[1] as f64;
    let k = q.kind();
    let qq = q.square().sum_dim_intlist(1, true, k);
    let rr = r.square().sum_dim_intlist(1, true, k).tr();
    let qs = q.sum_dim_intlist(1, true, k);
    let rs = r.sum_dim_intlist(1, true, k).tr();
    let sq = (&qq + &rr - q.matmul(&r.tr()) * 2.0 - (&qs - &rs).square() / d).clamp_min(0.0);
    let var_diff = sq / (d - 1.0);
    let var_q = q.var_dim(1, true, true);
    var_diff / var_q
}

/// Checks that `query` (and `reference`) are non-empty 2-D float tensors of equal width.
pub fn check_pair(query: &Tensor, reference: Option<&Tensor>) -> Result<()> {
    check_embeddings(query, "embeddings")?;
    if let Some(r) = reference {
        check_embeddings(r, "reference embeddings")?;
        if r.size()[1] != query.size()[1] {
            return Err(CoreError::Shape(format!("embeddings have dimension {} but reference embeddings have dimension {}", query.size()[1], r.size()[1])));
        }
    }
    Ok(())
}

/// Checks that `x` is a non-empty [n, d] floating tensor with finite values.
pub fn check_embeddings(x: &Tensor, what: &str) -> Result<()> {
    let size = x.size();
    if size.len() != 2 {
        return Err(CoreError::Shape(format!("{what} must be 2-D [batch, dim], got shape {size:?}")));
    }
    if size[0] == 0 {
        return Err(CoreError::Empty(format!("{what} have no rows")));
    }
    if size[1] == 0 {
        return Err(CoreError::Shape(format!("{what} have dimension 0")));
    }
    if !x.is_floating_point() {
        return Err(CoreError::Shape(format!("{what} must be floating point, got {:?}", x.kind())));
    }
    // CPU float32: read in place (two libtorch ops would be two OpenMP regions, see `fused`).
    let finite = crate::fused::with_cpu_f32(x, |v| v.iter().all(|f| f.is_finite())).unwrap_or_else(|| tch::no_grad(|| x.isfinite().all().int64_value(&[]) == 1));
    if !finite {
        return Err(CoreError::NonFinite(what.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn t(rows: &[[f32; 2]]) -> Tensor {
        Tensor::from_slice(&rows.concat()).view([rows.len() as i64, 2])
    }

    #[test]
    fn lp_unnormalized_is_euclidean() {
        let d = Distance::Lp { normalize_embeddings: false, p: 2.0, power: 1.0 };
        let m = d.matrix(&t(&[[0.0, 0.0], [3.0, 4.0]]), None).unwrap();
        assert!((m.double_value(&[0, 1]) - 5.0).abs() < 1e-6);
        assert!(m.double_value(&[1, 1]).abs() < 1e-6);
    }

    #[test]
    fn cosine_is_a_similarity_in_minus_one_one() {
        let d = Distance::cosine();
        assert!(d.is_inverted());
        let m = d.matrix(&t(&[[1.0, 0.0], [-2.0, 0.0]]), None).unwrap();
        assert!((m.double_value(&[0, 1]) + 1.0).abs() < 1e-6);
        assert!((m.double_value(&[0, 0]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn non_finite_and_shape_errors_are_typed() {
        let d = Distance::lp();
        let bad = Tensor::from_slice(&[f32::NAN, 1.0]).view([1, 2]);
        assert!(matches!(d.matrix(&bad, None), Err(CoreError::NonFinite(_))));
        let a = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(d.matrix(&a, Some(&b)), Err(CoreError::Shape(_))));
        let e = Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu));
        assert!(matches!(d.matrix(&e, None), Err(CoreError::Empty(_))));
    }

    #[test]
    fn config_round_trips_with_defaults() {
        let d: Distance = serde_json::from_str(r#"{"type": "lp", "power": 2.0}"#).unwrap();
        assert_eq!(d, Distance::lp_squared());
        assert!(serde_json::from_str::<Distance>(r#"{"type": "lp", "powr": 2.0}"#).is_err());
        assert!(Distance::Lp { normalize_embeddings: true, p: -1.0, power: 1.0 }.validate().is_err());
    }
}
