//! The training step, on one device or data-parallel over several.
//!
//! Data-parallel: the batch is cut into one contiguous slice per device; every device runs the
//! forward, the loss (and, for adversarial training, the attack) and the backward of its slice
//! in its own thread; the gradients are moved to the first device and summed there, and one
//! optimizer step updates the model, which every replica copies before the next step. Each
//! slice's loss is its mean weighted by the slice's share of the batch, so the summed gradient
//! is the gradient of the whole batch's mean loss: up to float rounding, the step of one device.
//! What differs is batch norm: each replica normalises with its own slice's statistics, and the
//! running statistics kept are those of the first device's slice (PyTorch's DDP without
//! SyncBatchNorm does the same).

use super::objective::{Mix, per_example_loss};
use crate::attack::{self, AttackConfig};
use crate::error::{Error, Result};
use crate::models::{Classifier, ModelSpec};
use crate::tensors;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;

/// A copy of the model on another device. Its weights are reloaded from the main model before
/// every step through a record, which keeps the parameter ids (so its gradients add up with the
/// main model's) and gives it batch-norm running statistics of its own (module clones share
/// theirs, and moving a clone would move the main model's).
pub(crate) struct Replica {
    /// The replica's device, with autodiff.
    device: Device,
    /// A model of the right shape on `device`, loaded with the main model's weights each step.
    template: Classifier,
}

impl Replica {
    /// A replica on `device` (plain or autodiff) for models of `spec`.
    pub(crate) fn new(spec: &ModelSpec, device: &Device) -> Self {
        let device = device.clone().autodiff();
        Self {
            template: Classifier::new(spec, &device),
            device,
        }
    }

    fn copy_of(&self, model: &Classifier) -> Result<Classifier> {
        self.template
            .clone()
            .try_load_record(model.clone().into_record())
            .map_err(|e| Error::Config(format!("copying the model to {:?}: {e}", self.device)))
    }
}

/// What one step reports back to the loop.
pub(crate) struct StepOutput {
    /// The gradient of the batch's mean loss, on the main model's device.
    pub grads: GradientsParams,
    /// Mean loss over the batch.
    pub loss: f64,
    /// Predicted class of every example, in batch order.
    pub predictions: Vec<usize>,
}

/// Sizes of `parts` contiguous slices of `n` examples, as even as possible (the first ones one
/// larger); empty slices are left out, so a batch smaller than the device count uses fewer.
pub(crate) fn slice_sizes(n: usize, parts: usize) -> Vec<usize> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .filter(|&s| s > 0)
        .collect()
}

/// Where the step's attack draws its randomness: the stream of slice `r` of a batch.
pub(crate) type SliceRng<'a> = &'a dyn Fn(usize) -> ChaCha8Rng;

/// What one batch (or one slice of it) is fitted to.
#[derive(Clone, Copy)]
pub(crate) struct Targets<'a> {
    /// Each example's label.
    pub labels: &'a [usize],
    /// Mixup's partner labels (as long as `labels`) and weight, when the batch was mixed.
    pub mix: Option<(&'a [usize], f32)>,
    /// Label smoothing (0: plain cross-entropy).
    pub smoothing: f32,
}

impl<'a> Targets<'a> {
    /// Plain labels, no mixup, no smoothing.
    #[cfg(test)]
    pub(crate) fn plain(labels: &'a [usize]) -> Self {
        Self {
            labels,
            mix: None,
            smoothing: 0.0,
        }
    }

    /// `labels` with the batch's mix (if any) and smoothing.
    pub(crate) fn new(labels: &'a [usize], mix: Option<&'a Mix>, smoothing: f32) -> Self {
        Self {
            labels,
            mix: mix.map(|m| (m.partner_labels.as_slice(), m.lambda)),
            smoothing,
        }
    }

    /// Examples `start..start + len`.
    fn slice(&self, start: usize, len: usize) -> Self {
        Self {
            labels: &self.labels[start..start + len],
            mix: self
                .mix
                .map(|(partner, lambda)| (&partner[start..start + len], lambda)),
            smoothing: self.smoothing,
        }
    }
}

/// The gradient of one batch's mean loss: on the main model's device alone when `replicas` is
/// empty, otherwise data-parallel with the main model taking the first slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    model: &Classifier,
    replicas: &[Replica],
    images: Vec<f32>,
    targets: Targets<'_>,
    shape: [usize; 3],
    attack: Option<&AttackConfig>,
    rng: SliceRng<'_>,
    device: &Device,
    epoch: usize,
    b: usize,
) -> Result<StepOutput> {
    let n = targets.labels.len();
    let sizes = slice_sizes(n, replicas.len() + 1);
    let weight = |r: usize| sizes[r] as f32 / n as f32;

    let results: Vec<Result<SliceOutput>> = if sizes.len() == 1 {
        vec![slice_step(
            model,
            images,
            targets,
            shape,
            1.0,
            attack,
            rng(0),
            device,
            None,
        )]
    } else {
        let image_len = shape.iter().product::<usize>();
        let mut starts = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for s in &sizes {
            starts.push(at);
            at += s;
        }
        let slice = |r: usize| {
            let (start, len) = (starts[r], sizes[r]);
            (
                images[start * image_len..(start + len) * image_len].to_vec(),
                targets.slice(start, len),
            )
        };
        let main_plain = device.clone().without_autodiff();
        let copies = replicas
            .iter()
            .take(sizes.len() - 1)
            .map(|replica| replica.copy_of(model).map(|m| (replica, m)))
            .collect::<Result<Vec<_>>>()?;
        std::thread::scope(|scope| {
            let handles: Vec<_> = copies
                .into_iter()
                .enumerate()
                .map(|(i, (replica, copy))| {
                    let r = i + 1;
                    let (images, targets) = slice(r);
                    let (w, slice_rng, main) = (weight(r), rng(r), &main_plain);
                    scope.spawn(move || {
                        slice_step(
                            &copy,
                            images,
                            targets,
                            shape,
                            w,
                            attack,
                            slice_rng,
                            &replica.device,
                            Some(main),
                        )
                    })
                })
                .collect();
            let (images, targets) = slice(0);
            let mut results = vec![slice_step(
                model,
                images,
                targets,
                shape,
                weight(0),
                attack,
                rng(0),
                device,
                None,
            )];
            for handle in handles {
                results.push(handle.join().unwrap_or_else(|_| {
                    Err(Error::Config(
                        "a data-parallel replica's thread panicked".into(),
                    ))
                }));
            }
            results
        })
    };

    let mut accumulator = GradientsAccumulator::<Classifier>::new();
    let (mut loss_sum, mut predictions) = (0f64, Vec::with_capacity(n));
    for (r, result) in results.into_iter().enumerate() {
        let out = result?;
        if !out.loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                epoch: epoch + 1,
                batch: b,
                loss: out.loss,
            });
        }
        loss_sum += out.loss as f64 * sizes[r] as f64;
        predictions.extend(out.predictions);
        if sizes.len() == 1 {
            return Ok(StepOutput {
                grads: out.grads,
                loss: out.loss as f64,
                predictions,
            });
        }
        accumulator.accumulate(model, out.grads);
    }
    Ok(StepOutput {
        grads: accumulator.grads(),
        loss: loss_sum / n as f64,
        predictions,
    })
}

struct SliceOutput {
    grads: GradientsParams,
    loss: f32,
    predictions: Vec<usize>,
}

/// Forward, loss and backward of one slice on `device` (the attack first, for adversarial
/// training); the gradients are moved to `main` when given.
#[allow(clippy::too_many_arguments)]
fn slice_step(
    model: &Classifier,
    images: Vec<f32>,
    targets: Targets<'_>,
    [c, h, w]: [usize; 3],
    weight: f32,
    attack: Option<&AttackConfig>,
    mut rng: ChaCha8Rng,
    device: &Device,
    main: Option<&Device>,
) -> Result<SliceOutput> {
    let labels = targets.labels;
    let n = labels.len();
    let x = match attack {
        None => tensors::images(images, [n, c, h, w], device),
        Some(attack) => {
            // The attack runs on an inference-mode copy of the model (batch norm frozen).
            let plain = device.clone().without_autodiff();
            let x0 = tensors::images(images, [n, c, h, w], &plain);
            let y0 = tensors::labels(labels, &plain);
            attack::pgd(model, &x0, &y0, attack, &attack.loss, &mut rng)?
                .adv
                .autodiff()
        }
    };
    let logits = model.forward(x);
    let loss = per_example_loss(
        logits.clone(),
        labels,
        targets.mix,
        targets.smoothing,
        device,
    )
    .mean();
    let loss_value = tensors::to_vec(loss.clone())[0];
    // Weighting by the slice's share of the batch makes the replicas' gradients add up to the
    // whole batch's; one device (weight 1) keeps the plain mean, bit for bit.
    let loss = if weight == 1.0 {
        loss
    } else {
        loss.mul_scalar(weight)
    };
    let mut grads = GradientsParams::from_grads(loss.backward(), model);
    if let Some(main) = main {
        grads = grads.to_device(main, model);
    }
    Ok(SliceOutput {
        grads,
        loss: loss_value,
        predictions: tensors::argmax_rows(logits),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::loader::Batch;
    use crate::models::Arch;
    use burn::optim::SgdConfig;
    use rand::{Rng, SeedableRng};

    use crate::models::tiny_spec as spec;

    fn batch(n: usize) -> Batch {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        Batch {
            images: (0..n * 64).map(|_| rng.random::<f32>()).collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            indices: (0..n).collect(),
        }
    }

    /// Logits of `model` after one plain SGD step (lr 1) with `grads`.
    fn after_step(model: &Classifier, grads: GradientsParams, probe: &Tensor<4>) -> Vec<f32> {
        let mut sgd = SgdConfig::new().init();
        let stepped = sgd.step(1.0, model.clone(), grads);
        tensors::to_vec(stepped.valid().forward(probe.clone()))
    }

    #[test]
    fn data_parallel_gradients_add_up_to_the_whole_batch() {
        let cpu = Device::flex();
        let device = cpu.clone().autodiff();
        device.seed(11);
        let spec = spec(Arch::Mlp);
        let model = Classifier::new(&spec, &device);
        // 10 examples over 3 devices: slices of 4, 3 and 3, weighted 0.4, 0.3, 0.3.
        let batch = batch(10);
        let no_rng = |_: usize| ChaCha8Rng::seed_from_u64(0);
        let probe = tensors::images(batch.images.clone(), [10, 1, 8, 8], &cpu);
        // Plain labels, then mixup partners with label smoothing: each slice must get its own
        // examples' partners.
        let partners: Vec<usize> = batch.labels.iter().rev().copied().collect();
        let mixed = Targets {
            labels: &batch.labels,
            mix: Some((&partners, 0.7)),
            smoothing: 0.1,
        };
        for targets in [Targets::plain(&batch.labels), mixed] {
            let one = step(
                &model,
                &[],
                batch.images.clone(),
                targets,
                [1, 8, 8],
                None,
                &no_rng,
                &device,
                0,
                0,
            )
            .expect("one device");
            let replicas = [Replica::new(&spec, &cpu), Replica::new(&spec, &cpu)];
            let three = step(
                &model,
                &replicas,
                batch.images.clone(),
                targets,
                [1, 8, 8],
                None,
                &no_rng,
                &device,
                0,
                0,
            )
            .expect("three devices");
            assert_eq!(one.predictions, three.predictions);
            assert!(
                (one.loss - three.loss).abs() < 1e-5,
                "{} {}",
                one.loss,
                three.loss
            );
            let before = tensors::to_vec(model.valid().forward(probe.clone()));
            let a = after_step(&model, one.grads, &probe);
            let b = after_step(&model, three.grads, &probe);
            let moved = a
                .iter()
                .zip(&before)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let diff = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                moved > 1e-2,
                "the step must change the model (moved {moved})"
            );
            assert!(
                diff < 1e-4 * moved.max(1.0),
                "one device vs three: {diff} (moved {moved})"
            );
        }
    }

    #[test]
    fn one_replica_that_gets_no_slice_is_left_out() {
        // Two devices and a batch of one: the second device has nothing to do.
        let cpu = Device::flex();
        let device = cpu.clone().autodiff();
        let spec = spec(Arch::Cnn);
        let model = Classifier::new(&spec, &device);
        let no_rng = |_: usize| ChaCha8Rng::seed_from_u64(0);
        let one = batch(1);
        let out = step(
            &model,
            &[Replica::new(&spec, &cpu)],
            one.images,
            Targets::plain(&one.labels),
            [1, 8, 8],
            None,
            &no_rng,
            &device,
            0,
            0,
        )
        .expect("one example, two devices");
        assert_eq!(out.predictions.len(), 1);
        assert!(out.loss.is_finite());
    }

    #[test]
    fn slices_cover_the_batch_evenly() {
        assert_eq!(slice_sizes(128, 1), vec![128]);
        assert_eq!(slice_sizes(10, 3), vec![4, 3, 3]);
        assert_eq!(slice_sizes(2, 4), vec![1, 1]);
        assert_eq!(slice_sizes(7, 2).iter().sum::<usize>(), 7);
    }
}
