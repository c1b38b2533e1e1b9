//! Crash-safe checkpoints: one safetensors file holding named tensors (model, optimizer state)
//! and a JSON state (epoch, step, sampler position, history) in the header metadata.
//!
//! Writes go to a temporary file in the same directory, are flushed to disk, then renamed over
//! the target, so a run killed at any moment leaves either the old or the new checkpoint, never a
//! torn one.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainError};

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
    let err = |message: String| TrainError::Checkpoint { path: path.to_path_buf(), message };
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
    let views = buffers
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)).map_err(|e| err(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([(STATE_KEY.to_string(), state.to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| err(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename
/// ([`proxima_data::scene::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    proxima_data::scene::write_atomic(path, bytes).map_err(|e| match e {
        proxima_data::DataError::Io { path, source } => TrainError::io(path, source),
        other => TrainError::Checkpoint { path: path.to_path_buf(), message: other.to_string() },
    })
}

/// Reads a checkpoint: its tensors (on CPU) and its state.
pub fn load(path: &Path) -> Result<(Vec<(String, Tensor)>, serde_json::Value)> {
    let err = |message: String| TrainError::Checkpoint { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let tensors = vec![
            ("a".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2])),
            ("b".to_string(), Tensor::from_slice(&[7i64])),
        ];
        let state = serde_json::json!({"epoch": 3, "step": 17});
        save(&path, &tensors, &state).unwrap();
        let (back, st) = load(&path).unwrap();
        assert_eq!(st, state);
        assert_eq!(back[0].0, "a");
        assert_eq!(Vec::<f32>::try_from(back[0].1.flatten(0, -1)).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(back[0].1.size(), vec![2, 2]);
        assert_eq!(back[1].1.int64_value(&[0]), 7);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A truncated file is a clear error naming the path.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("last.safetensors"), "{e}");
    }
}
