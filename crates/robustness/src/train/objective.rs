//! What a training batch is fitted to: its labels, optionally smoothed (label smoothing,
//! Szegedy et al. 2016) and mixed with a shuffled copy of the batch (mixup, Zhang et al. 2018).
//!
//! Plain cross-entropy is the default and stays bit-identical to [`cross_entropy`] when neither
//! is asked for.

use crate::error::{Error, Result};
use crate::models::cross_entropy;
use crate::tensors;
use burn::prelude::*;
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::{Beta, Distribution};

/// A batch mixed with a permutation of itself: every image is `lambda * x + (1 - lambda) *
/// x[partner]`, and its loss `lambda * L(y) + (1 - lambda) * L(y[partner])`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    /// The label of every example's partner, in batch order.
    pub partner_labels: Vec<usize>,
    /// The weight of the example's own image and label, in [0, 1].
    pub lambda: f32,
}

/// Mixup of one batch in place: draws `lambda ~ Beta(alpha, alpha)` (one per batch, as in the
/// authors' code) and a random permutation, and blends every image with its partner's.
/// `images`: `[n, image_len]` row-major, in [0, 1] (stays in [0, 1]: a convex combination).
pub fn mix_batch(
    images: &mut [f32],
    labels: &[usize],
    alpha: f64,
    rng: &mut impl Rng,
) -> Result<Mix> {
    let n = labels.len();
    if n == 0 || !images.len().is_multiple_of(n) {
        return Err(Error::Config(format!(
            "mixup: {} image values do not split into {n} images",
            images.len()
        )));
    }
    let beta = Beta::new(alpha, alpha)
        .map_err(|e| Error::Config(format!("--mixup {alpha}: {e} (alpha must be > 0)")))?;
    let lambda = beta.sample(rng) as f32;
    let mut partner: Vec<usize> = (0..n).collect();
    partner.shuffle(rng);
    let len = images.len() / n;
    let original = images.to_vec();
    for (i, &j) in partner.iter().enumerate() {
        let other = &original[j * len..(j + 1) * len];
        for (v, &o) in images[i * len..(i + 1) * len].iter_mut().zip(other) {
            *v = lambda * *v + (1.0 - lambda) * o;
        }
    }
    Ok(Mix {
        partner_labels: partner.iter().map(|&j| labels[j]).collect(),
        lambda,
    })
}

/// Cross-entropy with label smoothing `smoothing` (the target is `1 - smoothing` on the label
/// plus `smoothing / classes` on every class, PyTorch's `label_smoothing`): `(1 - smoothing) *
/// (-log p_y) + smoothing * mean_k(-log p_k)`. `smoothing == 0` is [`cross_entropy`] exactly.
/// logits: `[batch, classes]`; labels: `[batch]`; returns `[batch]`.
pub fn smoothed_cross_entropy(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    smoothing: f32,
) -> Tensor<1> {
    if smoothing == 0.0 {
        return cross_entropy(logits, labels);
    }
    let [batch, _] = logits.dims();
    let log_probs = burn::tensor::activation::log_softmax(logits, 1);
    let nll = log_probs
        .clone()
        .gather(1, labels.reshape([batch, 1]))
        .reshape([batch])
        .neg();
    let uniform = log_probs.mean_dim(1).reshape([batch]).neg();
    nll.mul_scalar(1.0 - smoothing) + uniform.mul_scalar(smoothing)
}

/// The per-example training loss of `logits` (`[batch, classes]`) for `labels`, smoothed by
/// `smoothing`, and mixed with the partners' labels when `mix` is given (`mix.partner_labels`
/// the same length as `labels`). Returns `[batch]`.
pub fn per_example_loss(
    logits: Tensor<2>,
    labels: &[usize],
    mix: Option<(&[usize], f32)>,
    smoothing: f32,
    device: &Device,
) -> Tensor<1> {
    let own = smoothed_cross_entropy(logits.clone(), tensors::labels(labels, device), smoothing);
    match mix {
        None => own,
        Some((partner, lambda)) => {
            let theirs =
                smoothed_cross_entropy(logits, tensors::labels(partner, device), smoothing);
            own.mul_scalar(lambda) + theirs.mul_scalar(1.0 - lambda)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn logits(device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(vec![2.0f32, 0.5, -1.0, 0.1, 0.2, 3.0], [2, 3]),
            device,
        )
    }

    /// -log softmax(row)[k], computed on the host.
    fn nll(row: &[f32], k: usize) -> f32 {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = row.iter().map(|v| (v - m).exp()).sum::<f32>().ln() + m;
        log_sum - row[k]
    }

    #[test]
    fn smoothing_matches_the_soft_target_cross_entropy() {
        let device = Device::flex();
        let rows = [[2.0f32, 0.5, -1.0], [0.1, 0.2, 3.0]];
        let labels = [0usize, 1];
        let eps = 0.3f32;
        let got = tensors::to_vec(smoothed_cross_entropy(
            logits(&device),
            tensors::labels(&labels, &device),
            eps,
        ));
        for (i, row) in rows.iter().enumerate() {
            // The soft target: 1 - eps + eps/3 on the label, eps/3 elsewhere.
            let want: f32 = (0..3)
                .map(|k| {
                    let q = eps / 3.0 + if k == labels[i] { 1.0 - eps } else { 0.0 };
                    q * nll(row, k)
                })
                .sum();
            assert!(
                (got[i] - want).abs() < 1e-5,
                "row {i}: {} vs {want}",
                got[i]
            );
        }
        // No smoothing is plain cross-entropy, bit for bit.
        let plain = tensors::to_vec(cross_entropy(
            logits(&device),
            tensors::labels(&labels, &device),
        ));
        let zero = tensors::to_vec(smoothed_cross_entropy(
            logits(&device),
            tensors::labels(&labels, &device),
            0.0,
        ));
        assert_eq!(plain, zero);
    }

    #[test]
    fn the_mixed_loss_weights_both_labels() {
        let device = Device::flex();
        let rows = [[2.0f32, 0.5, -1.0], [0.1, 0.2, 3.0]];
        let got = tensors::to_vec(per_example_loss(
            logits(&device),
            &[0, 1],
            Some((&[2, 0], 0.25)),
            0.0,
            &device,
        ));
        let want = [
            0.25 * nll(&rows[0], 0) + 0.75 * nll(&rows[0], 2),
            0.25 * nll(&rows[1], 1) + 0.75 * nll(&rows[1], 0),
        ];
        for i in 0..2 {
            assert!((got[i] - want[i]).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn mixup_blends_each_image_with_its_partner() {
        // Four one-pixel-per-value "images" of 2 values each, distinct so a partner is
        // identifiable.
        let originals = [0.0f32, 0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 1.0];
        let labels = [0usize, 1, 2, 3];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut images = originals.to_vec();
        let mix = mix_batch(&mut images, &labels, 0.4, &mut rng).expect("a valid batch");
        assert!((0.0..=1.0).contains(&mix.lambda));
        // The partners are a permutation, and their labels follow them.
        let mut sorted = mix.partner_labels.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, labels);
        for i in 0..4 {
            let j = mix.partner_labels[i]; // label == index here
            for v in 0..2 {
                let want =
                    mix.lambda * originals[2 * i + v] + (1.0 - mix.lambda) * originals[2 * j + v];
                assert!((images[2 * i + v] - want).abs() < 1e-6);
            }
        }
        // The same stream gives the same mix.
        let mut again = originals.to_vec();
        let mix2 = mix_batch(&mut again, &labels, 0.4, &mut ChaCha8Rng::seed_from_u64(5))
            .expect("a valid batch");
        assert_eq!((mix, images), (mix2, again));
        // Bad input is an error, not a panic.
        assert!(mix_batch(&mut [0.0; 3], &[0, 1], 0.4, &mut rng).is_err());
        assert!(mix_batch(&mut [0.0; 4], &[0, 1], 0.0, &mut rng).is_err());
    }
}
