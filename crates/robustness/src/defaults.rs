//! The per-dataset defaults, in one table. Figures from the paper or the reference library
//! carry a comment naming their source ([R] = MadryLab `robustness` `defaults.py`, [P] = the
//! paper); the others are our choices, documented in the README.

use crate::attack::AttackConfig;
use crate::attack::threat::Constraint;
use crate::construct::{ConstructConfig, ConstructKind, Start};
use crate::data::DatasetKind;
use crate::models::Arch;
use crate::synthesis::{InvertConfig, SynthesisConfig, VisualizeConfig};
use crate::train::schedule::Schedule;
use crate::train::{OptimizerKind, TrainConfig};

/// Construction settings for a data set: the paper's (C.4, C.5) for CIFAR-10 and the others,
/// except where a data set's images are too small for them (ours, measured, see README).
pub fn construction(source: DatasetKind, kind: ConstructKind) -> ConstructConfig {
    let mut config = ConstructConfig::paper(kind);
    if source == DatasetKind::Digits && kind.relabels() {
        // Ours: on the 8x8 digits, eps 0.5 moves only 4.9% of the images to their D_det
        // target (standard CNN); eps 3 (~0.375 per pixel RMS) reaches 92%.
        config.attack.eps = 3.0;
        config.attack.step_size = Some(0.6);
    }
    config
}

/// Training defaults for a constructed data set built from `source` ([P] Table 3, CIFAR rows:
/// momentum 0.9, weight decay 5e-4, batch 128, one learning-rate drop (x0.1); D_det: lr 0.1
/// without augmentation; D_rand: lr 0.01 with augmentation; D_R, D_NR: lr 0.1 with
/// augmentation). The paper gives no epoch counts; ours: the source's, with the drop after two
/// thirds of them (where the reference library's CIFAR schedule drops at epoch 100 of 150).
pub fn for_constructed(source: DatasetKind, kind: ConstructKind) -> TrainConfig {
    let base = for_dataset(source);
    let (lr, augment) = match kind {
        ConstructKind::Det => (0.1, false),
        ConstructKind::Rand => (0.01, true),
        ConstructKind::Robust | ConstructKind::NonRobust => (0.1, true),
    };
    TrainConfig {
        lr,
        batch_size: 128,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: Schedule::Step {
            step: (base.epochs * 2 / 3).max(1),
            gamma: 0.1,
        },
        // Flips change digits; the augmentation switch only applies to natural images.
        augment: augment && base.augment,
        ..base
    }
}

/// Image side from which an image folder's default architecture is the ImageNet ResNet-18.
pub const IMAGENET_STEM_MIN_SIDE: usize = 128;

/// The default architecture of an image folder whose images are `side` pixels on their
/// shorter side (ours): the reference library gives its ImageNet-derived sets (ImageNet,
/// RestrictedImageNet, CustomImageNet, at 224x224) its ImageNet models and CINIC-10 (32x32) its
/// CIFAR ones; we decide by size, `resnet18-imagenet` from [`IMAGENET_STEM_MIN_SIDE`] on (its
/// stem divides the side by 4 before the first block: a CIFAR ResNet-18 at 224x224 costs 15x
/// the multiply-adds), `resnet18` below (CINIC-10, Tiny ImageNet's 64x64).
pub fn folder_arch(side: usize) -> Arch {
    if side >= IMAGENET_STEM_MIN_SIDE {
        Arch::Resnet18Imagenet
    } else {
        Arch::Resnet18
    }
}

/// Training defaults for a data set.
pub fn for_dataset(kind: DatasetKind) -> TrainConfig {
    let base = TrainConfig::default();
    match kind {
        // [R] TRAINING_DEFAULTS for CIFAR: 150 epochs, batch 128, weight decay 5e-4, step_lr 50;
        // TRAINING_ARGS: lr 0.1, momentum 0.9, gamma 0.1; data augmentation on. An image folder
        // (ours) gets the same recipe: the reference library's CINIC-10 defaults are CIFAR's.
        DatasetKind::Cifar10 | DatasetKind::Folder => TrainConfig {
            dataset: kind,
            arch: Arch::Resnet18,
            epochs: 150,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Step {
                step: 50,
                gamma: 0.1,
            },
            augment: true,
            ..base
        },
        // Ours: the small CNN reaches 99% in a few epochs; no augmentation (flips change digits).
        DatasetKind::Mnist => TrainConfig {
            dataset: kind,
            arch: Arch::Cnn,
            epochs: 6,
            batch_size: 128,
            lr: 0.05,
            schedule: Schedule::Cosine,
            augment: false,
            ..base
        },
        // Ours: 1,437 training images of 8x8; small batches, no augmentation.
        DatasetKind::Digits => TrainConfig {
            dataset: kind,
            arch: Arch::Cnn,
            epochs: 30,
            batch_size: 32,
            lr: 0.05,
            schedule: Schedule::Cosine,
            augment: false,
            ..base
        },
        // Ours: the synthetic feature model of Tsipras et al. (vectors, not images).
        DatasetKind::Synthetic => TrainConfig {
            dataset: kind,
            arch: Arch::Mlp,
            epochs: 10,
            batch_size: 128,
            lr: 0.05,
            schedule: Schedule::Cosine,
            augment: false,
            ..base
        },
    }
}

/// The optimizer every dataset uses unless `--optimizer adam` is given.
pub const DEFAULT_OPTIMIZER: OptimizerKind = OptimizerKind::Sgd;

/// Input normalisation for a data set: `Some((mean, std))` where the reference library fixes
/// it, `None` where it is computed from the training split.
pub fn normalization(kind: DatasetKind) -> Option<(Vec<f32>, Vec<f32>)> {
    match kind {
        // [R] constants.CIFAR_MEAN / CIFAR_STD.
        DatasetKind::Cifar10 => Some((vec![0.4914, 0.4822, 0.4465], vec![0.2023, 0.1994, 0.2010])),
        // The usual MNIST statistics (torchvision examples).
        DatasetKind::Mnist => Some((vec![0.1307], vec![0.3081])),
        // An image folder: its training split's statistics (ours; the reference library fixes
        // CINIC-10's to the values those statistics give).
        DatasetKind::Digits | DatasetKind::Synthetic | DatasetKind::Folder => None,
    }
}

/// Adversarial-training attack for a data set and threat model; `eps` overrides the table's
/// radius (the step size then scales with it).
pub fn adversarial(kind: DatasetKind, constraint: Constraint, eps: Option<f64>) -> AttackConfig {
    let (default_eps, steps, step_ratio, random_start) = match (kind, constraint) {
        // [P] C.3, Table 4: l2 eps 0.5, 7 steps of eps/5, starting from the original image.
        // An image folder (ours): CIFAR-10's rows, as for its training defaults.
        (DatasetKind::Cifar10 | DatasetKind::Folder, Constraint::L2) => (0.5, 7, 0.2, false),
        // Madry et al. 2018: Linf 8/255, 7 steps of 2/255, random start.
        (DatasetKind::Cifar10 | DatasetKind::Folder, Constraint::Linf) => {
            (8.0 / 255.0, 7, 0.25, true)
        }
        // Madry et al. 2018: MNIST Linf 0.3, 40 steps of 0.01, random start.
        (DatasetKind::Mnist, Constraint::Linf) => (0.3, 40, 0.01 / 0.3, true),
        // Ours: the L2 radius that matches the CIFAR setting per pixel is sqrt(784/3072) * 0.5.
        (DatasetKind::Mnist, Constraint::L2) => (1.5, 40, 0.1 / 1.5, true),
        // Ours, for the other cases: 7 steps of eps/4 from a random start.
        (_, Constraint::Linf) => (0.1, 7, 0.25, true),
        (_, Constraint::L1) => (5.0, 7, 0.25, true),
        (_, _) => (0.5, 7, 0.25, true),
    };
    let eps = eps.unwrap_or(default_eps);
    AttackConfig {
        constraint,
        eps,
        step_size: Some(eps * step_ratio),
        steps,
        random_start,
        ..AttackConfig::default()
    }
}

/// Class-conditional generation ([`crate::synthesis::synthesize`]) for images of `shape`
/// (`[C, H, W]`). Santurkar et al. 2019 generation notebook, via ../shared/PAPER.md §5: CIFAR
/// eps 30, step 0.5, 60 iterations of targeted L2 PGD on cross-entropy from the seed, no random
/// start, GRAIN 1 (no downsampling) for 32x32; ImageNet (224x224) eps 40, step 1, 60
/// iterations, GRAIN 4 (a 3x56x56 = 9,408-dimensional seed distribution). Ours: ImageNet's
/// steps for images of at least [`IMAGENET_STEM_MIN_SIDE`] pixels, CIFAR's below (on 28x28 or
/// 8x8 images eps 30 exceeds the [0, 1] box's diameter, so the ball never binds); the grain of
/// [`seed_grain`].
pub fn synthesis(kind: DatasetKind, shape: [usize; 3]) -> SynthesisConfig {
    let _ = kind;
    let (eps, step) = if shape[1].min(shape[2]) >= IMAGENET_STEM_MIN_SIDE {
        (40.0, 1.0)
    } else {
        (30.0, 0.5)
    };
    SynthesisConfig {
        attack: crate::synthesis::generation_attack(eps, step, 60),
        grain: seed_grain(shape),
        batch_size: 64,
        seed: 0,
    }
}

/// Evaluation batch size for images of `shape` (`[C, H, W]`; ours): 256 up to 32x32 pixels, then
/// in inverse proportion to the pixel count, at least 8 (an attack's backward pass keeps every
/// activation of the batch: a ResNet-50 at 224x224 holds ~0.1 GB per image, so 256 would need
/// ~25 GB).
pub fn eval_batch([_, h, w]: [usize; 3]) -> usize {
    (256 * 32 * 32 / (h * w).max(1)).clamp(8, 256)
}

/// Largest dimension of the default seed distribution: the authors' ImageNet one (3x56x56).
pub const SEED_MAX_DIM: usize = 9408;

/// The smallest block size dividing both sides of `shape` (`[C, H, W]`) whose block-averaged
/// images have at most [`SEED_MAX_DIM`] values: 1 for CIFAR-10 (3,072), 4 for 224x224 (9,408,
/// the authors'), 2 for 64x64 and 4 for 128x128 (3,072 each). The largest common divisor when
/// none is small enough (the fit then refuses with a message naming `--grain`).
pub fn seed_grain([c, h, w]: [usize; 3]) -> usize {
    let divisors: Vec<usize> = (1..=h.min(w).max(1))
        .filter(|g| h % g == 0 && w % g == 0)
        .collect();
    divisors
        .iter()
        .copied()
        .find(|g| c * (h / g) * (w / g) <= SEED_MAX_DIM)
        .unwrap_or_else(|| divisors.last().copied().unwrap_or(1))
}

/// Feature visualisation ([`crate::synthesis::visualize_feature`]). Ours: the paper's text
/// gives no CIFAR setting (its paint-with-features uses eps 70, step 1, 140 iterations on
/// 224x224 ImageNet, ../shared/PAPER.md §5); we keep generation's regime of a ball about as
/// large as the image box (eps 40; a 3x32x32 [0, 1] box has diameter 55), normalised L2 steps
/// of 1 and 200 of them, starting from test images so each result can be read against its start.
pub fn feature_visualization(kind: DatasetKind) -> VisualizeConfig {
    let _ = kind;
    VisualizeConfig {
        attack: AttackConfig {
            constraint: Constraint::L2,
            eps: 40.0,
            step_size: Some(1.0),
            steps: 200,
            targeted: false,
            use_best: true,
            ..AttackConfig::default()
        },
        start: Start::Image,
        batch_size: 64,
        seed: 0,
    }
}

/// Representation inversion ([`crate::synthesis::invert`]): the D_R construction's attack
/// ([P] C.4 via [`construction`]: unconstrained normalised steps of 0.1, 1000 of them, clamped to
/// [0, 1]), starting from noise (paper D.1) so that nothing of the result comes from another
/// image.
pub fn inversion(kind: DatasetKind) -> InvertConfig {
    InvertConfig {
        attack: construction(kind, ConstructKind::Robust).attack,
        start: Start::Noise,
        normalized_loss: false,
        batch_size: 64,
        seed: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_grain_keeps_the_seed_distribution_at_most_9408_wide() {
        assert_eq!(seed_grain([3, 32, 32]), 1); // CIFAR: 3,072
        assert_eq!(seed_grain([1, 28, 28]), 1);
        assert_eq!(seed_grain([3, 224, 224]), 4); // the authors' 3x56x56 = 9,408
        assert_eq!(seed_grain([3, 64, 64]), 2);
        assert_eq!(seed_grain([3, 128, 128]), 4); // 2 would give 12,288
        assert_eq!(seed_grain([3, 225, 225]), 5); // 3 would give 16,875
        let [c, h, w] = [3, 96, 160];
        let g = seed_grain([c, h, w]);
        assert!(h % g == 0 && w % g == 0 && c * (h / g) * (w / g) <= SEED_MAX_DIM);
        assert_eq!(
            synthesis(DatasetKind::Folder, [3, 224, 224]).attack.eps,
            40.0
        );
        assert_eq!(
            synthesis(DatasetKind::Cifar10, [3, 32, 32]).attack.eps,
            30.0
        );
    }

    #[test]
    fn eval_batch_shrinks_with_the_image() {
        assert_eq!(eval_batch([1, 8, 8]), 256);
        assert_eq!(eval_batch([3, 32, 32]), 256);
        assert_eq!(eval_batch([3, 64, 64]), 64);
        assert_eq!(eval_batch([3, 128, 128]), 16);
        assert_eq!(eval_batch([3, 224, 224]), 8);
    }
}
