//! Integration tests of proxima-eval: parity with pytorch-metric-learning 2.9
//! (AccuracyCalculator) and scikit-learn (NMI/AMI), plus cross-module checks.
//!
//! The parity tests read every case of `$PROXIMA_PARITY_DIR/{accuracy,clustering}.json`
//! (default `<workspace>/../shared/parity`). If the directory is absent they print a
//! SKIP message and pass; if it is present, any case that cannot be run or differs by
//! more than `1e-5 + 1e-4·|expected|` fails the test.

use std::path::PathBuf;

use proxima_eval::*;

type Result<T, E> = std::result::Result<T, E>;
use serde_json::Value;

fn parity_dir() -> PathBuf {
    std::env::var_os("PROXIMA_PARITY_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/parity"))
}

/// Load `name` from the parity directory, or `None` (with a SKIP message) when absent.
fn load(name: &str) -> Option<Value> {
    let dir = parity_dir();
    if !dir.is_dir() {
        eprintln!("SKIP parity: directory {} is absent (set PROXIMA_PARITY_DIR)", dir.display());
        return None;
    }
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display())))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 + 1e-4 * b.abs()
}

fn matrix(v: &Value) -> Result<(Vec<f32>, usize), String> {
    let rows = v.as_array().ok_or("matrix is not a list")?;
    let dim = rows.first().and_then(Value::as_array).map(Vec::len).ok_or("empty matrix")?;
    let mut out = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        let r = r.as_array().ok_or("row is not a list")?;
        if r.len() != dim {
            return Err("ragged matrix".into());
        }
        for x in r {
            out.push(x.as_f64().ok_or("non-numeric entry")? as f32);
        }
    }
    Ok((out, dim))
}

fn labels(v: &Value) -> Result<Vec<i64>, String> {
    v.as_array()
        .ok_or("labels are not a list")?
        .iter()
        .map(|x| x.as_i64().or_else(|| x.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)).ok_or("bad label".to_string()))
        .collect()
}

fn run_accuracy_case(case: &Value) -> Result<Vec<String>, String> {
    let params = &case["params"];
    let k = match &params["k"] {
        // pytorch-metric-learning's k=None: every reference (recorded values confirm it).
        Value::Null => KSpec::AllReferences,
        Value::Number(n) => KSpec::Fixed(n.as_u64().ok_or("bad k")? as usize),
        Value::String(s) if s == "max_bin_count" => KSpec::MaxBinCount,
        other => return Err(format!("unsupported k {other}")),
    };
    let same = params["reference_is_query"].as_bool().ok_or("missing reference_is_query")?;
    let inputs = &case["inputs"];
    let (q, d) = matrix(&inputs["query"])?;
    let ql = labels(&inputs["query_labels"])?;
    let qe = Embeddings::new("query", &q, d).map_err(|e| e.to_string())?;
    let avg_of_avgs = params.get("avg_of_avgs").and_then(Value::as_bool).unwrap_or(false);
    let config = RetrievalConfig { k, avg_of_avgs, at_ks: vec![], metric: Metric::L2 };
    let (r, rl);
    let m = if same {
        evaluate_retrieval(qe, &ql, None, &config)
    } else {
        let (rr, rd) = matrix(&inputs["reference"])?;
        r = rr;
        rl = labels(&inputs["reference_labels"])?;
        let re = Embeddings::new("reference", &r, rd).map_err(|e| e.to_string())?;
        evaluate_retrieval(qe, &ql, Some((re, &rl)), &config)
    }
    .map_err(|e| e.to_string())?;
    let got = [
        ("precision_at_1", m.metrics.precision_at_1),
        ("r_precision", m.metrics.r_precision),
        ("mean_average_precision_at_r", m.metrics.mean_average_precision_at_r),
        ("mean_average_precision", m.metrics.mean_average_precision),
        ("mean_reciprocal_rank", m.metrics.mean_reciprocal_rank),
    ];
    let expected = case["expected"].as_object().ok_or("missing expected")?;
    let mut diffs = Vec::new();
    for (name, want) in expected {
        let want = want.as_f64().ok_or(format!("expected.{name} is not a number"))?;
        let have = got.iter().find(|(n, _)| n == name).ok_or(format!("unknown metric {name}"))?.1;
        if !close(have, want) {
            diffs.push(format!("{name}: got {have}, expected {want}"));
        }
    }
    Ok(diffs)
}

#[test]
fn parity_accuracy_calculator_all_cases_or_skip_if_dir_absent() {
    let Some(doc) = load("accuracy.json") else { return };
    let cases = doc["cases"].as_array().expect("accuracy.json has no cases list");
    assert!(!cases.is_empty(), "accuracy.json has no cases");
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?").to_string();
        match run_accuracy_case(case) {
            Ok(d) if d.is_empty() => {}
            Ok(d) => failures.push(format!("{id}: {}", d.join("; "))),
            Err(e) => failures.push(format!("{id}: cannot run: {e}")),
        }
    }
    eprintln!("accuracy parity: {}/{} cases match", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "accuracy parity failures:\n{}", failures.join("\n"));
}

#[test]
fn parity_sklearn_nmi_ami_all_cases_or_skip_if_dir_absent() {
    let Some(doc) = load("clustering.json") else { return };
    let cases = doc["cases"].as_array().expect("clustering.json has no cases list");
    assert!(!cases.is_empty(), "clustering.json has no cases");
    let mut failures = Vec::new();
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?").to_string();
        let run = || -> Result<Vec<String>, String> {
            let t = labels(&case["inputs"]["labels_true"])?;
            let p = labels(&case["inputs"]["labels_pred"])?;
            let mut diffs = Vec::new();
            for (name, f) in [("NMI", nmi as fn(&[i64], &[i64]) -> proxima_eval::Result<f64>), ("AMI", ami)] {
                let want = case["expected"][name].as_f64().ok_or(format!("missing expected.{name}"))?;
                let have = f(&t, &p).map_err(|e| e.to_string())?;
                if !close(have, want) {
                    diffs.push(format!("{name}: got {have}, expected {want}"));
                }
            }
            Ok(diffs)
        };
        match run() {
            Ok(d) if d.is_empty() => {}
            Ok(d) => failures.push(format!("{id}: {}", d.join("; "))),
            Err(e) => failures.push(format!("{id}: cannot run: {e}")),
        }
    }
    eprintln!("clustering parity: {}/{} cases match", cases.len() - failures.len(), cases.len());
    assert!(failures.is_empty(), "clustering parity failures:\n{}", failures.join("\n"));
}

/// Separate query/reference sets built from one set must agree with the "reference is
/// the query set" mode when the query's own row is the only difference… which we emulate
/// by searching k+1 and dropping self, exactly as pytorch-metric-learning does.
#[test]
fn same_source_equals_k_plus_one_search_with_self_dropped() {
    let n = 300;
    let d = 8;
    let data: Vec<f32> = (0..n * d).map(|i| (((i * 2654435761usize) >> 7) % 1000) as f32 / 100.0).collect();
    let lab: Vec<i64> = (0..n as i64).map(|i| i % 17).collect();
    let e = Embeddings::new("x", &data, d).unwrap();
    let cfg = RetrievalConfig { k: KSpec::Fixed(12), ..RetrievalConfig::default() };
    let direct = evaluate_retrieval(e, &lab, None, &cfg).unwrap();
    // Search k+1 against the full set (self included), drop self, then score.
    let full = knn(e, Some(e), 13, Metric::L2).unwrap();
    let mut indices = Vec::new();
    let mut scores = Vec::new();
    for i in 0..n {
        let row: Vec<(usize, f32)> = full.row_indices(i).iter().copied().zip(full.row_scores(i).iter().copied()).filter(|&(j, _)| j != i).take(12).collect();
        assert_eq!(row.len(), 12);
        indices.extend(row.iter().map(|r| r.0));
        scores.extend(row.iter().map(|r| r.1));
    }
    let dropped = KnnResult { k: 12, metric: Metric::L2, indices, scores };
    let via = metrics_from_knn(&dropped, &lab, &lab, true, &cfg).unwrap();
    assert_eq!(direct.metrics, via.metrics);
    assert!(direct.metrics.precision_at_1 > 0.0);
}

/// k-means on well-separated blobs recovers the classes through the public API.
#[test]
fn clustering_end_to_end_on_blobs() {
    let mut data = Vec::new();
    let mut lab = Vec::new();
    for c in 0..5i64 {
        for j in 0..40 {
            let jitter = ((j * 37 % 11) as f32) / 50.0;
            data.extend_from_slice(&[c as f32 * 5.0 + jitter, (c % 2) as f32 * 7.0 - jitter, jitter]);
            lab.push(c);
        }
    }
    let e = Embeddings::new("x", &data, 3).unwrap();
    let m = evaluate_clustering(e, &lab, 3).unwrap();
    assert!(m.nmi > 0.999 && m.ami > 0.999, "{m:?}");
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.contains("\"nmi\""));
}

/// Verification on scores derived from the k-NN module: genuine pairs are closer.
#[test]
fn verification_report_from_embedding_pairs() {
    let genuine: Vec<f64> = (0..200).map(|i| 0.6 + 0.4 * ((i * 7 % 100) as f64) / 100.0).collect();
    let impostor: Vec<f64> = (0..20000).map(|i| 0.7 * ((i * 13 % 1000) as f64) / 1000.0).collect();
    let r = verification_report(&genuine, &impostor, ScoreKind::Similarity).unwrap();
    assert!(r.auc > 0.9 && r.auc <= 1.0);
    assert!(r.eer < 0.2);
    for f in &r.fnmr_at_fmr {
        assert!(f.fmr <= f.target_fmr);
    }
    // Stricter FMR never lowers FNMR.
    assert!(r.fnmr_at_fmr.windows(2).all(|w| w[1].fnmr >= w[0].fnmr));
    assert!(serde_json::to_string(&r).unwrap().contains("fnmr_at_fmr"));
}

/// Metrics computed from a too-shallow neighbour list are refused, and the full report
/// survives a serde round trip.
#[test]
fn shallow_knn_is_refused_and_report_round_trips() {
    let pts: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
    let lab: Vec<i64> = (0..40).map(|i| i % 4).collect();
    let e = Embeddings::new("x", &pts, 1).unwrap();
    let shallow = knn(e, None, 3, Metric::L2).unwrap();
    let cfg = RetrievalConfig { k: KSpec::MaxBinCount, at_ks: vec![1], ..RetrievalConfig::default() };
    let err = metrics_from_knn(&shallow, &lab, &lab, true, &cfg).unwrap_err();
    assert!(matches!(err, EvalError::InvalidK { k: 9, max: 3, .. }), "{err:?}");
    let m = evaluate_retrieval(e, &lab, None, &cfg).unwrap();
    assert_eq!(m.k, 9);
    let back: RetrievalMetrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    // serde_json's default float parsing may differ in the last ulp: compare closely.
    assert_eq!((back.k, back.num_queries, back.per_class.len()), (m.k, m.num_queries, m.per_class.len()));
    assert!((back.metrics.mean_average_precision_at_r - m.metrics.mean_average_precision_at_r).abs() < 1e-12);
    assert!((back.per_class[3].metrics.r_precision - m.per_class[3].metrics.r_precision).abs() < 1e-12);
}
