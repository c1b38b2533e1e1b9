//! Data-parallel training across processes and hosts on libtorch's own collective engine.
//!
//! Why this crate: metric-learning losses need the whole global batch (a positive for an anchor
//! may sit on another device), so data parallelism here is more than averaging gradients. The
//! pieces are the ones PyTorch users know — a torchrun-style environment ([`WorldEnv`]), a c10d
//! `TCPStore` rendezvous and a Gloo process group ([`ProcessGroup`]) — plus the two operations a
//! trainer needs: [`ProcessGroup::gather_with_grad`] (pytorch-metric-learning's
//! `DistributedLossWrapper`: every rank sees all embeddings, gradients flow to its own part) and
//! [`ProcessGroup::all_reduce_gradients`] (flattened buckets, as PyTorch DDP does).
//!
//! The collectives are libtorch's c10d (`TCPStore`, `ProcessGroupGloo`) reached through a small
//! C++ shim (src/shim.cpp): nothing here is a home-made protocol. Gloo runs on CPU tensors over
//! TCP, on one host (loopback) or several. CUDA tensors go to c10d's ProcessGroupNCCL when the
//! binary is a CUDA build ([`CudaCollectives::Nccl`], PyTorch's choice) or through host memory
//! over Gloo ([`CudaCollectives::HostStaged`], `PROXIMA_DIST_BACKEND=gloo`).

mod env;
mod error;
mod ffi;
mod group;

pub use env::WorldEnv;
pub use error::{DistError, Result};
pub use group::{CudaCollectives, DEFAULT_BUCKET_BYTES, GradientReduction, ProcessGroup};
