//! Batches, label masks and mined tuples.
//!
//! A miner's output is a typed value — [`Pairs`] or [`Triplets`] — never a tuple whose length
//! carries its meaning. "No tuples given" means *all* valid tuples of the batch; losses that can
//! handle that implicitly (masks, streaming) never materialise the full list.

use tch::{Device, Kind, Tensor};

use crate::distance::{check_embeddings, check_pair};
use crate::error::{CoreError, Result};

/// Anchor–positive and anchor–negative index pairs (int64 tensors).
///
/// # Shapes
/// `pos_anchor`, `pos_other` [P]; `neg_anchor`, `neg_other` [N]. Anchors index the batch,
/// others index the reference set (the batch itself when there is none).
#[derive(Debug)]
pub struct Pairs {
    pub pos_anchor: Tensor,
    pub pos_other: Tensor,
    pub neg_anchor: Tensor,
    pub neg_other: Tensor,
}

/// Anchor–positive–negative index triplets (int64 tensors of equal length).
#[derive(Debug)]
pub struct Triplets {
    pub anchor: Tensor,
    pub positive: Tensor,
    pub negative: Tensor,
}

/// What a miner returns.
#[derive(Debug)]
pub enum Tuples {
    Pairs(Pairs),
    Triplets(Triplets),
}

impl Clone for Pairs {
    fn clone(&self) -> Self {
        Pairs {
            pos_anchor: self.pos_anchor.shallow_clone(),
            pos_other: self.pos_other.shallow_clone(),
            neg_anchor: self.neg_anchor.shallow_clone(),
            neg_other: self.neg_other.shallow_clone(),
        }
    }
}

impl Clone for Triplets {
    fn clone(&self) -> Self {
        Triplets { anchor: self.anchor.shallow_clone(), positive: self.positive.shallow_clone(), negative: self.negative.shallow_clone() }
    }
}

impl Pairs {
    /// Number of positive pairs.
    pub fn num_pos(&self) -> i64 {
        self.pos_anchor.size()[0]
    }
    /// Number of negative pairs.
    pub fn num_neg(&self) -> i64 {
        self.neg_anchor.size()[0]
    }
    /// Sorted `(anchor, other)` lists of the positive and negative pairs (for tests and reports).
    pub fn to_vecs(&self) -> (Vec<(i64, i64)>, Vec<(i64, i64)>) {
        let pairs = |a: &Tensor, b: &Tensor| zip_sorted(&[a, b]).into_iter().map(|r| (r[0], r[1])).collect();
        (pairs(&self.pos_anchor, &self.pos_other), pairs(&self.neg_anchor, &self.neg_other))
    }
    /// 0/1 float masks [n, m] with ones at the positive and at the negative pairs.
    pub fn masks(&self, n: i64, m: i64, device: Device) -> (Tensor, Tensor) {
        let opts = (Kind::Float, device);
        let one = Tensor::ones([1], opts);
        let pos = Tensor::zeros([n, m], opts).index_put(&[Some(self.pos_anchor.shallow_clone()), Some(self.pos_other.shallow_clone())], &one, false);
        let neg = Tensor::zeros([n, m], opts).index_put(&[Some(self.neg_anchor.shallow_clone()), Some(self.neg_other.shallow_clone())], &one, false);
        (pos, neg)
    }
}

impl Triplets {
    /// Number of triplets.
    pub fn len(&self) -> i64 {
        self.anchor.size()[0]
    }
    /// True when there is no triplet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sorted `(anchor, positive, negative)` list (for tests and reports).
    pub fn to_vec(&self) -> Vec<(i64, i64, i64)> {
        zip_sorted(&[&self.anchor, &self.positive, &self.negative]).into_iter().map(|r| (r[0], r[1], r[2])).collect()
    }
}

fn zip_sorted(cols: &[&Tensor]) -> Vec<Vec<i64>> {
    let cols: Vec<Vec<i64>> = cols.iter().map(|t| Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64)).unwrap_or_default()).collect();
    let n = cols.first().map_or(0, Vec::len);
    let mut rows: Vec<Vec<i64>> = (0..n).map(|i| cols.iter().map(|c| c[i]).collect()).collect();
    rows.sort();
    rows
}

/// A batch of embeddings with labels, optionally compared against a separate reference set.
///
/// # Shapes
/// `embeddings` [n, d], `labels` [n] (int64); `reference` = ([m, d], [m]).
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub embeddings: &'a Tensor,
    pub labels: &'a Tensor,
    pub reference: Option<(&'a Tensor, &'a Tensor)>,
}

impl<'a> Batch<'a> {
    /// A batch compared with itself.
    pub fn new(embeddings: &'a Tensor, labels: &'a Tensor) -> Self {
        Batch { embeddings, labels, reference: None }
    }
    /// A batch of queries compared with a separate reference set.
    pub fn with_reference(embeddings: &'a Tensor, labels: &'a Tensor, ref_emb: &'a Tensor, ref_labels: &'a Tensor) -> Self {
        Batch { embeddings, labels, reference: Some((ref_emb, ref_labels)) }
    }
    /// The reference embeddings (the batch itself when there is no reference set).
    pub fn ref_embeddings(&self) -> &'a Tensor {
        self.reference.map_or(self.embeddings, |r| r.0)
    }
    /// The reference labels.
    pub fn ref_labels(&self) -> &'a Tensor {
        self.reference.map_or(self.labels, |r| r.1)
    }
    /// True when the batch is compared with itself (self-pairs are then excluded).
    pub fn is_self(&self) -> bool {
        self.reference.is_none()
    }
    /// Batch size n.
    pub fn len(&self) -> i64 {
        self.embeddings.size()[0]
    }
    /// Always false for a validated batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reference size m.
    pub fn ref_len(&self) -> i64 {
        self.ref_embeddings().size()[0]
    }
    /// Device of the embeddings.
    pub fn device(&self) -> Device {
        self.embeddings.device()
    }

    /// Checks shapes, label kinds and finiteness; every loss and miner calls this first.
    pub fn validate(&self) -> Result<()> {
        check_pair(self.embeddings, self.reference.map(|r| r.0))?;
        check_labels(self.labels, self.len(), "labels")?;
        if let Some((e, l)) = self.reference {
            check_embeddings(e, "reference embeddings")?;
            check_labels(l, e.size()[0], "reference labels")?;
        }
        Ok(())
    }

    /// Boolean [n, m] masks: same label (self-pairs removed for a self batch) and different label.
    pub fn label_masks(&self) -> (Tensor, Tensor) {
        let matches = self.labels.unsqueeze(1).eq_tensor(&self.ref_labels().unsqueeze(0));
        let diffs = matches.logical_not();
        let matches = if self.is_self() {
            let eye = Tensor::eye(self.len(), (Kind::Bool, self.device()));
            matches.logical_and(&eye.logical_not())
        } else {
            matches
        };
        (matches, diffs)
    }

    /// Every positive and negative pair (`get_all_pairs_indices`).
    pub fn all_pairs(&self) -> Pairs {
        let (matches, diffs) = self.label_masks();
        let p = matches.nonzero();
        let n = diffs.nonzero();
        Pairs { pos_anchor: p.select(1, 0), pos_other: p.select(1, 1), neg_anchor: n.select(1, 0), neg_other: n.select(1, 1) }
    }

    /// Every valid triplet (`get_all_triplets_indices`), materialised; for small batches only —
    /// losses that need all triplets of large batches stream them instead.
    pub fn all_triplets(&self) -> Triplets {
        let (matches, diffs) = self.label_masks();
        let t = matches.unsqueeze(2).logical_and(&diffs.unsqueeze(1)).nonzero();
        Triplets { anchor: t.select(1, 0), positive: t.select(1, 1), negative: t.select(1, 2) }
    }

    /// The given tuples as pairs (`convert_to_pairs`): triplets (a, p, n) become (a, p) and (a, n).
    pub fn to_pairs(&self, tuples: Option<&Tuples>) -> Pairs {
        match tuples {
            None => self.all_pairs(),
            Some(Tuples::Pairs(p)) => p.clone(),
            Some(Tuples::Triplets(t)) => Pairs {
                pos_anchor: t.anchor.shallow_clone(),
                pos_other: t.positive.shallow_clone(),
                neg_anchor: t.anchor.shallow_clone(),
                neg_other: t.negative.shallow_clone(),
            },
        }
    }

    /// The given tuples as explicit triplets (`convert_to_triplets`); `None` gives all triplets.
    ///
    /// Pairs become triplets per anchor: its positives and negatives are paired up, the shorter
    /// list repeated to the length of the longer one, as the reference library does.
    pub fn to_triplets(&self, tuples: Option<&Tuples>) -> Triplets {
        match tuples {
            None => self.all_triplets(),
            Some(Tuples::Triplets(t)) => t.clone(),
            Some(Tuples::Pairs(p)) => pairs_to_triplets(p, self.len(), self.device()),
        }
    }
}

fn pairs_to_triplets(p: &Pairs, n: i64, device: Device) -> Triplets {
    let v = |t: &Tensor| Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64)).unwrap_or_default();
    let (a1, pp, a2, nn) = (v(&p.pos_anchor), v(&p.pos_other), v(&p.neg_anchor), v(&p.neg_other));
    let (mut ao, mut po, mut no) = (Vec::new(), Vec::new(), Vec::new());
    if !a1.is_empty() && !a2.is_empty() {
        for i in 0..n {
            let ps: Vec<i64> = a1.iter().zip(&pp).filter(|(a, _)| **a == i).map(|(_, x)| *x).collect();
            let ns: Vec<i64> = a2.iter().zip(&nn).filter(|(a, _)| **a == i).map(|(_, x)| *x).collect();
            if ps.is_empty() || ns.is_empty() {
                continue;
            }
            let len = ps.len().max(ns.len());
            for k in 0..len {
                ao.push(i);
                po.push(ps[k % ps.len()]);
                no.push(ns[k % ns.len()]);
            }
        }
    }
    let t = |x: Vec<i64>| Tensor::from_slice(&x).to_device(device);
    Triplets { anchor: t(ao), positive: t(po), negative: t(no) }
}

/// Checks that `labels` is a 1-D integer tensor of length `n`.
pub fn check_labels(labels: &Tensor, n: i64, what: &str) -> Result<()> {
    let size = labels.size();
    if size.len() != 1 || size[0] != n {
        return Err(CoreError::Shape(format!("{what} must have shape [{n}] to match the embeddings, got {size:?}")));
    }
    if labels.is_floating_point() || labels.kind() == Kind::Bool {
        return Err(CoreError::Shape(format!("{what} must be integers, got {:?}", labels.kind())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_data() -> (Tensor, Tensor) {
        (Tensor::zeros([4, 2], (Kind::Float, Device::Cpu)), Tensor::from_slice(&[0i64, 0, 1, 1]))
    }

    #[test]
    fn all_pairs_exclude_self_pairs() {
        let (e, l) = batch_data();
        let (pos, neg) = Batch::new(&e, &l).all_pairs().to_vecs();
        assert_eq!(pos, vec![(0, 1), (1, 0), (2, 3), (3, 2)]);
        assert_eq!(neg.len(), 8);
    }

    #[test]
    fn reference_set_keeps_diagonal() {
        let (e, l) = batch_data();
        let (pos, _) = Batch::with_reference(&e, &l, &e, &l).all_pairs().to_vecs();
        assert_eq!(pos.len(), 8);
    }

    #[test]
    fn all_triplets_count() {
        let (e, l) = batch_data();
        assert_eq!(Batch::new(&e, &l).all_triplets().len(), 4 * 2);
    }

    #[test]
    fn pairs_to_triplets_repeats_shorter_side() {
        let p = Pairs {
            pos_anchor: Tensor::from_slice(&[0i64]),
            pos_other: Tensor::from_slice(&[1i64]),
            neg_anchor: Tensor::from_slice(&[0i64, 0, 3]),
            neg_other: Tensor::from_slice(&[2i64, 3, 0]),
        };
        let t = pairs_to_triplets(&p, 4, Device::Cpu);
        assert_eq!(t.to_vec(), vec![(0, 1, 2), (0, 1, 3)]);
    }

    #[test]
    fn bad_labels_are_rejected() {
        let (e, _) = batch_data();
        let l = Tensor::from_slice(&[0i64, 1]);
        assert!(matches!(Batch::new(&e, &l).validate(), Err(CoreError::Shape(_))));
    }
}
