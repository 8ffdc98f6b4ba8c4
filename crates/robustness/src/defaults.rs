//! The per-dataset defaults, in one table. Figures from the paper or the reference library
//! carry a comment naming their source ([R] = MadryLab `robustness` `defaults.py`, [P] = the
//! paper); the others are our choices, documented in the README.

use crate::data::DatasetKind;
use crate::models::Arch;
use crate::train::schedule::Schedule;
use crate::train::{OptimizerKind, TrainConfig};

/// Training defaults for a data set.
pub fn for_dataset(kind: DatasetKind) -> TrainConfig {
    let base = TrainConfig::default();
    match kind {
        // [R] TRAINING_DEFAULTS for CIFAR: 150 epochs, batch 128, weight decay 5e-4, step_lr 50;
        // TRAINING_ARGS: lr 0.1, momentum 0.9, gamma 0.1; data augmentation on.
        DatasetKind::Cifar10 => TrainConfig {
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
        DatasetKind::Digits | DatasetKind::Synthetic => None,
    }
}
