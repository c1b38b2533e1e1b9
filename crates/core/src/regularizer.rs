//! Regularizers: extra loss terms on the embeddings or on a loss's weight matrix.
//!
//! They attach to a loss ([`crate::loss::LossSpec::embedding_regularizer`] /
//! `weight_regularizer`). As in the reference library (2.x), a regularizer reduces its own values
//! with its own reducer — the mean, or for `sparse_centers` a sum divided by twice the number of
//! compared centre pairs — and the loss receives one *already reduced* term, which every loss
//! reducer passes through unchanged. (Reducing the values with the loss's reducer instead would
//! differ from the reference for avg-non-zero, threshold and divisor reducers.)
//!
//! Weight regularizers see the weight matrix with one row per class (or proxy / centre): losses
//! that store `W` as [embedding_size × classes] hand over `Wᵀ`, as the reference does.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::distance::normalize;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::LossTerm;

fn two() -> f64 {
    2.0
}
fn one() -> f64 {
    1.0
}

/// A regularizer, as a tagged configuration (`type = "lp"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Regularizer {
    /// `‖x_i‖_p ^ power` per row.
    #[serde(alias = "LpRegularizer")]
    Lp {
        #[serde(default = "two")]
        p: f64,
        #[serde(default = "one")]
        power: f64,
    },
    /// `|Σ_j w_ij|` per row: pushes each row's mean to zero.
    #[serde(alias = "ZeroMeanRegularizer")]
    ZeroMean,
    /// `(‖w_i‖² − mean_k ‖w_k‖²)² / 4` per row: equal-norm class centres.
    #[serde(alias = "CenterInvariantRegularizer")]
    CenterInvariant,
    /// SoftTriple's centre regularizer: `Σ_{same-class centre pairs j<k} √(2 + ε − min(2 cos_jk, 2))`
    /// divided by twice the number of such pairs (rows are centres, `centers_per_class` per
    /// class, class-major as SoftTriple's `fcᵀ`).
    #[serde(alias = "SparseCentersRegularizer")]
    SparseCenters {
        /// Checked against the number of rows when given; otherwise rows / centers_per_class.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        num_classes: Option<i64>,
        centers_per_class: i64,
    },
    /// RegularFace: per class row, the cosine to its most similar other class; mean over rows.
    #[serde(alias = "RegularFaceRegularizer")]
    RegularFace,
}

impl Regularizer {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if let Regularizer::Lp { p, power } = *self
            && !(p > 0.0 && power > 0.0 && p.is_finite() && power.is_finite())
        {
            return Err(invalid("lp regularizer", format!("p and power must be positive, got p={p}, power={power}")));
        }
        if let Regularizer::SparseCenters { num_classes, centers_per_class } = *self {
            if centers_per_class < 2 {
                return Err(invalid("sparse_centers regularizer", format!("centers_per_class must be at least 2, got {centers_per_class}")));
            }
            if let Some(c) = num_classes
                && c < 1
            {
                return Err(invalid("sparse_centers regularizer", format!("num_classes must be positive, got {c}")));
            }
        }
        Ok(())
    }

    /// The values this regularizer reduces: one per row of `x`, except `sparse_centers` (one per
    /// same-class centre pair j < k, class by class).
    ///
    /// # Shapes
    /// `x` [n, d] → [n] (or [num_classes · K(K−1)/2] for `sparse_centers`).
    pub fn values(&self, x: &Tensor) -> Result<Tensor> {
        check_matrix(x)?;
        Ok(match *self {
            Regularizer::Lp { p, power } => {
                let n = x.norm_scalaropt_dim(p, [1i64].as_slice(), false);
                if power != 1.0 { n.pow_tensor_scalar(power) } else { n }
            }
            Regularizer::ZeroMean => x.sum_dim_intlist(1, false, None::<Kind>).abs(),
            Regularizer::CenterInvariant => {
                let sq = x.square().sum_dim_intlist(1, false, None::<Kind>);
                (&sq - sq.mean(None::<Kind>)).square() / 4.0
            }
            Regularizer::SparseCenters { num_classes, centers_per_class } => {
                let rows = x.size()[0];
                let c = rows / centers_per_class;
                if rows % centers_per_class != 0 || num_classes.is_some_and(|n| n != c) {
                    return Err(CoreError::Shape(format!(
                        "sparse_centers regularizer: {rows} weight rows do not make {} classes of {centers_per_class} centres",
                        num_classes.map_or_else(|| "whole".to_string(), |n| n.to_string())
                    )));
                }
                let xn = normalize(x, 2.0);
                let cos = xn.matmul(&xn.tr());
                let mask = same_class_upper_mask(c, centers_per_class, x.device());
                let tiny = match x.kind() {
                    Kind::Double => f64::MIN_POSITIVE,
                    Kind::Half => 6.103_515_625e-5,
                    Kind::BFloat16 => 1.175_494_4e-38,
                    _ => f32::MIN_POSITIVE as f64,
                };
                (-(cos.masked_select(&mask) * 2.0).clamp_max(2.0) + (2.0 + tiny)).sqrt()
            }
            Regularizer::RegularFace => {
                let xn = normalize(x, 2.0);
                let cos = xn.matmul(&xn.tr());
                let n = x.size()[0];
                let nearest = tch::no_grad(|| {
                    let eye = Tensor::eye(n, (Kind::Bool, x.device()));
                    cos.masked_fill(&eye, f64::NEG_INFINITY).argmax(1, true)
                });
                cos.gather(1, &nearest, false).squeeze_dim(1)
            }
        })
    }

    /// The regularization loss of `x`, reduced as the reference's default reducer does (mean;
    /// sum / (2 · number of pairs) for `sparse_centers`).
    pub fn loss(&self, x: &Tensor) -> Result<Tensor> {
        let v = self.values(x)?;
        Ok(match self {
            Regularizer::SparseCenters { .. } => {
                let pairs = v.size()[0];
                if pairs == 0 { (x * 0.0).sum(None::<Kind>) } else { v.sum(None::<Kind>) / (2.0 * pairs as f64) }
            }
            _ => v.mean(None::<Kind>),
        })
    }

    /// The regularization as an already-reduced term named `name`: `weight · loss(x)`.
    pub fn term(&self, name: &'static str, x: &Tensor, weight: f64) -> Result<LossTerm> {
        Ok(LossTerm::reduced(name, self.loss(x)? * weight))
    }
}

fn check_matrix(x: &Tensor) -> Result<()> {
    let size = x.size();
    if size.len() != 2 || size[0] == 0 {
        return Err(CoreError::Shape(format!("a regularizer needs a non-empty 2-D matrix, got shape {size:?}")));
    }
    Ok(())
}

/// True at (j, k), j < k, when centres j and k belong to the same class.
///
/// # Shapes
/// → [C·K, C·K] bool.
fn same_class_upper_mask(num_classes: i64, k: i64, device: tch::Device) -> Tensor {
    let class = Tensor::arange(num_classes * k, (Kind::Int64, device)).divide_scalar_mode(k, "floor");
    let same = class.unsqueeze(1).eq_tensor(&class.unsqueeze(0));
    same.triu(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lp_is_row_norm() {
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0]).view([2, 2]);
        let v = Regularizer::Lp { p: 2.0, power: 1.0 }.values(&x).unwrap();
        assert_eq!(Vec::<f32>::try_from(v).unwrap(), vec![5.0, 1.0]);
    }

    #[test]
    fn center_invariant_is_zero_for_equal_norms() {
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.0, -1.0]).view([2, 2]);
        assert_eq!(Regularizer::CenterInvariant.values(&x).unwrap().abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
