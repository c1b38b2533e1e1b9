//! Losses that wrap other losses: CrossBatchMemory, SelfSupervisedLoss and MultipleLosses.
//!
//! A wrapper calls its inner [`Loss`] on a batch it builds itself (the batch against a memory
//! bank, the two views of a self-supervised batch, or the same batch for each of several losses).
//! The inner loss's terms are indexed by *that* batch, and a reducer needs the batch its indices
//! refer to (per-anchor and class-weighted reducers look rows up), so each wrapper reduces every
//! inner term with the inner loss's own reducer and returns it as an already-reduced term — as
//! the reference library, whose wrappers return the inner loss's reduced value. A reducer set on
//! the wrapper itself therefore only sums these terms; configure reducers on the inner losses.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::{BuildContext, Loss, LossParams, LossSpec, MetricLoss};
use crate::distance::Distance;
use crate::error::{CoreError, Result, invalid};
use crate::miner::{MinerBox, MinerSpec};
use crate::reducer::LossTerm;
use crate::tuples::{Batch, Pairs, Triplets, Tuples};

/// A `&'static str` for a name built at run time; each distinct name is leaked once (names are a
/// small fixed set per configuration: wrapper index × inner term name).
fn intern(name: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&n) = set.get(name.as_str()) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    set.insert(leaked);
    leaked
}

/// Every term of `inner` on `batch`, each reduced by the inner loss's reducer against `batch`.
fn reduced_terms(inner: &Loss, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<(&'static str, Tensor)>> {
    let reducer = inner.reducer();
    inner.terms(batch, tuples)?.into_iter().map(|t| Ok((t.name, reducer.reduce_terms(vec![t], batch)?))).collect()
}

fn default_memory_size() -> i64 {
    1024
}

/// Parameters of CrossBatchMemory (reference default: `memory_size = 1024`, no miner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossBatchMemoryParams {
    /// The loss computed between the batch and the memory (a pair or triplet loss).
    pub loss: Box<LossSpec>,
    /// How many past embeddings are kept.
    #[serde(default = "default_memory_size")]
    pub memory_size: i64,
    /// Mines the batch against the memory; all pairs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miner: Option<MinerSpec>,
}

impl LossParams for CrossBatchMemoryParams {
    fn validate(&self) -> Result<()> {
        if self.memory_size < 1 {
            return Err(invalid("CrossBatchMemory", format!("memory_size must be positive, got {}", self.memory_size)));
        }
        self.loss.validate()?;
        self.miner.as_ref().map_or(Ok(()), MinerSpec::validate)
    }
    fn default_distance(&self) -> Option<Distance> {
        None
    }
    fn build(&self, _distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let embedding_size = ctx.embedding_size.ok_or_else(|| invalid("CrossBatchMemory", "embedding_size is required: set it in the build context"))?;
        let inner = self.loss.build(ctx)?;
        let miner = self.miner.as_ref().map(MinerSpec::build).transpose()?;
        Ok(Box::new(CrossBatchMemory { inner, miner, embedding_size, memory_size: self.memory_size, memory: Mutex::new(Memory::default()) }))
    }
}

/// The ring buffer of CrossBatchMemory.
#[derive(Default)]
struct Memory {
    embeddings: Option<Tensor>,
    labels: Option<Tensor>,
    /// Next slot to write.
    queue_idx: i64,
    /// True once every slot has been written.
    filled: bool,
}

/// Cross-batch memory (XBM, Wang et al. 2020): the inner loss compares the batch with a ring
/// buffer of the last `memory_size` embeddings (detached) and labels, which includes the batch
/// itself; an element is never its own positive.
///
/// Each call first enqueues the batch, then mines (or takes all pairs) of batch × memory, removes
/// the pairs of an element with its own memory slot, appends the given tuples (their "other"
/// indices, which refer to the batch, are mapped to the batch's memory slots — the reference
/// appends them unmapped), and computes the inner loss with the memory as the reference set.
///
/// The memory must persist across calls while [`MetricLoss::terms`] takes `&self`, so it lives
/// behind a [`Mutex`]: concurrent calls are serialised, and a poisoned lock (a panic mid-update)
/// is recovered since every update leaves the buffer consistent.
///
/// # Shapes
/// embeddings [n, embedding_size] with n ≤ memory_size, labels [n] → the inner loss's terms,
/// each already reduced.
pub struct CrossBatchMemory {
    inner: Loss,
    miner: Option<MinerBox>,
    pub embedding_size: i64,
    pub memory_size: i64,
    memory: Mutex<Memory>,
}

impl CrossBatchMemory {
    /// Empties the memory.
    pub fn reset_queue(&self) {
        *self.memory.lock().unwrap_or_else(|e| e.into_inner()) = Memory::default();
    }

    /// Number of embeddings currently in memory.
    pub fn len(&self) -> i64 {
        let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if m.filled { self.memory_size } else { m.queue_idx }
    }

    /// True when nothing has been enqueued yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enqueues the batch; returns the memory contents (copies) and the batch's slots.
    fn enqueue(&self, emb: &Tensor, labels: &Tensor) -> (Tensor, Tensor, Tensor) {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let (kind, device) = (emb.kind(), emb.device());
        let stale = m.embeddings.as_ref().is_none_or(|e| e.kind() != kind || e.device() != device);
        if stale {
            let e = m.embeddings.take().map_or_else(|| Tensor::zeros([self.memory_size, self.embedding_size], (kind, device)), |e| e.to_kind(kind).to_device(device));
            let l = m.labels.take().map_or_else(|| Tensor::zeros([self.memory_size], (Kind::Int64, device)), |l| l.to_device(device));
            m.embeddings = Some(e);
            m.labels = Some(l);
        }
        let n = emb.size()[0];
        let slots = (Tensor::arange(n, (Kind::Int64, device)) + m.queue_idx).remainder(self.memory_size);
        tch::no_grad(|| {
            let e = m.embeddings.as_mut().expect("allocated");
            let _ = e.index_put_(&[Some(slots.shallow_clone())], &emb.detach(), false);
            let l = m.labels.as_mut().expect("allocated");
            let _ = l.index_put_(&[Some(slots.shallow_clone())], &labels.to_kind(Kind::Int64), false);
        });
        let prev = m.queue_idx;
        m.queue_idx = (m.queue_idx + n) % self.memory_size;
        if !m.filled && m.queue_idx <= prev {
            m.filled = true;
        }
        let size = if m.filled { self.memory_size } else { m.queue_idx };
        let e = m.embeddings.as_ref().expect("allocated").narrow(0, 0, size).copy();
        let l = m.labels.as_ref().expect("allocated").narrow(0, 0, size).copy();
        (e, l, slots)
    }
}

/// Drops the positive pairs (a, p) where p is a's own memory slot.
fn keep_not_self(anchor: &Tensor, other: &Tensor, slots: &Tensor) -> Tensor {
    other.ne_tensor(&slots.index_select(0, anchor))
}

fn remove_self_comparisons(tuples: Tuples, slots: &Tensor) -> Tuples {
    match tuples {
        Tuples::Pairs(p) => {
            let keep = keep_not_self(&p.pos_anchor, &p.pos_other, slots);
            Tuples::Pairs(Pairs {
                pos_anchor: p.pos_anchor.masked_select(&keep),
                pos_other: p.pos_other.masked_select(&keep),
                neg_anchor: p.neg_anchor,
                neg_other: p.neg_other,
            })
        }
        Tuples::Triplets(t) => {
            let keep = keep_not_self(&t.anchor, &t.positive, slots);
            Tuples::Triplets(Triplets { anchor: t.anchor.masked_select(&keep), positive: t.positive.masked_select(&keep), negative: t.negative.masked_select(&keep) })
        }
    }
}

/// Appends the caller's tuples (indices within the batch) to the mined ones (batch × memory),
/// converting them to the same kind and mapping their "other" indices to memory slots.
fn append_given(mined: Tuples, given: &Tuples, batch: &Batch, slots: &Tensor) -> Tuples {
    let slot = |t: &Tensor| slots.index_select(0, &t.to_kind(Kind::Int64));
    let cat = |a: &Tensor, b: Tensor| Tensor::cat(&[a.shallow_clone(), b.to_kind(Kind::Int64)], 0);
    match mined {
        Tuples::Pairs(m) => {
            let g = batch.to_pairs(Some(given));
            Tuples::Pairs(Pairs {
                pos_anchor: cat(&m.pos_anchor, g.pos_anchor.shallow_clone()),
                pos_other: cat(&m.pos_other, slot(&g.pos_other)),
                neg_anchor: cat(&m.neg_anchor, g.neg_anchor.shallow_clone()),
                neg_other: cat(&m.neg_other, slot(&g.neg_other)),
            })
        }
        Tuples::Triplets(m) => {
            let g = batch.to_triplets(Some(given));
            Tuples::Triplets(Triplets {
                anchor: cat(&m.anchor, g.anchor.shallow_clone()),
                positive: cat(&m.positive, slot(&g.positive)),
                negative: cat(&m.negative, slot(&g.negative)),
            })
        }
    }
}

impl MetricLoss for CrossBatchMemory {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if batch.reference.is_some() {
            return Err(CoreError::Unsupported("CrossBatchMemory takes a plain batch: the memory is its reference set".into()));
        }
        let (n, d) = (batch.len(), batch.embeddings.size()[1]);
        if d != self.embedding_size {
            return Err(CoreError::Shape(format!("CrossBatchMemory was built for embedding_size {}, got dimension {d}", self.embedding_size)));
        }
        if n > self.memory_size {
            return Err(CoreError::Shape(format!("batch of {n} is larger than the memory ({})", self.memory_size)));
        }
        let (mem_emb, mem_labels, slots) = self.enqueue(batch.embeddings, batch.labels);
        let against_memory = Batch::with_reference(batch.embeddings, batch.labels, &mem_emb, &mem_labels);
        let mined = match &self.miner {
            Some(m) => m.mine(&against_memory)?,
            None => Tuples::Pairs(tch::no_grad(|| against_memory.all_pairs())),
        };
        let mined = remove_self_comparisons(mined, &slots);
        let all = match tuples {
            Some(given) => append_given(mined, given, batch, &slots),
            None => mined,
        };
        Ok(reduced_terms(&self.inner, &against_memory, Some(&all))?.into_iter().map(|(name, v)| LossTerm::reduced(name, v)).collect())
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        self.inner.parameters()
    }
}

fn default_true() -> bool {
    true
}

/// The losses SelfSupervisedLoss accepts (the reference's list).
const SELF_SUPERVISED_SUPPORTED: &[&str] = &[
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "NCALoss",
    "TupletMarginLoss",
];

/// Parameters of SelfSupervisedLoss (reference default: `symmetric = true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfSupervisedParams {
    /// The pair or triplet loss applied to the two views.
    pub loss: Box<LossSpec>,
    /// Both views act as anchors (one batch of 2n) instead of view 1 against view 2.
    #[serde(default = "default_true")]
    pub symmetric: bool,
}

impl LossParams for SelfSupervisedParams {
    fn validate(&self) -> Result<()> {
        let inner = self.loss.kind.reference_name();
        if !SELF_SUPERVISED_SUPPORTED.contains(&inner) {
            return Err(invalid("SelfSupervisedLoss", format!("{inner} is not supported (supported: {})", SELF_SUPERVISED_SUPPORTED.join(", "))));
        }
        self.loss.validate()
    }
    fn default_distance(&self) -> Option<Distance> {
        None
    }
    fn build(&self, _distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        Ok(Box::new(SelfSupervisedLoss { inner: self.loss.build(ctx)?, symmetric: self.symmetric }))
    }
}

/// Self-supervised wrapper: row i of the embeddings and row i of the reference embeddings (two
/// augmented views of input i) are positives of each other, every other row a negative. The
/// batch's labels are ignored (labels become `0..n`). Symmetric: the inner loss sees the 2n
/// views with labels `[0..n, 0..n]`; otherwise the embeddings against the reference set.
///
/// # Shapes
/// embeddings [n, d] and reference embeddings [n, d] (in [`Batch::reference`]) → the inner loss's
/// terms, each already reduced.
pub struct SelfSupervisedLoss {
    inner: Loss,
    pub symmetric: bool,
}

impl MetricLoss for SelfSupervisedLoss {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if tuples.is_some() {
            return Err(CoreError::Unsupported("SelfSupervisedLoss builds its own labels and takes no mined tuples".into()));
        }
        let Some((ref_emb, _)) = batch.reference else {
            return Err(CoreError::Unsupported("SelfSupervisedLoss needs the second view as the batch's reference embeddings".into()));
        };
        if ref_emb.size() != batch.embeddings.size() {
            return Err(CoreError::Shape(format!("the two views must have the same shape, got {:?} and {:?}", batch.embeddings.size(), ref_emb.size())));
        }
        let n = batch.len();
        let labels = Tensor::arange(n, (Kind::Int64, batch.device()));
        let terms = if self.symmetric {
            let emb = Tensor::cat(&[batch.embeddings, ref_emb], 0);
            let labels = Tensor::cat(&[&labels, &labels], 0);
            reduced_terms(&self.inner, &Batch::new(&emb, &labels), None)?
        } else {
            reduced_terms(&self.inner, &Batch::with_reference(batch.embeddings, &labels, ref_emb, &labels), None)?
        };
        Ok(terms.into_iter().map(|(name, v)| LossTerm::reduced(name, v)).collect())
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        self.inner.parameters()
    }
}

/// Parameters of MultipleLosses: the losses, optional per-loss miners and weights (default 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultipleLossesParams {
    pub losses: Vec<LossSpec>,
    /// One entry per loss (null for none); when set, the caller passes no tuples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miners: Option<Vec<Option<MinerSpec>>>,
    /// One weight per loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
}

impl LossParams for MultipleLossesParams {
    fn validate(&self) -> Result<()> {
        let name = "MultipleLosses";
        let n = self.losses.len();
        if n == 0 {
            return Err(invalid(name, "needs at least one loss"));
        }
        if let Some(w) = &self.weights {
            if w.len() != n {
                return Err(invalid(name, format!("{} weights for {n} losses", w.len())));
            }
            if w.iter().any(|x| !x.is_finite()) {
                return Err(invalid(name, "weights must be finite"));
            }
        }
        if let Some(m) = &self.miners {
            if m.len() != n {
                return Err(invalid(name, format!("{} miners for {n} losses (use null for none)", m.len())));
            }
            m.iter().flatten().try_for_each(MinerSpec::validate)?;
        }
        self.losses.iter().try_for_each(LossSpec::validate)
    }
    fn default_distance(&self) -> Option<Distance> {
        None
    }
    fn build(&self, _distance: Option<Distance>, ctx: &BuildContext) -> Result<Box<dyn MetricLoss>> {
        let mut parts = Vec::with_capacity(self.losses.len());
        for (i, spec) in self.losses.iter().enumerate() {
            // Each loss's weights live under its index, so two losses of one kind do not collide.
            let vars: nn::Path = ctx.vars.sub(i);
            let sub = BuildContext { num_classes: ctx.num_classes, embedding_size: ctx.embedding_size, vars: &vars };
            let loss = spec.build(&sub)?;
            let miner = self.miners.as_ref().and_then(|m| m[i].as_ref()).map(MinerSpec::build).transpose()?;
            let weight = self.weights.as_ref().map_or(1.0, |w| w[i]);
            parts.push(WeightedLoss { loss, miner, weight });
        }
        Ok(Box::new(MultipleLosses { parts }))
    }
}

struct WeightedLoss {
    loss: Loss,
    miner: Option<MinerBox>,
    weight: f64,
}

/// A weighted sum of losses, `Σ_k w_k · L_k`, each `L_k` reduced by its own reducer on its own
/// tuples (its miner's, or the caller's). Terms are named `"{k}.{term}"` (e.g. `0.pos_loss`).
///
/// # Shapes
/// embeddings [n, d], labels [n] → one already-reduced term per term of every loss.
pub struct MultipleLosses {
    parts: Vec<WeightedLoss>,
}

impl MetricLoss for MultipleLosses {
    fn terms(&self, batch: &Batch, tuples: Option<&Tuples>) -> Result<Vec<LossTerm>> {
        if tuples.is_some() && self.parts.iter().any(|p| p.miner.is_some()) {
            return Err(CoreError::Unsupported("MultipleLosses with miners takes no tuples from the caller".into()));
        }
        let mut out = Vec::new();
        for (k, part) in self.parts.iter().enumerate() {
            let mined = part.miner.as_ref().map(|m| m.mine(batch)).transpose()?;
            let t = mined.as_ref().or(tuples);
            for (name, v) in reduced_terms(&part.loss, batch, t)? {
                out.push(LossTerm::reduced(intern(format!("{k}.{name}")), v * part.weight));
            }
        }
        Ok(out)
    }

    fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        self.parts.iter().enumerate().flat_map(|(k, p)| p.loss.parameters().into_iter().map(move |(n, t)| (intern(format!("{k}.{n}")), t))).collect()
    }
}
