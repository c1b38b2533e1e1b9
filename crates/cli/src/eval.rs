//! `proxima eval`: evaluate saved embeddings — retrieval, clustering and pair verification —
//! and optionally write a report folder with plots.
//!
//! Why in the CLI: the metrics live in `proxima-eval` and the plots in `proxima-report`;
//! this module only reads files, chooses what to compute, and presents it, so that numbers
//! printed here are exactly those a Rust caller of `proxima_eval` gets.
//!
//! What is computed:
//! * Retrieval (P@1, R-Precision, MAP@R, MAP, MRR, Recall@k): every query against the
//!   references (or the query set itself, own row excluded), `proxima_eval::evaluate_retrieval`.
//! * Clustering (NMI, AMI): k-means of the query embeddings with k = number of query classes
//!   (`proxima_eval::evaluate_clustering`, seeded by `--seed`), skipped for one class.
//! * Verification (AUC, EER, FNMR at FMR 1e-2/1e-3/1e-4) of pair scores in the chosen
//!   metric: `proxima_eval::pair_scores` (all pairs up to `proxima_eval::MAX_PAIRS`, else a
//!   sample seeded by `--seed`) and `proxima_eval::verification_report`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, ValueEnum};
use proxima_base::SplitMix64;
use proxima_eval::{
    ClusteringMetrics, Embeddings, KSpec, Metric, PairInfo, PairScores, RetrievalConfig, RetrievalMetrics, ScoreKind, VerificationReport, evaluate_clustering,
    evaluate_retrieval, pair_scores, pca_2d, roc_curve, verification_report,
};
use proxima_report as report;
use serde::Serialize;

use crate::io::{EmbeddingFile, RawLabels, ResolvedLabels, read_embeddings, read_labels, resolve_labels};

/// Most points drawn in the PCA map (a seeded sample above that).
const MAX_PCA_POINTS: usize = 10_000;
/// Most points kept when plotting a curve.
const MAX_CURVE_POINTS: usize = 2_000;
/// Recall@k cut-offs reported when enough references exist.
const AT_KS: [usize; 3] = [1, 5, 10];

/// Arguments of `proxima eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Query embeddings: .npy (float32/float64, rows × dim), .csv or .tsv (one row per line).
    #[arg(long, required_unless_present = "model", requires = "labels", conflicts_with = "model")]
    embeddings: Option<PathBuf>,
    /// Query labels: .npy (int32/int64) or text, one label per line (names allowed).
    #[arg(long, requires = "embeddings")]
    labels: Option<PathBuf>,
    /// Embed images with this trained model (run or model directory) instead of reading embeddings.
    #[arg(long, requires = "data")]
    model: Option<PathBuf>,
    /// With --model: a class-per-folder tree or a manifest (CSV/JSONL) of labelled images.
    #[arg(long, requires = "model")]
    data: Option<PathBuf>,
    /// With --model: a split file (a run's split.json) selecting which classes to evaluate.
    #[arg(long, requires = "model")]
    split: Option<PathBuf>,
    /// With --split: the part to evaluate.
    #[arg(long, value_enum, default_value_t = PartArg::Test)]
    part: PartArg,
    /// With --model: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Reference (gallery) embeddings; without them each query searches the other queries.
    #[arg(long, requires = "reference_labels")]
    reference_embeddings: Option<PathBuf>,
    /// Reference labels, same formats as --labels.
    #[arg(long, requires = "reference_embeddings")]
    reference_labels: Option<PathBuf>,
    /// Neighbours for the retrieval metrics: a number, `max-bin-count` (largest class) or `all`.
    #[arg(long, default_value = "max-bin-count", value_parser = parse_k)]
    k: KSpec,
    /// Closeness measure for retrieval and pair scores.
    #[arg(long, value_enum, default_value_t = MetricArg::L2)]
    metric: MetricArg,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Write metrics.json, report.md and plots (PNG + SVG) into this folder.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Seed of k-means and of pair sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Which part of a split to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PartArg {
    Train,
    Val,
    Test,
}

/// Embeds the labelled images of `--data` (optionally one part of a split) with `--model`.
fn embed_data(args: &EvalArgs, model_dir: &Path, data: &Path) -> Result<(EmbeddingFile, RawLabels)> {
    let device = proxima_train::experiment::available_device(&args.device)?;
    let model = proxima_models::model_dir::load_model_dir(model_dir, device).with_context(|| format!("loading the model {}", model_dir.display()))?;
    let dataset = if data.is_dir() {
        let scan = proxima_data::Dataset::scan_folder(data, &proxima_data::ScanOptions::default()).with_context(|| format!("reading {}", data.display()))?;
        for issue in &scan.issues {
            eprintln!("skipped {}: {}", issue.path, issue.reason);
        }
        scan.dataset
    } else {
        proxima_data::Dataset::from_manifest(data).with_context(|| format!("reading the manifest {}", data.display()))?
    };
    let dataset = match &args.split {
        Some(f) => {
            let split = proxima_data::Split::load(f).with_context(|| format!("reading the split {}", f.display()))?;
            let (train, val, test) = split.apply(&dataset).with_context(|| format!("applying the split {}", f.display()))?;
            match args.part {
                PartArg::Train => train,
                PartArg::Val => val,
                PartArg::Test => test,
            }
        }
        None => dataset,
    };
    ensure!(!dataset.is_empty(), "no images to evaluate in {}", data.display());
    let values = model.embed_dataset(&dataset)?;
    let dim = model.dim();
    let names = dataset.samples.iter().map(|s| dataset.classes[s.label].clone()).collect();
    Ok((EmbeddingFile { path: data.to_path_buf(), rows: dataset.len(), dim, data: values }, RawLabels::Names(names)))
}

/// The closeness measures offered on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum MetricArg {
    /// Euclidean distance.
    L2,
    /// Cosine similarity.
    Cosine,
    /// Inner product.
    Dot,
}

impl MetricArg {
    fn metric(self) -> Metric {
        match self {
            MetricArg::L2 => Metric::L2,
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::Dot => Metric::Dot,
        }
    }

    fn score_kind(self) -> ScoreKind {
        if self.metric().higher_is_closer() { ScoreKind::Similarity } else { ScoreKind::Distance }
    }

    fn score_name(self) -> &'static str {
        match self {
            MetricArg::L2 => "L2 distance",
            MetricArg::Cosine => "cosine similarity",
            MetricArg::Dot => "dot product",
        }
    }
}

fn parse_k(s: &str) -> std::result::Result<KSpec, String> {
    match s {
        "max-bin-count" => Ok(KSpec::MaxBinCount),
        "all" => Ok(KSpec::AllReferences),
        n => match n.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("{n:?} is not a positive number, `max-bin-count` or `all`")),
            Ok(k) => Ok(KSpec::Fixed(k)),
        },
    }
}

/// Input files as given.
#[derive(Serialize)]
struct Inputs {
    #[serde(skip_serializing_if = "Option::is_none")]
    embeddings: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_embeddings: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_labels: Option<PathBuf>,
}

/// Verification section of the output.
#[derive(Serialize)]
struct Verification {
    pairs: PairInfo,
    /// `distance` (accept when score ≤ threshold) or `similarity` (accept when ≥).
    score: &'static str,
    report: VerificationReport,
}

/// A class id and its name.
#[derive(Serialize)]
struct ClassName {
    id: i64,
    name: String,
}

/// Everything `proxima eval` computes; `--json` prints it and `metrics.json` stores it.
#[derive(Serialize)]
struct EvalOutput {
    inputs: Inputs,
    metric: MetricArg,
    num_queries: usize,
    num_references: usize,
    /// True when the query set is its own reference set.
    same_set: bool,
    /// Distinct classes among the queries.
    num_classes: usize,
    dim: usize,
    retrieval: RetrievalMetrics,
    clustering: Option<ClusteringMetrics>,
    verification: Option<Verification>,
    /// Names of the classes when labels were names rather than numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    class_names: Option<Vec<ClassName>>,
    /// Why a section is missing, and other remarks.
    notes: Vec<String>,
}

/// Runs `proxima eval`.
pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let (query, query_raw) = match (&args.model, &args.data, &args.embeddings, &args.labels) {
        (Some(m), Some(d), _, _) => embed_data(&args, m, d)?,
        (_, _, Some(e), Some(l)) => {
            let query = read_embeddings(e)?;
            let raw = read_labels(l)?;
            check_count(&query, l, &raw)?;
            (query, raw)
        }
        _ => bail!("give --embeddings with --labels, or --model with --data"),
    };
    let reference = match (&args.reference_embeddings, &args.reference_labels) {
        (Some(e), Some(l)) => {
            let emb = read_embeddings(e)?;
            let raw = read_labels(l)?;
            check_count(&emb, l, &raw)?;
            ensure!(
                emb.dim == query.dim,
                "dimension mismatch: {} has dimension {} but {} has dimension {}",
                query.path.display(),
                query.dim,
                emb.path.display(),
                emb.dim
            );
            Some((emb, raw))
        }
        _ => None,
    };
    let resolved = match &reference {
        Some((_, raw)) => resolve_labels(&[&query_raw, raw]),
        None => resolve_labels(&[&query_raw]),
    };
    let (output, pairs) = evaluate(&args, &query, reference.as_ref().map(|r| &r.0), &resolved)?;

    let json = serde_json::to_string_pretty(&output).context("cannot serialise the metrics")?;
    if let Some(dir) = &args.report {
        write_report(dir, &args, &output, &json, &query, &resolved, pairs)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&output).context("cannot serialise the metrics")?);
    } else {
        print!("{}", terminal_table(&output));
        if let Some(dir) = &args.report {
            println!("report written to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check_count(emb: &EmbeddingFile, labels_path: &Path, labels: &RawLabels) -> Result<()> {
    if emb.rows != labels.len() {
        bail!("label count mismatch: embeddings file {} has {} rows but labels file {} has {} labels", emb.path.display(), emb.rows, labels_path.display(), labels.len());
    }
    Ok(())
}

fn evaluate(args: &EvalArgs, query: &EmbeddingFile, reference: Option<&EmbeddingFile>, labels: &ResolvedLabels) -> Result<(EvalOutput, PairScores)> {
    let qlabels = &labels.ids[0];
    let q = Embeddings::new("query embeddings", &query.data, query.dim)?;
    let r = match reference {
        Some(r) => Some((Embeddings::new("reference embeddings", &r.data, r.dim)?, labels.ids[1].as_slice())),
        None => None,
    };
    let same = r.is_none();
    let usable = r.map_or(query.rows.saturating_sub(1), |r| r.0.rows());
    let config =
        RetrievalConfig { k: args.k, metric: args.metric.metric(), at_ks: AT_KS.iter().copied().filter(|&c| c <= usable).collect(), ..RetrievalConfig::default() };
    let retrieval = evaluate_retrieval(q, qlabels, r, &config).context("retrieval metrics")?;

    let mut notes = Vec::new();
    if retrieval.num_lone_queries > 0 {
        notes.push(format!("{} queries have no same-class reference and are excluded from the retrieval metrics", retrieval.num_lone_queries));
    }
    let classes: BTreeSet<i64> = qlabels.iter().copied().collect();
    let clustering = if classes.len() > 1 {
        Some(evaluate_clustering(q, qlabels, args.seed).context("clustering metrics")?)
    } else {
        notes.push("the queries have a single class: NMI/AMI are not computed".into());
        None
    };

    let pairs = pair_scores(q, qlabels, r, args.metric.metric(), args.seed)?;
    let verification = if pairs.genuine.is_empty() || pairs.impostor.is_empty() {
        notes.push(format!("pair verification needs genuine and impostor pairs ({} genuine, {} impostor): not computed", pairs.genuine.len(), pairs.impostor.len()));
        None
    } else {
        let report = verification_report(&pairs.genuine, &pairs.impostor, args.metric.score_kind()).context("verification metrics")?;
        Some(Verification {
            pairs: pairs.info.clone(),
            score: match args.metric.score_kind() {
                ScoreKind::Distance => "distance",
                ScoreKind::Similarity => "similarity",
            },
            report,
        })
    };
    if let Some(v) = &verification
        && v.pairs.mode == "sampled"
    {
        notes.push(format!(
            "{} of {} pairs were sampled uniformly with replacement (seed {}) for the verification metrics",
            v.pairs.evaluated_pairs, v.pairs.total_pairs, v.pairs.seed
        ));
    }

    let class_names = labels.assigned.then(|| labels.names.iter().map(|(id, name)| ClassName { id: *id, name: name.clone() }).collect());
    let output = EvalOutput {
        inputs: Inputs {
            embeddings: args.embeddings.clone(),
            labels: args.labels.clone(),
            model: args.model.clone(),
            data: args.data.clone(),
            reference_embeddings: args.reference_embeddings.clone(),
            reference_labels: args.reference_labels.clone(),
        },
        metric: args.metric,
        num_queries: query.rows,
        num_references: reference.map_or(query.rows, |r| r.rows),
        same_set: same,
        num_classes: classes.len(),
        dim: query.dim,
        retrieval,
        clustering,
        verification,
        class_names,
        notes,
    };
    Ok((output, pairs))
}

/// `(metric, value)` rows shared by the terminal table and `report.md`.
fn summary_rows(o: &EvalOutput) -> Vec<(String, String)> {
    let f = |x: f64| format!("{x:.4}");
    let mut rows = vec![
        ("queries".to_string(), format!("{} ({} lone)", o.num_queries, o.retrieval.num_lone_queries)),
        ("references".into(), if o.same_set { format!("{} (the queries, own row excluded)", o.num_references) } else { o.num_references.to_string() }),
        ("classes".into(), o.num_classes.to_string()),
        ("dimension".into(), o.dim.to_string()),
        ("metric, k".into(), format!("{}, k = {}", serde_json::to_value(o.metric).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(), o.retrieval.k)),
    ];
    let m = &o.retrieval.metrics;
    rows.extend([
        ("P@1".to_string(), f(m.precision_at_1)),
        ("R-Precision".into(), f(m.r_precision)),
        ("MAP@R".into(), f(m.mean_average_precision_at_r)),
        ("MAP".into(), f(m.mean_average_precision)),
        ("MRR".into(), f(m.mean_reciprocal_rank)),
    ]);
    for a in &o.retrieval.recall_at {
        rows.push((format!("Recall@{}", a.k), f(a.value)));
    }
    match &o.clustering {
        Some(c) => rows.extend([("NMI".to_string(), f(c.nmi)), ("AMI".into(), f(c.ami))]),
        None => rows.extend([("NMI".to_string(), "n/a".into()), ("AMI".into(), "n/a".into())]),
    }
    match &o.verification {
        Some(v) => {
            let r = &v.report;
            rows.push(("pairs".into(), format!("{} ({}; {} genuine, {} impostor)", v.pairs.evaluated_pairs, v.pairs.mode, r.num_genuine, r.num_impostor)));
            rows.push(("AUC".into(), f(r.auc)));
            rows.push(("EER".into(), f(r.eer)));
            for p in &r.fnmr_at_fmr {
                let mut value = f(p.fnmr);
                if p.target_fmr < r.fmr_resolution {
                    value.push_str(&format!(" (FMR below resolution {:.1e})", r.fmr_resolution));
                }
                rows.push((format!("FNMR@FMR={:.0e}", p.target_fmr), value));
            }
        }
        None => rows.push(("pairs".into(), "n/a".into())),
    }
    rows
}

fn terminal_table(o: &EvalOutput) -> String {
    let rows = summary_rows(o);
    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    for n in &o.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

/// Write `metrics.json`, the plots and `report.md` into `dir`.
fn write_report(dir: &Path, args: &EvalArgs, o: &EvalOutput, json: &str, query: &EmbeddingFile, labels: &ResolvedLabels, pairs: PairScores) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create report folder {}", dir.display()))?;
    report::write_atomic(&dir.join("metrics.json"), format!("{json}\n").as_bytes())?;
    let mut plots: Vec<(&str, &str)> = Vec::new();

    if let Some(v) = &o.verification {
        let kind = args.metric.score_kind();
        let roc = roc_curve(&pairs.genuine, &pairs.impostor, kind)?;
        let (ng, ni) = (pairs.genuine.len() as f64, pairs.impostor.len() as f64);
        let pr: Vec<(f64, f64)> = roc
            .iter()
            .filter(|p| p.tmr > 0.0)
            .map(|p| {
                let (tp, fp) = (p.tmr * ng, p.fmr * ni);
                (p.tmr, tp / (tp + fp))
            })
            .collect();
        let roc_pts: Vec<(f64, f64)> = roc.iter().map(|p| (p.fmr, p.tmr)).collect();
        let prevalence = ng / (ng + ni);
        report::line_chart(
            dir,
            "pr_curve",
            &report::LineChart {
                title: "Precision–recall of pair verification".into(),
                x_label: "recall (true match rate)".into(),
                y_label: "precision".into(),
                series: vec![
                    report::Series { name: "pairs".into(), points: report::decimate(&pr, MAX_CURVE_POINTS) },
                    report::Series { name: format!("chance ({prevalence:.3})"), points: vec![(0.0, prevalence), (1.0, prevalence)] },
                ],
                x_range: Some(0.0..1.0),
                y_range: Some(0.0..1.02),
                legend: report::Corner::LowerLeft,
                ..Default::default()
            },
        )?;
        plots.push(("pr_curve", "Precision–recall curve of pair verification"));
        report::line_chart(
            dir,
            "roc_curve",
            &report::LineChart {
                title: format!("ROC of pair verification (AUC {:.4}, EER {:.4})", v.report.auc, v.report.eer),
                x_label: "false match rate".into(),
                y_label: "true match rate".into(),
                series: vec![
                    report::Series { name: "pairs".into(), points: report::decimate(&roc_pts, MAX_CURVE_POINTS) },
                    report::Series { name: "chance".into(), points: vec![(0.0, 0.0), (1.0, 1.0)] },
                ],
                x_range: Some(0.0..1.0),
                y_range: Some(0.0..1.02),
                legend: report::Corner::LowerRight,
                ..Default::default()
            },
        )?;
        plots.push(("roc_curve", "ROC curve of pair verification"));
        report::histogram_overlay(
            dir,
            "pair_scores",
            &report::HistogramOverlay {
                title: format!("Pair scores ({})", args.metric.score_name()),
                x_label: args.metric.score_name().into(),
                distributions: vec![
                    report::Distribution { name: "positive (same class)".into(), values: pairs.genuine },
                    report::Distribution { name: "negative (different class)".into(), values: pairs.impostor },
                ],
                bins: 60,
                legend: if kind == ScoreKind::Distance { report::Corner::UpperRight } else { report::Corner::UpperLeft },
                ..Default::default()
            },
        )?;
        plots.push(("pair_scores", "Histogram of positive vs negative pair scores"));
    }

    if query.rows >= 2 {
        let q = Embeddings::new("query embeddings", &query.data, query.dim)?;
        let proj = pca_2d(q).context("PCA projection")?;
        let rows = sample_rows(query.rows, MAX_PCA_POINTS, args.seed);
        let classes: Vec<i64> = labels.ids[0].iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let index_of = |id: i64| classes.binary_search(&id).expect("a query class");
        let title = if rows.len() < query.rows {
            format!("PCA of the query embeddings ({} of {} points)", rows.len(), query.rows)
        } else {
            "PCA of the query embeddings".to_string()
        };
        report::scatter(
            dir,
            "pca",
            &report::Scatter {
                title,
                x_label: "principal component 1".into(),
                y_label: "principal component 2".into(),
                points: rows.iter().map(|&i| (f64::from(proj[2 * i]), f64::from(proj[2 * i + 1]))).collect(),
                classes: rows.iter().map(|&i| index_of(labels.ids[0][i])).collect(),
                class_names: classes.iter().map(|&c| labels.name_of(c)).collect(),
                ..Default::default()
            },
        )?;
        plots.push(("pca", "2-D PCA map of the query embeddings, coloured by class"));
    }

    let md = markdown_report(o, labels, &plots)?;
    report::write_atomic(&dir.join("report.md"), md.as_bytes())?;
    Ok(())
}

/// `n` row indices in increasing order: all when `n ≤ max`, else a seeded sample of `max`.
fn sample_rows(n: usize, max: usize, seed: u64) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed ^ 0x5CA7_7E12);
    for i in 0..max {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
    }
    idx.truncate(max);
    idx.sort_unstable();
    idx
}

fn markdown_report(o: &EvalOutput, labels: &ResolvedLabels, plots: &[(&str, &str)]) -> Result<String> {
    let mut md = String::from("# Evaluation report\n\n");
    let shown = |p: &Option<PathBuf>| p.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string());
    match (&o.inputs.model, &o.inputs.data) {
        (Some(m), Some(d)) => md.push_str(&format!("- model: `{}`\n- images: `{}`\n", m.display(), d.display())),
        _ => md.push_str(&format!("- embeddings: `{}`\n- labels: `{}`\n", shown(&o.inputs.embeddings), shown(&o.inputs.labels))),
    }
    if let (Some(e), Some(l)) = (&o.inputs.reference_embeddings, &o.inputs.reference_labels) {
        md.push_str(&format!("- reference embeddings: `{}`\n- reference labels: `{}`\n", e.display(), l.display()));
    }
    md.push_str("\n## Metrics\n\n");
    let rows: Vec<Vec<String>> = summary_rows(o).into_iter().map(|(k, v)| vec![k, v]).collect();
    md.push_str(&report::markdown_table(&["metric", "value"], &rows)?);
    if !o.notes.is_empty() {
        md.push('\n');
        for n in &o.notes {
            md.push_str(&format!("- Note: {n}\n"));
        }
    }
    if !plots.is_empty() {
        md.push_str("\n## Plots\n\n");
        for (name, caption) in plots {
            md.push_str(&format!("### {caption}\n\n![{caption}]({name}.png)\n\n[SVG]({name}.svg)\n\n"));
        }
    }
    let mut per_class: Vec<_> = o.retrieval.per_class.iter().collect();
    if !per_class.is_empty() {
        per_class.sort_by(|a, b| a.metrics.mean_average_precision_at_r.total_cmp(&b.metrics.mean_average_precision_at_r));
        let shown = per_class.len().min(20);
        md.push_str(&format!("## Per class ({shown} of {} classes, lowest MAP@R first)\n\n", per_class.len()));
        let rows: Vec<Vec<String>> = per_class[..shown]
            .iter()
            .map(|c| {
                vec![
                    labels.name_of(c.label),
                    c.num_queries.to_string(),
                    format!("{:.4}", c.metrics.precision_at_1),
                    format!("{:.4}", c.metrics.r_precision),
                    format!("{:.4}", c.metrics.mean_average_precision_at_r),
                ]
            })
            .collect();
        md.push_str(&report::markdown_table(&["class", "queries", "P@1", "R-Precision", "MAP@R"], &rows)?);
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_parsing() {
        assert_eq!(parse_k("max-bin-count"), Ok(KSpec::MaxBinCount));
        assert_eq!(parse_k("all"), Ok(KSpec::AllReferences));
        assert_eq!(parse_k("7"), Ok(KSpec::Fixed(7)));
        assert!(parse_k("0").is_err());
        assert!(parse_k("many").unwrap_err().contains("max-bin-count"));
    }

    #[test]
    fn row_sampling() {
        assert_eq!(sample_rows(5, 10, 0), vec![0, 1, 2, 3, 4]);
        let s = sample_rows(1000, 100, 1);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && *s.last().unwrap() < 1000);
    }
}
