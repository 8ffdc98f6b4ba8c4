//! `robustness visualize`: feature visualisation, maximising units of the representation from
//! chosen test images (the first N, or `--indices`) or grey noise. Writes `grid.png` (the starts, then one row per
//! unit), `images.safetensors` and `visualize.json`.

use crate::cli::VisualizeArgs;
use crate::commands::attack::parse_indices;
use crate::commands::synthesize::{Input, tiles, write_images, zoom};
use crate::commands::{override_steps, print_json, start_of};
use anyhow::{Context, Result, bail};
use robustness::construct::Start;
use robustness::defaults;
use robustness::report::{self, Tile};
use robustness::synthesis::{self, Generated};
use robustness::train::checkpoint;
use serde_json::json;
use std::time::Instant;

pub fn run(args: VisualizeArgs, device: &robustness::Device) -> Result<()> {
    let started = Instant::now();
    let input = Input::load(&args.checkpoint, &args.data, device)?;
    let test = &input.split.test;
    let indices = match &args.indices {
        Some(spec) => parse_indices(spec, test.len())?,
        None if args.n == 0 => bail!("--n must be at least 1"),
        None => (0..args.n).collect(),
    };
    let shape = [test.channels, test.height, test.width];
    for &k in &args.feature {
        synthesis::check_feature(&input.model, shape, k, device)?;
    }
    let mut config = defaults::feature_visualization(input.dataset);
    override_steps(&mut config.attack, args.eps, args.step, args.steps);
    config.start = start_of(args.start);
    config.batch_size = args.batch;
    config.seed = args.seed;

    let n = indices.len();
    let mut all = Generated::default();
    for &k in &args.feature {
        let generated =
            synthesis::visualize_feature(&input.model, test, k, &indices, &config, device)
                .with_context(|| format!("visualising unit {k}"))?;
        all.append(generated);
    }
    let images = write_images(&args.out, &all)?;
    let per: usize = shape.iter().product();
    let [c, h, w] = shape;
    let start_label = match config.start {
        Start::Image => "test images",
        Start::Noise => "noise",
    };
    let mut rows: Vec<(String, Vec<Tile<'_>>)> = vec![(
        format!("start: {start_label} (label)"),
        tiles(&all.start, per, 0..n, |i| match config.start {
            Start::Image => input.class_name(test.labels[indices[i]]),
            Start::Noise => String::new(),
        }),
    )];
    for (r, &k) in args.feature.iter().enumerate() {
        rows.push((
            format!("unit {k} maximised (activation)"),
            tiles(&all.images, per, r * n..(r + 1) * n, |i| {
                format!("{:.1}", all.score[i])
            }),
        ));
    }
    let grid = args.out.join("grid.png");
    report::image_grid(&grid, &rows, c, h, w, zoom(args.zoom, shape))?;

    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    let units: Vec<_> = args
        .feature
        .iter()
        .enumerate()
        .map(|(r, &k)| {
            let range = r * n..(r + 1) * n;
            json!({
                "feature": k,
                "mean_start_activation": mean(&all.start_score[range.clone()]),
                "mean_activation": mean(&all.score[range.clone()]),
                "start_activation": &all.start_score[range.clone()],
                "activation": &all.score[range.clone()],
                "predicted": range.clone().map(|i| input.class_name(all.predicted[i])).collect::<Vec<_>>(),
                "confidence": &all.confidence[range],
            })
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let result = json!({
        "command": "visualize",
        "checkpoint": input.describe(&args.checkpoint),
        "features": args.feature,
        "indices": indices,
        "seed": config.seed,
        "config": config,
        "units": units,
        "seconds": seconds,
        "grid": grid,
        "images": images,
    });
    checkpoint::write_json_atomic(&args.out.join("visualize.json"), &result)?;
    if args.json {
        return print_json(&result);
    }
    for (r, &k) in args.feature.iter().enumerate() {
        let range = r * n..(r + 1) * n;
        outln!(
            "unit {k}: mean activation {:.3} -> {:.3}",
            mean(&all.start_score[range.clone()]),
            mean(&all.score[range])
        );
    }
    outln!("{seconds:.1}s; grid written to {}", grid.display());
    Ok(())
}
