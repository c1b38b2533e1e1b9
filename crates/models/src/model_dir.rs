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

/// One network of a loaded model: its card and weights.
pub struct Member {
    pub card: ModelCard,
    pub model: EmbeddingModel,
    /// The member's model directory.
    pub dir: PathBuf,
}

/// A loaded model ready to embed images: one trained network, or an ensemble of several
/// (`ensemble.json`) whose embedding is their L2-normalised embeddings side by side, scaled by
/// 1/√k, so that the cosine of two ensemble embeddings is the mean of the members' cosines.
pub struct TrainedModel {
    members: Vec<Member>,
    fingerprint: String,
    pub device: Device,
    /// The directory loaded (the ensemble's own for an ensemble).
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
        if candidate.join("model.json").is_file() || candidate.join(ENSEMBLE_FILE).is_file() {
            return Ok(candidate);
        }
    }
    Err(ModelError::Config(format!("{} is not a model directory (no model.json or ensemble.json in it or in its model/ folder)", path.display())))
}

/// Loads a model directory (a run directory, or an ensemble directory, works too) onto `device`.
pub fn load_model_dir(path: &Path, device: Device) -> Result<TrainedModel> {
    let dir = resolve_model_dir(path)?;
    let ensemble_path = dir.join(ENSEMBLE_FILE);
    if !ensemble_path.is_file() {
        let member = load_member(&dir, device)?;
        let fingerprint = member.card.fingerprint.clone();
        return Ok(TrainedModel { members: vec![member], fingerprint, device, dir });
    }
    let card = EnsembleCard::read(&ensemble_path, FORMAT, "ensemble")?;
    let bad = |message: String| ModelError::Checkpoint { path: ensemble_path.clone(), message };
    let mut members = Vec::with_capacity(card.members.len());
    for m in &card.members {
        let member_dir = member_dir(&dir.join(m)).map_err(|e| bad(format!("member {}: {e}", m.display())))?;
        members.push(load_member(&member_dir, device)?);
    }
    assemble(members, device, dir).map_err(bad)
}

/// A member's model directory: `path` resolved, refused when it is itself an ensemble.
fn member_dir(path: &Path) -> std::result::Result<PathBuf, String> {
    let dir = resolve_model_dir(path).map_err(|e| e.to_string())?;
    if dir.join(ENSEMBLE_FILE).is_file() {
        return Err(format!("{} is itself an ensemble; list its members instead", path.display()));
    }
    Ok(dir)
}

/// The ensemble of loaded `members`: at least two, sharing input size and normalisation.
fn assemble(members: Vec<Member>, device: Device, dir: PathBuf) -> std::result::Result<TrainedModel, String> {
    if members.len() < 2 {
        return Err(format!("an ensemble needs at least 2 members, got {}", members.len()));
    }
    check_compatible(&members)?;
    let fingerprint = ensemble_fingerprint(&members);
    Ok(TrainedModel { members, fingerprint, device, dir })
}

/// The file that makes a directory an ensemble model.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

/// Contents of a directory that lists member directories: a model ensemble's `ensemble.json`
/// (format: that of model directories), and a localiser ensemble's `localisers.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleCard {
    /// Format version.
    pub format: u32,
    /// Member directories, relative to the ensemble's directory (or absolute).
    pub members: Vec<PathBuf>,
}

impl EnsembleCard {
    /// Reads the card at `path`, refusing one that does not parse or is not of `format`; `what`
    /// names the kind of ensemble in the error ("ensemble", "localiser ensemble").
    pub fn read(path: &Path, format: u32, what: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        let card: EnsembleCard = serde_json::from_str(&text).map_err(|e| ModelError::Checkpoint { path: path.to_path_buf(), message: format!("invalid {what}: {e}") })?;
        if card.format != format {
            return Err(ModelError::Checkpoint { path: path.to_path_buf(), message: format!("{what} format {} is not supported (expected {format})", card.format) });
        }
        Ok(card)
    }
}

/// Writes an ensemble directory `out` of the model directories `members` (stored relative to
/// `out`), after loading them all to check they fit together; returns the loaded ensemble. A
/// refused ensemble leaves no folder behind that it created.
pub fn save_ensemble_dir(members: &[PathBuf], out: &Path, device: Device) -> Result<TrainedModel> {
    let taken = [("model.json", "a single model"), (ENSEMBLE_FILE, "an ensemble (galleries built with it would no longer open)")];
    let list = MemberList { out, file: ENSEMBLE_FILE, format: FORMAT, taken: &taken };
    list.write(
        members,
        |m| member_dir(m).map_err(ModelError::Config),
        |paths| {
            let loaded: Vec<Member> = paths.iter().map(|p| load_member(p, device)).collect::<Result<_>>()?;
            assemble(loaded, device, out.to_path_buf()).map_err(ModelError::Config)
        },
    )
}

/// Where and how an [`EnsembleCard`] is written: the folder `out`, the card's file name and
/// format, and the files that mean `out` already holds a model (each with what it is).
pub struct MemberList<'a> {
    /// The ensemble's folder.
    pub out: &'a Path,
    /// The card's file name in it.
    pub file: &'a str,
    /// The card's format version.
    pub format: u32,
    /// Files whose presence refuses `out`, each with a description for the error.
    pub taken: &'a [(&'a str, &'a str)],
}

impl MemberList<'_> {
    /// Writes the card of `members` (each found by `resolve`, stored relative to `out`) after
    /// `load` has loaded and checked them through the paths the card will hold; returns what
    /// `load` returned. Refuses a folder that already holds a model; a refused list leaves no
    /// folder behind that it created.
    pub fn write<T, E: From<ModelError>>(
        &self,
        members: &[PathBuf],
        resolve: impl Fn(&Path) -> std::result::Result<PathBuf, E>,
        load: impl FnOnce(&[PathBuf]) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let out = self.out;
        for (file, what) in self.taken {
            if out.join(file).exists() {
                return Err(ModelError::Config(format!("{} already holds {what}; choose another folder", out.display())).into());
            }
        }
        let created = !out.exists();
        std::fs::create_dir_all(out).map_err(|e| ModelError::file(out, e))?;
        let written = (|| {
            let out_abs = std::fs::canonicalize(out).map_err(|e| ModelError::file(out, e))?;
            let mut listed = Vec::with_capacity(members.len());
            for m in members {
                let dir = resolve(m)?;
                let abs = std::fs::canonicalize(&dir).map_err(|e| ModelError::file(&dir, e))?;
                listed.push(relative_to(&abs, &out_abs));
            }
            let through: Vec<PathBuf> = listed.iter().map(|m| out_abs.join(m)).collect();
            let loaded = load(&through)?;
            let card = EnsembleCard { format: self.format, members: listed };
            tensor_file::write_atomic(&out.join(self.file), serde_json::to_string_pretty(&card).expect("serialisable").as_bytes())?;
            Ok(loaded)
        })();
        if written.is_err() && created {
            // A bad member leaves nothing behind (the folder is ours and still empty).
            let _ = std::fs::remove_dir(out);
        }
        written
    }
}

/// `path` relative to the directory `base` (both absolute and canonical).
fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel: PathBuf = b[common..].iter().map(|_| std::path::Component::ParentDir).collect();
    rel.extend(&p[common..]);
    if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel }
}

/// Members of one ensemble must see the same input: the same size and normalisation.
fn check_compatible(members: &[Member]) -> std::result::Result<(), String> {
    let first = &members[0];
    for m in &members[1..] {
        if m.card.image_size != first.card.image_size || m.card.normalize != first.card.normalize {
            return Err(format!(
                "member {} takes {} px input normalised with {:?}, but {} takes {} px with {:?}: ensemble members must share input size and normalisation",
                m.dir.display(),
                m.card.image_size,
                m.card.normalize,
                first.dir.display(),
                first.card.image_size,
                first.card.normalize
            ));
        }
    }
    Ok(())
}

/// The ensemble's fingerprint: a hash of its members' fingerprints in order (another order or
/// member is another embedding space).
fn ensemble_fingerprint(members: &[Member]) -> String {
    let joined: Vec<&str> = members.iter().map(|m| m.card.fingerprint.as_str()).collect();
    fingerprint(format!("ensemble:{}", joined.join(",")).as_bytes())
}

/// Loads one network's model directory (`model.json` + `weights.safetensors`).
fn load_member(dir: &Path, device: Device) -> Result<Member> {
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
    Ok(Member { card, model, dir: dir.to_path_buf() })
}

impl TrainedModel {
    /// The networks of this model (one, or an ensemble's members in order).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The one network of a model that is not an ensemble.
    pub fn single(&self) -> Option<&Member> {
        match self.members.as_slice() {
            [m] => Some(m),
            _ => None,
        }
    }

    /// The fingerprint galleries check: the weights' hash, or for an ensemble a hash of its
    /// members' fingerprints.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Embedding dimension (an ensemble's is the sum of its members').
    pub fn dim(&self) -> usize {
        self.members.iter().map(|m| m.card.model.embedding_size as usize).sum()
    }

    /// Square input side in pixels (shared by an ensemble's members).
    pub fn image_size(&self) -> u32 {
        self.members[0].card.image_size
    }

    /// Whether embeddings are L2-normalised (always, for an ensemble).
    pub fn normalizes(&self) -> bool {
        self.members.len() > 1 || self.members[0].card.model.normalize
    }

    /// Embeds a batch of preprocessed images (the output of [`TrainedModel::pipeline`]).
    ///
    /// An ensemble's embedding is `[e₁/‖e₁‖, …, e_k/‖e_k‖] / √k`, so its cosine is the mean of
    /// the members' cosines.
    ///
    /// # Shapes
    /// `x`: `[N, 3, image_size, image_size]` → `[N, dim]`.
    pub fn embed_t(&self, x: &Tensor) -> Tensor {
        if let [m] = self.members.as_slice() {
            return m.model.embed_t(x, false);
        }
        let k = self.members.len() as f64;
        let parts: Vec<Tensor> = self
            .members
            .iter()
            .map(|m| {
                let e = m.model.embed_t(x, false).to_kind(Kind::Float);
                let norm = e.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
                e / norm
            })
            .collect();
        Tensor::cat(&parts, 1) / k.sqrt()
    }

    /// The evaluation pipeline (resize + normalisation) this model expects.
    pub fn pipeline(&self) -> PipelineConfig {
        let card = &self.members[0].card;
        let mut p = PipelineConfig::eval(card.image_size);
        p.normalize = card.normalize;
        p
    }

    /// Embeds every sample of `dataset` (rows in dataset order).
    pub fn embed_dataset(&self, dataset: &Dataset) -> Result<Vec<f32>> {
        let size = self.image_size();
        let cfg = LoaderConfig { image_size: [size, size], ..Default::default() };
        let loader = Loader::new(Arc::new(dataset.clone()), Pipeline::new(self.pipeline(), 0)?, cfg)?;
        let (emb, _) = embed_loader(&loader, 64, |x| self.embed_t(&x.to_device(self.device)))?;
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
        let size = self.image_size();
        let pipe = Pipeline::new(self.pipeline(), 0)?;
        let per = (3 * size * size) as usize;
        let mut buf = vec![0f32; per * images.len()];
        for (i, img) in images.iter().enumerate() {
            pipe.run_into(img, 0, i as u64, [size, size], &mut buf[i * per..(i + 1) * per]);
        }
        let x = Tensor::from_slice(&buf).view([images.len() as i64, 3, size as i64, size as i64]).to_device(self.device);
        let e = tch::no_grad(|| self.embed_t(&x)).to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackboneSpec, EmbeddingConfig};

    fn small(dir: &Path, seed: i64, image_size: u32) {
        tch::manual_seed(seed);
        let model = EmbeddingModel::new(EmbeddingConfig::new(BackboneSpec::SmallCnn { widths: vec![4, 8] }, 8), Device::Cpu).unwrap();
        save_model_dir(&model, image_size, dir).unwrap();
    }

    #[test]
    fn an_ensemble_card_of_another_format_or_not_json_is_refused_naming_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("localisers.json");
        std::fs::write(&path, r#"{"format": 1, "members": ["a", "b"]}"#).unwrap();
        assert_eq!(EnsembleCard::read(&path, 1, "ensemble").unwrap().members, [PathBuf::from("a"), PathBuf::from("b")]);
        let e = EnsembleCard::read(&path, 2, "localiser ensemble").unwrap_err().to_string();
        assert!(e.contains("localisers.json") && e.contains("localiser ensemble format 1 is not supported (expected 2)"), "{e}");
        std::fs::write(&path, "{").unwrap();
        let e = EnsembleCard::read(&path, 1, "ensemble").unwrap_err().to_string();
        assert!(e.contains("localisers.json") && e.contains("invalid ensemble"), "{e}");
        let e = EnsembleCard::read(&tmp.path().join("missing.json"), 1, "ensemble").unwrap_err().to_string();
        assert!(e.contains("missing.json"), "{e}");
    }

    /// A temporary folder with two small models of 32 px input, `a` and `b`.
    fn two_small_models() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        small(&tmp.path().join("a"), 1, 32);
        small(&tmp.path().join("b"), 2, 32);
        tmp
    }

    fn cosines(e: &Tensor) -> Tensor {
        let e = e / e.norm_scalaropt_dim(2, [1], true);
        e.matmul(&e.transpose(0, 1))
    }

    /// The ensemble's cosine is the mean of its members' cosines, its fingerprint is its own and
    /// depends on the members' order, and it survives moving the whole tree (relative members).
    #[test]
    fn ensemble_cosine_is_the_mean_of_its_members() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("runs");
        small(&root.join("a/model"), 1, 32);
        small(&root.join("b/model"), 2, 32);
        let e = save_ensemble_dir(&[root.join("a"), root.join("b")], &root.join("ab"), Device::Cpu).unwrap();
        assert_eq!((e.members().len(), e.dim(), e.image_size(), e.normalizes()), (2, 16, 32, true));
        assert!(e.single().is_none());
        let card: EnsembleCard = serde_json::from_str(&std::fs::read_to_string(root.join("ab").join(ENSEMBLE_FILE)).unwrap()).unwrap();
        assert_eq!(card.members, [PathBuf::from("../a/model"), PathBuf::from("../b/model")]);

        let (a, b) = (load_model_dir(&root.join("a"), Device::Cpu).unwrap(), load_model_dir(&root.join("b"), Device::Cpu).unwrap());
        assert!(a.fingerprint() != e.fingerprint() && b.fingerprint() != e.fingerprint());
        let x = Tensor::rand([5, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (ea, eb, ee) = tch::no_grad(|| (a.embed_t(&x), b.embed_t(&x), e.embed_t(&x)));
        assert_eq!(ee.size(), [5, 16]);
        let want = (cosines(&ea) + cosines(&eb)) / 2.0;
        let got = ee.matmul(&ee.transpose(0, 1));
        assert!((&want - &got).abs().max().double_value(&[]) < 1e-5);

        let ba = save_ensemble_dir(&[root.join("b"), root.join("a")], &root.join("ba"), Device::Cpu).unwrap();
        assert_ne!(ba.fingerprint(), e.fingerprint(), "another order is another space");

        let moved = tmp.path().join("moved");
        std::fs::rename(&root, &moved).unwrap();
        let again = load_model_dir(&moved.join("ab"), Device::Cpu).unwrap();
        assert_eq!(again.fingerprint(), e.fingerprint());
    }

    /// Members that see different inputs, nested ensembles, one member, and a folder holding a
    /// single model are refused, and a refused ensemble leaves no folder behind.
    #[test]
    fn bad_ensembles_are_refused_and_leave_nothing() {
        let tmp = two_small_models();
        let p = |n: &str| tmp.path().join(n);
        small(&p("c48"), 3, 48);
        let err = save_ensemble_dir(&[p("a"), p("c48")], &p("bad"), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("must share input size"), "{err}");
        assert!(!p("bad").exists());
        assert!(save_ensemble_dir(&[p("a")], &p("one"), Device::Cpu).is_err());
        assert!(!p("one").exists());
        assert!(save_ensemble_dir(&[p("a"), p("missing")], &p("bad2"), Device::Cpu).is_err());
        assert!(!p("bad2").exists());
        assert!(save_ensemble_dir(&[p("a"), p("b")], &p("b"), Device::Cpu).is_err(), "b holds a single model");
        save_ensemble_dir(&[p("a"), p("b")], &p("ab"), Device::Cpu).unwrap();
        let err = save_ensemble_dir(&[p("b"), p("a")], &p("ab"), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("already holds an ensemble"), "{err}");
        let err = save_ensemble_dir(&[p("ab"), p("b")], &p("nested"), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("itself an ensemble"), "{err}");
        // A member whose weights changed after the ensemble was made is caught on load.
        std::fs::write(p("b").join("weights.safetensors"), b"not weights").unwrap();
        assert!(load_model_dir(&p("ab"), Device::Cpu).is_err());
    }

    /// An ensemble is not one network, so export refuses it with a clear error.
    #[test]
    fn an_ensemble_cannot_be_exported_as_one_network() {
        let tmp = two_small_models();
        let p = |n: &str| tmp.path().join(n);
        let e = save_ensemble_dir(&[p("a"), p("b")], &p("ab"), Device::Cpu).unwrap();
        let err = crate::export::save_torchscript(&e, 32, &p("ab.pt")).err().unwrap().to_string();
        assert!(err.contains("ensemble of 2 models"), "{err}");
        assert!(!p("ab.pt").exists());
    }
}
