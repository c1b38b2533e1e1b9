//! Proxima's models: image backbones, the embedding model built on them, pretrained-weight
//! import, and the trained-model directory ([`model_dir`]) that every consumer of a model loads.
//!
//! Metric learning almost always starts from ImageNet weights, and those exist as PyTorch files.
//! The backbones therefore mirror the reference implementations' parameter names exactly, and
//! [`weights`] reads PyTorch checkpoints (zip and legacy pickles) and safetensors without Python,
//! so a torchvision `state_dict` loads by name into a `tch::nn::VarStore`. The parity suite in
//! `tests/` checks features and logits against PyTorch on a real image.

pub mod autocast;
pub mod backbone;
pub mod embedding;
pub mod error;
pub mod export;
mod ffi;
pub mod model_dir;
pub mod optim;
pub mod tensor_file;
pub mod weights;

pub use autocast::autocast_bf16;
pub use backbone::{Backbone, BackboneSpec, EfficientNetLite, Normalization, ResNet, ResNetDepth, SmallCnn};
pub use embedding::{EmbeddingConfig, EmbeddingModel, HeadSpec};
pub use error::{ModelError, Result};
pub use model_dir::{ENSEMBLE_FILE, EnsembleCard, Member, ModelCard, TrainedModel, fingerprint, load_model_dir, save_ensemble_dir, save_model_dir};
pub use optim::{Optimizer, OptimizerConfig, ParamGroup};
pub use weights::{ImportOptions, ImportReport, StateDict, WeightFormat, load_file, load_into};
