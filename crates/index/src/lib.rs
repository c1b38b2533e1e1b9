//! Brand galleries for open-set logo identification, in pure Rust (no libtorch).
//!
//! Why: Proxima's flagship use is spotting brand impersonation — a logo cropped from a
//! web page is compared against the logos of known brands, and the answer is either a
//! brand or a calibrated "unknown". That needs a persistent, model-bound store of
//! enrolled embeddings (the [`Gallery`]), fast search over it (exact for small
//! galleries, HNSW for large ones), and a threshold chosen for a target false-match rate.
//! It is torn out of the training stack so a scanning service can load a gallery and
//! answer queries with nothing but embeddings in hand.
//!
//! Modules:
//! * [`gallery`] — enrolment (`add`, `remove`, `list`), `search` (rows), `identify` (brands + decision).
//! * [`brand_name`] — the one rule for brand names (length, characters, NFC), wherever a brand enters.
//! * [`background`] — the reserved "(background)" brand of non-logo examples: a query nearer to it
//!   than to every brand is unknown, never answered as a brand.
//! * [`format`](mod@format) — the versioned, checksummed, atomically written file format.
//! * [`backend`] — exact (`proxima_eval::knn`) and HNSW (`hnsw_rs`) search, one enum.
//! * [`calibrate`] — thresholds for a target FMR (`proxima_eval::threshold_for_fmr`).
//! * [`bench`](mod@bench) — recall@10 and queries/s of HNSW vs exact, for `proxima perf`.
//! * [`error`] — typed errors; file errors name their path.

pub mod backend;
pub mod background;
pub mod bench;
pub mod brand_name;
pub mod calibrate;
pub mod error;
pub mod format;
pub mod gallery;

pub use backend::{BackendConfig, HnswConfig, HnswIndex, SearchIndex};
pub use background::{BACKGROUND_BRAND, Ranking, is_background};
pub use bench::{BENCH_K, IndexBenchReport, bench_index, bench_index_with, clustered_data};
pub use calibrate::{Calibration, CalibrationScores, ImpostorScores, calibrate_scores, calibration_scores};
pub use error::{IndexError, Result};
pub use format::{FORMAT_VERSION, Header, MAGIC};
pub use gallery::{BrandCount, BrandMatch, Decision, Gallery, Identification, RowHit, cosine};
pub use proxima_domain::Domain;
pub use proxima_eval::Metric;
