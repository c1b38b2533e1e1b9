//! Reducers: how a loss's many per-tuple values become one number.
//!
//! A loss returns [`LossTerm`]s; each carries its values and *what they are indexed by*
//! ([`TermIndices`]: elements, positive pairs, negative pairs, triplets, or already reduced), so a
//! reducer can weight by anchor or class without guessing. The loss value is the sum over terms of
//! each term's reduction, exactly as pytorch-metric-learning's `MultipleReducers` does.
//!
//! Terms whose values would be too many to hold (all triplets of a large batch) are
//! [`TermLosses::Streamed`]: the reducer asks them for a [`Separable`] reduction (filter + sum +
//! divide), which they compute block by block; only reducers that need every value (per-anchor,
//! class-weighted) make them materialise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{CoreError, Result, invalid};
use crate::tuples::Batch;

/// What the values of a term are indexed by (pytorch-metric-learning's `reduction_type`).
#[derive(Debug)]
pub enum TermIndices {
    /// One value per element; the tensor holds the batch row (or class) of each value.
    Element(Tensor),
    /// One value per positive pair (anchor, other).
    PosPair(Tensor, Tensor),
    /// One value per negative pair (anchor, other).
    NegPair(Tensor, Tensor),
    /// One value per triplet (anchor, positive, negative).
    Triplet(Tensor, Tensor, Tensor),
    /// A single value, already reduced by the loss.
    AlreadyReduced,
}

impl TermIndices {
    /// The row each value belongs to (elements and anchors), if any.
    fn anchors(&self) -> Option<&Tensor> {
        match self {
            TermIndices::Element(i) | TermIndices::PosPair(i, _) | TermIndices::NegPair(i, _) | TermIndices::Triplet(i, _, _) => Some(i),
            TermIndices::AlreadyReduced => None,
        }
    }
    /// Short name of the reduction kind (for messages and stats).
    pub fn kind_name(&self) -> &'static str {
        match self {
            TermIndices::Element(_) => "element",
            TermIndices::PosPair(..) => "pos_pair",
            TermIndices::NegPair(..) => "neg_pair",
            TermIndices::Triplet(..) => "triplet",
            TermIndices::AlreadyReduced => "already_reduced",
        }
    }
}

/// A reduction that is a filtered sum divided by something: mean, sum, avg-non-zero, threshold
/// and divisor reducers are all of this form, so streamed terms can compute them block by block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Separable {
    /// Keep values `> low`.
    pub low: Option<f64>,
    /// Keep values `< high`.
    pub high: Option<f64>,
    /// What the kept sum is divided by.
    pub denominator: Denominator,
}

/// Divisor of a [`Separable`] reduction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Denominator {
    /// The number of values kept (a mean); no value kept gives a zero loss.
    Kept,
    /// Nothing (a sum).
    One,
    /// A fixed divisor given by the loss; zero gives a zero loss.
    Fixed(f64),
}

impl Denominator {
    /// The divisor for `kept` kept values (0 means the reduction is a zero loss).
    pub fn divisor(self, kept: f64) -> f64 {
        match self {
            Denominator::Kept => kept,
            Denominator::One => 1.0,
            Denominator::Fixed(x) => x,
        }
    }
}

/// A term whose values are computed on demand, block by block.
pub trait StreamedTerm: Send {
    /// The separable reduction of all values, with gradients.
    fn reduce(&self, how: Separable) -> Result<Tensor>;
    /// Every value with its indices (for reducers that need them all).
    fn materialize(&self) -> Result<(Tensor, TermIndices)>;
}

/// The values of a term.
pub enum TermLosses {
    /// No tuple existed: the term contributes a zero that keeps the graph (`sum(embeddings · 0)`).
    Zero,
    /// The values, one per index (or a scalar for [`TermIndices::AlreadyReduced`]).
    Values(Tensor),
    /// Values computed on demand.
    Streamed(Box<dyn StreamedTerm>),
}

/// One named part of a loss (e.g. `pos_loss`, `neg_loss`, `embedding_reg_loss`).
pub struct LossTerm {
    pub name: &'static str,
    pub losses: TermLosses,
    pub indices: TermIndices,
    /// Divisor for [`Reducer::Divisor`], when the loss defines one.
    pub divisor: Option<f64>,
}

impl LossTerm {
    /// A term of values with their indices.
    pub fn new(name: &'static str, losses: Tensor, indices: TermIndices) -> Self {
        LossTerm { name, losses: TermLosses::Values(losses), indices, divisor: None }
    }
    /// A term that is zero because no tuple existed.
    pub fn zero(name: &'static str) -> Self {
        LossTerm { name, losses: TermLosses::Zero, indices: TermIndices::AlreadyReduced, divisor: None }
    }
    /// A scalar the loss reduced itself.
    pub fn reduced(name: &'static str, value: Tensor) -> Self {
        LossTerm { name, losses: TermLosses::Values(value), indices: TermIndices::AlreadyReduced, divisor: None }
    }
}

/// How loss values are reduced to a scalar, as a tagged configuration (`type = "avg_non_zero"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reducer {
    /// Mean of all values.
    #[serde(alias = "MeanReducer")]
    Mean,
    /// Sum of all values.
    #[serde(alias = "SumReducer")]
    Sum,
    /// Mean of the values > 0.
    #[serde(alias = "AvgNonZeroReducer")]
    AvgNonZero,
    /// Mean of the values with `low < value < high`.
    #[serde(alias = "ThresholdReducer")]
    Threshold {
        #[serde(default)]
        low: Option<f64>,
        #[serde(default)]
        high: Option<f64>,
    },
    /// Sum divided by the divisor the loss provides.
    #[serde(alias = "DivisorReducer")]
    Divisor,
    /// Values first averaged per anchor (pairs and triplets), then reduced by `reducer` (default mean).
    #[serde(alias = "PerAnchorReducer")]
    PerAnchor {
        #[serde(default)]
        reducer: Option<Box<Reducer>>,
    },
    /// Mean of the values, each weighted by the class weight of its element or anchor.
    #[serde(alias = "ClassWeightedReducer")]
    ClassWeighted { weights: Vec<f64> },
    /// No reduction: only [`crate::loss::Loss::terms`] can be used.
    #[serde(alias = "DoNothingReducer")]
    DoNothing,
    /// One reducer per term name; `default` (mean) for the others.
    #[serde(alias = "MultipleReducers")]
    Multiple {
        reducers: BTreeMap<String, Reducer>,
        #[serde(default)]
        default: Option<Box<Reducer>>,
    },
}

impl Reducer {
    /// Checks the parameters (called when a configuration is loaded).
    pub fn validate(&self) -> Result<()> {
        match self {
            Reducer::Threshold { low, high } => {
                if low.is_none() && high.is_none() {
                    return Err(invalid("threshold reducer", "set low, high or both"));
                }
                if let (Some(l), Some(h)) = (low, high)
                    && l >= h
                {
                    return Err(invalid("threshold reducer", format!("low ({l}) must be below high ({h})")));
                }
                Ok(())
            }
            Reducer::ClassWeighted { weights } if weights.iter().any(|w| !w.is_finite()) => Err(invalid("class_weighted reducer", "weights must be finite")),
            Reducer::PerAnchor { reducer: Some(r) } => r.validate(),
            Reducer::Multiple { reducers, default } => {
                reducers.values().try_for_each(Reducer::validate)?;
                default.as_ref().map_or(Ok(()), |d| d.validate())
            }
            _ => Ok(()),
        }
    }

    /// This reducer as a filtered sum, when it is one.
    pub fn separable(&self, divisor: Option<f64>) -> Option<Separable> {
        let s = |low, high, denominator| Some(Separable { low, high, denominator });
        match *self {
            Reducer::Mean => s(None, None, Denominator::Kept),
            Reducer::Sum => s(None, None, Denominator::One),
            Reducer::AvgNonZero => s(Some(0.0), None, Denominator::Kept),
            Reducer::Threshold { low, high } => s(low, high, Denominator::Kept),
            Reducer::Divisor => divisor.and_then(|d| s(None, None, Denominator::Fixed(d))),
            _ => None,
        }
    }

    /// The reducer that applies to the term `name`.
    fn for_term(&self, name: &str) -> &Reducer {
        match self {
            Reducer::Multiple { reducers, default } => reducers.get(name).unwrap_or(default.as_deref().unwrap_or(&Reducer::Mean)),
            r => r,
        }
    }

    /// Reduces every term and sums the results.
    pub fn reduce_terms(&self, terms: Vec<LossTerm>, batch: &Batch) -> Result<Tensor> {
        if matches!(self, Reducer::DoNothing) {
            return Err(CoreError::Unsupported("the do_nothing reducer returns no scalar: use Loss::terms()".into()));
        }
        let mut total: Option<Tensor> = None;
        for term in terms {
            let v = self.for_term(term.name).reduce_term(term, batch)?;
            total = Some(match total {
                Some(t) => t + v,
                None => v,
            });
        }
        Ok(total.unwrap_or_else(|| zero_loss(batch.embeddings)))
    }

    /// Reduces one term to a scalar.
    pub fn reduce_term(&self, term: LossTerm, batch: &Batch) -> Result<Tensor> {
        let LossTerm { losses, indices, divisor, name } = term;
        let (values, indices) = match losses {
            TermLosses::Zero => return Ok(zero_loss(batch.embeddings)),
            TermLosses::Streamed(s) => {
                if let Some(how) = self.separable(divisor) {
                    return s.reduce(how);
                }
                s.materialize()?
            }
            TermLosses::Values(v) => (v, indices),
        };
        if let TermIndices::AlreadyReduced = indices {
            return Ok(values.sum(values.kind()));
        }
        let values = values.flatten(0, -1);
        match self {
            Reducer::Divisor if divisor.is_none() => Err(CoreError::Unsupported(format!("the divisor reducer needs a divisor, which term '{name}' does not provide"))),
            Reducer::PerAnchor { reducer } => {
                let inner = reducer.as_deref().unwrap_or(&Reducer::Mean);
                let per_anchor = per_anchor_values(&values, &indices, batch)?;
                let rows = Tensor::arange(per_anchor.size()[0], (Kind::Int64, values.device()));
                inner.reduce_term(LossTerm::new(name, per_anchor, TermIndices::Element(rows)), batch)
            }
            Reducer::ClassWeighted { weights } => {
                let anchors = indices.anchors().expect("not already reduced");
                let labels = batch.labels.index_select(0, anchors);
                let w = Tensor::from_slice(weights).to_kind(values.kind()).to_device(values.device());
                let max_label = labels.max().int64_value(&[]);
                if max_label >= weights.len() as i64 {
                    return Err(CoreError::LabelOutOfRange { label: max_label, num_classes: weights.len() as i64 });
                }
                Ok((&values * w.index_select(0, &labels)).mean(values.kind()))
            }
            Reducer::DoNothing | Reducer::Multiple { .. } => unreachable!("resolved by reduce_terms"),
            r => Ok(separable_reduce(&values, r.separable(divisor).expect("separable"), batch.embeddings)),
        }
    }
}

/// `sum(embeddings · 0)`: a zero that keeps the autograd graph (and so zero gradients).
pub fn zero_loss(embeddings: &Tensor) -> Tensor {
    (embeddings * 0.0).sum(embeddings.kind())
}

/// Applies a separable reduction to explicit values.
pub fn separable_reduce(values: &Tensor, how: Separable, embeddings: &Tensor) -> Tensor {
    if values.numel() == 0 {
        // The reference would return NaN (mean of nothing); no tuple means no loss.
        return zero_loss(embeddings);
    }
    let mut keep: Option<Tensor> = None;
    let mut and = |m: Tensor| {
        keep = Some(match keep.take() {
            Some(k) => k.logical_and(&m),
            None => m,
        })
    };
    if let Some(l) = how.low {
        and(values.gt(l));
    }
    if let Some(h) = how.high {
        and(values.lt(h));
    }
    match (keep, how.denominator) {
        (None, Denominator::Kept) => values.mean(values.kind()),
        (None, Denominator::One) => values.sum(values.kind()),
        (None, Denominator::Fixed(d)) => {
            if d != 0.0 {
                values.sum(values.kind()) / d
            } else {
                zero_loss(embeddings)
            }
        }
        (Some(k), den) => {
            let kept = values.masked_select(&k);
            let n = kept.size()[0];
            match den {
                Denominator::Kept if n >= 1 => kept.mean(kept.kind()),
                Denominator::One => kept.sum(kept.kind()),
                Denominator::Fixed(d) if d != 0.0 => kept.sum(kept.kind()) / d,
                _ => (values * 0.0).sum(values.kind()),
            }
        }
    }
}

/// Averages pair or triplet values per anchor row (rows without any value give 0).
fn per_anchor_values(values: &Tensor, indices: &TermIndices, batch: &Batch) -> Result<Tensor> {
    let n = batch.len();
    let opts = (values.kind(), values.device());
    match indices {
        TermIndices::Element(_) => Ok(values.shallow_clone()),
        TermIndices::PosPair(a, o) | TermIndices::NegPair(a, o) => {
            // As the reference: later duplicates overwrite earlier ones, +inf marks empty cells.
            let m = batch.ref_len();
            let grid = Tensor::full([n, m], f64::INFINITY, opts).index_put(&[Some(a.shallow_clone()), Some(o.shallow_clone())], values, false);
            let empty = grid.isinf();
            let count = empty.logical_not().sum_dim_intlist(1, false, values.kind());
            let sums = grid.masked_fill(&empty, 0.0).sum_dim_intlist(1, false, values.kind());
            Ok((&sums / count.clamp_min(1.0)).masked_fill(&count.eq(0.0), 0.0))
        }
        TermIndices::Triplet(a, _, _) => {
            let sums = Tensor::zeros([n], opts).index_add(0, a, values);
            let count = Tensor::zeros([n], opts).index_add(0, a, &values.ones_like());
            Ok((&sums / count.clamp_min(1.0)).masked_fill(&count.eq(0.0), 0.0))
        }
        TermIndices::AlreadyReduced => Err(CoreError::Unsupported("per-anchor reduction of an already reduced term".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn batch_tensors() -> (Tensor, Tensor) {
        (Tensor::ones([3, 2], (Kind::Float, Device::Cpu)), Tensor::from_slice(&[0i64, 1, 1]))
    }

    fn elem(v: &[f32]) -> LossTerm {
        LossTerm::new("loss", Tensor::from_slice(v), TermIndices::Element(Tensor::arange(v.len() as i64, (Kind::Int64, Device::Cpu))))
    }

    #[test]
    fn mean_sum_avg_non_zero_threshold() {
        let (e, l) = batch_tensors();
        let b = Batch::new(&e, &l);
        let v = [0.0f32, 1.0, 2.0, 3.0];
        let r = |red: Reducer| red.reduce_term(elem(&v), &b).unwrap().double_value(&[]);
        assert!((r(Reducer::Mean) - 1.5).abs() < 1e-6);
        assert!((r(Reducer::Sum) - 6.0).abs() < 1e-6);
        assert!((r(Reducer::AvgNonZero) - 2.0).abs() < 1e-6);
        assert!((r(Reducer::Threshold { low: Some(0.5), high: Some(2.5) }) - 1.5).abs() < 1e-6);
        assert_eq!(r(Reducer::Threshold { low: Some(10.0), high: None }), 0.0);
    }

    #[test]
    fn class_weighted_uses_anchor_labels() {
        let (e, l) = batch_tensors();
        let b = Batch::new(&e, &l);
        let term = LossTerm::new("loss", Tensor::from_slice(&[1.0f32, 1.0, 1.0]), TermIndices::Element(Tensor::from_slice(&[0i64, 1, 2])));
        let v = Reducer::ClassWeighted { weights: vec![3.0, 0.0] }.reduce_term(term, &b).unwrap().double_value(&[]);
        assert!((v - 1.0).abs() < 1e-6);
    }

    #[test]
    fn per_anchor_averages_rows_then_means() {
        let (e, l) = batch_tensors();
        let b = Batch::new(&e, &l);
        let a = Tensor::from_slice(&[0i64, 0, 1]);
        let o = Tensor::from_slice(&[1i64, 2, 2]);
        let term = LossTerm::new("loss", Tensor::from_slice(&[1.0f32, 3.0, 6.0]), TermIndices::PosPair(a, o));
        let v = Reducer::PerAnchor { reducer: None }.reduce_term(term, &b).unwrap().double_value(&[]);
        // rows: 2, 6, 0 → mean 8/3
        assert!((v - 8.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn threshold_needs_a_bound() {
        assert!(Reducer::Threshold { low: None, high: None }.validate().is_err());
        assert!(Reducer::Threshold { low: Some(1.0), high: Some(0.5) }.validate().is_err());
        let r: Reducer = serde_json::from_str(r#"{"type": "ThresholdReducer", "low": 0.1}"#).unwrap();
        assert_eq!(r, Reducer::Threshold { low: Some(0.1), high: None });
    }
}
