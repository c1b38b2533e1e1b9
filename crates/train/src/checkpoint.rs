//! Crash-safe checkpoints: one safetensors file holding named tensors (model, optimizer state)
//! and a JSON state (epoch, step, sampler position, history) in the header metadata.
//!
//! Writes go to a temporary file in the same directory, are flushed to disk, then renamed over
//! the target, so a run killed at any moment leaves either the old or the new checkpoint, never a
//! torn one.

use std::path::Path;

use proxima_models::{ModelError, tensor_file};
use tch::Tensor;

use crate::error::{Result, TrainError};

/// A tensor-file error in training's words: `checkpoint <path>: …` and `<path>: <io error>`.
fn train_error(e: ModelError) -> TrainError {
    match e {
        ModelError::Checkpoint { path, message } => TrainError::Checkpoint { path, message },
        ModelError::File { path, source } => TrainError::Io { path, source },
        other => TrainError::Model(other),
    }
}

/// Writes `tensors` and `state` to `path` atomically ([`tensor_file::save`]).
pub fn save(path: &Path, tensors: &[(String, Tensor)], state: &serde_json::Value) -> Result<()> {
    tensor_file::save(path, tensors, state).map_err(train_error)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename
/// ([`tensor_file::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    tensor_file::write_atomic(path, bytes).map_err(train_error)
}

/// Reads a checkpoint: its tensors (on CPU) and its state ([`tensor_file::load`]).
pub fn load(path: &Path) -> Result<(Vec<(String, Tensor)>, serde_json::Value)> {
    tensor_file::load(path).map_err(train_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let tensors = vec![("a".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2])), ("b".to_string(), Tensor::from_slice(&[7i64]))];
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
