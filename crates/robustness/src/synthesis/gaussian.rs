//! The seed distribution of class-conditional generation (Santurkar et al. 2019 generation
//! notebook, via ../shared/PAPER.md §5): one class's images, block-averaged GRAIN x GRAIN,
//! fitted by a Gaussian (mean, biased covariance `Xc^T Xc / N`, plus `1e-4 I`); samples are
//! clamped to [0, 1] and block-replicated back to full size.

use crate::data::Dataset;
use crate::error::{Error, Result};
use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand_distr::StandardNormal;

/// Added to the covariance's diagonal before the Cholesky factorisation ([GEN]'s
/// `MultivariateNormal(mean, cov + 1e-4 I)`).
pub const COVARIANCE_RIDGE: f64 = 1e-4;

/// Largest dimension fitted: its D x D covariance and Cholesky factor (f64) take 2.25 GiB, and
/// the factorisation ~D^3 / 3 = 0.6 TFLOP (minutes on 2 cores). Beyond it, a coarser grain.
pub const MAX_FIT_DIM: usize = 12_288;

fn check_grain(shape: [usize; 3], grain: usize) -> Result<()> {
    let [_, h, w] = shape;
    if grain == 0 || !h.is_multiple_of(grain) || !w.is_multiple_of(grain) {
        return Err(Error::Config(format!(
            "--grain {grain} must be at least 1 and divide the image size {h}x{w}"
        )));
    }
    Ok(())
}

/// Averages `grain x grain` blocks. image: [C, H, W] (`shape`) -> [C, H / grain, W / grain].
pub fn block_downsample(image: &[f32], shape: [usize; 3], grain: usize) -> Result<Vec<f32>> {
    check_grain(shape, grain)?;
    let [c, h, w] = shape;
    if image.len() != c * h * w {
        return Err(Error::Shape {
            context: "block_downsample".into(),
            expected: shape.to_vec(),
            found: vec![image.len()],
        });
    }
    let (sh, sw) = (h / grain, w / grain);
    let mut out = vec![0.0f32; c * sh * sw];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                out[(ch * sh + y / grain) * sw + x / grain] += image[(ch * h + y) * w + x];
            }
        }
    }
    let area = (grain * grain) as f32;
    out.iter_mut().for_each(|v| *v /= area);
    Ok(out)
}

/// Replicates every value into a `grain x grain` block. small: [C, H / grain, W / grain] ->
/// [C, H, W] (`shape`, the full size).
pub fn block_upsample(small: &[f32], shape: [usize; 3], grain: usize) -> Result<Vec<f32>> {
    check_grain(shape, grain)?;
    let [c, h, w] = shape;
    let (sh, sw) = (h / grain, w / grain);
    if small.len() != c * sh * sw {
        return Err(Error::Shape {
            context: "block_upsample".into(),
            expected: vec![c, sh, sw],
            found: vec![small.len()],
        });
    }
    let mut out = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                out.push(small[(ch * sh + y / grain) * sw + x / grain]);
            }
        }
    }
    Ok(out)
}

/// A Gaussian fitted to the (downsampled) images of one class.
#[derive(Clone, Debug)]
pub struct ClassGaussian {
    shape: [usize; 3],
    grain: usize,
    mean: DVector<f64>,
    /// Lower Cholesky factor of `cov + COVARIANCE_RIDGE * I`.
    factor: DMatrix<f64>,
    examples: usize,
}

impl ClassGaussian {
    /// Fits the images of `class` in `data` (values in [0, 1]), block-averaged by `grain`.
    /// Costs O(N D^2 + D^3) for N images of D = C * (H / grain) * (W / grain) values (a few
    /// seconds per CIFAR-10 class).
    pub fn fit(data: &Dataset, class: usize, grain: usize) -> Result<Self> {
        let shape = [data.channels, data.height, data.width];
        check_grain(shape, grain)?;
        let [c, h, w] = shape;
        let dim = c * (h / grain) * (w / grain);
        if dim > MAX_FIT_DIM {
            return Err(Error::Config(format!(
                "the seed distribution of {c}x{h}x{w} images at --grain {grain} has {dim} dimensions (a {dim} x {dim} covariance, {:.1} GiB as f64); at most {MAX_FIT_DIM} are fitted: give a larger --grain that divides {h} and {w} (the authors use 4 at 224x224)",
                (dim * dim * 8) as f64 / (1u64 << 30) as f64
            )));
        }
        let name = data.class_names.get(class).cloned().ok_or_else(|| {
            Error::Config(format!(
                "class {class} does not exist (the data set has {} classes)",
                data.num_classes()
            ))
        })?;
        let members: Vec<usize> = (0..data.len())
            .filter(|&i| data.labels[i] == class)
            .collect();
        if members.is_empty() {
            return Err(Error::Config(format!(
                "class '{name}' has no images in {} to fit the seed distribution on",
                data.name
            )));
        }
        let rows = members
            .iter()
            .map(|&i| block_downsample(data.image(i), shape, grain))
            .collect::<Result<Vec<_>>>()?;
        let (n, d) = (rows.len(), rows[0].len());
        let x = DMatrix::from_fn(n, d, |i, j| f64::from(rows[i][j]));
        let mean = DVector::from_fn(d, |j, _| x.column(j).sum() / n as f64);
        let xc = DMatrix::from_fn(n, d, |i, j| x[(i, j)] - mean[j]);
        let mut cov = xc.tr_mul(&xc) / n as f64;
        for j in 0..d {
            cov[(j, j)] += COVARIANCE_RIDGE;
        }
        let factor = cov
            .cholesky()
            .ok_or_else(|| {
                Error::Config(format!(
                    "the covariance of class '{name}' is not positive definite even with {COVARIANCE_RIDGE} added to its diagonal"
                ))
            })?
            .l();
        Ok(Self {
            shape,
            grain,
            mean,
            factor,
            examples: n,
        })
    }

    /// Dimension D of the fitted (downsampled) space.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Number of images the fit used.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Mean, [D].
    pub fn mean(&self) -> &DVector<f64> {
        &self.mean
    }

    /// The sampled covariance `cov + COVARIANCE_RIDGE * I`, [D, D].
    pub fn covariance(&self) -> DMatrix<f64> {
        &self.factor * self.factor.transpose()
    }

    /// One draw in the downsampled space, before clamping: mean + L z, z ~ N(0, I).
    pub fn sample_reduced(&self, rng: &mut impl Rng) -> DVector<f64> {
        let z = DVector::from_fn(self.dim(), |_, _| rng.sample::<f64, _>(StandardNormal));
        &self.mean + &self.factor * z
    }

    /// `n` full-size seed images, [n, C, H, W] flattened, clamped to [0, 1].
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * self.shape.iter().product::<usize>());
        for _ in 0..n {
            let small: Vec<f32> = self
                .sample_reduced(rng)
                .iter()
                .map(|&v| v.clamp(0.0, 1.0) as f32)
                .collect();
            out.extend(
                block_upsample(&small, self.shape, self.grain)
                    .expect("the grain was checked when fitting"),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn block_down_and_upsampling_round_trip() {
        let shape = [3, 4, 6];
        let small: Vec<f32> = (0..3 * 2 * 3).map(|i| i as f32 / 18.0).collect();
        let big = block_upsample(&small, shape, 2).expect("upsample");
        assert_eq!(big.len(), 72);
        // Every 2x2 block holds one value: pixel (1, 3, 5) is block (1, 1, 2).
        assert_eq!(big[(4 + 3) * 6 + 5], small[(2 + 1) * 3 + 2]);
        assert_eq!(block_downsample(&big, shape, 2).expect("down"), small);
        // Averaging: a 2x2 block of 0, 1, 2, 3 averages to 1.5.
        let img = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(block_downsample(&img, [1, 2, 2], 2).expect("d"), vec![1.5]);
        // Grain 1 is the identity.
        let x: Vec<f32> = (0..72).map(|i| (i as f32).sin()).collect();
        assert_eq!(block_downsample(&x, shape, 1).expect("d"), x);
        assert_eq!(block_upsample(&x, shape, 1).expect("u"), x);
    }

    #[test]
    fn a_grain_that_does_not_divide_the_image_is_an_error() {
        let err = block_downsample(&[0.0; 48], [3, 4, 4], 3).expect_err("3 does not divide 4");
        assert!(err.to_string().contains("--grain 3"), "{err}");
        assert!(block_upsample(&[0.0; 3], [3, 4, 4], 0).is_err());
        assert!(block_downsample(&[0.0; 5], [3, 4, 4], 2).is_err());
    }

    /// Mean and biased covariance by plain loops, for comparison.
    fn moments(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let (n, d) = (rows.len() as f64, rows[0].len());
        let mean: Vec<f64> = (0..d)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let cov = (0..d)
            .map(|a| {
                (0..d)
                    .map(|b| {
                        rows.iter()
                            .map(|r| (r[a] - mean[a]) * (r[b] - mean[b]))
                            .sum::<f64>()
                            / n
                    })
                    .collect()
            })
            .collect();
        (mean, cov)
    }

    #[test]
    fn the_fitted_gaussian_has_the_class_mean_and_biased_covariance_and_samples_match() {
        let split = crate::data::digits::load(0).expect("digits");
        let train = &split.train;
        let class = 3;
        let fit = ClassGaussian::fit(train, class, 2).expect("fit");
        assert_eq!(fit.dim(), 16);
        let rows: Vec<Vec<f64>> = (0..train.len())
            .filter(|&i| train.labels[i] == class)
            .map(|i| {
                block_downsample(train.image(i), [1, 8, 8], 2)
                    .expect("down")
                    .into_iter()
                    .map(f64::from)
                    .collect()
            })
            .collect();
        assert_eq!(fit.examples(), rows.len());
        let (mean, cov) = moments(&rows);
        let fitted_cov = fit.covariance();
        for a in 0..16 {
            assert!((fit.mean()[a] - mean[a]).abs() < 1e-9);
            for b in 0..16 {
                let ridge = if a == b { COVARIANCE_RIDGE } else { 0.0 };
                // Biased (divided by N, not N - 1): off by 1/N ~ 0.7% otherwise.
                assert!(
                    (fitted_cov[(a, b)] - cov[a][b] - ridge).abs() < 1e-9,
                    "cov[{a}][{b}]: {} vs {}",
                    fitted_cov[(a, b)],
                    cov[a][b]
                );
            }
        }
        // Draws have the data's moments: 40,000 draws, standard errors ~0.002 (mean) and
        // ~0.001 (covariance) for pixel variances up to ~0.15.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let draws: Vec<Vec<f64>> = (0..40_000)
            .map(|_| fit.sample_reduced(&mut rng).iter().copied().collect())
            .collect();
        let (dm, dc) = moments(&draws);
        for a in 0..16 {
            assert!((dm[a] - mean[a]).abs() < 0.01, "mean[{a}]");
            for b in 0..16 {
                let ridge = if a == b { COVARIANCE_RIDGE } else { 0.0 };
                assert!((dc[a][b] - cov[a][b] - ridge).abs() < 0.01, "cov[{a}][{b}]");
            }
        }
        // Full-size samples are clamped and made of 2x2 blocks.
        let images = fit.sample(5, &mut rng);
        assert_eq!(images.len(), 5 * 64);
        assert!(images.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(images[0], images[1]);
        assert_eq!(images[0], images[8]);
    }

    #[test]
    fn fitting_a_missing_class_is_an_error() {
        let split = crate::data::digits::load(0).expect("digits");
        let err = ClassGaussian::fit(&split.train, 10, 1).expect_err("no class 10");
        assert!(err.to_string().contains("class 10"), "{err}");
        let one_class = split.train.select_classes(&[4]);
        let mut empty = one_class.subset(&[]);
        empty.class_names = one_class.class_names.clone();
        let err = ClassGaussian::fit(&empty, 0, 1).expect_err("no images");
        assert!(err.to_string().contains("no images"), "{err}");
    }

    #[test]
    fn a_seed_distribution_too_wide_to_fit_is_refused_with_the_grain_to_use() {
        // Two 3x128x128 images: 49,152 dimensions at grain 1 (an 18 GiB covariance).
        let big = Dataset {
            name: "big".into(),
            images: vec![0.5; 2 * 3 * 128 * 128],
            labels: vec![0, 0],
            channels: 3,
            height: 128,
            width: 128,
            class_names: vec!["a".into()],
        };
        let err = ClassGaussian::fit(&big, 0, 1).expect_err("too wide");
        assert!(
            err.to_string().contains("49152 dimensions") && err.to_string().contains("--grain"),
            "{err}"
        );
        // Grain 4: 3,072 dimensions, fitted.
        let fit = ClassGaussian::fit(&big, 0, 4).expect("fits");
        assert_eq!(fit.dim(), 3072);
    }
}
