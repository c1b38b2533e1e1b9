//! Errors of the distributed layer.

use thiserror::Error;

/// What went wrong setting up or running a collective.
#[derive(Debug, Error)]
pub enum DistError {
    /// A torchrun-style environment variable is missing or malformed.
    #[error("distributed environment: {var}: {message}")]
    Env { var: &'static str, message: String },
    /// The rendezvous (TCPStore) or the Gloo group could not be set up.
    #[error("joining the process group at {addr} as rank {rank} of {world_size}: {message}")]
    Connect { addr: String, rank: usize, world_size: usize, message: String },
    /// A collective failed (a peer died, timed out, or shapes differ between ranks).
    #[error("{op} failed on rank {rank}: {message}")]
    Collective { op: &'static str, rank: usize, message: String },
    /// The tensors handed to a collective are not usable.
    #[error("{op}: {message}")]
    Input { op: &'static str, message: String },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, DistError>;
