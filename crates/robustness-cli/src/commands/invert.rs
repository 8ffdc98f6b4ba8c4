//! `robustness invert`: representation inversion of chosen images of the checkpoint's data set
//! (`--from test|train --indices ...`), from grey noise or another image, with the D_R
//! construction's loop and settings. Writes `grid.png` (targets, starts, inversions),
//! `images.safetensors` and `invert.json`.

use crate::cli::{InvertArgs, SplitArg};
use crate::commands::attack::parse_indices;
use crate::commands::synthesize::{Input, tiles, write_images, zoom};
use crate::commands::{override_steps, print_json, start_of};
use anyhow::{Context, Result};
use robustness::construct::Start;
use robustness::defaults;
use robustness::report::{self, Tile};
use robustness::synthesis;
use robustness::train::checkpoint;
use serde_json::json;
use std::time::Instant;

pub fn run(args: InvertArgs, device: &robustness::Device) -> Result<()> {
    let started = Instant::now();
    let input = Input::load(&args.checkpoint, &args.data, device)?;
    let (pool, split_name) = match args.from {
        SplitArg::Test => (&input.split.test, "test"),
        SplitArg::Train => (&input.split.train, "train"),
    };
    let indices = parse_indices(&args.indices, pool.len())?;
    let mut config = defaults::inversion(input.dataset);
    override_steps(&mut config.attack, None, args.step, args.steps);
    config.start = start_of(args.start);
    config.normalized_loss = args.normalized_loss;
    config.batch_size = args.batch;
    config.seed = args.seed;
    let all = synthesis::invert(&input.model, pool, &indices, &config, device)
        .context("inverting the representations")?;
    let images = write_images(&args.out, &all)?;

    let shape = all.shape;
    let per: usize = shape.iter().product();
    let [c, h, w] = shape;
    let n = indices.len();
    let sources: Vec<f32> = indices
        .iter()
        .flat_map(|&i| pool.image(i).iter().copied())
        .collect();
    let start_label = match config.start {
        Start::Image => "another image",
        Start::Noise => "noise",
    };
    let rows: Vec<(String, Vec<Tile<'_>>)> = vec![
        (
            format!("{split_name} images (label)"),
            tiles(&sources, per, 0..n, |i| {
                input.class_name(pool.labels[indices[i]])
            }),
        ),
        (
            format!("start: {start_label} (distance)"),
            tiles(&all.start, per, 0..n, |i| {
                format!("{:.2}", all.start_score[i])
            }),
        ),
        (
            "inverted (distance, prediction)".to_string(),
            tiles(&all.images, per, 0..n, |i| {
                format!("{:.2} {}", all.score[i], input.class_name(all.predicted[i]))
            }),
        ),
    ];
    let grid = args.out.join("grid.png");
    report::image_grid(&grid, &rows, c, h, w, zoom(args.zoom, shape))?;

    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    let kept = (0..n)
        .filter(|&i| all.predicted[i] == pool.labels[indices[i]])
        .count();
    let l2: Vec<f32> = (0..n)
        .map(|i| {
            all.images[i * per..(i + 1) * per]
                .iter()
                .zip(&sources[i * per..(i + 1) * per])
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let result = json!({
        "command": "invert",
        "checkpoint": input.describe(&args.checkpoint),
        "from": split_name,
        "indices": indices,
        "labels": indices.iter().map(|&i| pool.labels[i]).collect::<Vec<_>>(),
        "seed": config.seed,
        "config": config,
        "start_distance": all.start_score,
        "distance": all.score,
        "mean_start_distance": mean(&all.start_score),
        "mean_distance": mean(&all.score),
        "pixel_l2_to_source": l2,
        "predicted": all.predicted,
        "confidence": all.confidence,
        "label_kept": kept as f64 / n as f64,
        "seconds": seconds,
        "grid": grid,
        "images": images,
    });
    checkpoint::write_json_atomic(&args.out.join("invert.json"), &result)?;
    if args.json {
        return print_json(&result);
    }
    outln!(
        "{n} images inverted in {seconds:.1}s: representation distance {:.3} -> {:.3}; {kept}/{n} classified as their source; grid written to {}",
        mean(&all.start_score),
        mean(&all.score),
        grid.display()
    );
    Ok(())
}
