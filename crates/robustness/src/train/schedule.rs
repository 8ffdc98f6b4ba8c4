//! Learning-rate schedules: step (x gamma every `step` epochs, the reference library's
//! `StepLR`), cosine annealing, constant; each optionally after a linear warm-up.

use serde::{Deserialize, Serialize};

/// How the learning rate evolves over epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// `lr * gamma^(floor(epoch / step))`.
    Step {
        /// Epochs between drops.
        step: usize,
        /// Multiplier at each drop.
        gamma: f64,
    },
    /// Cosine annealing from `lr` to 0 over all epochs (per batch).
    Cosine,
    /// Constant `lr`.
    Constant,
}

/// A schedule with its base learning rate and warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrPolicy {
    /// Base learning rate.
    pub lr: f64,
    /// The schedule after warm-up.
    pub schedule: Schedule,
    /// Epochs of linear warm-up from ~0 to `lr` (per batch).
    pub warmup_epochs: usize,
    /// Total epochs (for cosine).
    pub epochs: usize,
}

impl LrPolicy {
    /// Learning rate for batch `batch` (0-based) of `batches` in epoch `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize, batch: usize, batches: usize) -> f64 {
        let batches = batches.max(1);
        let progress = epoch as f64 + batch as f64 / batches as f64;
        if epoch < self.warmup_epochs {
            let step = (epoch * batches + batch + 1) as f64;
            return self.lr * step / (self.warmup_epochs * batches) as f64;
        }
        match &self.schedule {
            Schedule::Step { step, gamma } => {
                let drops = epoch / (*step).max(1);
                self.lr * gamma.powi(drops as i32)
            }
            Schedule::Cosine => {
                let span = (self.epochs - self.warmup_epochs).max(1) as f64;
                let t = (progress - self.warmup_epochs as f64) / span;
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * t.clamp(0.0, 1.0)).cos())
            }
            Schedule::Constant => self.lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schedule: Schedule, warmup: usize) -> LrPolicy {
        LrPolicy {
            lr: 0.1,
            schedule,
            warmup_epochs: warmup,
            epochs: 150,
        }
    }

    #[test]
    fn step_schedule_drops_by_gamma_every_step_epochs() {
        let p = policy(
            Schedule::Step {
                step: 50,
                gamma: 0.1,
            },
            0,
        );
        assert_eq!(p.lr_at(0, 0, 10), 0.1);
        assert_eq!(p.lr_at(49, 9, 10), 0.1);
        assert!((p.lr_at(50, 0, 10) - 0.01).abs() < 1e-12);
        assert!((p.lr_at(100, 0, 10) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn cosine_starts_at_lr_and_ends_near_zero() {
        let p = policy(Schedule::Cosine, 0);
        assert!((p.lr_at(0, 0, 10) - 0.1).abs() < 1e-12);
        assert!((p.lr_at(75, 0, 10) - 0.05).abs() < 1e-9);
        assert!(p.lr_at(149, 9, 10) < 1e-4);
    }

    #[test]
    fn warmup_rises_linearly_to_lr() {
        let p = policy(Schedule::Constant, 2);
        assert!((p.lr_at(0, 0, 10) - 0.1 / 20.0).abs() < 1e-12);
        assert!((p.lr_at(1, 9, 10) - 0.1).abs() < 1e-12);
        assert_eq!(p.lr_at(2, 0, 10), 0.1);
    }
}
