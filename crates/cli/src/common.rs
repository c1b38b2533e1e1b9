//! Helpers shared by the commands that embed images with a trained model (`gallery`, `query`,
//! `match`, `find`, `check`, `embed`): loading the model and a gallery made with it, listing the
//! images of files and folders, and a one-thread async runtime for the database client.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use proxima_data::{DecodeOptions, EnrolView};
use proxima_index::Gallery;
use proxima_models::model_dir::{TrainedModel, load_model_dir};
use proxima_train::experiment;

pub(crate) fn load_model(path: &Path, device: &str) -> Result<TrainedModel> {
    let device = experiment::available_device(device)?;
    load_model_dir(path, device).with_context(|| format!("loading the model {}", path.display()))
}

pub(crate) fn load_gallery_for(path: &Path, model: &TrainedModel) -> Result<Gallery> {
    Gallery::load_for_model(path, model.fingerprint()).with_context(|| format!("opening the gallery {}", path.display()))
}

/// Image files of `inputs`: files as given, folders expanded to their image files (sorted).
pub(crate) fn expand_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("listing {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && proxima_data::decode::has_image_extension(p))
                .collect();
            if files.is_empty() {
                bail!("{} holds no image files", input.display());
            }
            files.sort();
            out.extend(files);
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            bail!("{} is neither an image file nor a folder", input.display());
        }
    }
    Ok(out)
}

pub(crate) fn embed_files(model: &TrainedModel, paths: &[PathBuf]) -> Result<Vec<f32>> {
    let mut emb = Vec::new();
    for chunk in paths.chunks(64) {
        emb.extend(model.embed_files(chunk).context("embedding images")?);
    }
    Ok(emb)
}

/// Parses one `--views` name (`small`, `dark`).
pub(crate) fn parse_view(s: &str) -> std::result::Result<EnrolView, String> {
    EnrolView::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
        let names: Vec<&str> = EnrolView::ALL.iter().map(|v| v.name()).collect();
        format!("unknown view {s:?} (one of: {})", names.join(", "))
    })
}

/// The enrolment `views` of each image of `paths`, embedded: per image, its views' labels
/// (`<path>#<view>`) and rows, in `views` order; a view that does not apply to an image is left out.
pub(crate) fn embed_views(model: &TrainedModel, paths: &[&Path], views: &[EnrolView]) -> Result<Vec<Vec<(PathBuf, Vec<f32>)>>> {
    let dim = model.dim();
    let mut out = vec![Vec::new(); paths.len()];
    if views.is_empty() {
        return Ok(out);
    }
    let opts = DecodeOptions::default();
    for (c, chunk) in paths.chunks(64).enumerate() {
        let (mut images, mut owners) = (Vec::new(), Vec::new());
        for (j, p) in chunk.iter().enumerate() {
            let img = proxima_data::decode_file(p, &opts).with_context(|| format!("decoding {} for its enrolment views", p.display()))?;
            for &v in views {
                if let Some(view) = v.render(&img) {
                    images.push(view);
                    owners.push((c * 64 + j, v));
                }
            }
        }
        let emb = model.embed_images(&images).context("embedding enrolment views")?;
        for ((i, v), row) in owners.into_iter().zip(emb.chunks_exact(dim)) {
            out[i].push((PathBuf::from(format!("{}#{}", paths[i].display(), v.name())), row.to_vec()));
        }
    }
    Ok(out)
}

/// Runs `f` to completion on a one-thread async runtime (the database client is async).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_images_takes_files_and_the_images_of_folders_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.png", "a.JPG", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let single = dir.path().join("notes.txt");
        let got = expand_images(&[dir.path().to_path_buf(), single.clone()]).unwrap();
        assert_eq!(got, vec![dir.path().join("a.JPG"), dir.path().join("b.png"), single]);
        let err = expand_images(&[dir.path().join("missing.png")]).unwrap_err().to_string();
        assert!(err.contains("missing.png"), "{err}");
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(expand_images(&[empty]).unwrap_err().to_string().contains("no image files"));
    }
}
