//! Data-set constructions of "Adversarial Examples Are Not Bugs, They Are Features":
//! D_det / D_rand (every training image pushed toward a target class by a small targeted L2
//! attack on a standard model, and relabelled with that class; [`relabel`]) and D_R / D_NR
//! (every image re-synthesised to match a model's representation; [`robust`]). All four run the
//! one PGD loop of [`crate::attack`].
//!
//! The training set is cut into fixed chunks of `chunk_size` examples; each chunk is computed in
//! fixed batches with random streams derived from (seed, example index), and written atomically
//! ([`store`]). So an interrupted run resumes at its first missing chunk, and `--shard K/N`
//! (a contiguous block of chunks) produces exactly the bytes of the unsharded run.

pub mod relabel;
pub mod robust;
pub mod store;

use crate::attack::threat::{Constraint, threat_model};
use crate::attack::{self, AttackConfig};
use crate::data::{Dataset, DatasetKind, SyntheticConfig};
use crate::error::{Error, Result};
use crate::models::{Arch, Classifier};
use crate::tensors;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use store::Chunk;

/// Which data set to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConstructKind {
    /// D_det: target `(y + 1) mod C`, label = target.
    Det,
    /// D_rand: target uniform over the classes, label = target.
    Rand,
    /// D_R: representation inversion with a robust model, label = y.
    Robust,
    /// D_NR: representation inversion with a standard model, label = y.
    NonRobust,
}

impl ConstructKind {
    /// The paper's name (`D_det`, `D_rand`, `D_R`, `D_NR`).
    pub fn paper_name(self) -> &'static str {
        match self {
            ConstructKind::Det => "D_det",
            ConstructKind::Rand => "D_rand",
            ConstructKind::Robust => "D_R",
            ConstructKind::NonRobust => "D_NR",
        }
    }

    /// The command-line name (`det`, `rand`, `robust`, `nonrobust`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConstructKind::Det => "det",
            ConstructKind::Rand => "rand",
            ConstructKind::Robust => "robust",
            ConstructKind::NonRobust => "nonrobust",
        }
    }

    /// Whether the new label is a target class (D_det, D_rand) rather than the original label.
    pub fn relabels(self) -> bool {
        matches!(self, ConstructKind::Det | ConstructKind::Rand)
    }
}

impl fmt::Display for ConstructKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ConstructKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "det" | "d-det" => Ok(ConstructKind::Det),
            "rand" | "d-rand" => Ok(ConstructKind::Rand),
            "robust" | "d-r" => Ok(ConstructKind::Robust),
            "nonrobust" | "non-robust" | "d-nr" => Ok(ConstructKind::NonRobust),
            other => Err(Error::Config(format!(
                "unknown construction '{other}': expected det, rand, robust or nonrobust"
            ))),
        }
    }
}

/// Where D_R / D_NR inversion starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// Another training image, drawn independently of the label (paper C.4).
    Image,
    /// Gaussian noise (paper D.1), see [`robust::NOISE_MEAN`].
    Noise,
}

/// How to build a data set. [`ConstructConfig::paper`] gives the paper's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConstructConfig {
    /// Which data set.
    pub kind: ConstructKind,
    /// The attack: targeted L2 PGD (D_det, D_rand) or unconstrained normalised steps (D_R, D_NR).
    pub attack: AttackConfig,
    /// Seed of every random choice (targets, start images, random starts).
    pub seed: u64,
    /// Examples attacked together.
    pub batch_size: usize,
    /// Examples per chunk file (the unit of resuming and sharding).
    pub chunk_size: usize,
    /// D_R / D_NR: start image or noise.
    pub start: Start,
    /// D_R / D_NR: divide the representation distance by `||g(x)||_2`.
    pub normalized_loss: bool,
    /// Examples built from each source image (`construct --copies K`, default 1 as in the
    /// paper): example `j` comes from image `j % n` of the `n`, with its own target (D_rand),
    /// random start and start image, so copy 0 is exactly the one-copy set. Left out of the
    /// JSON when 1, so that sets built before it keep their identity (`config_id`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub copies: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl ConstructConfig {
    /// The paper's settings for a CIFAR-10-sized problem.
    pub fn paper(kind: ConstructKind) -> Self {
        let attack = if kind.relabels() {
            // [P] C.5: targeted L2 PGD, eps 0.5, step 0.1, 100 iterations, normalised steps.
            AttackConfig {
                constraint: Constraint::L2,
                eps: 0.5,
                step_size: Some(0.1),
                steps: 100,
                targeted: true,
                ..AttackConfig::default()
            }
        } else {
            // [P] C.4: normalised gradient descent, step 0.1, 1000 iterations, no eps-ball,
            // clip to [0, 1] after every step.
            AttackConfig {
                constraint: Constraint::Unconstrained,
                eps: 0.0,
                step_size: Some(0.1),
                steps: 1000,
                targeted: true,
                ..AttackConfig::default()
            }
        };
        Self {
            kind,
            attack,
            seed: 0,
            batch_size: 250,
            chunk_size: 1000,
            start: Start::Image,
            normalized_loss: false,
            copies: 1,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        self.attack.validate()?;
        if self.batch_size == 0 || self.chunk_size == 0 {
            return Err(Error::Config(
                "batch size and chunk size must be at least 1".into(),
            ));
        }
        if self.copies == 0 {
            return Err(Error::Config(
                "--copies must be at least 1 (examples per source image)".into(),
            ));
        }
        if !self.attack.targeted {
            return Err(Error::Config(
                "constructions minimise the loss toward a target: the attack must be targeted"
                    .into(),
            ));
        }
        if self.kind.relabels() && self.attack.constraint == Constraint::Unconstrained {
            return Err(Error::Config(format!(
                "{} needs an eps-ball (--constraint 2 or inf)",
                self.kind.paper_name()
            )));
        }
        Ok(())
    }
}

/// The data set the examples come from; enough to load its (original) test set again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Data set.
    pub dataset: DatasetKind,
    /// Class subset (names), `None` = all.
    pub classes: Option<Vec<String>>,
    /// Class names of the constructed set (after the subset).
    pub class_names: Vec<String>,
    /// Seed of the train/test split (embedded digits) or of the generator (synthetic).
    pub split_seed: u64,
    /// The generator's settings, for synthetic data.
    pub synthetic: Option<SyntheticConfig>,
    /// Image shape.
    pub channels: usize,
    /// Image shape.
    pub height: usize,
    /// Image shape.
    pub width: usize,
    /// Number of training examples.
    pub train_examples: usize,
    /// Only `limit` training images were used (quick runs): the first `limit`, or with
    /// `limit_spread` every `len / limit`-th ([`Dataset::spread`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// `limit` took images spread evenly over the training set (what `construct --limit` does).
    /// Absent in older sets, which took the first `limit`; left out of the JSON when false so
    /// that their identity (`config_id`) is unchanged.
    #[serde(default, skip_serializing_if = "is_false")]
    pub limit_spread: bool,
    /// Built from the test images instead of the training images (`construct --from test`: an
    /// evaluation set such as the paper's robust test set, Table 8; never trained on). Left
    /// out of the JSON when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub from_test: bool,
    /// The image folder of `dataset: folder` (root and image size), whose test set is the
    /// constructed set's; left out of the JSON for the other data sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<crate::data::FolderSource>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Source {
    /// Describes `train` (the source training set, after any class subset).
    pub fn of(
        train: &Dataset,
        dataset: DatasetKind,
        classes: Option<Vec<String>>,
        split_seed: u64,
        synthetic: Option<SyntheticConfig>,
    ) -> Self {
        Self {
            dataset,
            classes,
            class_names: train.class_names.clone(),
            split_seed,
            synthetic,
            channels: train.channels,
            height: train.height,
            width: train.width,
            train_examples: train.len(),
            limit: None,
            limit_spread: false,
            from_test: false,
            folder: None,
        }
    }

    /// [C, H, W].
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// C * H * W.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// e.g. `cifar10 [cat, dog]`.
    pub fn describe(&self) -> String {
        let split = if self.from_test { " test images" } else { "" };
        match &self.classes {
            Some(c) => format!("{} [{}]{split}", self.dataset, c.join(", ")),
            None => format!("{}{split}", self.dataset),
        }
    }
}

/// The model a data set was built with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Checkpoint path as given.
    pub path: String,
    /// SHA-256 of its weights file.
    pub sha256: String,
    /// Architecture.
    pub arch: Arch,
    /// Training epochs completed.
    pub epoch: usize,
    /// Whether it was adversarially trained, as far as its metadata says.
    pub adversarially_trained: Option<bool>,
    /// The model's own classes, when they are not the data set's list: it was restricted to
    /// the logits of the data set's classes (a 10-class model building a cats-vs-dogs set),
    /// or they were reordered to the data set's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted_from: Option<Vec<String>>,
}

/// Which part of the chunks one process builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based shard index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    /// `K/N` with 0 <= K < N.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config(format!("--shard '{s}': expected K/N with 0 <= K < N"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Five-number summary plus the mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Maximum.
    pub max: f64,
}

impl Quantiles {
    /// Of `values` (all zero when empty).
    pub fn of(values: &[f32]) -> Self {
        if values.is_empty() {
            return Self {
                mean: 0.0,
                min: 0.0,
                p10: 0.0,
                median: 0.0,
                p90: 0.0,
                max: 0.0,
            };
        }
        let mut v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            p10: at(0.1),
            median: at(0.5),
            p90: at(0.9),
            max: v[v.len() - 1],
        }
    }
}

/// What a finished construction produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Examples.
    pub examples: usize,
    /// Fraction where the model predicts the new label on the new image (D_det / D_rand: the
    /// targeted attack's success rate).
    pub agreement: f64,
    /// Fraction whose new label differs from the source label.
    pub relabelled: f64,
    /// Final attack objective (cross-entropy toward the target, or representation distance).
    pub loss: Quantiles,
    /// L2 distance between each new image and its source image.
    pub distance: Quantiles,
    /// Examples per new label.
    pub label_counts: Vec<usize>,
}

impl Summary {
    /// Summarises chunks.
    pub fn of(chunks: &[Chunk]) -> Self {
        let loss: Vec<f32> = chunks.iter().flat_map(|c| c.loss.iter().copied()).collect();
        let distance: Vec<f32> = chunks
            .iter()
            .flat_map(|c| c.distance.iter().copied())
            .collect();
        let n = loss.len();
        let agree = chunks
            .iter()
            .flat_map(|c| &c.agrees)
            .filter(|&&a| a)
            .count();
        let relabelled = chunks
            .iter()
            .flat_map(|c| c.labels.iter().zip(&c.source_labels))
            .filter(|(a, b)| a != b)
            .count();
        let classes = chunks
            .iter()
            .flat_map(|c| c.labels.iter())
            .max()
            .map_or(0, |m| m + 1);
        let mut label_counts = vec![0; classes];
        for &l in chunks.iter().flat_map(|c| c.labels.iter()) {
            label_counts[l] += 1;
        }
        let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
        Self {
            examples: n,
            agreement: frac(agree),
            relabelled: frac(relabelled),
            loss: Quantiles::of(&loss),
            distance: Quantiles::of(&distance),
            label_counts,
        }
    }
}

/// `meta.json` of a constructed data set (or of one shard of it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConstructMeta {
    /// Layout version of the folder.
    pub format: u32,
    /// Version of the `robustness` crate that wrote it.
    pub version: String,
    /// The settings.
    pub config: ConstructConfig,
    /// Where the images come from.
    pub source: Source,
    /// The model used (the first of an ensemble).
    pub model: ModelRef,
    /// The other members when the set was built with an ensemble (`construct --model A
    /// --model B ...`: mean logits, joined representations); empty otherwise, and then left out
    /// of the JSON and of `config_id`, so single-model sets keep their identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<ModelRef>,
    /// Number of examples (the whole set, also in a shard): the source's training images times
    /// `config.copies`.
    pub examples: usize,
    /// Hash of (config, source, model, and the ensemble's other members if any; the models'
    /// paths left out, see [`ConstructMeta::identity`]; older sets hashed them too): identifies chunks of this
    /// construction.
    pub config_id: String,
    /// `Some` in a shard's folder.
    pub shard: Option<Shard>,
    /// Set once every chunk (of the shard) is written.
    pub summary: Option<Summary>,
}

/// A training run's record of the constructed data set it trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConstructedRef {
    /// The data set folder.
    pub path: String,
    /// Which construction.
    pub kind: ConstructKind,
    /// Its configuration id.
    pub config_id: String,
}

/// The folder layout version.
pub const FORMAT: u32 = 1;

impl ConstructMeta {
    /// A new, unfinished construction.
    pub fn new(
        config: ConstructConfig,
        source: Source,
        model: ModelRef,
        shard: Option<Shard>,
    ) -> Result<Self> {
        Self::with_models(config, source, vec![model], shard)
    }

    /// A new, unfinished construction with one model or an ensemble (`models` in order: the
    /// first is `model`, the rest `ensemble`).
    pub fn with_models(
        config: ConstructConfig,
        source: Source,
        models: Vec<ModelRef>,
        shard: Option<Shard>,
    ) -> Result<Self> {
        let mut models = models.into_iter();
        let model = models
            .next()
            .ok_or_else(|| Error::Config("a construction needs a model".into()))?;
        let ensemble: Vec<ModelRef> = models.collect();
        let config_id = identity(&config, &source, &model, &ensemble)?;
        Ok(Self {
            format: FORMAT,
            version: env!("CARGO_PKG_VERSION").to_string(),
            examples: source.train_examples * config.copies,
            config,
            source,
            model,
            ensemble,
            config_id,
            shard,
            summary: None,
        })
    }

    /// This construction's identity under the current rule (see [`identity`]): `config_id` for
    /// sets built since the rule left the model's path out; older sets hashed the path too, so
    /// their `config_id` differs from it but names the same construction.
    pub fn identity(&self) -> Result<String> {
        identity(&self.config, &self.source, &self.model, &self.ensemble)
    }

    /// Whether `other` describes the same construction as `self`: same settings, source and
    /// model weights (by checksum), wherever the folders and checkpoints now lie.
    pub fn same_construction(&self, other: &ConstructMeta) -> Result<bool> {
        Ok(self.config_id == other.config_id || self.identity()? == other.identity()?)
    }

    /// Number of chunks of the whole set.
    pub fn num_chunks(&self) -> usize {
        self.examples.div_ceil(self.config.chunk_size)
    }

    /// Example range of chunk `i`.
    pub fn chunk_range(&self, i: usize) -> Range<usize> {
        let start = i * self.config.chunk_size;
        start..(start + self.config.chunk_size).min(self.examples)
    }

    /// The chunks this folder builds: all, or the shard's contiguous block.
    pub fn assigned_chunks(&self) -> Range<usize> {
        let n = self.num_chunks();
        match self.shard {
            None => 0..n,
            Some(Shard { index, count }) => (index * n / count)..((index + 1) * n / count),
        }
    }
}

/// The hash that identifies a construction (the first 8 bytes of SHA-256 over its settings,
/// source and models, as JSON). The models' paths are left out: their checksums identify the
/// weights, and a set (or `reproduce` folder) moved or copied elsewhere must still resume.
fn identity(
    config: &ConstructConfig,
    source: &Source,
    model: &ModelRef,
    ensemble: &[ModelRef],
) -> Result<String> {
    let pathless = |m: &ModelRef| ModelRef {
        path: String::new(),
        ..m.clone()
    };
    let model = pathless(model);
    let ensemble: Vec<ModelRef> = ensemble.iter().map(pathless).collect();
    let text = if ensemble.is_empty() {
        serde_json::to_string(&(FORMAT, config, source, &model))
    } else {
        serde_json::to_string(&(FORMAT, config, source, &model, &ensemble))
    }
    .map_err(|e| Error::Config(format!("cannot serialise the configuration: {e}")))?;
    let digest = Sha256::digest(text.as_bytes());
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Builds (or resumes) the data set described by `meta` into `out` from `train`, the source
/// training set, with `model`. `progress(done, total)` counts examples of the assigned chunks.
/// Returns the finished metadata (with its summary), also written to `out/meta.json`.
pub fn construct(
    model: &Classifier,
    train: &Dataset,
    meta: ConstructMeta,
    out: &Path,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<ConstructMeta> {
    let mut meta = meta;
    meta.config.validate()?;
    if train.len() != meta.source.train_examples
        || meta.examples != train.len() * meta.config.copies
        || train.image_len() != meta.source.image_len()
    {
        return Err(Error::Config(format!(
            "the source training set has {} images of {} values, the construction expects {} of {}",
            train.len(),
            train.image_len(),
            meta.source.train_examples,
            meta.source.image_len()
        )));
    }
    let chunks_dir = out.join(store::CHUNKS_DIR);
    std::fs::create_dir_all(&chunks_dir).map_err(|e| Error::io("creating", &chunks_dir, e))?;
    if out.join(store::META_FILE).exists() {
        let existing = store::read_meta(out)?;
        if !existing.same_construction(&meta)? || existing.shard != meta.shard {
            return Err(Error::Constructed {
                path: out.to_path_buf(),
                message: format!(
                    "holds another construction (config id {}, shard {:?}; this one is {}, shard {:?}); choose another --out or delete the folder",
                    existing.config_id, existing.shard, meta.config_id, meta.shard
                ),
            });
        }
        // The chunks carry the id they were written with (one that hashed the model's path,
        // for sets built before the rule left it out): keep it so they are reused.
        meta.config_id = existing.config_id;
    }
    store::write_meta(
        out,
        &ConstructMeta {
            summary: None,
            ..meta.clone()
        },
    )?;

    let shape = meta.source.image_shape();
    let assigned = meta.assigned_chunks();
    let total: usize = assigned.clone().map(|i| meta.chunk_range(i).len()).sum();
    let mut done = 0;
    let mut todo = Vec::new();
    for i in assigned.clone() {
        let len = meta.chunk_range(i).len();
        match store::read_chunk(out, i, shape, len, &meta.config_id) {
            Ok(_) => done += len,
            Err(_) => todo.push(i),
        }
    }
    progress(done, total);
    let device = device.clone().without_autodiff();
    let model = model.for_inference();
    for i in todo {
        let range = meta.chunk_range(i);
        let chunk = build_chunk(&model, train, &meta, range, &device, |k| {
            progress(done + k, total)
        })?;
        store::write_chunk(out, i, &chunk, shape, &meta.config_id)?;
        done += chunk.len();
        progress(done, total);
    }
    let chunks = assigned
        .map(|i| store::read_chunk(out, i, shape, meta.chunk_range(i).len(), &meta.config_id))
        .collect::<Result<Vec<_>>>()?;
    let finished = ConstructMeta {
        summary: Some(Summary::of(&chunks)),
        ..meta
    };
    store::write_meta(out, &finished)?;
    Ok(finished)
}

/// Builds the examples of `range`, batch by batch; `progress(k)` after k examples. Example `i`
/// is built from source image `i % train.len()` (see [`ConstructConfig::copies`]).
fn build_chunk(
    model: &Classifier,
    train: &Dataset,
    meta: &ConstructMeta,
    range: Range<usize>,
    device: &Device,
    mut progress: impl FnMut(usize),
) -> Result<Chunk> {
    let config = &meta.config;
    let per = train.image_len();
    let [c, h, w] = meta.source.image_shape();
    let classes = meta.source.class_names.len().max(1);
    let threat = threat_model(Constraint::L2, 0.0, config.attack.l1_sparsity);
    let n = train.len();
    let mut chunk = Chunk::default();
    for start in range.clone().step_by(config.batch_size) {
        let end = (start + config.batch_size).min(range.end);
        let b = end - start;
        let images: Vec<f32> = if end <= n {
            train.images[start * per..end * per].to_vec()
        } else {
            (start..end)
                .flat_map(|i| train.image(i % n).iter().copied())
                .collect()
        };
        let x_src = tensors::images(images, [b, c, h, w], device);
        let source_labels: Vec<usize> = (start..end).map(|i| train.labels[i % n]).collect();
        let labels: Vec<usize> = (start..end)
            .zip(&source_labels)
            .map(|(i, &y)| relabel::target(config.kind, config.seed, i, y, classes))
            .collect();
        let y = tensors::labels(&labels, device);
        let mut rng = relabel::stream(config.seed, relabel::ATTACK_STREAM, start);
        let out = if config.kind.relabels() {
            attack::pgd(
                model,
                &x_src,
                &y,
                &config.attack,
                &config.attack.loss,
                &mut rng,
            )?
        } else {
            let x_start = robust::start_images(config.start, config.seed, start..end, train);
            let x_start = tensors::images(x_start, [b, c, h, w], device);
            robust::invert_representation(
                model,
                &x_src,
                &x_start,
                &y,
                &config.attack,
                config.normalized_loss,
                &mut rng,
            )?
        };
        let pred = tensors::argmax_rows(model.forward(out.adv.clone()));
        let loss = tensors::to_vec(out.loss);
        if let Some(bad) = loss.iter().position(|v| !v.is_finite()) {
            return Err(Error::Config(format!(
                "non-finite attack objective at training example {}: the model or the step size is broken",
                start + bad
            )));
        }
        chunk
            .distance
            .extend(tensors::to_vec(threat.norm(out.adv.clone() - x_src)));
        chunk.images.extend(tensors::to_vec(out.adv));
        chunk
            .agrees
            .extend(pred.iter().zip(&labels).map(|(p, l)| p == l));
        chunk.labels.extend_from_slice(&labels);
        chunk.source_labels.extend_from_slice(&source_labels);
        chunk.index.extend(start..end);
        chunk.loss.extend(loss);
        progress(end - range.start);
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests;
