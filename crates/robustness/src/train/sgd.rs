//! SGD with momentum and weight decay in one pass over each parameter on the CPU.
//!
//! Burn's `Sgd` updates a parameter with about eight element-wise tensor ops, each a pass over
//! its values (~20 ms of a ResNet-18 train step on 2 cores). [`FusedSgd`] computes the same
//! update with the same f32 operations in the same order, in one pass (`burn_flex::ops::sgd`),
//! so a run gives the same bits with either. On other devices it runs Burn's op sequence.
//!
//! Its per-parameter state is recorded under the names Burn's `Sgd` uses
//! (`{param}.momentum.velocity`), so checkpoints written with either optimizer resume with the
//! other.

use burn::optim::{
    LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource, join_path,
};
use burn::prelude::*;
use burn::tensor::DType;
use burn_flex::Flex;
use burn_flex::ops::sgd::{SgdHyper, SgdMomentum, sgd_step};

/// Momentum as PyTorch and Burn define it (no Nesterov).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Momentum {
    /// Momentum factor.
    pub momentum: f64,
    /// Dampening of the new gradient (PyTorch's default, and ours, is 0).
    pub dampening: f64,
}

/// SGD, optionally with momentum and L2 weight decay, fused on the CPU.
#[derive(Clone, Debug)]
pub struct FusedSgd {
    momentum: Option<Momentum>,
    weight_decay: Option<f32>,
}

/// Per-parameter state: the momentum buffer, when there is momentum.
#[derive(Clone)]
pub struct FusedSgdState<const D: usize> {
    velocity: Option<Tensor<D>>,
}

impl FusedSgd {
    /// An optimizer with these settings.
    pub fn new(momentum: Option<Momentum>, weight_decay: Option<f32>) -> Self {
        Self {
            momentum,
            weight_decay,
        }
    }

    /// Wrapped to optimize a whole module.
    pub fn init(self) -> ModuleOptimizer {
        ModuleOptimizer::from(self)
    }

    fn hyper(&self, lr: LearningRate) -> SgdHyper {
        SgdHyper {
            lr: lr as f32,
            weight_decay: self.weight_decay,
            momentum: self.momentum.map(|m| SgdMomentum {
                momentum: m.momentum as f32,
                keep: (1.0 - m.dampening) as f32,
            }),
        }
    }

    /// Burn's `Sgd` op sequence (weight decay, momentum, step), for devices other than Flex.
    fn step_ops<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        velocity: Option<Tensor<D>>,
    ) -> (Tensor<D>, Option<Tensor<D>>) {
        let grad = match self.weight_decay {
            Some(wd) => tensor.clone().mul_scalar(wd).add(grad),
            None => grad,
        };
        let (grad, velocity) = match (self.momentum, velocity) {
            (None, _) => (grad, None),
            (Some(m), Some(v)) => {
                let v = grad
                    .mul_scalar(1.0 - m.dampening)
                    .add(v.mul_scalar(m.momentum as f32));
                (v.clone(), Some(v))
            }
            (Some(_), None) => (grad.clone(), Some(grad)),
        };
        (tensor - grad.mul_scalar(lr), velocity)
    }
}

/// The Flex tensor inside `tensor`, or `tensor` back when it lives elsewhere.
// The error is the tensor handed back by value, as big as the success would be as a Tensor.
#[allow(clippy::result_large_err)]
fn flex_tensor<const D: usize>(tensor: Tensor<D>) -> Result<burn_flex::FlexTensor, Tensor<D>> {
    let device = tensor.device();
    if device != Device::flex() || device.is_autodiff() || tensor.dtype() != DType::F32 {
        return Err(tensor);
    }
    match tensor.try_into_primitive::<Flex>() {
        Ok(t) => Ok(t),
        // Checked above: a plain Flex float tensor converts.
        Err(e) => unreachable!("a Flex f32 tensor without autodiff: {e:?}"),
    }
}

fn from_flex<const D: usize>(t: burn_flex::FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(t)
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = FusedSgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // Like Burn's Sgd, a velocity without momentum (a foreign state) is dropped.
        let velocity = state
            .and_then(|s| s.velocity)
            .filter(|_| self.momentum.is_some());
        let flex = (flex_tensor(tensor), flex_tensor(grad));
        let (tensor, grad, velocity) = match flex {
            (Ok(p), Ok(g)) => {
                let v = match velocity.map(flex_tensor) {
                    None => Ok(None),
                    Some(Ok(v)) => Ok(Some(v)),
                    Some(Err(v)) => Err(v),
                };
                match v {
                    Ok(v) => match sgd_step(p, g, v, &self.hyper(lr)) {
                        Ok((p, v)) => {
                            let velocity = v.map(from_flex);
                            return (from_flex(p), Some(FusedSgdState { velocity }));
                        }
                        Err((p, g, v)) => (from_flex(p), from_flex(g), v.map(from_flex)),
                    },
                    Err(v) => (from_flex(p), from_flex(g), Some(v)),
                }
            }
            (p, g) => (
                p.map_or_else(|t| t, from_flex),
                g.map_or_else(|t| t, from_flex),
                velocity,
            ),
        };
        let (tensor, velocity) = self.step_ops(lr, tensor, grad, velocity);
        (tensor, Some(FusedSgdState { velocity }))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.velocity = state.velocity.map(|v| v.to_device(device));
        state
    }
}

/// The leaf names of Burn's `SgdState { momentum: Option<MomentumState { velocity }> }`.
const MOMENTUM: &str = "momentum";
const VELOCITY: &str = "velocity";

impl<const D: usize> RecordState for FusedSgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(v) = &self.velocity {
            out.push_tensor(
                &join_path(prefix, MOMENTUM),
                VELOCITY,
                v.clone().into_data(),
            );
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let path = join_path(prefix, MOMENTUM);
        let velocity = if src.has_under(&path) {
            src.take_tensor(&path, VELOCITY)
                .map(|data| Tensor::from_data(data, device))
        } else {
            None
        };
        Some(Self { velocity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Arch, Classifier, cross_entropy};
    use crate::tensors;
    use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
    use burn::optim::{
        GradientsParams, OptimizerRecord, SgdConfig, decay::WeightDecayConfig,
        momentum::MomentumConfig,
    };

    fn burn_sgd(momentum: Option<Momentum>, wd: Option<f32>) -> ModuleOptimizer {
        SgdConfig::new()
            .with_momentum(momentum.map(|m| {
                MomentumConfig::new()
                    .with_momentum(m.momentum)
                    .with_dampening(m.dampening)
            }))
            .with_weight_decay(wd.map(WeightDecayConfig::new))
            .init()
    }

    /// The bits of every float parameter and buffer of `model`.
    fn params(model: &Classifier) -> Vec<u32> {
        struct Bits(Vec<u32>);
        impl ModuleVisitor for Bits {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let values = tensors::to_vec(param.val().inner());
                self.0.extend(values.iter().map(|v| v.to_bits()));
            }
        }
        let mut bits = Bits(Vec::new());
        model.visit(&mut bits);
        bits.0
    }

    fn same_bits(a: &[u32], b: &[u32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert!(
            diff.is_empty(),
            "{what}: {} of {} values differ, first at {:?}: {} vs {}",
            diff.len(),
            a.len(),
            diff.first(),
            f32::from_bits(a[diff[0]]),
            f32::from_bits(b[diff[0]])
        );
    }

    /// `steps` SGD steps of a small CNN on a fixed batch with `optim`, starting from `model`.
    fn train(
        mut model: Classifier,
        optim: &mut ModuleOptimizer,
        steps: usize,
        device: &Device,
    ) -> Classifier {
        let n = 8;
        let images: Vec<f32> = (0..n * 64)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
        for _ in 0..steps {
            let x = tensors::images(images.clone(), [n, 1, 8, 8], device);
            let y = tensors::labels(&labels, device);
            let loss = cross_entropy(model.forward(x), y).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.05, model, grads);
        }
        model
    }

    /// A small CNN, seeded once (tests on other threads reseed the shared generator).
    fn template(device: &Device) -> Classifier {
        device.seed(3);
        Classifier::new(&crate::models::tiny_spec(Arch::Cnn), device)
    }

    /// A copy of `template` in buffers of its own (so the optimizer may update them in place).
    fn start(template: &Classifier) -> Classifier {
        struct DeepCopy;
        impl ModuleMapper for DeepCopy {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                param.map(|t| {
                    let tracked = t.is_require_grad();
                    let copy = Tensor::from_data(t.to_data(), &t.device());
                    if tracked { copy.require_grad() } else { copy }
                })
            }
        }
        template.clone().map(&mut DeepCopy)
    }

    /// The fused update gives Burn's bits, for each combination of momentum, dampening and
    /// weight decay, over several steps (so later steps read the velocity).
    #[test]
    fn fused_sgd_gives_burns_bits() {
        let device = Device::flex().autodiff();
        let template = template(&device);
        let settings = [
            (None, None),
            (None, Some(5e-4)),
            (
                Some(Momentum {
                    momentum: 0.9,
                    dampening: 0.0,
                }),
                Some(5e-4),
            ),
            (
                Some(Momentum {
                    momentum: 0.8,
                    dampening: 0.1,
                }),
                None,
            ),
        ];
        for (momentum, wd) in settings {
            let ours = train(
                start(&template),
                &mut FusedSgd::new(momentum, wd).init(),
                3,
                &device,
            );
            let burns = train(start(&template), &mut burn_sgd(momentum, wd), 3, &device);
            same_bits(
                &params(&ours),
                &params(&burns),
                &format!("{momentum:?} {wd:?}"),
            );
            assert_ne!(
                params(&ours),
                params(&start(&template)),
                "the steps changed nothing"
            );
        }
    }

    /// A run saved with Burn's optimizer resumes with the fused one (and the other way
    /// round), giving the bits of an uninterrupted run.
    #[test]
    fn optimizer_state_moves_between_burns_sgd_and_the_fused_one() {
        let device = Device::flex().autodiff();
        let template = template(&device);
        let m = Some(Momentum {
            momentum: 0.9,
            dampening: 0.0,
        });
        let wd = Some(5e-4);
        let whole = train(start(&template), &mut burn_sgd(m, wd), 4, &device);
        for burn_first in [true, false] {
            let mut first = if burn_first {
                burn_sgd(m, wd)
            } else {
                FusedSgd::new(m, wd).init()
            };
            let half = train(start(&template), &mut first, 2, &device);
            let bytes = first.to_record().into_bytes().expect("record bytes");
            let record = OptimizerRecord::from_bytes(bytes).expect("record round trip");
            let second = if burn_first {
                FusedSgd::new(m, wd).init()
            } else {
                burn_sgd(m, wd)
            };
            let mut second = second.load_record(record);
            let resumed = train(half, &mut second, 2, &device);
            same_bits(
                &params(&resumed),
                &params(&whole),
                &format!("burn first: {burn_first}"),
            );
        }
    }

    /// On the CPU the Flex tensors of a step are taken out (the fused path runs), and a
    /// tensor of another kind is handed back.
    #[test]
    fn flex_tensors_take_the_fused_path() {
        let t = Tensor::<1>::from_floats([1.0, 2.0], &Device::flex());
        assert!(flex_tensor(t).is_ok());
        let ad = Tensor::<1>::from_floats([1.0, 2.0], &Device::flex().autodiff());
        assert!(flex_tensor(ad).is_err());
        let f64s = Tensor::<1>::from_floats([1.0], &Device::flex()).cast(DType::F64);
        assert!(flex_tensor(f64s).is_err());
    }
}
