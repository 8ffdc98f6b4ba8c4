//! Training: the configuration, and the loop (batch, forward, loss, backward, step, metrics,
//! checkpoint) in one function a reader can follow top to bottom.

pub mod checkpoint;
pub mod ema;
pub mod metrics;
pub mod objective;
mod parallel;
pub mod schedule;
pub mod sgd;

use crate::attack::{self, AttackConfig, AttackKind};
use crate::data::{Augmentation, Dataset, DatasetKind, Split, loader};
use crate::error::{Error, Result};
use crate::eval;
use crate::models::{Arch, Classifier, ModelSpec};
use burn::optim::{AdamConfig, ModuleOptimizer, decay::WeightDecayConfig};
use burn::prelude::*;
use checkpoint::CheckpointMeta;
use metrics::EpochMetrics;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use schedule::{LrPolicy, Schedule};
use serde::{Deserialize, Serialize};
use sgd::{FusedSgd, Momentum};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The random stream of one (epoch, batch) of a run: independent of how far earlier epochs got,
/// so a resumed run draws exactly what an uninterrupted one does.
pub fn batch_rng(seed: u64, epoch: usize, batch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((epoch as u64) << 32) | batch as u64);
    rng
}

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with (PyTorch-style, undampened) momentum and L2 weight decay.
    Sgd,
    /// Adam with L2 weight decay.
    Adam,
}

/// How adversarial examples are made during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvMethod {
    /// PGD with the configured attack (Madry et al. 2018).
    Pgd,
    /// One FGSM step of 1.25 eps from a random start (Wong, Rice & Kolter 2020).
    FgsmRs,
}

/// Adversarial training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adversarial {
    /// The attack (threat model, eps, steps, step size, ...).
    pub attack: AttackConfig,
    /// PGD or FGSM with random start.
    pub method: AdvMethod,
    /// Measure robust test accuracy (PGD with `attack`) after every epoch.
    pub eval: bool,
    /// Test images used for that measurement.
    pub eval_limit: usize,
}

impl Adversarial {
    /// The attack actually run on training batches.
    pub fn training_attack(&self) -> AttackConfig {
        match self.method {
            AdvMethod::Pgd => self.attack.clone(),
            AdvMethod::FgsmRs => AttackConfig::fgsm(self.attack.constraint, self.attack.eps, true),
        }
    }
}

/// Everything that defines a training run. Per-dataset defaults: [`crate::defaults::for_dataset`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Data set.
    pub dataset: DatasetKind,
    /// Class subset (names), relabelled 0..k in this order; `None` = all classes.
    pub classes: Option<Vec<String>>,
    /// Architecture.
    pub arch: Arch,
    /// Total epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Momentum (SGD) or beta1 (Adam).
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Epochs of linear warm-up.
    pub warmup_epochs: usize,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Augment the training images (random crop with padding 4 + horizontal flip, or the
    /// recipe `augmentation` names).
    pub augment: bool,
    /// What `augment` does: crop + flip (the default) or the reference library's CIFAR recipe
    /// (also colour jitter and a small rotation). Left out of the JSON for crop + flip, so runs
    /// from before it keep their configuration.
    #[serde(default, skip_serializing_if = "Augmentation::is_crop_flip")]
    pub augmentation: Augmentation,
    /// The one seed every random choice derives from.
    pub seed: u64,
    /// Adversarial training (`None`: standard training).
    #[serde(default)]
    pub adversarial: Option<Adversarial>,
    /// Set when the training set is a constructed one (D_det, D_rand, D_R, D_NR); the test set
    /// is then the original test set of `dataset`.
    #[serde(default)]
    pub constructed: Option<crate::construct::ConstructedRef>,
    /// Only part of the training set (`train --limit`); `None`: all of it. Left out of the
    /// JSON when `None`, so runs from before it keep their configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<crate::data::Limit>,
    /// Decay of an exponential moving average of the weights (`train --ema`, see
    /// [`ema`]); the average is what the run evaluates and saves. `None` (left out of the
    /// JSON): no average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
    /// Label smoothing of the training loss (`train --label-smoothing`, see [`objective`]);
    /// `None` (left out of the JSON): plain cross-entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    /// Mixup's alpha (`train --mixup`: every batch blended with a shuffled copy of itself,
    /// weight ~ Beta(alpha, alpha), see [`objective`]); `None` (left out of the JSON): no mixup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<f64>,
    /// The image folder of `dataset: folder` (its root and image size), to load it again;
    /// left out of the JSON for the other data sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<crate::data::FolderSource>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::Digits,
            classes: None,
            arch: Arch::Cnn,
            epochs: 10,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            optimizer: OptimizerKind::Sgd,
            augment: false,
            augmentation: Augmentation::CropFlip,
            seed: 0,
            adversarial: None,
            constructed: None,
            train_limit: None,
            ema: None,
            label_smoothing: None,
            mixup: None,
            folder: None,
        }
    }
}

impl TrainConfig {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if let Some(d) = self.ema
            && !(d > 0.0 && d < 1.0)
        {
            return bad(format!(
                "--ema {d}: the decay must be in (0, 1), e.g. 0.999"
            ));
        }
        if let Some(s) = self.label_smoothing
            && !(0.0..1.0).contains(&s)
        {
            return bad(format!(
                "--label-smoothing {s}: must be in [0, 1), e.g. 0.1"
            ));
        }
        if let Some(alpha) = self.mixup {
            if !(alpha.is_finite() && alpha > 0.0) {
                return bad(format!(
                    "--mixup {alpha}: alpha must be a positive number, e.g. 0.2 or 1"
                ));
            }
            if self.adversarial.is_some() {
                return bad(
                    "--mixup with --adv-train is not supported: the attack would perturb blended images toward one of two labels"
                        .into(),
                );
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if let Schedule::Step { step: 0, .. } = self.schedule {
            return bad("--step-lr must be at least 1".into());
        }
        if let Some(adv) = &self.adversarial {
            adv.attack.validate()?;
        }
        Ok(())
    }

    fn lr_policy(&self) -> LrPolicy {
        LrPolicy {
            lr: self.lr,
            schedule: self.schedule.clone(),
            warmup_epochs: self.warmup_epochs,
            epochs: self.epochs,
        }
    }

    fn optimizer(&self) -> ModuleOptimizer {
        let decay =
            (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32));
        match self.optimizer {
            // Burn's Sgd, fused (same bits, `sgd.rs`). Burn's momentum defaults to dampening
            // 0.1; PyTorch's (the reference) is 0.
            OptimizerKind::Sgd => FusedSgd::new(
                (self.momentum > 0.0).then_some(Momentum {
                    momentum: self.momentum,
                    dampening: 0.0,
                }),
                (self.weight_decay > 0.0).then_some(self.weight_decay as f32),
            )
            .init(),
            OptimizerKind::Adam => AdamConfig::new()
                .with_beta_1(self.momentum as f32)
                .with_weight_decay(decay)
                .init(),
        }
    }
}

/// Reports progress; the CLI draws a progress bar, tests stay silent.
pub trait TrainObserver {
    /// Called once before the first epoch that will run.
    fn on_start(&mut self, _start_epoch: usize, _epochs: usize, _batches_per_epoch: usize) {}
    /// Called after every batch with the running means of the epoch so far.
    fn on_batch(&mut self, _epoch: usize, _batch: usize, _loss: f64, _accuracy: f64) {}
    /// Called after every epoch, once its checkpoint is written.
    fn on_epoch(&mut self, _metrics: &EpochMetrics) {}
}

/// An observer that reports nothing.
pub struct Silent;
impl TrainObserver for Silent {}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    /// Test accuracy after the last epoch, in [0, 1].
    pub test_accuracy: f64,
    /// Best test accuracy over all epochs.
    pub best_test_accuracy: f64,
    /// Epochs completed in total.
    pub epochs: usize,
    /// Seconds this invocation spent.
    pub seconds: f64,
    /// The `best` checkpoint.
    pub checkpoint: PathBuf,
    /// The `latest` checkpoint.
    pub latest: PathBuf,
    /// Every epoch's metrics (including epochs before a resume).
    pub metrics: Vec<EpochMetrics>,
    /// Training images the run used (fewer than the split's with `train_limit`).
    pub train_images: usize,
}

/// The model description for a data set split and a config: input shape, classes and
/// normalisation (the reference library's table where it has one, else the training split's
/// per-channel mean and std).
pub fn model_spec(config: &TrainConfig, train: &Dataset) -> ModelSpec {
    let (mean, std) =
        crate::defaults::normalization(config.dataset).unwrap_or_else(|| channel_stats(train));
    ModelSpec {
        arch: config.arch,
        channels: train.channels,
        height: train.height,
        width: train.width,
        num_classes: train.num_classes(),
        mean,
        std,
        images: config.dataset != DatasetKind::Synthetic,
    }
}

/// Per-channel mean and standard deviation of a data set (std floored at 1e-3).
pub fn channel_stats(data: &Dataset) -> (Vec<f32>, Vec<f32>) {
    let c = data.channels.max(1);
    let plane = data.height * data.width;
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for image in data.images.chunks(data.image_len().max(1)) {
        for (ch, values) in image.chunks(plane.max(1)).enumerate() {
            for &v in values {
                sum[ch] += v as f64;
                sq[ch] += (v as f64) * (v as f64);
            }
        }
    }
    let count = (data.len() * plane).max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, &m)| ((q / count - (m as f64).powi(2)).max(0.0).sqrt() as f32).max(1e-3))
        .collect();
    (mean, std)
}

const RUN_CONFIG: &str = "config.json";
const METRICS: &str = "metrics.jsonl";

/// Trains a model on `split.train`, evaluating on `split.test` after every epoch, writing
/// `config.json`, `metrics.jsonl` and checkpoints into `run_dir`. With `resume`, continues from
/// `run_dir/latest` when it exists (the run's config must be the same but for `epochs`).
/// `device` is a plain device; autodiff is enabled here.
pub fn train(
    config: &TrainConfig,
    split: &Split,
    run_dir: &Path,
    resume: bool,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary> {
    train_on(
        config,
        split,
        run_dir,
        resume,
        std::slice::from_ref(device),
        observer,
    )
}

/// [`train`] data-parallel over `devices` (the first holds the model, evaluates it and keeps
/// its checkpoints; each step's batch is split between all of them; see `parallel.rs`). One
/// device is exactly [`train`]. Several change the run only through batch norm (per-device
/// batch statistics) and float rounding, so `--resume` may continue a run on another number
/// of devices.
pub fn train_on(
    config: &TrainConfig,
    split: &Split,
    run_dir: &Path,
    resume: bool,
    devices: &[Device],
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary> {
    let Some(device) = devices.first() else {
        return Err(Error::Device("training needs at least one device".into()));
    };
    config.validate()?;
    // `train --limit`: only part of the training set (applying it to a set already cut to it
    // keeps that set, so callers may pass either).
    let limited = config
        .train_limit
        .map(|limit| limit.apply(&split.train))
        .transpose()?;
    let started = Instant::now();
    let device = device.clone().autodiff();
    std::fs::create_dir_all(run_dir.join("checkpoints"))
        .map_err(|e| Error::io("creating", run_dir, e))?;
    let latest_link = run_dir.join("latest");
    let best_link = run_dir.join("best");
    let spec = model_spec(config, limited.as_ref().unwrap_or(&split.train));

    // Fresh start or resume.
    let mut optimizer = config.optimizer();
    let (mut model, start_epoch, mut history) = if resume && latest_link.exists() {
        check_same_run(run_dir, config)?;
        let (model, optim, meta) =
            checkpoint::load_training_state(&latest_link, &device, optimizer)?;
        if meta.spec != spec {
            return Err(Error::ArchMismatch {
                path: latest_link,
                expected: format!("{:?}", spec),
                found: format!("{:?}", meta.spec),
            });
        }
        optimizer = optim;
        let history = metrics::read_jsonl(&run_dir.join(METRICS), meta.epoch)?;
        (model, meta.epoch, history)
    } else {
        if latest_link.exists() {
            return Err(Error::Config(format!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                run_dir.display()
            )));
        }
        device.seed(config.seed);
        (Classifier::new(&spec, &device), 0, Vec::new())
    };
    // The weights' moving average: restored from the checkpoint's weights on resume (a run
    // with EMA saves the average there and the optimizer's weights in its training state).
    let mut ema = match config.ema {
        None => None,
        Some(decay) if start_epoch > 0 => {
            let (saved, _) = checkpoint::load(&latest_link, &device)?;
            Some(ema::Ema::resumed(saved, decay))
        }
        Some(decay) => Some(ema::Ema::new(&model, decay)),
    };
    checkpoint::write_json_atomic(&run_dir.join(RUN_CONFIG), config)?;
    let replicas: Vec<parallel::Replica> = devices[1..]
        .iter()
        .map(|d| parallel::Replica::new(&spec, d))
        .collect();

    let train_set = Arc::new(limited.unwrap_or_else(|| split.train.clone()));
    let batches_per_epoch = train_set.len().div_ceil(config.batch_size);
    let policy = config.lr_policy();
    let mut best = history
        .iter()
        .map(|m| m.test_accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    observer.on_start(start_epoch, config.epochs, batches_per_epoch);

    for epoch in start_epoch..config.epochs {
        let epoch_started = Instant::now();
        let (mut loss_sum, mut correct, mut seen, mut lr) = (0f64, 0usize, 0usize, config.lr);
        let mut step_seconds = 0f64;
        let batches = loader::prefetch(
            loader::batches(
                Arc::clone(&train_set),
                config.batch_size,
                true,
                config.seed,
                epoch as u64,
                config.augment,
                false,
            )
            .with_augmentation(config.augmentation),
            2,
        );
        let shape = [train_set.channels, train_set.height, train_set.width];
        let adv_attack = config
            .adversarial
            .as_ref()
            .map(Adversarial::training_attack);
        for (b, mut batch) in batches.enumerate() {
            lr = policy.lr_at(epoch, b, batches_per_epoch);
            let n = batch.labels.len();
            let step_started = Instant::now();
            // Mixup draws from a stream of its own, so runs without it draw what they did.
            let mix = config
                .mixup
                .map(|alpha| {
                    let mut rng = batch_rng(config.seed ^ 0x313C_0F00_0000_0000, epoch, b);
                    objective::mix_batch(&mut batch.images, &batch.labels, alpha, &mut rng)
                })
                .transpose()?;
            // Slice r's attack stream; slice 0's is the one-device run's.
            let rng =
                |r: usize| batch_rng(config.seed ^ 0xA77A_C4ED ^ ((r as u64) << 40), epoch, b);
            let out = parallel::step(
                &model,
                &replicas,
                batch.images,
                parallel::Targets::new(
                    &batch.labels,
                    mix.as_ref(),
                    config.label_smoothing.unwrap_or(0.0) as f32,
                ),
                shape,
                adv_attack.as_ref(),
                &rng,
                &device,
                epoch,
                b,
            )?;
            model = optimizer.step(lr, model, out.grads);
            if let Some(ema) = &mut ema {
                ema.update(&model, (epoch * batches_per_epoch + b) as u64);
            }
            step_seconds += step_started.elapsed().as_secs_f64();

            correct += out
                .predictions
                .iter()
                .zip(&batch.labels)
                .filter(|(p, y)| p == y)
                .count();
            loss_sum += out.loss * n as f64;
            seen += n;
            observer.on_batch(
                epoch + 1,
                b,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let eval_started = Instant::now();
        // With EMA the average is the run's model: tested, attacked and saved; the
        // optimizer's own weights are tested too, to show what the average adds.
        let evaluated = ema.as_ref().map_or(&model, |e| e.model());
        let test = eval::evaluate(evaluated, &split.test, 256, &device);
        let raw_test_accuracy = ema
            .is_some()
            .then(|| eval::evaluate(&model, &split.test, 256, &device).accuracy);
        let robust_test_accuracy = match &config.adversarial {
            Some(adv) if adv.eval => {
                let subset = split.test.spread(adv.eval_limit);
                let report = attack::robust_eval(
                    evaluated,
                    &subset,
                    AttackKind::Pgd,
                    &adv.attack,
                    256,
                    config.seed,
                    &device,
                    |_, _| {},
                )?;
                Some(report.robust_accuracy)
            }
            _ => None,
        };
        let eval_seconds = eval_started.elapsed().as_secs_f64();
        let m = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_accuracy: test.accuracy,
            lr,
            seconds: epoch_started.elapsed().as_secs_f64(),
            train_seconds,
            step_seconds,
            eval_seconds,
            robust_test_accuracy,
            raw_test_accuracy,
        };
        history.push(m.clone());
        let m = &history[history.len() - 1];

        // Checkpoint: a complete folder first, then the links, then the metrics.
        let name = format!("epoch-{:04}", epoch + 1);
        let dir = run_dir.join("checkpoints").join(&name);
        let meta = CheckpointMeta {
            version: env!("CARGO_PKG_VERSION").to_string(),
            spec: spec.clone(),
            dataset: config.dataset.to_string(),
            class_names: split.train.class_names.clone(),
            epoch: epoch + 1,
            seed: config.seed,
            metrics: Some(m.clone()),
            imported_from: None,
            restricted_from: None,
        };
        let weights = ema.as_ref().map_or(&model, |e| e.model());
        checkpoint::save_run(&dir, weights, &model, &meta, &optimizer)?;
        let target = Path::new("checkpoints").join(&name);
        checkpoint::point_link(&latest_link, &target)?;
        if m.test_accuracy > best {
            best = m.test_accuracy;
            checkpoint::point_link(&best_link, &target)?;
        }
        prune_checkpoints(run_dir);
        if let Some(last) = history.last_mut() {
            last.seconds = epoch_started.elapsed().as_secs_f64();
        }
        metrics::write_jsonl(&run_dir.join(METRICS), &history)?;
        if let Some(last) = history.last() {
            observer.on_epoch(last);
        }
    }

    let last = history.last().cloned();
    Ok(TrainSummary {
        test_accuracy: last.as_ref().map_or(0.0, |m| m.test_accuracy),
        best_test_accuracy: best.max(0.0),
        epochs: history.len(),
        train_images: train_set.len(),
        seconds: started.elapsed().as_secs_f64(),
        checkpoint: best_link,
        latest: latest_link,
        metrics: history,
    })
}

fn check_same_run(run_dir: &Path, config: &TrainConfig) -> Result<()> {
    let path = run_dir.join(RUN_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    let saved: TrainConfig = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        message: format!("malformed run config: {e}"),
    })?;
    // A constructed set is identified by its config id, not by where it lies (a `reproduce`
    // folder may have moved).
    let constructed = match (&saved.constructed, &config.constructed) {
        (Some(s), Some(c)) if s.config_id == c.config_id && s.kind == c.kind => Some(c.clone()),
        (s, _) => s.clone(),
    };
    let comparable = TrainConfig {
        epochs: config.epochs,
        constructed,
        ..saved.clone()
    };
    if &comparable != config {
        return Err(Error::Config(format!(
            "--resume: {} was created with other settings; resume with the same flags (only --epochs may change)",
            path.display()
        )));
    }
    Ok(())
}

/// Removes checkpoint folders that neither `latest` nor `best` points at (and staging leftovers
/// of a killed run).
fn prune_checkpoints(run_dir: &Path) {
    let keep: Vec<PathBuf> = ["latest", "best"]
        .iter()
        .filter_map(|l| std::fs::canonicalize(run_dir.join(l)).ok())
        .collect();
    let Ok(entries) = std::fs::read_dir(run_dir.join("checkpoints")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::canonicalize(&path) {
            Ok(p) if keep.contains(&p) => {}
            _ => {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;

    fn weights(run: &Path) -> Vec<u8> {
        std::fs::read(run.join("latest").join(checkpoint::WEIGHTS_FILE)).expect("weights")
    }

    #[test]
    fn ema_runs_save_the_average_and_resume_to_the_same_bits() {
        let split =
            crate::data::load(DatasetKind::Digits, None, 0, &Default::default()).expect("digits");
        let config = TrainConfig {
            arch: Arch::Mlp,
            epochs: 4,
            // A schedule that does not depend on the number of epochs, so that a run stopped
            // after 2 or 3 epochs and resumed to 4 does the first epochs of 4.
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            ema: Some(0.9),
            ..crate::defaults::for_dataset(DatasetKind::Digits)
        };
        let device = Device::flex();
        let tmp = TempDir::new("train-ema");
        // One run trained for 2 epochs and copied: each copy continues to 4, one straight on
        // (the average in memory), one stopped again after epoch 3 and resumed (the average
        // restored from the checkpoint). Both start from the same checkpoint, so a model
        // initialised concurrently by another test (the generator is shared) cannot make
        // them differ.
        let whole = tmp.path().join("whole");
        let two = TrainConfig {
            epochs: 2,
            ..config.clone()
        };
        train(&two, &split, &whole, false, &device, &mut Silent).expect("first half");
        let parts = tmp.path().join("parts");
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(&whole)
            .arg(&parts)
            .status()
            .expect("cp");
        assert!(copied.success());
        let summary = train(&config, &split, &whole, true, &device, &mut Silent).expect("to 4");
        let three = TrainConfig {
            epochs: 3,
            ..config.clone()
        };
        train(&three, &split, &parts, true, &device, &mut Silent).expect("to 3");
        let resumed = train(&config, &split, &parts, true, &device, &mut Silent).expect("3 to 4");
        assert!(
            weights(&whole) == weights(&parts),
            "resumed average differs"
        );
        assert_eq!(summary.test_accuracy, resumed.test_accuracy);
        // The checkpoint's model is the average; its training state holds other weights, and
        // the metrics report both accuracies.
        let device = device.autodiff();
        let (average, _) = checkpoint::load(&whole.join("latest"), &device).expect("load");
        let (state, _, _) =
            checkpoint::load_training_state(&whole.join("latest"), &device, config.optimizer())
                .expect("state");
        let flat = |m: &Classifier| -> Vec<f32> {
            struct All(Vec<f32>);
            impl burn::module::ModuleVisitor for All {
                fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                    self.0.extend(crate::tensors::to_vec(p.val()));
                }
            }
            let mut all = All(Vec::new());
            m.visit(&mut all);
            all.0
        };
        assert!(
            flat(&average) != flat(&state),
            "the average is not the last weights"
        );
        let last = summary.metrics.last().expect("metrics");
        assert!(last.raw_test_accuracy.is_some(), "{last:?}");
        let eval = eval::evaluate(&average, &split.test, 256, &device).accuracy;
        assert_eq!(eval, last.test_accuracy, "test accuracy is the average's");
        // Without --ema nothing changes in the config's JSON or the metrics.
        let plain = TrainConfig {
            ema: None,
            ..config.clone()
        };
        assert!(!serde_json::to_string(&plain).expect("json").contains("ema"));
        let bad = TrainConfig {
            ema: Some(1.0),
            ..config
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_augmentation_recipe_is_recorded_only_when_it_is_not_crop_flip() {
        // A config.json written before the field existed (a cats-vs-dogs run) still reads.
        let old = r#"{"dataset":"cifar10","classes":["cat","dog"],"arch":"cnn","epochs":12,
            "batch_size":128,"lr":0.05,"momentum":0.9,"weight_decay":0.0005,
            "schedule":{"kind":"cosine"},"warmup_epochs":1,"optimizer":"sgd","augment":true,
            "seed":0,"adversarial":null,"constructed":null}"#;
        let config: TrainConfig = serde_json::from_str(old).expect("old config");
        assert_eq!(config.augmentation, Augmentation::CropFlip);
        let json = serde_json::to_string(&config).expect("json");
        assert!(!json.contains("augmentation"), "crop + flip leaves it out");
        let reference = TrainConfig {
            augmentation: Augmentation::Reference,
            ..config
        };
        let json = serde_json::to_string(&reference).expect("json");
        assert!(json.contains(r#""augmentation":"reference""#), "{json}");
        let back: TrainConfig = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.augmentation, Augmentation::Reference);
    }
}
