//! An exponential moving average of a model's weights (`train --ema DECAY`), as robust-training
//! work uses it (e.g. Gowal et al. 2020, decay 0.995 per step): after every optimizer step,
//! `ema <- d * ema + (1 - d) * weights`, over every float parameter and buffer (batch-norm
//! running statistics too, as timm's `ModelEmaV2` does), with the warm-up of TensorFlow's
//! `ExponentialMovingAverage(num_updates)`: `d = min(decay, (1 + t) / (10 + t))` at step `t`
//! (0-based), so the first steps are not dominated by the initial weights.
//!
//! The average is what a run with EMA evaluates and saves as its model (`model.safetensors`);
//! the weights the optimizer works on are kept for resuming (`state.bpk`).

use crate::models::Classifier;
use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// The averaged model and its decay.
#[derive(Clone)]
pub struct Ema {
    decay: f64,
    model: Classifier,
}

impl Ema {
    /// Starts the average at `model`'s current weights (a copy in buffers of its own, without
    /// gradients).
    pub fn new(model: &Classifier, decay: f64) -> Self {
        struct DeepCopy;
        impl ModuleMapper for DeepCopy {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                param.map(|t| Tensor::from_data(t.to_data(), &t.device()))
            }
        }
        Self::resumed(model.clone().map(&mut DeepCopy), decay)
    }

    /// An average restored from a checkpoint's weights.
    pub fn resumed(model: Classifier, decay: f64) -> Self {
        Self {
            decay,
            model: model.no_grad(),
        }
    }

    /// The decay used at 0-based step `step`: `min(decay, (1 + step) / (10 + step))`.
    pub fn decay_at(&self, step: u64) -> f64 {
        decay_at(self.decay, step)
    }

    /// Folds `model`'s weights after step `step` into the average.
    pub fn update(&mut self, model: &Classifier, step: u64) {
        /// Every float parameter and buffer, flattened, in visiting order; as plain tensors
        /// (outside autodiff: an autodiff op, even on untracked tensors, keeps bookkeeping
        /// that grows with every step).
        struct Collect(Vec<Tensor<1>>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.val().inner().reshape([-1]));
            }
        }
        struct Blend {
            weights: std::vec::IntoIter<Tensor<1>>,
            decay: f64,
        }
        impl ModuleMapper for Blend {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                // Both models have the same structure, so the visit and the map agree.
                let Some(w) = self.weights.next() else {
                    return param;
                };
                let d = self.decay;
                param.map(|avg| {
                    let autodiff = avg.is_autodiff();
                    let avg = avg.inner();
                    let shape = avg.shape();
                    let blended = avg.mul_scalar(d).add(w.reshape(shape).mul_scalar(1.0 - d));
                    if autodiff {
                        blended.autodiff()
                    } else {
                        blended
                    }
                })
            }
        }
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        let mut blend = Blend {
            weights: collect.0.into_iter(),
            decay: self.decay_at(step),
        };
        self.model = self.model.clone().map(&mut blend);
    }

    /// The averaged model.
    pub fn model(&self) -> &Classifier {
        &self.model
    }
}

/// The decay used at 0-based step `step` of a run with `--ema decay`.
pub fn decay_at(decay: f64, step: u64) -> f64 {
    decay.min((1 + step) as f64 / (10 + step) as f64)
}

/// For a run of `steps` optimizer steps: the warm-up's decay at its last step when that is still
/// below `decay` (the warm-up, not `decay`, then sets the average throughout), else `None`.
pub fn capped_by_warmup(decay: f64, steps: u64) -> Option<f64> {
    let last = decay_at(decay, steps.saturating_sub(1));
    (last < decay).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;
    use crate::models::{Arch, tiny_spec};
    use crate::tensors;

    fn values(model: &Classifier) -> Vec<f32> {
        struct All(Vec<f32>);
        impl ModuleVisitor for All {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.extend(tensors::to_vec(param.val()));
            }
        }
        let mut all = All(Vec::new());
        model.visit(&mut all);
        all.0
    }

    #[test]
    fn the_average_blends_every_value_with_the_warmed_up_decay() {
        let device = Device::flex().autodiff();
        device.seed(1);
        let a = Classifier::new(&tiny_spec(Arch::Cnn), &device);
        device.seed(2);
        let b = Classifier::new(&tiny_spec(Arch::Cnn), &device);
        let mut ema = Ema::new(&a, 0.99);
        assert_eq!(values(ema.model()), values(&a), "starts at the weights");
        // Step 0: d = min(0.99, 1/10) = 0.1; step 1000: d = 0.99.
        assert!((ema.decay_at(0) - 0.1).abs() < 1e-12);
        assert!((ema.decay_at(1000) - 0.99).abs() < 1e-12);
        // 948 steps (12 epochs of 79): the last (t = 947) at 948/957 < 0.995; 0.99 is
        // reached at t = 890, so by runs of 891 steps or more.
        let capped = capped_by_warmup(0.995, 948).expect("capped");
        assert!((capped - 948.0 / 957.0).abs() < 1e-12);
        assert_eq!(capped_by_warmup(0.99, 892), None);
        assert!(capped_by_warmup(0.99, 890).is_some());
        ema.update(&b, 0);
        let (va, vb, ve) = (values(&a), values(&b), values(ema.model()));
        assert_eq!(ve.len(), va.len());
        let mut moved = 0;
        for ((x, y), e) in va.iter().zip(&vb).zip(&ve) {
            let want = 0.1f32 * x + 0.9f32 * y;
            assert!(
                (e - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{e} vs {want}"
            );
            moved += usize::from(x != y);
        }
        assert!(
            moved > ve.len() / 2,
            "the two models differ: {moved} values"
        );
        // The source model is untouched, and the average needs no gradients.
        assert_eq!(values(&a), va);
        ema.update(&b, 1000);
        for ((x, y), e) in va.iter().zip(&vb).zip(values(ema.model())) {
            let prev = 0.1f32 * x + 0.9f32 * y;
            let want = 0.99f32 * prev + 0.01f32 * y;
            assert!(
                (e - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{e} vs {want}"
            );
        }
    }
}
