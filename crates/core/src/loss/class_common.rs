//! Plumbing shared by the classification-style losses (those that own a learnable class or proxy
//! matrix): building context checks, label-range checks, the reference library's miner weights
//! and cross-entropy.
//!
//! These losses index their weight matrix by label, so a label outside `0..num_classes` would be
//! an out-of-bounds gather deep inside libtorch; it is rejected up front as
//! [`CoreError::LabelOutOfRange`].

use tch::{Device, Kind, Tensor, nn};

use super::BuildContext;
use crate::error::{CoreError, Result, invalid};
use crate::reducer::{LossTerm, TermIndices};
use crate::tuples::{Batch, Tuples};

/// `(num_classes, embedding_size)` from the build context, or a clear error naming the loss.
pub(crate) fn classes_and_dim(ctx: &BuildContext, loss: &str) -> Result<(i64, i64)> {
    let c = ctx.num_classes.ok_or_else(|| invalid(loss, "num_classes is required: set it in the build context"))?;
    let d = ctx.embedding_size.ok_or_else(|| invalid(loss, "embedding_size is required: set it in the build context"))?;
    if c < 1 || d < 1 {
        return Err(invalid(loss, format!("num_classes ({c}) and embedding_size ({d}) must be positive")));
    }
    Ok((c, d))
}

/// A learnable weight created in the build context's variable store.
pub(crate) fn weight(ctx: &BuildContext, name: &str, dims: &[i64], init: nn::Init) -> Result<Tensor> {
    Ok(ctx.vars.f_var(name, dims, init)?)
}

/// `init` of PyTorch's `kaiming_uniform_(a = √5)` for a weight whose fan-in is `fan_in`:
/// uniform on `±1/√fan_in`.
pub(crate) fn kaiming_uniform_sqrt5(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform { lo: -bound, up: bound }
}

/// Checks what every classification loss needs of a batch: no separate reference set, int64-able
/// labels in `0..num_classes`, and embeddings of width `embedding_size`. Returns int64 labels.
pub(crate) fn check_classification_batch(batch: &Batch, loss: &str, num_classes: i64, embedding_size: i64) -> Result<Tensor> {
    if batch.reference.is_some() {
        return Err(CoreError::Unsupported(format!("{loss} does not support a separate reference set")));
    }
    let d = batch.embeddings.size()[1];
    if d != embedding_size {
        return Err(CoreError::Shape(format!("{loss} was built for embedding_size {embedding_size}, got embeddings of dimension {d}")));
    }
    let labels = batch.labels.to_kind(Kind::Int64);
    check_labels_in_range(&labels, num_classes)?;
    Ok(labels)
}

/// Fails with [`CoreError::LabelOutOfRange`] when a label is outside `0..num_classes`.
pub fn check_labels_in_range(labels: &Tensor, num_classes: i64) -> Result<()> {
    if labels.numel() == 0 {
        return Ok(());
    }
    let (lo, hi) = tch::no_grad(|| (labels.min().int64_value(&[]), labels.max().int64_value(&[])));
    if lo < 0 {
        return Err(CoreError::LabelOutOfRange { label: lo, num_classes });
    }
    if hi >= num_classes {
        return Err(CoreError::LabelOutOfRange { label: hi, num_classes });
    }
    Ok(())
}

/// The learnable weight in the embeddings' precision (a differentiable cast when they differ,
/// as the reference's `cast_types`); a device mismatch is an error.
pub(crate) fn as_embeddings_kind(w: &Tensor, emb: &Tensor, loss: &str) -> Result<Tensor> {
    if w.device() != emb.device() {
        return Err(CoreError::Unsupported(format!("{loss}: weights are on {:?} but embeddings on {:?}", w.device(), emb.device())));
    }
    Ok(if w.kind() != emb.kind() { w.to_kind(emb.kind()) } else { w.shallow_clone() })
}

/// Per-element weights from mined tuples (`lmu.convert_to_weights`): each batch element's count of
/// appearances in the tuples divided by the largest count; all ones without tuples (or with empty
/// tuples). With `using_ref` only anchors count (the others index a reference set).
///
/// # Shapes
/// → [n] in `kind` on `device`.
pub(crate) fn miner_weights(tuples: Option<&Tuples>, n: i64, using_ref: bool, kind: Kind, device: Device) -> Tensor {
    let ones = Tensor::ones([n], (kind, device));
    let Some(tuples) = tuples else { return ones };
    let parts: Vec<&Tensor> = match tuples {
        Tuples::Pairs(p) if using_ref => vec![&p.pos_anchor, &p.neg_anchor],
        Tuples::Pairs(p) => vec![&p.pos_anchor, &p.pos_other, &p.neg_anchor, &p.neg_other],
        Tuples::Triplets(t) if using_ref => vec![&t.anchor],
        Tuples::Triplets(t) => vec![&t.anchor, &t.positive, &t.negative],
    };
    if parts.iter().all(|t| t.numel() == 0) {
        return ones;
    }
    let all = Tensor::cat(&parts.iter().map(|t| t.to_kind(Kind::Int64).to_device(device)).collect::<Vec<_>>(), 0);
    let counts = all.bincount(None::<Tensor>, n).narrow(0, 0, n).to_kind(kind);
    let max = counts.max();
    counts / max
}

/// Per-row cross-entropy `−log softmax(logits)[label]` (PyTorch's `cross_entropy`, no reduction).
///
/// # Shapes
/// `logits` [n, C], `labels` [n] int64 → [n].
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    -logits.log_softmax(1, None::<Kind>).gather(1, &labels.unsqueeze(1), false).squeeze_dim(1)
}

/// A 0/1 mask with a one at `(i, labels[i])`.
///
/// # Shapes
/// `labels` [n] int64 → [n, num_classes] in `kind`.
pub(crate) fn one_hot(labels: &Tensor, num_classes: i64, kind: Kind) -> Tensor {
    labels.one_hot(num_classes).to_kind(kind)
}

/// The element term `loss` with one value per batch row.
pub(crate) fn element_term(values: Tensor) -> LossTerm {
    let rows = Tensor::arange(values.size()[0], (Kind::Int64, values.device()));
    LossTerm::new("loss", values, TermIndices::Element(rows))
}

/// Reference `lmu.logsumexp(x, keep_mask, add_one, dim)`: masked entries are −∞, a zero column is
/// appended when `add_one`, and lines with no kept entry give 0.
///
/// # Shapes
/// `x`, `keep` [a, b] → [b] for `dim = 0`, [a] for `dim = 1`.
pub(crate) fn masked_logsumexp(x: &Tensor, keep: &Tensor, add_one: bool, dim: i64) -> Tensor {
    let x = x.masked_fill(&keep.logical_not(), f64::NEG_INFINITY);
    let x = if add_one {
        let mut shape = x.size();
        shape[dim as usize] = 1;
        Tensor::cat(&[x.shallow_clone(), Tensor::zeros(shape.as_slice(), (x.kind(), x.device()))], dim)
    } else {
        x
    };
    let out = x.logsumexp([dim].as_slice(), false);
    let any = keep.any_dim(dim, false);
    out.masked_fill(&any.logical_not(), 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuples::Triplets;

    #[test]
    fn miner_weights_count_appearances() {
        let t = Tuples::Triplets(Triplets { anchor: Tensor::from_slice(&[0i64, 0]), positive: Tensor::from_slice(&[1i64, 1]), negative: Tensor::from_slice(&[2i64, 3]) });
        let w = miner_weights(Some(&t), 5, false, Kind::Float, Device::Cpu);
        assert_eq!(Vec::<f32>::try_from(w).unwrap(), vec![1.0, 1.0, 0.5, 0.5, 0.0]);
        let anchors_only = miner_weights(Some(&t), 5, true, Kind::Float, Device::Cpu);
        assert_eq!(Vec::<f32>::try_from(anchors_only).unwrap(), vec![1.0, 0.0, 0.0, 0.0, 0.0]);
        let none = miner_weights(None, 3, false, Kind::Float, Device::Cpu);
        assert_eq!(Vec::<f32>::try_from(none).unwrap(), vec![1.0; 3]);
    }

    #[test]
    fn masked_logsumexp_adds_one_and_zeroes_empty_lines() {
        let x = Tensor::from_slice(&[0.0f64, 1.0, 2.0, 3.0]).view([2, 2]);
        let keep = Tensor::from_slice(&[true, false, true, false]).view([2, 2]);
        let v = Vec::<f64>::try_from(masked_logsumexp(&x, &keep, true, 0)).unwrap();
        assert!((v[0] - (1.0f64 + 1.0 + 2.0f64.exp()).ln()).abs() < 1e-12);
        assert_eq!(v[1], 0.0);
    }

    #[test]
    fn labels_outside_the_classes_are_rejected() {
        assert!(check_labels_in_range(&Tensor::from_slice(&[0i64, 2]), 3).is_ok());
        assert!(matches!(check_labels_in_range(&Tensor::from_slice(&[0i64, 3]), 3), Err(CoreError::LabelOutOfRange { label: 3, num_classes: 3 })));
        assert!(matches!(check_labels_in_range(&Tensor::from_slice(&[-2i64, 1]), 3), Err(CoreError::LabelOutOfRange { label: -2, .. })));
    }
}
