//! `proxima find`: logos anywhere in whole images.
//!
//! Why apart from `query`: `query` identifies an image that *is* a logo crop; `find` first
//! localises logos anywhere in a photo or screenshot (class-agnostic localiser, trained by
//! `proxima localiser`), then identifies each region against the gallery. Exit status: 0 when
//! some image shows a known brand, 1 when none does, 2 on error (nothing is written in any case).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use proxima_data::{DecodeOptions, decode_file};
use proxima_detect::{FindAnswer, FindOptions, Finder, Localiser, load_localiser};

use crate::common::{load_gallery_for, load_model};

/// Arguments of `proxima find`.
#[derive(Args)]
#[command(after_help = "Exit status: 0 a known brand was found in some image, 1 none found, 2 error.")]
pub struct FindArgs {
    /// Model directory; must be the model the gallery was built with.
    #[arg(long)]
    model: PathBuf,
    /// Gallery file.
    #[arg(long)]
    gallery: PathBuf,
    /// Localiser directory; default: `localiser/` inside the model or run directory.
    #[arg(long)]
    localiser: Option<PathBuf>,
    /// Images (photos, screenshots) or folders of them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    find: FindOptionArgs,
    /// Print the JSON array (one object per image) instead of text.
    #[arg(long)]
    json: bool,
    /// Write each image with its regions framed and labelled (known green with brand and
    /// similarity, unknown grey) as `<DIR>/<stem>.find.png` (`<stem>-2.find.png`, … when stems
    /// repeat); written only once every image succeeded.
    #[arg(long)]
    draw: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// The options of find's decision, shared by `find` and `check`.
#[derive(Args)]
pub struct FindOptionArgs {
    /// Decision threshold; default: the gallery's calibrated one.
    #[arg(long)]
    threshold: Option<f32>,
    /// Also identify the whole image as one region.
    #[arg(long)]
    whole_image: bool,
    /// Regions identified per image at most.
    #[arg(long, default_value_t = FindOptions::default().max_regions)]
    max_regions: usize,
    /// Identify only regions whose localiser score reaches this.
    #[arg(long, default_value_t = FindOptions::default().min_score)]
    min_score: f32,
    /// Weight of the localiser score in a region's confidence, `similarity + w·ln(score)`, which
    /// ranks the regions and meets the threshold (0: similarity alone).
    #[arg(long, default_value_t = FindOptions::default().score_weight)]
    score_weight: f32,
    /// Also embed each region with this much context (a share of its size per side) and average
    /// the views (test-time augmentation; repeatable, e.g. `--tta-padding 0.3`).
    #[arg(long = "tta-padding")]
    tta_paddings: Vec<f32>,
}

impl FindOptionArgs {
    /// The find options these arguments give.
    pub fn options(&self) -> FindOptions {
        FindOptions {
            threshold: self.threshold,
            whole_image: self.whole_image,
            max_regions: self.max_regions,
            min_score: self.min_score,
            score_weight: self.score_weight,
            tta_paddings: self.tta_paddings.clone(),
            ..Default::default()
        }
    }
}

/// Loads the localiser at `explicit`, else the one inside the model or run directory.
pub(crate) fn find_localiser(explicit: Option<&Path>, model: &Path, device: tch::Device) -> Result<Localiser> {
    let path = explicit.unwrap_or(model);
    let (loc, _) = load_localiser(path, device).with_context(|| {
        if explicit.is_some() {
            format!("loading the localiser {}", path.display())
        } else {
            format!("no localiser given and none found in {} (train one with `proxima localiser train --out {}/localiser`)", model.display(), model.display())
        }
    })?;
    Ok(loc)
}

/// Runs `proxima find`.
pub fn run(a: FindArgs) -> Result<ExitCode> {
    let model = load_model(&a.model, &a.device)?;
    let gallery = load_gallery_for(&a.gallery, &model)?;
    let loc = find_localiser(a.localiser.as_deref(), &a.model, model.device)?;
    let finder = Finder::new(&loc, &model, &gallery, a.find.options())?;
    let images = crate::common::expand_images(&a.images)?;
    let drawing_paths = a.draw.as_deref().map(|dir| proxima_detect::draw::drawing_paths(dir, &images));
    let mut drawings: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut answers: Vec<FindAnswer> = Vec::with_capacity(images.len());
    for (i, path) in images.iter().enumerate() {
        let img = decode_file(path, &DecodeOptions::default()).with_context(|| format!("decoding {}", path.display()))?;
        let ans = finder.find(&path.to_string_lossy(), &img).with_context(|| format!("finding logos in {}", path.display()))?;
        if !a.json {
            match &ans.brand {
                Some(b) => println!(
                    "{}: {b} (similarity {:.4}, confidence {:.4} ≥ threshold {:.4})",
                    path.display(),
                    ans.similarity.unwrap_or(f32::NAN),
                    ans.confidence.unwrap_or(f32::NAN),
                    ans.threshold
                ),
                None => println!(
                    "{}: no known brand (best confidence {} < threshold {:.4})",
                    path.display(),
                    ans.confidence.map_or("-".into(), |s| format!("{s:.4}")),
                    ans.threshold
                ),
            }
            if ans.scale != 1.0 {
                println!("  (scaled by {:.4} first: the image is larger than {} px)", ans.scale, FindOptions::default().max_side);
            }
            for r in &ans.regions {
                println!(
                    "  [{:.0}, {:.0}, {:.0}, {:.0}] localiser {:.3}: {} similarity {:.4}, confidence {:.4}{}",
                    r.bbox[0],
                    r.bbox[1],
                    r.bbox[2],
                    r.bbox[3],
                    r.score,
                    r.best_brand,
                    r.similarity,
                    r.confidence,
                    if r.brand.is_some() { " (known)" } else { "" }
                );
            }
        }
        if let Some(paths) = &drawing_paths {
            // Encoded now, written once every image is done: a failure writes no drawing.
            let out = &paths[i];
            let drawn = proxima_detect::draw_answer(&img, &ans).with_context(|| format!("drawing the regions of {}", path.display()))?;
            drawings.push((out.clone(), proxima_detect::draw::encode_png(&drawn, out)?));
        }
        answers.push(ans);
    }
    if !drawings.is_empty() {
        proxima_detect::draw::write_all(&drawings).context("writing the drawings")?;
        if !a.json {
            println!("drew {} image(s) into {}", drawings.len(), a.draw.as_deref().map_or(String::new(), |d| d.display().to_string()));
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&answers)?);
    }
    Ok(if answers.iter().any(|a| a.brand.is_some()) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
