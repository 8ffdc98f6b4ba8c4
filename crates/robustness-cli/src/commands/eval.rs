//! `robustness eval`: clean accuracy, per-class accuracy and confusion matrix of a checkpoint.

use crate::cli::EvalArgs;
use crate::commands::{load_data, print_json};
use anyhow::{Context, Result};
use robustness::{eval, train};
use serde_json::json;
use std::time::Instant;

pub fn run(args: EvalArgs, device: &robustness::Device) -> Result<()> {
    let started = Instant::now();
    let saved = train::checkpoint::read_meta(&train::checkpoint::resolve(&args.checkpoint)?)?;
    let (_, split, _) = load_data(&args.data, args.seed.unwrap_or(saved.seed))?;
    let test = &split.test;
    let expected = robustness::ModelSpec {
        arch: saved.spec.arch,
        channels: test.channels,
        height: test.height,
        width: test.width,
        num_classes: test.num_classes(),
        mean: Vec::new(),
        std: Vec::new(),
    };
    let (model, meta) = train::checkpoint::load_expecting(&args.checkpoint, &expected, device)
        .with_context(|| format!("loading checkpoint {}", args.checkpoint.display()))?;
    let report = eval::evaluate(&model, test, args.batch_size, device);
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        print_json(&json!({
            "test_accuracy": report.accuracy,
            "per_class_accuracy": report.per_class_accuracy,
            "confusion": report.confusion,
            "examples": report.examples,
            "class_names": test.class_names,
            "epochs": meta.epoch,
            "seconds": seconds,
            "checkpoint": args.checkpoint,
            "arch": meta.spec.arch,
        }))?;
        return Ok(());
    }
    println!(
        "{} (epoch {}) on {} {} test images: accuracy {:.2}%",
        meta.spec.arch,
        meta.epoch,
        report.examples,
        meta.dataset,
        100.0 * report.accuracy
    );
    println!("\n| class | accuracy |\n|---|---|");
    for (name, acc) in test.class_names.iter().zip(&report.per_class_accuracy) {
        println!("| {name} | {:.2}% |", 100.0 * acc);
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted)");
    for (name, row) in test.class_names.iter().zip(&report.confusion) {
        let cells: Vec<String> = row.iter().map(|c| format!("{c:>5}")).collect();
        println!("{name:>12} {}", cells.join(""));
    }
    Ok(())
}
