//! Independent numeric solvers for the claims of [`super::gaussian`]: ascent on the sphere for
//! Lemma 1 and Lemma 2, per-sample gradient ascent with Monte Carlo for Theorem 1, a damped
//! best-response iteration in full matrices for Theorem 2's min-max, and descent on the sphere for
//! Lemma 8's worst-case cosine. None of them evaluates the closed form it is compared with.

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand_distr::StandardNormal;

use super::TheoryError;
use super::gaussian::{multiplier_above, symmetric_eigen, theorem1_gap};

/// A [rows, cols] matrix of independent standard normals.
pub fn gaussian_matrix(rows: usize, cols: usize, rng: &mut impl Rng) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.sample(StandardNormal))
}

/// A Haar-random [d, d] orthogonal matrix: QR of a Gaussian matrix with R's diagonal made positive.
pub fn random_orthogonal(d: usize, rng: &mut impl Rng) -> DMatrix<f64> {
    let qr = gaussian_matrix(d, d, rng).qr();
    let mut q = qr.q();
    let r = qr.r();
    for j in 0..d {
        if r[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    q
}

/// `d` eigenvalues drawn uniformly from [lo, hi].
pub fn random_spectrum(d: usize, lo: f64, hi: f64, rng: &mut impl Rng) -> Vec<f64> {
    (0..d).map(|_| rng.random_range(lo..=hi)).collect()
}

/// Q diag(spectrum) Qᵀ.
pub fn rotate(spectrum: &[f64], q: &DMatrix<f64>) -> DMatrix<f64> {
    let diag = DMatrix::from_diagonal(&DVector::from_column_slice(spectrum));
    q * diag * q.transpose()
}

fn unit_random(d: usize, rng: &mut impl Rng) -> DVector<f64> {
    let v: DVector<f64> = DVector::from_fn(d, |_, _| rng.sample(StandardNormal));
    let n = v.norm();
    if n > 0.0 {
        v / n
    } else {
        DVector::from_element(d, 1.0 / (d as f64).sqrt())
    }
}

/// Result of [`maximise_on_sphere`].
#[derive(Clone, Debug)]
pub struct SphereMax {
    pub delta: DVector<f64>,
    pub value: f64,
    /// Iterations of the best start.
    pub iterations: usize,
}

/// Maximises (v+δ)ᵀA(v+δ) over ‖δ‖₂ = ε for A ≻ 0 (Lemma 1 with A = Σ⁻¹).
///
/// Projected gradient ascent with an unbounded step, δ ← ε·∇/‖∇‖ with ∇ ∝ A(v+δ): for a convex
/// objective each step maximises its linearisation on the sphere, so the value never decreases.
/// `restarts` random starts are tried besides the gradient direction at δ = 0; the best is kept.
pub fn maximise_on_sphere(
    a: &DMatrix<f64>,
    v: &DVector<f64>,
    eps: f64,
    restarts: usize,
    rng: &mut impl Rng,
) -> Result<SphereMax, TheoryError> {
    let d = v.len();
    let objective = |delta: &DVector<f64>| {
        let w = v + delta;
        w.dot(&(a * &w))
    };
    let mut best: Option<SphereMax> = None;
    for start in 0..=restarts {
        let mut delta = if start == 0 {
            let g = a * v;
            if g.norm() > 0.0 {
                &g * (eps / g.norm())
            } else {
                unit_random(d, rng) * eps
            }
        } else {
            unit_random(d, rng) * eps
        };
        let mut iterations = 0;
        for it in 1..=200_000 {
            iterations = it;
            let g = a * (v + &delta);
            let norm = g.norm();
            if norm == 0.0 {
                break;
            }
            let next = g * (eps / norm);
            let change = (&next - &delta).norm();
            delta = next;
            if change <= 1e-14 * eps {
                break;
            }
        }
        let value = objective(&delta);
        if best.as_ref().is_none_or(|b| value > b.value) {
            best = Some(SphereMax {
                delta,
                value,
                iterations,
            });
        }
    }
    best.ok_or_else(|| TheoryError::InvalidConfig("no start was run".into()))
}

/// Gradient ascent on the penalised objective (v+δ)ᵀA(v+δ) − C‖δ‖₂² from δ = 0.
///
/// The gradient is 2A(v+δ) − 2Cδ and its Lipschitz constant is at most 2C when A ≺ CI, so the step
/// 1/(2C) is safe; with it the update reads δ ← A(v+δ)/C. Returns (δ, iterations).
pub fn maximise_penalised(
    a: &DMatrix<f64>,
    v: &DVector<f64>,
    c: f64,
) -> Result<(DVector<f64>, usize), TheoryError> {
    let mut delta = DVector::zeros(v.len());
    for it in 1..=100_000 {
        let next = a * (v + &delta) / c;
        let change = (&next - &delta).norm();
        delta = next;
        if !change.is_finite() {
            break;
        }
        if change <= 1e-14 * (1.0 + delta.norm()) {
            return Ok((delta, it));
        }
    }
    Err(TheoryError::NoConvergence {
        what: format!("penalised gradient ascent (C = {c} must exceed 1/σ_min)"),
        iterations: 100_000,
    })
}

/// A Monte Carlo mean with its standard error.
#[derive(Clone, Debug)]
pub struct MonteCarlo {
    pub mean: f64,
    pub std_error: f64,
    pub samples: usize,
    pub mean_iterations: f64,
}

/// Monte Carlo estimate of Theorem 1's gap E[(v+δ*)ᵀΣ*⁻¹(v+δ*)] − E[vᵀΣ*⁻¹v], v ~ N(0, Σ*), with
/// δ* found per sample by [`maximise_penalised`]. `sigma_star`: [d, d], any orientation.
pub fn monte_carlo_gap(
    sigma_star: &DMatrix<f64>,
    c: f64,
    samples: usize,
    rng: &mut impl Rng,
) -> Result<MonteCarlo, TheoryError> {
    let d = sigma_star.nrows();
    let chol = sigma_star
        .clone()
        .cholesky()
        .ok_or_else(|| TheoryError::NotPositiveDefinite("Sigma* for the Monte Carlo gap".into()))?;
    let a = chol.inverse();
    let l = chol.l();
    let (mut sum, mut sum_sq, mut iterations) = (0.0, 0.0, 0usize);
    for _ in 0..samples {
        let z = DVector::from_fn(d, |_, _| rng.sample(StandardNormal));
        let v = &l * z;
        let (delta, its) = maximise_penalised(&a, &v, c)?;
        let w = &v + &delta;
        let term = w.dot(&(&a * &w)) - v.dot(&(&a * &v));
        sum += term;
        sum_sq += term * term;
        iterations += its;
    }
    let n = samples as f64;
    let mean = sum / n;
    let var = (sum_sq / n - mean * mean).max(0.0) * n / (n - 1.0);
    Ok(MonteCarlo {
        mean,
        std_error: (var / n).sqrt(),
        samples,
        mean_iterations: iterations as f64 / n,
    })
}

/// Minimises Theorem 1's gap over spectra with a fixed trace (and Cσ_i > 1) by projected gradient
/// descent with backtracking, from `start`. Returns the minimising spectrum.
pub fn minimise_gap_at_fixed_trace(c: f64, start: &[f64]) -> Result<Vec<f64>, TheoryError> {
    let d = start.len() as f64;
    let mut s = start.to_vec();
    let mut value = theorem1_gap(&s, c)?;
    let mut step = 1e-2;
    for _ in 0..200_000 {
        // d/dσ (1 + 1/(Cσ−1))² = −2C(1 + 1/(Cσ−1))/(Cσ−1)²
        let grad: Vec<f64> = s
            .iter()
            .map(|x| {
                let u = c * x - 1.0;
                -2.0 * c * (1.0 + 1.0 / u) / (u * u)
            })
            .collect();
        let mean = grad.iter().sum::<f64>() / d;
        let dir: Vec<f64> = grad.iter().map(|g| g - mean).collect();
        let dir_norm = dir.iter().map(|g| g * g).sum::<f64>().sqrt();
        if dir_norm <= 1e-13 * (1.0 + value) {
            return Ok(s);
        }
        loop {
            let trial: Vec<f64> = s.iter().zip(&dir).map(|(x, g)| x - step * g).collect();
            let ok = trial.iter().all(|x| c * x > 1.0);
            if ok {
                let trial_value = theorem1_gap(&trial, c)?;
                // Strict decrease: once the objective stops resolving the step, the search ends.
                if trial_value < value - 1e-4 * step * dir_norm * dir_norm {
                    s = trial;
                    value = trial_value;
                    step *= 2.0;
                    break;
                }
            }
            step *= 0.5;
            if step * dir_norm < 1e-18 * (1.0 + s.iter().map(|x| x.abs()).sum::<f64>()) {
                return Ok(s);
            }
        }
    }
    Err(TheoryError::NoConvergence {
        what: "minimising the Theorem 1 gap at fixed trace".into(),
        iterations: 200_000,
    })
}

/// The adversary's best response for a given learner, found by root finding on its multiplier:
/// M = (λΣ − I)⁻¹ with tr(M S M) = ε², where S = E[(x−μ)(x−μ)ᵀ]. Returns (M, λ).
/// The form of M is Lemma 2; [`maximise_adversary_diagonal`] checks it by direct ascent.
pub fn adversary_best_response(
    sigma: &DMatrix<f64>,
    second_moment: &DMatrix<f64>,
    eps: f64,
) -> Result<(DMatrix<f64>, f64), TheoryError> {
    let eig = symmetric_eigen(sigma)?;
    let u = &eig.eigenvectors;
    let weights = (u.transpose() * second_moment * u).diagonal();
    let s = &eig.eigenvalues;
    let budget = |l: f64| -> f64 {
        weights
            .iter()
            .zip(s.iter())
            .map(|(w, si)| w / (l * si - 1.0).powi(2))
            .sum()
    };
    let lambda = multiplier_above(
        1.0 / s.min(),
        eps * eps,
        "the adversary's best response",
        budget,
    )?;
    let m = DVector::from_iterator(s.len(), s.iter().map(|si| 1.0 / (lambda * si - 1.0)));
    Ok((u * DMatrix::from_diagonal(&m) * u.transpose(), lambda))
}

/// Result of [`solve_robust_saddle`].
#[derive(Clone, Debug)]
pub struct Saddle {
    pub mu: DVector<f64>,
    pub sigma: DMatrix<f64>,
    pub lambda: f64,
    pub adversary: DMatrix<f64>,
    pub iterations: usize,
    /// Relative size of the last update (the fixed-point residual).
    pub last_step: f64,
}

/// Solves Theorem 2's min-max numerically in full matrices (no eigenbasis of Σ* is used):
/// the adversary plays its best response M(Σ, μ) and the learner moves part-way (`damping`) to its
/// own best response against that M, μ ← μ*, Σ ← (I+M)E[(x−μ)(x−μ)ᵀ](I+M) (the Gaussian MLE of
/// the perturbed points), until the iteration stops moving. Starts at (μ_start, Σ*). `damping` is
/// the initial step towards the best response; it is halved whenever an update fails to contract.
pub fn solve_robust_saddle(
    sigma_star: &DMatrix<f64>,
    mu_star: &DVector<f64>,
    mu_start: &DVector<f64>,
    eps: f64,
    damping: f64,
) -> Result<Saddle, TheoryError> {
    let d = sigma_star.nrows();
    let eye = DMatrix::<f64>::identity(d, d);
    let mut mu = mu_start.clone();
    let mut sigma = sigma_star.clone();
    let max_iterations = 100_000;
    let mut damping = damping;
    let mut previous_step = f64::INFINITY;
    for it in 1..=max_iterations {
        let diff = mu_star - &mu;
        let second_moment = sigma_star + &diff * diff.transpose();
        let (m, lambda) = adversary_best_response(&sigma, &second_moment, eps)?;
        let i_m = &eye + &m;
        // Learner's best response to a fixed M: E[ℓ(x + M(x−μ); μ, Σ)] is a PD quadratic in μ
        // around μ*, and its minimiser in Σ is the covariance of the perturbed points.
        let sigma_br = &i_m * &second_moment * &i_m;
        let mut next = &sigma * (1.0 - damping) + sigma_br * damping;
        next = (&next + next.transpose()) * 0.5;
        let mu_next = &mu + diff * damping;
        let step = (&next - &sigma).norm() / sigma.norm()
            + (&mu_next - &mu).norm() / (1.0 + mu_star.norm());
        sigma = next;
        mu = mu_next;
        // A best response that overshoots (Jacobian below −1) makes the damped map cycle; halve
        // the damping whenever an update fails to contract.
        if step > 0.95 * previous_step {
            damping = (damping * 0.5).max(1e-4);
        }
        previous_step = step;
        if step <= 1e-15 {
            let diff = mu_star - &mu;
            let (adversary, lambda) =
                adversary_best_response(&sigma, &(sigma_star + &diff * diff.transpose()), eps)?;
            return Ok(Saddle {
                mu,
                sigma,
                lambda,
                adversary,
                iterations: it,
                last_step: step,
            });
        }
        if it == max_iterations && step > 1e-12 {
            return Err(TheoryError::NoConvergence {
                what: format!("best-response iteration for eps = {eps} (last λ = {lambda})"),
                iterations: it,
            });
        }
    }
    let diff = mu_star - &mu;
    let (adversary, lambda) =
        adversary_best_response(&sigma, &(sigma_star + &diff * diff.transpose()), eps)?;
    Ok(Saddle {
        mu,
        sigma,
        lambda,
        adversary,
        iterations: max_iterations,
        last_step: 1e-12,
    })
}

/// Maximises the adversary's objective Σ_i (1+m_i)² S_i/σ_i over diagonal M with
/// Σ_i S_i m_i² = ε² by direct ascent (no multiplier): with u_i = √S_i m_i the constraint is the
/// sphere ‖u‖ = ε and the objective is (√S + u)ᵀ diag(1/σ) (√S + u). Returns (m, value).
pub fn maximise_adversary_diagonal(
    sigma: &[f64],
    second_moment: &[f64],
    eps: f64,
    restarts: usize,
    rng: &mut impl Rng,
) -> Result<(Vec<f64>, f64), TheoryError> {
    let a = DMatrix::from_diagonal(&DVector::from_iterator(
        sigma.len(),
        sigma.iter().map(|s| 1.0 / s),
    ));
    let root = DVector::from_iterator(second_moment.len(), second_moment.iter().map(|s| s.sqrt()));
    let best = maximise_on_sphere(&a, &root, eps, restarts, rng)?;
    let m = best
        .delta
        .iter()
        .zip(root.iter())
        .map(|(u, r)| u / r)
        .collect();
    Ok((m, best.value))
}

/// The adversary's objective Σ_i (1+m_i)² S_i/σ_i (twice the perturbed Mahalanobis term).
pub fn adversary_value(sigma: &[f64], second_moment: &[f64], m: &[f64]) -> f64 {
    sigma
        .iter()
        .zip(second_moment)
        .zip(m)
        .map(|((s, w), mi)| (1.0 + mi).powi(2) * w / s)
        .sum()
}

/// Lemma 8 numerically: min over unit x of xᵀAx/‖Ax‖ for A ≻ 0, by projected gradient descent on
/// the sphere with backtracking, best of `restarts` random starts.
pub fn min_cosine(
    a: &DMatrix<f64>,
    restarts: usize,
    rng: &mut impl Rng,
) -> Result<f64, TheoryError> {
    let d = a.nrows();
    let f = |x: &DVector<f64>| x.dot(&(a * x)) / (a * x).norm();
    let mut best = f64::INFINITY;
    for _ in 0..restarts.max(1) {
        let mut x = unit_random(d, rng);
        let mut value = f(&x);
        let mut step = 0.1;
        for _ in 0..50_000 {
            let ax = a * &x;
            let n = ax.norm();
            let quad = x.dot(&ax);
            let grad = &ax * (2.0 / n) - (a * &ax) * (quad / (n * n * n));
            let tangent = &grad - &x * grad.dot(&x);
            let g2 = tangent.norm_squared();
            if g2.sqrt() < 1e-12 {
                break;
            }
            let mut moved = false;
            while step > 1e-18 {
                let trial = &x - &tangent * step;
                let trial = &trial / trial.norm();
                let tv = f(&trial);
                if tv <= value - 1e-4 * step * g2 {
                    x = trial;
                    value = tv;
                    step *= 2.0;
                    moved = true;
                    break;
                }
                step *= 0.5;
            }
            if !moved {
                break;
            }
        }
        best = best.min(value);
    }
    if best.is_finite() {
        Ok(best)
    } else {
        Err(TheoryError::NotPositiveDefinite(
            "min_cosine needs A ≻ 0".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gaussian::{
        condition_number, lemma1_perturbation, paper_spectrum, penalised_perturbation,
        robust_covariance, robust_spectrum, worst_case_cosine,
    };
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rotated_paper(rng: &mut ChaCha8Rng) -> DMatrix<f64> {
        rotate(&paper_spectrum(), &random_orthogonal(6, rng))
    }

    #[test]
    fn lemma1_closed_form_is_the_sphere_maximum() {
        // Tolerance 1e-10 relative on the objective: both are converged to ~1e-15.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let sigma = rotated_paper(&mut rng);
        let a = sigma.clone().try_inverse().expect("SPD");
        for eps in [0.1, 1.0, 3.0] {
            let v = DVector::from_fn(6, |_, _| rng.sample::<f64, _>(StandardNormal));
            let (delta, _) = lemma1_perturbation(&sigma, &v, eps).expect("generic v");
            assert!((delta.norm() - eps).abs() < 1e-12 * eps);
            let w = &v + &delta;
            let closed = w.dot(&(&a * &w));
            let numeric = maximise_on_sphere(&a, &v, eps, 8, &mut rng).expect("runs");
            assert!(
                ((closed - numeric.value) / closed).abs() < 1e-10,
                "eps {eps}: {closed} vs {}",
                numeric.value
            );
        }
    }

    #[test]
    fn penalised_ascent_matches_closed_form() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let sigma = rotated_paper(&mut rng);
        let a = sigma.clone().try_inverse().expect("SPD");
        let c = 2.0
            / paper_spectrum()
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
        let v = DVector::from_fn(6, |_, _| rng.sample::<f64, _>(StandardNormal));
        let closed = penalised_perturbation(&sigma, &v, c).expect("C above bound");
        let (numeric, _) = maximise_penalised(&a, &v, c).expect("converges");
        assert!((&closed - &numeric).norm() < 1e-10 * closed.norm());
    }

    #[test]
    fn theorem1_monte_carlo_within_four_standard_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let sigma = rotated_paper(&mut rng);
        let s = paper_spectrum();
        let c = 1.5 / s.iter().copied().fold(f64::INFINITY, f64::min);
        let closed = theorem1_gap(&s, c).expect("valid");
        let mc = monte_carlo_gap(&sigma, c, 4_000, &mut rng).expect("runs");
        assert!(
            (mc.mean - closed).abs() < 4.0 * mc.std_error,
            "{} ± {} vs {closed}",
            mc.mean,
            mc.std_error
        );
        // And it is not trivially wide: the standard error is a few percent of the gap.
        assert!(mc.std_error < 0.1 * closed);
    }

    #[test]
    fn isotropic_spectrum_minimises_gap_at_fixed_trace() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (d, trace) = (5, 5.0);
        let c = 2.0; // 1/C = 0.5 = half the isotropic eigenvalue
        let iso = theorem1_gap(&[1.0; 5], c).expect("valid");
        for _ in 0..20 {
            let raw: Vec<f64> = (0..d).map(|_| rng.random_range(0.01..1.0)).collect();
            let total: f64 = raw.iter().sum();
            let s: Vec<f64> = raw.iter().map(|x| 0.5 + 0.5 * trace * x / total).collect();
            assert!((s.iter().sum::<f64>() - trace).abs() < 1e-12);
            assert!(theorem1_gap(&s, c).expect("valid") > iso);
            let argmin = minimise_gap_at_fixed_trace(c, &s).expect("converges");
            assert!(argmin.iter().all(|x| (x - 1.0).abs() < 1e-6), "{argmin:?}");
        }
    }

    #[test]
    fn saddle_iteration_matches_theorem2_nondiagonal() {
        // Tolerance 1e-8 relative (Frobenius), the requirement.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let sigma_star = rotated_paper(&mut rng);
        let mu_star = DVector::from_fn(6, |_, _| rng.sample::<f64, _>(StandardNormal));
        let mu_start = &mu_star + DVector::from_element(6, 0.3);
        for eps in [0.1, 1.0, 3.0] {
            let (closed, lambda) = robust_covariance(&sigma_star, eps).expect("valid");
            let saddle =
                solve_robust_saddle(&sigma_star, &mu_star, &mu_start, eps, 0.5).expect("converges");
            let rel = (&saddle.sigma - &closed).norm() / closed.norm();
            assert!(rel < 1e-8, "eps {eps}: rel {rel}");
            assert!(((saddle.lambda - lambda) / lambda).abs() < 1e-8);
            assert!((&saddle.mu - &mu_star).norm() < 1e-10);
        }
    }

    #[test]
    fn adversary_ascent_matches_lemma2() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let s = paper_spectrum();
        let r = robust_spectrum(&s, 1.0).expect("valid");
        let (m, value) =
            maximise_adversary_diagonal(&r.eigenvalues, &s, 1.0, 8, &mut rng).expect("runs");
        let closed = adversary_value(&r.eigenvalues, &s, &r.multipliers);
        assert!(((value - closed) / closed).abs() < 1e-10);
        for (a, b) in m.iter().zip(&r.multipliers) {
            assert!((a - b).abs() < 1e-6 * b.abs().max(1.0));
        }
    }

    #[test]
    fn min_cosine_matches_lemma8() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let sigma = rotated_paper(&mut rng);
        let a = sigma.try_inverse().expect("SPD");
        let numeric = min_cosine(&a, 8, &mut rng).expect("runs");
        let closed = worst_case_cosine(condition_number(&paper_spectrum()));
        assert!(
            ((numeric - closed) / closed).abs() < 1e-6,
            "{numeric} vs {closed}"
        );
    }
}
