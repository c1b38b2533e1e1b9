//! `proxima demo`: the whole path on built-in data, for a newcomer, in a few minutes.
//!
//! It renders synthetic brand logos, trains a small CNN on some brands, measures retrieval on
//! brands never seen in training before and after, enrols unseen brands in a gallery, calibrates
//! the "unknown" threshold, identifies held-out photos (of enrolled and of never-enrolled brands)
//! and writes `report.md` beside the model and the gallery.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use proxima_data::{Dataset, ScanOptions, Split};
use proxima_eval::OpenSetCounts;
use proxima_index::{Decision, Gallery, ImpostorScores};
use proxima_models::model_dir::{TrainedModel, load_model_dir};
use proxima_train::experiment::{self, RunSummary};

const EXPERIMENT: &str = include_str!("../../../examples/experiments/synth_small_cnn.toml");
/// Images per brand enrolled in the gallery, used to calibrate, and kept for identification.
const ENROL: usize = 8;
const CALIBRATE: usize = 8;
/// Of the unseen brands, this many are never enrolled (they must come out "unknown").
const NEVER_ENROLLED: usize = 3;
const TARGET_FMR: f64 = 0.1;

/// Arguments of `proxima demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Output directory: data/, model/, gallery, report.md, plots, run files.
    #[arg(long, default_value = "proxima-demo")]
    out: PathBuf,
    /// Training epochs (the default finishes in a few minutes on 2 cores).
    #[arg(long, default_value_t = 25)]
    epochs: usize,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

struct OpenSet {
    counts: OpenSetCounts,
    examples: Vec<(String, String, String)>,
}

/// Runs `proxima demo`.
pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let out = &args.out;
    let data_dir = out.join("data");
    if !data_dir.is_dir() {
        eprintln!("rendering 40 synthetic brands × 32 photos into {}", data_dir.display());
        proxima_data::synth(40, 32, 64, 0, 0.5, &data_dir).context("rendering synthetic logos")?;
    }
    let overrides = [format!("data.root={}", toml_string(&data_dir)), format!("train.epochs={}", args.epochs)];
    let cfg = experiment::load(EXPERIMENT, &overrides).context("the built-in experiment")?;
    let resume = out.join("last.safetensors").exists();
    let mut progress = crate::train::Progress::new(args.quiet);
    let summary = experiment::run(&cfg, out, resume, &mut |e| progress.on_event(e)).context("training")?;
    crate::train::print_summary(&summary);

    let model = load_model_dir(out, experiment::parse_device(&cfg.device)?).context("loading the trained model")?;
    let scan = Dataset::scan_folder(&data_dir, &ScanOptions::default()).context("reading the synthetic data")?;
    let split = Split::load(&out.join("split.json")).context("reading the split")?;
    let (_, _, test) = split.apply(&scan.dataset).context("applying the split")?;
    let gallery_path = out.join("gallery");
    let open_set = enrol_and_identify(&model, &test, &gallery_path)?;
    let report = write_report(out, &summary, &open_set, started.elapsed().as_secs_f64())?;
    println!(
        "open set: {}/{} photos of enrolled brands identified, {}/{} photos of never-enrolled brands answered \"unknown\"",
        open_set.counts.known_correct, open_set.counts.known, open_set.counts.unknown_rejected, open_set.counts.unknown
    );
    for (photo, truth, answer) in open_set.examples.iter().take(6) {
        println!("  {photo:<28} truth {truth:<12} → {answer}");
    }
    println!("report: {}  gallery: {}  model: {}", report.display(), gallery_path.display(), out.join("model").display());
    Ok(ExitCode::SUCCESS)
}

fn toml_string(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn enrol_and_identify(model: &TrainedModel, test: &Dataset, gallery_path: &Path) -> Result<OpenSet> {
    let dim = model.card.model.embedding_size as usize;
    let emb = model.embed_dataset(test)?;
    let by_class = test.indices_by_class();
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    let mut gallery = Gallery::new(dim, model.card.fingerprint.clone())?;
    let (mut cal_q, mut cal_truth) = (Vec::new(), Vec::new());
    let mut eval: Vec<(usize, String, bool)> = Vec::new();
    let classes = test.num_classes();
    for (c, idx) in by_class.iter().enumerate() {
        let brand = &test.classes[c];
        let enrolled = c < classes.saturating_sub(NEVER_ENROLLED);
        if enrolled {
            let take: Vec<usize> = idx.iter().copied().take(ENROL).collect();
            let vecs: Vec<f32> = take.iter().flat_map(|&i| row(i).to_vec()).collect();
            let paths: Vec<&Path> = take.iter().map(|&i| test.samples[i].path.as_path()).collect();
            gallery.add(brand, &vecs, &paths)?;
        }
        let rest: Vec<usize> = if enrolled { idx.iter().copied().skip(ENROL).collect() } else { idx.clone() };
        let (cal, held) = rest.split_at(CALIBRATE.min(rest.len()));
        for &i in cal {
            cal_q.extend_from_slice(row(i));
            cal_truth.push(brand.clone());
        }
        eval.extend(held.iter().map(|&i| (i, brand.clone(), enrolled)));
    }
    let cal = gallery.calibrate(&cal_q, &cal_truth, TARGET_FMR, ImpostorScores::BestWrongBrand)?.clone();
    eprintln!(
        "calibrated threshold {:.4} for a false-match rate ≤ {TARGET_FMR} (achieved {:.3} on {} impostor scores)",
        cal.threshold, cal.achieved_fmr, cal.num_impostor
    );
    gallery.save(gallery_path).with_context(|| format!("writing {}", gallery_path.display()))?;
    let mut r = OpenSet { counts: OpenSetCounts::default(), examples: Vec::new() };
    for (n, (i, truth, enrolled)) in eval.iter().enumerate() {
        let id = gallery.identify(row(*i), 3)?;
        let answer = match &id.decision {
            Decision::Known { brand, similarity } => format!("{brand} (similarity {similarity:.3})"),
            Decision::Unknown { best_similarity, .. } => format!("unknown (best similarity {best_similarity:.3})"),
        };
        let accepted = matches!(id.decision, Decision::Known { .. });
        r.counts.add(*enrolled, accepted, matches!(&id.decision, Decision::Known { brand, .. } if brand == truth));
        if n % 7 == 0 {
            let photo = test.samples[*i].path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let truth = if *enrolled { truth.clone() } else { format!("{truth} (never enrolled)") };
            r.examples.push((photo, truth, answer));
        }
    }
    Ok(r)
}

fn write_report(out: &Path, s: &RunSummary, open_set: &OpenSet, seconds: f64) -> Result<PathBuf> {
    let o = &open_set.counts;
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    let mut md = String::new();
    writeln!(md, "# Proxima demo\n")?;
    writeln!(
        md,
        "Synthetic brand logos; a small CNN trained with the multi-similarity loss and miner on {} brands; evaluated on {} brands **never seen in training**. Total time {seconds:.0} s.\n",
        s.train_classes, s.test_classes
    )?;
    writeln!(md, "## Retrieval on unseen brands\n")?;
    if let (Some(b), Some(a)) = (s.test_before, s.test_after) {
        let rows = vec![
            vec!["MAP@R".to_string(), format!("{:.4}", b.map_at_r), format!("{:.4}", a.map_at_r)],
            vec!["R-Precision".to_string(), format!("{:.4}", b.r_precision), format!("{:.4}", a.r_precision)],
            vec!["Precision@1".to_string(), format!("{:.4}", b.precision_at_1), format!("{:.4}", a.precision_at_1)],
        ];
        md.push_str(&proxima_report::markdown_table(&["metric", "untrained", "trained"], &rows)?);
    }
    writeln!(md, "\n![training loss](loss.png)\n\n![validation metrics](validation.png)\n")?;
    writeln!(md, "## Open-set identification\n")?;
    writeln!(
        md,
        "{} unseen brands were enrolled from {ENROL} photos each, {NEVER_ENROLLED} were never enrolled; the decision threshold was calibrated for a false-match rate of {TARGET_FMR} on separate photos.\n",
        s.test_classes.saturating_sub(NEVER_ENROLLED)
    )?;
    let rows = vec![
        vec!["photos of enrolled brands identified correctly".to_string(), format!("{}/{} ({:.1}%)", o.known_correct, o.known, pct(o.known_correct, o.known))],
        vec!["photos of enrolled brands answered unknown".to_string(), format!("{}/{} ({:.1}%)", o.known_rejected, o.known, pct(o.known_rejected, o.known))],
        vec![
            "photos of never-enrolled brands answered unknown".to_string(),
            format!("{}/{} ({:.1}%)", o.unknown_rejected, o.unknown, pct(o.unknown_rejected, o.unknown)),
        ],
    ];
    md.push_str(&proxima_report::markdown_table(&["", "result"], &rows)?);
    writeln!(md, "\n### Examples\n")?;
    let rows: Vec<Vec<String>> = open_set.examples.iter().map(|(p, t, a)| vec![p.clone(), t.clone(), a.clone()]).collect();
    md.push_str(&proxima_report::markdown_table(&["photo", "truth", "answer"], &rows)?);
    writeln!(md, "\nTry it: `proxima query --gallery {0}/gallery --model {0} <image>`.", out.display())?;
    let path = out.join("report.md");
    proxima_report::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}
