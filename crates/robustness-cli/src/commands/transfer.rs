//! `robustness transfer`: the paper's Figure 3. Untargeted adversarial examples of a source
//! model, the rate at which they fool standard models of other architectures, and (with
//! `--det-models`) each architecture's accuracy when trained on D_det built from the source.

use crate::cli::TransferArgs;
use crate::commands::{attack_config, load_data, print_json};
use crate::progress::Examples;
use anyhow::{Context, Result, bail};
use robustness::attack::{AttackConfig, AttackKind, transfer};
use robustness::{Classifier, eval, report, train};
use serde_json::json;

pub fn run(args: TransferArgs, device: &robustness::Device) -> Result<()> {
    if args.limit == Some(0) {
        bail!("--limit 0: attack at least one test image");
    }
    let saved = train::checkpoint::read_meta(&train::checkpoint::resolve(&args.source)?)?;
    let split = load_data(&args.data, saved.seed)?.split;
    let mut test = split.test;
    if let Some(limit) = args.limit {
        test = test.spread(limit);
    }
    if !args.det_models.is_empty() && args.det_models.len() != args.targets.len() {
        bail!(
            "--det-models: {} given for {} targets; give one per target, in the same order",
            args.det_models.len(),
            args.targets.len()
        );
    }
    let load = |p: &std::path::Path| -> Result<(Classifier, String)> {
        let (m, meta) = train::checkpoint::load_for_data(p, &test, device)
            .with_context(|| format!("loading {}", p.display()))?;
        Ok((m, meta.spec.arch.to_string()))
    };
    let (source, source_arch) = load(&args.source)?;
    let mut targets = Vec::new();
    let mut names = Vec::new();
    for p in &args.targets {
        let (m, arch) = load(p)?;
        targets.push(m);
        names.push(arch);
    }
    let kind: AttackKind = args.attack.parse().map_err(anyhow::Error::msg)?;
    let eps = match args.attack_args.eps[..] {
        [eps] => eps,
        [] => 0.5,
        _ => bail!("transfer takes one --eps"),
    };
    let config = attack_config(
        &args.attack_args,
        eps,
        kind.base_config(AttackConfig::default().steps),
    )?;
    let mut progress = Examples::new("transfer");
    let report = transfer::transfer(
        &source,
        &targets,
        &test,
        kind,
        &config,
        args.batch_size,
        args.seed,
        device,
        |d, t| progress.update(d, t),
    )?;
    drop(progress);
    let det_accuracy: Vec<Option<f64>> = if args.det_models.is_empty() {
        vec![None; targets.len()]
    } else {
        args.det_models
            .iter()
            .map(|p| {
                Ok(Some(
                    eval::evaluate(&load(p)?.0, &test, 256, device).accuracy,
                ))
            })
            .collect::<Result<_>>()?
    };
    let rows: Vec<serde_json::Value> = names
        .iter()
        .zip(&args.targets)
        .zip(report.targets.iter().zip(&det_accuracy))
        .map(|((arch, path), (rate, det))| {
            json!({
                "arch": arch,
                "checkpoint": path,
                "clean_accuracy": rate.clean_accuracy,
                "adversarial_accuracy": rate.adversarial_accuracy,
                "transfer_success_rate": rate.success_rate,
                "d_det_accuracy": det,
            })
        })
        .collect();
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    let table = report::markdown_table(
        &[
            "target",
            "clean accuracy",
            "accuracy on the source's adversarial examples",
            "transfer success rate",
            "accuracy when trained on D_det",
        ],
        &names
            .iter()
            .zip(report.targets.iter().zip(&det_accuracy))
            .map(|(a, (r, d))| {
                vec![
                    a.clone(),
                    pct(r.clean_accuracy),
                    pct(r.adversarial_accuracy),
                    pct(r.success_rate),
                    d.map(pct).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let points: Vec<(String, f64, f64)> = names
            .iter()
            .zip(report.targets.iter().zip(&det_accuracy))
            .filter_map(|(a, (r, d))| d.map(|d| (a.clone(), 100.0 * d, 100.0 * r.success_rate)))
            .collect();
        if !points.is_empty() {
            report::scatter_plot(
                &out.join("transfer.png"),
                &format!("adversarial examples of {source_arch}"),
                "test accuracy when trained on D_det (%)",
                "transfer success rate (%)",
                &points,
            )?;
        }
        let md = format!(
            "# Transferability from {source_arch} ({})\n\n{} {} attack, eps {eps}, {} steps, on {} test images; the source itself: {} success.\n\n{table}",
            args.source.display(),
            AttackKind::name(kind),
            config.constraint,
            config.steps,
            report.examples,
            pct(report.source.success_rate),
        );
        train::checkpoint::write_atomic(&out.join("transfer.md"), md.as_bytes())?;
        train::checkpoint::write_json_atomic(
            &out.join("transfer.json"),
            &json!({ "source": report.source, "rows": rows, "examples": report.examples }),
        )?;
    }
    if args.json {
        return print_json(&json!({
            "source": report.source,
            "rows": rows,
            "examples": report.examples,
        }));
    }
    outln!(
        "source {source_arch}: attack success {} on {} images",
        pct(report.source.success_rate),
        report.examples
    );
    outln!("{table}");
    Ok(())
}
