//! Image synthesis with a single classifier (Santurkar et al. 2019, "Image Synthesis with a
//! Single (Robust) Classifier"; settings from ../shared/PAPER.md §5): class-conditional
//! generation from a class Gaussian seed ([`synthesize`]), feature visualisation by maximising
//! one representation unit ([`visualize_feature`]) and representation inversion ([`invert`]).
//! All three run the one PGD loop of [`crate::attack`]; inversion runs exactly the D_R / D_NR
//! construction's code ([`crate::construct::robust`]).

pub mod gaussian;

use crate::attack::loss::LossKind;
use crate::attack::threat::Constraint;
use crate::attack::{self, AttackConfig};
use crate::construct::Start;
use crate::construct::relabel::stream;
use crate::construct::robust;
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::tensors;
use crate::train::checkpoint::write_atomic;
use burn::prelude::*;
use gaussian::ClassGaussian;
use safetensors::{Dtype, tensor::TensorView};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use gaussian::{block_downsample, block_upsample};

/// Tags of this module's random streams (see [`crate::construct::relabel`]'s).
const SEED_STREAM: u64 = 0x7365_6564_0000_0011;
const GEN_ATTACK_STREAM: u64 = 0x7379_6e74_6800_0012;

/// Class-conditional generation settings; [`crate::defaults::synthesis`] gives the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthesisConfig {
    /// Targeted L2 PGD from the seed toward the class (cross-entropy, no random start).
    pub attack: AttackConfig,
    /// Block size of the seed distribution's downsampling (1 = none).
    pub grain: usize,
    /// Images optimised together.
    pub batch_size: usize,
    /// Seed of the seed-distribution draws.
    pub seed: u64,
}

/// Feature-visualisation settings; [`crate::defaults::feature_visualization`] gives ours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisualizeConfig {
    /// Untargeted L2 PGD that ascends the unit's activation.
    pub attack: AttackConfig,
    /// Start from the chosen images of the pool (`image`) or from grey noise.
    pub start: Start,
    /// Images optimised together.
    pub batch_size: usize,
    /// Seed of the noise starts.
    pub seed: u64,
}

/// Representation-inversion settings; [`crate::defaults::inversion`] gives the D_R
/// construction's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvertConfig {
    /// The construction's attack: targeted, unconstrained normalised steps, clamped to [0, 1].
    pub attack: AttackConfig,
    /// Start from noise or from another image of the same set.
    pub start: Start,
    /// Divide the distance by `||g(x)||_2`.
    pub normalized_loss: bool,
    /// Images optimised together.
    pub batch_size: usize,
    /// Seed of the starts.
    pub seed: u64,
}

fn check_batch(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::Config("--batch must be at least 1".into()));
    }
    Ok(())
}

impl SynthesisConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        self.attack.validate()?;
        check_batch(self.batch_size)?;
        if !self.attack.targeted {
            return Err(Error::Config(
                "generation minimises the loss toward the class: the attack must be targeted"
                    .into(),
            ));
        }
        if self.grain == 0 {
            return Err(Error::Config("--grain must be at least 1".into()));
        }
        Ok(())
    }
}

/// What a synthesis, visualisation or inversion produced, on the host. Images are
/// [n, C, H, W] flattened, in [0, 1].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// [C, H, W] of every image.
    pub shape: [usize; 3],
    /// Where each optimisation started (the seeds, start images or noise).
    pub start: Vec<f32>,
    /// The results.
    pub images: Vec<f32>,
    /// Per image: the class (synthesis), the unit (visualisation) or the index of the image
    /// whose representation is matched (inversion).
    pub target: Vec<usize>,
    /// The objective at the start: the target class's probability (synthesis), the unit's
    /// activation (visualisation), the representation distance (inversion).
    pub start_score: Vec<f32>,
    /// The same objective at the result.
    pub score: Vec<f32>,
    /// The model's predicted class on each result.
    pub predicted: Vec<usize>,
    /// The softmax probability of that predicted class.
    pub confidence: Vec<f32>,
}

impl Generated {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.target.len()
    }

    /// True when it holds no image.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// Appends another result of the same image shape.
    pub fn append(&mut self, other: Generated) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.start.extend(other.start);
        self.images.extend(other.images);
        self.target.extend(other.target);
        self.start_score.extend(other.start_score);
        self.score.extend(other.score);
        self.predicted.extend(other.predicted);
        self.confidence.extend(other.confidence);
    }

    /// Writes the images as SafeTensors (atomically): `images` and `start` (f32
    /// [n, C, H, W]), `target` and `predicted` (i64 [n]), `score`, `start_score` and
    /// `confidence` (f32 [n]). Any SafeTensors reader opens it.
    pub fn write_safetensors(&self, path: &Path) -> Result<()> {
        let [c, h, w] = self.shape;
        let n = self.len();
        let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let i64s =
            |v: &[usize]| -> Vec<u8> { v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect() };
        let buffers = [
            ("images", Dtype::F32, vec![n, c, h, w], f32s(&self.images)),
            ("start", Dtype::F32, vec![n, c, h, w], f32s(&self.start)),
            ("target", Dtype::I64, vec![n], i64s(&self.target)),
            ("predicted", Dtype::I64, vec![n], i64s(&self.predicted)),
            ("score", Dtype::F32, vec![n], f32s(&self.score)),
            ("start_score", Dtype::F32, vec![n], f32s(&self.start_score)),
            ("confidence", Dtype::F32, vec![n], f32s(&self.confidence)),
        ];
        let views = buffers
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (*name, v))
                    .map_err(|e| Error::Shape {
                        context: format!("{} tensor '{name}' ({e})", path.display()),
                        expected: shape.clone(),
                        found: vec![bytes.len()],
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| Error::Config(format!("serialising {}: {e}", path.display())))?;
        write_atomic(path, &bytes)
    }
}

/// Parses `--class`: `all`, or names / indices (comma-separated) of `class_names`.
pub fn parse_class_spec(spec: &str, class_names: &[String]) -> Result<Vec<usize>> {
    if spec.trim().eq_ignore_ascii_case("all") {
        return Ok((0..class_names.len()).collect());
    }
    Ok(data::parse_classes(spec, class_names)?)
}

/// Width of the model's representation (`forward_features`) for images of `shape`.
pub fn feature_width(model: &Classifier, shape: [usize; 3], device: &Device) -> usize {
    let [c, h, w] = shape;
    let x = Tensor::<4>::zeros([1, c, h, w], &device.clone().without_autodiff());
    model.for_inference().forward_features(x).dims()[1]
}

/// Predicted class and its softmax probability, plus the probability of `target`, per image.
fn predictions(
    model: &Classifier,
    x: Tensor<4>,
    target: Option<&[usize]>,
) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    let logits = model.forward(x);
    let [_, k] = logits.dims();
    let probs = tensors::to_vec(burn::tensor::activation::softmax(logits, 1));
    let mut predicted = Vec::new();
    let mut confidence = Vec::new();
    let mut of_target = Vec::new();
    for (i, row) in probs.chunks(k.max(1)).enumerate() {
        let (best, p) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |m, (j, &v)| if v > m.1 { (j, v) } else { m },
            );
        predicted.push(best);
        confidence.push(p);
        if let Some(t) = target {
            of_target.push(row.get(t[i]).copied().unwrap_or(0.0));
        }
    }
    (predicted, confidence, of_target)
}

/// Runs `optimise` on batches of `start` (n images of `shape`), with the per-batch targets,
/// and gathers the results.
fn batched(
    start: &[f32],
    shape: [usize; 3],
    targets: &[usize],
    batch_size: usize,
    device: &Device,
    mut optimise: impl FnMut(usize, Tensor<4>, &[usize]) -> Result<Generated>,
) -> Result<Generated> {
    let per: usize = shape.iter().product();
    let [c, h, w] = shape;
    let mut out = Generated {
        shape,
        ..Generated::default()
    };
    for from in (0..targets.len()).step_by(batch_size.max(1)) {
        let to = (from + batch_size).min(targets.len());
        let x = tensors::images(
            start[from * per..to * per].to_vec(),
            [to - from, c, h, w],
            device,
        );
        out.append(optimise(from, x, &targets[from..to])?);
    }
    out.shape = shape;
    Ok(out)
}

/// Class-conditional generation (Santurkar et al. 2019): `n` seeds drawn from a Gaussian fitted
/// to the images of `class` in `data` (see [`gaussian`]), each pushed toward `class` by
/// targeted L2 PGD on cross-entropy. `data` is the pool the seed distribution is fitted on (the
/// CLI passes the training set). Scores are the class's probability at the seed and the result.
pub fn synthesize(
    model: &Classifier,
    data: &Dataset,
    class: usize,
    n: usize,
    config: &SynthesisConfig,
    device: &Device,
) -> Result<Generated> {
    config.validate()?;
    let fit = ClassGaussian::fit(data, class, config.grain)?;
    let seeds = fit.sample(n, &mut stream(config.seed, SEED_STREAM, class));
    let device = device.clone().without_autodiff();
    let model = model.for_inference();
    let targets = vec![class; n];
    let shape = [data.channels, data.height, data.width];
    batched(
        &seeds,
        shape,
        &targets,
        config.batch_size,
        &device,
        |from, x0, t| {
            let y = tensors::labels(t, &device);
            let mut rng = stream(config.seed, GEN_ATTACK_STREAM, class * n + from);
            let out = attack::pgd(
                &model,
                &x0,
                &y,
                &config.attack,
                &config.attack.loss,
                &mut rng,
            )?;
            let (_, _, start_score) = predictions(&model, x0.clone(), Some(t));
            let (predicted, confidence, score) = predictions(&model, out.adv.clone(), Some(t));
            Ok(Generated {
                shape,
                start: tensors::to_vec(x0),
                images: tensors::to_vec(out.adv),
                target: t.to_vec(),
                start_score,
                score,
                predicted,
                confidence,
            })
        },
    )
}

/// Checks that `feature` is a coordinate of the model's representation.
pub fn check_feature(
    model: &Classifier,
    shape: [usize; 3],
    feature: usize,
    device: &Device,
) -> Result<()> {
    let width = feature_width(model, shape, device);
    if feature >= width {
        return Err(Error::Config(format!(
            "--feature {feature} does not exist: the model's representation has {width} features (0..={})",
            width.saturating_sub(1)
        )));
    }
    Ok(())
}

/// Feature visualisation: images that maximise unit `feature` of the representation
/// (`forward_features`, [batch, F]) by untargeted L2 PGD with the activation as the loss,
/// one per entry of `indices`: starting from those images of `pool` (`Start::Image`) or from
/// grey noise seeded by the index (`Start::Noise`, [`robust::noise_start`]). Scores are the
/// unit's activation at the start and the result.
pub fn visualize_feature(
    model: &Classifier,
    pool: &Dataset,
    feature: usize,
    indices: &[usize],
    config: &VisualizeConfig,
    device: &Device,
) -> Result<Generated> {
    config.attack.validate()?;
    check_batch(config.batch_size)?;
    if config.attack.targeted {
        return Err(Error::Config(
            "feature visualisation ascends the activation: the attack must be untargeted".into(),
        ));
    }
    let shape = [pool.channels, pool.height, pool.width];
    check_feature(model, shape, feature, device)?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= pool.len()) {
        return Err(Error::Config(format!(
            "start image {bad} does not exist ({} has {} images)",
            pool.name,
            pool.len()
        )));
    }
    let start: Vec<f32> = indices
        .iter()
        .flat_map(|&i| match config.start {
            Start::Image => pool.image(i).to_vec(),
            Start::Noise => robust::noise_start(config.seed, i, pool.image_len()),
        })
        .collect();
    let device = device.clone().without_autodiff();
    let model = model.for_inference();
    let activation = move |model: &Classifier, x: Tensor<4>, _: &Tensor<1, Int>| {
        let f = model.forward_features(x);
        let [b, _] = f.dims();
        f.narrow(1, feature, 1).reshape([b])
    };
    let targets = vec![feature; indices.len()];
    batched(
        &start,
        shape,
        &targets,
        config.batch_size,
        &device,
        |from, x0, t| {
            let y = tensors::labels(&vec![0; t.len()], &device);
            let mut rng = stream(config.seed, GEN_ATTACK_STREAM, from);
            let out = attack::pgd(&model, &x0, &y, &config.attack, &activation, &mut rng)?;
            let start_score = tensors::to_vec(activation(&model, x0.clone(), &y));
            let score = tensors::to_vec(activation(&model, out.adv.clone(), &y));
            let (predicted, confidence, _) = predictions(&model, out.adv.clone(), None);
            Ok(Generated {
                shape,
                start: tensors::to_vec(x0),
                images: tensors::to_vec(out.adv),
                target: t.to_vec(),
                start_score,
                score,
                predicted,
                confidence,
            })
        },
    )
}

/// Representation inversion of the images `indices` of `pool`: from noise or another image of
/// `pool` ([`robust::start_images`]), minimise `||g(x) - g(source)||_2` with the D_R / D_NR
/// construction's code ([`robust::invert_representation`]). Scores are that distance at the
/// start and the result.
pub fn invert(
    model: &Classifier,
    pool: &Dataset,
    indices: &[usize],
    config: &InvertConfig,
    device: &Device,
) -> Result<Generated> {
    config.attack.validate()?;
    check_batch(config.batch_size)?;
    if !config.attack.targeted {
        return Err(Error::Config(
            "inversion minimises the distance: the attack must be targeted".into(),
        ));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= pool.len()) {
        return Err(Error::Config(format!(
            "image {bad} does not exist ({} has {} images)",
            pool.name,
            pool.len()
        )));
    }
    let shape = [pool.channels, pool.height, pool.width];
    let per = pool.image_len();
    let start = robust::start_images(config.start, config.seed, indices.iter().copied(), pool);
    let device = device.clone().without_autodiff();
    let model = model.for_inference();
    let [c, h, w] = shape;
    batched(
        &start,
        shape,
        indices,
        config.batch_size,
        &device,
        |from, x0, idx| {
            let b = idx.len();
            let source: Vec<f32> = idx
                .iter()
                .flat_map(|&i| pool.images[i * per..(i + 1) * per].iter().copied())
                .collect();
            let source = tensors::images(source, [b, c, h, w], &device);
            let labels: Vec<usize> = idx.iter().map(|&i| pool.labels[i]).collect();
            let y = tensors::labels(&labels, &device);
            let mut rng = stream(config.seed, GEN_ATTACK_STREAM, from);
            let out = robust::invert_representation(
                &model,
                &source,
                &x0,
                &y,
                &config.attack,
                config.normalized_loss,
                &mut rng,
            )?;
            let loss =
                robust::representation_loss(model.forward_features(source), config.normalized_loss);
            let start_score = tensors::to_vec(loss(&model, x0.clone(), &y));
            let (predicted, confidence, _) = predictions(&model, out.adv.clone(), None);
            Ok(Generated {
                shape,
                start: tensors::to_vec(x0),
                images: tensors::to_vec(out.adv),
                target: idx.to_vec(),
                start_score,
                score: tensors::to_vec(out.loss),
                predicted,
                confidence,
            })
        },
    )
}

/// The attack of class-conditional generation: targeted L2 PGD on cross-entropy, no random
/// start, keep the best iterate (the reference library's `use_best` default).
pub fn generation_attack(eps: f64, step_size: f64, steps: usize) -> AttackConfig {
    AttackConfig {
        constraint: Constraint::L2,
        eps,
        step_size: Some(step_size),
        steps,
        random_start: false,
        targeted: true,
        use_best: true,
        loss: LossKind::CrossEntropy,
        ..AttackConfig::default()
    }
}

#[cfg(test)]
mod tests;
