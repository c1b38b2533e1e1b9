//! Training of embedding models: experiment configuration, optimizers, learning-rate
//! schedules, crash-safe checkpoints and the training loop. The trained-model directory a run
//! writes is [`proxima_models::model_dir`].

pub mod checkpoint;
pub mod error;
pub mod experiment;
pub mod model;
/// The optimizers, shared with the localiser's training (`proxima_models::optim`).
pub use proxima_models::optim;
pub mod schedule;
pub mod trainer;

pub use error::{Result, TrainError};
pub use optim::{Optimizer, OptimizerConfig, ParamGroup};
pub use schedule::Schedule;
