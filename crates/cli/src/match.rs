//! `proxima match`: are two images the same brand? Exit status 0 same, 1 different, 2 error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use proxima_index::cosine;
use proxima_server::api::CompareAnswer;

use crate::common::{embed_files, load_gallery_for, load_model};

/// Arguments of `proxima match`.
#[derive(Args)]
#[command(after_help = "Exit status: 0 same brand, 1 different, 2 error.")]
pub struct MatchArgs {
    /// First image.
    a: PathBuf,
    /// Second image.
    b: PathBuf,
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Decision threshold (cosine similarity).
    #[arg(long, conflicts_with = "gallery", required_unless_present = "gallery")]
    threshold: Option<f32>,
    /// Take the threshold calibrated in this gallery (built with the same model).
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs `proxima match`: exit 0 when the two images are the same brand, 1 when different.
pub fn run(a: MatchArgs) -> Result<ExitCode> {
    let model = load_model(&a.model, &a.device)?;
    let threshold = match (&a.gallery, a.threshold) {
        (Some(path), _) => {
            let g = load_gallery_for(path, &model)?;
            g.decision_threshold(None).map_err(|_| anyhow!("the gallery {} has no calibrated threshold; pass --threshold", path.display()))?
        }
        (None, Some(t)) => t,
        (None, None) => bail!("pass --threshold or --gallery"),
    };
    let emb = embed_files(&model, &[a.a.clone(), a.b.clone()])?;
    let d = emb.len() / 2;
    let similarity = cosine(&emb[..d], &emb[d..]);
    let same = similarity >= threshold;
    let answer = CompareAnswer { similarity, threshold, decision: if same { "same" } else { "different" }.into() };
    if a.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        println!("{} vs {}: similarity {similarity:.4} {} threshold {threshold:.4} → {}", a.a.display(), a.b.display(), if same { "≥" } else { "<" }, answer.decision);
    }
    Ok(if same { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
