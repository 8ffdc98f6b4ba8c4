//! Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a black-box random search
//! that uses only the model's logits, AutoAttack's last attack. Each query changes the current
//! best perturbation inside one random square window (L-infinity: every pixel of the window set
//! to +-eps per channel; L2: the window's mass moved and a new centred pattern added, the whole
//! perturbation rescaled to norm eps) and keeps the change where it lowers the margin
//! `z_y - max_{j != y} z_j`. An example stops once misclassified. The window side shrinks with
//! the query count (the paper's schedule for p, the window's fraction of the image).
//!
//! It needs no gradient, so it is the check against gradient masking: a model whose gradient
//! attacks fail but Square succeeds has a masked gradient. Host-side bookkeeping, batched forward
//! passes; every random choice comes from the caller's stream.

use super::threat::Constraint;
use super::{AttackConfig, AttackOutput};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::tensors;
use burn::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// AutoAttack's standard budget for Square: 5,000 queries per example.
pub const SQUARE_QUERIES: usize = 5000;
/// The initial window fraction p (AutoAttack's standard version: 0.8).
const P_INIT: f64 = 0.8;

/// The window fraction after `it` of `queries` queries: p_init halved at the paper's
/// iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a 10,000-query budget,
/// rescaled to `queries`.
pub fn p_schedule(it: usize, queries: usize) -> f64 {
    let it = (it as f64 / queries.max(1) as f64 * 10_000.0) as usize;
    let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000]
        .iter()
        .filter(|&&t| it > t)
        .count();
    P_INIT / f64::from(1u32 << halvings)
}

/// `[rows, cols]` weights decaying as 1 / (k + 1)^2 over nested rectangles around the centre,
/// unit L2 norm (the L2 attack's building block).
fn rectangles(rows: usize, cols: usize) -> Vec<f32> {
    let mut d = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return d;
    }
    let (mut r0, mut c0) = (rows as i64 / 2, cols as i64 / 2);
    for k in 0..(rows / 2 + 1).max(cols / 2 + 1) {
        let w = 1.0 / ((k + 1) * (k + 1)) as f32;
        let span = 2 * k as i64 + 1;
        let (r_lo, r_hi) = (
            r0.max(0) as usize,
            ((r0 + span).min(rows as i64)).max(0) as usize,
        );
        let (c_lo, c_hi) = (
            c0.max(0) as usize,
            ((c0 + span).min(cols as i64)).max(0) as usize,
        );
        for r in r_lo..r_hi {
            for v in &mut d[r * cols + c_lo..r * cols + c_hi] {
                *v += w;
            }
        }
        r0 -= 1;
        c0 -= 1;
    }
    normalise(&mut d);
    d
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-12;
    v.iter_mut().for_each(|x| *x /= n);
}

/// The L2 attack's s x s pattern: the top half positive rectangles, the bottom half negative,
/// unit norm, transposed with probability 1/2.
fn pattern(s: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let top = rectangles(s / 2, s);
    let bottom = rectangles(s - s / 2, s);
    let mut d: Vec<f32> = top
        .into_iter()
        .chain(bottom.into_iter().map(|v| -v))
        .collect();
    normalise(&mut d);
    if rng.random::<bool>() {
        let t: Vec<f32> = (0..s * s).map(|i| d[(i % s) * s + i / s]).collect();
        d = t;
    }
    d
}

fn sign(rng: &mut ChaCha8Rng) -> f32 {
    if rng.random::<bool>() { 1.0 } else { -1.0 }
}

/// Per example: margin `z_y - max_{j != y} z_j` (misclassified when <= 0).
pub(super) fn margins(
    model: &Classifier,
    x: Vec<f32>,
    shape: [usize; 4],
    y: &[usize],
    device: &Device,
) -> Vec<f32> {
    let logits = tensors::to_vec(model.forward(tensors::images(x, shape, device)));
    let k = logits.len() / shape[0].max(1);
    logits
        .chunks(k)
        .zip(y)
        .map(|(row, &label)| {
            let other = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != label)
                .fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
            row[label] - other
        })
        .collect()
}

/// Square Attack, untargeted, under the L-infinity or L2 ball of `config.eps`, for `queries`
/// queries per example (one of them the start). x0: [B, C, H, W] in [0, 1]; y: true labels.
/// The reported loss is the negated margin (higher is stronger, as for the other attacks).
pub fn square(
    model: &Classifier,
    x0: &Tensor<4>,
    y: &Tensor<1, Int>,
    config: &AttackConfig,
    queries: usize,
    rng: &mut ChaCha8Rng,
) -> Result<AttackOutput> {
    config.validate()?;
    config.require_untargeted("the Square attack")?;
    config.require_linf_or_l2("the Square attack")?;
    let model = model.for_inference();
    if !model.takes_images() {
        return Err(Error::Config(
            "the Square attack perturbs square windows of images; this model takes feature vectors"
                .into(),
        ));
    }
    let [b, c, h, w] = x0.dims();
    let device = x0.device();
    let per = c * h * w;
    let labels = tensors::label_values(y);
    let x = tensors::to_vec(x0.clone());
    let eps = config.eps as f32;
    let clamp = |v: f32| v.clamp(0.0, 1.0);
    let linf = config.constraint == Constraint::Linf;

    // The start: vertical stripes of +-eps (L-infinity), or a grid of the L2 pattern with a
    // random sign per window and channel, rescaled to norm eps.
    let mut best = vec![0f32; b * per];
    for e in 0..b {
        let (xe, be) = (
            &x[e * per..(e + 1) * per],
            &mut best[e * per..(e + 1) * per],
        );
        if linf {
            for ch in 0..c {
                for col in 0..w {
                    let s = sign(rng) * eps;
                    for row in 0..h {
                        let i = (ch * h + row) * w + col;
                        be[i] = clamp(xe[i] + s);
                    }
                }
            }
        } else {
            let s = (h / 5).max(1);
            let start = h.saturating_sub(5 * s) / 2;
            let mut delta = vec![0f32; per];
            for gr in 0..h / s {
                for gc in 0..w / s {
                    let (r0, c0) = (start + gr * s, start + gc * s);
                    let eta = pattern(s, rng);
                    for ch in 0..c {
                        let sg = sign(rng);
                        for i in 0..s {
                            for j in 0..s {
                                let (r, col) = (r0 + i, c0 + j);
                                if r < h && col < w {
                                    delta[(ch * h + r) * w + col] += sg * eta[i * s + j];
                                }
                            }
                        }
                    }
                }
            }
            normalise(&mut delta);
            for i in 0..per {
                be[i] = clamp(xe[i] + eps * delta[i]);
            }
        }
    }
    let mut margin = margins(&model, best.clone(), [b, c, h, w], &labels, &device);

    for it in 1..queries {
        let live: Vec<usize> = (0..b).filter(|&e| margin[e] > 0.0).collect();
        if live.is_empty() {
            break;
        }
        let p = p_schedule(it - 1, queries);
        let side = ((p * (per / c) as f64).sqrt().round() as usize).min(h.min(w));
        let mut cand = Vec::with_capacity(live.len() * per);
        if linf {
            let s = side.max(1);
            let (vh, vw) = (rng.random_range(0..=h - s), rng.random_range(0..=w - s));
            for &e in &live {
                let (xe, be) = (&x[e * per..(e + 1) * per], &best[e * per..(e + 1) * per]);
                let mut row = be.to_vec();
                for ch in 0..c {
                    let v = sign(rng) * 2.0 * eps;
                    for r in vh..vh + s {
                        for col in vw..vw + s {
                            let i = (ch * h + r) * w + col;
                            row[i] = clamp((be[i] + v).clamp(xe[i] - eps, xe[i] + eps));
                        }
                    }
                }
                cand.extend_from_slice(&row);
            }
        } else {
            // Odd, at least 3 (on images that large), at most the image.
            let mut s = side.max(3).min(h.min(w));
            if s % 2 == 0 {
                s = if s < h.min(w) { s + 1 } else { s - 1 };
            }
            let s = s.max(1);
            let (vh, vw) = (rng.random_range(0..=h - s), rng.random_range(0..=w - s));
            let (vh2, vw2) = (rng.random_range(0..=h - s), rng.random_range(0..=w - s));
            let eta = pattern(s, rng);
            let in1 =
                |r: usize, col: usize| (vh..vh + s).contains(&r) && (vw..vw + s).contains(&col);
            let in2 =
                |r: usize, col: usize| (vh2..vh2 + s).contains(&r) && (vw2..vw2 + s).contains(&col);
            for &e in &live {
                let (xe, be) = (&x[e * per..(e + 1) * per], &best[e * per..(e + 1) * per]);
                let mut delta: Vec<f32> = be.iter().zip(xe).map(|(a, b)| a - b).collect();
                let norm_image = delta.iter().map(|v| v * v).sum::<f32>().sqrt();
                let mut norm_windows = 0f32;
                for ch in 0..c {
                    for r in 0..h {
                        for col in 0..w {
                            if in1(r, col) || in2(r, col) {
                                norm_windows += delta[(ch * h + r) * w + col].powi(2);
                            }
                        }
                    }
                }
                let norm_windows = norm_windows.sqrt();
                let budget = ((eps * eps - norm_image * norm_image).max(0.0) / c as f32
                    + norm_windows * norm_windows)
                    .sqrt();
                let mut fresh = vec![0f32; c * s * s];
                for ch in 0..c {
                    let sg = sign(rng);
                    let old: Vec<f32> = (0..s * s)
                        .map(|k| delta[(ch * h + vh + k / s) * w + vw + k % s])
                        .collect();
                    let old_norm = old.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-12;
                    let win = &mut fresh[ch * s * s..(ch + 1) * s * s];
                    for k in 0..s * s {
                        win[k] = sg * eta[k] + old[k] / old_norm;
                    }
                    let n = win.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-12;
                    win.iter_mut().for_each(|v| *v = *v / n * budget);
                }
                for ch in 0..c {
                    for r in vh2..vh2 + s {
                        for col in vw2..vw2 + s {
                            delta[(ch * h + r) * w + col] = 0.0;
                        }
                    }
                    for k in 0..s * s {
                        delta[(ch * h + vh + k / s) * w + vw + k % s] = fresh[ch * s * s + k];
                    }
                }
                normalise(&mut delta);
                cand.extend(xe.iter().zip(&delta).map(|(a, d)| clamp(a + eps * d)));
            }
        }
        let live_labels: Vec<usize> = live.iter().map(|&e| labels[e]).collect();
        let new = margins(
            &model,
            cand.clone(),
            [live.len(), c, h, w],
            &live_labels,
            &device,
        );
        for (j, &e) in live.iter().enumerate() {
            if new[j] < margin[e] {
                margin[e] = new[j];
                best[e * per..(e + 1) * per].copy_from_slice(&cand[j * per..(j + 1) * per]);
            }
        }
    }
    let loss: Vec<f32> = margin.iter().map(|m| -m).collect();
    Ok(AttackOutput {
        adv: tensors::images(best, [b, c, h, w], &device),
        loss: Tensor::from_data(TensorData::new(loss, [b]), &device),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_fraction_halves_on_the_papers_schedule() {
        assert_eq!(p_schedule(0, 10_000), 0.8);
        assert_eq!(p_schedule(10, 10_000), 0.8);
        assert_eq!(p_schedule(11, 10_000), 0.4);
        assert_eq!(p_schedule(600, 10_000), 0.8 / 16.0);
        assert_eq!(p_schedule(9000, 10_000), 0.8 / 512.0);
        // Rescaled to the budget: 5,000 queries halve at 5, 25, 100, ...
        assert_eq!(p_schedule(6, 5000), 0.4);
        assert_eq!(p_schedule(4999, 5000), 0.8 / 512.0);
    }

    #[test]
    fn the_l2_pattern_has_unit_norm_and_opposite_halves() {
        let mut rng = rand::SeedableRng::seed_from_u64(3);
        for s in [3usize, 5, 6, 11] {
            let d = pattern(s, &mut rng);
            let n: f32 = d.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "side {s}: norm {n}");
            let (pos, neg) = (
                d.iter().filter(|&&v| v > 0.0).count(),
                d.iter().filter(|&&v| v < 0.0).count(),
            );
            assert_eq!(pos, (s / 2) * s, "side {s}");
            assert_eq!(neg, (s - s / 2) * s, "side {s}");
        }
        // The rectangles peak at the centre and decay outward.
        let r = rectangles(5, 5);
        assert!(r[12] > r[7] && r[7] > r[2] && r[2] > 0.0);
    }
}
