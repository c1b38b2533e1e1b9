//! The one test harness of the fused kernels: every component that has one is run both ways on
//! the same batches — `mine_fused` against `mine_reference` (the same indices, ties included,
//! on integer data where many distances are equal) and `terms_fused` against `terms_reference`
//! (the same value and gradient under every reducer, separable ones through the kernel, the
//! others through its `materialize`). Each component also checks what its fused path declines.
//!
//! With `PROXIMA_FUSED=0` the fused paths must decline everywhere; the harness then checks that
//! instead of comparing.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::{SelfBatch, SelfKind, enabled};
use crate::distance::Distance;
use crate::error::Result;
use crate::loss::contrastive::ContrastiveParams;
use crate::loss::pair_margin::{CircleLoss, CircleParams, MultiSimilarityLoss, MultiSimilarityParams};
use crate::loss::triplet::{TripletMarginParams, TripletsPerAnchor};
use crate::loss::{ContrastiveLoss, TripletMarginLoss};
use crate::miner::{BatchEasyHardMiner, BatchEasyHardParams, BatchHardMiner, MultiSimilarityMiner, Strategy};
use crate::reducer::{LossTerm, Reducer, TermLosses};
use crate::tuples::{Batch, Tuples};

// ---------------------------------------------------------------------------------------------
// The harness.

/// Every reducer: the separable ones (with the loss's threshold windows `thresholds`), per
/// anchor (inner mean and sum), class-weighted (weights for labels `0..=max_label`), one per
/// term, and the two that give no scalar for these terms (divisor: no divisor; do-nothing),
/// where both paths must fail.
fn every_reducer(thresholds: &[(Option<f64>, Option<f64>)], max_label: i64) -> Vec<Reducer> {
    let mut r = vec![Reducer::Mean, Reducer::Sum, Reducer::AvgNonZero];
    r.extend(thresholds.iter().map(|&(low, high)| Reducer::Threshold { low, high }));
    r.extend([
        Reducer::PerAnchor { reducer: None },
        Reducer::PerAnchor { reducer: Some(Box::new(Reducer::Sum)) },
        Reducer::ClassWeighted { weights: (0..=max_label).map(|c| 0.5 + 0.25 * (c % 3) as f64).collect() },
        Reducer::Multiple {
            reducers: BTreeMap::from([("pos_loss".to_string(), Reducer::Sum), ("loss".to_string(), Reducer::PerAnchor { reducer: Some(Box::new(Reducer::Sum)) })]),
            default: Some(Box::new(Reducer::AvgNonZero)),
        },
        Reducer::Divisor,
        Reducer::DoNothing,
    ]);
    r
}

/// Value and gradient with respect to `x` of `terms` reduced by `reducer`.
fn value_and_grad(x: &Tensor, labels: &Tensor, reducer: &Reducer, terms: impl Fn(&Batch) -> Vec<LossTerm>) -> Result<(f64, Tensor)> {
    let x = x.detach().set_requires_grad(true);
    let batch = Batch::new(&x, labels);
    let v = reducer.reduce_terms(terms(&batch), &batch)?;
    v.backward();
    Ok((v.double_value(&[]), x.grad()))
}

/// Checks a loss's fused terms against its reference terms on the self batch `(x, labels)`:
/// for every reducer both fail, or both give the same value (relative 1e-4) and gradient
/// (1e-4 of its largest entry), neither degenerate.
fn check_loss(
    what: &str,
    x: &Tensor,
    labels: &Tensor,
    reducers: &[Reducer],
    fused: impl Fn(&Batch) -> Option<Vec<LossTerm>>,
    reference: impl Fn(&Batch) -> Result<Vec<LossTerm>>,
) {
    if !enabled() {
        assert!(fused(&Batch::new(x, labels)).is_none(), "{what}: PROXIMA_FUSED=0, yet the fused path applies");
        return;
    }
    let mut compared = 0;
    for reducer in reducers {
        let f = value_and_grad(x, labels, reducer, |b| fused(b).expect("fused path applies"));
        let r = value_and_grad(x, labels, reducer, |b| reference(b).unwrap());
        match (f, r) {
            (Ok((v1, g1)), Ok((v2, g2))) => {
                assert!(v2.abs() > 1e-3, "{what} {reducer:?}: degenerate case ({v2})");
                assert!((v1 - v2).abs() <= 1e-5 + 1e-4 * v2.abs(), "{what} {reducer:?}: {v1} vs {v2}");
                let diff = (&g1 - &g2).abs().max().double_value(&[]);
                let scale = g2.abs().max().double_value(&[]);
                assert!(scale > 0.0 && diff <= 1e-5 + 1e-4 * scale, "{what} {reducer:?}: grad diff {diff} (scale {scale})");
                compared += 1;
            }
            (Err(_), Err(_)) => {}
            (f, r) => panic!("{what} {reducer:?}: fused {:?}, reference {:?}", f.map(|v| v.0), r.map(|v| v.0)),
        }
    }
    assert!(compared + 2 >= reducers.len(), "{what}: only {compared} of {} reducers compared", reducers.len());
}

/// The mined indices, sorted: `(positive pairs, negative pairs)` or triplets (as
/// `(a, p, n)` in the first list).
fn indices(t: &Tuples) -> (Vec<(i64, i64, i64)>, Vec<(i64, i64)>, Vec<(i64, i64)>) {
    match t {
        Tuples::Pairs(p) => {
            let (pos, neg) = p.to_vecs();
            (Vec::new(), pos, neg)
        }
        Tuples::Triplets(t) => (t.to_vec(), Vec::new(), Vec::new()),
    }
}

/// Checks a miner's fused path against its reference on `batch`: the same indices. Returns the
/// fused tuples (`None` with `PROXIMA_FUSED=0`, after checking that the fused path declines).
fn check_miner(what: &str, batch: &Batch, fused: impl Fn(&Batch) -> Option<Tuples>, reference: impl Fn(&Batch) -> Result<Tuples>) -> Option<Tuples> {
    if !enabled() {
        assert!(fused(batch).is_none(), "{what}: PROXIMA_FUSED=0, yet the fused path applies");
        return None;
    }
    let f = fused(batch).expect("fused path applies");
    let r = reference(batch).unwrap();
    assert_eq!(indices(&f), indices(&r), "{what}");
    Some(f)
}

/// Integer-valued embeddings (`randn · 2`, rounded): exact distances and many ties.
fn ints(n: i64, d: i64) -> Tensor {
    (Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * 2.0).round()
}

fn rand(n: i64, d: i64) -> Tensor {
    Tensor::randn([n, d], (Kind::Float, Device::Cpu))
}

fn labels_mod(n: i64, classes: i64) -> Tensor {
    Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(classes)
}

/// The Euclidean distance and the dot product without normalisation (exact on integer data).
fn raw_lp() -> Distance {
    Distance::Lp { normalize_embeddings: false, p: 2.0, power: 1.0 }
}
fn raw_dot() -> Distance {
    Distance::DotProduct { normalize_embeddings: false, p: 2.0, power: 1.0 }
}

// ---------------------------------------------------------------------------------------------
// The applicability check.

#[test]
fn self_batch_check_covers_the_kernels_distances_only() {
    tch::manual_seed(2);
    let x = rand(8, 4);
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1, 2, 2, 3, 3]);
    let batch = Batch::new(&x, &labels);
    let kind = |d: &Distance, covered: &[SelfKind]| SelfBatch::for_distance(d, &batch, covered).map(|s| (s.kind, s.normalize));
    if !enabled() {
        assert!(kind(&Distance::lp(), SelfKind::ALL).is_none());
        return;
    }
    assert_eq!(kind(&Distance::lp(), SelfKind::ALL), Some((SelfKind::Euclidean, true)));
    assert_eq!(kind(&raw_lp(), SelfKind::ALL), Some((SelfKind::Euclidean, false)));
    assert_eq!(kind(&Distance::cosine(), SelfKind::ALL), Some((SelfKind::Dot, true)));
    assert_eq!(kind(&raw_dot(), SelfKind::ALL), Some((SelfKind::Dot, false)));
    assert_eq!(kind(&Distance::cosine(), &[SelfKind::Euclidean]), None);
    assert_eq!(kind(&Distance::lp(), &[SelfKind::Dot]), None);
    assert_eq!(kind(&Distance::lp_squared(), SelfKind::ALL), None);
    assert_eq!(kind(&Distance::Lp { normalize_embeddings: true, p: 1.0, power: 1.0 }, SelfKind::ALL), None);
    // Not float32, not a self batch, float labels: the reference decides.
    let double = x.to_kind(Kind::Double);
    assert!(SelfBatch::for_distance(&Distance::lp(), &Batch::new(&double, &labels), SelfKind::ALL).is_none());
    assert!(SelfBatch::for_distance(&Distance::lp(), &Batch::with_reference(&x, &labels, &x, &labels), SelfKind::ALL).is_none());
    let float_labels = labels.to_kind(Kind::Float);
    assert!(SelfBatch::for_distance(&Distance::lp(), &Batch::new(&x, &float_labels), SelfKind::ALL).is_none());
    // The matrix holds what its kind says.
    let e = SelfBatch::for_distance(&raw_dot(), &batch, SelfKind::ALL).unwrap().matrix().unwrap();
    let dots = x.matmul(&x.tr());
    let got = Tensor::from_slice(&e.values[..64]).view([8, 8]);
    assert!((got - dots).abs().max().double_value(&[]) < 1e-5);
    let e = SelfBatch::for_distance(&raw_lp(), &batch, SelfKind::ALL).unwrap().matrix().unwrap();
    let dist = raw_lp().matrix(&x, None).unwrap();
    let got = Tensor::from_slice(&e.values[..64]).view([8, 8]);
    // Off the diagonal (which no kernel reads: `‖a‖² + ‖a‖² − 2a·a` cancels to rounding error).
    let off = Tensor::eye(8, (Kind::Bool, Device::Cpu)).logical_not();
    let diff = (got - dist).abs().masked_select(&off).max().double_value(&[]);
    assert!(diff < 1e-5, "{diff}");
}

// ---------------------------------------------------------------------------------------------
// Miners.

/// BatchHardMiner's all-Rust path (its own distances) against the tensor formulation on
/// libtorch's distances.
#[test]
fn batch_hard_miner() {
    tch::manual_seed(4);
    let (ints, rand) = (ints(128, 6), rand(128, 32));
    let labels = labels_mod(128, 9);
    for (emb, distance) in [(&ints, raw_lp()), (&ints, raw_dot()), (&rand, Distance::lp()), (&rand, Distance::cosine())] {
        let miner = BatchHardMiner { distance: distance.clone() };
        let batch = Batch::new(emb, &labels);
        let reference = |b: &Batch| miner.mine_reference(&distance.matrix(b.embeddings, None)?, b);
        if let Some(Tuples::Triplets(t)) = check_miner(&format!("BatchHardMiner {distance:?}"), &batch, |b| miner.mine_fused(b).map(Tuples::Triplets), reference) {
            assert_eq!(t.len(), 128);
        }
    }
    let squared = BatchHardMiner { distance: Distance::lp_squared() };
    assert!(squared.mine_fused(&Batch::new(&rand, &labels)).is_none());
}

/// BatchHardMiner's scan over libtorch's matrix, self batches and reference sets.
#[test]
fn batch_hard_miner_scan_of_a_matrix() {
    tch::manual_seed(3);
    let (emb, ref_emb) = (ints(96, 4), ints(40, 4));
    let (labels, ref_labels) = (labels_mod(96, 7), labels_mod(40, 5));
    for distance in [raw_lp(), Distance::lp(), Distance::cosine(), Distance::dot_product()] {
        let miner = BatchHardMiner { distance: distance.clone() };
        for batch in [Batch::new(&emb, &labels), Batch::with_reference(&emb, &labels, &ref_emb, &ref_labels)] {
            let mat = distance.matrix(batch.embeddings, batch.reference.map(|r| r.0)).unwrap();
            let what = format!("BatchHardMiner scan {distance:?}, reference set: {}", batch.reference.is_some());
            if let Some(Tuples::Triplets(t)) = check_miner(&what, &batch, |b| miner.mine_fused_on(&mat, b).map(Tuples::Triplets), |b| miner.mine_reference(&mat, b)) {
                assert!(t.len() > 10, "{what}");
            }
        }
    }
}

#[test]
fn multi_similarity_miner() {
    tch::manual_seed(8);
    let (ints, rand) = (ints(100, 5), rand(100, 24));
    let labels = labels_mod(100, 7);
    for (emb, distance, epsilon) in [(&ints, raw_lp(), 1.0), (&ints, raw_dot(), 2.0), (&rand, Distance::cosine(), 0.1), (&rand, Distance::lp(), 0.1)] {
        let miner = MultiSimilarityMiner { epsilon, distance: distance.clone() };
        let mined = check_miner(
            &format!("MultiSimilarityMiner {distance:?}"),
            &Batch::new(emb, &labels),
            |b| miner.mine_fused(b).map(Tuples::Pairs),
            |b| miner.mine_reference(b),
        );
        if let Some(Tuples::Pairs(p)) = mined {
            assert!(p.num_pos() > 0 && p.num_neg() > 0, "{distance:?}: degenerate");
        }
    }
    // No negative pair at all: nothing is mined.
    let one_class = Tensor::zeros([100], (Kind::Int64, Device::Cpu));
    let miner = MultiSimilarityMiner { epsilon: 0.1, distance: Distance::cosine() };
    if let Some(Tuples::Pairs(none)) =
        check_miner("MultiSimilarityMiner, one class", &Batch::new(&rand, &one_class), |b| miner.mine_fused(b).map(Tuples::Pairs), |b| miner.mine_reference(b))
    {
        assert_eq!((none.num_pos(), none.num_neg()), (0, 0));
    }
}

/// The default strategies (easy positives, semihard negatives), with and without value ranges;
/// other strategies keep the tensor form.
#[test]
fn batch_easy_hard_miner() {
    use Strategy::*;
    tch::manual_seed(13);
    let (ints, rand) = (ints(90, 4), rand(90, 16));
    let labels = labels_mod(90, 8);
    let mut non_empty = 0;
    for (emb, distance, range) in
        [(&ints, raw_lp(), None), (&ints, raw_dot(), None), (&rand, Distance::lp(), Some([0.2, 1.3])), (&rand, Distance::cosine(), Some([-0.5, 0.8]))]
    {
        for r in [None, range] {
            let params = BatchEasyHardParams { pos_strategy: Easy, neg_strategy: Semihard, allowed_pos_range: r, allowed_neg_range: r };
            let miner = BatchEasyHardMiner { params, distance: distance.clone() };
            let mined = check_miner(
                &format!("BatchEasyHardMiner {distance:?} {r:?}"),
                &Batch::new(emb, &labels),
                |b| miner.mine_fused(b).map(Tuples::Pairs),
                |b| miner.mine_reference(b),
            );
            non_empty += matches!(mined, Some(Tuples::Pairs(ref p)) if p.num_pos() > 0) as usize;
        }
    }
    assert!(!enabled() || non_empty >= 6, "too few non-empty cases: {non_empty}");
    let hard = BatchEasyHardMiner {
        params: BatchEasyHardParams { pos_strategy: Hard, neg_strategy: Hard, allowed_pos_range: None, allowed_neg_range: None },
        distance: Distance::lp(),
    };
    assert!(hard.mine_fused(&Batch::new(&rand, &labels)).is_none());
}

// ---------------------------------------------------------------------------------------------
// Losses.

/// Sparse and dense gradient paths (few or all negatives active), with and without
/// normalisation.
#[test]
fn contrastive_loss() {
    tch::manual_seed(11);
    let x = rand(96, 16);
    let labels = labels_mod(96, 12);
    let reducers = every_reducer(&[(Some(0.05), Some(0.9))], 11);
    let cases = [
        // Default margins: few active negatives (sparse gradient).
        (ContrastiveParams::default(), true),
        // Large negative margin: every negative active (dense gradient).
        (ContrastiveParams { pos_margin: 0.2, neg_margin: 3.0 }, true),
        (ContrastiveParams { pos_margin: 1.0, neg_margin: 8.0 }, false),
    ];
    for (params, normalize) in cases {
        let loss = ContrastiveLoss { params: params.clone(), distance: Distance::Lp { normalize_embeddings: normalize, p: 2.0, power: 1.0 } };
        check_loss(&format!("ContrastiveLoss {params:?} {normalize}"), &x, &labels, &reducers, |b| loss.terms_fused(b), |b| loss.terms_reference(b, None));
    }
}

#[test]
fn contrastive_loss_declines_what_it_does_not_cover() {
    let x = rand(8, 4);
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1, 2, 2, 3, 3]);
    let batch = Batch::new(&x, &labels);
    for distance in [Distance::cosine(), Distance::lp_squared()] {
        assert!(ContrastiveLoss { params: ContrastiveParams::default(), distance }.terms_fused(&batch).is_none());
    }
    let lp = ContrastiveLoss { params: ContrastiveParams::default(), distance: Distance::lp() };
    assert!(lp.terms_fused(&Batch::new(&x.to_kind(Kind::Double), &labels)).is_none());
    if !enabled() {
        return;
    }
    // Two distinct labels: no positive pair (a zero term), two negative pairs (not trivial).
    let distinct = Tensor::arange(2, (Kind::Int64, Device::Cpu));
    let t = lp.terms_fused(&Batch::new(&x.narrow(0, 0, 2), &distinct)).unwrap();
    assert!(matches!(t[0].losses, TermLosses::Zero) && matches!(t[1].losses, TermLosses::Streamed(_)));
    // One row: no pair at all, both terms zero (the reference's trivial case).
    let one = Tensor::arange(1, (Kind::Int64, Device::Cpu));
    let t = lp.terms_fused(&Batch::new(&x.narrow(0, 0, 1), &one)).unwrap();
    assert!(t.iter().all(|t| matches!(t.losses, TermLosses::Zero)));
}

/// Cosine and unnormalised dot product, including a class with a single member (a row without
/// positives).
#[test]
fn multi_similarity_and_circle_losses() {
    tch::manual_seed(5);
    let n = 80;
    let x = rand(n, 12);
    let mut l: Vec<i64> = (0..n).map(|i| i % 9).collect();
    l[0] = 100;
    let labels = Tensor::from_slice(&l);
    let reducers = every_reducer(&[(Some(0.5), None)], 100);
    let cases = [
        (MultiSimilarityParams::default(), Distance::cosine()),
        (MultiSimilarityParams { alpha: 1.5, beta: 7.0, base: 0.2 }, Distance::cosine()),
        (MultiSimilarityParams { alpha: 0.5, beta: 2.0, base: 0.1 }, raw_dot()),
    ];
    for (params, distance) in cases {
        let loss = MultiSimilarityLoss { params: params.clone(), distance: distance.clone() };
        check_loss(&format!("MultiSimilarityLoss {params:?} {distance:?}"), &x, &labels, &reducers, |b| loss.terms_fused(b), |b| loss.terms_reference(b, None));
    }
    for params in [CircleParams::default(), CircleParams { m: 0.4, gamma: 8.0 }] {
        let loss = CircleLoss { params: params.clone(), distance: Distance::cosine() };
        check_loss(&format!("CircleLoss {params:?}"), &x, &labels, &reducers, |b| loss.terms_fused(b), |b| loss.terms_reference(b, None));
    }
    let lp = MultiSimilarityLoss { params: MultiSimilarityParams::default(), distance: Distance::lp() };
    assert!(lp.terms_fused(&Batch::new(&x, &labels)).is_none());
}

/// All triplets: separable reducers through the sorted early-exit scan, the others through
/// `materialize`; the reference is the streamed tensor form.
#[test]
fn triplet_margin_loss() {
    tch::manual_seed(21);
    let x = rand(72, 10);
    let labels = labels_mod(72, 9);
    let reducers = every_reducer(&[(Some(0.05), Some(0.3)), (None, Some(0.2))], 8);
    for (margin, normalize) in [(0.1, true), (0.3, true), (0.5, false)] {
        let loss = TripletMarginLoss {
            params: TripletMarginParams { margin, ..TripletMarginParams::default() },
            distance: Distance::Lp { normalize_embeddings: normalize, p: 2.0, power: 1.0 },
        };
        check_loss(&format!("TripletMarginLoss margin {margin} {normalize}"), &x, &labels, &reducers, |b| loss.terms_fused(b), |b| loss.terms_reference(b, None));
    }
    let declined = [
        TripletMarginParams { swap: true, ..TripletMarginParams::default() },
        TripletMarginParams { smooth_loss: true, ..TripletMarginParams::default() },
        TripletMarginParams { triplets_per_anchor: TripletsPerAnchor::Count(3), ..TripletMarginParams::default() },
    ];
    for params in declined {
        let loss = TripletMarginLoss { params, distance: Distance::lp() };
        assert!(loss.terms_fused(&Batch::new(&x, &labels)).is_none());
    }
}
