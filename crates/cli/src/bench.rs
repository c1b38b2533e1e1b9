//! `proxima bench`: run (or resume) an experiment grid with class-disjoint cross-validation and
//! write a report; `--report-only` rebuilds the report from `results.jsonl`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use proxima_bench::Progress;

/// Arguments of `proxima bench`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("mode").required(true).args(["config", "report_only"]))]
pub struct BenchArgs {
    /// Bench file (TOML): base experiment, [grid] / [[runs]] overrides, seeds, folds, [search], [data_prep].
    #[arg(long, requires = "out")]
    config: Option<PathBuf>,
    /// Output folder: results.jsonl, plan.json, runs/<id>/, splits/, report.md, report.html, report/.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only rebuild report.md and report.html of this bench output folder.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out"])]
    report_only: Option<PathBuf>,
    /// No progress bars (one line per epoch and per run).
    #[arg(long)]
    quiet: bool,
}

/// Runs `proxima bench`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if let Some(dir) = args.report_only {
        let files = proxima_bench::build_report(&dir).with_context(|| format!("building the report of {}", dir.display()))?;
        if let Some(t) = files.torn_tail {
            eprintln!("note: results.jsonl ends in a partial line ({t} bytes); ignored");
        }
        println!("report: {} and {}", files.markdown.display(), files.html.display());
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(config), Some(out)) = (args.config, args.out) else { bail!("--config and --out are required (or use --report-only DIR)") };
    let mut progress = crate::train::Progress::new(args.quiet);
    let started = std::time::Instant::now();
    let outcome = proxima_bench::run_bench(&config, &out, &mut |p| match p {
        Progress::Planned { total, done } => eprintln!("bench: {total} runs planned, {done} already finished"),
        Progress::TornTail { bytes } => eprintln!("note: results.jsonl ended in a partial line ({bytes} bytes, an interrupted write); removed"),
        Progress::Start { index, total, spec, resume } => eprintln!(
            "[{}/{total}] {} (seed {}, fold {}/{}) {}{}",
            index + 1,
            spec.config,
            spec.seed,
            spec.fold + 1,
            spec.folds,
            if resume { "resuming " } else { "" },
            spec.dir(&out).display()
        ),
        Progress::Train(e) => progress.on_event(e),
        Progress::Finished { result, .. } => {
            eprintln!("  done in {:.1} s: test MAP@R {}", result.seconds, result.test_after.map_or("n/a".into(), |e| format!("{:.4}", e.map_at_r)))
        }
        Progress::Failed { spec, error } => eprintln!("  FAILED {} (seed {}, fold {}): {error}", spec.config, spec.seed, spec.fold),
    })
    .with_context(|| format!("running the bench {} into {}", config.display(), out.display()))?;
    println!(
        "bench: {} runs trained, {} skipped (already finished), {} failed in {:.1} s",
        outcome.ran,
        outcome.skipped,
        outcome.failed.len(),
        started.elapsed().as_secs_f64()
    );
    println!("report: {} and {}", outcome.report.markdown.display(), outcome.report.html.display());
    if !outcome.failed.is_empty() {
        for f in &outcome.failed {
            eprintln!("failed: {} (seed {}, fold {}): {}", f.config, f.seed, f.fold, f.message);
        }
        bail!("{} runs failed; run the same command again to retry them (finished runs are skipped)", outcome.failed.len());
    }
    Ok(ExitCode::SUCCESS)
}
