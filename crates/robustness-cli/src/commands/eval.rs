//! `robustness eval`: clean accuracy, per-class accuracy and confusion matrix of a checkpoint;
//! with `--attack`, robust accuracy under that attack for one or several radii (a robustness
//! curve, as a table and a PNG plot).

use crate::cli::EvalArgs;
use crate::commands::{attack_config, load_data, print_json};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use robustness::attack::{self, AttackConfig, AttackKind, RobustReport};
use robustness::data::Dataset;
use robustness::{Classifier, eval, report, train};
use serde_json::json;
use std::io::IsTerminal;
use std::time::Instant;

pub fn run(args: EvalArgs, device: &robustness::Device) -> Result<()> {
    let started = Instant::now();
    let saved = train::checkpoint::read_meta(&train::checkpoint::resolve(&args.checkpoint)?)?;
    let seed = args.seed.unwrap_or(saved.seed);
    let (_, split, _) = load_data(&args.data, seed)?;
    let mut test = split.test;
    if let Some(limit) = args.limit {
        let indices: Vec<usize> = (0..limit.min(test.len())).collect();
        test = test.subset(&indices);
    }
    let (model, meta) = train::checkpoint::load_for_data(&args.checkpoint, &test, device)
        .with_context(|| format!("loading checkpoint {}", args.checkpoint.display()))?;
    if let Some(kind) = &args.attack {
        let kind: AttackKind = kind.parse().map_err(anyhow::Error::msg)?;
        return robust(&args, kind, &model, &test, seed, device, started);
    }
    let report = eval::evaluate(&model, &test, args.batch_size, device);
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
            "checkpoint": args.checkpoint,
            "arch": meta.spec.arch,
        }));
    }
    outln!(
        "{} (epoch {}) on {} {} test images: accuracy {:.2}%",
        meta.spec.arch,
        meta.epoch,
        report.examples,
        meta.dataset,
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
    let base = AttackConfig {
        steps: 20,
        ..AttackConfig::default()
    };
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
            args.batch_size,
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
            "examples": first.examples,
            "seconds": seconds,
            "checkpoint": args.checkpoint,
            "curve": entries,
        }));
    }
    outln!(
        "{kind:?} L{} ({} steps, step size rule {}), {} test images:\n\n{table}",
        config.constraint,
        config.steps,
        if config.step_size.is_some() {
            "given"
        } else {
            "2.5 eps/steps"
        },
        first.examples
    );
    Ok(())
}
