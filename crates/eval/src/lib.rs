//! Evaluation of metric-learning embeddings, in pure Rust (no libtorch).
//!
//! Why a separate, torch-free crate: evaluation must run anywhere embeddings can be
//! loaded (CI machines, analysis scripts) and must be *trusted*: its retrieval metrics
//! reproduce pytorch-metric-learning 2.9's `AccuracyCalculator` and its NMI/AMI reproduce
//! scikit-learn, checked case by case against their recorded outputs.
//!
//! Modules:
//! * [`knn`] — exact k-NN (L2, squared L2, cosine, dot) by blocked GEMM, the oracle for
//!   approximate indexes.
//! * [`retrieval`] — P@1, R-Precision, MAP@R, MAP, MRR, precision/recall@k, per class.
//! * [`clustering`] — seeded k-means, NMI, AMI.
//! * [`verification`] — ROC, AUC, EER, FNMR@FMR, thresholds for a target FMR.
//! * [`pairs`] — the genuine and impostor pair scores verification is computed on (exhaustive
//!   or seeded-sampled).
//! * [`classify`] — nearest-class classification with open-set rejection.
//! * [`pca`] — 2-D projection for plots.
//! * [`perf`] — the benchmark entry point.

pub mod classify;
pub mod clustering;
pub mod detection;
pub mod error;
pub mod knn;
pub mod matrix;
pub mod pairs;
pub mod pca;
pub mod perf;
pub mod retrieval;
pub mod verification;

pub use classify::{Classifier, OpenSetCounts, OpenSetMetrics, Prediction, classify, open_set_metrics};
pub use clustering::{ClusteringMetrics, KMeans, ami, evaluate_clustering, kmeans, nmi};
pub use detection::{ApResult, AtFalseAlarm, IdentificationReport, ImageAnswer, ScoredBox, average_precision, box_iou, identification_report};
pub use error::{EvalError, Result};
pub use knn::{CandidateUnit, KnnResult, KnnStats, Metric, knn, knn_with_stats};
pub use matrix::Embeddings;
pub use pairs::{MAX_PAIRS, PairInfo, PairScores, pair_scores};
pub use pca::pca_2d;
pub use perf::{PerfReport, perf_accuracy, perf_accuracy_runs};
pub use retrieval::{
    AtK, ClassRetrieval, CoreMetrics, KNN_BUDGET_BYTES, KSpec, Reference, RetrievalConfig, RetrievalMetrics, evaluate_retrieval, evaluate_retrieval_chunked,
    metrics_from_knn, resolve_k,
};
pub use verification::{
    FnmrAtFmr, RocPoint, ScoreKind, VerificationReport, auc, equal_error_rate, rates_at_threshold, roc_curve, threshold_for_fmr, verification_report,
};
