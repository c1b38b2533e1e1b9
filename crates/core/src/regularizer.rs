//! Regularizers: extra loss terms on the embeddings or on a loss's weight matrix.
//!
//! They attach to a loss ([`crate::loss::LossSpec::embedding_regularizer`] /
//! `weight_regularizer`) and come back as ordinary element terms, so the loss's reducer
//! reduces them as the reference library does.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Result, invalid};
use crate::reducer::{LossTerm, TermIndices};

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
}

impl Regularizer {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if let Regularizer::Lp { p, power } = *self
            && !(p > 0.0 && power > 0.0 && p.is_finite() && power.is_finite())
        {
            return Err(invalid("lp regularizer", format!("p and power must be positive, got p={p}, power={power}")));
        }
        Ok(())
    }

    /// The per-row regularization values of `x`.
    ///
    /// # Shapes
    /// `x` [n, d] → [n].
    pub fn values(&self, x: &Tensor) -> Tensor {
        match *self {
            Regularizer::Lp { p, power } => {
                let n = x.norm_scalaropt_dim(p, [1i64].as_slice(), false);
                if power != 1.0 { n.pow_tensor_scalar(power) } else { n }
            }
            Regularizer::ZeroMean => x.sum_dim_intlist(1, false, x.kind()).abs(),
            Regularizer::CenterInvariant => {
                let sq = x.square().sum_dim_intlist(1, false, x.kind());
                (&sq - sq.mean(sq.kind())).square() / 4.0
            }
        }
    }

    /// The regularization as a weighted element term named `name`.
    pub fn term(&self, name: &'static str, x: &Tensor, weight: f64) -> Result<LossTerm> {
        let values = self.values(x) * weight;
        let rows = Tensor::arange(values.size()[0], (Kind::Int64, values.device()));
        Ok(LossTerm::new(name, values, TermIndices::Element(rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lp_is_row_norm() {
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0]).view([2, 2]);
        let v = Regularizer::Lp { p: 2.0, power: 1.0 }.values(&x);
        assert_eq!(Vec::<f32>::try_from(v).unwrap(), vec![5.0, 1.0]);
    }

    #[test]
    fn center_invariant_is_zero_for_equal_norms() {
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.0, -1.0]).view([2, 2]);
        assert_eq!(Regularizer::CenterInvariant.values(&x).abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
