//! Tests of the pair losses beyond the parity files: naive oracles, properties, errors.

use proptest::prelude::*;
use proxima_core::loss::BuildContext;
use proxima_core::{Batch, CoreError, Loss, LossSpec, MetricLoss, TermIndices, Triplets, Tuples};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor, nn};

/// Builds a loss from its JSON configuration (optionally with a number of classes).
fn build(cfg: Value, num_classes: Option<i64>) -> (Loss, nn::VarStore) {
    let vs = nn::VarStore::new(Device::Cpu);
    let spec: LossSpec = serde_json::from_value(cfg).expect("config");
    let loss = {
        let root = vs.root();
        let ctx = BuildContext { num_classes, embedding_size: None, vars: &root };
        spec.build(&ctx).expect("build")
    };
    (loss, vs)
}

/// Deterministic pseudo-random data in (−1, 1).
fn data(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n * d)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(x: &[f64], n: usize) -> Tensor {
    Tensor::from_slice(x).view([n as i64, (x.len() / n) as i64])
}

fn rows(x: &[f64], n: usize) -> Vec<Vec<f64>> {
    x.chunks(x.len() / n).map(|r| r.to_vec()).collect()
}

fn value(loss: &Loss, emb: &Tensor, labels: &[i64]) -> f64 {
    let l = Tensor::from_slice(labels);
    loss.forward(&Batch::new(emb, &l), None).expect("forward").double_value(&[])
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    dot / (na * nb)
}

fn euclid_normalized(a: &[f64], b: &[f64]) -> f64 {
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    a.iter().zip(b).map(|(x, y)| (x / na - y / nb).powi(2)).sum::<f64>().sqrt()
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "{what}: got {got}, oracle {want}");
}

// ------------------------------------------------------------------ naive oracles

#[test]
fn histogram_matches_oracle() {
    let (n, d) = (12, 5);
    let x = data(n, d, 1);
    let labels = [0i64, 0, 1, 1, 1, 2, 2, 3, 3, 3, 0, 2];
    let delta = 2.0 / 20.0;
    let (loss, _vs) = build(json!({"type": "HistogramLoss", "n_bins": 20}), None);
    let got = value(&loss, &tensor(&x, n), &labels);
    let e = rows(&x, n);
    let has_neg = |i: usize| labels.iter().any(|&l| l != labels[i]);
    let has_pos = |i: usize| (0..n).any(|j| j != i && labels[j] == labels[i]);
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            let s = cosine(&e[i], &e[j]);
            if labels[i] == labels[j] && (has_neg(i) || has_neg(j)) {
                pos.push(s);
            } else if labels[i] != labels[j] && (has_pos(i) || has_pos(j)) {
                neg.push(s);
            }
        }
    }
    let density = |v: &[f64]| {
        let nodes = 21;
        let mut h = vec![0.0; nodes];
        for &s in v {
            let r = (((s + 1.0) / delta).floor() as usize).min(nodes - 2);
            h[r + 1] += (s + 1.0 - r as f64 * delta) / delta;
            h[r] += ((r as f64 + 1.0) * delta - 1.0 - s) / delta;
        }
        h.iter().map(|x| x / v.len() as f64).collect::<Vec<_>>()
    };
    let (pp, pn) = (density(&pos), density(&neg));
    let mut cum = 0.0;
    let mut want = 0.0;
    for r in 0..pp.len() {
        cum += pp[r];
        want += pn[r] * cum;
    }
    close(got, want, "histogram");
}

#[test]
fn ranked_list_matches_oracle() {
    let (n, d) = (10, 4);
    let x = data(n, d, 2);
    let labels = [0i64, 0, 0, 1, 1, 1, 2, 2, 3, 3];
    let (margin, tn, tp, imbalance) = (0.4, 10.0, 1.0, 0.3);
    let (loss, _vs) = build(json!({"type": "RankedListLoss", "margin": margin, "Tn": tn, "Tp": tp, "imbalance": imbalance}), None);
    let got = value(&loss, &tensor(&x, n), &labels);
    let e = rows(&x, n);
    let alpha = 1.0 + margin / 2.0;
    let mut total = 0.0;
    for i in 0..n {
        let (mut pn, mut pd, mut nn_, mut nd) = (0.0, 0.0, 0.0, 0.0);
        for j in 0..n {
            if j == i {
                continue;
            }
            let dist = euclid_normalized(&e[i], &e[j]);
            if labels[i] == labels[j] && dist > alpha - margin {
                let w = (tp * (dist - (alpha - margin))).exp();
                pn += w * (dist - (alpha - margin));
                pd += w;
            }
            if labels[i] != labels[j] && dist < alpha && dist > 0.0 {
                let w = (tn * (alpha - dist)).exp();
                nn_ += w * (alpha - dist);
                nd += w;
            }
        }
        let lp = if pd > 0.0 { pn / pd } else { 0.0 };
        let ln = if nd > 0.0 { nn_ / nd } else { 0.0 };
        total += (1.0 - imbalance) * lp + imbalance * ln;
    }
    close(got, total / n as f64, "ranked list");
}

fn temp_sigmoid(x: f64, t: f64) -> f64 {
    1.0 / (1.0 + (-x / t).clamp(-50.0, 50.0).exp())
}

#[test]
fn pnp_matches_oracle() {
    let (n, d) = (9, 4);
    let x = data(n, d, 3);
    let labels = [0i64, 1, 2, 0, 1, 2, 0, 1, 3];
    let e = rows(&x, n);
    for (variant, f) in [("O", (|r: f64| r) as fn(f64) -> f64), ("Ds", |r: f64| (1.0 + r).ln()), ("Ib", |r: f64| (2.0 * r - (1.0 + 2.0 * r).ln()) / 4.0)] {
        let anneal = 0.1;
        let (loss, _vs) = build(json!({"type": "PNPLoss", "variant": variant, "anneal": anneal}), None);
        let got = value(&loss, &tensor(&x, n), &labels);
        let mut total = 0.0;
        for i in 0..n {
            let (mut sum, mut cnt) = (0.0, 0.0);
            for j in 0..n {
                if labels[j] != labels[i] {
                    continue;
                }
                let sij = cosine(&e[i], &e[j]);
                let r: f64 = (0..n).filter(|&k| labels[k] != labels[i]).map(|k| temp_sigmoid(cosine(&e[i], &e[k]) - sij, anneal)).sum();
                sum += f(r);
                cnt += 1.0;
            }
            total += sum / cnt;
        }
        close(got, total / n as f64, &format!("pnp {variant}"));
    }
}

#[test]
fn smooth_ap_matches_oracle() {
    let (n, d) = (9, 4);
    let x = data(n, d, 4);
    let labels = [0i64, 0, 0, 1, 1, 1, 2, 2, 2];
    let t = 0.1;
    let (loss, _vs) = build(json!({"type": "SmoothAPLoss", "temperature": t}), None);
    let got = value(&loss, &tensor(&x, n), &labels);
    let e = rows(&x, n);
    let s = |i: usize, j: usize| cosine(&e[i], &e[j]);
    let sig = |v: f64| 1.0 / (1.0 + (-v / t).exp());
    let g = 3;
    let mut ap = 0.0;
    for i in 0..n {
        for j in (i / g) * g..(i / g) * g + g {
            let all: f64 = 1.0 + (0..n).filter(|&k| k != j).map(|k| sig(s(i, k) - s(i, j))).sum::<f64>();
            let pos: f64 = 1.0 + ((i / g) * g..(i / g) * g + g).filter(|&k| k != j).map(|k| sig(s(i, k) - s(i, j))).sum::<f64>();
            ap += pos / all / g as f64 / n as f64;
        }
    }
    close(got, 1.0 - ap, "smooth ap");
    // Unequal classes are a typed error.
    let l = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 2, 2]);
    assert!(matches!(loss.forward(&Batch::new(&tensor(&x, n), &l), None), Err(CoreError::Unsupported(_))));
}

#[test]
fn vicreg_matches_oracle() {
    let (n, d) = (6, 4);
    let (x, y) = (data(n, d, 5), data(n, d, 6));
    let (loss, _vs) = build(json!({"type": "VICRegLoss"}), None);
    let labels = Tensor::from_slice(&[0i64; 6]);
    let (tx, ty) = (tensor(&x, n), tensor(&y, n));
    let got = loss.forward(&Batch::with_reference(&tx, &labels, &ty, &labels), None).unwrap().double_value(&[]);
    let (ex, ey) = (rows(&x, n), rows(&y, n));
    let inv: f64 = (0..n).map(|i| (0..d).map(|k| (ex[i][k] - ey[i][k]).powi(2)).sum::<f64>() / d as f64).sum::<f64>() / n as f64 * 25.0;
    let stats = |e: &Vec<Vec<f64>>| {
        let mean: Vec<f64> = (0..d).map(|k| e.iter().map(|r| r[k]).sum::<f64>() / n as f64).collect();
        let cov = |a: usize, b: usize| e.iter().map(|r| (r[a] - mean[a]) * (r[b] - mean[b])).sum::<f64>() / (n - 1) as f64;
        let var: f64 = (0..d).map(|k| (1.0 - (cov(k, k) + 1e-4).sqrt()).max(0.0) / 2.0).sum::<f64>() / d as f64 * 25.0;
        let off: f64 = (0..d).flat_map(|a| (0..d).map(move |b| (a, b))).filter(|(a, b)| a != b).map(|(a, b)| cov(a, b).powi(2)).sum::<f64>() / d as f64;
        (var, off)
    };
    let ((v1, c1), (v2, c2)) = (stats(&ex), stats(&ey));
    close(got, inv + v1 + v2 + c1 + c2, "vicreg");
    // Without a second view: a typed error.
    assert!(matches!(loss.forward(&Batch::new(&tx, &labels), None), Err(CoreError::Unsupported(_))));
}

#[test]
fn ntxent_per_anchor_matches_pairwise_oracle_with_duplicate_mined_pairs() {
    let (n, d) = (8, 3);
    let x = data(n, d, 7);
    let labels = [0i64, 0, 1, 1, 2, 2, 0, 1];
    let e = rows(&x, n);
    let t = 0.5;
    let (loss, _vs) = build(json!({"type": "NTXentLoss", "temperature": t}), None);
    let pos = [(0i64, 1i64), (1, 0), (2, 3), (0, 6)];
    let neg = [(0i64, 2i64), (0, 2), (0, 4), (1, 5), (2, 0), (3, 4)];
    let pairs = proxima_core::Pairs {
        pos_anchor: Tensor::from_slice(&pos.map(|p| p.0)),
        pos_other: Tensor::from_slice(&pos.map(|p| p.1)),
        neg_anchor: Tensor::from_slice(&neg.map(|p| p.0)),
        neg_other: Tensor::from_slice(&neg.map(|p| p.1)),
    };
    let l = Tensor::from_slice(&labels);
    let emb = tensor(&x, n);
    let got = loss.forward(&Batch::new(&emb, &l), Some(&Tuples::Pairs(pairs))).unwrap().double_value(&[]);
    let mut total = 0.0;
    for &(a, p) in &pos {
        let sp = cosine(&e[a as usize], &e[p as usize]) / t;
        let den: f64 = sp.exp() + neg.iter().filter(|(na, _)| *na == a).map(|&(na, nn)| (cosine(&e[na as usize], &e[nn as usize]) / t).exp()).sum::<f64>();
        total += -(sp.exp() / den).ln();
    }
    close(got, total / pos.len() as f64, "ntxent");
}

#[test]
fn margin_closed_form_equals_explicit_triplets() {
    let (n, d) = (10, 4);
    let x = data(n, d, 8);
    let labels = [0i64, 0, 1, 1, 1, 2, 2, 3, 0, 2];
    let emb = tensor(&x, n);
    let l = Tensor::from_slice(&labels);
    let batch = Batch::new(&emb, &l);
    let all = batch.all_triplets();
    for reducer in [
        json!(null),
        json!({"type": "mean"}),
        json!({"type": "avg_non_zero"}),
        json!({"type": "sum"}),
        json!({"type": "threshold", "low": 0.05, "high": 0.3}),
        json!({"type": "per_anchor"}),
    ] {
        for learn in [false, true] {
            let mut cfg = json!({"type": "MarginLoss", "margin": 0.3, "beta": 0.9, "nu": 0.1, "learn_beta": learn});
            if !reducer.is_null() {
                cfg["reducer"] = reducer.clone();
            }
            for classes in [None, Some(4)] {
                let (loss, _vs) = build(cfg.clone(), classes);
                let implicit = loss.forward(&batch, None).unwrap().double_value(&[]);
                let t = Tuples::Triplets(Triplets { anchor: all.anchor.shallow_clone(), positive: all.positive.shallow_clone(), negative: all.negative.shallow_clone() });
                let explicit = loss.forward(&batch, Some(&t)).unwrap().double_value(&[]);
                close(implicit, explicit, &format!("margin {reducer} learn={learn} classes={classes:?}"));
            }
        }
    }
    // Per-class beta: labels beyond the classes are a typed error.
    let (loss, _vs) = build(json!({"type": "MarginLoss"}), Some(2));
    assert!(matches!(loss.forward(&batch, None), Err(CoreError::LabelOutOfRange { .. })));
    let (loss, _vs) = build(json!({"type": "MarginLoss", "learn_beta": true}), Some(4));
    let params = loss.parameters();
    assert_eq!(params.len(), 1);
    assert_eq!(params[0].0, "beta");
    assert_eq!(params[0].1.size(), vec![4]);
}

// ------------------------------------------------------------------ properties

/// Every pair loss with a configuration that works on a plain labelled batch.
fn all_configs() -> Vec<Value> {
    vec![
        json!({"type": "MultiSimilarityLoss"}),
        json!({"type": "NTXentLoss"}),
        json!({"type": "SupConLoss"}),
        json!({"type": "CircleLoss"}),
        json!({"type": "LiftedStructureLoss"}),
        json!({"type": "GeneralizedLiftedStructureLoss"}),
        json!({"type": "MarginLoss"}),
        json!({"type": "NPairsLoss"}),
        json!({"type": "AngularLoss"}),
        json!({"type": "TupletMarginLoss"}),
        json!({"type": "IntraPairVarianceLoss"}),
        json!({"type": "SignalToNoiseRatioContrastiveLoss"}),
        json!({"type": "FastAPLoss"}),
        json!({"type": "NCALoss"}),
        json!({"type": "InstanceLoss"}),
        json!({"type": "HistogramLoss"}),
        json!({"type": "RankedListLoss", "margin": 0.4, "Tn": 10.0}),
        json!({"type": "PNPLoss"}),
        json!({"type": "DynamicSoftMarginLoss"}),
        json!({"type": "ThresholdConsistentMarginLoss"}),
    ]
}

/// Losses whose value does not depend on the order of the batch (N-pairs picks the first pair
/// of each label, instance loss indexes columns by label rank).
fn order_free(cfg: &Value) -> bool {
    !matches!(cfg["type"].as_str(), Some("NPairsLoss") | Some("InstanceLoss"))
}

fn forward_value(cfg: &Value, emb: &Tensor, labels: &Tensor) -> f64 {
    let (loss, _vs) = build(cfg.clone(), None);
    loss.forward(&Batch::new(emb, labels), None).unwrap_or_else(|e| panic!("{cfg}: {e}")).double_value(&[])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn permutation_invariant_non_negative_and_finite(seed in 0u64..1000, shift in 1usize..11) {
        let (n, d) = (12usize, 6usize);
        let x = data(n, d, seed);
        let labels: Vec<i64> = (0..n as i64).map(|i| (i * 7 + seed as i64) % 4).collect();
        let emb = tensor(&x, n).to_kind(Kind::Float);
        let lab = Tensor::from_slice(&labels);
        let perm: Vec<i64> = (0..n as i64).map(|i| (i + shift as i64) % n as i64).collect();
        let perm = Tensor::from_slice(&perm);
        let (pemb, plab) = (emb.index_select(0, &perm), lab.index_select(0, &perm));
        for cfg in all_configs() {
            let v = forward_value(&cfg, &emb, &lab);
            prop_assert!(v.is_finite(), "{} is not finite", cfg);
            // NCA is a log-probability; the dynamic soft margin weighs signed margins.
            if cfg["type"] != "NCALoss" && cfg["type"] != "DynamicSoftMarginLoss" {
                prop_assert!(v >= -1e-6, "{} is negative: {}", cfg, v);
            }
            if order_free(&cfg) {
                let pv = forward_value(&cfg, &pemb, &plab);
                prop_assert!((v - pv).abs() <= 1e-4 * v.abs().max(1.0), "{}: {} vs permuted {}", cfg, v, pv);
            }
        }
    }

    #[test]
    fn degenerate_batches_give_zero_without_nan(seed in 0u64..1000, singletons in any::<bool>()) {
        let (n, d) = (7usize, 5usize);
        let emb = tensor(&data(n, d, seed), n).to_kind(Kind::Float).set_requires_grad(true);
        let labels: Vec<i64> = if singletons { (0..n as i64).collect() } else { vec![3; n] };
        let lab = Tensor::from_slice(&labels);
        for cfg in all_configs() {
            let name = cfg["type"].as_str().unwrap();
            // Losses that are not defined as zero on these batches (a softmax over the batch,
            // or a variance among equal-class pairs; TCM penalises every pair, not tuples).
            let skip = matches!(name, "ThresholdConsistentMarginLoss" | "NCALoss" | "InstanceLoss" | "IntraPairVarianceLoss" | "GeneralizedLiftedStructureLoss" | "SignalToNoiseRatioContrastiveLoss" | "RankedListLoss" | "MultiSimilarityLoss" | "PNPLoss" | "FastAPLoss" | "NPairsLoss");
            let (loss, _vs) = build(cfg.clone(), None);
            let v = loss.forward(&Batch::new(&emb, &lab), None).unwrap_or_else(|e| panic!("{cfg}: {e}"));
            prop_assert!(v.double_value(&[]).is_finite(), "{} not finite", cfg);
            if v.requires_grad() {
                let g = Tensor::run_backward(&[&v], &[&emb], false, false);
                prop_assert!(g[0].isfinite().all().int64_value(&[]) == 1, "{} has a non-finite gradient", cfg);
            }
            if !skip {
                prop_assert!(v.double_value(&[]).abs() < 1e-6, "{} on a degenerate batch gives {}", cfg, v.double_value(&[]));
            }
        }
    }
}

/// The loss terms as an f64 function (mean of every value term, plus reduced terms), so
/// finite differences are not limited by a float reduction.
fn f64_objective(loss: &Loss, emb: &Tensor, labels: &Tensor) -> Tensor {
    let terms = loss.terms(&Batch::new(emb, labels), None).unwrap();
    let mut total = emb.sum(Kind::Double) * 0.0;
    for t in terms {
        if let proxima_core::reducer::TermLosses::Values(v) = t.losses {
            total = match t.indices {
                TermIndices::AlreadyReduced => total + v.sum(Kind::Double),
                _ => total + v.mean(Kind::Double),
            };
        }
    }
    total
}

#[test]
fn finite_difference_gradients() {
    let (n, d) = (8usize, 4usize);
    let x = data(n, d, 11);
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1, 2, 2, 0, 1]);
    for cfg in [
        json!({"type": "MultiSimilarityLoss"}),
        json!({"type": "NTXentLoss", "temperature": 0.5}),
        // (Circle loss is not here: its pair weights are detached by design, so its gradient is
        // not the derivative of its value; the parity suite checks its gradients.)
        json!({"type": "GeneralizedLiftedStructureLoss"}),
        json!({"type": "LiftedStructureLoss"}),
        json!({"type": "TupletMarginLoss", "scale": 4.0}),
        json!({"type": "SupConLoss", "temperature": 0.5}),
        json!({"type": "ThresholdConsistentMarginLoss", "margin_plus": 0.6, "margin_minus": 0.0}),
        // (Dynamic soft margin is not here: its CDF weights are detached by design; see
        // dynamic_soft_margin_gradient_uses_detached_weights.)
    ] {
        let (loss, _vs) = build(cfg.clone(), None);
        let emb = tensor(&x, n).set_requires_grad(true);
        let obj = f64_objective(&loss, &emb, &labels);
        let grad = Tensor::run_backward(&[&obj], &[&emb], false, false)[0].shallow_clone();
        let eps = 1e-6;
        for k in 0..(n * d) {
            let mut plus = x.clone();
            plus[k] += eps;
            let mut minus = x.clone();
            minus[k] -= eps;
            let fp = f64_objective(&loss, &tensor(&plus, n), &labels).double_value(&[]);
            let fm = f64_objective(&loss, &tensor(&minus, n), &labels).double_value(&[]);
            let fd = (fp - fm) / (2.0 * eps);
            let ad = grad.view([-1]).double_value(&[k as i64]);
            assert!((fd - ad).abs() <= 1e-5 * fd.abs().max(1.0), "{cfg}: d/dx[{k}] autograd {ad} vs finite difference {fd}");
        }
    }
}

#[test]
fn configuration_errors_are_typed() {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let ctx = BuildContext { num_classes: None, embedding_size: None, vars: &root };
    for cfg in [
        json!({"type": "NTXentLoss", "temperature": 0.0}),
        json!({"type": "CircleLoss", "distance": {"type": "lp"}}),
        json!({"type": "HistogramLoss", "n_bins": 10, "delta": 0.5}),
        json!({"type": "RankedListLoss", "margin": 0.4, "Tn": 1.0, "imbalance": 2.0}),
        json!({"type": "AngularLoss", "distance": {"type": "cosine"}}),
        json!({"type": "VICRegLoss", "distance": {"type": "lp"}}),
        json!({"type": "DynamicSoftMarginLoss", "distance": {"type": "cosine"}}),
        json!({"type": "DynamicSoftMarginLoss", "num_bins": 0}),
        json!({"type": "ThresholdConsistentMarginLoss", "distance": {"type": "lp"}}),
        json!({"type": "ManifoldLoss", "l": 4, "lambdaC": -1.0}),
        json!({"type": "ManifoldLoss", "l": 4, "alpha": 1.0}),
    ] {
        let spec: LossSpec = serde_json::from_value(cfg.clone()).unwrap();
        assert!(matches!(spec.build(&ctx), Err(CoreError::InvalidParameter { .. })), "{cfg} should be rejected");
    }
    // Required parameters have no default.
    assert!(serde_json::from_value::<LossSpec>(json!({"type": "RankedListLoss"})).is_err());
}

#[test]
fn ntxent_fits_a_large_batch() {
    // B = 1024 is out of reach of the reference's [pos × neg] formulation (≈ 4·10⁹ entries);
    // the per-anchor form needs a few [B × B] matrices.
    let n = 1024;
    let emb = Tensor::randn([n, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(256);
    let (loss, _vs) = build(json!({"type": "NTXentLoss"}), None);
    let v = loss.forward(&Batch::new(&emb, &labels), None).unwrap();
    v.backward();
    assert!(v.double_value(&[]).is_finite());
    assert!(emb.grad().isfinite().all().int64_value(&[]) == 1);
}

// ------------------------------------------------------------------ dynamic soft margin, TCM, manifold

/// The dynamic soft margin loss of one batch by plain loops, updating `hist` as the reference.
/// Returns the value and the CDF weight of every triplet.
fn dsm_oracle(e: &[Vec<f64>], trip: &[(usize, usize, usize)], hist: &mut [f64], min_val: f64, momentum: f64) -> (f64, Vec<f64>) {
    let nb = hist.len();
    let delta = 2.0 * min_val.abs() / nb as f64;
    let pos = |v: f64| {
        let x = ((v - min_val) / delta).clamp(0.0, nb as f64);
        let i = x.floor().min((nb - 1) as f64);
        (i as usize, x - i)
    };
    let vs: Vec<f64> = trip.iter().map(|&(a, p, n)| euclid_normalized(&e[a], &e[p]) - euclid_normalized(&e[a], &e[n])).collect();
    let m = if hist.iter().sum::<f64>() != 0.0 { momentum } else { 1.0 };
    let mut batch = vec![0.0; nb + 1];
    for &v in &vs {
        let (i, a) = pos(v);
        batch[i] += 1.0 - a;
        batch[i + 1] += a;
    }
    batch[nb - 1] += batch[nb];
    for k in 0..nb {
        hist[k] = (1.0 - m) * hist[k] + m * batch[k];
    }
    let total: f64 = hist.iter().sum();
    hist.iter_mut().for_each(|h| *h /= total);
    let cdf: Vec<f64> = hist
        .iter()
        .scan(0.0, |s, h| {
            *s += h;
            Some(*s)
        })
        .collect();
    let w: Vec<f64> = vs.iter().map(|&v| cdf[pos(v).0]).collect();
    (vs.iter().zip(&w).map(|(v, w)| v * w).sum::<f64>() / vs.len() as f64, w)
}

fn all_triplet_list(labels: &[i64]) -> Vec<(usize, usize, usize)> {
    let n = labels.len();
    let mut t = Vec::new();
    for a in 0..n {
        for p in 0..n {
            for q in 0..n {
                if p != a && labels[p] == labels[a] && labels[q] != labels[a] {
                    t.push((a, p, q));
                }
            }
        }
    }
    t
}

#[test]
fn dynamic_soft_margin_matches_oracle_across_calls() {
    let (n, d) = (10, 4);
    let labels = [0i64, 0, 1, 1, 1, 2, 2, 3, 0, 2];
    let cfg = json!({"type": "DynamicSoftMarginLoss", "num_bins": 16, "momentum": 0.25});
    let (loss, _vs) = build(cfg.clone(), None);
    let (mined, _vs2) = build(cfg, None);
    let mut hist = vec![0.0; 16];
    let trip = all_triplet_list(&labels);
    let lab = Tensor::from_slice(&labels);
    for call in 0..3 {
        let x = data(n, d, 40 + call);
        let (want, _) = dsm_oracle(&rows(&x, n), &trip, &mut hist, -2.0, 0.25);
        // Streamed all-triplets path.
        let emb = tensor(&x, n).set_requires_grad(true);
        let v = loss.forward(&Batch::new(&emb, &lab), None).unwrap();
        close(v.double_value(&[]), want, "dynamic soft margin (streamed)");
        let g = Tensor::run_backward(&[&v], &[&emb], false, false)[0].shallow_clone();
        // Explicit mined path with every triplet: same value and gradient.
        let emb2 = tensor(&x, n).set_requires_grad(true);
        let b2 = Batch::new(&emb2, &lab);
        let t = Tuples::Triplets(b2.all_triplets());
        let v2 = mined.forward(&b2, Some(&t)).unwrap();
        close(v2.double_value(&[]), want, "dynamic soft margin (mined)");
        let g2 = Tensor::run_backward(&[&v2], &[&emb2], false, false)[0].shallow_clone();
        assert!((&g - &g2).abs().max().double_value(&[]) < 1e-9, "streamed and explicit gradients differ");
        assert!(g.isfinite().all().int64_value(&[]) == 1);
    }
}

#[test]
fn dynamic_soft_margin_gradient_uses_detached_weights() {
    // Gradient = mean_t w_t ∂v_t with the CDF weights held constant.
    let (n, d) = (6, 3);
    let labels = [0i64, 0, 1, 1, 2, 2];
    let x = data(n, d, 9);
    let (loss, _vs) = build(json!({"type": "DynamicSoftMarginLoss"}), None);
    let emb = tensor(&x, n).set_requires_grad(true);
    let lab = Tensor::from_slice(&labels);
    let v = loss.forward(&Batch::new(&emb, &lab), None).unwrap();
    let g = Tensor::run_backward(&[&v], &[&emb], false, false)[0].shallow_clone();
    let trip = all_triplet_list(&labels);
    let (_, w) = dsm_oracle(&rows(&x, n), &trip, &mut [0.0; 10], -2.0, 0.01);
    let objective = |x: &[f64]| {
        let e = rows(x, n);
        trip.iter().zip(&w).map(|(&(a, p, q), w)| w * (euclid_normalized(&e[a], &e[p]) - euclid_normalized(&e[a], &e[q]))).sum::<f64>() / trip.len() as f64
    };
    let eps = 1e-6;
    for k in 0..n * d {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[k] += eps;
        m[k] -= eps;
        let fd = (objective(&p) - objective(&m)) / (2.0 * eps);
        let ad = g.view([-1]).double_value(&[k as i64]);
        assert!((fd - ad).abs() <= 1e-5 * fd.abs().max(1.0), "d/dx[{k}]: autograd {ad} vs {fd}");
    }
}

fn tcm_oracle(e: &[Vec<f64>], pos: &[(usize, usize)], neg: &[(usize, usize)]) -> f64 {
    let (mp, mm) = (0.9, 0.5);
    let part = |pairs: &[(usize, usize)], f: &dyn Fn(f64) -> Option<f64>| {
        let vals: Vec<f64> = pairs.iter().filter_map(|&(i, j)| f(cosine(&e[i], &e[j]))).collect();
        if vals.is_empty() { 0.0 } else { vals.iter().sum::<f64>() / vals.len() as f64 }
    };
    part(pos, &|s| (s <= mp).then_some(mp - s)) + part(neg, &|s| (s >= mm).then_some(s - mm))
}

#[test]
fn tcm_matches_the_reference_unit_test_and_oracle() {
    // pytorch-metric-learning's own test: ContrastiveLoss(cosine, 0.9, 0.4) = 0.4866 plus TCM
    // 0.1929 + 0.325, total 1.0045.
    let emb = Tensor::from_slice(&[0.0f32, 1.0, 0.43, 0.90, 1.0, 0.0, 0.5, 0.5]).view([4, 2]);
    let labels = [0i64, 0, 1, 1];
    let (tcm, _vs) = build(json!({"type": "ThresholdConsistentMarginLoss"}), None);
    let (con, _vs2) = build(json!({"type": "ContrastiveLoss", "pos_margin": 0.9, "neg_margin": 0.4, "distance": {"type": "cosine"}}), None);
    let total = value(&tcm, &emb, &labels) + value(&con, &emb, &labels);
    assert!((total - 1.0045).abs() < 1e-4, "contrastive + TCM = {total}");

    let (n, d) = (12, 5);
    let x = data(n, d, 3);
    let e = rows(&x, n);
    let labels = [0i64, 0, 1, 1, 1, 2, 2, 3, 3, 3, 0, 2];
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in 0..n {
            if i != j && labels[i] == labels[j] {
                pos.push((i, j));
            } else if labels[i] != labels[j] {
                neg.push((i, j));
            }
        }
    }
    let (loss, _vs3) = build(json!({"type": "ThresholdConsistentMarginLoss"}), None);
    close(value(&loss, &tensor(&x, n), &labels), tcm_oracle(&e, &pos, &neg), "tcm (all pairs)");
    // Mined pairs with repetitions count every repetition.
    let mpos = vec![(0usize, 1usize), (0, 1), (2, 3), (5, 6)];
    let mneg = vec![(0usize, 2usize), (0, 2), (0, 2), (3, 7), (4, 5), (9, 11)];
    let ti = |v: &[(usize, usize)], k: usize| Tensor::from_slice(&v.iter().map(|p| if k == 0 { p.0 as i64 } else { p.1 as i64 }).collect::<Vec<_>>());
    let t = Tuples::Pairs(proxima_core::Pairs { pos_anchor: ti(&mpos, 0), pos_other: ti(&mpos, 1), neg_anchor: ti(&mneg, 0), neg_other: ti(&mneg, 1) });
    let emb = tensor(&x, n);
    let lab = Tensor::from_slice(&labels);
    let got = loss.forward(&Batch::new(&emb, &lab), Some(&t)).unwrap().double_value(&[]);
    close(got, tcm_oracle(&e, &mpos, &mneg), "tcm (mined pairs)");
}

/// Inverse of a square matrix by Gauss–Jordan elimination with partial pivoting.
fn invert(mut a: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        inv.swap(c, p);
        let d = a[c][c];
        for j in 0..n {
            a[c][j] /= d;
            inv[c][j] /= d;
        }
        for i in 0..n {
            if i != c {
                let f = a[i][c];
                for j in 0..n {
                    a[i][j] -= f * a[c][j];
                    inv[i][j] -= f * inv[c][j];
                }
            }
        }
    }
    inv
}

fn manifold_oracle(e: &[Vec<f64>], proxies: &[Vec<f64>], mc: &[usize], alpha: f64, margin: f64, lambda_c: f64) -> f64 {
    let (n, k) = (e.len(), proxies.len());
    let x: Vec<Vec<f64>> = e.iter().chain(proxies).cloned().collect();
    let t = n + k;
    let mut s = vec![vec![0.0; t]; t];
    for i in 0..t {
        for j in 0..t {
            if i != j {
                s[i][j] = (cosine(&x[i], &x[j]).max(0.0) / 0.5).exp();
            }
        }
    }
    let dinv: Vec<f64> = s.iter().map(|r| r.iter().sum::<f64>().powf(-0.5)).collect();
    let m: Vec<Vec<f64>> = (0..t).map(|i| (0..t).map(|j| (if i == j { 1.0 } else { 0.0 }) - alpha * dinv[i] * s[i][j] * dinv[j]).collect()).collect();
    let f: Vec<Vec<f64>> = invert(m).into_iter().map(|r| r.into_iter().map(|v| v * (1.0 - alpha)).collect()).collect();
    let soft = |sim: &dyn Fn(usize, usize) -> f64| {
        let mut total = 0.0;
        for (i, &own) in mc.iter().enumerate() {
            let mut sum = 0.0;
            for c in 0..k {
                let v = sim(i, c) - sim(i, own) + margin;
                if c != own && v >= 0.0 {
                    sum += v.exp();
                }
            }
            total += (1.0 + sum).ln();
        }
        total / n as f64
    };
    let int = soft(&|i, c| f[i][n + c]);
    let ctx = soft(&|i, c| cosine(&f[i], &f[n + c]));
    if lambda_c.is_infinite() { ctx } else { int + lambda_c * ctx }
}

fn manifold(params: Value, proxies: &[f64], k: i64, l: i64) -> (proxima_core::loss::manifold::ManifoldLoss, nn::VarStore) {
    let vs = nn::VarStore::new(Device::Cpu);
    let p: proxima_core::loss::manifold::ManifoldParams = serde_json::from_value(params).unwrap();
    let loss = {
        let root = vs.root();
        let ctx = BuildContext { num_classes: None, embedding_size: Some(l), vars: &root };
        proxima_core::loss::manifold::ManifoldLoss::new(p, proxima_core::Distance::cosine(), &ctx).unwrap()
    };
    tch::no_grad(|| {
        let w = &loss.parameters()[0].1;
        w.shallow_clone().copy_(&Tensor::from_slice(proxies).view([k, l]).to_kind(w.kind()));
    });
    (loss, vs)
}

#[test]
fn manifold_matches_oracle() {
    let (n, d, k) = (7usize, 3usize, 3usize);
    let px = data(k, d, 77);
    // Proxies are float32 parameters: the oracle uses their rounded values.
    let px32: Vec<f64> = px.iter().map(|v| *v as f32 as f64).collect();
    let mc = [0usize, 1, 2, 0, 2, 1, 1];
    let mct = Tensor::from_slice(&mc.iter().map(|&c| c as i64).collect::<Vec<_>>());
    for (lambda_c, margin) in [(1.0, 5e-4), (0.5, 0.05), (0.0, 0.0), (f64::INFINITY, 5e-4)] {
        let (mut loss, _vs) = manifold(json!({"K": 3, "margin": margin}), &px, k as i64, d as i64);
        // (∞ cannot be written in JSON; TOML's `inf` deserialises to it.)
        loss.params.lambda_c = lambda_c;
        for seed in [1u64, 2] {
            let x = data(n, d, seed);
            let got = loss.loss_with_meta_classes(&tensor(&x, n), &mct).unwrap().double_value(&[]);
            let want = manifold_oracle(&rows(&x, n), &rows(&px32, k), &mc, 0.8, margin, lambda_c);
            assert!((got - want).abs() <= 1e-8 * want.abs().max(1.0), "lambdaC {lambda_c}: got {got}, oracle {want}");
        }
    }
}

#[test]
fn manifold_gradients_and_errors() {
    let (n, d, k) = (6usize, 3usize, 2usize);
    let px = data(k, d, 5);
    let (loss, _vs) = manifold(json!({"K": 2, "margin": 0.1}), &px, k as i64, d as i64);
    let mc = Tensor::from_slice(&[0i64, 1, 1, 0, 1, 0]);
    let x = data(n, d, 21);
    let emb = tensor(&x, n).set_requires_grad(true);
    let v = loss.loss_with_meta_classes(&emb, &mc).unwrap();
    let g = Tensor::run_backward(&[&v], &[&emb], false, false)[0].shallow_clone();
    let eps = 1e-6;
    for i in 0..n * d {
        let (mut p, mut m) = (x.clone(), x.clone());
        p[i] += eps;
        m[i] -= eps;
        let f = |y: &[f64]| loss.loss_with_meta_classes(&tensor(y, n), &mc).unwrap().double_value(&[]);
        let fd = (f(&p) - f(&m)) / (2.0 * eps);
        let ad = g.view([-1]).double_value(&[i as i64]);
        assert!((fd - ad).abs() <= 1e-5 * fd.abs().max(1.0), "manifold d/dx[{i}]: autograd {ad} vs {fd}");
    }
    // Through the public API (random meta-classes, labels unused): proxies get gradients.
    let lab = Tensor::from_slice(&[0i64; 6]);
    let emb = tensor(&x, n).to_kind(Kind::Float);
    let (spec_loss, _vs2) = {
        let vs = nn::VarStore::new(Device::Cpu);
        let spec: LossSpec = serde_json::from_value(json!({"type": "ManifoldLoss", "K": 2})).unwrap();
        let l = {
            let root = vs.root();
            spec.build(&BuildContext { num_classes: None, embedding_size: Some(3), vars: &root }).unwrap()
        };
        (l, vs)
    };
    let params = spec_loss.parameters();
    assert_eq!(params[0].0, "proxies");
    assert_eq!(params[0].1.size(), vec![2, 3]);
    let out = spec_loss.forward(&Batch::new(&emb, &lab), None).unwrap();
    out.backward();
    assert!(params[0].1.grad().isfinite().all().int64_value(&[]) == 1);
    assert!(out.double_value(&[]).is_finite() && out.double_value(&[]) >= 0.0);
    // Errors: too few embeddings for K, meta-classes out of range, wrong size, mined tuples.
    let small = tensor(&data(1, d, 1), 1).to_kind(Kind::Float);
    assert!(matches!(spec_loss.forward(&Batch::new(&small, &Tensor::from_slice(&[0i64])), None), Err(CoreError::Shape(_))));
    assert!(matches!(loss.loss_with_meta_classes(&tensor(&x, n), &Tensor::from_slice(&[0i64, 1, 2, 0, 1, 0])), Err(CoreError::LabelOutOfRange { .. })));
    assert!(matches!(loss.loss_with_meta_classes(&tensor(&data(n, 4, 1), n), &mc), Err(CoreError::Shape(_))));
    let b = Batch::new(&emb, &lab);
    let t = Tuples::Triplets(b.all_triplets());
    assert!(matches!(spec_loss.forward(&b, Some(&t)), Err(CoreError::Unsupported(_))));
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let no_size = BuildContext { num_classes: None, embedding_size: None, vars: &root };
    let spec: LossSpec = serde_json::from_value(json!({"type": "ManifoldLoss"})).unwrap();
    assert!(matches!(spec.build(&no_size), Err(CoreError::InvalidParameter { .. })));
}

#[test]
fn dynamic_soft_margin_fits_a_large_batch() {
    // All triplets of B = 1024 (≈ 3·10⁶) are streamed from the [B × B] distance matrix.
    let n = 1024;
    let emb = Tensor::randn([n, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(256);
    let (loss, _vs) = build(json!({"type": "DynamicSoftMarginLoss"}), None);
    let v = loss.forward(&Batch::new(&emb, &labels), None).unwrap();
    v.backward();
    assert!(v.double_value(&[]).is_finite());
    assert!(emb.grad().isfinite().all().int64_value(&[]) == 1);
}
