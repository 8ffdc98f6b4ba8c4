//! Figure 4 of [P] (p. 10): a 2-D instance of the model, its MLE metric ball against the ℓ2 ball,
//! and the decision boundary rotating toward the ℓ2-aligned direction as the robust ε grows.
//! Rendered with plotters into memory, encoded with `png`, written atomically. Text uses DejaVu
//! Sans embedded in the binary (`dejavu` crate), so no system font is needed.

use std::f64::consts::PI;
use std::path::Path;

use nalgebra::{DMatrix, DVector};
use plotters::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::TheoryError;
use super::gaussian::robust_covariance;

/// Class mean for y = +1; y = −1 sits at −μ*. [P] gives no numbers; its means look ≈ (±10, ∓1).
pub const FIGURE_MU: [f64; 2] = [10.0, -1.0];
/// Σ* = diag(25, 0.25): std 5 along x1 (the robust, large-variance feature) and 0.5 along x2
/// (the non-robust feature). Our choice: both features then separate the classes at 2 std.
pub const FIGURE_SIGMA: [f64; 2] = [25.0, 0.25];
/// The robust panels of [P] Fig. 4.
pub const FIGURE_EPS: [f64; 2] = [1.0, 10.0];

const WIDTH: u32 = 1520;
const HEIGHT: u32 = 860;
const X_RANGE: (f64, f64) = (-20.0, 20.0);
const Y_RANGE: (f64, f64) = (-10.0, 10.0);
const POINTS_PER_CLASS: usize = 250;

fn figure_error(e: impl std::fmt::Display) -> TheoryError {
    TheoryError::Figure(e.to_string())
}

fn register_embedded_font() -> Result<(), TheoryError> {
    if crate::report::register_embedded_font() {
        Ok(())
    } else {
        Err(TheoryError::Figure(
            "embedded DejaVu Sans did not load".into(),
        ))
    }
}

/// Points of the ellipse {x : (x−c)ᵀΣ⁻¹(x−c) = 1}, the unit ball of the Mahalanobis metric.
fn metric_ball(center: [f64; 2], sigma: &DMatrix<f64>) -> Result<Vec<(f64, f64)>, TheoryError> {
    let l = sigma
        .clone()
        .cholesky()
        .ok_or_else(|| TheoryError::NotPositiveDefinite("figure covariance".into()))?
        .l();
    Ok((0..=200)
        .map(|k| {
            let t = 2.0 * PI * k as f64 / 200.0;
            let p = &l * DVector::from_vec(vec![t.cos(), t.sin()]);
            (center[0] + p[0], center[1] + p[1])
        })
        .collect())
}

/// Splits a polyline into the runs of points inside the plotted box, so nothing is drawn on the
/// frame where plotters would clamp outside points.
fn inside_runs(points: Vec<(f64, f64)>) -> Vec<Vec<(f64, f64)>> {
    let inside = |p: &(f64, f64)| {
        p.0 >= X_RANGE.0 && p.0 <= X_RANGE.1 && p.1 >= Y_RANGE.0 && p.1 <= Y_RANGE.1
    };
    let mut runs = vec![Vec::new()];
    for p in points {
        if inside(&p) {
            if let Some(r) = runs.last_mut() {
                r.push(p);
            }
        } else if runs.last().is_some_and(|r| !r.is_empty()) {
            runs.push(Vec::new());
        }
    }
    runs.retain(|r| r.len() > 1);
    runs
}

/// The segment of the line wᵀx = 0 inside the plotted box.
fn boundary(w: &DVector<f64>) -> Vec<(f64, f64)> {
    let dir = (-w[1], w[0]);
    let tx = if dir.0 != 0.0 {
        X_RANGE.1 / dir.0.abs()
    } else {
        f64::INFINITY
    };
    let ty = if dir.1 != 0.0 {
        Y_RANGE.1 / dir.1.abs()
    } else {
        f64::INFINITY
    };
    let t = tx.min(ty);
    vec![(-t * dir.0, -t * dir.1), (t * dir.0, t * dir.1)]
}

fn gaussian_points(
    mean: [f64; 2],
    sigma: &DMatrix<f64>,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<(f64, f64)>, TheoryError> {
    let l = sigma
        .clone()
        .cholesky()
        .ok_or_else(|| TheoryError::NotPositiveDefinite("figure covariance".into()))?
        .l();
    Ok((0..POINTS_PER_CLASS)
        .map(|_| {
            let z = DVector::from_fn(2, |_, _| StandardNormal.sample(rng));
            let p = &l * z;
            (mean[0] + p[0], mean[1] + p[1])
        })
        .collect())
}

struct Panel {
    title: String,
    /// (covariance, decision weight) of the model drawn; None for the MLE panel.
    model: Option<(DMatrix<f64>, DVector<f64>)>,
}

/// Writes [P] Figure 4 as a PNG: four panels on x1 ∈ [−20, 20], x2 ∈ [−10, 10]. (1) samples of
/// N(0, Σ*) with the ℓ2 unit ball and the MLE's Σ*⁻¹ metric unit ball; (2) both classes with the
/// true parameters' boundary sign(xᵀΣ*⁻¹μ*) (ε = 0); (3), (4) the robust parameters (μ*, Σ_r) of
/// Theorem 2 at ε = 1 and 10: their metric balls around ±μ* and their boundary, the ε = 0 boundary
/// dashed-grey for reference. Written to `path.with_extension("png.tmp")`, then renamed to `path`.
pub fn figure4(path: &Path) -> Result<(), TheoryError> {
    register_embedded_font()?;
    let sigma_star = DMatrix::from_diagonal(&DVector::from_column_slice(&FIGURE_SIGMA));
    let mu = DVector::from_column_slice(&FIGURE_MU);
    let weight = |sigma: &DMatrix<f64>| -> Result<DVector<f64>, TheoryError> {
        sigma
            .clone()
            .cholesky()
            .map(|c| c.solve(&mu))
            .ok_or_else(|| TheoryError::NotPositiveDefinite("figure covariance".into()))
    };
    let true_w = weight(&sigma_star)?;
    let mut panels = vec![
        Panel {
            title: "Maximum likelihood estimate".into(),
            model: None,
        },
        Panel {
            title: "True parameters (ε = 0)".into(),
            model: Some((sigma_star.clone(), true_w.clone())),
        },
    ];
    for eps in FIGURE_EPS {
        let (sigma_r, _) = robust_covariance(&sigma_star, eps)?;
        let w = weight(&sigma_r)?;
        panels.push(Panel {
            title: format!("Robust parameters, ε = {eps:.1}"),
            model: Some((sigma_r, w)),
        });
    }

    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let centred = gaussian_points([0.0, 0.0], &sigma_star, &mut rng)?;
    let positive = gaussian_points([mu[0], mu[1]], &sigma_star, &mut rng)?;
    let negative = gaussian_points([-mu[0], -mu[1]], &sigma_star, &mut rng)?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);

    let mut buffer = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(figure_error)?;
        for (area, panel) in root.split_evenly((2, 2)).iter().zip(&panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 24))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(50)
                .build_cartesian_2d(X_RANGE.0..X_RANGE.1, Y_RANGE.0..Y_RANGE.1)
                .map_err(figure_error)?;
            chart
                .configure_mesh()
                .x_desc("Feature x1")
                .y_desc("Feature x2")
                .label_style(("sans-serif", 14))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(figure_error)?;
            match &panel.model {
                None => {
                    chart
                        .draw_series(
                            centred
                                .iter()
                                .map(|p| Circle::new(*p, 2, blue.mix(0.5).filled())),
                        )
                        .map_err(figure_error)?
                        .label("samples from N(0, Σ)")
                        .legend(move |(x, y)| Circle::new((x + 10, y), 3, blue.filled()));
                    let unit: Vec<(f64, f64)> = (0..=100)
                        .map(|k| (2.0 * PI * k as f64 / 100.0).sin_cos())
                        .map(|(s, c)| (c, s))
                        .collect();
                    chart
                        .draw_series(LineSeries::new(unit, BLACK.stroke_width(3)))
                        .map_err(figure_error)?
                        .label("ℓ2 unit ball")
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3))
                        });
                    chart
                        .draw_series(LineSeries::new(
                            metric_ball([0.0, 0.0], &sigma_star)?,
                            RED.stroke_width(3),
                        ))
                        .map_err(figure_error)?
                        .label("Σ⁻¹-metric unit ball")
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3))
                        });
                }
                Some((sigma, w)) => {
                    chart
                        .draw_series(
                            positive
                                .iter()
                                .map(|p| Circle::new(*p, 2, orange.mix(0.5).filled())),
                        )
                        .map_err(figure_error)?
                        .label("y = +1")
                        .legend(move |(x, y)| Circle::new((x + 10, y), 3, orange.filled()));
                    chart
                        .draw_series(
                            negative
                                .iter()
                                .map(|p| Circle::new(*p, 2, blue.mix(0.5).filled())),
                        )
                        .map_err(figure_error)?
                        .label("y = −1")
                        .legend(move |(x, y)| Circle::new((x + 10, y), 3, blue.filled()));
                    let mut labelled = false;
                    for center in [[mu[0], mu[1]], [-mu[0], -mu[1]]] {
                        for run in inside_runs(metric_ball(center, sigma)?) {
                            let series = chart
                                .draw_series(LineSeries::new(run, RED.stroke_width(2)))
                                .map_err(figure_error)?;
                            if !labelled {
                                series
                                    .label("Σ⁻¹-metric unit balls at ±μ")
                                    .legend(|(x, y)| {
                                        PathElement::new(
                                            vec![(x, y), (x + 20, y)],
                                            RED.stroke_width(2),
                                        )
                                    });
                                labelled = true;
                            }
                        }
                    }
                    if w != &true_w {
                        chart
                            .draw_series(DashedLineSeries::new(
                                boundary(&true_w),
                                8,
                                6,
                                RGBColor(128, 128, 128).stroke_width(2),
                            ))
                            .map_err(figure_error)?
                            .label("boundary at ε = 0")
                            .legend(|(x, y)| {
                                PathElement::new(
                                    vec![(x, y), (x + 20, y)],
                                    RGBColor(128, 128, 128).stroke_width(2),
                                )
                            });
                    }
                    chart
                        .draw_series(LineSeries::new(boundary(w), BLACK.stroke_width(3)))
                        .map_err(figure_error)?
                        .label("decision boundary")
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3))
                        });
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(figure_error)?;
        }
        root.present().map_err(figure_error)?;
    }

    let bytes = crate::report::encode_png(&buffer, WIDTH, HEIGHT).map_err(figure_error)?;
    let tmp = path.with_extension("png.tmp");
    let io = |source: std::io::Error, p: &Path| TheoryError::Io {
        path: p.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, &bytes).map_err(|e| io(e, &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| io(e, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_rotates_toward_l2_direction() {
        // The angle between the decision weight Σ⁻¹μ and μ shrinks as ε grows (Theorem 3 in 2-D).
        let sigma_star = DMatrix::from_diagonal(&DVector::from_column_slice(&FIGURE_SIGMA));
        let mu = DVector::from_column_slice(&FIGURE_MU);
        let angle = |s: &DMatrix<f64>| {
            let w = s.clone().try_inverse().expect("SPD") * &mu;
            (w.dot(&mu) / (w.norm() * mu.norm())).acos()
        };
        let mut last = angle(&sigma_star);
        for eps in [1.0, 10.0] {
            let (s, _) = robust_covariance(&sigma_star, eps).expect("valid");
            let a = angle(&s);
            assert!(a < last, "eps {eps}: angle {a} not below {last}");
            last = a;
        }
        assert!(
            last < 0.2,
            "at ε = 10 the boundary should be close to ⟂ μ, angle {last}"
        );
    }

    #[test]
    fn figure_is_written_atomically() {
        let dir = std::env::temp_dir().join(format!("theory-figure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("figure4.png");
        figure4(&path).expect("renders");
        let bytes = std::fs::read(&path).expect("written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(!path.with_extension("png.tmp").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
