//! Timing of the framework steps our commands are made of (train step for now), with warm-up,
//! median and spread, and the analytic FLOP count that turns a time into GFLOP/s.

use crate::error::Result;
use crate::models::{Arch, Classifier, ModelSpec, cross_entropy};
use crate::tensors;
use crate::train::sgd::{FusedSgd, Momentum};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

/// Timings of one measured step, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// Median over the timed steps.
    pub median_ms: f64,
    /// Fastest step.
    pub min_ms: f64,
    /// Slowest step.
    pub max_ms: f64,
    /// Every timed step.
    pub samples_ms: Vec<f64>,
}

impl Timing {
    fn from_samples(mut samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        samples.shrink_to_fit();
        Self {
            median_ms: median,
            min_ms: sorted.first().copied().unwrap_or(0.0),
            max_ms: sorted.last().copied().unwrap_or(0.0),
            samples_ms: samples,
        }
    }
}

/// A seeded batch of uniform [0, 1) images and random labels for timing.
fn random_batch(spec: &ModelSpec, batch: usize) -> ([usize; 4], Vec<f32>, Vec<usize>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let shape = [batch, spec.channels, spec.height, spec.width];
    let images = (0..shape.iter().product::<usize>())
        .map(|_| rng.random::<f32>())
        .collect();
    let labels = (0..batch)
        .map(|_| rng.random_range(0..spec.num_classes))
        .collect();
    (shape, images, labels)
}

/// Times `iters` SGD train steps (forward, cross-entropy, backward, momentum + weight-decay
/// update) on random data after `warmup` untimed ones.
pub fn train_step(
    spec: &ModelSpec,
    batch: usize,
    warmup: usize,
    iters: usize,
    device: &Device,
) -> Result<Timing> {
    let device = device.clone().autodiff();
    device.seed(0);
    let mut model = Classifier::new(spec, &device);
    let momentum = Momentum {
        momentum: 0.9,
        dampening: 0.0,
    };
    let mut optim = FusedSgd::new(Some(momentum), Some(5e-4)).init();
    let (shape, images, labels) = random_batch(spec, batch);
    let mut samples = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let start = Instant::now();
        let x = tensors::images(images.clone(), shape, &device);
        let y = tensors::labels(&labels, &device);
        let loss = cross_entropy(model.forward(x), y).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
        // Reading the loss waits for the step to finish on asynchronous devices.
        let _ = tensors::to_vec(loss);
        if i >= warmup {
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(Timing::from_samples(samples))
}

/// Which attack-loop step to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackStep {
    /// One L2 PGD step as the PGD loop runs it: loss and input gradient of the mean
    /// cross-entropy (model in inference mode), normalised step, projection onto the eps-ball,
    /// clamp to [0, 1]. eps 0.5, step 0.1 (the D_det construction's settings).
    Pgd,
    /// One representation-inversion step (D_R / D_NR construction): input gradient of
    /// ||g(x) - g(x_target)||_2, normalised step, clamp to [0, 1].
    Inversion,
}

/// Times `iters` steps of an attack loop on random data after `warmup` untimed ones, through
/// the same functions the PGD loop uses.
pub fn attack_step(
    kind: AttackStep,
    spec: &ModelSpec,
    batch: usize,
    warmup: usize,
    iters: usize,
    device: &Device,
) -> Result<Timing> {
    use crate::attack::{self, threat};
    let plain = device.clone().without_autodiff();
    plain.seed(0);
    let model = Classifier::new(spec, &plain).for_inference();
    let (shape, images, labels) = random_batch(spec, batch);
    let x0 = tensors::images(images.clone(), shape, &plain);
    let y = tensors::labels(&labels, &plain);
    let (constraint, sign) = match kind {
        AttackStep::Pgd => (threat::Constraint::L2, 1.0),
        AttackStep::Inversion => (threat::Constraint::Unconstrained, -1.0),
    };
    let ball = threat::threat_model(constraint, 0.5, 0.01);
    // Inversion matches the representation of the batch rolled by one image.
    let target = model.forward_features(x0.clone().roll_dim(1, 0));
    let invert = crate::construct::robust::representation_loss(target, false);
    let ce = attack::loss::LossKind::CrossEntropy;
    let loss: &dyn attack::loss::AttackLoss = match kind {
        AttackStep::Pgd => &ce,
        AttackStep::Inversion => &invert,
    };
    let mut x = x0.clone();
    let mut samples = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let start = Instant::now();
        let (_, grad) = attack::loss_and_grad(&model, loss, &x, &y, sign);
        x = ball.project(x + ball.step(grad).mul_scalar(0.1), &x0);
        // Reading a value waits for the step to finish on asynchronous devices.
        let _ = tensors::to_vec(x.clone().slice([0..1, 0..1, 0..1, 0..1]));
        if i >= warmup {
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(Timing::from_samples(samples))
}

/// Floating-point operations of one attack step for a batch: a forward and the gradient with
/// respect to the input (about one more forward), as the PyTorch side counts it.
pub fn attack_step_flops(spec: &ModelSpec, batch: usize) -> f64 {
    2.0 * forward_flops(spec) * batch as f64
}

/// Where a train step's time goes: medians of the same batch through an inference forward,
/// a forward + backward (gradients of all parameters), and the full step with the SGD update.
#[derive(Clone, Debug, Serialize)]
pub struct Phases {
    /// Inference forward (no autodiff).
    pub forward_ms: f64,
    /// Forward with autodiff + backward.
    pub forward_backward_ms: f64,
    /// The full train step (forward, backward, optimizer update).
    pub train_step_ms: f64,
}

/// Times the phases of a train step (see [`Phases`]).
pub fn phases(
    spec: &ModelSpec,
    batch: usize,
    warmup: usize,
    iters: usize,
    device: &Device,
) -> Result<Phases> {
    let plain = device.clone().without_autodiff();
    let ad = plain.clone().autodiff();
    ad.seed(0);
    let model = Classifier::new(spec, &ad);
    let (shape, images, labels) = random_batch(spec, batch);
    let time = |f: &mut dyn FnMut()| {
        let mut samples = Vec::with_capacity(iters);
        for i in 0..warmup + iters {
            let start = Instant::now();
            f();
            if i >= warmup {
                samples.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        Timing::from_samples(samples).median_ms
    };
    let inference = burn::module::Module::valid(&model);
    let forward_ms = time(&mut || {
        let x = tensors::images(images.clone(), shape, &plain);
        let _ = tensors::to_vec(inference.forward(x));
    });
    let forward_backward_ms = time(&mut || {
        let x = tensors::images(images.clone(), shape, &ad);
        let y = tensors::labels(&labels, &ad);
        let loss = cross_entropy(model.forward(x), y).mean();
        let grads = loss.backward();
        drop(grads);
        let _ = tensors::to_vec(loss);
    });
    let train_step_ms = train_step(spec, batch, warmup, iters, device)?.median_ms;
    Ok(Phases {
        forward_ms,
        forward_backward_ms,
        train_step_ms,
    })
}

/// Floating-point operations of one forward pass for one image (2 per multiply-add of the conv
/// and linear layers; normalisation, activations and pooling are not counted).
pub fn forward_flops(spec: &ModelSpec) -> f64 {
    let (c, h, w, k) = (spec.channels, spec.height, spec.width, spec.num_classes);
    let conv = |cin: usize, cout: usize, kk: usize, oh: usize, ow: usize| {
        2.0 * (cin * cout * kk * kk * oh * ow) as f64
    };
    let linear = |i: usize, o: usize| 2.0 * (i * o) as f64;
    match spec.arch {
        Arch::Linear => linear(c * h * w, k),
        Arch::Mlp => linear(c * h * w, 512) + linear(512, 512) + linear(512, k),
        Arch::Cnn => {
            let (mut f, mut hh, mut ww, mut cin) = (0.0, h, w, c);
            for cout in [32, 64, 128] {
                f += conv(cin, cout, 3, hh, ww);
                hh /= 2;
                ww /= 2;
                cin = cout;
            }
            f + linear(128 * hh.max(1) * ww.max(1), 256) + linear(256, k)
        }
        Arch::Resnet18 | Arch::Resnet50 | Arch::Resnet18Imagenet | Arch::Resnet50Imagenet => {
            let bottleneck = matches!(spec.arch, Arch::Resnet50 | Arch::Resnet50Imagenet);
            let counts = if bottleneck {
                [3, 4, 6, 3]
            } else {
                [2, 2, 2, 2]
            };
            let imagenet = matches!(spec.arch, Arch::Resnet18Imagenet | Arch::Resnet50Imagenet);
            let (mut f, mut hh, mut ww) = if imagenet {
                // 7x7 stride-2 convolution (padding 3), then a 3x3 stride-2 max-pool (padding 1).
                let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
                (conv(c, 64, 7, oh, ow), oh.div_ceil(2), ow.div_ceil(2))
            } else {
                (conv(c, 64, 3, h, w), h, w)
            };
            let mut cin = 64;
            for (stage, &count) in counts.iter().enumerate() {
                let planes = 64usize << stage;
                for i in 0..count {
                    let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                    let (oh, ow) = (hh.div_ceil(stride), ww.div_ceil(stride));
                    let cout = if bottleneck { planes * 4 } else { planes };
                    if bottleneck {
                        f += conv(cin, planes, 1, hh, ww)
                            + conv(planes, planes, 3, oh, ow)
                            + conv(planes, cout, 1, oh, ow);
                    } else {
                        f += conv(cin, planes, 3, oh, ow) + conv(planes, planes, 3, oh, ow);
                    }
                    if stride != 1 || cin != cout {
                        f += conv(cin, cout, 1, oh, ow);
                    }
                    (hh, ww, cin) = (oh, ow, cout);
                }
            }
            f + linear(cin, k)
        }
        Arch::Vgg11 => {
            let layers: [(usize, bool); 8] = [
                (64, true),
                (128, true),
                (256, false),
                (256, true),
                (512, false),
                (512, true),
                (512, false),
                (512, true),
            ];
            let (mut f, mut hh, mut ww, mut cin) = (0.0, h, w, c);
            for (cout, pool) in layers {
                f += conv(cin, cout, 3, hh, ww);
                cin = cout;
                if pool && hh.min(ww) >= 2 {
                    hh /= 2;
                    ww /= 2;
                }
            }
            f + linear(512, k)
        }
    }
}

/// FLOPs of one train step for a batch: forward + backward (about twice the forward: gradients
/// with respect to activations and to weights).
pub fn train_step_flops(spec: &ModelSpec, batch: usize) -> f64 {
    3.0 * forward_flops(spec) * batch as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Arch) -> ModelSpec {
        ModelSpec {
            arch,
            channels: 3,
            height: 32,
            width: 32,
            num_classes: 10,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            images: true,
        }
    }

    #[test]
    fn resnet18_forward_flops_match_the_published_0_56_gmacs() {
        // The CIFAR ResNet-18 is commonly quoted at 0.56 GMACs per 32x32 image.
        let gmacs = forward_flops(&spec(Arch::Resnet18)) / 2e9;
        assert!((gmacs - 0.556).abs() < 0.01, "{gmacs}");
    }

    #[test]
    fn imagenet_resnets_forward_flops_match_the_published_gmacs() {
        // torchvision's ResNet-18 / ResNet-50 at 224x224: 1.82 / 4.11 GMACs per image.
        for (arch, published) in [
            (Arch::Resnet18Imagenet, 1.82),
            (Arch::Resnet50Imagenet, 4.11),
        ] {
            let s = ModelSpec {
                height: 224,
                width: 224,
                num_classes: 1000,
                ..spec(arch)
            };
            let gmacs = forward_flops(&s) / 2e9;
            assert!((gmacs - published).abs() < 0.03, "{arch}: {gmacs}");
        }
    }

    #[test]
    fn timing_median_of_even_and_odd_counts() {
        assert_eq!(Timing::from_samples(vec![3.0, 1.0, 2.0]).median_ms, 2.0);
        assert_eq!(
            Timing::from_samples(vec![4.0, 1.0, 2.0, 3.0]).median_ms,
            2.5
        );
    }
}
