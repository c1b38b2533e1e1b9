//! Learning-rate schedules: a factor applied to every parameter group's rate, as a function of
//! training progress measured in (fractional) epochs, so it is exact on resume.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// A learning-rate schedule with optional linear warm-up (`type = "cosine"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout (after warm-up).
    Constant {
        #[serde(default)]
        warmup_epochs: f64,
    },
    /// Cosine decay from the base rate to `min_factor` × base over the run.
    Cosine {
        #[serde(default)]
        warmup_epochs: f64,
        #[serde(default)]
        min_factor: f64,
    },
    /// Multiply by `gamma` every `step_epochs` epochs.
    Step {
        #[serde(default)]
        warmup_epochs: f64,
        step_epochs: usize,
        #[serde(default = "half")]
        gamma: f64,
    },
}

fn half() -> f64 {
    0.5
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Constant { warmup_epochs: 0.0 }
    }
}

impl Schedule {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let warmup = match *self {
            Schedule::Constant { warmup_epochs } | Schedule::Cosine { warmup_epochs, .. } | Schedule::Step { warmup_epochs, .. } => warmup_epochs,
        };
        if !(warmup >= 0.0 && warmup.is_finite()) {
            return Err(TrainError::Config(format!("schedule: warmup_epochs must be ≥ 0, got {warmup}")));
        }
        match *self {
            Schedule::Cosine { min_factor, .. } if !(0.0..=1.0).contains(&min_factor) => {
                Err(TrainError::Config(format!("schedule: min_factor must be in [0, 1], got {min_factor}")))
            }
            Schedule::Step { step_epochs: 0, .. } => Err(TrainError::Config("schedule: step_epochs must be ≥ 1".into())),
            Schedule::Step { gamma, .. } if !(gamma > 0.0 && gamma <= 1.0) => Err(TrainError::Config(format!("schedule: gamma must be in (0, 1], got {gamma}"))),
            _ => Ok(()),
        }
    }

    /// The factor at `progress` epochs (fractional) of a `total`-epoch run.
    pub fn factor(&self, progress: f64, total: f64) -> f64 {
        let (warmup, after) = match *self {
            Schedule::Constant { warmup_epochs } => (warmup_epochs, 1.0),
            Schedule::Cosine { warmup_epochs, min_factor } => {
                let span = (total - warmup_epochs).max(1e-9);
                let t = ((progress - warmup_epochs) / span).clamp(0.0, 1.0);
                (warmup_epochs, min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
            }
            Schedule::Step { warmup_epochs, step_epochs, gamma } => (warmup_epochs, gamma.powi((progress.max(0.0) / step_epochs as f64).floor() as i32)),
        };
        if warmup > 0.0 && progress < warmup { after * (progress / warmup).max(0.0) } else { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_goes_from_one_to_min() {
        let s = Schedule::Cosine { warmup_epochs: 0.0, min_factor: 0.1 };
        assert!((s.factor(0.0, 10.0) - 1.0).abs() < 1e-12);
        assert!((s.factor(10.0, 10.0) - 0.1).abs() < 1e-12);
        assert!((s.factor(5.0, 10.0) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn warmup_is_linear_and_step_decays() {
        let s = Schedule::Step { warmup_epochs: 2.0, step_epochs: 3, gamma: 0.1 };
        assert!((s.factor(1.0, 10.0) - 0.5).abs() < 1e-12);
        assert!((s.factor(2.5, 10.0) - 1.0).abs() < 1e-12);
        assert!((s.factor(3.0, 10.0) - 0.1).abs() < 1e-12);
        assert!(Schedule::Step { warmup_epochs: 0.0, step_epochs: 0, gamma: 0.5 }.validate().is_err());
    }
}
