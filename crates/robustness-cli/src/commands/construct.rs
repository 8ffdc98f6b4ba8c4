//! `robustness construct` (D_det, D_rand, D_R, D_NR from a checkpoint) and `robustness merge`
//! (join the shards of one construction).

use crate::cli::{ConstructArgs, MergeArgs, SplitArg};
use crate::commands::{load_data, override_steps, print_json, same_split, start_of};
use crate::progress::Examples;
use anyhow::{Context, Result, bail};
use robustness::attack::threat::Constraint;
use robustness::construct::{
    self, ConstructConfig, ConstructKind, ConstructMeta, ModelRef, Shard, Source, store,
};
use robustness::data::{DatasetKind, Limit};
use robustness::defaults;
use robustness::models::Classifier;
use robustness::train::{self, checkpoint};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

pub fn run(args: ConstructArgs, device: &robustness::Device) -> Result<()> {
    let kind: ConstructKind = args.kind.parse()?;
    let first = args.model.first().context("--model is required")?;
    let saved = checkpoint::read_meta(&checkpoint::resolve(first)?)?;
    // The model's own split (the embedded digits' split depends on the training seed).
    let split_seed = saved.seed;
    let loaded = load_data(&args.data, split_seed)?;
    let (dataset, split, classes) = (loaded.kind, loaded.split, loaded.classes);
    let from_test = matches!(args.from, SplitArg::Test);
    let mut train_set = if from_test { split.test } else { split.train };
    if let Some(images) = args.limit {
        // Spread over the set unless asked for the first N: the shared CIFAR-10 files are
        // sorted by class, so the first images of a class subset such as cat,dog are all cats.
        let limit = Limit {
            images,
            first: args.limit_first,
        };
        train_set = limit.apply(&train_set)?;
    }
    let mut models = Vec::with_capacity(args.model.len());
    let mut refs = Vec::with_capacity(args.model.len());
    for path in &args.model {
        let (model, saved) = checkpoint::load_for_data(path, &train_set, device)
            .with_context(|| format!("loading --model {}", path.display()))?;
        same_split(
            "--model",
            dataset == DatasetKind::Digits,
            path,
            saved.seed,
            first,
            split_seed,
        )?;
        let ckpt_dir = checkpoint::resolve(path)?;
        refs.push(ModelRef {
            path: path.display().to_string(),
            sha256: construct::sha256_file(&ckpt_dir.join(checkpoint::WEIGHTS_FILE))?,
            arch: saved.spec.arch,
            epoch: saved.epoch,
            adversarially_trained: adversarially_trained(&ckpt_dir),
            restricted_from: saved.restricted_from.clone(),
        });
        models.push(model);
    }
    let model = if models.len() == 1 {
        models.remove(0)
    } else {
        Classifier::ensemble(models)?
    };
    let mut config = defaults::construction(dataset, kind);
    // Ours: the default batch (250) shrinks for images larger than 32x32 as `eval`'s does.
    let shape = [train_set.channels, train_set.height, train_set.width];
    config.batch_size = config.batch_size.min(defaults::eval_batch(shape));
    let config = config_from(&args, config)?;
    let synthetic =
        (dataset == DatasetKind::Synthetic).then(|| crate::commands::synthetic_config(&args.data));
    let mut source = Source::of(&train_set, dataset, classes, split_seed, synthetic);
    source.limit = args.limit;
    source.limit_spread = args.limit.is_some() && !args.limit_first;
    source.from_test = from_test;
    source.folder = loaded.folder;
    let shard: Option<Shard> = args.shard.as_deref().map(str::parse).transpose()?;
    let meta = ConstructMeta::with_models(config, source, refs, shard)?;
    let started = Instant::now();
    let what = match shard {
        Some(s) => format!("{} shard {}/{}", kind.paper_name(), s.index, s.count),
        None => kind.paper_name().to_string(),
    };
    let mut progress = Examples::new(&what);
    let finished = construct::construct(&model, &train_set, meta, &args.out, device, |d, t| {
        progress.update(d, t)
    })
    .with_context(|| format!("building {} into {}", kind.paper_name(), args.out.display()))?;
    drop(progress);
    report(
        &finished,
        &args.out,
        started.elapsed().as_secs_f64(),
        args.json,
    )
}

fn config_from(args: &ConstructArgs, mut config: ConstructConfig) -> Result<ConstructConfig> {
    let kind = config.kind;
    if kind.relabels() {
        config.attack.constraint = args.constraint.parse().map_err(anyhow::Error::msg)?;
        if config.attack.constraint == Constraint::Unconstrained {
            bail!("{} needs --constraint 2 or inf", kind.paper_name());
        }
    } else if args.constraint != "2" {
        bail!(
            "{} has no eps-ball (unconstrained normalised steps); drop --constraint",
            kind.paper_name()
        );
    }
    if args.eps.is_some() && !kind.relabels() {
        bail!(
            "{} has no eps-ball; --eps applies to det/rand",
            kind.paper_name()
        );
    }
    override_steps(&mut config.attack, args.eps, args.step_size, args.steps);
    config.attack.use_best = !args.no_use_best;
    config.start = start_of(args.start);
    config.normalized_loss = args.normalized_loss;
    if let Some(batch_size) = args.batch_size {
        config.batch_size = batch_size;
    }
    config.chunk_size = args.chunk_size;
    config.copies = args.copies;
    config.seed = args.seed;
    config.validate()?;
    Ok(config)
}

/// Whether the checkpoint's run was adversarially trained (from the run's `config.json`, two
/// folders up), when that can be read.
pub fn adversarially_trained(ckpt_dir: &Path) -> Option<bool> {
    let run = ckpt_dir.parent()?.parent()?;
    let text = std::fs::read_to_string(run.join("config.json")).ok()?;
    let config: train::TrainConfig = serde_json::from_str(&text).ok()?;
    Some(config.adversarial.is_some())
}

fn report(meta: &ConstructMeta, out: &Path, seconds: f64, as_json: bool) -> Result<()> {
    let summary = meta
        .summary
        .as_ref()
        .context("the construction finished without a summary")?;
    if as_json {
        print_json(&json!({
            "kind": meta.config.kind,
            "out": out,
            "config_id": meta.config_id,
            "shard": meta.shard,
            "seconds": seconds,
            "summary": summary,
        }))?;
    } else {
        let agreement = if meta.config.kind.relabels() {
            "targeted attack success"
        } else {
            "model agrees with the label"
        };
        outln!(
            "{} of {} examples in {} ({:.1}s): {agreement} {:.2}%, relabelled {:.2}%, objective median {:.4}, distance to source median {:.4} (max {:.4})",
            meta.config.kind.paper_name(),
            summary.examples,
            out.display(),
            seconds,
            100.0 * summary.agreement,
            100.0 * summary.relabelled,
            summary.loss.median,
            summary.distance.median,
            summary.distance.max,
        );
    }
    Ok(())
}

pub fn merge(args: MergeArgs) -> Result<()> {
    let started = Instant::now();
    let meta = store::merge(&args.shards, &args.out)
        .with_context(|| format!("merging {} shards", args.shards.len()))?;
    report(&meta, &args.out, started.elapsed().as_secs_f64(), args.json)
}
