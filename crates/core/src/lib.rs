//! Proxima's metric-learning core: distances, reducers, regularizers, losses and miners.
//!
//! Components compose as in pytorch-metric-learning — loss × distance × reducer × miner — and
//! give the same numbers (see the parity suite in `tests/`). Everything runs on libtorch tensors
//! (through `tch`), so the same code trains on CPU or CUDA and gets gradients from autograd; the
//! few places where the reference's formulation would need B³ memory are streamed instead.

pub mod components;
pub mod distance;
pub mod error;
mod fused;
mod lanes;
pub mod loss;
pub mod miner;
pub mod perf;
pub mod reducer;
pub mod regularizer;
pub mod tuples;

pub use distance::Distance;
pub use error::{CoreError, Result};
pub use loss::{BuildContext, Loss, LossKind, LossSpec, MetricLoss};
pub use miner::{MinerBox, MinerKind, MinerSpec};
pub use reducer::{LossTerm, Reducer, TermIndices};
pub use regularizer::Regularizer;
pub use tuples::{Batch, Pairs, Triplets, Tuples};
