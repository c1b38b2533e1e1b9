//! The plumbing every Proxima crate shares, with no dependency but `std`.
//!
//! Why a crate of its own: the pure-Rust crates (`proxima-eval`, `proxima-index`,
//! `proxima-report`, `proxima-data`) and the libtorch ones all need the same few primitives, and
//! the lowest crate they have in common would otherwise be none. Keeping them here gives one
//! definition of each (one atomic writer, one SplitMix64, one FNV-1a) without making a light
//! crate depend on a heavy one.
//!
//! * [`write_atomic`] — replace a file so that a crash leaves the old or the new contents,
//!   never a torn file, and the new contents are on disk when it returns.
//! * [`SplitMix64`], [`mix64`] — a tiny, version-stable, seedable generator and its finaliser.
//! * [`fnv1a64`] — FNV-1a 64, for fingerprints and seeds derived from names.
//! * [`box_iou`] — intersection over union of two boxes.
//! * [`testing::in_own_process`] — one test of a test binary in a process of its own.

mod atomic;
mod geometry;
mod rng;
pub mod testing;

pub use atomic::{FileError, write_atomic};
pub use geometry::box_iou;
pub use rng::{SplitMix64, fnv1a64, mix64};
