//! `robustness attack`: attacks chosen test images of a checkpoint and writes `grid.png`
//! (originals, perturbations scaled to be visible, adversarial examples, with predicted labels)
//! and `attack.json`.

use crate::cli::AttackCmdArgs;
use crate::commands::{attack_config, load_test_data, print_json};
use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use robustness::attack::{self, AttackConfig, AttackKind};
use robustness::report::{self, Tile};
use robustness::{data, tensors, train};
use serde_json::json;

/// Parses `0..16` (half-open) or `3,7,9`.
pub(super) fn parse_indices(spec: &str, len: usize) -> Result<Vec<usize>> {
    let indices: Vec<usize> = if let Some((a, b)) = spec.split_once("..") {
        let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
        (a..b).collect()
    } else {
        spec.split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!("--indices '{spec}': expected a range like 0..16 or a list like 3,7,9")
            })?
    };
    if indices.is_empty() {
        bail!("--indices '{spec}' selects no image");
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
        bail!("--indices: image {bad} does not exist (the test set has {len} images)");
    }
    Ok(indices)
}

pub fn run(args: AttackCmdArgs, device: &robustness::Device) -> Result<()> {
    let saved = train::checkpoint::read_meta(&train::checkpoint::resolve(&args.checkpoint)?)?;
    let seed = args.seed.unwrap_or(saved.seed);
    let test = load_test_data(&args.data, seed, None)?;
    let indices = parse_indices(&args.indices, test.len())?;
    let test = test.subset(&indices);
    let (model, _) = train::checkpoint::load_for_data(&args.checkpoint, &test, device)?;
    let kind: AttackKind = args.attack.parse().map_err(anyhow::Error::msg)?;
    let eps = match args.attack_args.eps[..] {
        [eps] => eps,
        [] => bail!("--eps is required"),
        _ => bail!("attack takes one --eps"),
    };
    let mut config = attack_config(
        &args.attack_args,
        eps,
        kind.base_config(AttackConfig::default().steps),
    )?;
    let targets: Vec<usize> = match &args.target {
        Some(t) => {
            let class = data::parse_classes(t, &test.class_names)?;
            config.targeted = true;
            vec![class[0]; test.len()]
        }
        None => test.labels.clone(),
    };
    let plain = device.clone();
    let (c, h, w) = (test.channels, test.height, test.width);
    let x0 = tensors::images(test.images.clone(), [test.len(), c, h, w], &plain);
    let y = tensors::labels(&targets, &plain);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let out = attack::attack_batch(kind, &model, &x0, &y, &config, &mut rng)?;
    let clean_pred = tensors::argmax_rows(model.forward(x0.clone()));
    let adv_pred = tensors::argmax_rows(model.forward(out.adv.clone()));
    let adv = tensors::to_vec(out.adv.clone());
    let threat = attack::threat::threat_model(config.constraint, eps, config.l1_sparsity);
    let norms = tensors::to_vec(threat.norm(out.adv - x0));

    // Perturbations are shown as 0.5 + delta / (2 max|delta|) so their sign pattern is visible.
    let per = test.image_len();
    let delta: Vec<f32> = adv.iter().zip(&test.images).map(|(a, b)| a - b).collect();
    let scale = delta.iter().fold(1e-12f32, |m, d| m.max(d.abs()));
    let shown: Vec<f32> = delta.iter().map(|d| 0.5 + d / (2.0 * scale)).collect();
    let name = |k: usize| {
        test.class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    };
    fn row(pixels: &[f32], per: usize, captions: Vec<String>) -> Vec<Tile<'_>> {
        pixels
            .chunks(per)
            .zip(captions)
            .map(|(p, caption)| Tile { pixels: p, caption })
            .collect()
    }
    let n = test.len();
    let rows = vec![
        (
            "original (prediction)".to_string(),
            row(
                &test.images,
                per,
                (0..n).map(|i| name(clean_pred[i])).collect(),
            ),
        ),
        (
            format!("perturbation x{:.1} (norm)", 0.5 / scale),
            row(
                &shown,
                per,
                norms.iter().map(|v| format!("{v:.3}")).collect(),
            ),
        ),
        (
            format!(
                "adversarial, {kind:?} L{} eps {eps} (prediction)",
                config.constraint
            ),
            row(&adv, per, (0..n).map(|i| name(adv_pred[i])).collect()),
        ),
    ];
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let pixel_scale = (128 / h.max(w)).clamp(2, 16);
    let grid = args.out.join("grid.png");
    report::image_grid(&grid, &rows, c, h, w, pixel_scale)?;
    let success = (0..n)
        .filter(|&i| {
            if config.targeted {
                adv_pred[i] == targets[i]
            } else {
                adv_pred[i] != test.labels[i]
            }
        })
        .count();
    let result = json!({
        "indices": indices,
        "labels": test.labels,
        "clean_predictions": clean_pred,
        "adversarial_predictions": adv_pred,
        "perturbation_norms": norms,
        "success_rate": success as f64 / n as f64,
        "targeted": config.targeted,
        "attack": kind,
        "eps": eps,
        "constraint": config.constraint,
        "steps": config.steps,
        "grid": grid,
    });
    train::checkpoint::write_json_atomic(&args.out.join("attack.json"), &result)?;
    if args.json {
        return print_json(&result);
    }
    outln!(
        "{kind:?} L{} eps {eps}: {success}/{n} attacks succeeded; grid written to {}",
        config.constraint,
        grid.display()
    );
    Ok(())
}
