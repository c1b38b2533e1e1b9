//! `proxima query`: which brand each image shows. Answers through its exit status (0 every image
//! a known brand, 1 some unknown, 2 error) so that scripts can use it without parsing output.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use proxima_index::{BACKGROUND_BRAND, Decision};
use proxima_server::api::IdentifyAnswer;
use serde::Serialize;

use crate::common::{embed_files, load_gallery_for, load_model};

/// Arguments of `proxima query`.
#[derive(Args)]
#[command(after_help = "Exit status: 0 every image is a known brand, 1 at least one is unknown, 2 error.")]
pub struct QueryArgs {
    /// Gallery file.
    #[arg(long)]
    gallery: PathBuf,
    /// Model directory; must be the model the gallery was built with.
    #[arg(long)]
    model: PathBuf,
    /// Images to identify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Brands to show per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Decision threshold (cosine similarity); default: the gallery's calibrated one.
    #[arg(long)]
    threshold: Option<f32>,
    /// Print JSON (an array, one object per image) instead of text.
    #[arg(long)]
    json: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Serialize)]
struct QueryLine<'a> {
    image: &'a Path,
    #[serde(flatten)]
    answer: IdentifyAnswer,
}

/// Runs `proxima query`: exit 0 when every image is a known brand, 1 when any is unknown.
pub fn run(a: QueryArgs) -> Result<ExitCode> {
    if a.top_k == 0 {
        bail!("--top-k must be >= 1");
    }
    let model = load_model(&a.model, &a.device)?;
    let g = load_gallery_for(&a.gallery, &model)?;
    let threshold = g.decision_threshold(a.threshold).map_err(|_| anyhow!("the gallery {} has no calibrated threshold; pass --threshold", a.gallery.display()))?;
    let emb = embed_files(&model, &a.images)?;
    let dim = g.dim();
    let mut all_known = true;
    let mut lines = Vec::new();
    for (i, image) in a.images.iter().enumerate() {
        let id = g.identify_with_threshold(&emb[i * dim..(i + 1) * dim], a.top_k, threshold).with_context(|| format!("identifying {}", image.display()))?;
        all_known &= matches!(id.decision, Decision::Known { .. });
        let answer = IdentifyAnswer { decision: id.decision, threshold: id.threshold, candidates: id.candidates };
        if !a.json {
            match &answer.decision {
                Decision::Known { brand, similarity } => println!("{}: {brand} (similarity {similarity:.4} ≥ threshold {threshold:.4})", image.display()),
                Decision::Unknown { best_similarity, background_similarity: None } => {
                    println!("{}: unknown (best similarity {best_similarity:.4} < threshold {threshold:.4})", image.display())
                }
                Decision::Unknown { best_similarity, background_similarity: Some(bg) } => println!(
                    "{}: unknown, not a logo (nearer to the gallery's {BACKGROUND_BRAND} examples, {bg:.4}, than to any brand, {best_similarity:.4})",
                    image.display()
                ),
            }
            for (r, c) in answer.candidates.iter().enumerate() {
                println!("  {}. {:<24} {:.4}", r + 1, c.brand, c.similarity);
            }
        }
        lines.push(QueryLine { image, answer });
    }
    if a.json {
        println!("{}", serde_json::to_string(&lines)?);
    }
    Ok(if all_known { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
