//! Learning the model from samples ([P] App. E.1): the standard MLE, and robust fits by actually
//! running adversarial training on drawn points, once against the relaxed adversary of Theorem 2
//! (diagonal M, empirical norm budget; its fit has a closed form to compare with) and once against
//! the per-sample ℓ2 PGD adversary of eq. 12 (no closed form; compared only qualitatively).
//!
//! Following App. E.1 the learner estimates one Gaussian: a draw (x, y) enters as z = y·x ~ N(μ*, Σ*),
//! and Σ is restricted to be diagonal (parameterised by log-variances).

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand_distr::StandardNormal;

use super::TheoryError;
use super::gaussian::{check_spectrum, lemma1_perturbation, multiplier_above};

/// Samples z_j = y_j·x_j, stored row-major as [n, d].
#[derive(Clone, Debug)]
pub struct Samples {
    pub dim: usize,
    pub z: Vec<f64>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.z.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.z.is_empty()
    }

    fn rows(&self) -> impl Iterator<Item = &[f64]> {
        self.z.chunks_exact(self.dim)
    }
}

/// Draws n labelled points y ~ U{−1, +1}, x ~ N(y·μ*, diag(σ*)) and folds them to z = y·x.
pub fn draw(mu_star: &[f64], sigma_star: &[f64], n: usize, rng: &mut impl Rng) -> Samples {
    let dim = mu_star.len();
    let std: Vec<f64> = sigma_star.iter().map(|s| s.sqrt()).collect();
    let mut z = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let y = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        for (m, s) in mu_star.iter().zip(&std) {
            let x = y * m + s * rng.sample::<f64, _>(StandardNormal);
            z.push(y * x);
        }
    }
    Samples { dim, z }
}

/// A Gaussian with diagonal covariance: mean [d] and variances [d].
#[derive(Clone, Debug, PartialEq)]
pub struct DiagGaussian {
    pub mu: Vec<f64>,
    pub var: Vec<f64>,
}

/// The maximum-likelihood fit: sample mean and (1/n) per-coordinate variance.
pub fn mle(samples: &Samples) -> Result<DiagGaussian, TheoryError> {
    let n = samples.len();
    if n < 2 {
        return Err(TheoryError::InvalidConfig(format!(
            "need at least 2 samples, got {n}"
        )));
    }
    let d = samples.dim;
    let mut mu = vec![0.0; d];
    for row in samples.rows() {
        for (m, x) in mu.iter_mut().zip(row) {
            *m += x;
        }
    }
    mu.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0; d];
    for row in samples.rows() {
        for ((v, x), m) in var.iter_mut().zip(row).zip(&mu) {
            *v += (x - m) * (x - m);
        }
    }
    var.iter_mut().for_each(|v| *v /= n as f64);
    check_spectrum(&var)?;
    Ok(DiagGaussian { mu, var })
}

/// Result of an adversarial-training run.
#[derive(Clone, Debug)]
pub struct Training {
    pub fit: DiagGaussian,
    pub iterations: usize,
    /// max_i of |E[x̃_i] − μ_i|/√σ_i and |E[(x̃_i − μ_i)²]/σ_i − 1| at the last step.
    pub residual: f64,
}

/// One outer step of adversarial training on fixed adversarial points x̃ (δ held fixed, as
/// Danskin's theorem allows): (μ, log σ) move a fraction `lr` of the way to the minimiser of the
/// mean NLL of x̃ (the Gaussian MLE of the adversarial points, i.e. the M-step); for μ this is the
/// gradient step preconditioned by σ. A plain gradient step in log σ, ½(ratio − 1), is unbounded
/// when the adversary inflates a tiny variance (ratio ≫ 1), which is why the log of the ratio is
/// used. Returns the residual of the stationarity conditions before the step.
fn descend(fit: &mut DiagGaussian, adversarial: &[f64], dim: usize, lr: f64) -> f64 {
    let n = (adversarial.len() / dim) as f64;
    let mut mean = vec![0.0; dim];
    let mut second = vec![0.0; dim];
    for row in adversarial.chunks_exact(dim) {
        for i in 0..dim {
            let r = row[i] - fit.mu[i];
            mean[i] += r;
            second[i] += r * r;
        }
    }
    let mut residual: f64 = 0.0;
    for i in 0..dim {
        let shift = mean[i] / n; // E[x̃ − μ]: −σ·∂NLL/∂μ
        let ratio = second[i] / n / fit.var[i]; // 1 − 2·∂NLL/∂log σ
        residual = residual
            .max((shift / fit.var[i].sqrt()).abs())
            .max((ratio - 1.0).abs());
        fit.mu[i] += lr * shift;
        fit.var[i] *= ratio.powf(lr);
    }
    residual
}

/// "Bold driver" learning rate: the adversary reacts to σ, so a full step can overshoot into a
/// cycle; halve the rate when the stationarity residual grows, regrow it slowly while it shrinks.
fn adapt(lr: f64, residual: f64, previous: f64) -> f64 {
    if residual > previous {
        (lr * 0.5).max(1e-4)
    } else {
        (lr * 1.1).min(1.0)
    }
}

/// Adversarial training against the relaxed adversary of Theorem 2 on samples: each step the
/// adversary picks the diagonal M maximising the empirical NLL of z + M(z − μ) under the empirical
/// budget (1/n)Σ_j ‖M(z_j − μ)‖² = ε² (exactly, via Lemma 2's multiplier), then the learner takes a
/// gradient step on the NLL of those points. Starts from μ = 0, σ = 1.
///
/// Its stationary point is Theorem 2's closed form applied to the empirical moments (μ̂, diag Σ̂),
/// which tends to the population closed form as n grows.
pub fn relaxed_adversarial_training(
    samples: &Samples,
    eps: f64,
    max_iterations: usize,
) -> Result<Training, TheoryError> {
    let d = samples.dim;
    let mut fit = DiagGaussian {
        mu: vec![0.0; d],
        var: vec![1.0; d],
    };
    let mut adversarial = vec![0.0; samples.z.len()];
    let mut residual = f64::INFINITY;
    let mut lr = 1.0;
    for it in 1..=max_iterations {
        let mut second = vec![0.0; d];
        for row in samples.rows() {
            for i in 0..d {
                second[i] += (row[i] - fit.mu[i]).powi(2);
            }
        }
        second.iter_mut().for_each(|s| *s /= samples.len() as f64);
        let s_min = fit.var.iter().copied().fold(f64::INFINITY, f64::min);
        let budget = |l: f64| -> f64 {
            second
                .iter()
                .zip(&fit.var)
                .map(|(w, s)| w / (l * s - 1.0).powi(2))
                .sum()
        };
        let lambda = multiplier_above(
            1.0 / s_min,
            eps * eps,
            "the relaxed sample adversary",
            budget,
        )?;
        let m: Vec<f64> = fit.var.iter().map(|s| 1.0 / (lambda * s - 1.0)).collect();
        for (out, row) in adversarial.chunks_exact_mut(d).zip(samples.rows()) {
            for i in 0..d {
                out[i] = row[i] + m[i] * (row[i] - fit.mu[i]);
            }
        }
        let previous = residual;
        residual = descend(&mut fit, &adversarial, d, lr);
        lr = adapt(lr, residual, previous);
        if residual < 1e-13 {
            return Ok(Training {
                fit,
                iterations: it,
                residual,
            });
        }
    }
    Err(TheoryError::NoConvergence {
        what: format!("relaxed adversarial training, eps = {eps} (residual {residual:.2e})"),
        iterations: max_iterations,
    })
}

/// Per-sample ℓ2 PGD: maximises ½(r+δ)ᵀdiag(σ)⁻¹(r+δ) over ‖δ‖₂ ≤ ε from a warm start, with
/// normalised gradient steps of size ε/2, ε/4, … and projection onto the ball.
fn pgd_inner(r: &[f64], var: &[f64], delta: &mut [f64], eps: f64, steps: usize) {
    let mut step = 0.5 * eps;
    let mut g = vec![0.0; r.len()];
    for _ in 0..steps {
        for i in 0..r.len() {
            g[i] = (r[i] + delta[i]) / var[i];
        }
        let gn = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        if gn == 0.0 {
            return;
        }
        for i in 0..r.len() {
            delta[i] += step * g[i] / gn;
        }
        let dn = delta.iter().map(|x| x * x).sum::<f64>().sqrt();
        if dn > eps {
            delta.iter_mut().for_each(|x| *x *= eps / dn);
        }
        step *= 0.5;
    }
}

/// Result of [`pgd_adversarial_training`].
#[derive(Clone, Debug)]
pub struct PgdTraining {
    pub training: Training,
    /// Mean over samples of 1 − (PGD's value)/(Lemma 1's exact maximum) at the final parameters.
    pub mean_inner_gap: f64,
    pub max_inner_gap: f64,
}

/// Adversarial training of eq. 12 with the per-sample ℓ2 adversary found by PGD (`steps` steps per
/// outer iteration, warm-started from the previous δ); the learner takes the full M-step on the
/// adversarial points each outer iteration (learning rate 1: this adversary's response to σ is
/// mild enough for the plain alternation to converge, unlike the relaxed one's). Starts from the
/// MLE. Runs `outer` iterations or until the residual falls below 1e-10.
pub fn pgd_adversarial_training(
    samples: &Samples,
    eps: f64,
    steps: usize,
    outer: usize,
) -> Result<PgdTraining, TheoryError> {
    let d = samples.dim;
    let mut fit = mle(samples)?;
    let mut delta = vec![0.0; samples.z.len()];
    let mut adversarial = vec![0.0; samples.z.len()];
    let mut r = vec![0.0; d];
    let mut residual = f64::INFINITY;
    let mut iterations = 0;
    for it in 1..=outer {
        iterations = it;
        for ((row, dl), out) in samples
            .rows()
            .zip(delta.chunks_exact_mut(d))
            .zip(adversarial.chunks_exact_mut(d))
        {
            for i in 0..d {
                r[i] = row[i] - fit.mu[i];
            }
            pgd_inner(&r, &fit.var, dl, eps, steps);
            for i in 0..d {
                out[i] = row[i] + dl[i];
            }
        }
        residual = descend(&mut fit, &adversarial, d, 1.0);
        if residual < 1e-10 {
            break;
        }
    }
    // Audit the inner maximisation at the final parameters against Lemma 1's exact maximiser.
    let sigma = DMatrix::from_diagonal(&DVector::from_column_slice(&fit.var));
    let (mut sum_gap, mut max_gap) = (0.0, 0.0f64);
    for (row, dl) in samples.rows().zip(delta.chunks_exact_mut(d)) {
        let r = DVector::from_iterator(d, row.iter().zip(&fit.mu).map(|(x, m)| x - m));
        pgd_inner(r.as_slice(), &fit.var, dl, eps, steps);
        let value =
            |dv: &[f64]| -> f64 { (0..d).map(|i| (r[i] + dv[i]).powi(2) / fit.var[i]).sum() };
        let (exact, _) = lemma1_perturbation(&sigma, &r, eps)?;
        let best = value(exact.as_slice());
        let gap = (1.0 - value(dl) / best).max(0.0);
        sum_gap += gap;
        max_gap = max_gap.max(gap);
    }
    Ok(PgdTraining {
        training: Training {
            fit,
            iterations,
            residual,
        },
        mean_inner_gap: sum_gap / samples.len() as f64,
        max_inner_gap: max_gap,
    })
}

#[cfg(test)]
mod tests {
    use super::super::gaussian::{condition_number, robust_spectrum};
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| y * y).sum();
        (num / den).sqrt()
    }

    #[test]
    fn relaxed_training_reaches_closed_form_of_empirical_moments() {
        // Optimisation error below 1e-10; statistical error below 5·sqrt(2/n).
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let sigma_star = [0.2, 1.0, 3.0];
        let mu_star = [1.0, -0.5, 2.0];
        let samples = draw(&mu_star, &sigma_star, 20_000, &mut rng);
        let m = mle(&samples).expect("enough samples");
        for eps in [0.1, 1.0, 3.0] {
            let fit = relaxed_adversarial_training(&samples, eps, 10_000).expect("converges");
            let on_samples = robust_spectrum(&m.var, eps).expect("valid");
            assert!(rel(&fit.fit.var, &on_samples.eigenvalues) < 1e-10);
            assert!(rel(&fit.fit.mu, &m.mu) < 1e-10);
            let population = robust_spectrum(&sigma_star, eps).expect("valid");
            assert!(rel(&fit.fit.var, &population.eigenvalues) < 5.0 * (2.0 / 20_000f64).sqrt());
        }
    }

    #[test]
    fn pgd_training_is_better_conditioned_than_mle() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let sigma_star = [0.1, 0.5, 2.0, 4.0];
        let samples = draw(&[1.0; 4], &sigma_star, 1_000, &mut rng);
        let m = mle(&samples).expect("enough samples");
        let pgd = pgd_adversarial_training(&samples, 1.0, 20, 2_000).expect("runs");
        assert!(
            pgd.mean_inner_gap < 1e-8,
            "PGD inner gap {}",
            pgd.mean_inner_gap
        );
        assert!(
            pgd.training.residual < 1e-8,
            "not converged: {}",
            pgd.training.residual
        );
        assert!(condition_number(&pgd.training.fit.var) < 0.5 * condition_number(&m.var));
    }
}
