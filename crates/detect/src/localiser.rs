//! The class-agnostic logo localiser: a CenterNet-style head on EfficientNet-Lite0 feature maps.
//!
//! The head fuses the trunk's stride-32, -16 and -8 maps top-down (1×1 lateral convolutions,
//! nearest upsampling, one 3×3 mixing convolution per level) and predicts, per stride-8 cell,
//! five channels: a logo-centre logit, `ln(w/8)`, `ln(h/8)` and the centre's sub-cell offset.
//! Detections are the local maxima of the centre heat map (3×3 max-pool), decoded to boxes and
//! pruned by class-agnostic non-maximum suppression.
//!
//! A localiser directory holds `localiser.json` ([`LocaliserCard`]: configuration, fingerprint of
//! the weights, which scene images it trained on) and `weights.safetensors` (trunk and head).
//!
//! A localiser *ensemble* directory holds `localisers.json` instead ([`LocaliserEnsembleCard`]:
//! member directories). Why: two localisers trained alike but from other seeds box different
//! photos (docs/find.md: FlickrLogos-27 top-1 moved by five photos between two such runs), and
//! averaging their maps keeps the proposals both agree on. It loads as one [`Localiser`] whose
//! maps are the members' averaged, so `find`, `check`, `localiser eval` and the service take it
//! as they take any localiser.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proxima_eval::box_iou;
use proxima_models::{EfficientNetLite, Normalization};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn, nn::Module};

use crate::error::{DetectError, Result};
use crate::letterbox::{Letterbox, letterbox};

/// Output stride of the head.
pub const STRIDE: i64 = 8;
/// Prior probability of a logo centre, for the heat-map bias (CenterNet's −2.19).
const PRIOR: f64 = 0.1;

/// Localiser configuration (serde-tagged fields are validated when loaded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocaliserConfig {
    /// Side of the square network input in pixels (a multiple of 32).
    pub input_size: u32,
    /// Channels of the fused stride-16 level.
    pub width16: i64,
    /// Channels of the fused stride-8 level.
    pub width8: i64,
    /// At most this many detections per image.
    pub max_detections: usize,
    /// Drop detections whose centre score is below this.
    pub min_score: f32,
    /// Suppress a detection overlapping a better one by more than this IoU.
    pub nms_iou: f32,
}

impl Default for LocaliserConfig {
    fn default() -> Self {
        LocaliserConfig { input_size: 512, width16: 64, width8: 48, max_detections: 10, min_score: 0.05, nms_iou: 0.5 }
    }
}

impl LocaliserConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.input_size < 64 || self.input_size > 2048 || !self.input_size.is_multiple_of(32) {
            return Err(DetectError::Config(format!("input_size must be a multiple of 32 in 64..=2048, got {}", self.input_size)));
        }
        if self.width16 <= 0 || self.width8 <= 0 {
            return Err(DetectError::Config("head widths must be > 0".into()));
        }
        if self.max_detections == 0 {
            return Err(DetectError::Config("max_detections must be > 0".into()));
        }
        if !(0.0..1.0).contains(&self.min_score) || !(0.0..=1.0).contains(&self.nms_iou) {
            return Err(DetectError::Config(format!("min_score must be in [0, 1) and nms_iou in [0, 1], got {} and {}", self.min_score, self.nms_iou)));
        }
        Ok(())
    }
}

/// One detected logo region, in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `[x0, y0, x1, y1]`.
    pub bbox: [f32; 4],
    /// Centre-heat-map score in `[0, 1]`.
    pub score: f32,
}

#[derive(Debug)]
struct Head {
    lat32: nn::Conv2D,
    lat16: nn::Conv2D,
    gn16a: nn::GroupNorm,
    mix16: nn::Conv2D,
    gn16b: nn::GroupNorm,
    from16: nn::Conv2D,
    lat8: nn::Conv2D,
    gn8a: nn::GroupNorm,
    mix8: nn::Conv2D,
    gn8b: nn::GroupNorm,
    out: nn::Conv2D,
}

/// Groups of the head's GroupNorm layers (at most, and dividing the width).
fn groups(width: i64) -> i64 {
    (1..=8).rev().find(|g| width % g == 0).unwrap_or(1)
}

impl Head {
    fn new(p: &nn::Path, c: &LocaliserConfig) -> Self {
        let k1 = nn::ConvConfig::default();
        let k3 = nn::ConvConfig { padding: 1, ..Default::default() };
        // Small output weights (CenterNet): the first steps start from the prior, not from noise.
        let out = nn::conv2d(p / "out", c.width8, 5, 1, nn::ConvConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.01 }, ..Default::default() });
        // Heat-map bias at the logit of the prior, so training starts from "almost no logo".
        tch::no_grad(|| {
            if let Some(b) = &out.bs {
                let _ = b.narrow(0, 0, 1).shallow_clone().fill_((PRIOR / (1.0 - PRIOR)).ln());
            }
        });
        Head {
            lat32: nn::conv2d(p / "lat32", 320, c.width16, 1, k1),
            lat16: nn::conv2d(p / "lat16", 112, c.width16, 1, k1),
            gn16a: nn::group_norm(p / "gn16a", groups(c.width16), c.width16, Default::default()),
            mix16: nn::conv2d(p / "mix16", c.width16, c.width16, 3, k3),
            gn16b: nn::group_norm(p / "gn16b", groups(c.width16), c.width16, Default::default()),
            from16: nn::conv2d(p / "from16", c.width16, c.width8, 1, k1),
            lat8: nn::conv2d(p / "lat8", 40, c.width8, 1, k1),
            gn8a: nn::group_norm(p / "gn8a", groups(c.width8), c.width8, Default::default()),
            mix8: nn::conv2d(p / "mix8", c.width8, c.width8, 3, k3),
            gn8b: nn::group_norm(p / "gn8b", groups(c.width8), c.width8, Default::default()),
            out,
        }
    }

    /// # Shapes
    /// `f8`: `[N, 40, H, W]`, `f16`: `[N, 112, H/2, W/2]`, `f32`: `[N, 320, H/4, W/4]` → `[N, 5, H, W]`.
    fn forward(&self, f8: &Tensor, f16: &Tensor, f32: &Tensor) -> Tensor {
        let s16 = f16.size();
        let s8 = f8.size();
        let up32 = self.lat32.forward(f32).upsample_nearest2d([s16[2], s16[3]], None, None);
        // GroupNorm after every fusion: the trunk's un-activated block outputs are large and vary
        // by channel; without it the first Adam steps blow the head up and its ReLUs die.
        let p16 = (self.lat16.forward(f16) + up32).apply(&self.gn16a).relu().apply(&self.mix16).apply(&self.gn16b).relu();
        let up16 = self.from16.forward(&p16).upsample_nearest2d([s8[2], s8[3]], None, None);
        let p8 = (self.lat8.forward(f8) + up16).apply(&self.gn8a).relu().apply(&self.mix8).apply(&self.gn8b).relu();
        self.out.forward(&p8)
    }
}

/// Contents of `localiser.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocaliserCard {
    /// Format version.
    pub format: u32,
    pub config: LocaliserConfig,
    /// FNV-1a 64 of `weights.safetensors`.
    pub fingerprint: String,
    /// Scene images the head was trained on (so evaluations can leave them out).
    pub trained_on: BTreeSet<PathBuf>,
    /// Free-form training summary (epochs, losses, held-out AP).
    #[serde(default)]
    pub training: serde_json::Value,
}

const FORMAT: u32 = 2;

/// The localiser: frozen trunk + head.
#[derive(Debug)]
pub struct Localiser {
    vs: nn::VarStore,
    trunk: EfficientNetLite,
    head: Head,
    config: LocaliserConfig,
    norm: Normalization,
    /// The other members of an ensemble (their maps are averaged with this one's); empty for a
    /// trained localiser, and never themselves ensembles.
    others: Vec<Localiser>,
}

impl Localiser {
    /// A new localiser on `device` (random head; trunk random unless `pretrained` is given).
    pub fn new(config: LocaliserConfig, pretrained: Option<&Path>, device: Device) -> Result<Self> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let trunk = EfficientNetLite::lite0(&(vs.root() / "trunk"), None);
        let head = Head::new(&(vs.root() / "head"), &config);
        if let Some(path) = pretrained {
            let opts = proxima_models::ImportOptions { store_prefix: "trunk.".into(), file_prefix: String::new() };
            proxima_models::load_file(&vs, path, &opts)?;
        }
        let mut loc = Localiser { vs, trunk, head, config, norm: Normalization::HALF, others: Vec::new() };
        loc.freeze_trunk();
        Ok(loc)
    }

    fn freeze_trunk(&mut self) {
        for (name, t) in self.vs.variables() {
            if name.starts_with("trunk.") {
                let _ = t.set_requires_grad(false);
            }
        }
    }

    /// Draws the head's initial weights from `seed` (PyTorch's default convolution init,
    /// U(±1/√fan_in), the output layer N(0, 0.01²) with the heat-map bias at the prior's logit).
    ///
    /// Why not libtorch's generator: it is process-wide, so the head a training run starts from
    /// would depend on what else drew from it; seeded here, a run is reproducible, which is what
    /// lets a killed training resume to the result of an uninterrupted one.
    pub fn init_head(&self, seed: u64) {
        let mut rng = proxima_data::rng::Rng::from_parts(&[seed, 0x4ead]);
        let vars = self.variables();
        for (name, t) in &vars {
            let Some((layer, part)) = name.strip_prefix("head.").and_then(|r| r.split_once('.')) else { continue };
            if layer.starts_with("gn") {
                continue; // GroupNorm keeps its ones and zeros.
            }
            let weight = format!("head.{layer}.weight");
            let fan_in: i64 = vars.iter().find(|(n, _)| *n == weight).map_or(1, |(_, w)| w.size()[1..].iter().product());
            let n = t.numel();
            let values: Vec<f32> = match (layer, part) {
                ("out", "weight") => (0..n).map(|_| 0.01 * rng.normal()).collect(),
                ("out", _) => (0..n).map(|i| if i == 0 { (PRIOR / (1.0 - PRIOR)).ln() as f32 } else { 0.0 }).collect(),
                _ => {
                    let b = 1.0 / (fan_in as f32).sqrt();
                    (0..n).map(|_| rng.range_f32(-b, b)).collect()
                }
            };
            let src = Tensor::from_slice(&values).view(t.size().as_slice()).to_device(t.device()).to_kind(t.kind());
            tch::no_grad(|| t.shallow_clone().copy_(&src));
        }
    }

    /// Lets training move the trunk's blocks from `first` on (weights and BatchNorm affine
    /// parameters; the running statistics stay frozen). `first` ≥ the number of blocks keeps the
    /// whole trunk frozen.
    pub fn unfreeze_trunk_from(&mut self, first: usize) {
        for (name, t) in self.vs.variables() {
            let Some(rest) = name.strip_prefix("trunk._blocks.") else { continue };
            let block: Option<usize> = rest.split('.').next().and_then(|b| b.parse().ok());
            let buffer = name.ends_with("running_mean") || name.ends_with("running_var");
            if block.is_some_and(|b| b >= first) && !buffer {
                let _ = t.set_requires_grad(true);
            }
        }
    }

    /// Trunk feature maps for training with the blocks before `first` frozen (see
    /// [`EfficientNetLite::feature_maps_tuned`]); the later blocks carry gradients once
    /// [`Self::unfreeze_trunk_from`] was called with the same `first`.
    ///
    /// # Shapes
    /// As [`Self::trunk_features`].
    pub fn tuned_trunk_features(&self, xs: &Tensor, first: usize) -> [Tensor; 3] {
        self.trunk.feature_maps_tuned(xs, first)
    }

    /// The configuration.
    pub fn config(&self) -> &LocaliserConfig {
        &self.config
    }
    /// The input normalisation.
    pub fn normalization(&self) -> Normalization {
        self.norm
    }
    /// The device.
    pub fn device(&self) -> Device {
        self.vs.device()
    }
    /// Networks whose maps are averaged: 1, or an ensemble's member count.
    pub fn members(&self) -> usize {
        1 + self.others.len()
    }
    /// The variables (the trunk's are frozen: the optimiser only moves the head); of the first
    /// member for an ensemble.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    /// Every variable by name (trunk and head).
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The frozen trunk's feature maps (no gradient; BatchNorm in eval mode).
    ///
    /// # Shapes
    /// `xs`: `[N, 3, S, S]` → `[N, 40, S/8, S/8]`, `[N, 112, S/16, S/16]`, `[N, 320, S/32, S/32]`.
    pub fn trunk_features(&self, xs: &Tensor) -> [Tensor; 3] {
        self.trunk.feature_maps_frozen(xs)
    }

    /// [`Self::trunk_features`] with BatchNorm as its own op (not folded into the convolutions):
    /// the graph that export traces, for runtimes that fuse it themselves.
    ///
    /// # Shapes
    /// As [`Self::trunk_features`].
    pub fn trunk_features_unfolded(&self, xs: &Tensor) -> [Tensor; 3] {
        tch::no_grad(|| self.trunk.feature_maps(xs, false))
    }

    /// Head output from trunk feature maps.
    ///
    /// # Shapes
    /// → `[N, 5, S/8, S/8]`: centre logit, `ln(w/8)`, `ln(h/8)`, offset x, offset y; contiguous
    /// (the channels-last trunk's layout stops here).
    pub fn head_forward(&self, f8: &Tensor, f16: &Tensor, f32: &Tensor) -> Tensor {
        self.head.forward(f8, f16, f32).contiguous()
    }

    /// Detects logos in one image (boxes in image pixels, best first).
    pub fn detect(&self, img: &image::RgbImage) -> Result<(Vec<Detection>, Letterbox)> {
        let mut out = self.detect_batch(std::slice::from_ref(img))?;
        Ok(out.pop().expect("one image"))
    }

    /// Detects logos in several images at once.
    pub fn detect_batch(&self, imgs: &[image::RgbImage]) -> Result<Vec<(Vec<Detection>, Letterbox)>> {
        if imgs.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.config.input_size as usize;
        let mut buf = vec![0f32; imgs.len() * 3 * s * s];
        let mut boxes = Vec::with_capacity(imgs.len());
        for (i, img) in imgs.iter().enumerate() {
            if img.width() == 0 || img.height() == 0 {
                return Err(DetectError::Input("the image is empty (0 pixels)".into()));
            }
            boxes.push(letterbox(img, s as u32, &self.norm, &mut buf[i * 3 * s * s..(i + 1) * 3 * s * s]));
        }
        let xs = Tensor::from_slice(&buf).view([imgs.len() as i64, 3, s as i64, s as i64]).to_device(self.device());
        let out = tch::no_grad(|| self.maps(&xs));
        let out = out.to_device(Device::Cpu).to_kind(Kind::Float);
        let mut res = Vec::with_capacity(imgs.len());
        for (i, lb) in boxes.into_iter().enumerate() {
            let dets = decode(&out.get(i as i64), &self.config)?;
            let img = &imgs[i];
            let (w, h) = (img.width() as f32, img.height() as f32);
            let dets = dets
                .into_iter()
                .filter_map(|d| {
                    let b = lb.to_image(d.bbox);
                    let b = [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)];
                    (b[2] - b[0] >= 2.0 && b[3] - b[1] >= 2.0).then_some(Detection { bbox: b, score: d.score })
                })
                .collect();
            res.push((dets, lb));
        }
        Ok(res)
    }

    /// The maps of a letterboxed batch; for an ensemble the members' averaged: the centre
    /// probabilities averaged (and returned as the logit of that mean, so [`decode`] reads it as
    /// any map), box sizes (`ln` sides) and offsets averaged.
    ///
    /// # Shapes
    /// `xs`: `[N, 3, S, S]` → `[N, 5, S/8, S/8]`.
    fn maps(&self, xs: &Tensor) -> Tensor {
        let one = |l: &Localiser| {
            let [f8, f16, f32] = l.trunk_features(xs);
            l.head_forward(&f8, &f16, &f32).to_kind(Kind::Float)
        };
        if self.others.is_empty() {
            return one(self);
        }
        let maps: Vec<Tensor> = std::iter::once(self).chain(&self.others).map(one).collect();
        let all = Tensor::stack(&maps, 0);
        let prob = all.narrow(2, 0, 1).sigmoid().mean_dim(&[0i64][..], false, Kind::Float);
        let rest = all.narrow(2, 1, 4).mean_dim(&[0i64][..], false, Kind::Float);
        Tensor::cat(&[prob.clamp(1e-7, 1.0 - 1e-7).logit(None), rest], 1)
    }

    /// Writes the localiser directory (`localiser.json` + `weights.safetensors`), atomically per file.
    pub fn save(&self, dir: &Path, trained_on: BTreeSet<PathBuf>, training: serde_json::Value) -> Result<LocaliserCard> {
        if !self.others.is_empty() {
            return Err(DetectError::Input("an ensemble of localisers is saved as its members (`proxima localiser ensemble`), not as one network".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| DetectError::io(dir, e))?;
        let weights = dir.join("weights.safetensors");
        proxima_models::tensor_file::save(&weights, &self.variables(), &serde_json::json!({"kind": "proxima-localiser"}))?;
        let bytes = std::fs::read(&weights).map_err(|e| DetectError::io(&weights, e))?;
        let card = LocaliserCard { format: FORMAT, config: self.config.clone(), fingerprint: proxima_models::model_dir::fingerprint(&bytes), trained_on, training };
        let text = serde_json::to_string_pretty(&card).expect("card serialises");
        proxima_models::tensor_file::write_atomic(&dir.join("localiser.json"), text.as_bytes())?;
        Ok(card)
    }
}

/// Resolves a localiser directory (or ensemble): the folder itself or its `localiser/` child.
pub fn resolve_localiser_dir(path: &Path) -> Result<PathBuf> {
    for c in [path.to_path_buf(), path.join("localiser"), path.join("model").join("localiser")] {
        if c.join("localiser.json").is_file() || c.join(LOCALISER_ENSEMBLE_FILE).is_file() {
            return Ok(c);
        }
    }
    Err(DetectError::Artifact {
        path: path.to_path_buf(),
        message: format!("not a localiser directory (no localiser.json or {LOCALISER_ENSEMBLE_FILE} in it or in its localiser/ folder)"),
    })
}

/// The file that makes a directory an ensemble of localisers.
pub const LOCALISER_ENSEMBLE_FILE: &str = "localisers.json";

/// Format of `localisers.json`.
const ENSEMBLE_FORMAT: u32 = 1;

/// Contents of `localisers.json`: the member localiser directories, relative to it.
pub type LocaliserEnsembleCard = proxima_models::EnsembleCard;

/// Loads a localiser directory, or an ensemble of them, onto `device`, checking the weights'
/// fingerprints. An ensemble's card is its first member's configuration with the union of the
/// members' training scenes and a fingerprint of the members' fingerprints in order.
pub fn load_localiser(path: &Path, device: Device) -> Result<(Localiser, LocaliserCard)> {
    let dir = resolve_localiser_dir(path)?;
    let ensemble = dir.join(LOCALISER_ENSEMBLE_FILE);
    if ensemble.is_file() {
        let card = LocaliserEnsembleCard::read(&ensemble, ENSEMBLE_FORMAT, "localiser ensemble")?;
        let members: Vec<PathBuf> = card.members.iter().map(|m| dir.join(m)).collect();
        return assemble(&members, device).map_err(|e| DetectError::Artifact { path: ensemble, message: e.to_string() });
    }
    load_single(&dir, device)
}

/// Loads the members (each a single localiser) and combines them: at least two, of one input size.
fn assemble(members: &[PathBuf], device: Device) -> Result<(Localiser, LocaliserCard)> {
    if members.len() < 2 {
        return Err(DetectError::Config(format!("an ensemble of localisers needs at least 2 members, got {}", members.len())));
    }
    let mut loaded = Vec::with_capacity(members.len());
    for m in members {
        let dir = resolve_localiser_dir(m)?;
        if dir.join(LOCALISER_ENSEMBLE_FILE).is_file() {
            return Err(DetectError::Config(format!("{} is itself an ensemble of localisers; list its members instead", m.display())));
        }
        loaded.push(load_single(&dir, device)?);
    }
    let size = loaded[0].1.config.input_size;
    if let Some((m, (_, card))) = members.iter().zip(&loaded).find(|(_, (_, c))| c.config.input_size != size) {
        return Err(DetectError::Config(format!(
            "{} takes {} px input but {} takes {size} px: the members of an ensemble of localisers share their input size",
            m.display(),
            card.config.input_size,
            members[0].display()
        )));
    }
    let fingerprints: Vec<&str> = loaded.iter().map(|(_, c)| c.fingerprint.as_str()).collect();
    let fingerprint = proxima_models::model_dir::fingerprint(format!("localisers:{}", fingerprints.join(",")).as_bytes());
    let training = serde_json::json!({ "ensemble_of": fingerprints });
    let trained_on: BTreeSet<PathBuf> = loaded.iter().flat_map(|(_, c)| c.trained_on.iter().cloned()).collect();
    let mut iter = loaded.into_iter();
    let (mut first, first_card) = iter.next().expect("two members");
    first.others = iter.map(|(l, _)| l).collect();
    let card = LocaliserCard { format: FORMAT, config: first_card.config, fingerprint, trained_on, training };
    Ok((first, card))
}

/// Writes an ensemble directory `out` of the localiser directories `members` (stored relative
/// to `out`), after loading them through those paths to check they fit together; returns the
/// loaded ensemble. A refused ensemble leaves no folder behind that it created.
pub fn save_localiser_ensemble(members: &[PathBuf], out: &Path, device: Device) -> Result<(Localiser, LocaliserCard)> {
    let taken = [("localiser.json", "a localiser (localiser.json)"), (LOCALISER_ENSEMBLE_FILE, "a localiser ensemble (localisers.json)")];
    let list = proxima_models::model_dir::MemberList { out, file: LOCALISER_ENSEMBLE_FILE, format: ENSEMBLE_FORMAT, taken: &taken };
    list.write(members, resolve_localiser_dir, |paths| assemble(paths, device))
}

/// Loads one trained localiser's directory (`localiser.json` + `weights.safetensors`).
fn load_single(dir: &Path, device: Device) -> Result<(Localiser, LocaliserCard)> {
    let card_path = dir.join("localiser.json");
    let text = std::fs::read_to_string(&card_path).map_err(|e| DetectError::io(&card_path, e))?;
    let card: LocaliserCard =
        serde_json::from_str(&text).map_err(|e| DetectError::Artifact { path: card_path.clone(), message: format!("invalid localiser card: {e}") })?;
    if card.format != FORMAT {
        return Err(DetectError::Artifact { path: card_path, message: format!("localiser format {} is not supported (expected {FORMAT})", card.format) });
    }
    let weights = dir.join("weights.safetensors");
    let bytes = std::fs::read(&weights).map_err(|e| DetectError::io(&weights, e))?;
    if proxima_models::model_dir::fingerprint(&bytes) != card.fingerprint {
        return Err(DetectError::Artifact { path: weights, message: "the weights do not match localiser.json's fingerprint (file changed or corrupted)".into() });
    }
    let loc = Localiser::new(card.config.clone(), None, device)?;
    let (tensors, _) = proxima_models::tensor_file::load(&weights)?;
    proxima_models::tensor_file::copy_into(&loc.variables(), &tensors, "").map_err(|message| DetectError::Artifact { path: weights.clone(), message })?;
    Ok((loc, card))
}

/// Decodes one head output into boxes in input pixels, best first, after NMS.
///
/// # Shapes
/// `out`: `[5, H, W]` (CPU, float).
pub fn decode(out: &Tensor, cfg: &LocaliserConfig) -> Result<Vec<Detection>> {
    let size = out.size();
    let (h, w) = (size[1], size[2]);
    let heat = out.get(0).sigmoid();
    let peaks = heat.unsqueeze(0).max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false).squeeze_dim(0);
    let keep = heat.eq_tensor(&peaks).to_kind(Kind::Float);
    let scores = (&heat * keep).flatten(0, -1);
    let k = (cfg.max_detections as i64 * 4).min(h * w);
    let (top, idx) = scores.topk(k, 0, true, true);
    let top: Vec<f32> = Vec::try_from(top)?;
    let idx: Vec<i64> = Vec::try_from(idx)?;
    let flat = out.view([5, h * w]);
    let fields: Vec<Vec<f32>> = (1..5).map(|c| Vec::<f32>::try_from(flat.get(c).index_select(0, &Tensor::from_slice(&idx)))).collect::<std::result::Result<_, _>>()?;
    let mut cands = Vec::new();
    for (j, (&s, &i)) in top.iter().zip(&idx).enumerate() {
        if !s.is_finite() {
            return Err(DetectError::Input("the localiser produced a non-finite score".into()));
        }
        if s < cfg.min_score {
            break;
        }
        let (cy, cx) = ((i / w) as f32, (i % w) as f32);
        let st = STRIDE as f32;
        let bw = fields[0][j].clamp(-4.0, 8.0).exp() * st;
        let bh = fields[1][j].clamp(-4.0, 8.0).exp() * st;
        let x = (cx + fields[2][j]) * st;
        let y = (cy + fields[3][j]) * st;
        cands.push(Detection { bbox: [x - bw / 2.0, y - bh / 2.0, x + bw / 2.0, y + bh / 2.0], score: s });
    }
    Ok(nms(cands, cfg.nms_iou, cfg.max_detections))
}

/// Greedy class-agnostic non-maximum suppression of detections sorted best first.
pub fn nms(dets: Vec<Detection>, iou: f32, max: usize) -> Vec<Detection> {
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| box_iou(&k.bbox, &d.bbox) <= iou) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small random localiser whose output layer is perturbed, so its maps vary from cell to cell.
    fn varied(seed: u64) -> Localiser {
        let loc = Localiser::new(LocaliserConfig { input_size: 64, width16: 8, width8: 8, ..Default::default() }, None, Device::Cpu).unwrap();
        loc.init_head(seed);
        tch::manual_seed(seed as i64);
        for (name, t) in loc.variables() {
            if name.starts_with("head.out.") {
                tch::no_grad(|| t.shallow_clone().copy_(&(&t + Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.5)));
            }
        }
        loc
    }

    #[test]
    fn an_ensembles_maps_are_its_members_averaged() {
        let (a, b) = (varied(1), varied(2));
        let xs = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let (ma, mb) = tch::no_grad(|| (a.maps(&xs), b.maps(&xs)));
        let mut ens = a;
        ens.others.push(b);
        assert_eq!(ens.members(), 2);
        let m = tch::no_grad(|| ens.maps(&xs));
        assert_eq!(m.size(), ma.size());
        let heat = (ma.narrow(1, 0, 1).sigmoid() + mb.narrow(1, 0, 1).sigmoid()) / 2.0;
        let rest = (ma.narrow(1, 1, 4) + mb.narrow(1, 1, 4)) / 2.0;
        let diff = |x: &Tensor, y: &Tensor| (x - y).abs().max().double_value(&[]);
        assert!(diff(&m.narrow(1, 0, 1).sigmoid(), &heat) < 1e-5 && diff(&m.narrow(1, 1, 4), &rest) < 1e-5);
        assert!(diff(&ma, &mb) > 1e-2, "the members differ, so the average is not one of them");
    }

    #[test]
    fn decode_finds_a_planted_peak_with_its_box() {
        let cfg = LocaliserConfig { max_detections: 3, min_score: 0.3, ..Default::default() };
        let out = Tensor::full([5, 8, 8], -10.0, (Kind::Float, Device::Cpu));
        // Centre at cell (x=2, y=5) + offset (0.5, 0.25), size 32×16 px.
        let _ = out.get(0).get(5).get(2).fill_(4.0);
        let _ = out.get(1).get(5).get(2).fill_((32.0f64 / 8.0).ln());
        let _ = out.get(2).get(5).get(2).fill_((16.0f64 / 8.0).ln());
        let _ = out.get(3).get(5).get(2).fill_(0.5);
        let _ = out.get(4).get(5).get(2).fill_(0.25);
        let dets = decode(&out, &cfg).unwrap();
        assert_eq!(dets.len(), 1);
        let b = dets[0].bbox;
        let want = [20.0 - 16.0, 42.0 - 8.0, 20.0 + 16.0, 42.0 + 8.0];
        for k in 0..4 {
            assert!((b[k] - want[k]).abs() < 1e-3, "{b:?} vs {want:?}");
        }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let d = |b: [f32; 4], s| Detection { bbox: b, score: s };
        let kept = nms(vec![d([0.0, 0.0, 10.0, 10.0], 0.9), d([1.0, 0.0, 10.0, 10.0], 0.8), d([20.0, 0.0, 30.0, 10.0], 0.7)], 0.5, 10);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1].score, 0.7);
        assert_eq!(nms(kept, 0.5, 1).len(), 1);
    }

    #[test]
    fn config_is_validated() {
        assert!(LocaliserConfig { input_size: 500, ..Default::default() }.validate().is_err());
        assert!(LocaliserConfig { min_score: 1.5, ..Default::default() }.validate().is_err());
        assert!(LocaliserConfig::default().validate().is_ok());
    }
}
