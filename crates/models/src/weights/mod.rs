//! Pretrained-weight import: read a checkpoint into a [`StateDict`], then copy it into a
//! `tch::nn::VarStore` by parameter name.
//!
//! Checkpoints come from PyTorch (`torch.save` zip or legacy pickles) or from safetensors. All three
//! become the same name→tensor map, so the mapping step is format-independent. Mapping is strict
//! where it protects the user (every model parameter must be found with the right shape, and
//! nothing is written unless everything matches) and lenient where PyTorch files legitimately carry
//! extras (`num_batches_tracked` counters, an ImageNet head the embedding model does not use): those
//! are reported, not rejected.

pub mod pickle;
pub mod torch_file;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{Kind, Tensor, nn};

use crate::error::{ModelError, Result};

/// The container format of a weight file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// `torch.save` zip archive (PyTorch ≥ 1.6).
    TorchZip,
    /// Legacy `torch.save` pickle stream.
    TorchLegacy,
    /// safetensors.
    Safetensors,
}

/// Named tensors read from a weight file, in file order.
#[derive(Debug)]
pub struct StateDict {
    path: PathBuf,
    format: WeightFormat,
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

fn safetensors_kind(dtype: safetensors::Dtype) -> Option<Kind> {
    use safetensors::Dtype as D;
    Some(match dtype {
        D::F32 => Kind::Float,
        D::F64 => Kind::Double,
        D::F16 => Kind::Half,
        D::BF16 => Kind::BFloat16,
        D::I64 => Kind::Int64,
        D::I32 => Kind::Int,
        D::I16 => Kind::Int16,
        D::I8 => Kind::Int8,
        D::U8 => Kind::Uint8,
        D::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelError::corrupt(path, format!("bad safetensors file: {e}")))?;
    let mut named: Vec<_> = st.tensors();
    // safetensors stores names sorted; keep data order so reports read like the file.
    named.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    named
        .into_iter()
        .map(|(name, view)| {
            let kind = safetensors_kind(view.dtype()).ok_or_else(|| ModelError::corrupt(path, format!("`{name}` has unsupported dtype {:?}", view.dtype())))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            Ok((name, Tensor::f_from_data_size(view.data(), &shape, kind)?))
        })
        .collect()
}

impl StateDict {
    /// Reads a weight file, detecting its format from its first bytes.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        if bytes.is_empty() {
            return Err(ModelError::corrupt(path, "the file is empty"));
        }
        let (format, entries) = if torch_file::is_zip(&bytes) {
            (WeightFormat::TorchZip, torch_file::read_zip(path, &bytes)?)
        } else if torch_file::is_legacy(&bytes) {
            (WeightFormat::TorchLegacy, torch_file::read_legacy(path, &bytes)?)
        } else if bytes.len() > 8 && bytes[8] == b'{' || path.extension().is_some_and(|e| e == "safetensors") {
            (WeightFormat::Safetensors, read_safetensors(path, &bytes)?)
        } else {
            return Err(ModelError::corrupt(path, "unrecognised format (expected a torch.save .pth/.pt file, zip or legacy, or a .safetensors file)"));
        };
        Ok(Self::from_entries(path, format, entries))
    }

    /// A state dict from tensors already in memory (`path` only labels error messages).
    pub fn from_entries(path: impl Into<PathBuf>, format: WeightFormat, entries: Vec<(String, Tensor)>) -> Self {
        let index = entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        StateDict { path: path.into(), format, entries, index }
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The container format of the file.
    pub fn format(&self) -> WeightFormat {
        self.format
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// True when the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }
    /// The names, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
    /// The `(name, tensor)` entries, in file order.
    pub fn entries(&self) -> &[(String, Tensor)] {
        &self.entries
    }
}

/// How file names map onto VarStore names.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Only VarStore variables under this prefix are loaded, with the prefix removed before lookup
    /// (`"trunk."` loads a backbone file into an embedding model's trunk).
    pub store_prefix: String,
    /// Prepended to the (stripped) variable name to get the file name (`"module."` for files saved
    /// from `DataParallel`).
    pub file_prefix: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// VarStore variables that were set from the file.
    pub loaded: Vec<String>,
    /// File entries the model has no place for (e.g. an ImageNet head), in file order.
    pub unused: Vec<String>,
    /// File entries skipped by design (`num_batches_tracked`: libtorch BatchNorm keeps no counter).
    pub ignored: Vec<String>,
}

/// Copies the tensors of `sd` into the variables of `vs` under `opts.store_prefix`.
///
/// Every such variable must be in the file with the same shape; otherwise nothing is written and
/// the error names the parameter. Dtypes are converted to the variable's.
pub fn load_into(vs: &nn::VarStore, sd: &StateDict, opts: &ImportOptions) -> Result<ImportReport> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(k, _)| k.starts_with(&opts.store_prefix)).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut plan = Vec::with_capacity(vars.len());
    let mut missing = Vec::new();
    for (name, var) in &vars {
        let file_name = format!("{}{}", opts.file_prefix, &name[opts.store_prefix.len()..]);
        match sd.get(&file_name) {
            None => missing.push(file_name),
            Some(src) => {
                if src.size() != var.size() {
                    return Err(ModelError::ShapeMismatch { name: file_name, expected: var.size(), found: src.size(), path: sd.path().to_path_buf() });
                }
                plan.push((name.clone(), file_name, var, src));
            }
        }
    }
    if let Some(first) = missing.first() {
        let more = if missing.len() > 1 {
            let shown: Vec<&str> = missing[1..].iter().take(5).map(String::as_str).collect();
            let tail = if missing.len() > 6 { ", …" } else { "" };
            format!(" (and {} more: {}{tail})", missing.len() - 1, shown.join(", "))
        } else {
            String::new()
        };
        return Err(ModelError::MissingParameter { name: first.clone(), path: sd.path().to_path_buf(), more });
    }
    let mut used = HashSet::new();
    let mut report = ImportReport::default();
    tch::no_grad(|| -> Result<()> {
        for (name, file_name, var, src) in &plan {
            let mut var = var.shallow_clone();
            var.f_copy_(&src.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
            used.insert(file_name.as_str());
            report.loaded.push(name.clone());
        }
        Ok(())
    })?;
    for key in sd.keys() {
        if used.contains(key) {
            continue;
        }
        if key.ends_with("num_batches_tracked") {
            report.ignored.push(key.to_string());
        } else {
            report.unused.push(key.to_string());
        }
    }
    Ok(report)
}

/// Reads `path` and loads it into `vs` (see [`load_into`]).
pub fn load_file(vs: &nn::VarStore, path: impl AsRef<Path>, opts: &ImportOptions) -> Result<ImportReport> {
    load_into(vs, &StateDict::read(path)?, opts)
}
