//! `proxima ensemble`: combine trained models into one model directory.
//!
//! Why: two embeddings trained on different data make different mistakes (the FlickrLogos-27
//! closed-set model and the many-brand open-set model of docs/find.md), and averaging their
//! cosines corrects some of each. The ensemble is an ordinary `--model` everywhere (galleries,
//! `find`, `check`, the service): its embedding is the members' normalised embeddings side by side.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use proxima_train::experiment;

/// Arguments of `proxima ensemble`.
#[derive(Args)]
pub struct EnsembleArgs {
    /// Member model directories (or run directories holding them), at least two, sharing input
    /// size and normalisation.
    #[arg(required = true, num_args = 2..)]
    members: Vec<PathBuf>,
    /// Folder to write `ensemble.json` to (created; members are stored relative to it).
    #[arg(long)]
    out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N` (to load the members once as a check).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs `proxima ensemble`.
pub fn run(args: EnsembleArgs) -> Result<ExitCode> {
    let device = experiment::available_device(&args.device)?;
    let model = proxima_models::save_ensemble_dir(&args.members, &args.out, device).with_context(|| format!("writing the ensemble {}", args.out.display()))?;
    println!(
        "wrote {} ({} members, {} dimensions, fingerprint {}); build its galleries with `proxima gallery build --model {}`",
        args.out.join(proxima_models::ENSEMBLE_FILE).display(),
        model.members().len(),
        model.dim(),
        model.fingerprint(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
