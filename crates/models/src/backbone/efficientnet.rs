//! EfficientNet-Lite0 in the lukemelas `EfficientNet` parameter layout (`_conv_stem`, `_bn0`,
//! `_blocks.N._expand_conv`/`_bn0`/`_depthwise_conv`/`_bn1`/`_project_conv`/`_bn2`, `_conv_head`,
//! `_bn1`, `_fc`).
//!
//! The Lite variants drop squeeze-excitation and use ReLU6 so they quantise well; the published
//! weights were converted from TensorFlow, so convolutions use TF 'SAME' padding: on strided
//! convolutions the odd pixel of padding goes to the bottom/right, which a symmetric PyTorch
//! padding cannot express and would shift every feature map by one pixel.
//!
//! Every convolution weight is stored channels-last (NHWC strides, the same logical NCHW shape).
//! libtorch then runs the whole trunk through oneDNN's channels-last kernels, activations
//! included: on two cores that made the find recipe's training steps 1.3–1.5× and inference
//! 1.15–1.3× faster than the default layout, chiefly in the depthwise convolutions. The layout is
//! invisible outside: values and names are unchanged, loading `copy_`s into the variables (which
//! keeps their strides), and `proxima_models::tensor_file::save` writes contiguous copies (tch's
//! own `write_safetensors` refuses the channels-last stem weight: call `.contiguous()` first).

use tch::{Tensor, nn, nn::ModuleT};

use super::{Backbone, batch_norm, conv, global_pool};

const BN_EPS: f64 = 1e-3;
/// lukemelas uses `1 - 0.99`, TensorFlow's decay of 0.99.
const BN_MOMENTUM: f64 = 0.01;
const STEM: i64 = 32;
const HEAD: i64 = 1280;
const DROPOUT: f64 = 0.2;
const DROP_CONNECT: f64 = 0.2;

/// Lite0 stages: (repeats, kernel, stride, expand ratio, output channels).
const LITE0_STAGES: [(usize, i64, i64, i64, i64); 7] =
    [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)];

/// `conv` with its weight moved to channels-last strides in place (the variable store sees the
/// same tensor).
fn channels_last(mut conv: nn::Conv2D) -> nn::Conv2D {
    let nhwc = tch::no_grad(|| nhwc(&conv.ws));
    conv.ws.set_data(&nhwc);
    conv
}

/// A copy of a 4-D tensor with PyTorch's channels-last strides `[H·W·C, 1, W·C, C]`.
fn nhwc(t: &Tensor) -> Tensor {
    let size = t.size();
    let (c, h, w) = (size[1], size[2], size[3]);
    let mut out = Tensor::empty_strided(&size, [h * w * c, 1, w * c, c], (t.kind(), t.device()));
    out.copy_(t);
    out
}

/// A convolution with TF 'SAME' padding.
#[derive(Debug)]
struct SameConv {
    conv: nn::Conv2D,
    kernel: i64,
    stride: i64,
    groups: i64,
}

impl SameConv {
    fn new(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        // Stride 1 with an odd kernel is symmetric: let the convolution pad. Strided convolutions
        // are padded explicitly in `forward`, from the actual input size.
        let padding = if stride == 1 { (kernel - 1) / 2 } else { 0 };
        SameConv { conv: channels_last(conv(p, c_in, c_out, kernel, stride, padding, groups)), kernel, stride, groups }
    }

    /// # Shapes
    /// `xs`: `[N, C, H, W]` → `[N, C', ⌈H/s⌉, ⌈W/s⌉]`.
    fn forward(&self, xs: &Tensor) -> Tensor {
        if self.stride == 1 {
            return xs.apply(&self.conv);
        }
        self.pad(xs).apply(&self.conv)
    }

    /// [`Self::forward`] with this convolution's geometry but the given weight and bias.
    fn forward_with(&self, xs: &Tensor, ws: &Tensor, bs: &Tensor) -> Tensor {
        let (xs, padding) = if self.stride == 1 { (xs.shallow_clone(), (self.kernel - 1) / 2) } else { (self.pad(xs), 0) };
        xs.conv2d(ws, Some(bs), [self.stride; 2], [padding; 2], [1; 2], self.groups)
    }

    /// `xs` padded for a strided convolution, the odd pixel at the bottom/right.
    fn pad(&self, xs: &Tensor) -> Tensor {
        let pad = |size: i64| {
            let out = (size + self.stride - 1) / self.stride;
            ((out - 1) * self.stride + self.kernel - size).max(0)
        };
        let (ph, pw) = (pad(xs.size()[2]), pad(xs.size()[3]));
        xs.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2])
    }
}

/// A bias-free `conv` followed by eval-mode `bn`, as one convolution's weight and bias (computed
/// afresh each call: a few small element-wise ops, so weights that train stay in step).
///
/// `w' = w · γ / √(σ² + ε)`, `b' = β − μ · γ / √(σ² + ε)`.
///
/// # Shapes
/// `conv.ws`: `[C', C/g, k, k]`, BatchNorm vectors `[C']` → `[C', C/g, k, k]` (channels-last, as
/// the original), `[C']`.
fn fold(conv: &nn::Conv2D, bn: &nn::BatchNorm) -> (Tensor, Tensor) {
    debug_assert!(conv.bs.is_none(), "EfficientNet-Lite's convolutions have no bias");
    tch::no_grad(|| {
        let (gamma, beta) = (bn.ws.as_ref().expect("affine BatchNorm"), bn.bs.as_ref().expect("affine BatchNorm"));
        let scale = gamma / (&bn.running_var + BN_EPS).sqrt();
        // The product keeps the weight's channels-last strides (element-wise ops follow their
        // first operand's layout); no copy, so a traced graph holds only the arithmetic.
        (&conv.ws * scale.view([-1, 1, 1, 1]), beta - &bn.running_mean * &scale)
    })
}

/// `min(max(x, 0), 6)` as libtorch's `relu6` (a `hardtanh`): its backward is one fused kernel,
/// where `clamp`'s is a comparison, a logical and and a select, each a pass over the activation.
fn relu6(xs: Tensor) -> Tensor {
    xs.relu6()
}

/// Inverted-residual block without squeeze-excitation.
#[derive(Debug)]
struct MbConv {
    expand: Option<(nn::Conv2D, nn::BatchNorm)>,
    depthwise: SameConv,
    bn1: nn::BatchNorm,
    project: nn::Conv2D,
    bn2: nn::BatchNorm,
    skip: bool,
    drop_connect: f64,
}

impl MbConv {
    fn new(p: &nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, expand: i64, drop_connect: f64) -> Self {
        let mid = c_in * expand;
        let expand = (expand != 1).then(|| (channels_last(conv(p / "_expand_conv", c_in, mid, 1, 1, 0, 1)), batch_norm(p / "_bn0", mid, BN_EPS, BN_MOMENTUM)));
        MbConv {
            expand,
            depthwise: SameConv::new(p / "_depthwise_conv", mid, mid, kernel, stride, mid),
            bn1: batch_norm(p / "_bn1", mid, BN_EPS, BN_MOMENTUM),
            project: channels_last(conv(p / "_project_conv", mid, c_out, 1, 1, 0, 1)),
            bn2: batch_norm(p / "_bn2", c_out, BN_EPS, BN_MOMENTUM),
            skip: stride == 1 && c_in == c_out,
            drop_connect,
        }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = match &self.expand {
            Some((c, bn)) => relu6(xs.apply(c).apply_t(bn, train)),
            None => xs.shallow_clone(),
        };
        ys = relu6(self.depthwise.forward(&ys).apply_t(&self.bn1, train));
        ys = ys.apply(&self.project).apply_t(&self.bn2, train);
        if !self.skip {
            return ys;
        }
        if train && self.drop_connect > 0.0 {
            // Stochastic depth: drop the residual branch per sample, rescale the kept ones.
            let keep = 1.0 - self.drop_connect;
            let mask = (Tensor::rand([ys.size()[0], 1, 1, 1], (ys.kind(), ys.device())) + keep).floor();
            ys = ys / keep * mask;
        }
        ys + xs
    }

    /// [`Self::forward`] in eval mode with each BatchNorm folded into its convolution: one pass
    /// less over every activation. No gradient reaches the block's parameters.
    fn forward_folded(&self, xs: &Tensor) -> Tensor {
        let conv1x1 = |xs: &Tensor, (ws, bs): (Tensor, Tensor)| xs.conv2d(&ws, Some(&bs), [1; 2], [0; 2], [1; 2], 1);
        let mut ys = match &self.expand {
            Some((c, bn)) => relu6(conv1x1(xs, fold(c, bn))),
            None => xs.shallow_clone(),
        };
        let (ws, bs) = fold(&self.depthwise.conv, &self.bn1);
        ys = relu6(self.depthwise.forward_with(&ys, &ws, &bs));
        ys = conv1x1(&ys, fold(&self.project, &self.bn2));
        if self.skip { ys + xs } else { ys }
    }
}

/// EfficientNet-Lite.
#[derive(Debug)]
pub struct EfficientNetLite {
    stem: SameConv,
    bn0: nn::BatchNorm,
    blocks: Vec<MbConv>,
    conv_head: nn::Conv2D,
    bn1: nn::BatchNorm,
    fc: Option<nn::Linear>,
    num_classes: Option<i64>,
}

impl EfficientNetLite {
    /// EfficientNet-Lite0 under `p`, with an `_fc` of `num_classes` when given.
    pub fn lite0(p: &nn::Path, num_classes: Option<i64>) -> Self {
        let total: usize = LITE0_STAGES.iter().map(|s| s.0).sum();
        let mut blocks = Vec::with_capacity(total);
        let mut c_in = STEM;
        let bp = p / "_blocks";
        for &(repeats, kernel, stride, expand, c_out) in &LITE0_STAGES {
            for r in 0..repeats {
                let idx = blocks.len();
                let rate = DROP_CONNECT * idx as f64 / total as f64;
                let s = if r == 0 { stride } else { 1 };
                blocks.push(MbConv::new(&(&bp / idx.to_string()), c_in, c_out, kernel, s, expand, rate));
                c_in = c_out;
            }
        }
        EfficientNetLite {
            stem: SameConv::new(p / "_conv_stem", 3, STEM, 3, 2, 1),
            bn0: batch_norm(p / "_bn0", STEM, BN_EPS, BN_MOMENTUM),
            blocks,
            conv_head: channels_last(conv(p / "_conv_head", c_in, HEAD, 1, 1, 0, 1)),
            bn1: batch_norm(p / "_bn1", HEAD, BN_EPS, BN_MOMENTUM),
            fc: num_classes.map(|n| nn::linear(p / "_fc", HEAD, n, Default::default())),
            num_classes,
        }
    }
}

/// Blocks after which [`EfficientNetLite::feature_maps`] taps the trunk: the ends of the stride-8,
/// stride-16 and stride-32 stages (40, 112 and 320 channels).
pub const LITE0_TAPS: [(usize, i64, i64); 3] = [(4, 8, 40), (10, 16, 112), (15, 32, 320)];

impl EfficientNetLite {
    /// Feature maps at strides 8, 16 and 32 (see [`LITE0_TAPS`]), for dense heads such as a localiser.
    ///
    /// # Shapes
    /// `xs`: `[N, 3, H, W]` → `[N, 40, ⌈H/8⌉, ⌈W/8⌉]`, `[N, 112, ⌈H/16⌉, ⌈W/16⌉]`, `[N, 320, ⌈H/32⌉, ⌈W/32⌉]`.
    pub fn feature_maps(&self, xs: &Tensor, train: bool) -> [Tensor; 3] {
        let mut ys = relu6(self.stem.forward(xs).apply_t(&self.bn0, train));
        let mut taps: Vec<Tensor> = Vec::with_capacity(3);
        for (i, b) in self.blocks.iter().enumerate() {
            ys = b.forward(&ys, train);
            if LITE0_TAPS.iter().any(|t| t.0 == i) {
                taps.push(ys.shallow_clone());
            }
        }
        let [a, b, c]: [Tensor; 3] = taps.try_into().expect("three taps");
        [a, b, c]
    }

    /// [`Self::feature_maps`] for fine-tuning the later stages only: the stem and the first
    /// `frozen` blocks run without gradient (their BatchNorm folded into the convolutions, see
    /// [`Self::feature_maps_frozen`]), and BatchNorm uses its running statistics throughout.
    ///
    /// Why eval-mode BatchNorm: detection batches are small (a few images of one scale), so batch
    /// statistics would be noisy and would drift away from the ImageNet statistics the frozen
    /// stages were trained with.
    ///
    /// # Shapes
    /// As [`Self::feature_maps`].
    pub fn feature_maps_tuned(&self, xs: &Tensor, frozen: usize) -> [Tensor; 3] {
        let frozen = frozen.min(self.blocks.len());
        let mut taps: Vec<Tensor> = Vec::with_capacity(3);
        let mut ys = self.frozen_prefix(xs, frozen, &mut taps);
        for (i, b) in self.blocks.iter().enumerate().skip(frozen) {
            ys = b.forward(&ys, false);
            if LITE0_TAPS.iter().any(|t| t.0 == i) {
                taps.push(ys.shallow_clone());
            }
        }
        let [a, b, c]: [Tensor; 3] = taps.try_into().expect("three taps");
        [a, b, c]
    }

    /// [`Self::feature_maps`] in eval mode for inference: no gradient, and every BatchNorm folded
    /// into its convolution (one pass less over each activation; equal up to float rounding).
    ///
    /// # Shapes
    /// As [`Self::feature_maps`].
    pub fn feature_maps_frozen(&self, xs: &Tensor) -> [Tensor; 3] {
        let mut taps: Vec<Tensor> = Vec::with_capacity(3);
        let _last_tap = self.frozen_prefix(xs, self.blocks.len(), &mut taps);
        let [a, b, c]: [Tensor; 3] = taps.try_into().expect("three taps");
        [a, b, c]
    }

    /// The stem and blocks `..n` without gradient, BatchNorm folded; pushes the taps it passes.
    fn frozen_prefix(&self, xs: &Tensor, n: usize, taps: &mut Vec<Tensor>) -> Tensor {
        tch::no_grad(|| {
            let (ws, bs) = fold(&self.stem.conv, &self.bn0);
            let mut ys = relu6(self.stem.forward_with(xs, &ws, &bs));
            for (i, b) in self.blocks[..n].iter().enumerate() {
                ys = b.forward_folded(&ys);
                if LITE0_TAPS.iter().any(|t| t.0 == i) {
                    taps.push(ys.shallow_clone());
                }
            }
            ys
        })
    }

    /// Number of MBConv blocks (16 for Lite0); block `i`'s variables are named `_blocks.i.*`.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }
}

impl Backbone for EfficientNetLite {
    fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = relu6(self.stem.forward(xs).apply_t(&self.bn0, train));
        for b in &self.blocks {
            ys = b.forward(&ys, train);
        }
        global_pool(&relu6(ys.apply(&self.conv_head).apply_t(&self.bn1, train)))
    }

    fn classify(&self, features: &Tensor, train: bool) -> Option<Tensor> {
        self.fc.as_ref().map(|fc| features.dropout(DROPOUT, train).apply(fc))
    }

    fn feature_dim(&self) -> i64 {
        HEAD
    }

    fn num_classes(&self) -> Option<i64> {
        self.num_classes
    }
}

impl ModuleT for EfficientNetLite {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.logits(xs, train).unwrap_or_else(|| self.features(xs, train))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn lite0_layout_and_size() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EfficientNetLite::lite0(&vs.root(), Some(1000));
        let vars = vs.variables();
        assert_eq!(net.blocks.len(), 16);
        assert!(!vars.contains_key("_blocks.0._expand_conv.weight"), "expand ratio 1 has no expansion");
        assert_eq!(vars["_blocks.15._expand_conv.weight"].size(), [1152, 192, 1, 1]);
        assert_eq!(vars["_blocks.3._depthwise_conv.weight"].size(), [144, 1, 5, 5]);
        // Published size of EfficientNet-Lite0: 4,652,008 parameters.
        let n: usize = vs.trainable_variables().iter().map(Tensor::numel).sum();
        assert_eq!(n, 4_652_008);
        // 296 state-dict entries = 247 variables + 49 num_batches_tracked.
        assert_eq!(vars.len(), 296 - 49);
    }

    #[test]
    fn feature_maps_have_the_documented_strides_and_widths() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EfficientNetLite::lite0(&vs.root(), None);
        let xs = Tensor::zeros([2, 3, 96, 64], (Kind::Float, Device::Cpu));
        let [a, b, c] = net.feature_maps(&xs, false);
        assert_eq!(a.size(), [2, 40, 12, 8]);
        assert_eq!(b.size(), [2, 112, 6, 4]);
        assert_eq!(c.size(), [2, 320, 3, 2]);
    }

    #[test]
    fn tuned_feature_maps_equal_the_frozen_ones_and_train_only_the_later_blocks() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EfficientNetLite::lite0(&vs.root(), None);
        randomise_batch_norm(&vs);
        let xs = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let plain = net.feature_maps(&xs, false);
        let tuned = net.feature_maps_tuned(&xs, 5);
        let frozen = net.feature_maps_frozen(&xs);
        for ((p, t), f) in plain.iter().zip(&tuned).zip(&frozen) {
            // Folding BatchNorm into the convolutions changes only the float rounding.
            assert!(p.allclose(t, 1e-4, 1e-5, false), "max diff {}", (p - t).abs().max().double_value(&[]));
            assert!(p.allclose(f, 1e-4, 1e-5, false), "max diff {}", (p - f).abs().max().double_value(&[]));
            assert!(!f.requires_grad());
        }
        assert!(!tuned[0].requires_grad(), "the stride-8 tap comes from a frozen block");
        (tuned[1].sum(Kind::Float) + tuned[2].sum(Kind::Float)).backward();
        let vars = vs.variables();
        assert!(!vars["_blocks.4._project_conv.weight"].grad().defined());
        assert!(vars["_blocks.5._project_conv.weight"].grad().defined());
        assert_eq!(net.num_blocks(), 16);
    }

    /// BatchNorm statistics and affine parameters away from their identity initialisation, so
    /// that folding them is exercised.
    fn randomise_batch_norm(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for (name, t) in vs.variables() {
                if !name.contains("_bn") {
                    continue;
                }
                let r = Tensor::rand_like(&t);
                let v = if name.ends_with("running_var") {
                    r + 0.5
                } else if name.ends_with("weight") {
                    r * 1.5 + 0.25
                } else {
                    r - 0.5
                };
                t.shallow_clone().copy_(&v);
            }
        });
    }

    #[test]
    fn activations_are_channels_last() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = EfficientNetLite::lite0(&vs.root(), None);
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        for maps in [net.feature_maps(&xs, false), net.feature_maps_frozen(&xs)] {
            for m in maps {
                // NHWC strides: the channel is the innermost dimension.
                assert_eq!(m.stride()[1], 1, "{:?} {:?}", m.size(), m.stride());
            }
        }
        // The variable store holds the same (channels-last) tensors the layers use.
        assert_eq!(vs.variables()["_blocks.3._depthwise_conv.weight"].stride()[1], 1);
    }

    #[test]
    fn same_padding_is_asymmetric_on_strided_convs() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut c = SameConv::new(vs.root() / "c", 1, 1, 3, 2, 1);
        tch::no_grad(|| c.conv.ws.copy_(&Tensor::ones([1, 1, 3, 3], (Kind::Float, Device::Cpu))));
        let xs = Tensor::ones([1, 1, 4, 4], (Kind::Float, Device::Cpu));
        let ys = c.forward(&xs);
        assert_eq!(ys.size(), [1, 1, 2, 2]);
        // Pad 0 at top/left, 1 at bottom/right: the first window is all inside, the last is not.
        let v: Vec<f32> = Vec::try_from(ys.flatten(0, -1)).unwrap();
        assert_eq!(v, [9.0, 6.0, 6.0, 4.0]);
    }
}
