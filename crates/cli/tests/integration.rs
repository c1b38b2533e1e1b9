//! End-to-end tests of the `proxima` binary: `proxima eval` on small generated files,
//! checked against direct `proxima_eval` computations, plus its report folder and its
//! error exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proxima_eval::{Embeddings, KSpec, Metric, RetrievalConfig, ScoreKind, evaluate_clustering, evaluate_retrieval, verification_report};
use serde_json::Value;

fn proxima(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxima")).args(args).output().expect("run proxima")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `.npy` (format 1.0) file with the given dtype descriptor, shape and raw data.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    std::fs::write(path, proxima_cli::io::npy_bytes(descr, shape, data)).unwrap();
}

fn write_f32(path: &Path, rows: usize, dim: usize, v: &[f32]) {
    write_npy(path, "<f4", &[rows, dim], &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>());
}

fn write_i64(path: &Path, v: &[i64]) {
    write_npy(path, "<i8", &[v.len()], &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>());
}

/// `n` points in `dim` dimensions around one centre per class, with overlapping noise so
/// the metrics are neither 0 nor 1.
fn blobs(n: usize, dim: usize, classes: i64, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut st = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        (st >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let labels: Vec<i64> = (0..n as i64).map(|i| (i * 7 + 3) % classes).collect();
    let mut data = Vec::with_capacity(n * dim);
    for &l in &labels {
        for j in 0..dim {
            let centre = if j as i64 % classes == l { 1.0 } else { 0.0 };
            data.push((centre + 1.2 * next()) as f32);
        }
    }
    (data, labels)
}

/// All unordered pairs (or all query × reference pairs) scored in the given metric.
fn brute_pairs(q: &[f32], ql: &[i64], r: Option<(&[f32], &[i64])>, dim: usize, metric: &str) -> (Vec<f64>, Vec<f64>) {
    let prep = |d: &[f32]| -> Vec<f32> {
        if metric != "cosine" {
            return d.to_vec();
        }
        d.chunks(dim)
            .flat_map(|row| {
                let n = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
                row.iter().map(move |&v| (f64::from(v) / n) as f32)
            })
            .collect()
    };
    let score = |a: &[f32], b: &[f32]| -> f64 {
        match metric {
            "l2" => a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt(),
            _ => a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum(),
        }
    };
    let qp = prep(q);
    let (rp, rl, same) = match r {
        Some((rd, rl)) => (prep(rd), rl, false),
        None => (qp.clone(), ql, true),
    };
    let (mut g, mut i) = (Vec::new(), Vec::new());
    for a in 0..ql.len() {
        for b in if same { a + 1 } else { 0 }..rl.len() {
            let v = score(&qp[a * dim..(a + 1) * dim], &rp[b * dim..(b + 1) * dim]);
            if ql[a] == rl[b] { g.push(v) } else { i.push(v) }
        }
    }
    (g, i)
}

fn close(json: &Value, pointer: &str, expected: f64) {
    let got = json.pointer(pointer).unwrap_or_else(|| panic!("no {pointer} in {json}")).as_f64().unwrap();
    assert!((got - expected).abs() < 1e-9, "{pointer}: got {got}, expected {expected}");
}

fn run_json(args: &[&str]) -> Value {
    let out = proxima(args);
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "--json prints one line: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn eval_json_matches_direct_computation() {
    let dir = tempfile::tempdir().unwrap();
    let (n, dim) = (60, 8);
    let (data, labels) = blobs(n, dim, 4, 1);
    let (e, l) = (dir.path().join("e.npy"), dir.path().join("l.npy"));
    write_f32(&e, n, dim, &data);
    write_i64(&l, &labels);
    let json = run_json(&["eval", "--embeddings", s(&e), "--labels", s(&l), "--json"]);

    let emb = Embeddings::new("q", &data, dim).unwrap();
    let config = RetrievalConfig { k: KSpec::MaxBinCount, avg_of_avgs: false, at_ks: vec![1, 5, 10], metric: Metric::L2 };
    let direct = evaluate_retrieval(emb, &labels, None, &config).unwrap();
    let m = direct.metrics;
    assert!(m.precision_at_1 > 0.2 && m.precision_at_1 < 1.0, "the data should be neither trivial nor hopeless: {m:?}");
    close(&json, "/retrieval/metrics/precision_at_1", m.precision_at_1);
    close(&json, "/retrieval/metrics/r_precision", m.r_precision);
    close(&json, "/retrieval/metrics/mean_average_precision_at_r", m.mean_average_precision_at_r);
    close(&json, "/retrieval/metrics/mean_average_precision", m.mean_average_precision);
    close(&json, "/retrieval/metrics/mean_reciprocal_rank", m.mean_reciprocal_rank);
    assert_eq!(json["retrieval"]["k"], direct.k);
    assert_eq!(json["num_queries"], n);
    assert_eq!(json["num_classes"], 4);
    assert_eq!(json["dim"], dim);
    assert_eq!(json["same_set"], true);
    assert_eq!(json["metric"], "l2");

    let c = evaluate_clustering(emb, &labels, 0).unwrap();
    close(&json, "/clustering/nmi", c.nmi);
    close(&json, "/clustering/ami", c.ami);

    let (g, i) = brute_pairs(&data, &labels, None, dim, "l2");
    assert_eq!(g.len() + i.len(), n * (n - 1) / 2);
    let v = verification_report(&g, &i, ScoreKind::Distance).unwrap();
    assert_eq!(json["verification"]["pairs"]["mode"], "all");
    assert_eq!(json["verification"]["pairs"]["evaluated_pairs"], n * (n - 1) / 2);
    assert_eq!(json["verification"]["report"]["num_genuine"], g.len());
    close(&json, "/verification/report/auc", v.auc);
    close(&json, "/verification/report/eer", v.eer);
    for (j, p) in v.fnmr_at_fmr.iter().enumerate() {
        close(&json, &format!("/verification/report/fnmr_at_fmr/{j}/fnmr"), p.fnmr);
        close(&json, &format!("/verification/report/fnmr_at_fmr/{j}/target_fmr"), p.target_fmr);
    }
}

#[test]
fn eval_with_named_labels_reference_set_and_cosine() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 6;
    let (qd, ql) = blobs(30, dim, 3, 2);
    let (rd, rl) = blobs(45, dim, 3, 3);
    let names = ["nike", "adidas", "puma"];
    let write_names = |p: &Path, l: &[i64]| std::fs::write(p, l.iter().map(|&x| format!("{}\n", names[x as usize])).collect::<String>()).unwrap();
    let (qe, qn, re, rn) = (dir.path().join("q.npy"), dir.path().join("q.txt"), dir.path().join("r.csv"), dir.path().join("r.txt"));
    write_f32(&qe, 30, dim, &qd);
    write_names(&qn, &ql);
    // The reference embeddings as CSV with a header line.
    let mut csv = (0..dim).map(|j| format!("f{j}")).collect::<Vec<_>>().join(",") + "\n";
    for row in rd.chunks(dim) {
        csv += &(row.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",") + "\n");
    }
    std::fs::write(&re, csv).unwrap();
    write_names(&rn, &rl);
    let json = run_json(&[
        "eval",
        "--embeddings",
        s(&qe),
        "--labels",
        s(&qn),
        "--reference-embeddings",
        s(&re),
        "--reference-labels",
        s(&rn),
        "--metric",
        "cosine",
        "--k",
        "5",
        "--json",
    ]);

    // Names get ids in first-seen order over queries then references.
    let mut order: Vec<i64> = Vec::new();
    for &l in ql.iter().chain(&rl) {
        if !order.contains(&l) {
            order.push(l);
        }
    }
    let remap = |l: &[i64]| -> Vec<i64> { l.iter().map(|x| order.iter().position(|o| o == x).unwrap() as i64).collect() };
    let (qids, rids) = (remap(&ql), remap(&rl));
    let names_json: Vec<(i64, String)> =
        json["class_names"].as_array().unwrap().iter().map(|c| (c["id"].as_i64().unwrap(), c["name"].as_str().unwrap().to_string())).collect();
    let expected: Vec<(i64, String)> = order.iter().enumerate().map(|(i, &l)| (i as i64, names[l as usize].to_string())).collect();
    assert_eq!(names_json, expected);

    let q = Embeddings::new("q", &qd, dim).unwrap();
    let r = Embeddings::new("r", &rd, dim).unwrap();
    let config = RetrievalConfig { k: KSpec::Fixed(5), avg_of_avgs: false, at_ks: vec![1, 5, 10], metric: Metric::Cosine };
    let direct = evaluate_retrieval(q, &qids, Some((r, &rids)), &config).unwrap();
    assert_eq!(json["retrieval"]["k"], 5);
    assert_eq!(json["same_set"], false);
    assert_eq!(json["num_references"], 45);
    close(&json, "/retrieval/metrics/precision_at_1", direct.metrics.precision_at_1);
    close(&json, "/retrieval/metrics/mean_average_precision", direct.metrics.mean_average_precision);
    close(&json, "/retrieval/recall_at/2/value", direct.recall_at[2].value);

    let (g, i) = brute_pairs(&qd, &ql, Some((&rd, &rl)), dim, "cosine");
    assert_eq!(g.len() + i.len(), 30 * 45);
    let v = verification_report(&g, &i, ScoreKind::Similarity).unwrap();
    assert_eq!(json["verification"]["score"], "similarity");
    close(&json, "/verification/report/auc", v.auc);
    close(&json, "/verification/report/eer", v.eer);
}

#[test]
fn eval_report_folder_and_terminal_table() {
    let dir = tempfile::tempdir().unwrap();
    let (n, dim) = (40, 5);
    let (data, labels) = blobs(n, dim, 3, 4);
    let (e, l) = (dir.path().join("e.npy"), dir.path().join("l.txt"));
    write_f32(&e, n, dim, &data);
    std::fs::write(&l, labels.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap();
    let report: PathBuf = dir.path().join("out/report");
    let out = proxima(&["eval", "--embeddings", s(&e), "--labels", s(&l), "--report", s(&report)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    for row in ["P@1", "R-Precision", "MAP@R", "MAP ", "MRR", "NMI", "AMI", "AUC", "EER", "FNMR@FMR=1e-2", "FNMR@FMR=1e-3", "FNMR@FMR=1e-4", "queries", "classes"] {
        assert!(table.contains(row), "table lacks {row:?}:\n{table}");
    }
    assert!(table.contains("report written to"), "{table}");

    // metrics.json is the --json object.
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap()).unwrap();
    let printed = run_json(&["eval", "--embeddings", s(&e), "--labels", s(&l), "--json"]);
    assert_eq!(stored, printed);
    let p1 = stored["retrieval"]["metrics"]["precision_at_1"].as_f64().unwrap();
    assert!(table.contains(&format!("{p1:.4}")), "table shows P@1 {p1:.4}:\n{table}");

    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("| P@1") && md.contains("![") && md.contains("pca.png"), "{md}");
    for (name, text) in
        [("pr_curve", "Precision–recall"), ("roc_curve", "ROC of pair verification"), ("pair_scores", "positive (same class)"), ("pca", "PCA of the query embeddings")]
    {
        let png = std::fs::read(report.join(format!("{name}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000, "{name}.png");
        let svg = std::fs::read_to_string(report.join(format!("{name}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains(text), "{name}.svg lacks {text:?}");
    }
    let mut files: Vec<String> = std::fs::read_dir(&report).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(
        files,
        ["metrics.json", "pair_scores.png", "pair_scores.svg", "pca.png", "pca.svg", "pr_curve.png", "pr_curve.svg", "report.md", "roc_curve.png", "roc_curve.svg"]
    );
}

fn assert_fails(args: &[&str], expected: &[&str]) {
    let out = proxima(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for text in expected {
        assert!(stderr.contains(text), "stderr lacks {text:?}: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
}

#[test]
fn eval_bad_inputs_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (data, labels) = blobs(12, 3, 2, 5);
    let (e, l) = (dir.path().join("emb.npy"), dir.path().join("lab.npy"));
    write_f32(&e, 12, 3, &data);
    write_i64(&l, &labels[..11]);
    assert_fails(&["eval", "--embeddings", s(&e), "--labels", s(&l)], &["label count mismatch", "emb.npy has 12 rows", "lab.npy has 11 labels"]);

    let mut bad = data.clone();
    bad[7 * 3 + 1] = f32::NAN;
    let nan = dir.path().join("nan.npy");
    write_f32(&nan, 12, 3, &bad);
    write_i64(&l, &labels);
    assert_fails(&["eval", "--embeddings", s(&nan), "--labels", s(&l)], &["nan.npy", "row 7 (0-based)", "NaN"]);

    let missing = dir.path().join("missing.npy");
    assert_fails(&["eval", "--embeddings", s(&missing), "--labels", s(&l)], &["cannot read embeddings file", "missing.npy"]);

    let flat = dir.path().join("flat.npy");
    write_npy(&flat, "<f4", &[4], &[0u8; 16]);
    assert_fails(&["eval", "--embeddings", s(&flat), "--labels", s(&l)], &["flat.npy", "wrong shape [4]"]);

    // One class only: the retrieval metrics would be trivial, so it is an error.
    write_i64(&l, &[3; 12]);
    assert_fails(&["eval", "--embeddings", s(&e), "--labels", s(&l)], &["only one class"]);

    // A bad --k is a usage error (clap also exits with 2).
    assert_fails(&["eval", "--embeddings", s(&e), "--labels", s(&l), "--k", "zero"], &["max-bin-count"]);
}

#[test]
fn eval_with_a_model_embeds_the_images_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    proxima_data::synth(4, 5, 32, 3, 0.3, &data).unwrap();
    tch::manual_seed(0);
    let cfg = proxima_models::EmbeddingConfig::new(proxima_models::BackboneSpec::SmallCnn { widths: vec![8, 16] }, 16);
    let model = proxima_models::EmbeddingModel::new(cfg, tch::Device::Cpu).unwrap();
    let model_dir = dir.path().join("model");
    proxima_models::model_dir::save_model_dir(&model, 32, &model_dir).unwrap();

    let json = run_json(&["eval", "--model", s(&model_dir), "--data", s(&data), "--json"]);
    assert_eq!(json["num_queries"].as_u64(), Some(20));
    assert_eq!(json["num_classes"].as_u64(), Some(4));
    // The same numbers as embedding with the library and evaluating directly.
    let loaded = proxima_models::model_dir::load_model_dir(&model_dir, tch::Device::Cpu).unwrap();
    let ds = proxima_data::Dataset::scan_folder(&data, &proxima_data::ScanOptions::default()).unwrap().dataset;
    let emb = loaded.embed_dataset(&ds).unwrap();
    let labels: Vec<i64> = ds.labels().iter().map(|&l| l as i64).collect();
    let direct = evaluate_retrieval(Embeddings::new("e", &emb, 16).unwrap(), &labels, None, &RetrievalConfig::default()).unwrap();
    close(&json, "/retrieval/metrics/mean_average_precision_at_r", direct.metrics.mean_average_precision_at_r);

    // A model directory that is not one is a clear error.
    let out = proxima(&["eval", "--model", s(&data), "--data", s(&data)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a model directory"));
}

fn code(args: &[&str]) -> (i32, String, String) {
    let out = proxima(args);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Synthetic brands with two models: enrolment photos of brands 0-2, calibration photos of
/// brands 0-3 (brand 3 is unknown), and brand 4's folder as a new brand.
struct GalleryFixture {
    model: PathBuf,
    other: PathBuf,
    enrol: PathBuf,
    cal: PathBuf,
    new_brand: PathBuf,
}

fn gallery_fixture(dir: &tempfile::TempDir) -> GalleryFixture {
    let data = dir.path().join("data");
    proxima_data::synth(5, 6, 32, 4, 0.3, &data).unwrap();
    let make_model = |name: &str, seed: i64| {
        tch::manual_seed(seed);
        let cfg = proxima_models::EmbeddingConfig::new(proxima_models::BackboneSpec::SmallCnn { widths: vec![4, 8] }, 8);
        let model = proxima_models::EmbeddingModel::new(cfg, tch::Device::Cpu).unwrap();
        let d = dir.path().join(name);
        proxima_models::model_dir::save_model_dir(&model, 32, &d).unwrap();
        d
    };
    let (model, other) = (make_model("model", 0), make_model("other", 1));
    // Enrol brands 0-2 from photos 0-2, calibrate on photos 3-5 of brands 0-3 (brand 3 is unknown).
    let classes: Vec<String> = {
        let mut c: Vec<String> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        c.sort();
        c
    };
    let (enrol, cal) = (dir.path().join("enrol"), dir.path().join("cal"));
    for (ci, class) in classes.iter().enumerate().take(4) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for (i, f) in files.iter().enumerate() {
            let to = if i < 3 && ci < 3 {
                enrol.join(class)
            } else if i >= 3 {
                cal.join(class)
            } else {
                continue;
            };
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let new_brand = data.join(&classes[4]);
    GalleryFixture { model, other, enrol, cal, new_brand }
}

#[test]
fn gallery_build_add_query_match_remove_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, other, enrol, cal, new_brand } = gallery_fixture(&dir);
    let g = dir.path().join("brands.gallery");
    let (c, out, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g), "--calibrate", s(&cal), "--target-fmr", "0.25"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("calibrated threshold") && out.contains("3 brands, 9 images"), "{out}");
    let (c, _, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g)]);
    assert_eq!(c, 2);
    assert!(err.contains("--force"), "{err}");

    // A new brand from a folder: no retraining.
    let (c, out, err) = code(&["gallery", "add", "--gallery", s(&g), "--model", s(&model), "--brand", "newco", s(&new_brand)]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("enrolled new brand \"newco\": +6 images"), "{out}");
    // Another model's embeddings are refused, and the gallery is untouched.
    let (c, _, err) = code(&["gallery", "add", "--gallery", s(&g), "--model", s(&other), "--brand", "x", s(&new_brand)]);
    assert_eq!(c, 2);
    assert!(err.contains("was built with model"), "{err}");
    let v = run_json(&["gallery", "list", "--gallery", s(&g), "--json"]);
    assert_eq!(v["rows"], 15);
    assert_eq!(v["brands"][3]["brand"], "newco");
    assert!(v["calibration"]["threshold"].is_number());

    // An enrolled photo is its own nearest row: known at any threshold up to ~1 (exit 0).
    let photo = std::fs::read_dir(&new_brand).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let (c, out, err) = code(&["query", "--gallery", s(&g), "--model", s(&model), s(&photo), "--threshold", "0.9999", "--top-k", "2", "--json"]);
    assert_eq!(c, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v[0]["decision"].as_str(), v[0]["brand"].as_str()), (Some("known"), Some("newco")));
    assert_eq!(v[0]["candidates"].as_array().unwrap().len(), 2);
    // No cosine reaches 1.5: unknown, exit 1.
    let (c, out, _) = code(&["query", "--gallery", s(&g), "--model", s(&model), s(&photo), "--threshold", "1.5"]);
    assert_eq!(c, 1);
    assert!(out.contains("unknown"), "{out}");
    let (c, _, err) = code(&["query", "--gallery", s(&g), "--model", s(&other), s(&photo)]);
    assert_eq!(c, 2, "{err}");

    // match: the same photo twice is "same" (exit 0); with an impossible threshold "different" (exit 1).
    let (c, out, _) = code(&["match", s(&photo), s(&photo), "--model", s(&model), "--threshold", "0.9999", "--json"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["decision"], "same");
    let (c, out, _) = code(&["match", s(&photo), s(&photo), "--model", s(&model), "--threshold", "1.5"]);
    assert_eq!(c, 1);
    assert!(out.contains("different"), "{out}");
    let (c, _, _) = code(&["match", s(&photo), s(&photo), "--model", s(&model), "--gallery", s(&g)]);
    assert_eq!(c, 0);

    let (c, out, _) = code(&["gallery", "remove", "--gallery", s(&g), "--brand", "newco"]);
    assert_eq!(c, 0);
    assert!(out.contains("6 images"), "{out}");
    let (c, _, err) = code(&["gallery", "remove", "--gallery", s(&g), "--brand", "newco"]);
    assert_eq!(c, 2);
    assert!(err.contains("not in the gallery"), "{err}");
}

/// `ensemble` makes one `--model` of two: its galleries answer queries, a member's gallery is
/// refused for it (another space), and bad ensembles exit 2 and write nothing.
#[test]
fn ensemble_is_a_model_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, other, enrol, .. } = gallery_fixture(&dir);
    let ens = dir.path().join("ens");
    let (c, out, err) = code(&["ensemble", s(&model), s(&other), "--out", s(&ens)]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("2 members, 16 dimensions"), "{out}");
    let g = dir.path().join("ens.gallery");
    let (c, out, err) = code(&["gallery", "build", "--model", s(&ens), "--data", s(&enrol), "--out", s(&g)]);
    assert_eq!(c, 0, "{out}{err}");
    let photo = std::fs::read_dir(enrol.join(std::fs::read_dir(&enrol).unwrap().map(|e| e.unwrap().file_name()).min().unwrap()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let (c, out, err) = code(&["query", "--gallery", s(&g), "--model", s(&ens), s(&photo), "--threshold", "0.9999", "--json"]);
    assert_eq!(c, 0, "an enrolled photo is its own nearest row: {out}{err}");
    let (c, _, err) = code(&["query", "--gallery", s(&g), "--model", s(&model), s(&photo)]);
    assert_eq!(c, 2, "a member is another space: {err}");

    let (c, _, err) = code(&["ensemble", s(&model), "--out", s(&dir.path().join("one"))]);
    assert_eq!(c, 2, "{err}");
    let (c, _, err) = code(&["ensemble", s(&model), s(&dir.path().join("nope")), "--out", s(&dir.path().join("bad"))]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("nope") && !dir.path().join("bad").exists(), "{err}");
    let (c, _, err) = code(&["export", "--model", s(&ens), "--format", "torchscript", "--out", s(&dir.path().join("ens.pt"))]);
    assert_eq!(c, 2);
    assert!(err.contains("ensemble of 2 models"), "{err}");
}

/// `--views small,dark` enrols each image's views beside it, labelled `<file>#<view>`: a logo on
/// white gets both, a logo on a brand-coloured bar only the small one; an unknown view is exit 2.
#[test]
fn gallery_views_enrol_small_and_dark_renderings() {
    use image::{Rgb, RgbImage};
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, .. } = gallery_fixture(&dir);
    let logos = dir.path().join("logos");
    for (brand, colour) in [("red", [200, 30, 30]), ("blue", [20, 40, 200])] {
        std::fs::create_dir_all(logos.join(brand)).unwrap();
        let img = RgbImage::from_fn(60, 40, |x, y| if (15..45).contains(&x) && (10..30).contains(&y) { Rgb(colour) } else { Rgb([255, 255, 255]) });
        img.save(logos.join(brand).join("logo.png")).unwrap();
    }
    RgbImage::from_pixel(60, 40, Rgb([0, 48, 135])).save(logos.join("blue").join("bar.png")).unwrap();
    let g = dir.path().join("views.gallery");
    let (c, out, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&logos), "--out", s(&g), "--views", "small,dark"]);
    assert_eq!(c, 0, "{out}{err}");
    // 3 images, 3 small views, 2 dark views (the bar has no light background).
    assert!(out.contains("2 brands, 8 images"), "{out}");
    let gallery = proxima_index::Gallery::load(&g).unwrap();
    let mut labels: Vec<String> = gallery.paths().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    labels.sort();
    assert_eq!(labels, ["bar.png", "bar.png#small", "logo.png", "logo.png", "logo.png#dark", "logo.png#dark", "logo.png#small", "logo.png#small"]);
    // The same for `gallery add`, and the view names are checked before anything is loaded.
    let (c, out, err) = code(&["gallery", "add", "--gallery", s(&g), "--model", s(&model), "--brand", "green", "--views", "dark", s(&logos.join("red"))]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("+2 images"), "{out}");
    let (c, _, err) = code(&["gallery", "add", "--gallery", s(&g), "--model", s(&model), "--brand", "x", "--views", "sepia", s(&logos.join("red"))]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("unknown view \"sepia\""), "{err}");
}

/// The gallery commands with `--db` (a PostgreSQL + pgvector database from
/// scripts/with-postgres.sh; without PROXIMA_TEST_PG_URL the test prints why and returns) give
/// the same gallery as with a file.
#[test]
fn gallery_commands_on_a_database_match_the_file_gallery() {
    let Ok(url) = std::env::var("PROXIMA_TEST_PG_URL") else {
        eprintln!("skipped: PROXIMA_TEST_PG_URL is not set (scripts/with-postgres.sh starts PostgreSQL + pgvector; scripts/test.sh runs the tests through it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, other, enrol, cal, new_brand } = gallery_fixture(&dir);
    let g = dir.path().join("brands.gallery");
    let build = |target: &[&str], extra: &[&str]| {
        code(&[&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--calibrate", s(&cal), "--target-fmr", "0.25"][..], target, extra].concat())
    };
    let (c, out, err) = build(&["--out", s(&g)], &[]);
    assert_eq!(c, 0, "{out}{err}");
    let (c, out, err) = build(&["--db", &url], &["--force"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("3 brands, 9 images"), "{out}");
    let (c, _, err) = build(&["--db", &url], &[]);
    assert_eq!(c, 2);
    assert!(err.contains("--force"), "{err}");
    let same = || assert_eq!(run_json(&["gallery", "list", "--gallery", s(&g), "--json"]), run_json(&["gallery", "list", "--db", &url, "--json"]));
    same();
    for target in [["--gallery", s(&g)], ["--db", &url]] {
        let (c, out, err) = code(&[&["gallery", "add", "--model", s(&model), "--brand", "newco", "--domain", "www.newco.com", s(&new_brand)][..], &target[..]].concat());
        assert_eq!(c, 0, "{out}{err}");
        assert!(out.contains("enrolled new brand \"newco\": +6 images (6 in all, domains newco.com)"), "{out}");
        let (c, out, err) = code(&[&["gallery", "domains", "--brand", "newco", "--add", "newco.io"][..], &target[..]].concat());
        assert_eq!(c, 0, "{out}{err}");
        assert!(out.contains("newco.com, newco.io"), "{out}");
    }
    same();
    let (c, _, err) = code(&["gallery", "add", "--db", &url, "--model", s(&other), "--brand", "x", s(&new_brand)]);
    assert_eq!(c, 2);
    assert!(err.contains("was built with model"), "{err}");
    let (c, out, _) = code(&["gallery", "remove", "--db", &url, "--brand", "newco"]);
    assert_eq!(c, 0);
    assert!(out.contains("6 images"), "{out}");
    let (c, _, err) = code(&["gallery", "remove", "--db", &url, "--brand", "newco"]);
    assert_eq!(c, 2);
    assert!(err.contains("not in the gallery"), "{err}");
    // An unreachable database is a clear error naming it, without its password.
    let (c, _, err) = code(&["gallery", "list", "--db", "postgres://someone:secret@127.0.0.1:1/nothing"]);
    assert_eq!(c, 2);
    assert!(err.contains("unavailable") && !err.contains("secret"), "{err}");
}

/// `localiser negatives` refuses manifests it cannot use before touching the localiser, naming
/// the problem, and writes nothing.
#[test]
fn localiser_negatives_refuses_unusable_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("negatives");
    let missing = dir.path().join("missing.jsonl");
    let (c, _, err) = code(&["localiser", "negatives", "--localiser", s(dir.path()), "--scenes", s(&missing), "--out", s(&out)]);
    assert_eq!(c, 2);
    assert!(err.contains("missing.jsonl"), "{err}");
    let no_boxes = dir.path().join("no_boxes.jsonl");
    std::fs::write(&no_boxes, "{\"image\": \"a.png\", \"brands\": []}\n").unwrap();
    let (c, _, err) = code(&["localiser", "negatives", "--localiser", s(dir.path()), "--scenes", s(&no_boxes), "--out", s(&out)]);
    assert_eq!(c, 2);
    assert!(err.contains("no scene with boxes"), "{err}");
    assert!(!out.exists(), "nothing written on failure");
}

/// `proxima train --nproc 2` (two processes over 127.0.0.1, 8 + 8 samples of each global batch)
/// ends with the parameters, optimiser state and losses of one process training on the global
/// batch of 16; the trunk's BatchNorm is frozen so both compute the same function.
#[test]
fn train_in_two_processes_equals_one_process_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = proxima(&["data", "synth", "--brands", "12", "--per-brand", "8", "--size", "32", "--out", s(&data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.path().join("ddp.toml");
    std::fs::write(
        &config,
        format!(
            r#"seed = 3
[data]
root = "{}"
image_size = 32
[split]
type = "ratio"
train = 0.75
val = 0.25
test = 0.0
[sampler]
m = 4
batch_size = 16
[model]
embedding_size = 16
backbone = {{ type = "small_cnn", widths = [8, 16] }}
freeze_batch_norm = true
[loss]
type = "multi_similarity"
[miner]
type = "multi_similarity"
[optimizer]
type = "adamw"
lr = 0.01
[train]
epochs = 2
"#,
            s(&data)
        ),
    )
    .unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let run = |out_dir: &Path, extra: &[&str]| {
        let mut args = vec!["train", "--config", s(&config), "--out", s(out_dir), "--quiet"];
        args.extend_from_slice(extra);
        let out = proxima(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    run(&one, &[]);
    let stderr = run(&two, &["--nproc", "2"]);
    assert!(stderr.contains("data parallel: 2 processes"), "{stderr}");
    let (a, state_a) = proxima_train::checkpoint::load(&one.join("last.safetensors")).unwrap();
    let (b, state_b) = proxima_train::checkpoint::load(&two.join("last.safetensors")).unwrap();
    assert_eq!(state_a["global_step"], state_b["global_step"]);
    assert_eq!(a.iter().map(|(n, _)| n).collect::<Vec<_>>(), b.iter().map(|(n, _)| n).collect::<Vec<_>>());
    let mut worst = 0f64;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let (x, y) = (x.to_kind(tch::Kind::Double), y.to_kind(tch::Kind::Double));
        let diff = (&x - &y).abs().max().double_value(&[]) / x.abs().max().double_value(&[]).max(1e-3);
        assert!(diff < 1e-4, "{name}: relative difference {diff}");
        worst = worst.max(diff);
    }
    let losses = |dir: &Path| -> Vec<f64> {
        std::fs::read_to_string(dir.join("log.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "step")
            .map(|e| e["loss"].as_f64().unwrap())
            .collect()
    };
    let (la, lb) = (losses(&one), losses(&two));
    assert!(la.len() > 4 && la.len() == lb.len(), "{la:?} vs {lb:?}");
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "step losses {la:?} vs {lb:?}");
    }
    eprintln!("two processes vs one: largest relative difference over all checkpoint tensors {worst:.2e}");
    // A batch that two processes cannot share equally is refused before anything starts.
    let (code, _, err) = code(&["train", "--config", s(&config), "--out", s(&dir.path().join("three")), "--nproc", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("multiple of --nproc 3"), "{err}");
    assert!(!dir.path().join("three").exists());
}

/// `query` of a crop nearest to the gallery's "(background)" examples answers unknown even at a
/// threshold every brand passes (exit 1), names no brand and lists only real brands; `gallery
/// list` counts the background apart from the brands.
#[test]
fn query_of_a_background_crop_is_unknown_never_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, enrol, cal, new_brand, .. } = gallery_fixture(&dir);
    let g = dir.path().join("brands.gallery");
    let (c, out, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g), "--calibrate", s(&cal), "--target-fmr", "0.25"]);
    assert_eq!(c, 0, "{out}{err}");
    // The new brand's photos stand in for non-logo crops.
    let (c, out, err) = code(&["gallery", "add", "--gallery", s(&g), "--model", s(&model), "--brand", "(background)", s(&new_brand)]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("3 brands (+ (background) examples)"), "{out}");
    let (_, out, _) = code(&["gallery", "list", "--gallery", s(&g)]);
    assert!(out.contains("3 brands (+ (background) examples), 15 images") && out.contains("not a logo"), "{out}");

    let crop = std::fs::read_dir(&new_brand).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let (c, out, err) = code(&["query", "--gallery", s(&g), "--model", s(&model), s(&crop), "--threshold=-1", "--top-k", "5", "--json"]);
    assert_eq!(c, 1, "unknown: {out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["decision"], "unknown", "{v}");
    assert!(v[0]["brand"].is_null() && v[0]["background_similarity"].as_f64().unwrap() > 0.999, "{v}");
    let cands = v[0]["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 3, "the 3 brands, not the background: {v}");
    assert!(cands.iter().all(|c| c["brand"] != "(background)"));
    let (c, out, _) = code(&["query", "--gallery", s(&g), "--model", s(&model), s(&crop), "--threshold=-1"]);
    assert_eq!(c, 1);
    assert!(out.contains("not a logo") && !out.contains(": (background)"), "{out}");
    // An enrolled brand's photo is still known at that threshold.
    let photo = std::fs::read_dir(enrol.join(std::fs::read_dir(&enrol).unwrap().map(|e| e.unwrap().file_name()).min().unwrap()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let (c, out, err) = code(&["query", "--gallery", s(&g), "--model", s(&model), s(&photo), "--threshold=-1", "--json"]);
    assert_eq!(c, 0, "{out}{err}");
}

/// A small-CNN model, a one-brand gallery and an untrained localiser: enough for `find` to
/// answer (with `--whole-image` every image has a region).
fn find_fixture(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let model = dir.join("model");
    tch::manual_seed(3);
    let cfg = proxima_models::EmbeddingConfig::new(proxima_models::BackboneSpec::SmallCnn { widths: vec![4, 8] }, 8);
    proxima_models::model_dir::save_model_dir(&proxima_models::EmbeddingModel::new(cfg, tch::Device::Cpu).unwrap(), 32, &model).unwrap();
    let m = proxima_models::model_dir::load_model_dir(&model, tch::Device::Cpu).unwrap();
    let mut g = proxima_index::Gallery::new(8, m.fingerprint().to_string()).unwrap();
    let logo = image::RgbImage::from_pixel(24, 24, image::Rgb([200, 30, 30]));
    g.add("acme", &m.embed_images(&[logo]).unwrap(), &["acme.png"]).unwrap();
    let gallery = dir.join("g.gallery");
    g.save(&gallery).unwrap();
    let loc = dir.join("localiser");
    let cfg = proxima_detect::LocaliserConfig { input_size: 64, width16: 8, width8: 8, min_score: 0.0, ..Default::default() };
    proxima_detect::Localiser::new(cfg, None, tch::Device::Cpu).unwrap().save(&loc, Default::default(), Value::Null).unwrap();
    (model, gallery, loc)
}

/// `find --draw DIR` writes one labelled PNG per image (unique names when stems repeat), the size
/// of the image, with the frames drawn; with one bad image it fails and writes none.
#[test]
fn find_draw_writes_one_png_per_image_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let (model, gallery, loc) = find_fixture(dir.path());
    let pages = dir.path().join("pages");
    std::fs::create_dir_all(pages.join("sub")).unwrap();
    let page = image::RgbImage::from_pixel(120, 80, image::Rgb([255, 255, 255]));
    for p in ["a.png", "b.png", "sub/a.png"] {
        page.save(pages.join(p)).unwrap();
    }
    let out = dir.path().join("drawn");
    let base =
        ["find", "--model", s(&model), "--gallery", s(&gallery), "--localiser", s(&loc), "--whole-image", "--min-score", "1.1", "--threshold=-1.5", "--draw", s(&out)];
    let imgs = [pages.join("a.png"), pages.join("b.png"), pages.join("sub/a.png")];
    let args: Vec<&str> = base.iter().copied().chain(imgs.iter().map(|p| s(p))).collect();
    let (c, stdout, err) = code(&args);
    assert_eq!(c, 0, "a known brand in every image: {stdout}{err}");
    let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a-2.find.png", "a.find.png", "b.find.png"]);
    let drawn = image::open(out.join("a.find.png")).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), (120, 80));
    // The whole-image region is the only one (`--min-score 1.1` drops every localiser box, whose
    // untrained scores are random) and is known: a green frame along the border, the middle
    // stays white.
    assert_eq!(drawn.get_pixel(60, 79).0, proxima_detect::draw::KNOWN, "bottom edge framed");
    assert_eq!(drawn.get_pixel(60, 60).0, [255, 255, 255], "inside untouched");

    // A file that is not an image among the inputs: exit 2, no drawing written.
    let out2 = dir.path().join("drawn2");
    std::fs::write(pages.join("broken.png"), b"not a png").unwrap();
    let bad = pages.join("broken.png");
    let args: Vec<&str> = base.iter().map(|a| if *a == s(&out) { s(&out2) } else { a }).chain([s(&imgs[0]), s(&bad)]).collect();
    let (c, _, err) = code(&args);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("broken.png"), "{err}");
    assert!(!out2.exists() || std::fs::read_dir(&out2).unwrap().next().is_none(), "nothing written on failure");
}

/// `localiser ensemble` writes a localiser that `find` takes like any other, and refuses a folder
/// that already holds one (exit 2, naming it).
#[test]
fn localiser_ensemble_is_a_localiser_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (model, gallery, loc) = find_fixture(dir.path());
    let other = dir.path().join("localiser2");
    let cfg = proxima_detect::LocaliserConfig { input_size: 64, width16: 8, width8: 8, min_score: 0.0, ..Default::default() };
    proxima_detect::Localiser::new(cfg, None, tch::Device::Cpu).unwrap().save(&other, Default::default(), Value::Null).unwrap();
    let ens = dir.path().join("both");
    let (c, out, err) = code(&["localiser", "ensemble", s(&loc), s(&other), "--out", s(&ens)]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("2 members") && ens.join("localisers.json").is_file(), "{out}");
    let page = dir.path().join("page.png");
    image::RgbImage::from_pixel(120, 80, image::Rgb([255, 255, 255])).save(&page).unwrap();
    let (c, out, err) = code(&["find", "--model", s(&model), "--gallery", s(&gallery), "--localiser", s(&ens), "--whole-image", "--threshold=-1.5", "--json", s(&page)]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("acme"), "{out}");
    let (c, _, err) = code(&["localiser", "ensemble", s(&loc), s(&other), "--out", s(&ens)]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("already holds") && err.contains("both"), "{err}");
}

/// `gallery domains` changes a brand's domains only when every domain given is usable, imports a
/// catalogue by alias, and `check` turns find's brand and the page's URL into a verdict with the
/// documented exit codes (0 no impersonation, 1 impersonation, 2 error) and a drawing.
#[test]
fn gallery_domains_and_check_verdicts_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (model, gallery, loc) = find_fixture(dir.path());
    let page = dir.path().join("page.png");
    image::RgbImage::from_pixel(120, 80, image::Rgb([255, 255, 255])).save(&page).unwrap();
    let check = |extra: &[&str]| {
        let base = ["check", "--model", s(&model), "--gallery", s(&gallery), "--localiser", s(&loc), "--whole-image", "--min-score", "1.1", "--threshold=-1.5"];
        code(&base.iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>())
    };
    let verdict =
        |out: &str| serde_json::from_str::<Value>(out.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {out}"))["verdict"].as_str().unwrap().to_string();

    // No domains on record: the brand is found, the verdict can't be given.
    let (c, out, err) = check(&["--json", "--url", "https://acme.com.evil.io/", s(&page)]);
    assert_eq!((c, verdict(&out).as_str()), (0, "unknown_domain"), "{out}{err}");

    let domains = |extra: &[&str]| code(&["gallery", "domains", "--gallery", s(&gallery)].iter().copied().chain(extra.iter().copied()).collect::<Vec<_>>());
    let (c, out, err) = domains(&["--brand", "acme", "--add", "www.ACME.com", "--add", "acme.co.uk"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("acme.co.uk, acme.com") && err.contains("stored as its registrable domain acme.com"), "{out}{err}");
    let before = std::fs::read(&gallery).unwrap();
    for bad in [
        &["--brand", "acme", "--add", "com"][..],
        &["--brand", "acme", "--add", "https://acme.com/x"],
        &["--brand", "acme", "--remove", "nope.com"],
        &["--brand", "nobody", "--add", "x.com"],
    ] {
        let (c, _, err) = domains(bad);
        assert_eq!(c, 2, "{bad:?}: {err}");
    }
    assert_eq!(std::fs::read(&gallery).unwrap(), before, "refused changes leave the gallery file as it was");
    let (c, out, _) = domains(&["--brand", "acme", "--remove", "acme.co.uk", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((c, &v["brands"][0]["domains"]), (0, &serde_json::json!(["acme.com"])));

    // A catalogue names the brand by an alias; import adds its domains, --replace replaces them.
    let cat = dir.path().join("brands.toml");
    std::fs::write(
        &cat,
        "[[brands]]\nname = \"ACME Corporation\"\ndomains = [\"acme-corp.com\"]\naliases = [\"acme\"]\n\n[[brands]]\nname = \"Globex\"\ndomains = [\"globex.com\"]\n",
    )
    .unwrap();
    let (c, out, err) = domains(&["--import", s(&cat)]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("1 of 1 gallery brands matched") && out.contains("acme-corp.com, acme.com"), "{out}");
    let (_, out, _) = domains(&["--import", s(&cat), "--replace", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["brands"][0]["domains"], serde_json::json!(["acme-corp.com"]));
    domains(&["--brand", "acme", "--set", "acme.com"]);

    // Foreign domain: exit 1, the verdict and why; the brand's own (sub)domain: exit 0.
    let (c, out, err) = check(&["--url", "https://acme.com.evil.io/login", s(&page)]);
    assert_eq!(c, 1, "{out}{err}");
    assert!(out.contains("IMPERSONATION of acme") && out.contains("evil.io"), "{out}");
    let (c, out, _) = check(&["--json", "--url", "login.acme.com", s(&page)]);
    assert_eq!((c, verdict(&out).as_str()), (0, "consistent"), "{out}");
    // Nothing known on the page: no brand, exit 0.
    let (c, out, _) = code(&[
        "check",
        "--model",
        s(&model),
        "--gallery",
        s(&gallery),
        "--localiser",
        s(&loc),
        "--whole-image",
        "--threshold",
        "2",
        "--json",
        "--url",
        "https://evil.io",
        s(&page),
    ]);
    assert_eq!((c, verdict(&out).as_str()), (0, "no_brand"), "{out}");

    // Many pages from a URL file (paths relative to it), with drawings of the deciding region.
    let list = dir.path().join("pages.txt");
    std::fs::write(&list, "# url screenshot\nhttps://acme.com/ page.png\n\nhttp://192.0.2.7/acme page.png\n").unwrap();
    let drawn = dir.path().join("drawn");
    let (c, out, err) = check(&["--json", "--url-file", s(&list), "--draw", s(&drawn)]);
    assert_eq!(c, 1, "{out}{err}");
    let verdicts: Vec<String> = out.lines().map(verdict).collect();
    assert_eq!(verdicts, ["consistent", "impersonation"]);
    let img = image::open(drawn.join("page-2.check.png")).unwrap().to_rgb8();
    assert_eq!(img.get_pixel(60, 79).0, proxima_detect::check::IMPERSONATION, "the deciding region framed in red");

    // Bad input: exit 2 naming the problem, before any model is loaded; nothing drawn.
    std::fs::write(&list, "https://acme.com/ page.png\nftp://acme.com/ page.png\n").unwrap();
    let drawn2 = dir.path().join("drawn2");
    let (c, _, err) = check(&["--url-file", s(&list), "--draw", s(&drawn2)]);
    assert!(c == 2 && err.contains("pages.txt:2") && err.contains("only http"), "{err}");
    assert!(!drawn2.exists());
    let (c, _, err) = check(&["--url", "https://acme.com/", s(&dir.path().join("missing.png"))]);
    assert!(c == 2 && err.contains("missing.png"), "{err}");
    let (c, _, err) = check(&["--url", "http://", s(&page)]);
    assert!(c == 2 && err.contains("URL"), "{err}");
    // An undecodable screenshot among good ones: exit 2 naming it, no drawing written.
    std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
    std::fs::write(&list, "https://acme.com/ page.png\nhttps://acme.com/ broken.png\n").unwrap();
    let (c, _, err) = check(&["--url-file", s(&list), "--draw", s(&drawn2)]);
    assert!(c == 2 && err.contains("broken.png"), "{err}");
    assert!(!drawn2.exists(), "nothing drawn when a page fails");
}

/// `localiser eval` leaves out the scenes the localiser trained on however their path is spelled
/// (`scenes/a.png` in the card, `scenes/./a.png` through the manifest given here).
#[test]
fn localiser_eval_leaves_out_trained_scenes_under_another_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let scenes = dir.path().join("scenes");
    std::fs::create_dir_all(&scenes).unwrap();
    let mut lines = String::new();
    for name in ["a.png", "b.png"] {
        image::RgbImage::from_pixel(64, 48, image::Rgb([250, 250, 250])).save(scenes.join(name)).unwrap();
        lines.push_str(&format!(
            "{{\"image\":\"{name}\",\"brands\":[\"acme\"],\"boxes\":[{{\"bbox\":[8.0,8.0,24.0,24.0],\"brand\":\"acme\"}}],\"kind\":\"screenshot\"}}\n"
        ));
    }
    std::fs::write(scenes.join("scenes.jsonl"), lines).unwrap();
    let loc = dir.path().join("localiser");
    let cfg = proxima_detect::LocaliserConfig { input_size: 64, width16: 8, width8: 8, ..Default::default() };
    let trained: std::collections::BTreeSet<PathBuf> = [scenes.join("a.png")].into();
    proxima_detect::Localiser::new(cfg, None, tch::Device::Cpu).unwrap().save(&loc, trained, Value::Null).unwrap();
    let report = dir.path().join("report.json");
    let manifest = scenes.join(".").join("scenes.jsonl");
    let (c, out, err) = code(&["localiser", "eval", "--localiser", s(&loc), "--scenes", s(&manifest), "--out", s(&report)]);
    assert_eq!(c, 0, "{out}{err}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["scenes"].as_u64(), r["left_out_trained_on"].as_u64()), (Some(1), Some(1)), "{r}");
}

/// `data crops` cuts the boxes of a manifest into brand folders and says what it left out; a
/// missing manifest is an error naming it, with nothing written.
#[test]
fn data_crops_cuts_boxes_into_brand_folders() {
    let dir = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(80, 60, image::Rgb([240, 240, 240])).save(dir.path().join("a.png")).unwrap();
    let manifest = dir.path().join("scenes.jsonl");
    std::fs::write(
        &manifest,
        "{\"image\":\"a.png\",\"brands\":[\"acme\",\"globex\"],\"boxes\":[{\"bbox\":[8,8,30,20],\"brand\":\"acme\"},{\"bbox\":[40,30,70,50],\"brand\":\"globex\"}]}\n\
         {\"image\":\"a.png\",\"brands\":[\"acme\"]}\n",
    )
    .unwrap();
    let out = dir.path().join("crops");
    let (c, stdout, err) = code(&["data", "crops", "--scenes", s(&manifest), "--per-box", "2", "--out", s(&out)]);
    assert_eq!(c, 0, "{stdout}{err}");
    assert!(stdout.contains("wrote 4 crops of 2 boxes (2 brands)") && stdout.contains("left out 1 scenes without boxes"), "{stdout}");
    for brand in ["acme", "globex"] {
        assert_eq!(std::fs::read_dir(out.join(brand)).unwrap().count(), 2, "{brand}");
    }
    let missing = dir.path().join("nope.jsonl");
    let out2 = dir.path().join("crops2");
    let (c, _, err) = code(&["data", "crops", "--scenes", s(&missing), "--out", s(&out2)]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("nope.jsonl"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn gallery_add_applies_the_brand_name_rule() {
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, enrol, new_brand, .. } = gallery_fixture(&dir);
    let g = dir.path().join("brands.gallery");
    let (c, _, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g)]);
    assert_eq!(c, 0, "{err}");
    let long = "x".repeat(10_000);
    for (name, needle) in [
        ("../../etc", "path separators"),
        ("a\\b", "path separators"),
        (".hidden", "dot"),
        ("a\nb", "control"),
        ("pay\u{200B}pal", "invisible"),
        (long.as_str(), "longer than 128"),
        (" padded", "whitespace"),
        ("", "empty"),
    ] {
        let (c, _, err) = code(&["gallery", "add", "--gallery", s(&g), "--model", s(&model), "--brand", name, s(&new_brand)]);
        assert_eq!(c, 2, "{name:?}");
        assert!(err.contains(needle) && err.contains("--brand"), "{name:?}: {err}");
        assert!(err.len() < 400, "a refused name is shortened in the message: {err}");
    }
    // Another normal form is stored in NFC; the audit log beside the gallery records it.
    let (c, out, err) = code(&["gallery", "add", "--gallery", s(&g), "--model", s(&model), "--brand", "Cafe\u{301}", s(&new_brand)]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("\"Caf\u{e9}\""), "{out}");
    let stored = proxima_index::Gallery::load(&g).unwrap();
    assert!(stored.brand_id("Caf\u{e9}").is_some());
    let (c, _, err) = code(&["gallery", "remove", "--gallery", s(&g), "--brand", "Cafe\u{301}"]);
    assert_eq!(c, 0, "{err}");
    let log = proxima_server::audit::read_file(&proxima_server::audit::default_path(&g)).unwrap();
    let got: Vec<_> = log.iter().map(|e| (e.token.as_str(), e.action.as_str(), e.brand.as_str(), e.rows)).collect();
    // `gallery build` recorded its three brands, then the enrolment and the removal.
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[..3].iter().all(|(t, a, _, rows)| (*t, *a, *rows) == ("cli", "build", 3)), "{got:?}");
    assert_eq!(got[3..], [("cli", "enrol", "Caf\u{e9}", 6), ("cli", "remove", "Caf\u{e9}", 6)]);
    // Rebuilt with --force from fewer brands: the dropped ones get 0 rows; the log still agrees.
    let two = dir.path().join("two");
    for class in std::fs::read_dir(&enrol).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>().iter().take(2) {
        let to = two.join(class.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(class).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let (c, _, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&two), "--out", s(&g), "--force"]);
    assert_eq!(c, 0, "{err}");
    let log = proxima_server::audit::read_file(&proxima_server::audit::default_path(&g)).unwrap();
    assert!(proxima_server::audit::disagreements(&log, &proxima_index::Gallery::load(&g).unwrap()).is_empty(), "{log:?}");
    assert_eq!(log.iter().filter(|e| e.action == "build" && e.brand_rows == 0).count(), 1, "{log:?}");
}

#[test]
fn token_new_appends_hashes_and_serve_refuses_an_open_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let (c, admin, err) = code(&["token", "new", "--role", "admin", "--tokens", s(&tokens), "--id", "ops"]);
    assert_eq!(c, 0, "{err}");
    let (c, read, _) = code(&["token", "new", "--role", "read", "--tokens", s(&tokens)]);
    assert_eq!(c, 0);
    let (admin, read) = (admin.trim(), read.trim());
    assert!(admin.starts_with("pxm_") && admin.len() == 68 && admin != read, "{admin} {read}");
    let text = std::fs::read_to_string(&tokens).unwrap();
    assert!(!text.contains(admin) && !text.contains(read), "only hashes are stored: {text}");
    let t = proxima_server::auth::Tokens::load(&tokens).unwrap();
    assert_eq!(t.verify(admin).map(|c| (c.id, c.role)), Some(("ops".to_string(), proxima_server::auth::Role::Admin)));
    assert_eq!(t.verify(read).map(|c| c.id), Some("read-1".to_string()));
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&tokens).unwrap().permissions()) & 0o777, 0o600);
    let (c, _, err) = code(&["token", "new", "--role", "read", "--tokens", s(&tokens), "--id", "ops"]);
    assert_eq!(c, 2);
    assert!(err.contains("already"), "{err}");
    let (c, _, _) = code(&["token", "new", "--role", "owner", "--tokens", s(&tokens)]);
    assert_eq!(c, 2);

    // serve on a public address without tokens: refused (exit 2) before anything is loaded.
    let GalleryFixture { model, enrol, .. } = gallery_fixture(&dir);
    let g = dir.path().join("g.gallery");
    let (c, _, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g)]);
    assert_eq!(c, 0, "{err}");
    let (c, _, err) = code(&["serve", "--model", s(&model), "--gallery", s(&g), "--addr", "0.0.0.0:0"]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("--no-auth") && err.contains("--tokens"), "{err}");
}

/// A running `proxima serve` and the address it printed.
struct Served {
    child: std::process::Child,
    addr: String,
}

fn start_serve(args: &[&str]) -> Served {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxima")).arg("serve").args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[serve] {l}");
            if let Some(rest) = l.split(" on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("serve prints its address");
    Served { child, addr }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(addr: &str, method: &str, path: &str, token: &str, content_type: Option<&str>, body: &[u8]) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other(format!("no status line: {text:?}")))?;
    Ok((status, text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string())))
}

fn multipart(image: &[u8]) -> (String, Vec<u8>) {
    let boundary = "proxima-test-boundary";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"logo.png\"\r\nContent-Type: image/png\r\n\r\n").into_bytes();
    body.extend_from_slice(image);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// `proxima serve` killed (SIGKILL) while clients keep enrolling: every brand answered 201 is
/// in the gallery after a restart, and the audit log and the gallery agree.
#[test]
fn killing_serve_during_enrolments_loses_nothing_answered_201_and_the_audit_log_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, enrol, new_brand, .. } = gallery_fixture(&dir);
    let g = dir.path().join("g.gallery");
    let (c, _, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g)]);
    assert_eq!(c, 0, "{err}");
    let tokens = dir.path().join("tokens");
    let (c, admin, _) = code(&["token", "new", "--role", "admin", "--tokens", s(&tokens), "--id", "ops"]);
    assert_eq!(c, 0);
    let admin = admin.trim().to_string();
    let args = ["--model", s(&model), "--gallery", s(&g), "--addr", "127.0.0.1:0", "--tokens", s(&tokens), "--rate-limit", "0", "--threshold", "0.9"];
    let mut served = start_serve(&args);
    let photo = std::fs::read(std::fs::read_dir(&new_brand).unwrap().map(|e| e.unwrap().path()).min().unwrap()).unwrap();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (addr, admin, photo, answered, stop) = (served.addr.clone(), admin.clone(), photo.clone(), answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let (ct, body) = multipart(&photo);
                let mut failed = 0;
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let brand = format!("k{t}-{i}");
                    match http(&addr, "POST", &format!("/v1/gallery/{brand}"), &admin, Some(&ct), &body) {
                        Ok((201, _)) => answered.lock().unwrap().push(brand),
                        Ok((st, b)) => panic!("{brand}: {st} {b}"),
                        Err(_) => failed += 1,
                    }
                    if failed > 0 {
                        break;
                    }
                }
                failed
            })
        })
        .collect();
    while answered.lock().unwrap().len() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let cut_off: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let answered = answered.lock().unwrap().clone();
    eprintln!("killed after {} enrolments answered 201; {cut_off} requests were cut off", answered.len());

    // Restart: the gallery has every answered brand; the log agrees with it.
    let mut served = start_serve(&args);
    let gallery = proxima_index::Gallery::load(&g).unwrap();
    for b in &answered {
        assert!(gallery.brand_id(b).is_some(), "{b} was answered 201 but is not in the gallery");
    }
    let log = proxima_server::audit::read_file(&proxima_server::audit::default_path(&g)).unwrap();
    assert!(proxima_server::audit::disagreements(&log, &gallery).is_empty(), "the audit log and the gallery disagree");
    for b in &answered {
        assert!(log.iter().any(|e| e.action == "enrol" && &e.brand == b && e.token == "ops"), "{b} is not in the audit log");
    }
    let (st, body) = http(&served.addr, "GET", "/v1/audit?limit=1000", &admin, None, b"").unwrap();
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), log.len());
    served.child.kill().unwrap();
    served.child.wait().unwrap();
}

/// The workspace root (two levels above this crate).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A few real images (FlickrLogos-27 photos and an Omniglot PNG) when `../shared/data` has them,
/// else synthetic logos; and what they are.
fn export_images(dir: &Path) -> (Vec<PathBuf>, &'static str) {
    let shared = workspace_root().join("../shared/data");
    let photos = shared.join("flickrlogos27/flickr_logos_27_dataset_images");
    let glyphs = shared.join("omniglot/images_background_small1");
    if photos.is_dir() && glyphs.is_dir() {
        let mut p: Vec<PathBuf> = std::fs::read_dir(&photos).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "jpg")).collect();
        p.sort();
        let mut files: Vec<PathBuf> = p.into_iter().step_by(997).take(4).collect();
        let png = walk_first_png(&glyphs).expect("an Omniglot PNG");
        files.push(png);
        return (files, "FlickrLogos-27 photos + an Omniglot PNG");
    }
    eprintln!("../shared/data is absent: the export test uses synthetic logos instead of real photos");
    let data = dir.join("synth");
    proxima_data::synth(2, 3, 64, 5, 0.3, &data).unwrap();
    let ds = proxima_data::Dataset::scan_folder(&data, &proxima_data::ScanOptions::default()).unwrap().dataset;
    (ds.samples.iter().map(|s| s.path.clone()).collect(), "synthetic logos")
}

fn walk_first_png(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            if let Some(p) = walk_first_png(&e) {
                return Some(p);
            }
        } else if e.extension().is_some_and(|x| x == "png") {
            return Some(e);
        }
    }
    None
}

/// `proxima export` on every backbone: the TorchScript file (run by PyTorch's `torch.jit.load`) and
/// the ONNX file (run by onnxruntime) give the embeddings of `proxima embed` on real images, to
/// 1e-4 relative (+1e-5 absolute), and both carry the model's fingerprint. Needs `.export-venv`
/// (scripts/setup-export-venv.sh, which scripts/test.sh runs); without it the test says so and
/// checks only the TorchScript file through libtorch.
#[test]
fn export_torchscript_and_onnx_embed_like_proxima_embed_on_every_backbone() {
    use proxima_models::{BackboneSpec, EmbeddingConfig, EmbeddingModel, HeadSpec};
    let dir = tempfile::tempdir().unwrap();
    let (images, what) = export_images(dir.path());
    let python = workspace_root().join(".export-venv/bin/python");
    let have_python = python.is_file();
    if !have_python {
        eprintln!("SKIPPING the PyTorch/onnxruntime half: {} is absent (run scripts/setup-export-venv.sh)", python.display());
    }
    let effnet_weights = workspace_root().join(".weights/efficientnet-lite0-57934424.pth");
    let cases: Vec<(&str, BackboneSpec, HeadSpec, bool, u32)> = vec![
        ("small_cnn", BackboneSpec::SmallCnn { widths: vec![8, 16, 32] }, HeadSpec::Mlp { hidden: vec![24], batch_norm: true, dropout: 0.1 }, true, 48),
        ("resnet18", BackboneSpec::Resnet18 {}, HeadSpec::Linear { batch_norm: false }, true, 64),
        ("resnet34", BackboneSpec::Resnet34 {}, HeadSpec::Linear { batch_norm: true }, false, 64),
        ("resnet50", BackboneSpec::Resnet50 {}, HeadSpec::Linear { batch_norm: false }, true, 64),
        ("efficientnet_lite0", BackboneSpec::EfficientnetLite0 {}, HeadSpec::Linear { batch_norm: false }, true, 96),
    ];
    for (name, backbone, head, normalize, size) in cases {
        tch::manual_seed(11);
        let mut cfg = EmbeddingConfig::new(backbone, 32);
        cfg.head = head;
        cfg.normalize = normalize;
        if name == "efficientnet_lite0" && effnet_weights.is_file() {
            cfg.pretrained = Some(effnet_weights.clone());
        }
        let model = EmbeddingModel::new(cfg, tch::Device::Cpu).unwrap();
        let model_dir = dir.path().join(name);
        let card = proxima_models::model_dir::save_model_dir(&model, size, &model_dir).unwrap();

        let emb_path = dir.path().join(format!("{name}.npy"));
        let mut embed_args = vec!["embed".to_string(), "--model".into(), s(&model_dir).into(), "--out".into(), s(&emb_path).into()];
        embed_args.extend(images.iter().map(|p| s(p).to_string()));
        let out = Command::new(env!("CARGO_BIN_EXE_proxima")).args(&embed_args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want = proxima_cli::io::read_embeddings(&emb_path).unwrap();
        assert_eq!((want.rows, want.dim), (images.len(), 32));

        let ts = dir.path().join(format!("{name}.pt"));
        let out = proxima(&["export", "--model", s(&model_dir), "--format", "torchscript", "--out", s(&ts)]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let ts_card = proxima_models::export::read_torchscript_card(&ts).unwrap();
        assert_eq!(ts_card.model_fingerprint, card.fingerprint);
        assert_eq!((ts_card.image_size, ts_card.embedding_size, ts_card.normalized), (size, 32, normalize));

        // The preprocessed images: the same decoder and resizer, RGB in [0, 1].
        let mut pipe_cfg = proxima_data::PipelineConfig::eval(size);
        pipe_cfg.normalize = proxima_data::Normalize { mean: [0.0; 3], std: [1.0; 3] };
        let pipe = proxima_data::Pipeline::new(pipe_cfg, 0).unwrap();
        let per = (3 * size * size) as usize;
        let mut x = vec![0f32; per * images.len()];
        for (i, p) in images.iter().enumerate() {
            let img = proxima_data::decode_file(p, &proxima_data::DecodeOptions::default()).unwrap();
            pipe.run_into(&img, 0, i as u64, [size, size], &mut x[i * per..(i + 1) * per]);
        }
        let close_to_embed = |got: &[f32], runtime: &str| {
            assert_eq!(got.len(), want.data.len(), "{name} {runtime}");
            for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
                assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{name} {runtime}: element {i}: {g} vs proxima embed {w}");
            }
        };
        // libtorch's own TorchScript loader (torch::jit::load), here in this process.
        let loaded = tch::CModule::load(&ts).unwrap();
        let xt = tch::Tensor::from_slice(&x).view([images.len() as i64, 3, size as i64, size as i64]);
        let got: Vec<f32> = Vec::try_from(tch::no_grad(|| loaded.forward_ts(&[&xt])).unwrap().flatten(0, -1)).unwrap();
        close_to_embed(&got, "libtorch TorchScript");
        if !have_python {
            continue;
        }

        let onnx = dir.path().join(format!("{name}.onnx"));
        let out = proxima(&["export", "--model", s(&model_dir), "--format", "onnx", "--out", s(&onnx), "--python", s(&python)]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let input = dir.path().join(format!("{name}.input.npy"));
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&input, proxima_cli::io::npy_bytes("<f4", &[images.len(), 3, size as usize, size as usize], &bytes)).unwrap();
        let prefix = dir.path().join(name);
        let script = workspace_root().join("crates/cli/tests/export_check.py");
        let out = Command::new(&python)
            .args([s(&script), "--torchscript", s(&ts), "--onnx", s(&onnx), "--input", s(&input), "--prefix", s(&prefix), "--repeats", "20"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{name} ({what}): {}", String::from_utf8_lossy(&out.stdout).trim());
        for runtime in ["torchscript", "onnx"] {
            let got = proxima_cli::io::read_embeddings(&prefix.with_extension(format!("{runtime}.npy"))).unwrap();
            close_to_embed(&got.data, runtime);
        }
        let cards: Value = serde_json::from_str(&std::fs::read_to_string(prefix.with_extension("cards.json")).unwrap()).unwrap();
        for runtime in ["torchscript", "onnx"] {
            assert_eq!(cards[runtime]["model_fingerprint"].as_str(), Some(card.fingerprint.as_str()), "{name} {runtime}");
        }
        // The batch axis is dynamic in the ONNX graph.
        assert!(cards["onnx_inputs"][0].as_str().unwrap().contains("'batch'"), "{cards}");
    }
}

#[test]
fn export_refuses_bad_input_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(0);
    let cfg = proxima_models::EmbeddingConfig::new(proxima_models::BackboneSpec::SmallCnn { widths: vec![4, 8] }, 8);
    let model = proxima_models::EmbeddingModel::new(cfg, tch::Device::Cpu).unwrap();
    let model_dir = dir.path().join("model");
    proxima_models::model_dir::save_model_dir(&model, 32, &model_dir).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("m.pt");
    let listing = || std::fs::read_dir(&out_dir).unwrap().count();

    // An image size the model cannot take.
    assert_fails(&["export", "--model", s(&model_dir), "--format", "torchscript", "--out", s(&out), "--image-size", "8"], &["--image-size must be between 32 and 2048"]);
    // An output folder that does not exist.
    let missing = dir.path().join("nope/m.pt");
    assert_fails(&["export", "--model", s(&model_dir), "--format", "torchscript", "--out", s(&missing)], &["nope", "does not exist"]);
    // A model directory of another format version, and one with an unknown backbone.
    let card_path = model_dir.join("model.json");
    let card_text = std::fs::read_to_string(&card_path).unwrap();
    let mut card: Value = serde_json::from_str(&card_text).unwrap();
    card["format"] = Value::from(99);
    std::fs::write(&card_path, card.to_string()).unwrap();
    assert_fails(&["export", "--model", s(&model_dir), "--format", "torchscript", "--out", s(&out)], &["model format 99 is not supported"]);
    let mut card: Value = serde_json::from_str(&card_text).unwrap();
    card["model"]["backbone"]["type"] = Value::from("vit_b16");
    std::fs::write(&card_path, card.to_string()).unwrap();
    assert_fails(&["export", "--model", s(&model_dir), "--format", "torchscript", "--out", s(&out)], &["invalid model card", "vit_b16"]);
    std::fs::write(&card_path, &card_text).unwrap();
    // ONNX with a Python that lacks the packages: a clear error, nothing written.
    let onnx = out_dir.join("m.onnx");
    assert_fails(&["export", "--model", s(&model_dir), "--format", "onnx", "--out", s(&onnx), "--python", "/bin/false"], &["the ONNX step failed"]);
    assert_eq!(listing(), 0, "nothing partial is left behind");
    // And the good case writes exactly the one file.
    let out_ok = proxima(&["export", "--model", s(&model_dir), "--format", "torchscript", "--out", s(&out), "--image-size", "40"]);
    assert!(out_ok.status.success(), "{}", String::from_utf8_lossy(&out_ok.stderr));
    assert!(String::from_utf8_lossy(&out_ok.stdout).contains("@40"), "another input size is another space");
    assert_eq!(listing(), 1);
}

/// `gallery build --per-brand N` enrols N images of each brand, the same ones for the same seed;
/// 0 is refused.
#[test]
fn gallery_build_per_brand_enrols_a_seeded_few() {
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, enrol, .. } = gallery_fixture(&dir);
    let build = |name: &str, extra: &[&str]| {
        let g = dir.path().join(name);
        let (c, out, err) = code(&[&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g)][..], extra].concat());
        (c, out, err, g)
    };
    let (c, out, err, a) = build("a", &["--per-brand", "1", "--seed", "4"]);
    assert_eq!(c, 0, "{err}");
    assert!(out.contains("3 brands, 3 images"), "{out}");
    let (_, out, _, b) = build("b", &["--per-brand", "1", "--seed", "4"]);
    assert!(out.contains("3 brands, 3 images"), "{out}");
    let paths = |g: &Path| -> Vec<String> {
        let g = proxima_index::Gallery::load(g).unwrap();
        let mut p: Vec<String> = g.paths().iter().map(|p| p.display().to_string()).collect();
        p.sort();
        p
    };
    assert_eq!(paths(&a), paths(&b), "same seed, same images");
    let others: Vec<Vec<String>> = (0..6).map(|seed| paths(&build(&format!("s{seed}"), &["--per-brand", "1", "--seed", &seed.to_string()]).3)).collect();
    assert!(others.iter().any(|p| p != &paths(&a)), "another seed draws other images");
    let (_, out, _, _) = build("two", &["--per-brand", "2"]);
    assert!(out.contains("3 brands, 6 images"), "{out}");
    let (_, out, _, _) = build("all", &["--per-brand", "50"]);
    assert!(out.contains("3 brands, 9 images"), "{out}");
    let (c, _, err, g) = build("zero", &["--per-brand", "0"]);
    assert!(c == 2 && err.contains("--per-brand") && !g.exists(), "{err}");
}

/// `localiser eval` reports images of trained and never-trained brands as their own rows (each
/// with every no-logo image) when it knows the trained brands: from `--trained-brands`, or the
/// `split.json` beside the model.
#[test]
fn localiser_eval_splits_trained_and_never_trained_brands() {
    let dir = tempfile::tempdir().unwrap();
    let GalleryFixture { model, enrol, .. } = gallery_fixture(&dir);
    let g = dir.path().join("g");
    let (c, _, err) = code(&["gallery", "build", "--model", s(&model), "--data", s(&enrol), "--out", s(&g)]);
    assert_eq!(c, 0, "{err}");
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&enrol).unwrap().map(|e| e.unwrap().path()).collect();
    classes.sort();
    let mut lines = String::new();
    for class in &classes {
        let brand = class.file_name().unwrap().to_str().unwrap();
        for f in std::fs::read_dir(class).unwrap() {
            lines.push_str(&format!("{{\"image\":{:?},\"brands\":[{brand:?}],\"kind\":\"photo\"}}\n", f.unwrap().path()));
        }
    }
    for k in 0..4 {
        let p = dir.path().join(format!("blank{k}.png"));
        image::RgbImage::from_pixel(40, 40, image::Rgb([60 * k as u8, 90, 200])).save(&p).unwrap();
        lines.push_str(&format!("{{\"image\":{p:?},\"brands\":[],\"kind\":\"photo\"}}\n"));
    }
    let manifest = dir.path().join("scenes.jsonl");
    std::fs::write(&manifest, lines).unwrap();
    let loc = dir.path().join("localiser");
    let cfg = proxima_detect::LocaliserConfig { input_size: 64, width16: 8, width8: 8, ..Default::default() };
    proxima_detect::Localiser::new(cfg, None, tch::Device::Cpu).unwrap().save(&loc, Default::default(), Value::Null).unwrap();
    let eval = |extra: &[&str]| {
        let report = dir.path().join("report.json");
        let args =
            ["localiser", "eval", "--localiser", s(&loc), "--scenes", s(&manifest), "--model", s(&model), "--gallery", s(&g), "--whole-image", "--out", s(&report)];
        let (c, out, err) = code(&[&args[..], extra].concat());
        assert_eq!(c, 0, "{out}{err}");
        (out, serde_json::from_str::<Value>(&std::fs::read_to_string(&report).unwrap()).unwrap())
    };
    // Without a split.json beside the model, no rows.
    let (_, r) = eval(&[]);
    assert!(r["identification_by_training"].is_null(), "{r}");
    // The first brand trained (its name spelled in another case), the other two never.
    let list = dir.path().join("trained.txt");
    let first = classes[0].file_name().unwrap().to_str().unwrap().to_uppercase();
    std::fs::write(&list, format!("# trained\n{first}\n")).unwrap();
    let (out, r) = eval(&["--trained-brands", s(&list)]);
    let rows = &r["identification_by_training"];
    assert_eq!(rows["trained_brands"]["num_logo_images"], 3, "{r}");
    assert_eq!(rows["never_trained_brands"]["num_logo_images"], 6, "{r}");
    assert_eq!(rows["trained_brands"]["num_no_logo_images"], 4, "{r}");
    assert!(out.contains("never trained brands: top-1"), "{out}");
    // The whole is the two rows weighted by their images.
    let top1 = |v: &Value| v["top1"].as_f64().unwrap();
    let whole = (3.0 * top1(&rows["trained_brands"]) + 6.0 * top1(&rows["never_trained_brands"])) / 9.0;
    assert!((whole - top1(&r["identification"])).abs() < 1e-9, "{r}");
    // A run's split.json beside the model is read by default.
    std::fs::write(model.join("split.json"), format!("{{\"train\":[{first:?}],\"val\":[]}}")).unwrap();
    let (_, r) = eval(&[]);
    assert_eq!(r["identification_by_training"]["trained_brands"]["num_logo_images"], 3, "{r}");
    // An empty list is an error naming the file.
    std::fs::write(&list, "# nothing\n").unwrap();
    let args = ["localiser", "eval", "--localiser", s(&loc), "--scenes", s(&manifest), "--model", s(&model), "--gallery", s(&g), "--trained-brands", s(&list)];
    let (c, _, err) = code(&args);
    assert!(c == 2 && err.contains("trained.txt"), "{err}");
}

/// `data composites` pastes the catalogue's training brands into the background photos, leaves out
/// held-out brands and every brand named like an `--exclude-like` one, and refuses backgrounds
/// without boxes with nothing written.
#[test]
fn data_composites_pastes_training_brands_and_excludes_test_brands() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let si = shared.join("simple-icons");
    std::fs::create_dir_all(si.join("data")).unwrap();
    std::fs::create_dir_all(si.join("icons")).unwrap();
    let slugs = ["acme", "applepay", "globex", "initech", "umbrella", "apple", "hooli", "vandelay"];
    let entries: Vec<String> = slugs.iter().map(|s| format!("{{\"title\":\"{s}\",\"hex\":\"1A73E8\",\"slug\":\"{s}\"}}")).collect();
    std::fs::write(si.join("data/simple-icons.json"), format!("[{}]", entries.join(","))).unwrap();
    for s in slugs {
        std::fs::write(si.join(format!("icons/{s}.svg")), r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="M3 3h18v18H3z"/></svg>"#).unwrap();
    }
    let photo = dir.path().join("photo.png");
    image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x % 200) as u8, (y % 200) as u8, 120])).save(&photo).unwrap();
    let manifest = dir.path().join("bg.jsonl");
    // The second photo shows an excluded brand: it is no background either.
    let line = |brand: &str| format!("{{\"image\":{photo:?},\"brands\":[\"{brand}\"],\"boxes\":[{{\"bbox\":[0,0,50,50],\"brand\":\"{brand}\"}}]}}\n");
    std::fs::write(&manifest, line("x") + &line("Apple")).unwrap();
    let out = dir.path().join("out");
    let args = ["data", "composites", "--data", s(&shared), "--backgrounds", s(&manifest), "--per-brand", "2", "--window", "64", "--out", s(&out)];
    let (c, stdout, err) = code(&[&args[..], &["--exclude-like", "Apple"]].concat());
    assert_eq!(c, 0, "{stdout}{err}");
    let mut expected: Vec<&str> = slugs.iter().copied().filter(|s| !s.starts_with("apple") && !proxima_data::scenes_synth::is_heldout(s)).collect();
    expected.sort();
    let mut got: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    got.sort();
    assert_eq!(got, expected, "{stdout}");
    for b in &got {
        assert_eq!(std::fs::read_dir(out.join(b)).unwrap().count(), 2, "{b}");
    }
    assert!(stdout.contains(&format!("wrote {} crops of {} brands into 1 background photos", 2 * expected.len(), expected.len())), "{stdout}");
    assert!(stdout.contains("and 1 photos of them"), "{stdout}");
    assert!(err.contains("excluded brands:") && err.contains("applepay"), "{err}");
    // Backgrounds without boxes: a clear error, nothing written.
    std::fs::write(&manifest, format!("{{\"image\":{photo:?},\"brands\":[]}}\n")).unwrap();
    let out2 = dir.path().join("out2");
    let args = ["data", "composites", "--data", s(&shared), "--backgrounds", s(&manifest), "--out", s(&out2)];
    let (c, _, err) = code(&args);
    assert!(c == 2 && err.contains("box annotations"), "{err}");
    assert!(!out2.exists() || std::fs::read_dir(&out2).unwrap().next().is_none());
}

/// A frozen trunk under an identity head leaves no weight to train: `train` stops at the first
/// step with an error that says so (it used to panic inside libtorch's backward).
#[test]
fn train_with_nothing_trainable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = proxima(&["data", "synth", "--brands", "6", "--per-brand", "4", "--size", "32", "--out", s(&data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.path().join("frozen.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nroot = \"{}\"\nimage_size = 32\n[split]\ntype = \"ratio\"\ntrain = 0.7\nval = 0.3\ntest = 0.0\n[sampler]\nm = 2\nbatch_size = 8\n\
             [model]\nembedding_size = 16\nbackbone = {{ type = \"small_cnn\", widths = [8, 16] }}\nhead = {{ type = \"identity\" }}\nfreeze_trunk_epochs = 1\n\
             [loss]\ntype = \"contrastive\"\n[optimizer]\ntype = \"adam\"\nlr = 0.001\n[train]\nepochs = 2\n",
            s(&data)
        ),
    )
    .unwrap();
    let (c, _, err) = code(&["train", "--config", s(&config), "--out", s(&dir.path().join("run")), "--quiet"]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("nothing to train in epoch 1") && err.contains("freeze_trunk_epochs"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
