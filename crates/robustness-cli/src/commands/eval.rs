//! `robustness eval`: clean accuracy, per-class accuracy and confusion matrix of a checkpoint;
//! with `--attack`, robust accuracy under that attack for one or several radii (a robustness
//! curve, as a table and a PNG plot).

use crate::cli::{EvalArgs, MergeEvalArgs};
use crate::commands::{attack_config, load_test_data, print_json, same_split};
use crate::progress::Examples;
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use robustness::attack::{self, AttackConfig, AttackKind, RobustCounts, RobustReport};
use robustness::construct::{self, Shard, store};
use robustness::data::{Dataset, DatasetKind};
use robustness::{Classifier, defaults, eval, report, train};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

pub fn run(mut args: EvalArgs, device: &robustness::Device) -> Result<()> {
    let started = Instant::now();
    if args.limit == Some(0) {
        bail!("--limit 0: evaluate at least one test image");
    }
    let first = args
        .checkpoint
        .first()
        .cloned()
        .context("--checkpoint is required")?;
    let saved = train::checkpoint::read_meta(&train::checkpoint::resolve(&first)?)?;
    let seed = args.seed.unwrap_or(saved.seed);
    let test = match &args.constructed {
        Some(dir) => {
            if args.data.classes.is_some() {
                bail!(
                    "--classes does not apply to --constructed (the set keeps the classes it was built with)"
                );
            }
            let (_, set) = store::load(dir)
                .with_context(|| format!("loading the constructed set {}", dir.display()))?;
            match args.limit {
                Some(limit) => set.spread(limit),
                None => set,
            }
        }
        None => load_test_data(&args.data, seed, args.limit)?,
    };
    let (model, meta) = load_models(&args.checkpoint, &test, saved.seed, device)?;
    let batch_size = *args
        .batch_size
        .get_or_insert_with(|| defaults::eval_batch([test.channels, test.height, test.width]));
    if let Some(kind) = &args.attack {
        let kind: AttackKind = kind.parse().map_err(anyhow::Error::msg)?;
        return robust(&args, kind, &model, &test, seed, device, started);
    }
    let report = eval::evaluate(&model, &test, batch_size, device);
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        return print_json(&json!({
            "test_accuracy": report.accuracy,
            "clean_accuracy": report.accuracy,
            "per_class_accuracy": report.per_class_accuracy,
            "confusion": report.confusion,
            "examples": report.examples,
            "class_names": test.class_names,
            "epochs": meta.epoch,
            "seconds": seconds,
            "checkpoint": first,
            "ensemble": ensemble_json(&args.checkpoint),
            "constructed": args.constructed,
            "arch": meta.spec.arch,
            "restricted_from": meta.restricted_from,
        }));
    }
    outln!(
        "{} on {} {}: accuracy {:.2}%",
        describe(&args.checkpoint, &meta),
        report.examples,
        images_name(&args, Some(&args.data.dataset)),
        100.0 * report.accuracy
    );
    outln!("\n| class | accuracy |\n|---|---|");
    for (name, acc) in test.class_names.iter().zip(&report.per_class_accuracy) {
        outln!("| {name} | {:.2}% |", 100.0 * acc);
    }
    outln!("\nconfusion matrix (rows: true class, columns: predicted)");
    for (name, row) in test.class_names.iter().zip(&report.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>5}")).collect();
        outln!("{name:>12} {}", cells.join(""));
    }
    Ok(())
}

/// The batch size `run` resolved (`--batch-size` or [`defaults::eval_batch`]).
fn batch_size(args: &EvalArgs) -> usize {
    args.batch_size.unwrap_or(256)
}

fn robust(
    args: &EvalArgs,
    kind: AttackKind,
    model: &Classifier,
    test: &Dataset,
    seed: u64,
    device: &robustness::Device,
    started: Instant,
) -> Result<()> {
    if args.attack_args.eps.is_empty() {
        bail!("--attack needs --eps (one radius, or several separated by commas)");
    }
    // AutoAttack's attacks default to its standard budget: 100 steps from a random start.
    let base = kind.base_config(20);
    if let Some(spec) = &args.shard {
        return shard(args, spec, kind, model, test, seed, device, base);
    }
    let mut curve: Vec<(AttackConfig, RobustReport)> = Vec::new();
    for &eps in &args.attack_args.eps {
        let config = attack_config(&args.attack_args, eps, base.clone())?;
        let bar = (std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(test.len() as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "eps {prefix} [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(format!("{eps}"));
            bar
        });
        let report = attack::robust_eval(
            model,
            test,
            kind,
            &config,
            batch_size(args),
            seed,
            device,
            |done, _| {
                if let Some(bar) = &bar {
                    bar.set_position(done as u64);
                }
            },
        )?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if report.max_perturbation_norm > eps + 1e-4
            && config.constraint != attack::threat::Constraint::Unconstrained
        {
            bail!(
                "internal error: a perturbation of norm {} exceeds eps {eps}",
                report.max_perturbation_norm
            );
        }
        eprintln!(
            "eps {eps}: robust accuracy {:.2}% (clean {:.2}%)",
            100.0 * report.robust_accuracy,
            100.0 * report.clean_accuracy
        );
        curve.push((config, report));
    }
    let rows: Vec<Vec<String>> = curve
        .iter()
        .map(|(c, r)| {
            vec![
                format!("{}", c.eps),
                format!("{:.2}%", 100.0 * r.clean_accuracy),
                format!("{:.2}%", 100.0 * r.robust_accuracy),
                format!("{:.2}%", 100.0 * r.attack_success_rate),
                format!("{:.4}", r.mean_perturbation_norm),
                format!("{:.4}", r.max_perturbation_norm),
            ]
        })
        .collect();
    let table = report::markdown_table(
        &[
            "eps",
            "clean",
            "robust",
            "attack success",
            "mean norm",
            "max norm",
        ],
        &rows,
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        train::checkpoint::write_atomic(&out.join("curve.md"), table.as_bytes())?;
        let points: Vec<(f64, f64)> = curve
            .iter()
            .map(|(c, r)| (c.eps, 100.0 * r.robust_accuracy))
            .collect();
        let (first, _) = &curve[0];
        report::line_plot(
            &out.join("curve.png"),
            &format!(
                "Robustness curve ({kind:?}, L{} , {} steps)",
                first.constraint, first.steps
            ),
            "eps",
            "robust accuracy (%)",
            &[("robust accuracy".to_string(), points)],
        )?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (config, first) = &curve[0];
    if args.json {
        let entries: Vec<_> = curve
            .iter()
            .map(|(c, r)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("eps".into(), json!(c.eps));
                    o.insert("step_size".into(), json!(c.step()));
                }
                v
            })
            .collect();
        return print_json(&json!({
            "clean_accuracy": first.clean_accuracy,
            "test_accuracy": first.clean_accuracy,
            "robust_accuracy": first.robust_accuracy,
            "attack_success_rate": first.attack_success_rate,
            "mean_perturbation_norm": first.mean_perturbation_norm,
            "max_perturbation_norm": first.max_perturbation_norm,
            "eps": config.eps,
            "attack": kind,
            "constraint": config.constraint,
            "steps": config.steps,
            "step_size": config.step(),
            "restarts": config.restarts,
            "random_start": config.random_start,
            "queries": matches!(kind, AttackKind::Square | AttackKind::AutoAttack)
                .then(|| config.queries.unwrap_or(attack::square::SQUARE_QUERIES)),
            "examples": first.examples,
            "seconds": seconds,
            "checkpoint": args.checkpoint[0],
            "ensemble": ensemble_json(&args.checkpoint),
            "constructed": args.constructed,
            "curve": entries,
        }));
    }
    outln!(
        "{kind:?} L{} ({} steps, step size rule {}), {} {}:\n\n{table}",
        config.constraint,
        config.steps,
        if config.step_size.is_some() {
            "given"
        } else {
            "2.5 eps/steps"
        },
        first.examples,
        images_name(args, None)
    );
    Ok(())
}

/// The checkpoints of `paths` (one, or the members of an ensemble, which must fit `test`; on
/// the embedded digits they must share `split_seed`, which picks the split) as one model, with
/// the first checkpoint's metadata.
fn load_models(
    paths: &[PathBuf],
    test: &Dataset,
    split_seed: u64,
    device: &robustness::Device,
) -> Result<(Classifier, train::checkpoint::CheckpointMeta)> {
    let mut models = Vec::with_capacity(paths.len());
    let mut first = None;
    for path in paths {
        let (model, meta) = train::checkpoint::load_for_data(path, test, device)
            .with_context(|| format!("loading checkpoint {}", path.display()))?;
        same_split(
            "--checkpoint",
            meta.dataset == DatasetKind::Digits.to_string(),
            path,
            meta.seed,
            &paths[0],
            split_seed,
        )?;
        first.get_or_insert(meta);
        models.push(model);
    }
    let meta = first.context("--checkpoint is required")?;
    let model = if models.len() == 1 {
        models.remove(0)
    } else {
        Classifier::ensemble(models)?
    };
    Ok((model, meta))
}

/// The members of an ensemble for the JSON output (`null` for one checkpoint).
fn ensemble_json(paths: &[PathBuf]) -> serde_json::Value {
    if paths.len() > 1 {
        json!(paths)
    } else {
        json!(null)
    }
}

/// `cnn (epoch 12)`, or `ensemble of 3 checkpoints (mean logits; first: cnn epoch 12)`.
fn describe(paths: &[PathBuf], meta: &train::checkpoint::CheckpointMeta) -> String {
    let restricted = meta.restricted_from.as_ref().map_or(String::new(), |own| {
        format!(
            "; its {} classes [{}] answering for [{}]",
            own.len(),
            own.join(", "),
            meta.class_names.join(", ")
        )
    });
    if paths.len() == 1 {
        format!("{} (epoch {}{restricted})", meta.spec.arch, meta.epoch)
    } else {
        format!(
            "ensemble of {} checkpoints (mean logits; first: {} epoch {})",
            paths.len(),
            meta.spec.arch,
            meta.epoch
        )
    }
}

/// What the images are, for the summaries: `{dataset} test images` or `images of DIR`.
fn images_name(args: &EvalArgs, dataset: Option<&str>) -> String {
    match (&args.constructed, dataset) {
        (Some(dir), _) => format!("images of {}", dir.display()),
        (None, Some(dataset)) => format!("{dataset} test images"),
        (None, None) => "test images".to_string(),
    }
}

/// One shard's part of a robust evaluation: everything that must agree between the parts, and
/// the counts per radius.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Part {
    identity: serde_json::Value,
    shard: Shard,
    counts: Vec<(f64, RobustCounts)>,
}

#[allow(clippy::too_many_arguments)]
fn shard(
    args: &EvalArgs,
    spec: &str,
    kind: AttackKind,
    model: &Classifier,
    test: &Dataset,
    seed: u64,
    device: &robustness::Device,
    base: AttackConfig,
) -> Result<()> {
    let shard: Shard = spec.parse()?;
    let Some(out) = &args.out else {
        bail!("--shard needs --out DIR (the part is written there for `robustness merge-eval`)");
    };
    // One checkpoint: its weights' hash (as before); an ensemble: every member's, in order.
    let shas = args
        .checkpoint
        .iter()
        .map(|c| {
            let ckpt = train::checkpoint::resolve(c)?;
            Ok(construct::sha256_file(
                &ckpt.join(train::checkpoint::WEIGHTS_FILE),
            )?)
        })
        .collect::<Result<Vec<String>>>()?;
    let sha = if shas.len() == 1 {
        json!(shas[0])
    } else {
        json!(shas)
    };
    let batches = test.len().div_ceil(batch_size(args).max(1));
    let range = attack::shard_batches(batches, shard.index, shard.count);
    let mut counts = Vec::new();
    let mut configs = Vec::new();
    for &eps in &args.attack_args.eps {
        let config = attack_config(&args.attack_args, eps, base.clone())?;
        let mut progress =
            Examples::new(&format!("eps {eps} shard {}/{}", shard.index, shard.count));
        let c = attack::robust_eval_batches(
            model,
            test,
            kind,
            &config,
            batch_size(args),
            seed,
            range.clone(),
            device,
            |d, t| progress.update(d, t),
        )?;
        counts.push((eps, c));
        configs.push(config);
    }
    let part = Part {
        identity: json!({
            "weights_sha256": sha,
            "dataset": args.data.dataset,
            "classes": args.data.classes,
            "constructed": args.constructed,
            "examples": test.len(),
            "attack": kind,
            "configs": configs,
            "batch_size": batch_size(args),
            "seed": seed,
            "shards": shard.count,
        }),
        shard,
        counts,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!(
        "eval-shard-{}-of-{}.json",
        shard.index, shard.count
    ));
    train::checkpoint::write_json_atomic(&path, &part)?;
    if args.json {
        return print_json(&json!({ "part": path, "shard": shard, "counts": part.counts }));
    }
    outln!(
        "shard {}/{}: {} examples attacked; part written to {}",
        shard.index,
        shard.count,
        part.counts.first().map_or(0, |c| c.1.examples),
        path.display()
    );
    Ok(())
}

pub fn merge(args: MergeEvalArgs) -> Result<()> {
    let parts: Vec<Part> = args
        .parts
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a part written by `eval --shard`", p.display()))
        })
        .collect::<Result<_>>()?;
    let first = &parts[0];
    let count = first.shard.count;
    let mut seen = vec![None; count];
    for (path, part) in args.parts.iter().zip(&parts) {
        if part.identity != first.identity {
            bail!(
                "{} comes from another evaluation than {} (checkpoint, data, attack or shard count differ)",
                path.display(),
                args.parts[0].display()
            );
        }
        if let Some(prev) = seen[part.shard.index].replace(path) {
            bail!(
                "shard {}/{count} given twice: {} and {}",
                part.shard.index,
                prev.display(),
                path.display()
            );
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|&k| seen[k].is_none())
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        bail!("shards {} of {count} are missing", missing.join(", "));
    }
    let mut total: Vec<(f64, RobustCounts)> = first
        .counts
        .iter()
        .map(|(eps, _)| (*eps, RobustCounts::default()))
        .collect();
    for part in &parts {
        for ((_, t), (_, c)) in total.iter_mut().zip(&part.counts) {
            t.add(c);
        }
    }
    let curve: Vec<serde_json::Value> = total
        .iter()
        .map(|(eps, c)| {
            let mut v = serde_json::to_value(c.report()).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("eps".into(), json!(eps));
            }
            v
        })
        .collect();
    if args.json {
        let (_, c) = &total[0];
        let r = c.report();
        return print_json(&json!({
            "clean_accuracy": r.clean_accuracy,
            "robust_accuracy": r.robust_accuracy,
            "attack_success_rate": r.attack_success_rate,
            "max_perturbation_norm": r.max_perturbation_norm,
            "examples": r.examples,
            "shards": count,
            "curve": curve,
        }));
    }
    for (eps, c) in &total {
        let r = c.report();
        outln!(
            "eps {eps}: robust accuracy {:.2}% (clean {:.2}%) on {} examples from {count} shards",
            100.0 * r.robust_accuracy,
            100.0 * r.clean_accuracy,
            r.examples
        );
    }
    Ok(())
}
