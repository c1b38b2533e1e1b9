//! `proxima perf`: speed and memory of the core workloads, one JSON line each.
//!
//! Peak memory is a per-process high-water mark, so by default every workload runs in a fresh
//! child process (`proxima perf --only NAME --in-process`) and the parent forwards its line.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

/// Arguments of `proxima perf`.
#[derive(Args)]
pub struct PerfArgs {
    /// Run only the workloads whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Run exactly this workload.
    #[arg(long, conflicts_with = "filter")]
    only: Option<String>,
    /// Timed repetitions per workload (the median is reported).
    #[arg(long, default_value_t = 5)]
    samples: usize,
    /// Run in this process instead of one child process per workload (peak memory is then shared).
    #[arg(long)]
    in_process: bool,
    /// List the workload names and exit.
    #[arg(long)]
    list: bool,
}

/// One result line, fields in the documented order.
#[derive(Serialize)]
struct Line<'a> {
    workload: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    median_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One benchmark workload.
struct Workload {
    name: String,
    run: Box<dyn Fn(usize) -> Result<f64>>,
}

fn workloads() -> Vec<Workload> {
    let mut all: Vec<Workload> = proxima_core::perf::workloads()
        .into_iter()
        .map(|w| Workload {
            name: w.name.clone(),
            run: Box::new(move |samples| {
                let r = proxima_core::perf::run(&w, samples);
                match r.error {
                    Some(e) => bail!("{e}"),
                    None => Ok(r.median_s),
                }
            }),
        })
        .collect();
    for (n, d) in [(10_000usize, 128usize), (50_000, 128), (200_000, 128)] {
        all.push(Workload {
            name: format!("eval/accuracy/N={n},D={d}"),
            run: Box::new(move |samples| {
                let report = proxima_eval::perf_accuracy_runs(n, d, 0, samples).with_context(|| format!("eval/accuracy N={n}"))?;
                Ok(report.median_seconds)
            }),
        });
    }
    all
}

/// Runs `proxima perf`.
pub fn run(args: PerfArgs) -> Result<ExitCode> {
    let all = workloads();
    let selected: Vec<&Workload> = all
        .iter()
        .filter(|w| match (&args.only, &args.filter) {
            (Some(o), _) => &w.name == o,
            (None, Some(f)) => w.name.contains(f.as_str()),
            (None, None) => true,
        })
        .collect();
    if selected.is_empty() {
        bail!("no workload matches; `proxima perf --list` shows them");
    }
    if args.list {
        selected.iter().for_each(|w| println!("{}", w.name));
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for w in selected {
        if args.in_process {
            match (w.run)(args.samples) {
                Ok(median) => {
                    let line = Line { workload: &w.name, median_s: Some(median), peak_rss_mb: proxima_core::perf::peak_rss_mb().map(|m| m.round()), error: None };
                    println!("{}", serde_json::to_string(&line)?);
                }
                Err(e) => {
                    failed = true;
                    let line = Line { workload: &w.name, median_s: None, peak_rss_mb: None, error: Some(format!("{e:#}")) };
                    println!("{}", serde_json::to_string(&line)?);
                }
            }
        } else {
            let exe = std::env::current_exe().context("cannot locate the proxima executable")?;
            let out = Command::new(exe)
                .args(["perf", "--in-process", "--samples", &args.samples.to_string(), "--only", &w.name])
                .output()
                .with_context(|| format!("cannot start a child process for {}", w.name))?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                failed = true;
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
