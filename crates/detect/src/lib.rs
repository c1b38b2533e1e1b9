//! Open-set logo detection: find where logos are in a whole image, then say whose they are.
//!
//! Why two stages: the brands a user cares about change every week (a new bank, a new phishing
//! target), so the part that knows brands must be a gallery edit, not a training run. The first
//! stage is therefore a *class-agnostic* localiser — "this looks like a logo" — and the second is
//! the metric-learning embedding searched against the gallery, exactly as for tight crops. A brand
//! enrolled tomorrow is found in screenshots tomorrow, with no retraining.
//!
//! The localiser ([`localiser`]) is a CenterNet-style head (centre heat map, box size, sub-cell
//! offset at stride 8) on the frozen, ImageNet-pretrained EfficientNet-Lite0 trunk's stride-8/16/32
//! feature maps. Why CenterNet and a frozen trunk: no anchors or NMS-heavy training, one dense
//! output that is cheap on a CPU, and with the trunk frozen its features can be computed once per
//! training view and cached ([`train`]), so the head trains in minutes on two cores; the GPU path
//! runs the very same code. [`find`] glues localiser, embedding model and gallery into the answer
//! `proxima find` and `POST /v1/find` return; [`check`] turns that answer and the page's URL into
//! the phishing verdict of `proxima check` and `POST /v1/check`; [`draw`] frames and labels that answer on the image
//! (`proxima find --draw`, the screenshots of `proxima demo`).

pub mod check;
pub mod draw;
pub mod error;
pub mod export;
pub mod find;
pub mod letterbox;
pub mod localiser;
pub mod train;

pub use check::{CheckAnswer, check_answer, draw_check};
pub use draw::{draw_answer, draw_answer_with_truth};
pub use error::{DetectError, Result};
pub use find::{FindAnswer, FindOptions, Finder, RegionAnswer};
pub use letterbox::{Letterbox, letterbox};
pub use localiser::{
    Detection, LOCALISER_ENSEMBLE_FILE, Localiser, LocaliserCard, LocaliserConfig, LocaliserEnsembleCard, load_localiser, resolve_localiser_dir, save_localiser_ensemble,
};
pub use train::{FineTuneStep, TrainLocaliserOptions, TrainLocaliserReport, train_localiser};
