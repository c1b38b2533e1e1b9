//! Tests of the classification losses beyond the parity files: naive oracles, properties, errors.

use proptest::prelude::*;
use proxima_core::loss::BuildContext;
use proxima_core::reducer::TermLosses;
use proxima_core::{Batch, CoreError, Loss, LossSpec, Regularizer};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor, nn};

/// Every classification-style loss with parity cases, by reference name.
const CLASSIFICATION: &[&str] = &[
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "NormalizedSoftmaxLoss",
    "ArcFaceLoss",
    "SubCenterArcFaceLoss",
    "CosFaceLoss",
    "SphereFaceLoss",
    "LargeMarginSoftmaxLoss",
    "SoftTripleLoss",
    "P2SGradLoss",
];

fn spec(v: Value) -> LossSpec {
    serde_json::from_value(v).expect("loss config")
}

/// Builds `spec` in a fresh variable store of `kind` (the store must outlive the loss's use).
fn build(vs: &nn::VarStore, spec: &LossSpec, classes: i64, dim: i64) -> Result<Loss, CoreError> {
    let root = vs.root();
    let ctx = BuildContext { num_classes: Some(classes), embedding_size: Some(dim), vars: &root };
    spec.build(&ctx)
}

fn store(kind: Kind) -> nn::VarStore {
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(kind);
    vs
}

fn tensor(rows: &[Vec<f64>], kind: Kind) -> Tensor {
    let d = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, d]).to_kind(kind)
}

fn rows_of(t: &Tensor) -> Vec<Vec<f64>> {
    let d = t.size()[1] as usize;
    let flat = Vec::<f64>::try_from(t.to_kind(Kind::Double).detach().flatten(0, -1)).unwrap();
    flat.chunks(d).map(<[f64]>::to_vec).collect()
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// Deterministic pseudo-random rows in [-1, 1].
fn rows(n: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            (0..d)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
                })
                .collect()
        })
        .collect()
}

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn euclid(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol * (1.0 + want.abs()), "{what}: got {got}, want {want}");
}

// ---------------------------------------------------------------------------------------------
// Naive oracles.
// ---------------------------------------------------------------------------------------------

/// Contrastive loss (default Lp distance on normalised rows, avg-non-zero per term) of the
/// queries against a reference set; `skip_pos(i, j)` removes positive pairs (self-comparisons).
fn contrastive_oracle(q: &[Vec<f64>], ql: &[i64], r: &[Vec<f64>], rl: &[i64], skip_pos: impl Fn(usize, usize) -> bool, pos_margin: f64, neg_margin: f64) -> f64 {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (i, qi) in q.iter().enumerate() {
        for (j, rj) in r.iter().enumerate() {
            let d = euclid(&unit(qi), &unit(rj));
            if ql[i] == rl[j] {
                if !skip_pos(i, j) {
                    pos.push((d - pos_margin).max(0.0));
                }
            } else {
                neg.push((neg_margin - d).max(0.0));
            }
        }
    }
    if pos.len() <= 1 && neg.len() <= 1 {
        return 0.0;
    }
    let avg_non_zero = |v: &[f64]| {
        let nz: Vec<f64> = v.iter().copied().filter(|x| *x > 0.0).collect();
        if nz.is_empty() { 0.0 } else { nz.iter().sum::<f64>() / nz.len() as f64 }
    };
    avg_non_zero(&pos) + avg_non_zero(&neg)
}

#[test]
fn p2s_grad_matches_oracle() {
    let vs = store(Kind::Float);
    let loss = build(&vs, &spec(json!({"type": "P2SGradLoss"})), 3, 4).unwrap();
    let x = rows(7, 4, 1);
    let labels = [0i64, 1, 2, 0, 1, 2, 2];
    let emb = tensor(&x, Kind::Float);
    let lab = Tensor::from_slice(&labels);
    let got = value(&loss.forward(&Batch::new(&emb, &lab), None).unwrap());
    let (_, w) = loss.parameters().into_iter().find(|(n, _)| *n == "weight").expect("weight");
    assert_eq!(w.size(), vec![4, 3]);
    let w = rows_of(&w.tr());
    let mut total = 0.0;
    for (i, xi) in x.iter().enumerate() {
        let norm = dot(xi, xi).sqrt();
        for (j, wj) in w.iter().enumerate() {
            assert!((dot(wj, wj).sqrt() - 1.0).abs() < 1e-5, "class weights are unit length");
            let cos = (dot(xi, wj) / norm).clamp(-1.0, 1.0);
            let target = if labels[i] == j as i64 { 1.0 } else { 0.0 };
            total += (cos - target).powi(2);
        }
    }
    assert_close(got, total / (x.len() * w.len()) as f64, 1e-5, "P2SGrad");
}

#[test]
fn cross_batch_memory_matches_oracle_across_calls() {
    let vs = store(Kind::Float);
    let cfg = spec(json!({"type": "CrossBatchMemory", "loss": {"type": "ContrastiveLoss"}, "memory_size": 6}));
    let loss = build(&vs, &cfg, 3, 4).unwrap();
    let a = rows(4, 4, 11);
    let la = [0i64, 1, 0, 2];
    let b = rows(4, 4, 12);
    let lb = [1i64, 0, 2, 2];

    // Call 1: memory = a (slots 0..4).
    let got1 = value(&loss.forward(&Batch::new(&tensor(&a, Kind::Float), &Tensor::from_slice(&la)), None).unwrap());
    let want1 = contrastive_oracle(&a, &la, &a, &la, |i, j| i == j, 0.0, 1.0);
    assert_close(got1, want1, 1e-5, "first call");

    // Call 2: b goes to slots 4, 5, 0, 1 (wrapping); memory = [b2, b3, a2, a3, b0, b1].
    let got2 = value(&loss.forward(&Batch::new(&tensor(&b, Kind::Float), &Tensor::from_slice(&lb)), None).unwrap());
    let mem = vec![b[2].clone(), b[3].clone(), a[2].clone(), a[3].clone(), b[0].clone(), b[1].clone()];
    let ml = [lb[2], lb[3], la[2], la[3], lb[0], lb[1]];
    let slot = [4usize, 5, 0, 1];
    let want2 = contrastive_oracle(&b, &lb, &mem, &ml, |i, j| slot[i] == j, 0.0, 1.0);
    assert_close(got2, want2, 1e-5, "second call (wrapped)");
}

#[test]
fn cross_batch_memory_gradient_reaches_only_the_batch() {
    let vs = store(Kind::Float);
    let cfg = spec(json!({"type": "CrossBatchMemory", "loss": {"type": "ContrastiveLoss"}, "memory_size": 16}));
    let loss = build(&vs, &cfg, 3, 4).unwrap();
    let lab = Tensor::from_slice(&[0i64, 1, 0, 1, 2, 2]);
    let e1 = tensor(&rows(6, 4, 3), Kind::Float).set_requires_grad(true);
    loss.forward(&Batch::new(&e1, &lab), None).unwrap().backward();
    let e2 = tensor(&rows(6, 4, 4), Kind::Float).set_requires_grad(true);
    let l2 = loss.forward(&Batch::new(&e2, &lab), None).unwrap();
    l2.backward();
    assert!(value(&l2).is_finite());
    assert!(e2.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
}

#[test]
fn self_supervised_matches_oracle() {
    let x = rows(5, 4, 21);
    let y = rows(5, 4, 22);
    let ids: Vec<i64> = (0..5).collect();
    let vs = store(Kind::Float);
    let given_labels = Tensor::from_slice(&[9i64, 9, 9, 9, 9]);
    let (ex, ey) = (tensor(&x, Kind::Float), tensor(&y, Kind::Float));

    let sym = build(&vs, &spec(json!({"type": "SelfSupervisedLoss", "loss": {"type": "ContrastiveLoss"}})), 3, 4).unwrap();
    let got = value(&sym.forward(&Batch::with_reference(&ex, &given_labels, &ey, &given_labels), None).unwrap());
    let both: Vec<Vec<f64>> = x.iter().chain(&y).cloned().collect();
    let both_labels: Vec<i64> = ids.iter().chain(&ids).copied().collect();
    let want = contrastive_oracle(&both, &both_labels, &both, &both_labels, |i, j| i == j, 0.0, 1.0);
    assert_close(got, want, 1e-5, "symmetric");

    let asym = build(&vs, &spec(json!({"type": "SelfSupervisedLoss", "symmetric": false, "loss": {"type": "ContrastiveLoss"}})), 3, 4).unwrap();
    let got = value(&asym.forward(&Batch::with_reference(&ex, &given_labels, &ey, &given_labels), None).unwrap());
    let want = contrastive_oracle(&x, &ids, &y, &ids, |_, _| false, 0.0, 1.0);
    assert_close(got, want, 1e-5, "asymmetric");

    // No second view, or a classification inner loss, is an error.
    assert!(matches!(sym.forward(&Batch::new(&ex, &given_labels), None), Err(CoreError::Unsupported(_))));
    assert!(build(&vs, &spec(json!({"type": "SelfSupervisedLoss", "loss": {"type": "ArcFaceLoss"}})), 3, 4).is_err());
}

#[test]
fn multiple_losses_is_the_weighted_sum_of_reduced_losses() {
    let x = rows(8, 4, 31);
    let labels = [0i64, 0, 1, 1, 2, 2, 0, 1];
    let vs = store(Kind::Float);
    let cfg = spec(json!({
        "type": "MultipleLosses",
        "losses": [{"type": "ContrastiveLoss"}, {"type": "ContrastiveLoss", "neg_margin": 0.5}, {"type": "ArcFaceLoss"}, {"type": "ArcFaceLoss"}],
        "weights": [0.5, 2.0, 0.0, 0.0]
    }));
    let loss = build(&vs, &cfg, 3, 4).unwrap();
    let emb = tensor(&x, Kind::Float);
    let lab = Tensor::from_slice(&labels);
    let batch = Batch::new(&emb, &lab);
    let got = value(&loss.forward(&batch, None).unwrap());
    let self_pair = |i: usize, j: usize| i == j;
    let want = 0.5 * contrastive_oracle(&x, &labels, &x, &labels, self_pair, 0.0, 1.0) + 2.0 * contrastive_oracle(&x, &labels, &x, &labels, self_pair, 0.0, 0.5);
    assert_close(got, want, 1e-5, "weighted sum");
    let names: Vec<&str> = loss.terms(&batch, None).unwrap().iter().map(|t| t.name).collect();
    assert_eq!(&names[..4], &["0.pos_loss", "0.neg_loss", "1.pos_loss", "1.neg_loss"]);
    // Two ArcFace losses get separate weights.
    let params = loss.parameters();
    assert!(params.iter().any(|(n, _)| *n == "2.W") && params.iter().any(|(n, _)| *n == "3.W"));
    // Mismatched weights are rejected when the configuration is validated.
    let bad = spec(json!({"type": "MultipleLosses", "losses": [{"type": "ContrastiveLoss"}], "weights": [1.0, 2.0]}));
    assert!(bad.validate().is_err());
}

// ---------------------------------------------------------------------------------------------
// Regularizers.
// ---------------------------------------------------------------------------------------------

fn sparse_centers_oracle(w: &[Vec<f64>], k: usize) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for c in 0..w.len() / k {
        for j in c * k..(c + 1) * k {
            for l in j + 1..(c + 1) * k {
                let cos = dot(&unit(&w[j]), &unit(&w[l]));
                sum += (2.0 + f32::MIN_POSITIVE as f64 - (2.0 * cos).min(2.0)).sqrt();
                count += 1;
            }
        }
    }
    sum / (2 * count) as f64
}

fn regular_face_oracle(w: &[Vec<f64>]) -> f64 {
    let n = w.len();
    let total: f64 = (0..n).map(|i| (0..n).filter(|&j| j != i).map(|j| dot(&unit(&w[i]), &unit(&w[j]))).fold(f64::NEG_INFINITY, f64::max)).sum();
    total / n as f64
}

#[test]
fn sparse_centers_and_regular_face_match_oracles() {
    let w = rows(12, 5, 41);
    let t = tensor(&w, Kind::Float);
    let sc = Regularizer::SparseCenters { num_classes: Some(4), centers_per_class: 3 };
    assert_close(value(&sc.loss(&t).unwrap()), sparse_centers_oracle(&w, 3), 1e-5, "sparse centers");
    assert_close(value(&Regularizer::RegularFace.loss(&t).unwrap()), regular_face_oracle(&w), 1e-5, "regular face");
    // Rows that do not make whole classes are a shape error.
    let bad = Regularizer::SparseCenters { num_classes: None, centers_per_class: 5 };
    assert!(matches!(bad.loss(&t), Err(CoreError::Shape(_))));
    let r: Regularizer = serde_json::from_value(json!({"type": "SparseCentersRegularizer", "centers_per_class": 3})).unwrap();
    assert_eq!(r, Regularizer::SparseCenters { num_classes: None, centers_per_class: 3 });
    assert!(Regularizer::SparseCenters { num_classes: None, centers_per_class: 1 }.validate().is_err());
}

fn weight_reg_term(loss: &Loss, batch: &Batch) -> f64 {
    let terms = loss.terms(batch, None).unwrap();
    let t = terms.iter().find(|t| t.name == "weight_reg_loss").expect("a weight_reg_loss term");
    match &t.losses {
        TermLosses::Values(v) => value(v),
        _ => panic!("weight_reg_loss should be a value"),
    }
}

#[test]
fn weight_regularizers_apply_to_class_rows() {
    let x = rows(6, 4, 51);
    let emb = tensor(&x, Kind::Float);
    let lab = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
    let batch = Batch::new(&emb, &lab);
    // SoftTriple + sparse centres on fcᵀ (rows = centres).
    let vs = store(Kind::Float);
    let cfg = spec(
        json!({"type": "SoftTripleLoss", "centers_per_class": 2, "weight_regularizer": {"type": "sparse_centers", "centers_per_class": 2}, "weight_reg_weight": 0.5}),
    );
    let loss = build(&vs, &cfg, 3, 4).unwrap();
    let fc = loss.parameters()[0].1.shallow_clone();
    assert_eq!(fc.size(), vec![4, 6]);
    assert_close(weight_reg_term(&loss, &batch), 0.5 * sparse_centers_oracle(&rows_of(&fc.tr()), 2), 1e-5, "SoftTriple sparse centres");
    // ArcFace + RegularFace on Wᵀ (rows = classes).
    let cfg = spec(json!({"type": "ArcFaceLoss", "weight_regularizer": {"type": "RegularFaceRegularizer"}}));
    let loss = build(&vs, &cfg, 3, 4).unwrap();
    let w = loss.parameters()[0].1.shallow_clone();
    assert_close(weight_reg_term(&loss, &batch), regular_face_oracle(&rows_of(&w.tr())), 1e-5, "ArcFace regular face");
    // ProxyAnchor (divisor reducer) + Lp on the proxies: the already-reduced term is added as is.
    let plain = build(&vs, &spec(json!({"type": "ProxyAnchorLoss"})), 3, 4).unwrap();
    let reg = build(&vs, &spec(json!({"type": "ProxyAnchorLoss", "weight_regularizer": {"type": "lp"}})), 3, 4).unwrap();
    let p = reg.parameters()[0].1.shallow_clone();
    tch::no_grad(|| plain.parameters()[0].1.shallow_clone().copy_(&p));
    let mean_norm = rows_of(&p).iter().map(|r| dot(r, r).sqrt()).sum::<f64>() / 3.0;
    let diff = value(&reg.forward(&batch, None).unwrap()) - value(&plain.forward(&batch, None).unwrap());
    assert_close(diff, mean_norm, 1e-5, "ProxyAnchor + lp");
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn labels_out_of_range_are_typed_errors() {
    let emb = tensor(&rows(4, 4, 61), Kind::Float);
    for name in CLASSIFICATION {
        let vs = store(Kind::Float);
        let loss = build(&vs, &spec(json!({"type": name})), 3, 4).unwrap();
        for (bad, label) in [([0i64, 1, 3, 2], 3), ([0i64, -1, 2, 2], -1)] {
            let lab = Tensor::from_slice(&bad);
            match loss.forward(&Batch::new(&emb, &lab), None) {
                Err(CoreError::LabelOutOfRange { label: l, num_classes: 3 }) => assert_eq!(l, label, "{name}"),
                other => panic!("{name}: expected LabelOutOfRange, got {:?}", other.map(|t| value(&t))),
            }
        }
        // A reference set and a wrong embedding width are refused too.
        let lab = Tensor::from_slice(&[0i64, 1, 2, 0]);
        assert!(loss.forward(&Batch::with_reference(&emb, &lab, &emb, &lab), None).is_err(), "{name}");
        let wide = tensor(&rows(4, 5, 62), Kind::Float);
        assert!(matches!(loss.forward(&Batch::new(&wide, &lab), None), Err(CoreError::Shape(_))), "{name}");
    }
}

#[test]
fn missing_sizes_and_wrong_distances_are_rejected() {
    let vs = store(Kind::Float);
    let root = vs.root();
    let ctx = BuildContext { num_classes: None, embedding_size: Some(4), vars: &root };
    for name in CLASSIFICATION {
        assert!(matches!(spec(json!({"type": name})).build(&ctx), Err(CoreError::InvalidParameter { .. })), "{name}");
    }
    let ctx = BuildContext { num_classes: Some(3), embedding_size: Some(4), vars: &root };
    assert!(spec(json!({"type": "ArcFaceLoss", "distance": {"type": "lp"}})).build(&ctx).is_err());
    assert!(spec(json!({"type": "LargeMarginSoftmaxLoss", "margin": 2.5})).validate().is_err());
    assert!(spec(json!({"type": "SoftTripleLoss", "gamma": 0.0})).validate().is_err());
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

fn loss_value(loss: &Loss, x: &[Vec<f64>], labels: &[i64]) -> f64 {
    let emb = tensor(x, Kind::Float);
    let lab = Tensor::from_slice(labels);
    value(&loss.forward(&Batch::new(&emb, &lab), None).unwrap())
}

fn batch_strategy() -> impl Strategy<Value = (Vec<Vec<f64>>, Vec<i64>)> {
    (2usize..10).prop_flat_map(|n| (prop::collection::vec(prop::collection::vec(-1.0f64..1.0, 4), n), prop::collection::vec(0i64..3, n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn permutation_invariant_non_negative_and_finite((x, labels) in batch_strategy(), shift in 1usize..9) {
        prop_assume!(x.iter().all(|r| dot(r, r) > 1e-6));
        let n = x.len();
        let perm: Vec<usize> = (0..n).map(|i| (i * 7 + shift) % n).collect();
        prop_assume!({ let mut p = perm.clone(); p.sort(); p.dedup(); p.len() == n });
        let px: Vec<Vec<f64>> = perm.iter().map(|&i| x[i].clone()).collect();
        let pl: Vec<i64> = perm.iter().map(|&i| labels[i]).collect();
        for name in CLASSIFICATION {
            let vs = store(Kind::Float);
            let loss = build(&vs, &spec(json!({"type": name})), 3, 4).unwrap();
            let a = loss_value(&loss, &x, &labels);
            let b = loss_value(&loss, &px, &pl);
            prop_assert!(a.is_finite() && a >= -1e-6, "{name}: {a}");
            prop_assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{name}: {a} vs permuted {b}");
        }
    }

    #[test]
    fn one_class_and_singletons_give_finite_losses_and_gradients(x in prop::collection::vec(prop::collection::vec(-1.0f64..1.0, 4), 3)) {
        prop_assume!(x.iter().all(|r| dot(r, r) > 1e-6));
        for labels in [[1i64, 1, 1], [0, 1, 2]] {
            for name in CLASSIFICATION {
                let vs = store(Kind::Float);
                let loss = build(&vs, &spec(json!({"type": name})), 3, 4).unwrap();
                let emb = tensor(&x, Kind::Float).set_requires_grad(true);
                let lab = Tensor::from_slice(&labels);
                let l = loss.forward(&Batch::new(&emb, &lab), None).unwrap();
                l.backward();
                prop_assert!(value(&l).is_finite() && value(&l) >= -1e-6, "{name}: {}", value(&l));
                prop_assert!(emb.grad().isfinite().all().int64_value(&[]) == 1, "{name}: non-finite gradient");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finite-difference gradient checks (f64).
// ---------------------------------------------------------------------------------------------

/// The loss reduced in double precision (mean, or sum / divisor for terms that carry one): the
/// crate's reducers accumulate in f32, too coarse for central differences.
fn f64_total(loss: &Loss, batch: &Batch) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Double, Device::Cpu));
    for t in loss.terms(batch, None).unwrap() {
        let v = match &t.losses {
            TermLosses::Values(v) => match t.divisor {
                Some(d) => v.sum(Kind::Double) / d,
                None => v.mean(Kind::Double),
            },
            TermLosses::Zero => continue,
            TermLosses::Streamed(_) => panic!("no streamed terms here"),
        };
        total += v;
    }
    total
}

/// Compares autograd gradients of the loss w.r.t. the embeddings and the learnable weight with
/// central differences, in double precision.
fn gradient_check(cfg: Value, classes: i64) {
    let (n, d) = (6usize, 4i64);
    let vs = store(Kind::Double);
    let loss = build(&vs, &spec(cfg.clone()), classes, d).unwrap();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % classes).collect();
    let lab = Tensor::from_slice(&labels);
    let x = tensor(&rows(n, d as usize, 81), Kind::Double).set_requires_grad(true);
    let (_, w) = loss.parameters().into_iter().next().expect("a learnable weight");
    assert_eq!(w.kind(), Kind::Double);
    let l = f64_total(&loss, &Batch::new(&x, &lab));
    l.backward();
    let f = |x: &Tensor| tch::no_grad(|| value(&f64_total(&loss, &Batch::new(x, &lab))));
    let h = 1e-6;
    let check = |t: &Tensor, grad: &Tensor, what: &str, eval: &dyn Fn() -> f64| {
        let g = Vec::<f64>::try_from(grad.view([-1])).unwrap();
        let set = |i: i64, v: f64| {
            tch::no_grad(|| {
                let _ = t.view([-1]).get(i).fill_(v);
            })
        };
        for (i, gi) in g.iter().enumerate() {
            let i = i as i64;
            let orig = tch::no_grad(|| t.view([-1]).double_value(&[i]));
            set(i, orig + h);
            let up = eval();
            set(i, orig - h);
            let down = eval();
            set(i, orig);
            let fd = (up - down) / (2.0 * h);
            assert!((fd - gi).abs() <= 1e-5 * (1.0 + fd.abs()), "{cfg}: d/d{what}[{i}] autograd {gi} vs finite difference {fd}");
        }
    };
    let xg = x.grad();
    check(&x, &xg, "embeddings", &|| f(&x));
    let wg = w.grad();
    check(&w, &wg, "weights", &|| f(&x));
}

#[test]
fn arcface_gradients_match_finite_differences() {
    gradient_check(json!({"type": "ArcFaceLoss", "scale": 8.0}), 3);
}

#[test]
fn proxy_anchor_gradients_match_finite_differences() {
    gradient_check(json!({"type": "ProxyAnchorLoss", "alpha": 8.0}), 3);
}

#[test]
fn soft_triple_gradients_match_finite_differences() {
    gradient_check(json!({"type": "SoftTripleLoss", "centers_per_class": 2, "la": 5.0}), 3);
}

#[test]
fn large_margin_softmax_gradients_match_finite_differences() {
    gradient_check(json!({"type": "LargeMarginSoftmaxLoss", "margin": 3.0}), 3);
}
