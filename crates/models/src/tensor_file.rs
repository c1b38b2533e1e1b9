//! Named tensors plus one JSON value in the header metadata of a safetensors file: the format of
//! model directories, training checkpoints and localisers.
//!
//! Writes go through [`proxima_data::scene::write_atomic`] (a synced temporary file renamed over
//! the target), so a process killed at any moment leaves either the old or the new file.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

/// The header metadata key that holds the JSON value.
const STATE_KEY: &str = "proxima_state";

fn dtype_of(kind: Kind) -> Option<Dtype> {
    match kind {
        Kind::Float => Some(Dtype::F32),
        Kind::Double => Some(Dtype::F64),
        Kind::Half => Some(Dtype::F16),
        Kind::BFloat16 => Some(Dtype::BF16),
        Kind::Int64 => Some(Dtype::I64),
        Kind::Int => Some(Dtype::I32),
        Kind::Uint8 => Some(Dtype::U8),
        _ => None,
    }
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F64 => Some(Kind::Double),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::I64 => Some(Kind::Int64),
        Dtype::I32 => Some(Kind::Int),
        Dtype::U8 => Some(Kind::Uint8),
        _ => None,
    }
}

/// Writes `tensors` and `state` to `path` atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], state: &serde_json::Value) -> Result<()> {
    let err = |message: String| ModelError::Checkpoint { path: path.to_path_buf(), message };
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let dtype = dtype_of(t.kind()).ok_or_else(|| err(format!("tensor '{name}' has unsupported type {:?}", t.kind())))?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
        buffers.push((name.clone(), dtype, shape, bytes));
    }
    let views =
        buffers.iter().map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)).map_err(|e| err(e.to_string()))).collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([(STATE_KEY.to_string(), state.to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| err(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename
/// ([`proxima_data::scene::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    proxima_data::scene::write_atomic(path, bytes).map_err(|e| match e {
        proxima_data::DataError::Io { path, source } => ModelError::File { path, source },
        other => ModelError::Checkpoint { path: path.to_path_buf(), message: other.to_string() },
    })
}

/// Reads a file written by [`save`]: its tensors (on CPU, sorted by name) and its state.
pub fn load(path: &Path) -> Result<(Vec<(String, Tensor)>, serde_json::Value)> {
    let err = |message: String| ModelError::Checkpoint { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(format!("not a valid checkpoint ({e})")))?;
    let state_text = meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)).ok_or_else(|| err("no training state in the header".into()))?;
    let state = serde_json::from_str(state_text).map_err(|e| err(format!("corrupt training state ({e})")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not a valid checkpoint ({e})")))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| err(format!("tensor '{name}' has unsupported type {:?}", view.dtype())))?;
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        out.push((name, Tensor::from_data_size(view.data(), &shape, kind)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, state))
}

/// The tensors whose names start with `prefix`, renamed without it (one part of a checkpoint,
/// e.g. `optim/`).
pub fn with_prefix(tensors: &[(String, Tensor)], prefix: &str) -> Vec<(String, Tensor)> {
    tensors.iter().filter_map(|(n, t)| n.strip_prefix(prefix).map(|k| (k.to_string(), t.shallow_clone()))).collect()
}

/// Copies the tensor named `prefix + name` into each `(name, variable)` of `vars`. The error
/// message names the first tensor that is missing or has another shape than its variable (the
/// caller adds the file).
pub fn copy_into(vars: &[(String, Tensor)], tensors: &[(String, Tensor)], prefix: &str) -> std::result::Result<(), String> {
    for (name, var) in vars {
        let key = format!("{prefix}{name}");
        let (_, src) = tensors.iter().find(|(n, _)| *n == key).ok_or_else(|| format!("missing variable '{key}'"))?;
        if src.size() != var.size() {
            return Err(format!("variable '{key}' has shape {:?} in the file but {:?} in the model", src.size(), var.size()));
        }
        tch::no_grad(|| var.shallow_clone().copy_(src));
    }
    Ok(())
}
