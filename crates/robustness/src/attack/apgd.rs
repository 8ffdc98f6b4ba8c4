//! APGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
//! ensemble of diverse parameter-free attacks", Algorithm 1): PGD with momentum 0.75 and a
//! per-example step size that starts at 2 eps and is halved at checkpoints where progress
//! stalled, restarting from the best point found. It reuses the threat models' step and
//! projection; its loop differs from PGD's (momentum, step-size schedule), so it is its own.

use super::loss::{AttackLoss, dlr_targeted};
use super::threat::threat_model_in;
use super::{AttackConfig, AttackOutput, WriteBack, loss_and_grad, on_still_correct};
use crate::error::Result;
use crate::models::Classifier;
use crate::tensors;
use burn::prelude::*;
use rand_chacha::ChaCha8Rng;

/// Momentum of the update (paper: alpha = 0.75).
const ALPHA: f64 = 0.75;
/// Fraction of successful steps below which the step size is halved (paper: rho = 0.75).
const RHO: f64 = 0.75;

/// The checkpoint iterations w_j = ceil(p_j * n): p_0 = 0, p_1 = 0.22,
/// p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
pub fn checkpoints(steps: usize) -> Vec<usize> {
    let mut p = vec![0.0f64, 0.22];
    while *p.last().expect("non-empty") < 1.0 {
        let n = p.len();
        p.push(p[n - 1] + (p[n - 1] - p[n - 2] - 0.03).max(0.06));
    }
    let mut w: Vec<usize> = p
        .iter()
        .map(|v| (v * steps as f64 - 1e-9).ceil() as usize)
        .filter(|&k| k > 0 && k < steps)
        .collect();
    w.dedup();
    w
}

fn host_mask(values: &[bool], device: &Device) -> Tensor<1, Bool> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

fn per_example(values: &[f64], device: &Device) -> Tensor<4> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [values.len(), 1, 1, 1]), device)
}

/// APGD under the L-infinity or L2 threat model, with any per-example loss (cross-entropy and
/// DLR for APGD-CE / APGD-DLR, the targeted DLR of [`apgd_targeted`]): ascended, or descended
/// toward `target` when `config.targeted`.
pub fn apgd(
    model: &Classifier,
    x0: &Tensor<4>,
    target: &Tensor<1, Int>,
    config: &AttackConfig,
    loss: &dyn AttackLoss,
    rng: &mut ChaCha8Rng,
) -> Result<AttackOutput> {
    config.validate()?;
    config.require_linf_or_l2("APGD")?;
    let model = model.for_inference();
    let threat = threat_model_in(
        config.constraint,
        config.eps,
        config.l1_sparsity,
        model.takes_images(),
    );
    let sign = if config.targeted { -1.0 } else { 1.0 };
    let device = x0.device();
    let [b, _, _, _] = x0.dims();
    let expand = |m: Tensor<1, Bool>| m.reshape([b, 1, 1, 1]).expand(x0.dims());
    let steps = config.steps;
    let marks = checkpoints(steps);

    let mut best: Option<AttackOutput> = None;
    for run in 0..config.restarts.max(1) {
        let mut x = if config.random_start || run > 0 {
            threat.random_start(x0, rng)
        } else {
            x0.clone()
        };
        let mut eta = vec![2.0 * config.eps; b];
        let (f, mut grad) = loss_and_grad(&model, loss, &x, target, sign);
        let mut fs: Vec<f64> = tensors::to_vec(f)
            .iter()
            .map(|&v| sign * v as f64)
            .collect();
        let (mut best_x, mut best_grad, mut best_f) = (x.clone(), grad.clone(), fs.clone());
        let mut x_prev = x.clone();
        let mut successes = vec![0usize; b];
        let (mut last_mark, mut eta_at_mark, mut best_at_mark) = (0, eta.clone(), best_f.clone());

        for k in 0..steps {
            // Step with momentum (plain projected step on the first iteration).
            let z = threat.project(
                x.clone() + threat.step(grad.clone()) * per_example(&eta, &device),
                x0,
            );
            let x_next = if k == 0 {
                z
            } else {
                threat.project(
                    x.clone()
                        + (z - x.clone()).mul_scalar(ALPHA)
                        + (x.clone() - x_prev.clone()).mul_scalar(1.0 - ALPHA),
                    x0,
                )
            };
            x_prev = x;
            x = x_next;

            let (f, g) = loss_and_grad(&model, loss, &x, target, sign);
            grad = g;
            let new_fs: Vec<f64> = tensors::to_vec(f)
                .iter()
                .map(|&v| sign * v as f64)
                .collect();
            let improved: Vec<bool> = new_fs.iter().zip(&best_f).map(|(a, b)| a > b).collect();
            for i in 0..b {
                successes[i] += usize::from(new_fs[i] > fs[i]);
                if improved[i] {
                    best_f[i] = new_fs[i];
                }
            }
            let m = host_mask(&improved, &device);
            best_x = best_x.mask_where(expand(m.clone()), x.clone());
            best_grad = best_grad.mask_where(expand(m), grad.clone());
            fs = new_fs;

            if marks.contains(&(k + 1)) {
                let span = (k + 1 - last_mark) as f64;
                let halve: Vec<bool> = (0..b)
                    .map(|i| {
                        let stalled = (successes[i] as f64) < RHO * span;
                        let unchanged = eta_at_mark[i] == eta[i] && best_at_mark[i] == best_f[i];
                        stalled || unchanged
                    })
                    .collect();
                for i in 0..b {
                    if halve[i] {
                        eta[i] /= 2.0;
                        fs[i] = best_f[i];
                    }
                }
                let m = expand(host_mask(&halve, &device));
                x = x.mask_where(m.clone(), best_x.clone());
                x_prev = x_prev.mask_where(m.clone(), best_x.clone());
                grad = grad.mask_where(m, best_grad.clone());
                successes.iter_mut().for_each(|s| *s = 0);
                (last_mark, eta_at_mark, best_at_mark) = (k + 1, eta.clone(), best_f.clone());
            }
        }
        let loss_values: Vec<f32> = best_f.iter().map(|&v| (sign * v) as f32).collect();
        let out = AttackOutput {
            adv: best_x,
            loss: Tensor::from_data(TensorData::new(loss_values, [b]), &device),
        };
        best = Some(match best {
            None => out,
            Some(prev) => {
                let better = out
                    .loss
                    .clone()
                    .mul_scalar(sign)
                    .greater(prev.loss.clone().mul_scalar(sign));
                AttackOutput {
                    adv: prev.adv.mask_where(expand(better.clone()), out.adv),
                    loss: prev.loss.mask_where(better, out.loss),
                }
            }
        });
    }
    Ok(best.expect("at least one run"))
}

/// AutoAttack's number of target classes for APGD-T (Croce & Hein 2020, the standard version).
pub const APGD_T_TARGETS: usize = 9;

/// Each example's classes by decreasing clean logit (APGD-T's and FAB-T's target order).
pub(super) fn ranked_classes(model: &Classifier, x0: &Tensor<4>) -> Vec<Vec<usize>> {
    let clean = model.forward(x0.clone());
    let [_, classes] = clean.dims();
    tensors::to_vec(clean)
        .chunks(classes)
        .map(|row| {
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            order
        })
        .collect()
}

/// APGD-T (Croce & Hein 2020; AutoAttack's targeted APGD): for the classes ranked 2nd, 3rd, ...
/// (up to `targets` of them, at most classes - 1) by each example's clean logits, one APGD run
/// ascending the targeted DLR loss ([`dlr_targeted`]) toward that class, each run only on the
/// examples that no earlier run (and not the clean input) has made misclassified. Untargeted in
/// what it reports: per example, the first adversarial input that is misclassified, else the
/// last run's. x0: [B, C, H, W] in [0, 1]; y: true labels [B]; `config.targeted` must be false.
/// `after`: an earlier attack's output on the same batch (AutoAttack's APGD-CE): the examples
/// it misclassifies keep its inputs and are not attacked again; the others start, like every
/// run, from x0.
pub fn apgd_targeted(
    model: &Classifier,
    x0: &Tensor<4>,
    y: &Tensor<1, Int>,
    config: &AttackConfig,
    targets: usize,
    after: Option<AttackOutput>,
    rng: &mut ChaCha8Rng,
) -> Result<AttackOutput> {
    config.require_untargeted("APGD-T")?;
    let model = model.for_inference();
    let device = x0.device();
    let [b, ..] = x0.dims();
    let ranked = ranked_classes(&model, x0);
    let classes = ranked.first().map_or(0, Vec::len);
    let mut out = after.unwrap_or_else(|| AttackOutput {
        adv: x0.clone(),
        loss: Tensor::zeros([b], &device),
    });
    // APGD-T targets each example's second, third, ... most likely class.
    for rank in (1..classes).take(targets) {
        out = on_still_correct(&model, x0, y, out, WriteBack::All, |remaining, xs, ys| {
            let goal: Vec<usize> = remaining.iter().map(|&i| ranked[i][rank]).collect();
            let goal = tensors::labels(&goal, &device);
            let loss = move |m: &Classifier, x: Tensor<4>, y: &Tensor<1, Int>| {
                dlr_targeted(m.forward(x), y, &goal)
            };
            apgd(&model, xs, ys, config, &loss, rng)
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_follow_the_paper_schedule() {
        // p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99, 1.05 -> w for n = 100.
        assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
    }
}
