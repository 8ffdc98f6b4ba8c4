//! The report of `robustness theory`: the types of a check, a section and the whole report, and
//! its Markdown rendering. The checks themselves are computed in [`super::checks`].

use serde::Serialize;

/// What a check claims about `numeric` relative to `closed_form`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Comparison {
    /// |numeric − closed_form| ≤ tolerance·|closed_form| (for matrices: the two are Frobenius norms
    /// and relative_error is ‖A − B‖/‖A‖).
    Close,
    /// numeric < closed_form (relative_error = (numeric − closed_form)/|closed_form| < 0).
    Below,
    /// numeric > closed_form (relative_error = (numeric − closed_form)/|closed_form| > 0).
    Above,
}

/// One verified claim.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub comparison: Comparison,
    pub closed_form: f64,
    pub numeric: f64,
    pub relative_error: f64,
    pub tolerance: f64,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    pub(crate) fn close(
        name: impl Into<String>,
        closed_form: f64,
        numeric: f64,
        tolerance: f64,
        detail: String,
    ) -> Self {
        let relative_error =
            (numeric - closed_form).abs() / closed_form.abs().max(f64::MIN_POSITIVE);
        Self::with_error(
            name,
            closed_form,
            numeric,
            relative_error,
            tolerance,
            detail,
        )
    }

    pub(crate) fn with_error(
        name: impl Into<String>,
        closed_form: f64,
        numeric: f64,
        relative_error: f64,
        tolerance: f64,
        detail: String,
    ) -> Self {
        Self {
            name: name.into(),
            comparison: Comparison::Close,
            closed_form,
            numeric,
            relative_error,
            tolerance,
            pass: relative_error <= tolerance,
            detail,
        }
    }

    pub(crate) fn inequality(
        name: impl Into<String>,
        comparison: Comparison,
        reference: f64,
        value: f64,
        detail: String,
    ) -> Self {
        let relative_error = (value - reference) / reference.abs().max(f64::MIN_POSITIVE);
        let pass = match comparison {
            Comparison::Below => value < reference,
            Comparison::Above => value > reference,
            Comparison::Close => relative_error.abs() == 0.0,
        };
        Self {
            name: name.into(),
            comparison,
            closed_form: reference,
            numeric: value,
            relative_error,
            tolerance: 0.0,
            pass,
            detail,
        }
    }
}

/// A titled group of checks.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    pub title: String,
    pub checks: Vec<Check>,
}

/// One row of the learning-from-samples table (relaxed adversary, diagonal Σ).
#[derive(Clone, Debug, Serialize)]
pub struct SampleRow {
    pub eps: f64,
    pub n: usize,
    /// ‖σ̂_MLE − σ*‖/‖σ*‖.
    pub mle_error: f64,
    /// ‖σ_fit − σ_r‖/‖σ_r‖ against the population closed form.
    pub robust_error: f64,
    /// ‖σ_fit − σ̂_r‖/‖σ̂_r‖ against the closed form at the empirical moments.
    pub optimisation_error: f64,
    /// ‖μ_fit − μ*‖/‖μ*‖.
    pub mean_error: f64,
    pub kappa_fit: f64,
    pub kappa_closed_form: f64,
    pub iterations: usize,
    /// The fitted variances σ_fit.
    pub fit_variances: Vec<f64>,
    /// Theorem 2's closed form at the empirical moments, σ̂_r.
    pub empirical_closed_form: Vec<f64>,
}

/// One row of the per-sample ℓ2 PGD adversarial-training table.
#[derive(Clone, Debug, Serialize)]
pub struct PgdRow {
    pub eps: f64,
    pub n: usize,
    pub kappa_mle: f64,
    /// κ of the relaxed closed form at the same samples' moments.
    pub kappa_relaxed: f64,
    pub kappa_pgd: f64,
    /// ‖σ_pgd − σ̂_r‖/‖σ̂_r‖: how far the per-sample adversary's fit is from the relaxed one.
    pub distance_to_relaxed: f64,
    pub mean_inner_gap: f64,
    pub iterations: usize,
}

/// Everything `robustness theory` computed.
#[derive(Clone, Debug, Serialize)]
pub struct TheoryReport {
    pub seed: u64,
    pub dim: usize,
    /// Eigenvalues of the main instance's Σ*.
    pub spectrum: Vec<f64>,
    pub sections: Vec<Section>,
    pub sample_table: Vec<SampleRow>,
    pub pgd_table: Vec<PgdRow>,
}

pub(crate) fn fmt_list(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
    format!("[{}]", items.join(", "))
}

fn fmt_num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1e-3 && x.abs() < 1e5 {
        format!("{x:.6}")
    } else {
        format!("{x:.3e}")
    }
}

impl TheoryReport {
    /// True when every check passed.
    pub fn all_pass(&self) -> bool {
        self.sections
            .iter()
            .all(|s| s.checks.iter().all(|c| c.pass))
    }

    /// The report as Markdown: one table per section, then the error-versus-n tables.
    pub fn to_markdown(&self) -> String {
        let total: usize = self.sections.iter().map(|s| s.checks.len()).sum();
        let failed: usize = self
            .sections
            .iter()
            .map(|s| s.checks.iter().filter(|c| !c.pass).count())
            .sum();
        let mut out = String::new();
        out.push_str("# Theory: the robust-features Gaussian model ([P] Sec. 4, App. E)\n\n");
        out.push_str(&format!(
            "seed {}, d = {}, eigenvalues of Σ* = {}\n\n{total} checks, {}.\n\n",
            self.seed,
            self.dim,
            fmt_list(&self.spectrum),
            if failed == 0 {
                "all pass".to_string()
            } else {
                format!("{failed} FAILED")
            }
        ));
        out.push_str("Claim ≈: |numeric − closed form| ≤ tolerance·|closed form| (matrices: Frobenius norms, relative error ‖A−B‖/‖A‖). Claim < or >: numeric against the reference in the closed-form column.\n\n");
        for section in &self.sections {
            out.push_str(&format!("## {}\n\n", section.title));
            out.push_str("| check | claim | closed form / reference | numeric | rel. error | tolerance | pass | detail |\n");
            out.push_str("|---|---|---|---|---|---|---|---|\n");
            for c in &section.checks {
                let claim = match c.comparison {
                    Comparison::Close => "≈",
                    Comparison::Below => "<",
                    Comparison::Above => ">",
                };
                out.push_str(&format!(
                    "| {} | {claim} | {} | {} | {:.2e} | {:.1e} | {} | {} |\n",
                    c.name,
                    fmt_num(c.closed_form),
                    fmt_num(c.numeric),
                    c.relative_error,
                    c.tolerance,
                    if c.pass { "yes" } else { "**NO**" },
                    c.detail
                ));
            }
            out.push('\n');
        }
        if !self.sample_table.is_empty() {
            out.push_str("## Error versus n (relaxed adversary on samples, diagonal Σ)\n\n");
            out.push_str("| ε | n | MLE ‖σ̂−σ*‖/‖σ*‖ | robust fit ‖σ−σ_r‖/‖σ_r‖ | optimisation error | ‖μ−μ*‖/‖μ*‖ | κ fit | κ closed form | iterations |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|\n");
            for r in &self.sample_table {
                out.push_str(&format!(
                    "| {} | {} | {:.3e} | {:.3e} | {:.1e} | {:.3e} | {:.4} | {:.4} | {} |\n",
                    r.eps,
                    r.n,
                    r.mle_error,
                    r.robust_error,
                    r.optimisation_error,
                    r.mean_error,
                    r.kappa_fit,
                    r.kappa_closed_form,
                    r.iterations
                ));
            }
            out.push('\n');
        }
        if !self.pgd_table.is_empty() {
            out.push_str("## Per-sample ℓ2 PGD adversarial training (eq. 12)\n\n");
            out.push_str("| ε | n | κ MLE | κ relaxed closed form | κ PGD fit | ‖σ_pgd−σ̂_r‖/‖σ̂_r‖ | PGD inner shortfall | outer steps |\n");
            out.push_str("|---|---|---|---|---|---|---|---|\n");
            for r in &self.pgd_table {
                out.push_str(&format!(
                    "| {} | {} | {:.4} | {:.4} | {:.4} | {:.3} | {:.1e} | {} |\n",
                    r.eps,
                    r.n,
                    r.kappa_mle,
                    r.kappa_relaxed,
                    r.kappa_pgd,
                    r.distance_to_relaxed,
                    r.mean_inner_gap,
                    r.iterations
                ));
            }
            out.push('\n');
        }
        out
    }
}
