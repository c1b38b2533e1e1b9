//! The integration-test binary of `proxima-bench`: a real (very small) bench trains one run per
//! (configuration, fold, seed), is not re-run when finished, resumes a run whose result line
//! was torn by a kill, and its report can be rebuilt from `results.jsonl` alone.

use std::path::Path;

use proxima_bench::{Progress, build_report, config, plan, run_bench, store};

/// examples/bench/tiny.toml, smaller still: 10 brands × 8 images of 24 px, 2 epochs.
const SMALL: &str = r#"
name = "integration"
seeds = [3]
folds = 2
test_ratio = 0.2

[data_prep]
synth = { brands = 10, per_brand = 8, size = 24, seed = 1, difficulty = 0.2 }

[grid]
"loss" = [ { type = "contrastive" }, { type = "triplet_margin", margin = 0.1 } ]

[base]
[base.data]
root = "DATA"
image_size = 24
workers = 1
[base.split]
type = "ratio"
train = 0.6
val = 0.2
test = 0.2
[base.sampler]
m = 4
batch_size = 8
[base.model]
embedding_size = 8
backbone = { type = "small_cnn", widths = [8, 16] }
[base.loss]
type = "contrastive"
[base.optimizer]
type = "adam"
lr = 0.003
[base.train]
epochs = 2
"#;

struct Seen {
    outcome: proxima_bench::Outcome,
    /// (configuration, resume) of every started run.
    started: Vec<(String, bool)>,
    torn: Option<usize>,
}

fn bench(path: &Path, out: &Path) -> Seen {
    let mut started = Vec::new();
    let mut torn = None;
    let outcome = run_bench(path, out, &mut |p| match p {
        Progress::Start { spec, resume, .. } => started.push((spec.config.clone(), resume)),
        Progress::TornTail { bytes } => torn = Some(bytes),
        _ => {}
    })
    .expect("bench runs");
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    Seen { outcome, started, torn }
}

#[test]
fn bench_trains_each_run_once_resumes_a_torn_run_and_rebuilds_its_report() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("small.toml");
    std::fs::write(&path, SMALL.replace("DATA", tmp.path().join("not-there").to_str().unwrap())).unwrap();
    let out = tmp.path().join("out");

    // First pass: 2 losses × 2 folds × 1 seed.
    let first = bench(&path, &out);
    assert_eq!((first.outcome.ran, first.outcome.skipped), (4, 0));
    assert!(out.join("data").is_dir(), "synthetic data rendered into <out>/data");
    let results_path = out.join("results.jsonl");
    let lines = store::load(&results_path).unwrap();
    assert_eq!(lines.torn_tail, None);
    let mut keys: Vec<(String, usize, u64)> = lines.results.iter().map(|r| (r.config.clone(), r.fold, r.seed)).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("loss=contrastive".to_string(), 0, 3),
            ("loss=contrastive".into(), 1, 3),
            ("loss=triplet_margin(margin=0.1)".into(), 0, 3),
            ("loss=triplet_margin(margin=0.1)".into(), 1, 3)
        ]
    );
    let test_classes: Vec<usize> = lines.results.iter().map(|r| r.test_classes).collect();
    assert_eq!(test_classes, [2, 2, 2, 2], "a fixed 20% of 10 brands is the test set");
    for r in &lines.results {
        assert!(r.test_after.is_some() && r.test_before.is_some());
        assert_eq!(r.val_curve.len(), 2, "validation after each epoch");
        assert!(out.join("runs").join(&r.id).join("model").is_dir());
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| test MAP@R") && md.contains("loss=contrastive") && md.contains("loss=triplet_margin(margin=0.1)"), "{md}");
    assert!(md.contains("2/2"), "runs finished of planned: {md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<table>") && html.contains("<svg") && html.contains("test MAP@R"));

    // Second pass: nothing is trained again.
    let bytes = std::fs::read(&results_path).unwrap();
    let second = bench(&path, &out);
    assert_eq!((second.outcome.ran, second.outcome.skipped), (0, 4));
    assert!(second.started.is_empty(), "{:?}", second.started);
    assert_eq!(std::fs::read(&results_path).unwrap(), bytes);

    // A kill while the last result line was being written: that run is resumed from its
    // checkpoint (no epoch left to train) and gives the same test metrics.
    let text = String::from_utf8(bytes).unwrap();
    let cut = text.trim_end().rfind('\n').unwrap() + 1;
    let last = lines.results.last().unwrap().clone();
    std::fs::write(&results_path, &text[..cut + 40]).unwrap();
    let third = bench(&path, &out);
    assert_eq!(third.torn, Some(40));
    assert_eq!(third.started, [(last.config.clone(), true)]);
    assert_eq!((third.outcome.ran, third.outcome.skipped), (1, 3));
    let after = store::load(&results_path).unwrap();
    assert_eq!(after.results.len(), 4);
    let redo = after.results.last().unwrap();
    assert!(redo.resumed);
    assert_eq!((redo.id.as_str(), redo.test_after), (last.id.as_str(), last.test_after));

    // --report-only: the report comes back from results.jsonl alone.
    std::fs::remove_file(out.join("report.md")).unwrap();
    std::fs::remove_file(out.join("report.html")).unwrap();
    std::fs::remove_dir_all(out.join("runs")).unwrap();
    let files = build_report(&out).unwrap();
    let rebuilt = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(rebuilt.contains("| test MAP@R") && rebuilt.contains("loss=triplet_margin(margin=0.1)"));
    assert!(files.html.exists());
}

#[test]
fn shipped_bench_files_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bench");
    for (file, runs) in [("tiny.toml", 2 * 2), ("losses.toml", 7 * 4 * 2), ("losses_flickrlogos27.toml", 7 * 3 * 2)] {
        let b = config::load_file(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(plan::check(&b).unwrap_or_else(|e| panic!("{file}: {e}")), runs, "{file}");
    }
}
