//! Fused CPU kernels: row scans over a self batch's distance or similarity matrix.
//!
//! Why: at B = 1024 a miner or loss written as a chain of tensor ops (label masks, two
//! `masked_fill`s, two reductions, `any`, `nonzero`, gathers) makes ~10 passes over the B×B
//! matrix and allocates a temporary for each, which costs more than the distance GEMM itself.
//! One Rust pass per row that reads the distances and the labels and keeps what it needs does the
//! same work in a single sweep. Kernels here: BatchHardMiner, MultiSimilarityMiner,
//! BatchEasyHardMiner (default strategies), ContrastiveLoss, MultiSimilarityLoss, CircleLoss and
//! all-triplets TripletMarginLoss; the losses return their value with the gradient with respect to
//! the embeddings computed in closed form. These kernels are used only for contiguous float32 CPU tensors
//! (every other case, CUDA included, keeps the tensor formulation) and give the same indices as
//! the tensor formulation, ties included (first index wins, as `max`/`min` along a dimension).
//!
//! The kernels (normalisation, the B×B GEMMs through the `gemm` crate, the scans) are
//! single-threaded on purpose and make no libtorch call in between: every libtorch op above
//! ~32k elements is an OpenMP parallel region that ends in a barrier, and on a shared 2-core
//! machine a descheduled worker stalls that barrier — measured at B = 1024 on this project's
//! machine under load: BatchHardMiner 140 ms with 2 OpenMP threads against 7 ms with 1, the
//! time in libgomp's spin loop. One thread does the B = 1024 distances in about 2 ms.
//!
//! # One switch, one check, one pair of names
//!
//! A kernel is an optimisation, never a second definition: every component that has one keeps
//! its tensor formulation, and the two are named alike everywhere — `mine_fused` /
//! `mine_reference` for the miners, `terms_fused` / `terms_reference` for the losses. The fused
//! side returns `None` when it does not apply, and the component then takes the reference.
//! Whether it applies is decided in one place, [`SelfBatch::for_distance`] (a float32 CPU self
//! batch with CPU integer labels and a distance the kernel covers, as a [`SelfKind`]), plus
//! [`MatrixScan::for_matrix`] for BatchHardMiner's scan over a matrix libtorch already computed.
//! Both say no when `PROXIMA_FUSED=0` ([`enabled`]): then every component runs its reference
//! path, which is how a suspected kernel bug is ruled in or out. The tests in `harness` run
//! every kernel against its reference: the same mined indices, ties included, and the same
//! value and gradient under every reducer.
//!
//! Layout: this file (the switch, the applicability checks, input helpers), [`matrix`] (the
//! self batch's matrix, the GEMMs, the closed-form gradients), [`miners`] and [`losses`] (the
//! kernels).

use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

use crate::distance::Distance;
use crate::tuples::Batch;

mod losses;
mod matrix;
mod miners;

#[cfg(test)]
mod harness;

pub(crate) use losses::{ContrastiveSide, RowValues, circle_rows, contrastive_scan, multi_similarity_rows, triplet_scan};
pub(crate) use matrix::SelfMatrix;
pub(crate) use miners::{batch_easy_hard_rows, batch_hard_rows, multi_similarity_pairs};

/// Whether the fused kernels may run: yes unless the environment sets `PROXIMA_FUSED=0`
/// (read once per process). Results are the same either way, up to float rounding in the
/// losses (the parity suite passes both ways).
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("PROXIMA_FUSED").is_ok_and(|v| v == "0"))
}

/// What a [`SelfMatrix`] holds, by the distance it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SelfKind {
    /// Euclidean distances `‖x̂_i − x̂_j‖₂` (`LpDistance` with p = 2, power 1).
    Euclidean,
    /// Inner products `x̂_i · x̂_j` (`CosineSimilarity`, or `DotProductSimilarity`, with p = 2,
    /// power 1): similarities.
    Dot,
}

impl SelfKind {
    /// Both kinds: for the miners, which scan either.
    pub(crate) const ALL: &[SelfKind] = &[SelfKind::Euclidean, SelfKind::Dot];

    /// The kind of `distance` with whether rows are L2-normalised first; `None` for a distance
    /// no kernel covers (another p or power, squared distances, SNR, …).
    fn of(distance: &Distance) -> Option<(SelfKind, bool)> {
        match *distance {
            Distance::Lp { normalize_embeddings, p, power } if p == 2.0 && power == 1.0 => Some((SelfKind::Euclidean, normalize_embeddings)),
            Distance::Cosine { p, power, .. } if p == 2.0 && power == 1.0 => Some((SelfKind::Dot, true)),
            Distance::DotProduct { normalize_embeddings, p, power } if p == 2.0 && power == 1.0 => Some((SelfKind::Dot, normalize_embeddings)),
            _ => None,
        }
    }
}

/// A batch the self-batch kernels apply to, before anything is computed: see
/// [`SelfBatch::for_distance`].
pub(crate) struct SelfBatch<'a> {
    pub kind: SelfKind,
    /// Whether rows are L2-normalised before comparison.
    pub normalize: bool,
    embeddings: &'a Tensor,
    /// The labels, read once.
    pub labels: Vec<i64>,
}

impl<'a> SelfBatch<'a> {
    /// The one applicability check of the fused path: `Some` when the switch is on
    /// ([`enabled`]), the batch is its own reference set, `distance` is of a kind in `covered`,
    /// the embeddings are a float32 CPU matrix and the labels a 1-D CPU integer tensor.
    /// Component-specific conditions (mined tuples, strategies, loss options) stay with the
    /// component; a kernel may still decline later (a non-finite value, an empty batch).
    pub(crate) fn for_distance(distance: &Distance, batch: &Batch<'a>, covered: &[SelfKind]) -> Option<Self> {
        if !enabled() || !batch.is_self() {
            return None;
        }
        let (kind, normalize) = SelfKind::of(distance)?;
        let x = batch.embeddings;
        if !covered.contains(&kind) || x.device() != Device::Cpu || x.kind() != Kind::Float || x.dim() != 2 {
            return None;
        }
        let labels = cpu_labels(batch.labels)?;
        Some(SelfBatch { kind, normalize, embeddings: x, labels })
    }

    /// The full `n × n` matrix; `None` for an empty batch.
    pub(crate) fn matrix(&self) -> Option<SelfMatrix> {
        SelfMatrix::compute(self.embeddings, self.kind, self.normalize, false)
    }

    /// The entries `j ≥ i` only (the rest left 0), for passes over unordered pairs; `None` for
    /// an empty batch.
    pub(crate) fn upper_matrix(&self) -> Option<SelfMatrix> {
        SelfMatrix::compute(self.embeddings, self.kind, self.normalize, true)
    }

    /// Numbers of positive and negative pairs (see [`pair_counts`]).
    pub(crate) fn pair_counts(&self) -> (i64, i64) {
        pair_counts(&self.labels)
    }
}

/// A scan over a matrix libtorch already computed (any distance, a reference set allowed):
/// the matrix as row-major `f32` with the labels of its rows and columns.
pub(crate) struct MatrixScan {
    pub values: Vec<f32>,
    pub n: usize,
    pub m: usize,
    pub labels: Vec<i64>,
    pub ref_labels: Vec<i64>,
}

impl MatrixScan {
    /// `Some` when the switch is on ([`enabled`]), `mat` is a float32 CPU matrix and the labels
    /// are CPU integer tensors.
    pub(crate) fn for_matrix(mat: &Tensor, batch: &Batch) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let (values, n, m) = cpu_f32_matrix(mat)?;
        let labels = cpu_labels(batch.labels)?;
        let ref_labels = match batch.reference {
            Some((_, l)) => cpu_labels(l)?,
            None => labels.clone(),
        };
        Some(MatrixScan { values, n, m, labels, ref_labels })
    }
}

/// Calls `f` on the elements of a contiguous float32 CPU tensor, read in place (no libtorch
/// op, so no OpenMP region); `None` for any other tensor.
pub(crate) fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.device() != Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    let numel = t.numel();
    if numel == 0 {
        return Some(f(&[]));
    }
    let ptr = t.data_ptr() as *const f32;
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a contiguous float32 CPU tensor stores `numel` f32 values from `data_ptr`; `t` is
    // borrowed for the whole call, so the storage outlives the slice, and nothing here writes it.
    let data = unsafe { std::slice::from_raw_parts(ptr, numel) };
    Some(f(data))
}

/// The matrix as a row-major `f32` vector, when it is a 2-D float32 CPU tensor; `None` otherwise.
fn cpu_f32_matrix(mat: &Tensor) -> Option<(Vec<f32>, usize, usize)> {
    if mat.device() != Device::Cpu || mat.kind() != Kind::Float || mat.dim() != 2 {
        return None;
    }
    let (n, m) = (mat.size()[0] as usize, mat.size()[1] as usize);
    let v = match with_cpu_f32(mat, |s| s.to_vec()) {
        Some(v) => v,
        None => Vec::<f32>::try_from(mat.contiguous().view([-1])).ok()?,
    };
    Some((v, n, m))
}

/// The labels as `i64`s, when they are a 1-D CPU integer tensor; `None` otherwise.
fn cpu_labels(labels: &Tensor) -> Option<Vec<i64>> {
    if labels.device() != Device::Cpu || labels.dim() != 1 || labels.is_floating_point() {
        return None;
    }
    Vec::<i64>::try_from(labels.to_kind(Kind::Int64).contiguous()).ok()
}

/// Numbers of positive pairs (same label, `i ≠ j`) and negative pairs of a self batch.
pub(crate) fn pair_counts(labels: &[i64]) -> (i64, i64) {
    let mut sorted = labels.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as i64;
    let same: i64 = sorted.chunk_by(|a, b| a == b).map(|c| (c.len() as i64).pow(2)).sum();
    (same - n, n * n - same)
}
