//! `proxima train`: run an experiment file (one process, or `--nproc N` local ranks).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use proxima_dist::WorldEnv;
use proxima_train::experiment;
use proxima_train::trainer::Event;

/// Arguments of `proxima train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Experiment file (TOML): data, split, sampler, model, loss, miner, optimizer, schedule, train.
    #[arg(long)]
    config: PathBuf,
    /// Run directory: config.toml, split.json, log.jsonl, checkpoints, plots, metrics.json, model/.
    #[arg(long)]
    out: PathBuf,
    /// Override a configuration value, e.g. `--set train.epochs=5 --set loss.margin=0.2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the run in `--out` from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// No progress bars (log lines only).
    #[arg(long)]
    quiet: bool,
    /// Train data-parallel in N local processes over 127.0.0.1, as `torchrun --nproc-per-node N
    /// proxima train …` would (each takes batch_size / N of every global batch).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    nproc: u16,
}

/// A progress display for training events.
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Progress {
    /// A display; `quiet` prints one line per epoch instead of bars.
    pub fn new(quiet: bool) -> Self {
        Progress { bar: None, quiet }
    }

    /// Shows one event.
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::EpochStart { epoch, steps } if !self.quiet => {
                let bar = ProgressBar::new(*steps as u64);
                bar.set_style(ProgressStyle::with_template("epoch {prefix:>3} [{bar:30}] {pos}/{len} {msg}").expect("valid template").progress_chars("=> "));
                bar.set_prefix(format!("{}", epoch + 1));
                self.bar = Some(bar);
            }
            Event::Step { loss, .. } => {
                if let Some(b) = &self.bar {
                    b.set_message(format!("loss {loss:.4}"));
                    b.inc(1);
                }
            }
            Event::Eval { epoch, metrics } => {
                let line = format!(
                    "epoch {:>3} validation: MAP@R {:.4}  R-Precision {:.4}  P@1 {:.4}",
                    epoch + 1,
                    metrics.map_at_r,
                    metrics.r_precision,
                    metrics.precision_at_1
                );
                match &self.bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            Event::EpochEnd { epoch, mean_loss, seconds, images_per_second } => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                eprintln!("epoch {:>3} done: mean loss {mean_loss:.4}, {seconds:.1} s, {images_per_second:.1} images/s", epoch + 1);
            }
            _ => {}
        }
    }
}

/// Runs `proxima train`.
pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let cfg = experiment::load_file(&args.config, &args.overrides).context("loading the experiment")?;
    if !args.resume && args.out.join("last.safetensors").exists() {
        bail!("{} already holds a run; use --resume to continue it or choose another --out", args.out.display());
    }
    let world = WorldEnv::from_env().context("reading the torchrun environment")?;
    if args.nproc > 1 {
        if world.is_some() {
            bail!("--nproc launches its own processes; it cannot be used inside a torchrun job (WORLD_SIZE is set)");
        }
        if cfg.sampler.batch_size % usize::from(args.nproc) != 0 {
            bail!("sampler.batch_size {} must be a multiple of --nproc {}", cfg.sampler.batch_size, args.nproc);
        }
        return launch_local(usize::from(args.nproc));
    }
    let is_main = world.as_ref().is_none_or(|w| w.rank == 0);
    let mut progress = Progress::new(args.quiet || !is_main);
    let summary = experiment::run(&cfg, &args.out, args.resume, &mut |e| progress.on_event(e)).with_context(|| format!("training into {}", args.out.display()))?;
    if is_main {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs this same command line (without `--nproc`) as `n` child processes with a torchrun-style
/// environment on a free 127.0.0.1 port, waits for all, and stops the others as soon as one fails.
/// Each child gets `OMP_NUM_THREADS` = cores / n unless it is set (torchrun sets 1).
fn launch_local(n: usize) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the proxima executable to launch")?;
    let mut args: Vec<String> = Vec::new();
    let mut skip_value = false;
    for a in std::env::args().skip(1) {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match a.as_str() {
            "--nproc" => skip_value = true,
            _ if a.starts_with("--nproc=") => {}
            _ => args.push(a),
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("finding a free port on 127.0.0.1")?.port();
    let threads = (std::thread::available_parallelism().map_or(1, |p| p.get()) / n).max(1);
    let mut children = Vec::with_capacity(n);
    for rank in 0..n {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(&args).envs(WorldEnv::local(rank, n, port).vars());
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", threads.to_string());
        }
        children.push(cmd.spawn().with_context(|| format!("starting rank {rank}: {}", exe.display()))?);
    }
    eprintln!("data parallel: {n} processes on 127.0.0.1:{port}, {threads} thread(s) each");
    let mut running: Vec<Option<std::process::Child>> = children.into_iter().map(Some).collect();
    let mut failed: Option<(usize, std::process::ExitStatus)> = None;
    while running.iter().any(Option::is_some) {
        for (rank, slot) in running.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait().with_context(|| format!("waiting for rank {rank}"))? {
                *slot = None;
                if !status.success() && failed.is_none() {
                    failed = Some((rank, status));
                }
            }
        }
        if failed.is_some() {
            for child in running.iter_mut().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    match failed {
        Some((rank, status)) => bail!("rank {rank} of {n} failed ({status}); the other ranks were stopped"),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Prints the before/after table of a finished run.
pub fn print_summary(s: &experiment::RunSummary) {
    println!("classes: {} train, {} validation, {} test (never seen in training)", s.train_classes, s.val_classes, s.test_classes);
    if let (Some(b), Some(a)) = (s.test_before, s.test_after) {
        println!("{:<24} {:>10} {:>10}", "test metric", "untrained", "trained");
        println!("{:<24} {:>10.4} {:>10.4}", "MAP@R", b.map_at_r, a.map_at_r);
        println!("{:<24} {:>10.4} {:>10.4}", "R-Precision", b.r_precision, a.r_precision);
        println!("{:<24} {:>10.4} {:>10.4}", "Precision@1", b.precision_at_1, a.precision_at_1);
    }
    println!("model: {}", s.run_dir.join("model").display());
}
