//! Export of a model directory to TorchScript, so that a model trained here serves elsewhere.
//!
//! Why tracing: the embedding model is plain tensor code with no data-dependent control flow at a
//! fixed input size, so libtorch's tracer records exactly what `proxima embed` computes, and the
//! traced module loads with `torch.jit.load` (Python) and `torch::jit::load` (C++) with no Proxima
//! code at all. The ONNX file of `proxima export --format onnx` is converted from this TorchScript
//! module by PyTorch's own exporter (see `scripts/export_onnx.py`), so both formats come from one
//! trace: there is no second, hand-written definition of any backbone that could drift.
//!
//! The exported module takes what every runtime can produce without Proxima: RGB images already
//! resized to the model's square input and scaled to [0, 1]; the normalisation (mean, std) is part
//! of the graph. Its output is the embedding, L2-normalised when the model normalises.
//!
//! The file records an [`ExportCard`] (as the TorchScript *extra file* `proxima.json`, which
//! `torch.jit.load(path, _extra_files={"proxima.json": ""})` reads): the model's fingerprint, so a
//! gallery built with the original model accepts the exported one and refuses any other.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::model_dir::{Member, TrainedModel};

/// Value of [`ExportCard::format`].
pub const EXPORT_FORMAT: &str = "proxima-export";
/// Version of the [`ExportCard`] layout.
pub const EXPORT_VERSION: u32 = 1;
/// Name of the TorchScript extra file (and of the ONNX metadata key) that holds the card.
pub const CARD_NAME: &str = "proxima.json";
/// Smallest input side an export accepts: every backbone downsamples by up to 32.
pub const MIN_IMAGE_SIZE: u32 = 32;
/// Largest input side an export accepts.
pub const MAX_IMAGE_SIZE: u32 = 2048;

/// What an exported file says about itself: enough to feed it and to match it with galleries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCard {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// Always [`EXPORT_VERSION`] for files written by this version.
    pub version: u32,
    /// The fingerprint galleries record: the model directory's when exported at its own input
    /// size, `"<fingerprint>@<size>"` at any other (its vectors live in another space).
    pub model_fingerprint: String,
    /// The model directory's own fingerprint (its `model.json`).
    pub source_fingerprint: String,
    /// Width of the embedding.
    pub embedding_size: i64,
    /// Whether embeddings are L2-normalised.
    pub normalized: bool,
    /// The square input side the file takes.
    pub image_size: u32,
    /// The backbone, as its configuration `type` (`resnet18`, `efficientnet_lite0`, …).
    pub backbone: String,
    /// How to prepare the input.
    pub input: InputSpec,
    /// The Proxima version that wrote the file.
    pub proxima_version: String,
    /// One line for people (ONNX `doc_string`): input, output, preprocessing.
    pub summary: String,
}

/// The input contract of an exported model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// `"images"`: float32 `[N, 3, image_size, image_size]`, RGB, values in [0, 1].
    pub name: String,
    /// How Proxima resizes: the whole image squashed to the square (no crop), bilinear
    /// convolution (`fast_image_resize`), after alpha is composited onto white.
    pub resize: String,
    /// Per-channel mean subtracted inside the graph.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided inside the graph.
    pub std: [f32; 3],
    /// The output's name: `"embeddings"`, float32 `[N, embedding_size]`.
    pub output: String,
}

impl ExportCard {
    /// The card of `model` exported at `image_size`.
    pub fn new(model: &Member, image_size: u32) -> Self {
        let source = model.card.fingerprint.clone();
        let model_fingerprint = if image_size == model.card.image_size { source.clone() } else { format!("{source}@{image_size}") };
        let backbone = serde_json::to_value(&model.card.model.backbone)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        ExportCard {
            format: EXPORT_FORMAT.into(),
            version: EXPORT_VERSION,
            model_fingerprint,
            source_fingerprint: source,
            embedding_size: model.card.model.embedding_size,
            normalized: model.card.model.normalize,
            image_size,
            backbone,
            input: InputSpec {
                name: "images".into(),
                resize: "whole image squashed to image_size x image_size (no crop), bilinear convolution filter; alpha composited onto white; RGB scaled to [0, 1]"
                    .into(),
                mean: model.card.normalize.mean,
                std: model.card.normalize.std,
                output: "embeddings".into(),
            },
            proxima_version: env!("CARGO_PKG_VERSION").into(),
            summary: String::new(),
        }
        .with_summary()
    }

    fn with_summary(mut self) -> Self {
        let s = self.image_size;
        self.summary = format!(
            "Proxima embedding model ({}): images float32 [N, 3, {s}, {s}] RGB in [0, 1] (whole image squashed to {s}x{s}, bilinear) -> embeddings float32 [N, {}]{}; mean {:?} and std {:?} applied inside",
            self.backbone,
            self.embedding_size,
            if self.normalized { ", L2-normalised" } else { "" },
            self.input.mean,
            self.input.std
        );
        self
    }

    /// Parses and checks a card read from an exported file (`path` names it in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Checkpoint { path: path.to_path_buf(), message };
        let card: ExportCard = serde_json::from_str(text).map_err(|e| bad(format!("invalid {CARD_NAME}: {e}")))?;
        if card.format != EXPORT_FORMAT || card.version != EXPORT_VERSION {
            return Err(bad(format!("export card {} v{} is not supported (expected {EXPORT_FORMAT} v{EXPORT_VERSION})", card.format, card.version)));
        }
        Ok(card)
    }
}

/// Checks that `image_size` is one an export can take.
pub fn check_image_size(image_size: u32) -> Result<()> {
    if !(MIN_IMAGE_SIZE..=MAX_IMAGE_SIZE).contains(&image_size) {
        return Err(ModelError::Config(format!("--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels, got {image_size}")));
    }
    Ok(())
}

/// Traces `model` (on the CPU, inference mode) into a TorchScript module taking `[N, 3, s, s]`
/// images in [0, 1], normalisation included.
///
/// # Shapes
/// `images`: `[N, 3, image_size, image_size]` → `embeddings`: `[N, embedding_size]`; N is free.
pub fn trace(model: &TrainedModel, image_size: u32) -> Result<CModule> {
    check_image_size(image_size)?;
    let device = model.device;
    let model = single(model)?;
    if device != Device::Cpu {
        return Err(ModelError::Config("export traces on the CPU; load the model with Device::Cpu".into()));
    }
    // The tracer records weights as constants, which must not require gradients.
    for (_, t) in model.model.var_store().variables() {
        let _ = t.set_requires_grad(false);
    }
    let s = image_size as i64;
    let mean = Tensor::from_slice(&model.card.normalize.mean).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&model.card.normalize.std).view([1, 3, 1, 1]);
    // Batch 2 so that nothing of batch size 1 (squeezes, broadcasting) is baked in; the trace has
    // no shape arithmetic on the batch axis, which the export's check at batch 3 confirms.
    let example = Tensor::rand([2, 3, s, s], (Kind::Float, Device::Cpu));
    let traced = tch::no_grad(|| {
        CModule::create_by_tracing("ProximaEmbedder", "forward", &[example], &mut |inputs| {
            let x = (&inputs[0] - &mean) / &std;
            vec![model.model.embed_t(&x, false)]
        })
    })?;
    Ok(traced)
}

/// The one network of `model`: an ensemble is refused (export each member instead).
fn single(model: &TrainedModel) -> Result<&Member> {
    model
        .single()
        .ok_or_else(|| ModelError::Config(format!("{} is an ensemble of {} models; export each member model on its own", model.dir.display(), model.members().len())))
}

/// Exports `model` at `image_size` to a TorchScript file at `out` (written atomically), with its
/// [`ExportCard`] as the extra file `proxima.json`. The traced module is checked against the
/// model on a batch of 3 random images before anything is written.
pub fn save_torchscript(model: &TrainedModel, image_size: u32, out: &Path) -> Result<ExportCard> {
    let module = trace(model, image_size)?;
    let model = single(model)?;
    let card = ExportCard::new(model, image_size);
    let x = Tensor::rand([3, 3, image_size as i64, image_size as i64], (Kind::Float, Device::Cpu));
    let mean = Tensor::from_slice(&model.card.normalize.mean).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&model.card.normalize.std).view([1, 3, 1, 1]);
    let (want, got) = tch::no_grad(|| (model.model.embed_t(&((&x - &mean) / &std), false), module.forward_ts(&[&x])));
    let got = got?;
    let diff = (&want - &got).abs().max().double_value(&[]);
    if diff.is_nan() || diff > 1e-4 {
        return Err(ModelError::Config(format!("the traced module differs from the model by {diff:e} on a batch of 3 (tracing failed to capture it)")));
    }
    save_module(&module, &serde_json::to_vec_pretty(&card).expect("serialisable"), out)?;
    Ok(card)
}

/// Saves a traced `module` to `out` (atomically) with `card` (JSON) as its extra file
/// `proxima.json`; nothing is left at `out` or beside it on error.
pub fn save_module(module: &CModule, card: &[u8], out: &Path) -> Result<()> {
    let tmp = temp_path(out)?;
    let result = module.save(&tmp).map_err(ModelError::from).and_then(|()| add_extra_file(&tmp, out, CARD_NAME, card));
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Reads the extra file `proxima.json` of a TorchScript file written by [`save_module`].
pub fn read_card_json(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::file(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ModelError::corrupt(path, format!("not a TorchScript archive: {e}")))?;
    let name = (0..zip.len())
        .filter_map(|i| zip.by_index_raw(i).ok().map(|f| f.name().to_string()))
        .find(|n| n.ends_with(&format!("/extra/{CARD_NAME}")))
        .ok_or_else(|| ModelError::corrupt(path, format!("no extra/{CARD_NAME}: not a file written by `proxima export`")))?;
    let mut text = String::new();
    zip.by_name(&name).map_err(|e| ModelError::corrupt(path, e.to_string()))?.read_to_string(&mut text).map_err(|e| ModelError::file(path, e))?;
    Ok(text)
}

/// Reads the [`ExportCard`] of an exported TorchScript embedding model.
pub fn read_torchscript_card(path: &Path) -> Result<ExportCard> {
    ExportCard::from_json(&read_card_json(path)?, path)
}

/// A fresh temporary path beside `out` (same directory, so the final rename is atomic).
pub fn temp_path(out: &Path) -> Result<PathBuf> {
    let name = out.file_name().and_then(|n| n.to_str()).ok_or_else(|| ModelError::Config(format!("{}: not a file path", out.display())))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(ModelError::file(&dir, std::io::Error::new(std::io::ErrorKind::NotFound, "the output's folder does not exist")));
    }
    Ok(dir.join(format!(".{name}.{}.tmp", std::process::id())))
}

/// Copies the zip archive `src` to `out` (atomically) with `bytes` added as `<prefix>/extra/<name>`,
/// where TorchScript keeps a module's extra files.
fn add_extra_file(src: &Path, out: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let file = std::fs::File::open(src).map_err(|e| ModelError::file(src, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| ModelError::corrupt(src, e.to_string()))?;
    let first = zip.by_index_raw(0).map_err(|e| ModelError::corrupt(src, e.to_string()))?.name().to_string();
    let prefix = first.split('/').next().unwrap_or("archive").to_string();
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for i in 0..zip.len() {
            let f = zip.by_index_raw(i).map_err(|e| ModelError::corrupt(src, e.to_string()))?;
            w.raw_copy_file(f).map_err(|e| ModelError::corrupt(src, e.to_string()))?;
        }
        let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file(format!("{prefix}/extra/{name}"), opts).map_err(|e| ModelError::corrupt(out, e.to_string()))?;
        w.write_all(bytes).map_err(|e| ModelError::file(out, e))?;
        w.finish().map_err(|e| ModelError::corrupt(out, e.to_string()))?;
    }
    crate::tensor_file::write_atomic(out, buf.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackboneSpec, EmbeddingConfig, EmbeddingModel};

    fn small_model(dir: &Path, seed: i64) -> TrainedModel {
        tch::manual_seed(seed);
        let cfg = EmbeddingConfig::new(BackboneSpec::SmallCnn { widths: vec![4, 8] }, 8);
        let model = EmbeddingModel::new(cfg, Device::Cpu).unwrap();
        crate::model_dir::save_model_dir(&model, 32, dir).unwrap();
        crate::model_dir::load_model_dir(dir, Device::Cpu).unwrap()
    }

    #[test]
    fn torchscript_round_trip_embeds_like_the_model_at_any_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let model = small_model(&dir.path().join("m"), 3);
        let out = dir.path().join("m.pt");
        let card = save_torchscript(&model, 32, &out).unwrap();
        let net = model.single().unwrap();
        assert_eq!(card.model_fingerprint, net.card.fingerprint);
        assert_eq!(read_torchscript_card(&out).unwrap(), card);
        let loaded = CModule::load(&out).unwrap();
        for n in [1i64, 5] {
            let x = Tensor::rand([n, 3, 32, 32], (Kind::Float, Device::Cpu));
            let mean = Tensor::from_slice(&net.card.normalize.mean).view([1, 3, 1, 1]);
            let std = Tensor::from_slice(&net.card.normalize.std).view([1, 3, 1, 1]);
            let want = tch::no_grad(|| net.model.embed_t(&((&x - mean) / std), false));
            let got = tch::no_grad(|| loaded.forward_ts(&[&x])).unwrap();
            assert_eq!(got.size(), [n, 8]);
            assert!((&want - &got).abs().max().double_value(&[]) < 1e-5);
        }
        // No temporary file is left beside the output.
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn another_input_size_is_another_space_and_bad_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = small_model(&dir.path().join("m"), 4);
        let card = save_torchscript(&model, 48, &dir.path().join("m48.pt")).unwrap();
        assert_eq!(card.model_fingerprint, format!("{}@48", model.single().unwrap().card.fingerprint));
        for bad in [0, 16, 4096] {
            let e = save_torchscript(&model, bad, &dir.path().join("bad.pt")).unwrap_err().to_string();
            assert!(e.contains("--image-size must be between"), "{e}");
        }
        assert!(!dir.path().join("bad.pt").exists());
        let e = save_torchscript(&model, 32, &dir.path().join("missing/m.pt")).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("does not exist"), "{e}");
        let e = read_torchscript_card(&dir.path().join("m").join("model.json")).unwrap_err().to_string();
        assert!(e.contains("not a TorchScript archive"), "{e}");
    }
}
