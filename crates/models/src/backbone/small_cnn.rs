//! A small CNN for fast tests and smoke runs: stages of 3×3 conv–BN–ReLU–2×2 max-pool, then
//! global average pooling. It trains in seconds on a CPU, so trainer tests can run end to end.

use tch::{Tensor, nn, nn::ModuleT};

use super::{Backbone, batch_norm, conv, global_pool};

/// Stages of conv–BN–ReLU–pool, names `stages.<i>.conv` / `stages.<i>.bn`, classifier `fc`.
#[derive(Debug)]
pub struct SmallCnn {
    stages: Vec<(nn::Conv2D, nn::BatchNorm)>,
    fc: Option<nn::Linear>,
    feature_dim: i64,
    num_classes: Option<i64>,
}

impl SmallCnn {
    /// Builds one stage per width (widths must be non-empty and positive).
    pub fn new(p: &nn::Path, widths: &[i64], num_classes: Option<i64>) -> Self {
        let sp = p / "stages";
        let mut c_in = 3;
        let stages = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let s = &sp / i.to_string();
                let stage = (conv(&s / "conv", c_in, w, 3, 1, 1, 1), batch_norm(&s / "bn", w, 1e-5, 0.1));
                c_in = w;
                stage
            })
            .collect();
        let fc = num_classes.map(|n| nn::linear(p / "fc", c_in, n, Default::default()));
        SmallCnn { stages, fc, feature_dim: c_in, num_classes }
    }
}

impl Backbone for SmallCnn {
    fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.shallow_clone();
        for (c, bn) in &self.stages {
            ys = ys.apply(c).apply_t(bn, train).relu();
            if ys.size()[2] >= 2 && ys.size()[3] >= 2 {
                ys = ys.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
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

impl ModuleT for SmallCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.logits(xs, train).unwrap_or_else(|| self.features(xs, train))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn shapes_and_names() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = SmallCnn::new(&vs.root(), &[8, 16], Some(5));
        let xs = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(net.features(&xs, true).size(), [3, 16]);
        assert_eq!(net.logits(&xs, false).unwrap().size(), [3, 5]);
        assert!(vs.variables().contains_key("stages.1.bn.running_mean"));
    }
}
