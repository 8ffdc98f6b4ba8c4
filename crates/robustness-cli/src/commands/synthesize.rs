//! `robustness synthesize`: class-conditional generation with one classifier (Santurkar et al.
//! 2019). Writes `grid.png` (one row per class), `seeds.png` (the seed-distribution draws),
//! `images.safetensors` and `synthesis.json`. Also holds the loading and drawing steps that
//! `visualize` and `invert` share.

use crate::cli::{DataArgs, SynthesizeArgs};
use crate::commands::{load_data, override_steps, print_json};
use crate::progress::Examples;
use anyhow::{Context, Result, bail};
use robustness::construct;
use robustness::data::{DatasetKind, Split};
use robustness::report::{self, Tile};
use robustness::synthesis::{self, Generated};
use robustness::train::checkpoint::{self, CheckpointMeta};
use robustness::{Classifier, defaults};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A checkpoint with the data set it was trained on (its own split seed).
pub(super) struct Input {
    pub model: Classifier,
    pub saved: CheckpointMeta,
    pub split: Split,
    pub dataset: DatasetKind,
    /// SHA-256 of the checkpoint's weights file.
    pub sha256: String,
}

impl Input {
    /// Loads the checkpoint and its data set; the data split uses the checkpoint's seed.
    pub fn load(path: &Path, data: &DataArgs, device: &robustness::Device) -> Result<Self> {
        let dir = checkpoint::resolve(path)?;
        let saved = checkpoint::read_meta(&dir)?;
        let loaded = load_data(data, saved.seed)?;
        let (dataset, split) = (loaded.kind, loaded.split);
        let (model, saved) = checkpoint::load_for_data(path, &split.test, device)?;
        let sha256 = construct::sha256_file(&dir.join(checkpoint::WEIGHTS_FILE))?;
        Ok(Self {
            model,
            saved,
            split,
            dataset,
            sha256,
        })
    }

    /// The name of class `k` (its index when the checkpoint has no name for it).
    pub fn class_name(&self, k: usize) -> String {
        self.saved
            .class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    }

    /// What every output JSON records about the model.
    pub fn describe(&self, path: &Path) -> serde_json::Value {
        json!({
            "path": path,
            "sha256": self.sha256,
            "arch": self.saved.spec.arch,
            "epoch": self.saved.epoch,
            "dataset": self.dataset,
            "class_names": self.saved.class_names,
            "adversarially_trained": checkpoint::resolve(path)
                .ok()
                .and_then(|d| super::construct::adversarially_trained(&d)),
        })
    }
}

/// Pixel zoom of a grid: the flag, or about 128 pixels per image side.
pub(super) fn zoom(flag: Option<usize>, shape: [usize; 3]) -> usize {
    flag.unwrap_or((128 / shape[1].max(shape[2]).max(1)).clamp(2, 16))
        .max(1)
}

/// Tiles of images `range` of `pixels` (images of `per` values) with their captions.
pub(super) fn tiles<'a>(
    pixels: &'a [f32],
    per: usize,
    range: std::ops::Range<usize>,
    caption: impl Fn(usize) -> String,
) -> Vec<Tile<'a>> {
    range
        .map(|i| Tile {
            pixels: &pixels[i * per..(i + 1) * per],
            caption: caption(i),
        })
        .collect()
}

/// Creates the output folder and writes `images.safetensors`.
pub(super) fn write_images(out: &Path, generated: &Generated) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("images.safetensors");
    generated.write_safetensors(&path)?;
    Ok(path)
}

pub fn run(args: SynthesizeArgs, device: &robustness::Device) -> Result<()> {
    let started = Instant::now();
    let input = Input::load(&args.checkpoint, &args.data, device)?;
    let classes = synthesis::parse_class_spec(&args.class, &input.saved.class_names)
        .with_context(|| format!("--class '{}'", args.class))?;
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    let train = &input.split.train;
    let mut config =
        defaults::synthesis(input.dataset, [train.channels, train.height, train.width]);
    override_steps(&mut config.attack, args.eps, args.step, args.steps);
    if let Some(grain) = args.grain {
        config.grain = grain;
    }
    config.batch_size = args.batch;
    config.seed = args.seed;
    config.validate()?;

    let n = args.n;
    let mut all = Generated::default();
    let mut progress = Examples::new("synthesis");
    progress.update(0, n * classes.len());
    for &class in &classes {
        let generated =
            synthesis::synthesize(&input.model, &input.split.train, class, n, &config, device)
                .with_context(|| format!("generating class '{}'", input.class_name(class)))?;
        all.append(generated);
        progress.update(all.len(), n * classes.len());
    }
    drop(progress);

    let images = write_images(&args.out, &all)?;
    let shape = all.shape;
    let per: usize = shape.iter().product();
    let [c, h, w] = shape;
    let caption = |i: usize| {
        let p = all.predicted[i];
        if p == all.target[i] {
            format!("{:.2}", all.score[i])
        } else {
            format!("{:.2} ({})", all.score[i], input.class_name(p))
        }
    };
    let rows: Vec<(String, Vec<Tile<'_>>)> = classes
        .iter()
        .enumerate()
        .map(|(r, &class)| {
            (
                format!("{}: p({0})", input.class_name(class)),
                tiles(&all.images, per, r * n..(r + 1) * n, caption),
            )
        })
        .collect();
    let zoom = zoom(args.zoom, shape);
    let grid = args.out.join("grid.png");
    report::image_grid(&grid, &rows, c, h, w, zoom)?;
    let seed_rows: Vec<(String, Vec<Tile<'_>>)> = classes
        .iter()
        .enumerate()
        .map(|(r, &class)| {
            (
                format!("{} seeds: p({0})", input.class_name(class)),
                tiles(&all.start, per, r * n..(r + 1) * n, |i| {
                    format!("{:.2}", all.start_score[i])
                }),
            )
        })
        .collect();
    let seeds = args.out.join("seeds.png");
    report::image_grid(&seeds, &seed_rows, c, h, w, zoom)?;

    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len().max(1) as f64;
    let hits = (0..all.len())
        .filter(|&i| all.predicted[i] == all.target[i])
        .count();
    let seconds = started.elapsed().as_secs_f64();
    let per_image: Vec<_> = (0..all.len())
        .map(|i| {
            json!({
                "class": all.target[i],
                "class_name": input.class_name(all.target[i]),
                "predicted": all.predicted[i],
                "predicted_name": input.class_name(all.predicted[i]),
                "confidence": all.confidence[i],
                "class_probability": all.score[i],
                "seed_class_probability": all.start_score[i],
            })
        })
        .collect();
    let result = json!({
        "command": "synthesize",
        "checkpoint": input.describe(&args.checkpoint),
        "classes": classes.iter().map(|&k| input.class_name(k)).collect::<Vec<_>>(),
        "n": n,
        "seed": config.seed,
        "seed_pool": "train",
        "config": config,
        "mean_class_probability": mean(&all.score),
        "mean_seed_class_probability": mean(&all.start_score),
        "classified_as_class": hits as f64 / all.len().max(1) as f64,
        "seconds": seconds,
        "grid": grid,
        "seeds": seeds,
        "images": images,
        "per_image": per_image,
    });
    checkpoint::write_json_atomic(&args.out.join("synthesis.json"), &result)?;
    if args.json {
        return print_json(&result);
    }
    outln!(
        "{} images of {} class(es) in {seconds:.1}s: mean class probability {:.3} (seeds {:.3}), {hits}/{} classified as their class; grid written to {}",
        all.len(),
        classes.len(),
        mean(&all.score),
        mean(&all.start_score),
        all.len(),
        grid.display()
    );
    Ok(())
}
