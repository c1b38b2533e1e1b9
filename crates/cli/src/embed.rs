//! `proxima embed`: embed images (files or class-per-folder trees) with a trained model into
//! `.npy` (+ a `.json` sidecar of paths and labels) or `.safetensors`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use proxima_train::experiment;

/// Arguments of `proxima embed`.
#[derive(Args)]
pub struct EmbedArgs {
    /// Model directory (or the run directory holding it).
    #[arg(long)]
    model: PathBuf,
    /// Images, or class-per-folder trees (their folder names become labels).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output: `.npy` (float32 [N, E]) plus a `.json` sidecar with paths and labels, or `.safetensors`.
    #[arg(long)]
    out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs `proxima embed`.
pub fn run(args: EmbedArgs) -> Result<ExitCode> {
    let device = experiment::available_device(&args.device)?;
    let model = proxima_models::model_dir::load_model_dir(&args.model, device).with_context(|| format!("loading the model {}", args.model.display()))?;
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut labels: Vec<Option<String>> = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            let scan = proxima_data::Dataset::scan_folder(input, &proxima_data::ScanOptions::default()).with_context(|| format!("reading {}", input.display()))?;
            for issue in &scan.issues {
                eprintln!("skipped {}: {}", issue.path, issue.reason);
            }
            for s in &scan.dataset.samples {
                paths.push(s.path.clone());
                labels.push(Some(scan.dataset.classes[s.label].clone()));
            }
        } else {
            paths.push(input.clone());
            labels.push(None);
        }
    }
    if paths.is_empty() {
        bail!("no images found in the inputs");
    }
    let mut emb = Vec::with_capacity(paths.len() * model.dim());
    for chunk in paths.chunks(256) {
        emb.extend(model.embed_files(chunk)?);
    }
    let dim = model.dim();
    write_embeddings(&args.out, &emb, dim, &paths, &labels, model.fingerprint())?;
    println!("embedded {} images ({} dimensions) into {}", paths.len(), dim, args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn write_embeddings(out: &Path, emb: &[f32], dim: usize, paths: &[PathBuf], labels: &[Option<String>], fingerprint: &str) -> Result<()> {
    let n = emb.len() / dim;
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    let sidecar = serde_json::json!({
        "model_fingerprint": fingerprint,
        "paths": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "labels": labels,
    });
    match ext {
        "npy" => {
            proxima_report::write_atomic(out, &crate::io::npy_f32(emb, n, dim)).with_context(|| format!("writing {}", out.display()))?;
            let side = out.with_extension("json");
            proxima_report::write_atomic(&side, serde_json::to_string_pretty(&sidecar)?.as_bytes()).with_context(|| format!("writing {}", side.display()))?;
        }
        "safetensors" => {
            let t = tch::Tensor::from_slice(emb).view([n as i64, dim as i64]);
            proxima_models::tensor_file::save(out, &[("embeddings".to_string(), t)], &sidecar).with_context(|| format!("writing {}", out.display()))?;
        }
        _ => bail!("--out must end in .npy or .safetensors, got {}", out.display()),
    }
    Ok(())
}
