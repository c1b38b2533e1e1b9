//! Contracts of the core: configuration parsing, error types, and the streamed triplet path
//! agreeing with the explicit (materialised) one.

use proxima_core::loss::BuildContext;
use proxima_core::{Batch, CoreError, LossSpec, Reducer, Triplets, Tuples};
use tch::{Device, Kind, Tensor, nn};

fn build(toml_text: &str) -> proxima_core::Result<proxima_core::Loss> {
    let spec: LossSpec = toml::from_str(toml_text).expect("valid TOML");
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    spec.build(&BuildContext { num_classes: None, embedding_size: None, vars: &root })
}

fn random_batch(n: i64, d: i64, classes: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let emb = Tensor::randn([n, d], (Kind::Double, Device::Cpu));
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(classes);
    (emb, labels)
}

#[test]
fn loss_config_from_toml_with_distance_and_reducer() {
    let loss = build(
        r#"
        type = "triplet_margin"
        margin = 0.2
        distance = { type = "cosine" }
        reducer = { type = "threshold", low = 0.05 }
        "#,
    )
    .unwrap();
    assert_eq!(loss.name(), "TripletMarginLoss");
    assert_eq!(loss.reducer(), Reducer::Threshold { low: Some(0.05), high: None });
}

#[test]
fn unknown_config_keys_and_types_are_rejected() {
    let unknown: Result<LossSpec, _> = toml::from_str("type = \"triplet_margin\"\nmargn = 0.2\n");
    let msg = unknown.unwrap_err().to_string();
    assert!(msg.contains("margn"), "message should name the key: {msg}");
    let wrong_type: Result<LossSpec, _> = toml::from_str("type = \"triplet_margin\"\nmargin = \"big\"\n");
    assert!(wrong_type.is_err());
    let unknown_loss: Result<LossSpec, _> = toml::from_str("type = \"tripletmargin\"\n");
    assert!(unknown_loss.unwrap_err().to_string().contains("tripletmargin"));
}

#[test]
fn invalid_parameters_fail_at_build_time() {
    let err = build("type = \"triplet_margin\"\ntriplets_per_anchor = 0\n").err().expect("must fail");
    assert!(matches!(err, CoreError::InvalidParameter { .. }), "{err}");
    let err = build("type = \"contrastive\"\nreducer = { type = \"threshold\" }\n").err().expect("must fail");
    assert!(matches!(err, CoreError::InvalidParameter { .. }), "{err}");
}

#[test]
fn bad_batches_are_typed_errors() {
    let loss = build("type = \"contrastive\"").unwrap();
    let emb = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
    let short = Tensor::from_slice(&[0i64, 1]);
    assert!(matches!(loss.forward(&Batch::new(&emb, &short), None), Err(CoreError::Shape(_))));
    let nan = emb.copy();
    let _ = nan.get(0).get(0).fill_(f64::NAN);
    let labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
    assert!(matches!(loss.forward(&Batch::new(&nan, &labels), None), Err(CoreError::NonFinite(_))));
    let empty = Tensor::zeros([0, 3], (Kind::Float, Device::Cpu));
    let no_labels = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    assert!(matches!(loss.forward(&Batch::new(&empty, &no_labels), None), Err(CoreError::Empty(_))));
    let float_labels = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0]);
    assert!(matches!(loss.forward(&Batch::new(&emb, &float_labels), None), Err(CoreError::Shape(_))));
}

/// Loss value and embedding gradient of `loss` on a fresh copy of `emb`.
fn value_and_grad(loss: &proxima_core::Loss, emb: &Tensor, labels: &Tensor, tuples: Option<&Tuples>) -> (f64, Tensor) {
    let e = emb.detach().copy().set_requires_grad(true);
    let v = loss.forward(&Batch::new(&e, labels), tuples).unwrap();
    v.backward();
    (v.double_value(&[]), e.grad())
}

#[test]
fn streamed_triplets_equal_explicit_triplets() {
    let (emb, labels) = random_batch(40, 6, 5, 7);
    let explicit = Tuples::Triplets(Batch::new(&emb, &labels).all_triplets());
    for (cfg, label) in [
        ("type = \"triplet_margin\"\nmargin = 0.3", "avg_non_zero"),
        ("type = \"triplet_margin\"\nmargin = 0.3\nreducer = { type = \"mean\" }", "mean"),
        ("type = \"triplet_margin\"\nmargin = 0.3\nreducer = { type = \"sum\" }", "sum"),
        ("type = \"triplet_margin\"\nmargin = 0.3\nreducer = { type = \"threshold\", low = 0.1, high = 0.5 }", "threshold"),
        ("type = \"triplet_margin\"\nmargin = 0.2\nswap = true", "swap"),
        ("type = \"triplet_margin\"\nsmooth_loss = true\ndistance = { type = \"cosine\" }", "smooth cosine"),
        ("type = \"triplet_margin\"\nmargin = 0.3\nreducer = { type = \"per_anchor\" }", "per-anchor (materialised)"),
    ] {
        let loss = build(cfg).unwrap();
        let (v1, g1) = value_and_grad(&loss, &emb, &labels, None);
        let (v2, g2) = value_and_grad(&loss, &emb, &labels, Some(&explicit));
        assert!((v1 - v2).abs() <= 1e-9 * v2.abs().max(1.0), "{label}: streamed {v1} vs explicit {v2}");
        let gd = (&g1 - &g2).abs().max().double_value(&[]);
        assert!(gd <= 1e-9, "{label}: gradients differ by {gd}");
    }
}

#[test]
fn triplet_loss_is_zero_without_valid_triplets() {
    let loss = build("type = \"triplet_margin\"").unwrap();
    let (emb, _) = random_batch(6, 4, 1, 1);
    for labels in [Tensor::zeros([6], (Kind::Int64, Device::Cpu)), Tensor::arange(6, (Kind::Int64, Device::Cpu))] {
        let (v, g) = value_and_grad(&loss, &emb, &labels, None);
        assert_eq!(v, 0.0);
        assert_eq!(g.abs().sum(Kind::Double).double_value(&[]), 0.0);
    }
    let none = Tuples::Triplets(Triplets {
        anchor: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        positive: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
        negative: Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
    });
    let labels = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1]);
    assert_eq!(value_and_grad(&loss, &emb, &labels, Some(&none)).0, 0.0);
}

#[test]
fn triplet_gradient_matches_finite_differences() {
    let (emb, labels) = random_batch(12, 3, 3, 3);
    let loss = build("type = \"triplet_margin\"\nmargin = 0.5\nsmooth_loss = true").unwrap();
    let (_, g) = value_and_grad(&loss, &emb, &labels, None);
    let h = 1e-6;
    for (i, j) in [(0i64, 0i64), (5, 2), (11, 1)] {
        let f = |delta: f64| {
            let e = emb.copy();
            let _ = e.get(i).get(j).g_add_scalar_(delta);
            loss.forward(&Batch::new(&e, &labels), None).unwrap().double_value(&[])
        };
        let numeric = (f(h) - f(-h)) / (2.0 * h);
        let analytic = g.double_value(&[i, j]);
        assert!((numeric - analytic).abs() < 1e-5, "d/d[{i},{j}]: numeric {numeric} vs autograd {analytic}");
    }
}

#[test]
fn reference_set_losses_compare_queries_with_references() {
    let loss = build("type = \"contrastive\"").unwrap();
    let (q, ql) = random_batch(5, 4, 2, 11);
    let (r, rl) = random_batch(7, 4, 2, 12);
    let v = loss.forward(&Batch::with_reference(&q, &ql, &r, &rl), None).unwrap().double_value(&[]);
    assert!(v.is_finite() && v >= 0.0);
    let bad = Tensor::randn([7, 5], (Kind::Double, Device::Cpu));
    assert!(matches!(loss.forward(&Batch::with_reference(&q, &ql, &bad, &rl), None), Err(CoreError::Shape(_))));
}
