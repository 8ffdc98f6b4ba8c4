//! Transferability (paper Sec. 3.3, Figure 3): adversarial examples made on one model, tried
//! on others. The examples are computed once per batch on the source and shown to every target.

use super::{AttackConfig, AttackKind, attack_batch};
use crate::data::Dataset;
use crate::error::Result;
use crate::models::Classifier;
use crate::tensors;
use burn::prelude::*;
use serde::Serialize;

/// How adversarial examples of the source fare on one target model.
#[derive(Clone, Debug, Serialize)]
pub struct TransferRate {
    /// The target's clean accuracy on the examples.
    pub clean_accuracy: f64,
    /// The target's accuracy on the source's adversarial examples.
    pub adversarial_accuracy: f64,
    /// Transfer success rate: of the examples the target classifies correctly when clean, the
    /// fraction it misclassifies after the source's perturbation.
    pub success_rate: f64,
}

/// The source's own numbers and one [`TransferRate`] per target.
#[derive(Clone, Debug, Serialize)]
pub struct TransferReport {
    /// Attack success on the source itself (as a target).
    pub source: TransferRate,
    /// Per target, in the order given.
    pub targets: Vec<TransferRate>,
    /// Number of examples.
    pub examples: usize,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    clean: usize,
    adv: usize,
    flipped: usize,
}

impl Counts {
    fn add(&mut self, clean: &[usize], adv: &[usize], labels: &[usize]) {
        for ((&c, &a), &y) in clean.iter().zip(adv).zip(labels) {
            self.clean += usize::from(c == y);
            self.adv += usize::from(a == y);
            self.flipped += usize::from(c == y && a != y);
        }
    }

    fn rate(self, n: usize) -> TransferRate {
        let frac = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f64 / of as f64 };
        TransferRate {
            clean_accuracy: frac(self.clean, n),
            adversarial_accuracy: frac(self.adv, n),
            success_rate: frac(self.flipped, self.clean),
        }
    }
}

/// Untargeted adversarial examples of `source` on every example of `data` (true labels), and
/// how each of `targets` classifies them. Batch i's random stream derives from (seed, i).
#[allow(clippy::too_many_arguments)]
pub fn transfer(
    source: &Classifier,
    targets: &[Classifier],
    data: &Dataset,
    kind: AttackKind,
    config: &AttackConfig,
    batch_size: usize,
    seed: u64,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<TransferReport> {
    let device = device.clone().without_autodiff();
    let source = source.for_inference();
    let targets: Vec<Classifier> = targets.iter().map(|t| t.for_inference()).collect();
    let n = data.len();
    let batch_size = batch_size.max(1);
    let mut own = Counts::default();
    let mut counts = vec![Counts::default(); targets.len()];
    for i in 0..n.div_ceil(batch_size) {
        let end = ((i + 1) * batch_size).min(n);
        let (x0, labels, mut rng) = super::nth_batch(data, i, batch_size, seed, &device);
        let y = tensors::labels(labels, &device);
        let adv = attack_batch(kind, &source, &x0, &y, config, &mut rng)?.adv;
        let predict = |m: &Classifier, x: &Tensor<4>| tensors::argmax_rows(m.forward(x.clone()));
        own.add(&predict(&source, &x0), &predict(&source, &adv), labels);
        for (t, count) in targets.iter().zip(&mut counts) {
            count.add(&predict(t, &x0), &predict(t, &adv), labels);
        }
        progress(end, n);
    }
    Ok(TransferReport {
        source: own.rate(n),
        targets: counts.into_iter().map(|c| c.rate(n)).collect(),
        examples: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{Arch, ModelSpec};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn model(seed: u64, device: &Device) -> Classifier {
        let spec = ModelSpec {
            arch: Arch::Linear,
            channels: 1,
            height: 4,
            width: 4,
            num_classes: 3,
            mean: vec![0.5],
            std: vec![0.25],
            images: true,
        };
        device.seed(seed);
        Classifier::new(&spec, device)
    }

    #[test]
    fn the_source_as_its_own_target_matches_its_own_rate_and_eps_zero_transfers_nothing() {
        let device = Device::flex();
        let source = model(1, &device);
        let other = model(2, &device);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let images: Vec<f32> = (0..40 * 16).map(|_| rand::Rng::random(&mut rng)).collect();
        let labels: Vec<usize> = (0..40).map(|i| i % 3).collect();
        let data = Dataset {
            name: "t".into(),
            images,
            labels,
            channels: 1,
            height: 4,
            width: 4,
            class_names: vec!["a".into(), "b".into(), "c".into()],
        };
        let config = AttackConfig {
            eps: 2.0,
            steps: 10,
            ..AttackConfig::default()
        };
        let targets = [source.clone(), other.clone()];
        let r = transfer(
            &source,
            &targets,
            &data,
            AttackKind::Pgd,
            &config,
            16,
            0,
            &device,
            |_, _| {},
        )
        .expect("transfer");
        let (a, b) = (&r.source, &r.targets[0]);
        assert_eq!(a.success_rate, b.success_rate);
        assert_eq!(a.clean_accuracy, b.clean_accuracy);
        assert!(a.success_rate > 0.5, "{a:?}");
        let none = AttackConfig { eps: 0.0, ..config };
        let r = transfer(
            &source,
            &targets,
            &data,
            AttackKind::Pgd,
            &none,
            16,
            0,
            &device,
            |_, _| {},
        )
        .expect("transfer");
        assert!(r.targets.iter().all(|t| t.success_rate == 0.0));
    }
}
