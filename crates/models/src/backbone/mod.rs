//! Image backbones: the convolutional trunks an embedding model is built on.
//!
//! Parameter names follow the reference implementations exactly (torchvision for ResNet, the
//! lukemelas `EfficientNet` layout for EfficientNet-Lite0) because pretrained weights are matched
//! by name: a backbone built under a `tch::nn::Path` has the same variable names as the PyTorch
//! `state_dict()` keys, so importing is a name lookup and not a hand-maintained table.
//!
//! `tch::vision::resnet` has the same names but is not reused: its BatchNorm weights start at
//! U(0, 1) and its convolutions at Kaiming-uniform (torchvision uses 1 and Kaiming-normal fan-out),
//! which matters when training from scratch, and it does not expose the trunk and the ImageNet
//! head separately.

pub mod efficientnet;
pub mod resnet;
pub mod small_cnn;

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use crate::error::{ModelError, Result};

pub use efficientnet::EfficientNetLite;
pub use resnet::{ResNet, ResNetDepth};
pub use small_cnn::SmallCnn;

/// A trunk that maps images to pooled features, with an optional ImageNet classifier.
pub trait Backbone: std::fmt::Debug + Send {
    /// Pooled trunk output.
    ///
    /// # Shapes
    /// `xs`: `[N, 3, H, W]` → `[N, feature_dim]`.
    fn features(&self, xs: &Tensor, train: bool) -> Tensor;

    /// The classifier applied to pooled features; None when built without one.
    ///
    /// # Shapes
    /// `features`: `[N, feature_dim]` → `[N, num_classes]`.
    fn classify(&self, features: &Tensor, train: bool) -> Option<Tensor>;

    /// Class logits of images; None when built without a classifier.
    ///
    /// # Shapes
    /// `xs`: `[N, 3, H, W]` → `[N, num_classes]`.
    fn logits(&self, xs: &Tensor, train: bool) -> Option<Tensor> {
        self.classify(&self.features(xs, train), train)
    }

    /// Width of the pooled features.
    fn feature_dim(&self) -> i64;

    /// Number of classes of the classifier, if there is one.
    fn num_classes(&self) -> Option<i64>;
}

/// Per-channel input normalisation `(x − mean) / std` of images scaled to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Per-channel mean (RGB).
    pub mean: [f64; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f64; 3],
}

impl Normalization {
    /// torchvision's ImageNet statistics (ResNet weights).
    pub const IMAGENET: Normalization = Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    /// Maps [0, 1] to [−1, 1] (EfficientNet-Lite weights).
    pub const HALF: Normalization = Normalization { mean: [0.5; 3], std: [0.5; 3] };

    /// Normalises a batch of images with values in [0, 1].
    ///
    /// # Shapes
    /// `xs`: `[N, 3, H, W]` → `[N, 3, H, W]`.
    pub fn apply(&self, xs: &Tensor) -> Tensor {
        let opts = (xs.kind(), xs.device());
        let mean = Tensor::from_slice(&self.mean).to_kind(opts.0).to_device(opts.1).view([1, 3, 1, 1]);
        let std = Tensor::from_slice(&self.std).to_kind(opts.0).to_device(opts.1).view([1, 3, 1, 1]);
        (xs - mean) / std
    }
}

fn default_widths() -> Vec<i64> {
    vec![16, 32, 64]
}

/// Which backbone to build, as a tagged configuration (`type = "resnet18"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackboneSpec {
    // Empty struct variants, not unit variants: serde ignores unknown fields of unit variants
    // in internally tagged enums even with deny_unknown_fields.
    /// torchvision ResNet-18 (512 features).
    Resnet18 {},
    /// torchvision ResNet-34 (512 features).
    Resnet34 {},
    /// torchvision ResNet-50 (2048 features).
    Resnet50 {},
    /// EfficientNet-Lite0 (1280 features).
    EfficientnetLite0 {},
    /// A small CNN for fast tests: 3×3 conv–BN–ReLU–max-pool stages of the given widths.
    SmallCnn {
        #[serde(default = "default_widths")]
        widths: Vec<i64>,
    },
}

impl BackboneSpec {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if let BackboneSpec::SmallCnn { widths } = self
            && (widths.is_empty() || widths.iter().any(|&w| w <= 0))
        {
            return Err(ModelError::Config(format!("small_cnn widths must be positive and non-empty, got {widths:?}")));
        }
        Ok(())
    }

    /// Width of the pooled features.
    pub fn feature_dim(&self) -> i64 {
        match self {
            BackboneSpec::Resnet18 {} | BackboneSpec::Resnet34 {} => 512,
            BackboneSpec::Resnet50 {} => 2048,
            BackboneSpec::EfficientnetLite0 {} => 1280,
            BackboneSpec::SmallCnn { widths } => *widths.last().unwrap_or(&0),
        }
    }

    /// The input normalisation the backbone's pretrained weights expect.
    pub fn normalization(&self) -> Normalization {
        match self {
            BackboneSpec::EfficientnetLite0 {} => Normalization::HALF,
            _ => Normalization::IMAGENET,
        }
    }

    /// Builds the backbone under `p`, with a classifier of `num_classes` outputs when given.
    pub fn build(&self, p: &nn::Path, num_classes: Option<i64>) -> Result<Box<dyn Backbone>> {
        self.validate()?;
        Ok(match self {
            BackboneSpec::Resnet18 {} => Box::new(ResNet::new(p, ResNetDepth::R18, num_classes)),
            BackboneSpec::Resnet34 {} => Box::new(ResNet::new(p, ResNetDepth::R34, num_classes)),
            BackboneSpec::Resnet50 {} => Box::new(ResNet::new(p, ResNetDepth::R50, num_classes)),
            BackboneSpec::EfficientnetLite0 {} => Box::new(EfficientNetLite::lite0(p, num_classes)),
            BackboneSpec::SmallCnn { widths } => Box::new(SmallCnn::new(p, widths, num_classes)),
        })
    }
}

/// A convolution without bias, initialised like torchvision (Kaiming-normal, fan-out, ReLU gain).
pub(crate) fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64, groups: i64) -> nn::Conv2D {
    let fan_out = c_out * k * k;
    let cfg = nn::ConvConfig { stride, padding, groups, bias: false, ws_init: nn::Init::Randn { mean: 0.0, stdev: (2.0 / fan_out as f64).sqrt() }, ..Default::default() };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// BatchNorm with weight 1, bias 0 and the given epsilon and momentum.
pub(crate) fn batch_norm(p: nn::Path, c: i64, eps: f64, momentum: f64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig { eps, momentum, ws_init: nn::Init::Const(1.0), bs_init: nn::Init::Const(0.0), ..Default::default() };
    nn::batch_norm2d(p, c, cfg)
}

/// Global average pooling to `[N, C]`.
pub(crate) fn global_pool(xs: &Tensor) -> Tensor {
    xs.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_from_tagged_json() {
        let s: BackboneSpec = serde_json::from_str(r#"{"type": "efficientnet_lite0"}"#).unwrap();
        assert_eq!(s, BackboneSpec::EfficientnetLite0 {});
        assert_eq!(serde_json::to_string(&BackboneSpec::Resnet50 {}).unwrap(), r#"{"type":"resnet50"}"#);
        let s: BackboneSpec = serde_json::from_str(r#"{"type": "small_cnn"}"#).unwrap();
        assert_eq!(s.feature_dim(), 64);
        assert!(serde_json::from_str::<BackboneSpec>(r#"{"type": "resnet18", "depth": 18}"#).is_err());
        assert!(serde_json::from_str::<BackboneSpec>(r#"{"type": "resnet101"}"#).is_err());
    }

    #[test]
    fn normalization_matches_the_formula() {
        let xs = Tensor::ones([1, 3, 2, 2], (tch::Kind::Float, tch::Device::Cpu));
        let ys = Normalization::IMAGENET.apply(&xs);
        let v = ys.double_value(&[0, 2, 1, 1]);
        assert!((v - (1.0 - 0.406) / 0.225).abs() < 1e-6);
    }
}
