//! Data side of Proxima's metric-learning training, in pure Rust (no libtorch).
//!
//! Why a separate crate: everything here (scanning, decoding, importing, synthesising, splitting,
//! sampling, augmenting, batching) is plain CPU work that must be reproducible by seed and
//! testable without a GPU or a Torch install; the training crates consume its `f32` batches.
//!
//! Modules, in pipeline order: [`dataset`] (what images exist) → [`decode`] (robust RGB8
//! decoding) → [`check`] (audit a tree) → [`flickr`] / [`synth`] (produce trees; [`scenes_synth`] renders whole scenes with boxes, [`scene`] reads them) → [`split`]
//! (class-disjoint splits) → [`sampler`] (M-per-class batches) → [`augment`] (seeded
//! transforms to CHW `f32`) → [`loader`] (parallel, prefetching batches); [`views`] renders an enrolled logo small and on a dark
//! background for galleries.

pub mod augment;
pub mod check;
pub mod composites;
pub mod dataset;
pub mod decode;
pub mod error;
pub mod flickr;
pub mod loader;
pub mod raster;
pub mod rng;
pub mod sampler;
pub mod scene;
pub mod scene_crops;
pub mod scenes_synth;
pub mod split;
pub mod synth;
pub mod views;

pub use augment::{Normalize, Pipeline, PipelineConfig, Transform};
pub use check::{CheckReport, check};
pub use composites::{CompositeMark, CompositeOptions, CompositeReport, composite_into_photos};
pub use dataset::{BBox, Dataset, Issue, Sample, ScanOptions, ScanReport};
pub use decode::{AlphaMode, DecodeOptions, decode_bytes, decode_file};
pub use error::{DataError, Result};
pub use flickr::{ImportOptions, ImportReport, import_flickrlogos27};
pub use loader::{Batch, BatchIter, BenchResult, Loader, LoaderConfig, bench_loader};
pub use sampler::{MPerClassConfig, MPerClassSampler, SamplerState, SmallClassPolicy, TripletSampler};
pub use scene::{Scene, SceneBox, read_scenes, write_scenes};
pub use scene_crops::{CropOptions, CropReport, cut_scene_crops};
pub use scenes_synth::{
    BrandPart, Icon, SceneOptions, SceneReport, ScreenMark, load_icons, render_icon, render_icon_crops, render_screenshot, synth_scenes, synth_scenes_with,
};
pub use split::{QueryGallery, Split, SplitConfig, kfold_class_disjoint, make_split, query_gallery_split};
pub use synth::{SynthMark, SynthOptions, SynthReport, synth};
pub use views::EnrolView;
