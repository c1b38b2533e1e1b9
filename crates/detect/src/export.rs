//! Export of a localiser directory to TorchScript (and, through `proxima export`, ONNX).
//!
//! Only the network is exported: images in, the head's raw maps out. Letterboxing the page and
//! decoding the maps into boxes (peaks of the centre heat map, box sizes, non-maximum suppression)
//! are a few lines in any language and are spelled out in the card, with the thresholds this
//! localiser was saved with, so a runtime elsewhere can reproduce `proxima find`'s boxes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use crate::error::{DetectError, Result};
use crate::localiser::{Localiser, LocaliserCard, STRIDE};

/// What an exported localiser says about itself (its `proxima.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaliserExportCard {
    /// Always `proxima-localiser-export`.
    pub format: String,
    /// Always 1 for files written by this version.
    pub version: u32,
    /// The localiser directory's fingerprint.
    pub localiser_fingerprint: String,
    /// The square input side.
    pub image_size: u32,
    /// Output stride of the maps.
    pub stride: i64,
    /// Per-channel mean subtracted inside the graph.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided inside the graph.
    pub std: [f32; 3],
    /// How to prepare the input.
    pub letterbox: String,
    /// How to turn the maps into boxes.
    pub decode: String,
    /// Centre score below which peaks are dropped.
    pub min_score: f32,
    /// IoU above which a lower-scored box is suppressed.
    pub nms_iou: f32,
    /// At most this many boxes per image.
    pub max_detections: usize,
    /// The Proxima version that wrote the file.
    pub proxima_version: String,
    /// One line for people (ONNX `doc_string`).
    pub summary: String,
}

impl LocaliserExportCard {
    /// The card of `localiser` (loaded from the directory whose card is `card`).
    pub fn new(localiser: &Localiser, card: &LocaliserCard) -> Self {
        let c = localiser.config();
        let n = localiser.normalization();
        let s = c.input_size;
        LocaliserExportCard {
            format: "proxima-localiser-export".into(),
            version: 1,
            localiser_fingerprint: card.fingerprint.clone(),
            image_size: s,
            stride: STRIDE,
            mean: n.mean.map(|x| x as f32),
            std: n.std.map(|x| x as f32),
            letterbox: format!(
                "RGB in [0, 1]; scale = min({s} / max(width, height), 2); resize to round(width*scale) x round(height*scale) (triangle filter); \
                 place at the top-left of a {s}x{s} canvas filled with the mean colour; a box maps back by dividing by scale"
            ),
            decode: format!(
                "maps [N, 5, {s}/8, {s}/8]: channel 0 centre logit, 1 ln(w/8), 2 ln(h/8), 3 offset x, 4 offset y. \
                 score = sigmoid(ch0); keep cells equal to their 3x3 max-pool (peaks) with score >= min_score; \
                 centre = ((col + ch3) * 8, (row + ch4) * 8); size = (exp(clamp(ch1, -4, 8)) * 8, exp(clamp(ch2, -4, 8)) * 8); \
                 greedy non-maximum suppression at nms_iou, best first, at most max_detections"
            ),
            min_score: c.min_score,
            nms_iou: c.nms_iou,
            max_detections: c.max_detections,
            proxima_version: env!("CARGO_PKG_VERSION").into(),
            summary: format!("Proxima logo localiser: images float32 [N, 3, {s}, {s}] RGB in [0, 1], letterboxed -> maps float32 [N, 5, {}, {}]", s / 8, s / 8),
        }
    }
}

/// Traces `localiser` (CPU) into a TorchScript module: `[N, 3, S, S]` in [0, 1] → `[N, 5, S/8, S/8]`,
/// normalisation included, checked against the localiser on a batch of 3 before it is written to
/// `out` (atomically) with its card.
pub fn save_localiser_torchscript(localiser: &Localiser, card: &LocaliserCard, out: &Path) -> Result<LocaliserExportCard> {
    if localiser.members() > 1 {
        return Err(DetectError::Input(format!("an ensemble of {} localisers cannot be exported as one network; export one of its members", localiser.members())));
    }
    if localiser.device() != Device::Cpu {
        return Err(DetectError::Input("export traces on the CPU; load the localiser with Device::Cpu".into()));
    }
    for (_, t) in localiser.var_store().variables() {
        let _ = t.set_requires_grad(false);
    }
    let ecard = LocaliserExportCard::new(localiser, card);
    let s = ecard.image_size as i64;
    let mean = Tensor::from_slice(&ecard.mean).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&ecard.std).view([1, 3, 1, 1]);
    let forward = |x: &Tensor| {
        let [f8, f16, f32] = localiser.trunk_features_unfolded(&((x - &mean) / &std));
        localiser.head_forward(&f8, &f16, &f32)
    };
    let example = Tensor::rand([2, 3, s, s], (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| CModule::create_by_tracing("ProximaLocaliser", "forward", &[example], &mut |inputs| vec![forward(&inputs[0])]))?;
    let x = Tensor::rand([3, 3, s, s], (Kind::Float, Device::Cpu));
    let (want, got) = tch::no_grad(|| (forward(&x), module.forward_ts(&[&x])));
    let diff = (&want - &got?).abs().max().double_value(&[]);
    if diff.is_nan() || diff > 1e-4 {
        return Err(DetectError::Input(format!("the traced localiser differs from the localiser by {diff:e} on a batch of 3")));
    }
    proxima_models::export::save_module(&module, &serde_json::to_vec_pretty(&ecard).expect("serialisable"), out)?;
    Ok(ecard)
}
