//! `robustness train`: flags -> `TrainConfig` (per-dataset defaults, flags winning) -> train.

use crate::cli::{AugmentArg, OptimizerArg, ScheduleArg, TrainArgs};
use crate::commands::{attack_config, constraint_of, load_data, load_source_test, print_json};
use crate::progress::Progress;
use anyhow::{Context, Result};
use robustness::construct::{self, ConstructedRef, Source, store};
use robustness::data::{Augmentation, Limit, Split};
use robustness::data::{DatasetKind, cifar10};
use robustness::defaults;
use robustness::interop::released;
use robustness::train::schedule::Schedule;
use robustness::train::{self, AdvMethod, Adversarial, OptimizerKind, TrainConfig};
use serde_json::json;
use std::path::Path;

/// The options a run was started with, as a `--config` file (in the run folder).
const COMMAND_FILE: &str = "command.toml";

pub fn run(args: TrainArgs, devices: &[robustness::Device], options: &toml::Table) -> Result<()> {
    let (mut config, split) = match args.data.dataset.strip_prefix("constructed:") {
        Some(dir) => constructed(Path::new(dir), &args)?,
        None => {
            let loaded = load_data(&args.data, args.seed)?;
            let mut config = defaults::for_dataset(loaded.kind);
            config.classes = loaded.classes;
            config.folder = loaded.folder;
            (config, loaded.split)
        }
    };
    config.seed = args.seed;
    if config.dataset == DatasetKind::Folder {
        config.arch = defaults::folder_arch(split.train.height.min(split.train.width));
    }
    apply_flags(&mut config, &args)?;
    if let Some(decay) = config.ema {
        let images = config
            .train_limit
            .map_or(split.train.len(), |l| l.images.min(split.train.len()));
        let steps = (config.epochs * images.div_ceil(config.batch_size.max(1))) as u64;
        if let Some(last) = train::ema::capped_by_warmup(decay, steps) {
            eprintln!(
                "note: --ema {decay}: the warm-up min({decay}, (1 + t) / (10 + t)) is still {last:.4} at the last of this run's {steps} steps, so it, not {decay}, sets the average"
            );
        }
    }
    if devices.len() > 1 {
        // stderr, so that `--json` keeps stdout to the one JSON object.
        eprintln!(
            "data-parallel over {} devices: each batch of {} split between them, the model on the first",
            devices.len(),
            config.batch_size
        );
    }
    if !args.out.join("latest").exists() {
        record_command(&args.out, options)?;
    }
    let mut progress = Progress::new();
    let summary = train::train_on(
        &config,
        &split,
        &args.out,
        args.resume,
        devices,
        &mut progress,
    )
    .with_context(|| format!("training into {}", args.out.display()))?;
    drop(progress);
    if args.json {
        print_json(&json!({
            "test_accuracy": summary.test_accuracy,
            "best_test_accuracy": summary.best_test_accuracy,
            "epochs": summary.epochs,
            "train_images": summary.train_images,
            "seconds": summary.seconds,
            "checkpoint": summary.checkpoint,
            "latest": summary.latest,
            "dataset": config.dataset,
            "arch": config.arch,
            "seed": config.seed,
            "adversarial": config.adversarial,
            "robust_test_accuracy": summary.metrics.last().and_then(|m| m.robust_test_accuracy),
            "metrics": summary.metrics,
        }))?;
    } else {
        let images = match config.train_limit {
            Some(_) => format!(" ({} training images)", summary.train_images),
            None => String::new(),
        };
        outln!(
            "{} on {}{images}: test accuracy {:.2}% (best {:.2}%) after {} epochs, {:.1}s; checkpoint {}",
            config.arch,
            config.dataset,
            100.0 * summary.test_accuracy,
            100.0 * summary.best_test_accuracy,
            summary.epochs,
            summary.seconds,
            summary.checkpoint.display()
        );
    }
    Ok(())
}

/// A constructed training set (`--dataset constructed:DIR`) with the original test set of the
/// data set it was built from, and the paper's Table 3 defaults for it.
fn constructed(dir: &Path, args: &TrainArgs) -> Result<(TrainConfig, Split)> {
    if args.data.classes.is_some() {
        anyhow::bail!(
            "--classes does not apply to a constructed data set (it keeps the classes it was built with)"
        );
    }
    if args.data.image_size.is_some() || args.data.resize.is_some() {
        anyhow::bail!(
            "--image-size and --resize do not apply to a constructed data set (its images keep the size they were built with)"
        );
    }
    if released::is_released(dir) && !dir.join(store::META_FILE).exists() {
        return released_set(dir, args);
    }
    let (meta, train_set) = store::load(dir)?;
    if meta.source.from_test {
        anyhow::bail!(
            "{} was built from the test images (construct --from test): it is an evaluation set (eval --constructed DIR), not a training set",
            dir.display()
        );
    }
    let test = load_source_test(&meta.source, args.data.data.as_deref())?;
    let mut config = defaults::for_constructed(meta.source.dataset, meta.config.kind);
    config.classes = meta.source.classes.clone();
    config.folder = meta.source.folder.clone();
    config.constructed = Some(ConstructedRef {
        path: dir.display().to_string(),
        kind: meta.config.kind,
        config_id: meta.config_id.clone(),
    });
    Ok((
        config,
        Split {
            train: train_set,
            test,
        },
    ))
}

/// One of the authors' released CIFAR-10 sets (`CIFAR_ims` / `CIFAR_lab`), tested on the CIFAR-10
/// test set; the construction (for Table 3's defaults) is read from the folder's released name.
fn released_set(dir: &Path, args: &TrainArgs) -> Result<(TrainConfig, Split)> {
    let kind = released::kind_from_name(dir).with_context(|| {
        format!(
            "{}: cannot tell the construction from the folder name: keep the released names (d_robust_CIFAR, d_non_robust_CIFAR, drand_CIFAR, ddet_CIFAR) or a name containing robust, non_robust, drand or ddet",
            dir.display()
        )
    })?;
    let names: Vec<String> = cifar10::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let train_set = released::load(dir, &names)?;
    let shape = [train_set.channels, train_set.height, train_set.width];
    if shape != [3, 32, 32] {
        anyhow::bail!(
            "{}: released sets are CIFAR-10 (3x32x32 images), these are {shape:?}",
            dir.display()
        );
    }
    let source = Source::of(&train_set, DatasetKind::Cifar10, None, 0, None);
    let test = load_source_test(&source, args.data.data.as_deref())?;
    let mut config = defaults::for_constructed(DatasetKind::Cifar10, kind);
    config.classes = None;
    let labels = construct::sha256_file(&dir.join(released::LABELS_FILE))?;
    config.constructed = Some(ConstructedRef {
        path: dir.display().to_string(),
        kind,
        config_id: format!("released:{labels}"),
    });
    Ok((
        config,
        Split {
            train: train_set,
            test,
        },
    ))
}

fn apply_flags(config: &mut TrainConfig, args: &TrainArgs) -> Result<()> {
    if let Some(arch) = &args.arch {
        config.arch = arch.parse()?;
    }
    if let Some(v) = args.epochs {
        config.epochs = v;
    }
    if let Some(v) = args.batch_size {
        config.batch_size = v;
    }
    if let Some(v) = args.lr {
        config.lr = v;
    }
    if let Some(v) = args.momentum {
        config.momentum = v;
    }
    if let Some(v) = args.weight_decay {
        config.weight_decay = v;
    }
    if let Some(v) = args.warmup_epochs {
        config.warmup_epochs = v;
    }
    let step = |config: &TrainConfig| match config.schedule {
        Schedule::Step { step, .. } => step,
        _ => (config.epochs / 3).max(1),
    };
    match (args.schedule, args.step_lr) {
        (Some(ScheduleArg::Cosine), _) => config.schedule = Schedule::Cosine,
        (Some(ScheduleArg::Constant), _) => config.schedule = Schedule::Constant,
        (Some(ScheduleArg::Step), s) | (None, s @ Some(_)) => {
            config.schedule = Schedule::Step {
                step: s.unwrap_or_else(|| step(config)),
                gamma: args.step_gamma,
            }
        }
        (None, None) => {}
    }
    if let Some(o) = args.optimizer {
        config.optimizer = match o {
            OptimizerArg::Sgd => OptimizerKind::Sgd,
            OptimizerArg::Adam => OptimizerKind::Adam,
        };
    }
    if let Some(images) = args.limit {
        config.train_limit = Some(Limit {
            images,
            first: args.limit_first,
        });
    }
    if args.ema.is_some() {
        config.ema = args.ema;
    }
    // Zero is the plain loss: recorded as no smoothing, so such a run resumes a plain one.
    if let Some(s) = args.label_smoothing {
        config.label_smoothing = (s != 0.0).then_some(s);
    }
    if args.mixup.is_some() {
        config.mixup = args.mixup;
    }
    if args.no_augment {
        config.augment = false;
    }
    if let Some(recipe) = args.augment {
        if !matches!(config.dataset, DatasetKind::Cifar10 | DatasetKind::Folder) {
            anyhow::bail!(
                "--augment (random crop + flip) applies to CIFAR-10 and image folders only, not {} (a flip changes a digit)",
                config.dataset
            );
        }
        config.augment = true;
        config.augmentation = match recipe {
            AugmentArg::CropFlip => Augmentation::CropFlip,
            AugmentArg::Reference => Augmentation::Reference,
            AugmentArg::Cutout => Augmentation::Cutout,
        };
    }
    if args.attack.queries.is_some() {
        anyhow::bail!(
            "--queries sets the Square attack's budget (eval/attack --attack square|autoattack); training does not use it"
        );
    }
    if args.adv_train {
        let constraint = constraint_of(&args.attack)?;
        if args.attack.eps.len() > 1 {
            anyhow::bail!("--adv-train takes one --eps, got {:?}", args.attack.eps);
        }
        let base =
            defaults::adversarial(config.dataset, constraint, args.attack.eps.first().copied());
        let eps = base.eps;
        let attack = attack_config(&args.attack, eps, base)?;
        let method = match args.adv_method.as_str() {
            "pgd" => AdvMethod::Pgd,
            "fgsm-rs" | "fgsm" => AdvMethod::FgsmRs,
            other => anyhow::bail!("unknown --adv-method '{other}': expected pgd or fgsm-rs"),
        };
        config.adversarial = Some(Adversarial {
            attack,
            method,
            eval: args.adv_eval,
            eval_limit: args.adv_eval_limit,
        });
    }
    config.validate()?;
    Ok(())
}

/// Writes `RUN_DIR/command.toml`: the options a fresh run starts with (flags and `--config`
/// values; defaults are not listed, see config.json for every setting), so that
/// `robustness train --config RUN_DIR/command.toml --out OTHER` runs it again.
fn record_command(run_dir: &Path, options: &toml::Table) -> Result<()> {
    let text = toml::to_string(options).context("writing the run's options as TOML")?;
    let header = format!(
        "# The options `robustness train` started this run with (defaults are not listed:\n\
         # config.json holds every setting). Run it again with\n\
         #   robustness train --config {} --out OTHER_DIR\n",
        run_dir.join(COMMAND_FILE).display()
    );
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating the run folder {}", run_dir.display()))?;
    robustness::train::checkpoint::write_atomic(
        &run_dir.join(COMMAND_FILE),
        format!("{header}{text}").as_bytes(),
    )
    .with_context(|| format!("writing {}", run_dir.join(COMMAND_FILE).display()))
}
