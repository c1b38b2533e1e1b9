//! The trained-model directory (`<run>/model/`): what `--model` takes everywhere.
//!
//! It holds `model.json` (the embedding-model configuration, the input size and normalisation,
//! and a fingerprint of the weights) and `weights.safetensors`. The fingerprint lets a gallery
//! refuse embeddings from a different model: vectors of two models live in different spaces.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proxima_data::{Dataset, DecodeOptions, Loader, LoaderConfig, Normalize, Pipeline, PipelineConfig};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::embedding::{EmbeddingConfig, EmbeddingModel};
use crate::error::{ModelError, Result};
use crate::tensor_file;

/// Contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Format version of the model directory.
    pub format: u32,
    pub model: EmbeddingConfig,
    /// Square input side in pixels.
    pub image_size: u32,
    pub normalize: Normalize,
    /// FNV-1a 64 of `weights.safetensors`, hex.
    pub fingerprint: String,
}

const FORMAT: u32 = 1;

/// A loaded model ready to embed images.
pub struct TrainedModel {
    pub card: ModelCard,
    pub model: EmbeddingModel,
    pub device: Device,
    pub dir: PathBuf,
}

/// FNV-1a 64-bit hash of `bytes`, as 16 hex digits.
pub fn fingerprint(bytes: &[u8]) -> String {
    format!("{:016x}", proxima_data::rng::fnv1a64(0, bytes))
}

/// Copies the `model/…` variables of a training checkpoint into `model`.
pub fn load_model_weights(model: &EmbeddingModel, checkpoint_path: &Path) -> Result<()> {
    let (tensors, _) = tensor_file::load(checkpoint_path)?;
    copy_into(model, tensors.iter().filter_map(|(n, t)| n.strip_prefix("model/").map(|n| (n, t))), checkpoint_path)
}

fn copy_into<'a>(model: &EmbeddingModel, tensors: impl Iterator<Item = (&'a str, &'a Tensor)>, path: &Path) -> Result<()> {
    let tensors: Vec<(&str, &Tensor)> = tensors.collect();
    let err = |message: String| ModelError::Checkpoint { path: path.to_path_buf(), message };
    for (name, var) in model.var_store().variables() {
        let (_, src) = tensors.iter().find(|(n, _)| *n == name).ok_or_else(|| err(format!("missing variable '{name}'")))?;
        if src.size() != var.size() {
            return Err(err(format!("variable '{name}' has shape {:?} in the file but {:?} in the model", src.size(), var.size())));
        }
        tch::no_grad(|| var.shallow_clone().copy_(&src.to_device(var.device())));
    }
    Ok(())
}

/// Writes `model` as a model directory (atomically per file).
pub fn save_model_dir(model: &EmbeddingModel, image_size: u32, dir: &Path) -> Result<ModelCard> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::file(dir, e))?;
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let weights = dir.join("weights.safetensors");
    tensor_file::save(&weights, &vars, &serde_json::json!({"kind": "proxima-model"}))?;
    let bytes = std::fs::read(&weights).map_err(|e| ModelError::file(&weights, e))?;
    let n = model.normalization();
    let mut config = model.config().clone();
    config.pretrained = None;
    config.freeze_trunk_epochs = 0;
    let card = ModelCard {
        format: FORMAT,
        model: config,
        image_size,
        normalize: Normalize { mean: n.mean.map(|x| x as f32), std: n.std.map(|x| x as f32) },
        fingerprint: fingerprint(&bytes),
    };
    tensor_file::write_atomic(&dir.join("model.json"), serde_json::to_string_pretty(&card).expect("serialisable").as_bytes())?;
    Ok(card)
}

/// Resolves `path` to a model directory: the directory itself or its `model/` child.
pub fn resolve_model_dir(path: &Path) -> Result<PathBuf> {
    for candidate in [path.to_path_buf(), path.join("model")] {
        if candidate.join("model.json").is_file() {
            return Ok(candidate);
        }
    }
    Err(ModelError::Config(format!("{} is not a model directory (no model.json in it or in its model/ folder)", path.display())))
}

/// Loads a model directory (a run directory works too) onto `device`.
pub fn load_model_dir(path: &Path, device: Device) -> Result<TrainedModel> {
    let dir = resolve_model_dir(path)?;
    let card_path = dir.join("model.json");
    let text = std::fs::read_to_string(&card_path).map_err(|e| ModelError::file(&card_path, e))?;
    let card: ModelCard = serde_json::from_str(&text).map_err(|e| ModelError::Checkpoint { path: card_path.clone(), message: format!("invalid model card: {e}") })?;
    if card.format != FORMAT {
        return Err(ModelError::Checkpoint { path: card_path, message: format!("model format {} is not supported (expected {FORMAT})", card.format) });
    }
    let weights = dir.join("weights.safetensors");
    let bytes = std::fs::read(&weights).map_err(|e| ModelError::file(&weights, e))?;
    if fingerprint(&bytes) != card.fingerprint {
        return Err(ModelError::Checkpoint { path: weights, message: "the weights do not match model.json's fingerprint (file changed or corrupted)".into() });
    }
    let mut model = EmbeddingModel::new(card.model.clone(), device)?;
    let (tensors, _) = tensor_file::load(&weights)?;
    copy_into(&model, tensors.iter().map(|(n, t)| (n.as_str(), t)), &weights)?;
    model.eval();
    Ok(TrainedModel { card, model, device, dir })
}

impl TrainedModel {
    /// The evaluation pipeline (resize + normalisation) this model expects.
    pub fn pipeline(&self) -> PipelineConfig {
        let mut p = PipelineConfig::eval(self.card.image_size);
        p.normalize = self.card.normalize;
        p
    }

    /// Embeds every sample of `dataset` (rows in dataset order).
    pub fn embed_dataset(&self, dataset: &Dataset) -> Result<Vec<f32>> {
        let size = self.card.image_size;
        let cfg = LoaderConfig { image_size: [size, size], ..Default::default() };
        let loader = Loader::new(Arc::new(dataset.clone()), Pipeline::new(self.pipeline(), 0)?, cfg)?;
        let (emb, _) = embed_loader(&loader, 64, |x| self.model.embed_t(&x.to_device(self.device), false))?;
        Ok(emb)
    }

    /// Embeds decoded RGB images.
    ///
    /// # Shapes
    /// n images → n × E floats (row-major).
    pub fn embed_images(&self, images: &[image::RgbImage]) -> Result<Vec<f32>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let size = self.card.image_size;
        let pipe = Pipeline::new(self.pipeline(), 0)?;
        let per = (3 * size * size) as usize;
        let mut buf = vec![0f32; per * images.len()];
        for (i, img) in images.iter().enumerate() {
            pipe.run_into(img, 0, i as u64, [size, size], &mut buf[i * per..(i + 1) * per]);
        }
        let x = Tensor::from_slice(&buf).view([images.len() as i64, 3, size as i64, size as i64]).to_device(self.device);
        let e = tch::no_grad(|| self.model.embed_t(&x, false)).to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        Ok(Vec::<f32>::try_from(e.flatten(0, -1))?)
    }

    /// Decodes and embeds image files (clear errors name the file).
    pub fn embed_files(&self, paths: &[PathBuf]) -> Result<Vec<f32>> {
        let opts = DecodeOptions::default();
        let images = paths.iter().map(|p| proxima_data::decode_file(p, &opts)).collect::<std::result::Result<Vec<_>, _>>()?;
        self.embed_images(&images)
    }
}

/// Embeds every sample of `loader`'s dataset in order, `batch_size` at a time, with `forward`
/// (images `[b, 3, h, w]` on the CPU → embeddings `[b, E]`): the embeddings (row-major) and labels.
pub fn embed_loader(loader: &Loader, batch_size: usize, forward: impl Fn(&Tensor) -> Tensor) -> Result<(Vec<f32>, Vec<i64>)> {
    let n = loader.dataset().len();
    let plan: Vec<(u64, Vec<usize>)> = (0..n).collect::<Vec<_>>().chunks(batch_size.max(1)).map(|c| (0u64, c.to_vec())).collect();
    let mut emb = Vec::new();
    let mut labels = Vec::new();
    for batch in loader.iter(plan) {
        let batch = batch.map_err(|e| ModelError::Config(format!("loading evaluation images: {e}")))?;
        let [b, c, h, w] = batch.shape.map(|x| x as i64);
        let x = Tensor::from_slice(&batch.images).view([b, c, h, w]);
        let e = tch::no_grad(|| forward(&x)).to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        emb.extend(Vec::<f32>::try_from(e.flatten(0, -1))?);
        labels.extend(batch.labels);
    }
    Ok((emb, labels))
}
