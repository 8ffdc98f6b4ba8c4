//! The robust and non-robust data sets (paper Sec. 3.1, C.4): re-synthesise each training
//! image x as the x_r that minimises ||g(x_r) - g(x)||_2, where g is the model's penultimate
//! representation, by normalised-gradient L2 steps without an eps-ball, clamped to [0, 1]. It
//! is the shared PGD loop with the unconstrained threat model and the loss below; the model is
//! adversarially trained for D_R and standard for D_NR.

use super::Start;
use super::relabel::{NOISE_STREAM, START_STREAM, stream};
use crate::attack::{self, AttackConfig, AttackOutput};
use crate::data::Dataset;
use crate::error::Result;
use crate::models::Classifier;
use burn::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Mean and standard deviation of the Gaussian-noise start (`--start noise`). The paper (D.1)
/// says only "Gaussian noise"; ours is a grey image with small noise, clamped to [0, 1].
pub const NOISE_MEAN: f32 = 0.5;
/// See [`NOISE_MEAN`].
pub const NOISE_STD: f32 = 0.05;

/// The training image example `i` starts from: another image of the `n`, drawn uniformly and
/// independently of the label ("x' ~ D", paper C.4), never the image `i` is built from
/// (`i % n`: with `--copies`, example `i >= n` is a further copy of image `i % n`) unless
/// `n` = 1.
pub fn start_index(seed: u64, i: usize, n: usize) -> usize {
    let mut rng = stream(seed, START_STREAM, i);
    loop {
        let j = rng.random_range(0..n);
        if j != i % n || n == 1 {
            return j;
        }
    }
}

/// Gaussian-noise start for example `i`: `len` values in [0, 1].
pub fn noise_start(seed: u64, i: usize, len: usize) -> Vec<f32> {
    let mut rng = stream(seed, NOISE_STREAM, i);
    let normal = Normal::new(NOISE_MEAN, NOISE_STD).expect("constant, valid parameters");
    (0..len)
        .map(|_| normal.sample(&mut rng).clamp(0.0, 1.0))
        .collect()
}

/// The start images of examples `indices` (each `pool.image_len()` values, concatenated):
/// another image of `pool` drawn by [`start_index`] (`Start::Image`), or [`noise_start`].
/// Shared by the D_R / D_NR construction and `robustness invert`.
pub fn start_images(
    start: Start,
    seed: u64,
    indices: impl IntoIterator<Item = usize>,
    pool: &Dataset,
) -> Vec<f32> {
    let per = pool.image_len();
    indices
        .into_iter()
        .flat_map(|i| match start {
            Start::Image => pool.image(start_index(seed, i, pool.len())).to_vec(),
            Start::Noise => noise_start(seed, i, per),
        })
        .collect()
}

/// Representation inversion: from `start` ([B, C, H, W] in [0, 1]), the images whose
/// representation matches that of `source` (same shape), by the shared PGD loop run as a
/// targeted attack with [`representation_loss`] (`attack` is the construction's, e.g.
/// [`super::ConstructConfig::paper`]'s unconstrained normalised steps). `labels` [B] are
/// passed to the loop but ignored by the loss. Returns the images and their final distances.
pub fn invert_representation(
    model: &Classifier,
    source: &Tensor<4>,
    start: &Tensor<4>,
    labels: &Tensor<1, Int>,
    attack: &AttackConfig,
    normalized: bool,
    rng: &mut ChaCha8Rng,
) -> Result<AttackOutput> {
    let target = model.forward_features(source.clone());
    let loss = representation_loss(target, normalized);
    attack::pgd(model, start, labels, attack, &loss, rng)
}

/// The representation-matching objective for the PGD loop (to be minimised, i.e. run as a
/// targeted attack): per example `||g(x_r) - target||_2`, divided by `||target||_2` when
/// `normalized` (the reference library's inversion example). target: [B, F] representations
/// of the images to match, computed once without gradient.
pub fn representation_loss(
    target: Tensor<2>,
    normalized: bool,
) -> impl Fn(&Classifier, Tensor<4>, &Tensor<1, Int>) -> Tensor<1> + Sync {
    let [b, _] = target.dims();
    let scale = if normalized {
        target
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .reshape([b])
            .add_scalar(1e-10)
    } else {
        Tensor::ones([b], &target.device())
    };
    move |model: &Classifier, x: Tensor<4>, _labels: &Tensor<1, Int>| {
        let rep = model.forward_features(x);
        let [b, _] = rep.dims();
        (rep - target.clone())
            .powi_scalar(2)
            .sum_dim(1)
            .add_scalar(1e-12)
            .sqrt()
            .reshape([b])
            / scale.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_images_differ_from_the_example_and_are_uniform() {
        let n = 2000;
        let starts: Vec<usize> = (0..n).map(|i| start_index(7, i, n)).collect();
        assert!((0..n).all(|i| starts[i] != i));
        let mut quarters = [0usize; 4];
        for &j in &starts {
            quarters[j * 4 / n] += 1;
        }
        // 500 expected per quarter, sd ~19.
        assert!(
            quarters.iter().all(|&q| (400..=600).contains(&q)),
            "{quarters:?}"
        );
        assert_eq!(start_index(7, 3, n), start_index(7, 3, n));
        assert_eq!(start_index(0, 0, 1), 0);
    }

    #[test]
    fn noise_starts_are_in_the_box_and_seeded() {
        let a = noise_start(1, 4, 3072);
        assert_eq!(a, noise_start(1, 4, 3072));
        assert_ne!(a, noise_start(1, 5, 3072));
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - NOISE_MEAN).abs() < 0.01, "{mean}");
    }
}
