//! The Tsipras et al. (2019) distribution of one robust and `d` non-robust features:
//! `y` uniform in {-1,+1}, `x_1 = y` w.p. `p` (else `-y`), `x_2..x_{d+1} ~ N(eta*y, 1)`.
//! Stored as `1x1x(d+1)` "images" of raw real features — NOT in `[0, 1]`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{DataError, Dataset, Split};

/// Parameters of the synthetic distribution.
///
/// Defaults: `p = 0.95`, `d = 20`, `eta = 3 / sqrt(d)` (≈ 0.671), 10,000 train and 2,000 test
/// points. Tsipras et al. take `eta = Θ(1/√d)`; with `eta = 3/√d` the average of the weak
/// features, `mean(x_2..x_{d+1}) ~ N(eta*y, 1/d)`, classifies with `Φ(3)` ≈ 99.9% accuracy,
/// beating the robust feature's `p`, while an ℓ∞ perturbation of `2*eta` flips every weak
/// feature's mean. Missing fields deserialize to the defaults (with `eta` = `3/√20`, so set
/// `eta` too when changing `d`; see [`SyntheticConfig::with_d`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyntheticConfig {
    /// Probability that the robust feature `x_1` equals `y`; in `[0, 1]`.
    pub p: f64,
    /// Number of non-robust features; `>= 1`.
    pub d: usize,
    /// Mean shift of the non-robust features: `x_i ~ N(eta*y, 1)`; finite.
    pub eta: f64,
    /// Training points.
    pub n_train: usize,
    /// Test points.
    pub n_test: usize,
}

impl SyntheticConfig {
    /// The default `eta` for `d` weak features: `3 / sqrt(d)`.
    pub fn default_eta(d: usize) -> f64 {
        3.0 / (d.max(1) as f64).sqrt()
    }

    /// The defaults with `d` weak features and `eta = 3 / sqrt(d)`.
    pub fn with_d(d: usize) -> SyntheticConfig {
        SyntheticConfig {
            d,
            eta: Self::default_eta(d),
            ..SyntheticConfig::default()
        }
    }

    /// Checks `p` in `[0, 1]`, `d >= 1`, `eta` finite.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |message: String| Err(DataError::InvalidConfig { message });
        if !(0.0..=1.0).contains(&self.p) {
            return bad(format!("p must be in [0, 1], found {}", self.p));
        }
        if self.d == 0 {
            return bad("d (number of non-robust features) must be at least 1".to_string());
        }
        if !self.eta.is_finite() {
            return bad(format!("eta must be finite, found {}", self.eta));
        }
        Ok(())
    }
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            p: 0.95,
            d: 20,
            eta: Self::default_eta(20),
            n_train: 10_000,
            n_test: 2_000,
        }
    }
}

/// Generates train and test sets. Deterministic for `(config, seed)`: train uses ChaCha8
/// stream 0 and test stream 1 of `seed`, so changing `n_test` leaves the train set unchanged.
/// Labels: class 0 is `y = -1`, class 1 is `y = +1` (`class_names = ["-1", "+1"]`).
pub fn generate(config: &SyntheticConfig, seed: u64) -> Result<Split, DataError> {
    config.validate()?;
    Ok(Split {
        train: sample(config, config.n_train, seed, 0, "synthetic-train"),
        test: sample(config, config.n_test, seed, 1, "synthetic-test"),
    })
}

fn sample(config: &SyntheticConfig, n: usize, seed: u64, stream: u64, name: &str) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut normal = StdNormal::default();
    let width = config.d + 1;
    let mut images = Vec::with_capacity(n * width);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let positive = rng.random_bool(0.5);
        let y = if positive { 1.0 } else { -1.0 };
        let robust = if rng.random_bool(config.p) { y } else { -y };
        images.push(robust as f32);
        for _ in 0..config.d {
            images.push((config.eta * y + normal.sample(&mut rng)) as f32);
        }
        labels.push(usize::from(positive));
    }
    Dataset {
        name: name.to_string(),
        images,
        labels,
        channels: 1,
        height: 1,
        width,
        class_names: vec!["-1".to_string(), "+1".to_string()],
    }
}

/// Standard normal sampler (Box–Muller, both outputs used).
#[derive(Default)]
struct StdNormal {
    spare: Option<f64>,
}

impl StdNormal {
    fn sample(&mut self, rng: &mut impl Rng) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = SyntheticConfig::default();
        assert!((c.eta - 3.0 / 20f64.sqrt()).abs() < 1e-12);
        assert!(c.validate().is_ok());
        let bad = SyntheticConfig {
            p: 1.5,
            ..c.clone()
        };
        assert!(matches!(
            generate(&bad, 0),
            Err(DataError::InvalidConfig { .. })
        ));
        assert!(SyntheticConfig { d: 0, ..c.clone() }.validate().is_err());
        assert!(SyntheticConfig { eta: f64::NAN, ..c }.validate().is_err());
        let partial: SyntheticConfig =
            serde_json::from_str(r#"{"d": 5, "n_train": 3}"#).expect("partial config");
        assert_eq!((partial.d, partial.n_train, partial.p), (5, 3, 0.95));
        assert_eq!(SyntheticConfig::with_d(100).eta, 0.3);
    }

    #[test]
    fn statistics_match_the_distribution() {
        let cfg = SyntheticConfig {
            n_train: 20_000,
            n_test: 100,
            ..SyntheticConfig::default()
        };
        let s = generate(&cfg, 42).expect("valid config");
        let d = &s.train;
        assert_eq!((d.len(), d.image_len(), d.num_classes()), (20_000, 21, 2));
        let (mut agree, mut weak_sum, mut sq_sum, mut positives) = (0usize, 0.0f64, 0.0f64, 0);
        for i in 0..d.len() {
            let y = if d.labels[i] == 1 { 1.0 } else { -1.0 };
            positives += d.labels[i];
            let x = d.image(i);
            assert!(x[0] == 1.0 || x[0] == -1.0);
            agree += usize::from(f64::from(x[0]) == y);
            for &v in &x[1..] {
                let centred = f64::from(v) * y - cfg.eta;
                weak_sum += f64::from(v) * y;
                sq_sum += centred * centred;
            }
        }
        let n = d.len() as f64;
        let m = n * cfg.d as f64;
        let p_hat = agree as f64 / n;
        assert!((p_hat - cfg.p).abs() < 0.01, "p_hat = {p_hat}");
        let eta_hat = weak_sum / m;
        assert!((eta_hat - cfg.eta).abs() < 0.02, "eta_hat = {eta_hat}");
        let var = sq_sum / m;
        assert!((var - 1.0).abs() < 0.03, "var = {var}");
        let frac_pos = positives as f64 / n;
        assert!((frac_pos - 0.5).abs() < 0.02, "fraction +1 = {frac_pos}");
    }

    #[test]
    fn deterministic_and_streams_independent() {
        let cfg = SyntheticConfig {
            n_train: 50,
            n_test: 20,
            ..SyntheticConfig::default()
        };
        let a = generate(&cfg, 3).expect("valid");
        let b = generate(&cfg, 3).expect("valid");
        assert_eq!(a.train.images, b.train.images);
        assert_eq!(a.test.labels, b.test.labels);
        assert_ne!(a.train.images[..20], a.test.images[..20]);
        let more_test = generate(
            &SyntheticConfig {
                n_test: 5,
                ..cfg.clone()
            },
            3,
        )
        .expect("valid");
        assert_eq!(a.train.images, more_test.train.images);
        assert_ne!(
            generate(&cfg, 4).expect("valid").train.images,
            a.train.images
        );
    }
}
