//! FAB-T (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast
//! adaptive boundary attack"), targeted, as AutoAttack runs it (its third attack). Each step
//! linearises the boundary between the true class y and a target class t at the current point
//! x1, projects both x1 and the clean input x0 onto that hyperplane within the [0, 1] box (the
//! smallest L2 or L-infinity step), and moves to a convex combination of the two projections
//! (weight on x0's at most `ALPHA_MAX`), overshooting by `ETA`. Once misclassified, the point is
//! recorded if it is the closest to x0 so far and pulled back toward x0 by `BETA`: FAB looks for
//! the *smallest* adversarial perturbation, and succeeds at eps when it finds one within eps.
//!
//! AutoAttack's standard version: the 9 most likely other classes as targets in turn, each run on
//! what is still correctly classified, 100 steps, one run per target, the first from x0 itself
//! and any further restarts from a random point at half eps. Here an example leaves a run once it
//! has an adversarial input within eps (the reference goes on shrinking it, which changes no
//! robust accuracy). L1 is not implemented.

use super::square::margins;
use super::threat::Constraint;
use super::{AttackConfig, AttackOutput, WriteBack, loss_and_grad, on_still_correct};
use crate::error::Result;
use crate::models::Classifier;
use crate::tensors;
use burn::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// AutoAttack's FAB-T targets: the 9 most likely classes other than the prediction.
pub const FAB_T_TARGETS: usize = 9;
/// Largest weight of the clean input's projection in the step (paper: alpha_max = 0.1).
const ALPHA_MAX: f64 = 0.1;
/// Overshoot of the projection step (paper: eta = 1.05).
const ETA: f32 = 1.05;
/// Pull-back toward the clean input after a success (paper: beta = 0.9).
const BETA: f32 = 0.9;

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn norm(v: &[f32], linf: bool) -> f32 {
    if linf {
        v.iter().fold(0f32, |m, x| m.max(x.abs()))
    } else {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }
}

/// The smallest step d, in L-infinity norm when `linf` and L2 otherwise, with `w . (p + d) = b`
/// and, when `bounded`, `p + d` in [0, 1]^n. Where the box makes the hyperplane unreachable, the
/// step that comes closest (every moving coordinate at its bound). FAB's projection onto the
/// linearised boundary: per coordinate `d_i = v_i min(t, tau_i)` with `v_i = w_i` (L2) or
/// `sign(w_i)` (L-inf) toward the hyperplane and `tau_i` where coordinate i meets the box; the
/// reached `w . d` is piecewise linear and increasing in t, so a sweep over the sorted `tau_i`
/// finds the smallest t that reaches the hyperplane.
pub fn project_onto_hyperplane(
    p: &[f32],
    w: &[f32],
    b: f32,
    linf: bool,
    bounded: bool,
) -> Vec<f32> {
    let gap = f64::from(b) - dot(w, p);
    let mut d = vec![0f32; p.len()];
    if gap == 0.0 || !gap.is_finite() {
        return d;
    }
    let toward = gap.signum();
    let need = gap.abs();
    // (tau_i, a_i = w_i v_i, v_i, i) for the coordinates that move.
    let mut moves: Vec<(f64, f64, f64, usize)> = Vec::with_capacity(p.len());
    for (i, (&pi, &wi)) in p.iter().zip(w).enumerate() {
        let wi = toward * f64::from(wi);
        if wi == 0.0 {
            continue;
        }
        let v = if linf { wi.signum() } else { wi };
        // How far t can go before the coordinate meets the box (room and v share a sign).
        let tau = match (bounded, wi > 0.0) {
            (false, _) => f64::INFINITY,
            (true, true) => (1.0 - f64::from(pi)) / v,
            (true, false) => -f64::from(pi) / v,
        };
        moves.push((tau.max(0.0), wi * v, v, i));
    }
    moves.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut slope: f64 = moves.iter().map(|m| m.1).sum();
    let (mut reached, mut t_prev, mut t) = (0.0f64, 0.0f64, f64::INFINITY);
    for &(tau, a, _, _) in &moves {
        let next = reached + slope * (tau - t_prev);
        if next >= need && slope > 0.0 {
            t = t_prev + (need - reached) / slope;
            break;
        }
        reached = next;
        t_prev = tau;
        slope = (slope - a).max(0.0);
    }
    for &(tau, _, v, i) in &moves {
        d[i] = (v * t.min(tau)) as f32;
    }
    d
}

/// One FAB-T run of `steps` steps on a batch toward the target classes `goal` (one per
/// example). Returns, per example, its closest adversarial input within eps, or x0's row.
fn fab_run(
    model: &Classifier,
    x0: &Tensor<4>,
    y: &Tensor<1, Int>,
    goal: &[usize],
    config: &AttackConfig,
    random_start: bool,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let device = x0.device();
    let [n, c, h, w] = x0.dims();
    let per = c * h * w;
    let linf = config.constraint == Constraint::Linf;
    let bounded = model.takes_images();
    let eps = config.eps as f32;
    let labels = tensors::label_values(y);
    let clean = tensors::to_vec(x0.clone());
    let mut x1 = clean.clone();
    if random_start {
        // AutoAttack's restarts: a random direction at half eps.
        for (e, row) in x1.chunks_mut(per).enumerate() {
            let t: Vec<f32> = if linf {
                (0..per).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
            } else {
                (0..per)
                    .map(|_| rng.sample::<f32, _>(StandardNormal))
                    .collect()
            };
            let scale = 0.5 * eps / norm(&t, linf).max(1e-12);
            for (i, v) in row.iter_mut().enumerate() {
                let moved = clean[e * per + i] + scale * t[i];
                *v = if bounded {
                    moved.clamp(0.0, 1.0)
                } else {
                    moved
                };
            }
        }
    }
    let mut best = clean.clone();
    let mut active: Vec<usize> = (0..n).collect();
    for _ in 0..config.steps {
        if active.is_empty() {
            break;
        }
        let m = active.len();
        let rows: Vec<f32> = active
            .iter()
            .flat_map(|&e| x1[e * per..(e + 1) * per].iter().copied())
            .collect();
        let goal_t = tensors::labels(
            &active.iter().map(|&e| goal[e]).collect::<Vec<_>>(),
            &device,
        );
        let y_t = tensors::labels(
            &active.iter().map(|&e| labels[e]).collect::<Vec<_>>(),
            &device,
        );
        // f = z_t - z_y and its input gradient, per example (the mean's gradient times m).
        let diff = move |model: &Classifier, x: Tensor<4>, y: &Tensor<1, Int>| {
            let z = model.forward(x);
            let pick =
                |k: &Tensor<1, Int>| z.clone().gather(1, k.clone().reshape([m, 1])).reshape([m]);
            pick(&goal_t) - pick(y)
        };
        let (f, grad) = loss_and_grad(
            model,
            &diff,
            &tensors::images(rows, [m, c, h, w], &device),
            &y_t,
            m as f64,
        );
        let (f, grad) = (tensors::to_vec(f), tensors::to_vec(grad));
        for (j, &e) in active.iter().enumerate() {
            let g = &grad[j * per..(j + 1) * per];
            let (xe, ce) = (&x1[e * per..(e + 1) * per], &clean[e * per..(e + 1) * per]);
            // The linearised boundary at x1: g . z = g . x1 - f.
            let b = (dot(g, xe) - f64::from(f[j])) as f32;
            let d1 = project_onto_hyperplane(xe, g, b, linf, bounded);
            let d2 = project_onto_hyperplane(ce, g, b, linf, bounded);
            let (a1, a2) = (
                f64::from(norm(&d1, linf).max(1e-8)),
                f64::from(norm(&d2, linf).max(1e-8)),
            );
            let alpha = (a1 / (a1 + a2)).clamp(0.0, ALPHA_MAX) as f32;
            let next: Vec<f32> = (0..per)
                .map(|i| {
                    let v = (xe[i] + ETA * d1[i]) * (1.0 - alpha) + (ce[i] + ETA * d2[i]) * alpha;
                    if bounded { v.clamp(0.0, 1.0) } else { v }
                })
                .collect();
            x1[e * per..(e + 1) * per].copy_from_slice(&next);
        }
        let rows: Vec<f32> = active
            .iter()
            .flat_map(|&e| x1[e * per..(e + 1) * per].iter().copied())
            .collect();
        let pred =
            tensors::argmax_rows(model.forward(tensors::images(rows, [m, c, h, w], &device)));
        let mut still = Vec::with_capacity(m);
        for (j, &e) in active.iter().enumerate() {
            if pred[j] == labels[e] {
                still.push(e);
                continue;
            }
            let (xe, ce) = (
                &mut x1[e * per..(e + 1) * per],
                &clean[e * per..(e + 1) * per],
            );
            let delta: Vec<f32> = xe.iter().zip(ce).map(|(a, b)| a - b).collect();
            if norm(&delta, linf) <= eps {
                best[e * per..(e + 1) * per].copy_from_slice(xe);
                continue;
            }
            for (v, (&o, &d)) in xe.iter_mut().zip(ce.iter().zip(&delta)) {
                *v = o + d * BETA;
            }
            still.push(e);
        }
        active = still;
    }
    best
}

/// FAB-T: for each of the `targets` most likely classes other than the prediction in turn, FAB
/// runs toward it (`config.steps` steps, `config.restarts` runs, the first from x0) on the
/// examples still correctly classified. Per example, the first adversarial input within eps
/// found, else `after`'s (or x0). The loss is the negated margin `max_{j != y} z_j - z_y`.
/// `after`: an earlier attack's output on the same batch (AutoAttack's chain).
pub fn fab_targeted(
    model: &Classifier,
    x0: &Tensor<4>,
    y: &Tensor<1, Int>,
    config: &AttackConfig,
    targets: usize,
    after: Option<AttackOutput>,
    rng: &mut ChaCha8Rng,
) -> Result<AttackOutput> {
    config.validate()?;
    config.require_untargeted("FAB-T")?;
    config.require_linf_or_l2("FAB-T")?;
    let model = model.for_inference();
    let device = x0.device();
    let [b, c, h, w] = x0.dims();
    let ranked = super::apgd::ranked_classes(&model, x0);
    let classes = ranked.first().map_or(0, Vec::len);
    let labels = tensors::label_values(y);
    let loss_of = |x: Vec<f32>, rows: &[usize], labels: &[usize]| -> Tensor<1> {
        let m = margins(&model, x, [rows.len(), c, h, w], labels, &device);
        let neg: Vec<f32> = m.iter().map(|v| -v).collect();
        Tensor::from_data(TensorData::new(neg, [rows.len()]), &device)
    };
    let mut out = match after {
        Some(out) => out,
        None => {
            let all: Vec<usize> = (0..b).collect();
            AttackOutput {
                adv: x0.clone(),
                loss: loss_of(tensors::to_vec(x0.clone()), &all, &labels),
            }
        }
    };
    for rank in (1..classes).take(targets) {
        for restart in 0..config.restarts.max(1) {
            out = on_still_correct(
                &model,
                x0,
                y,
                out,
                WriteBack::Fooled,
                |remaining, xs, ys| {
                    let goal: Vec<usize> = remaining.iter().map(|&i| ranked[i][rank]).collect();
                    let adv = fab_run(&model, xs, ys, &goal, config, restart > 0, rng);
                    let own: Vec<usize> = remaining.iter().map(|&i| labels[i]).collect();
                    let loss = loss_of(adv.clone(), remaining, &own);
                    Ok(AttackOutput {
                        adv: tensors::images(adv, [remaining.len(), c, h, w], &device),
                        loss,
                    })
                },
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &[f32], w: &[f32], b: f32, linf: bool, bounded: bool) -> Vec<f32> {
        let d = project_onto_hyperplane(p, w, b, linf, bounded);
        if bounded {
            for (pi, di) in p.iter().zip(&d) {
                assert!((-1e-6..=1.0 + 1e-6).contains(&(pi + di)), "left the box");
            }
        }
        d
    }

    #[test]
    fn without_a_box_the_projection_is_the_closed_form() {
        let (p, w) = ([0.2f32, -0.4, 0.1], [1.0f32, 2.0, -2.0]);
        // gap = b - w.p = 1 - (0.2 - 0.8 - 0.2) = 1.8
        let d = check(&p, &w, 1.0, false, false);
        let want: Vec<f32> = w.iter().map(|wi| 1.8 * wi / 9.0).collect();
        for (a, b) in d.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{d:?} vs {want:?}");
        }
        // L-inf: every coordinate moves by gap / ||w||_1 along sign(w).
        let d = check(&p, &w, 1.0, true, false);
        for (a, wi) in d.iter().zip(&w) {
            assert!((a - 1.8 / 5.0 * wi.signum()).abs() < 1e-6, "{d:?}");
        }
        // From the other side the step points the other way.
        let d = check(&p, &w, -3.0, false, false);
        assert!((dot(&w, &d) - (-3.0 + 0.8)).abs() < 1e-6);
    }

    #[test]
    fn the_box_saturates_coordinates_and_the_rest_make_up_the_gap() {
        // Coordinate 0 can rise by 0.1 only; the L2 step must still reach the hyperplane.
        let (p, w) = ([0.9f32, 0.5, 0.5], [1.0f32, 1.0, 0.5]);
        for linf in [false, true] {
            let d = check(
                &p,
                &w,
                p.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + 0.6,
                linf,
                true,
            );
            assert!((dot(&w, &d) - 0.6).abs() < 1e-6, "linf {linf}: {d:?}");
            assert!(
                (d[0] - 0.1).abs() < 1e-6,
                "linf {linf}: coordinate 0 at its bound: {d:?}"
            );
        }
        // L2 without the box would move the coordinates in proportion to w; with it, the free
        // ones share the rest in proportion to w: (0.6 - 0.1) = t (1 + 0.25) -> t = 0.4.
        let d = check(&p, &w, 1.65 + 0.6, false, true);
        assert!(
            (d[1] - 0.4).abs() < 1e-6 && (d[2] - 0.2).abs() < 1e-6,
            "{d:?}"
        );
        // Unreachable inside the box: everything at its bound.
        let d = check(&p, &w, 10.0, true, true);
        for (a, b) in d.iter().zip([0.1f32, 0.5, 0.5]) {
            assert!((a - b).abs() < 1e-6, "{d:?}");
        }
    }

    #[test]
    fn a_point_on_the_hyperplane_does_not_move() {
        let d = check(&[0.5, 0.5], &[1.0, -1.0], 0.0, false, true);
        assert_eq!(d, vec![0.0, 0.0]);
    }
}
