//! `report.md` and a self-contained `report.html` from `results.jsonl` (and `plan.json`).
//!
//! Why rebuilt from the results file alone: the report must be reproducible after the fact
//! (`proxima bench --report-only`), even on another machine without the checkpoints, and must
//! never disagree with what the bench recorded. The document is built once as a list of
//! blocks and rendered twice (markdown and HTML), so the two cannot drift apart; the HTML
//! embeds the SVG plots inline so it can be mailed or archived as one file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proxima_report::{Bar, BarChart, LineChart, Series, bar_chart, line_chart, markdown_table, write_atomic};

use crate::error::{BenchError, Result};
use crate::plan::PlanFile;
use crate::stats::{MeanCi, mean_ci};
use crate::store::{self, RunResult};

/// The files a report consists of.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    /// `<out>/report.md`.
    pub markdown: PathBuf,
    /// `<out>/report.html`.
    pub html: PathBuf,
    /// Charts under `<out>/report/` (PNG and SVG).
    pub plots: Vec<PathBuf>,
    /// Lines of `results.jsonl` left out because the current plan does not contain them.
    pub not_in_plan: usize,
    /// Bytes of a torn last line of `results.jsonl` that were ignored.
    pub torn_tail: Option<usize>,
}

/// Aggregated results of one configuration on one data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub config: String,
    pub search_of: Option<String>,
    /// Finished runs.
    pub n: usize,
    /// Planned runs, when the plan is known.
    pub planned: Option<usize>,
    pub map_at_r: Option<MeanCi>,
    pub r_precision: Option<MeanCi>,
    pub precision_at_1: Option<MeanCi>,
    /// Best validation MAP@R (selection criterion of search trials).
    pub val_map_at_r: Option<MeanCi>,
    /// Test MAP@R of the untrained model.
    pub untrained_map_at_r: Option<MeanCi>,
    /// Mean seconds per run.
    pub seconds: f64,
}

/// One row per configuration, best test MAP@R first (configurations without test metrics last).
pub fn summarize(results: &[&RunResult], planned: &BTreeMap<String, usize>) -> Vec<Row> {
    let mut by: BTreeMap<&str, Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        by.entry(r.config.as_str()).or_default().push(r);
    }
    let mut rows: Vec<Row> = by
        .into_iter()
        .map(|(config, rs)| {
            let ci = |f: &dyn Fn(&RunResult) -> Option<f64>| mean_ci(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>());
            Row {
                config: config.to_string(),
                search_of: rs[0].search_of.clone(),
                n: rs.len(),
                planned: planned.get(config).copied(),
                map_at_r: ci(&|r| r.test_after.map(|e| e.map_at_r)),
                r_precision: ci(&|r| r.test_after.map(|e| e.r_precision)),
                precision_at_1: ci(&|r| r.test_after.map(|e| e.precision_at_1)),
                val_map_at_r: ci(&|r| r.best_val_map_at_r),
                untrained_map_at_r: ci(&|r| r.test_before.map(|e| e.map_at_r)),
                seconds: rs.iter().map(|r| r.seconds).sum::<f64>() / rs.len() as f64,
            }
        })
        .collect();
    let key = |r: &Row| r.map_at_r.map_or(f64::NEG_INFINITY, |c| c.mean);
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.config.cmp(&b.config)));
    rows
}

/// Mean validation MAP@R per epoch over the runs (folds × seeds) of one configuration.
pub fn mean_curve(results: &[&RunResult]) -> Vec<(f64, f64)> {
    let mut acc: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for r in results {
        for p in &r.val_curve {
            if p.map_at_r.is_finite() {
                let e = acc.entry(p.epoch).or_default();
                e.0 += p.map_at_r;
                e.1 += 1;
            }
        }
    }
    acc.into_iter().map(|(epoch, (s, n))| (epoch as f64, s / n as f64)).collect()
}

/// A piece of the document.
enum Block {
    Heading(usize, String),
    Para(String),
    List(Vec<String>),
    Table(Vec<String>, Vec<Vec<String>>),
    /// A chart: stem under `report/`, caption.
    Image(String, String),
    Code(String),
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn render_md(blocks: &[Block]) -> Result<String> {
    let mut s = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, t) => s.push_str(&format!("{} {t}\n\n", "#".repeat(*level))),
            Block::Para(t) => s.push_str(&format!("{t}\n\n")),
            Block::List(items) => {
                for i in items {
                    s.push_str(&format!("- {i}\n"));
                }
                s.push('\n');
            }
            Block::Table(h, rows) => {
                s.push_str(&markdown_table(h, rows)?);
                s.push('\n');
            }
            Block::Image(stem, caption) => s.push_str(&format!("![{caption}](report/{stem}.png)\n\n")),
            Block::Code(t) => s.push_str(&format!("```toml\n{}\n```\n\n", t.trim_end())),
        }
    }
    Ok(s)
}

fn render_html(title: &str, blocks: &[Block], plot_dir: &Path) -> Result<String> {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\nbody{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\ntable{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #bbb;padding:3px 8px}}td.n{{text-align:right;font-variant-numeric:tabular-nums}}th{{background:#eee}}\npre{{background:#f6f6f6;padding:8px;overflow-x:auto}}figure{{margin:1em 0}}svg{{max-width:100%;height:auto}}\n</style></head><body>\n",
        esc(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, t) => s.push_str(&format!("<h{level}>{}</h{level}>\n", esc(t))),
            Block::Para(t) => s.push_str(&format!("<p>{}</p>\n", esc(t))),
            Block::List(items) => {
                s.push_str("<ul>\n");
                for i in items {
                    s.push_str(&format!("<li><code>{}</code></li>\n", esc(i)));
                }
                s.push_str("</ul>\n");
            }
            Block::Table(h, rows) => {
                s.push_str("<table>\n<tr>");
                for c in h {
                    s.push_str(&format!("<th>{}</th>", esc(c)));
                }
                s.push_str("</tr>\n");
                for r in rows {
                    s.push_str("<tr>");
                    for c in r {
                        let numeric = c.chars().next().is_some_and(|ch| ch.is_ascii_digit() || ch == '-');
                        s.push_str(&format!("<td{}>{}</td>", if numeric { " class=\"n\"" } else { "" }, esc(c)));
                    }
                    s.push_str("</tr>\n");
                }
                s.push_str("</table>\n");
            }
            Block::Image(stem, caption) => {
                let path = plot_dir.join(format!("{stem}.svg"));
                let svg = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
                let svg = svg.trim_start_matches(|c| c != '<');
                let svg = if svg.starts_with("<?xml") { svg.split_once("?>").map_or(svg, |(_, rest)| rest.trim_start()) } else { svg };
                s.push_str(&format!("<figure>{svg}<figcaption>{}</figcaption></figure>\n", esc(caption)));
            }
            Block::Code(t) => s.push_str(&format!("<pre><code>{}</code></pre>\n", esc(t.trim_end()))),
        }
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

fn opt(c: &Option<MeanCi>) -> String {
    c.map_or("n/a".into(), |c| c.display())
}

/// Builds `report.md`, `report.html` and the charts under `out` from `results.jsonl`.
pub fn build_report(out: &Path) -> Result<ReportFiles> {
    let loaded = store::load(&out.join("results.jsonl"))?;
    let plan = read_plan(out)?;
    let (results, not_in_plan) = select_results(&loaded.results, plan.as_ref());
    let title = plan.as_ref().map_or_else(|| "Proxima bench".to_string(), |p| format!("Proxima bench: {}", p.name));
    let plot_dir = out.join("report");
    std::fs::create_dir_all(&plot_dir).map_err(|e| BenchError::io(&plot_dir, e))?;
    let mut plots = Vec::new();
    let mut blocks = vec![Block::Heading(1, title.clone())];
    blocks.extend(intro_blocks(&results, plan.as_ref(), loaded.torn_tail, not_in_plan));
    let mut datasets: Vec<&str> = Vec::new();
    for r in &results {
        if !datasets.contains(&r.dataset.as_str()) {
            datasets.push(&r.dataset);
        }
    }
    for (di, ds) in datasets.iter().enumerate() {
        dataset_section(di, ds, &results, plan.as_ref(), &plot_dir, &mut blocks, &mut plots)?;
    }
    blocks.extend(runs_blocks(&results));
    blocks.extend(configuration_blocks(&results));

    let md = render_md(&blocks)?;
    let html = render_html(&title, &blocks, &plot_dir)?;
    let files = ReportFiles { markdown: out.join("report.md"), html: out.join("report.html"), plots, not_in_plan, torn_tail: loaded.torn_tail };
    write_atomic(&files.markdown, md.as_bytes())?;
    write_atomic(&files.html, html.as_bytes())?;
    Ok(files)
}

/// `plan.json` of the bench folder, if there is one.
fn read_plan(out: &Path) -> Result<Option<PlanFile>> {
    let plan_path = out.join("plan.json");
    match std::fs::read(&plan_path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| BenchError::Corrupt { path: plan_path.clone(), line: e.line(), message: e.to_string() })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BenchError::io(&plan_path, e)),
    }
}

/// The first result line of every run id, only planned ids when the plan is known; and how many
/// lines were left out for not being in the plan.
fn select_results<'a>(all: &'a [RunResult], plan: Option<&PlanFile>) -> (Vec<&'a RunResult>, usize) {
    let planned_ids: Option<BTreeSet<&str>> = plan.map(|p| p.runs.iter().map(|r| r.id.as_str()).collect());
    let mut seen = BTreeSet::new();
    let mut not_in_plan = 0;
    let mut results: Vec<&RunResult> = Vec::new();
    for r in all {
        if planned_ids.as_ref().is_some_and(|ids| !ids.contains(r.id.as_str())) {
            not_in_plan += 1;
            continue;
        }
        if seen.insert(r.id.as_str()) {
            results.push(r);
        }
    }
    (results, not_in_plan)
}

/// Who made the report and the runs, how many finished, notes on skipped lines, and the protocol.
fn intro_blocks(results: &[&RunResult], plan: Option<&PlanFile>, torn_tail: Option<usize>, not_in_plan: usize) -> Vec<Block> {
    let mut blocks = Vec::new();
    let commit_now = crate::git_commit();
    let run_commits: BTreeSet<String> = results.iter().map(|r| format!("{} ({})", r.version, r.commit.as_deref().unwrap_or("commit unknown"))).collect();
    let total_seconds: f64 = results.iter().map(|r| r.seconds).sum();
    let planned_total = plan.map(|p| p.runs.len());
    blocks.push(Block::Para(format!(
        "Report by Proxima {} (commit {}). Runs made by: {}. {} of {} planned runs finished; total training time {:.1} s ({:.1} min) summed over runs.",
        env!("CARGO_PKG_VERSION"),
        commit_now.as_deref().unwrap_or("unknown"),
        if run_commits.is_empty() { "-".to_string() } else { run_commits.into_iter().collect::<Vec<_>>().join(", ") },
        results.len(),
        planned_total.map_or("?".into(), |n| n.to_string()),
        total_seconds,
        total_seconds / 60.0
    )));
    if let Some(t) = torn_tail {
        blocks.push(Block::Para(format!("Note: results.jsonl ends in a partial line ({t} bytes, an interrupted write); it was ignored.")));
    }
    if not_in_plan > 0 {
        blocks.push(Block::Para(format!("Note: {not_in_plan} result lines belong to runs that are not in the current plan and were left out.")));
    }
    blocks.push(Block::Para(
        "Protocol: every configuration is trained once per seed and class-disjoint fold (train on k−1 folds, validate on the held-out fold, keep the best-on-validation checkpoint) and evaluated on a fixed set of test classes never seen in training. Values are mean ± 95% confidence half-width (Student t over folds × seeds).".into(),
    ));

    blocks
}

/// The section of one data set (`di`-th, named `ds`): its summary table, the random-search
/// selection, and the bar and learning-curve plots (written to `plot_dir`).
fn dataset_section(
    di: usize,
    ds: &str,
    results: &[&RunResult],
    plan: Option<&PlanFile>,
    plot_dir: &Path,
    blocks: &mut Vec<Block>,
    plots: &mut Vec<PathBuf>,
) -> Result<()> {
    let rs: Vec<&RunResult> = results.iter().copied().filter(|r| r.dataset == *ds).collect();
    let mut planned: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(p) = plan {
        for e in p.runs.iter().filter(|e| e.dataset == *ds) {
            *planned.entry(e.config.clone()).or_default() += 1;
        }
    }
    let rows = summarize(&rs, &planned);
    blocks.push(Block::Heading(2, format!("Data set: {ds}")));
    let classes = rs[0];
    blocks.push(Block::Para(format!(
        "{} training, {} validation and {} test classes per run; {} fold(s).",
        classes.train_classes, classes.val_classes, classes.test_classes, classes.folds
    )));
    let header: Vec<String> =
        ["#", "configuration", "runs", "test MAP@R", "test R-Precision", "test P@1", "val MAP@R", "untrained MAP@R", "s/run"].map(String::from).to_vec();
    let table: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                (i + 1).to_string(),
                r.config.clone(),
                r.planned.map_or(r.n.to_string(), |p| format!("{}/{p}", r.n)),
                opt(&r.map_at_r),
                opt(&r.r_precision),
                opt(&r.precision_at_1),
                opt(&r.val_map_at_r),
                opt(&r.untrained_map_at_r),
                format!("{:.1}", r.seconds),
            ]
        })
        .collect();
    blocks.push(Block::Table(header, table));

    // Random search: the trial with the best mean validation MAP@R per configuration.
    let mut groups: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        if let Some(g) = &r.search_of {
            groups.entry(g.as_str()).or_default().push(r);
        }
    }
    if !groups.is_empty() {
        blocks.push(Block::Heading(3, "Random search: trial selected by validation MAP@R".into()));
        let sel: Vec<Vec<String>> = groups
            .iter()
            .map(|(g, trials)| {
                let best = trials
                    .iter()
                    .max_by(|a, b| a.val_map_at_r.map_or(f64::NEG_INFINITY, |c| c.mean).total_cmp(&b.val_map_at_r.map_or(f64::NEG_INFINITY, |c| c.mean)))
                    .expect("non-empty");
                vec![g.to_string(), trials.len().to_string(), best.config.clone(), opt(&best.val_map_at_r), opt(&best.map_at_r)]
            })
            .collect();
        blocks.push(Block::Table(["configuration", "trials", "selected trial", "val MAP@R", "test MAP@R"].map(String::from).to_vec(), sel));
    }

    let bars: Vec<Bar> = rows.iter().filter_map(|r| r.map_at_r.map(|c| Bar { label: r.config.clone(), value: c.mean, error: c.half_width })).collect();
    if !bars.is_empty() {
        let stem = format!("bars_{di}");
        let chart = BarChart { title: "Test MAP@R (mean ± 95% CI)".into(), x_label: "configuration".into(), y_label: "MAP@R".into(), bars, size: (1000, 520) };
        let f = bar_chart(plot_dir, &stem, &chart)?;
        plots.extend([f.png, f.svg]);
        blocks.push(Block::Image(stem, format!("Test MAP@R per configuration, {ds}")));
    }
    let series: Vec<Series> = rows
        .iter()
        .map(|r| {
            let of: Vec<&RunResult> = rs.iter().copied().filter(|x| x.config == r.config).collect();
            Series { name: r.config.clone(), points: mean_curve(&of) }
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !series.is_empty() {
        let stem = format!("curves_{di}");
        let chart = LineChart {
            title: "Validation MAP@R per epoch (mean over folds × seeds)".into(),
            x_label: "epoch".into(),
            y_label: "MAP@R".into(),
            series,
            size: (1000, 560),
            ..Default::default()
        };
        let f = line_chart(plot_dir, &stem, &chart)?;
        plots.extend([f.png, f.svg]);
        blocks.push(Block::Image(stem, format!("Learning curves, {ds}")));
    }
    Ok(())
}

/// The table of every run.
fn runs_blocks(results: &[&RunResult]) -> Vec<Block> {
    let total_seconds: f64 = results.iter().map(|r| r.seconds).sum();
    let mut blocks = Vec::new();
    blocks.push(Block::Heading(2, "Runs".into()));
    let run_rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.config.clone(),
                r.seed.to_string(),
                r.fold.to_string(),
                r.id.clone(),
                r.loss_curve.len().to_string(),
                r.best_val_map_at_r.map_or("n/a".into(), |v| format!("{v:.4}")),
                r.test_after.map_or("n/a".into(), |e| format!("{:.4}", e.map_at_r)),
                format!("{:.1}", r.seconds),
                if r.resumed { "yes".into() } else { "no".into() },
            ]
        })
        .collect();
    blocks.push(Block::Table(["configuration", "seed", "fold", "id", "epochs", "val MAP@R", "test MAP@R", "seconds", "resumed"].map(String::from).to_vec(), run_rows));
    blocks.push(Block::Para(format!("Total: {} runs, {:.1} s.", results.len(), total_seconds)));

    blocks
}

/// The resolved experiment of each configuration's first run.
fn configuration_blocks(results: &[&RunResult]) -> Vec<Block> {
    let mut blocks = Vec::new();
    blocks.push(Block::Heading(2, "Resolved configurations".into()));
    blocks.push(Block::Para("The experiment of each configuration's first run; other runs differ only in `seed` and the fold (`split`, `split_file`).".into()));
    let mut shown = BTreeSet::new();
    for r in results {
        if shown.insert((r.dataset.as_str(), r.config.as_str())) {
            blocks.push(Block::Heading(3, r.config.clone()));
            if !r.overrides.is_empty() {
                blocks.push(Block::List(r.overrides.clone()));
            }
            blocks.push(Block::Code(r.resolved.clone()));
        }
    }

    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sample_result;

    #[test]
    fn rows_are_best_first_with_ci_over_runs() {
        let a = [sample_result("1", "a", 0, 0.2), sample_result("2", "a", 1, 0.4)];
        let b = [sample_result("3", "b", 0, 0.5), sample_result("4", "b", 1, 0.5)];
        let mut c = sample_result("5", "c", 0, 0.9);
        c.test_after = None;
        let all: Vec<&RunResult> = a.iter().chain(&b).chain([&c]).collect();
        let planned = BTreeMap::from([("a".to_string(), 3)]);
        let rows = summarize(&all, &planned);
        assert_eq!(rows.iter().map(|r| r.config.as_str()).collect::<Vec<_>>(), ["b", "a", "c"]);
        let a_row = &rows[1];
        assert_eq!((a_row.n, a_row.planned), (2, Some(3)));
        let m = a_row.map_at_r.unwrap();
        assert!((m.mean - 0.3).abs() < 1e-12);
        // sd = 0.1414…, t(0.975, 1) = 12.706 → half-width = 12.706 · 0.1414 / √2 = 1.2706
        assert!((m.half_width.unwrap() - 1.270_620_5).abs() < 1e-5, "{m:?}");
        assert!(rows[2].map_at_r.is_none());
        let curve = mean_curve(&a.iter().collect::<Vec<_>>());
        assert_eq!(curve.len(), 2);
        assert!(curve.iter().zip([(1.0, 0.15), (2.0, 0.3)]).all(|(p, q)| p.0 == q.0 && (p.1 - q.1).abs() < 1e-12), "{curve:?}");
    }

    #[test]
    fn report_has_table_plots_and_self_contained_html() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let (mut s, _) = store::ResultsStore::open(&out.join("results.jsonl")).unwrap();
        for r in [sample_result("1", "contrastive", 0, 0.2), sample_result("2", "contrastive", 1, 0.4), sample_result("3", "triplet", 0, 0.5)] {
            s.append(&r).unwrap();
        }
        std::fs::write(out.join("results.jsonl"), std::fs::read_to_string(out.join("results.jsonl")).unwrap() + "{\"id\":\"to").unwrap();
        let f = build_report(out).unwrap();
        assert_eq!(f.torn_tail, Some(9));
        let md = std::fs::read_to_string(&f.markdown).unwrap();
        assert!(md.contains("| test MAP@R"), "{md}");
        assert!(md.contains("0.3000 ± 1.2706"), "{md}");
        assert!(md.contains("|   1 | triplet") && md.contains("|   2 | contrastive"), "best first: {md}");
        assert!(md.contains("partial line"));
        assert!(md.contains("![Test MAP@R per configuration"));
        let html = std::fs::read_to_string(&f.html).unwrap();
        assert!(html.contains("<svg") && !html.contains("<img") && !html.contains("src="), "inline SVG only");
        assert!(html.contains("<td>contrastive</td>"));
        assert!(out.join("report/bars_0.png").exists() && out.join("report/curves_0.svg").exists());
    }
}
