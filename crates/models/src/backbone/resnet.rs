//! ResNet-18/34/50 with torchvision's parameter layout (`conv1`, `bn1`, `layer1.0.conv1`, …,
//! `layer2.0.downsample.0`, `fc`), so torchvision state dicts load by name.
//!
//! ResNet-50 is torchvision's "v1.5" (stride on the 3×3 convolution of the bottleneck), which is
//! what its published weights were trained with.

use tch::{Tensor, nn, nn::ModuleT};

use super::{Backbone, batch_norm, conv, global_pool};

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetDepth {
    /// BasicBlock × (2, 2, 2, 2).
    R18,
    /// BasicBlock × (3, 4, 6, 3).
    R34,
    /// Bottleneck × (3, 4, 6, 3).
    R50,
}

impl ResNetDepth {
    fn blocks(self) -> [usize; 4] {
        match self {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R34 | ResNetDepth::R50 => [3, 4, 6, 3],
        }
    }
    fn expansion(self) -> i64 {
        if self == ResNetDepth::R50 { 4 } else { 1 }
    }
}

#[derive(Debug)]
struct Block {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, depth: ResNetDepth, c_in: i64, width: i64, stride: i64) -> Self {
        let out = width * depth.expansion();
        let convs = if depth == ResNetDepth::R50 {
            vec![
                (conv(p / "conv1", c_in, width, 1, 1, 0, 1), batch_norm(p / "bn1", width, BN_EPS, BN_MOMENTUM)),
                (conv(p / "conv2", width, width, 3, stride, 1, 1), batch_norm(p / "bn2", width, BN_EPS, BN_MOMENTUM)),
                (conv(p / "conv3", width, out, 1, 1, 0, 1), batch_norm(p / "bn3", out, BN_EPS, BN_MOMENTUM)),
            ]
        } else {
            vec![
                (conv(p / "conv1", c_in, width, 3, stride, 1, 1), batch_norm(p / "bn1", width, BN_EPS, BN_MOMENTUM)),
                (conv(p / "conv2", width, width, 3, 1, 1, 1), batch_norm(p / "bn2", width, BN_EPS, BN_MOMENTUM)),
            ]
        };
        let downsample = (stride != 1 || c_in != out).then(|| {
            let d = p / "downsample";
            (conv(&d / "0", c_in, out, 1, stride, 0, 1), batch_norm(&d / "1", out, BN_EPS, BN_MOMENTUM))
        });
        Block { convs, downsample }
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut ys = xs.shallow_clone();
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            ys = ys.apply(c).apply_t(bn, train);
            if i < last {
                ys = ys.relu();
            }
        }
        let shortcut = match &self.downsample {
            Some((c, bn)) => xs.apply(c).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}

/// A torchvision ResNet.
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<Block>>,
    fc: Option<nn::Linear>,
    feature_dim: i64,
    num_classes: Option<i64>,
}

impl ResNet {
    /// Builds the network under `p` (`p / "conv1"`, …), with an `fc` of `num_classes` when given.
    pub fn new(p: &nn::Path, depth: ResNetDepth, num_classes: Option<i64>) -> Self {
        let conv1 = conv(p / "conv1", 3, 64, 7, 2, 3, 1);
        let bn1 = batch_norm(p / "bn1", 64, BN_EPS, BN_MOMENTUM);
        let mut c_in = 64;
        let mut layers = Vec::new();
        for (i, (&n, width)) in depth.blocks().iter().zip([64, 128, 256, 512]).enumerate() {
            let lp = p / format!("layer{}", i + 1);
            let stride = if i == 0 { 1 } else { 2 };
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                blocks.push(Block::new(&(&lp / b.to_string()), depth, c_in, width, if b == 0 { stride } else { 1 }));
                c_in = width * depth.expansion();
            }
            layers.push(blocks);
        }
        let fc = num_classes.map(|n| nn::linear(p / "fc", c_in, n, Default::default()));
        ResNet { conv1, bn1, layers, fc, feature_dim: c_in, num_classes }
    }
}

impl Backbone for ResNet {
    fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for layer in &self.layers {
            for block in layer {
                ys = block.forward(&ys, train);
            }
        }
        global_pool(&ys)
    }

    fn classify(&self, features: &Tensor, _train: bool) -> Option<Tensor> {
        self.fc.as_ref().map(|fc| features.apply(fc))
    }

    fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    fn num_classes(&self) -> Option<i64> {
        self.num_classes
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.logits(xs, train).unwrap_or_else(|| self.features(xs, train))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn count(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>() as i64
    }

    #[test]
    fn parameter_counts_match_torchvision() {
        for (depth, want) in [(ResNetDepth::R18, 11_689_512), (ResNetDepth::R34, 21_797_672), (ResNetDepth::R50, 25_557_032)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let _ = ResNet::new(&vs.root(), depth, Some(1000));
            assert_eq!(count(&vs), want, "{depth:?}");
        }
    }

    #[test]
    fn names_follow_torchvision() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = ResNet::new(&vs.root(), ResNetDepth::R50, None);
        let names = vs.variables();
        for n in ["conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.conv3.weight", "layer4.2.bn3.bias"] {
            assert!(names.contains_key(n), "{n} missing");
        }
        assert!(!names.keys().any(|k| k.starts_with("fc.")));
    }

    #[test]
    fn feature_and_logit_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ResNet::new(&vs.root(), ResNetDepth::R18, Some(10));
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(net.features(&xs, false).size(), [2, 512]);
        assert_eq!(net.logits(&xs, false).unwrap().size(), [2, 10]);
    }
}
