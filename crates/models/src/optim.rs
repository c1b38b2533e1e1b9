//! Optimizers with explicit, checkpointable state.
//!
//! tch's optimizers keep their state inside libtorch where it cannot be saved, so a resumed run
//! would restart momentum and Adam moments from zero and diverge from an uninterrupted one. These
//! optimizers implement PyTorch's update rules (`torch.optim.SGD`, `Adam`, `AdamW`) on plain
//! tensors; their state is a list of named tensors that goes into the checkpoint. Parameters are
//! organised in named groups (trunk, embedder, loss) with their own learning rates. They live here,
//! beside the models, so that every trainer (embeddings in `proxima-train`, the logo localiser in
//! `proxima-detect`) checkpoints the same way.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_decay() -> f64 {
    0.01
}

/// An optimizer, as a tagged configuration (`type = "adamw"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        weight_decay: f64,
        #[serde(default)]
        nesterov: bool,
    },
    /// `torch.optim.Adam` (L2 weight decay added to the gradient).
    Adam {
        lr: f64,
        #[serde(default = "default_betas")]
        betas: (f64, f64),
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    /// `torch.optim.AdamW` (decoupled weight decay).
    #[serde(rename = "adamw")]
    AdamW {
        lr: f64,
        #[serde(default = "default_betas")]
        betas: (f64, f64),
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } | OptimizerConfig::AdamW { lr, .. } => lr,
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(format!("optimizer: {m}")));
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("lr must be positive, got {lr}"));
        }
        match *self {
            OptimizerConfig::Sgd { momentum, weight_decay, nesterov, .. } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("momentum must be in [0, 1), got {momentum}"));
                }
                if weight_decay < 0.0 {
                    return bad(format!("weight_decay must be ≥ 0, got {weight_decay}"));
                }
                if nesterov && momentum == 0.0 {
                    return bad("nesterov needs momentum > 0".into());
                }
            }
            OptimizerConfig::Adam { betas, eps, weight_decay, .. } | OptimizerConfig::AdamW { betas, eps, weight_decay, .. } => {
                if !((0.0..1.0).contains(&betas.0) && (0.0..1.0).contains(&betas.1)) {
                    return bad(format!("betas must be in [0, 1), got {betas:?}"));
                }
                if eps <= 0.0 || weight_decay < 0.0 {
                    return bad("eps must be > 0 and weight_decay ≥ 0".into());
                }
            }
        }
        Ok(())
    }
}

/// A named group of parameters sharing a learning rate.
pub struct ParamGroup {
    pub name: String,
    /// The group's learning rate (before the schedule's factor).
    pub lr: f64,
    pub params: Vec<(String, Tensor)>,
}

/// An optimizer over parameter groups, with checkpointable state.
pub struct Optimizer {
    config: OptimizerConfig,
    groups: Vec<ParamGroup>,
    /// Per parameter (in group order): momentum buffer (SGD) or first and second moments (Adam).
    state: Vec<Vec<Tensor>>,
    steps: i64,
}

impl Optimizer {
    /// An optimizer for `groups`.
    pub fn new(config: OptimizerConfig, groups: Vec<ParamGroup>) -> Result<Self> {
        config.validate()?;
        let n = groups.iter().map(|g| g.params.len()).sum();
        Ok(Optimizer { config, groups, state: (0..n).map(|_| Vec::new()).collect(), steps: 0 })
    }

    /// Number of updates done.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.groups.iter_mut().flat_map(|g| g.params.iter_mut()) {
            p.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self.groups.iter().flat_map(|g| g.params.iter()).map(|(_, p)| p.grad()).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = tch::no_grad(|| {
            let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Double)).collect();
            Tensor::stack(&sq, 0).sum(Kind::Double).sqrt().double_value(&[])
        });
        if total > max_norm && total.is_finite() {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                grads.iter().for_each(|g| {
                    let _ = g.shallow_clone().g_mul_scalar_(scale);
                })
            });
        }
        total
    }

    /// One update of every parameter with a gradient; `lr_factor` scales every group's rate.
    pub fn step(&mut self, lr_factor: f64) {
        self.steps += 1;
        let t = self.steps as f64;
        let config = self.config.clone();
        let mut index = 0;
        tch::no_grad(|| {
            for group in &self.groups {
                let lr = group.lr * lr_factor;
                for (_, p) in &group.params {
                    let state = &mut self.state[index];
                    index += 1;
                    let g = p.grad();
                    if !g.defined() || !p.requires_grad() {
                        // Frozen (or unused) parameters keep their value and state.
                        continue;
                    }
                    let mut p = p.shallow_clone();
                    match config {
                        OptimizerConfig::Sgd { momentum, weight_decay, nesterov, .. } => {
                            let mut d = if weight_decay != 0.0 { &g + &p * weight_decay } else { g.shallow_clone() };
                            if momentum != 0.0 {
                                if state.is_empty() {
                                    state.push(d.copy());
                                } else {
                                    let _ = state[0].g_mul_scalar_(momentum).g_add_(&d);
                                }
                                d = if nesterov { &d + &state[0] * momentum } else { state[0].shallow_clone() };
                            }
                            let _ = p.g_sub_(&(d * lr));
                        }
                        OptimizerConfig::Adam { betas, eps, weight_decay, .. } | OptimizerConfig::AdamW { betas, eps, weight_decay, .. } => {
                            let decoupled = matches!(config, OptimizerConfig::AdamW { .. });
                            let g = if !decoupled && weight_decay != 0.0 { &g + &p * weight_decay } else { g };
                            if decoupled && weight_decay != 0.0 {
                                let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                            }
                            if state.is_empty() {
                                state.push(p.zeros_like());
                                state.push(p.zeros_like());
                            }
                            let _ = state[0].g_mul_scalar_(betas.0).g_add_(&(&g * (1.0 - betas.0)));
                            let _ = state[1].g_mul_scalar_(betas.1).g_add_(&(g.square() * (1.0 - betas.1)));
                            let bc1 = 1.0 - betas.0.powf(t);
                            let bc2 = 1.0 - betas.1.powf(t);
                            let denom = (state[1].shallow_clone() / bc2).sqrt() + eps;
                            let _ = p.g_sub_(&(&state[0] / denom * (lr / bc1)));
                        }
                    }
                }
            }
        });
    }

    /// The optimizer's state as named tensors (for checkpoints).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names = self.groups.iter().flat_map(|g| g.params.iter().map(move |(n, _)| format!("{}/{n}", g.name)));
        let mut out = vec![("steps".to_string(), Tensor::from_slice(&[self.steps]))];
        for (name, state) in names.zip(&self.state) {
            for (k, t) in state.iter().enumerate() {
                out.push((format!("{name}#{k}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Restores the state saved by [`Optimizer::state_tensors`].
    pub fn load_state(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let find = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        self.steps = find("steps").map(|t| t.int64_value(&[0])).ok_or_else(|| ModelError::Config("optimizer state has no step count".into()))?;
        let names: Vec<String> = self.groups.iter().flat_map(|g| g.params.iter().map(move |(n, _)| format!("{}/{n}", g.name))).collect();
        let devices: Vec<tch::Device> = self.groups.iter().flat_map(|g| g.params.iter().map(|(_, p)| p.device())).collect();
        for ((name, state), device) in names.iter().zip(self.state.iter_mut()).zip(devices) {
            state.clear();
            let mut k = 0;
            while let Some(t) = find(&format!("{name}#{k}")) {
                state.push(t.to_device(device).copy());
                k += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quadratic_steps(config: OptimizerConfig, steps: usize) -> f64 {
        let p = Tensor::from_slice(&[3.0f64, -2.0]).set_requires_grad(true);
        let mut opt = Optimizer::new(config, vec![ParamGroup { name: "g".into(), lr: 0.0, params: vec![("p".into(), p.shallow_clone())] }]).unwrap();
        // lr lives in the group; use the config's.
        opt.groups[0].lr = opt.config.lr();
        for _ in 0..steps {
            opt.zero_grad();
            let loss = p.square().sum(Kind::Double);
            loss.backward();
            opt.step(1.0);
        }
        p.square().sum(Kind::Double).double_value(&[])
    }

    #[test]
    fn every_optimizer_minimises_a_quadratic() {
        for cfg in [
            OptimizerConfig::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: true },
            OptimizerConfig::Adam { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 },
            OptimizerConfig::AdamW { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.01 },
        ] {
            let v = quadratic_steps(cfg.clone(), 200);
            assert!(v < 1e-3, "{cfg:?} left {v}");
        }
    }

    #[test]
    fn sgd_first_step_matches_torch_rule() {
        // One SGD step with momentum and weight decay: p - lr (g + wd p).
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let cfg = OptimizerConfig::Sgd { lr: 0.5, momentum: 0.9, weight_decay: 0.1, nesterov: false };
        let mut opt = Optimizer::new(cfg, vec![ParamGroup { name: "g".into(), lr: 0.5, params: vec![("p".into(), p.shallow_clone())] }]).unwrap();
        (&p * 2.0).sum(Kind::Double).backward();
        opt.step(1.0);
        assert!((p.double_value(&[0]) - (1.0 - 0.5 * (2.0 + 0.1))).abs() < 1e-12);
    }

    #[test]
    fn state_round_trips() {
        let mk = || Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let (p1, p2) = (mk(), mk());
        let cfg = OptimizerConfig::Adam { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 };
        let group = |p: &Tensor| vec![ParamGroup { name: "g".into(), lr: 0.1, params: vec![("p".into(), p.shallow_clone())] }];
        let mut a = Optimizer::new(cfg.clone(), group(&p1)).unwrap();
        let mut b = Optimizer::new(cfg, group(&p2)).unwrap();
        p1.square().sum(Kind::Double).backward();
        a.step(1.0);
        tch::no_grad(|| p2.shallow_clone().copy_(&p1));
        b.load_state(&a.state_tensors()).unwrap();
        for (opt, p) in [(&mut a, &p1), (&mut b, &p2)] {
            opt.zero_grad();
            p.square().sum(Kind::Double).backward();
            opt.step(1.0);
        }
        assert_eq!(Vec::<f64>::try_from(&p1).unwrap(), Vec::<f64>::try_from(&p2).unwrap());
    }

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(OptimizerConfig::Sgd { lr: -1.0, momentum: 0.0, weight_decay: 0.0, nesterov: false }.validate().is_err());
        assert!(OptimizerConfig::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0, nesterov: true }.validate().is_err());
        let parsed: std::result::Result<OptimizerConfig, _> = toml::from_str("type = \"adamw\"\nlr = 0.001\nbeta = 0.9\n");
        assert!(parsed.is_err());
    }
}
