//! `robustness import | export | export-dataset | predict`: checkpoints and data sets to and from
//! PyTorch.

use crate::cli::{ExportArgs, ExportDatasetArgs, ImportArgs, PredictArgs};
use crate::commands::print_json;
use anyhow::{Context, Result, bail};
use robustness::construct::store;
use robustness::data::{self, DatasetKind, cifar10};
use robustness::interop::{self, ImportFormat, released, torchfile};
use robustness::train::checkpoint::{self, CheckpointMeta};
use robustness::{Arch, ModelSpec, defaults, eval};
use serde_json::json;
use std::path::Path;

/// Input shape and class names of the data sets a checkpoint can be imported for.
fn dataset_layout(kind: DatasetKind) -> Result<([usize; 3], Vec<String>)> {
    let digits = || (0..10).map(|d| d.to_string()).collect();
    Ok(match kind {
        DatasetKind::Cifar10 => (
            [3, 32, 32],
            cifar10::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        ),
        DatasetKind::Mnist => ([1, 28, 28], digits()),
        DatasetKind::Digits => ([1, 8, 8], digits()),
        DatasetKind::Synthetic => {
            bail!("--dataset synthetic: import is for image models (cifar10, mnist, digits)")
        }
        DatasetKind::Folder => bail!("--dataset folder needs the folder: --dataset folder:PATH"),
    })
}

pub fn import(args: ImportArgs, device: &robustness::Device) -> Result<()> {
    let format: ImportFormat = args.from.parse().map_err(anyhow::Error::msg)?;
    let arch: Arch = args.arch.parse()?;
    let folder = args
        .dataset
        .split_once(':')
        .filter(|(prefix, _)| prefix.eq_ignore_ascii_case("folder"))
        .map(|(_, root)| Path::new(root));
    let (kind, ([channels, height, width], mut class_names)) = match folder {
        Some(root) => (
            DatasetKind::Folder,
            data::folder::layout(root, args.image_size)
                .with_context(|| format!("reading the image folder {}", root.display()))?,
        ),
        None => {
            if args.image_size.is_some() {
                bail!("--image-size applies to --dataset folder:PATH only");
            }
            let kind: DatasetKind = args.dataset.parse()?;
            (kind, dataset_layout(kind)?)
        }
    };
    let num_classes = args.num_classes.unwrap_or(class_names.len());
    if num_classes == 0 {
        bail!("--num-classes must be at least 1");
    }
    if num_classes != class_names.len() {
        class_names = (0..num_classes).map(|i| i.to_string()).collect();
    }
    let given = match (&args.mean, &args.std) {
        (Some(m), Some(s)) => Some((m.clone(), s.clone())),
        (None, None) => None,
        _ => bail!("pass both --mean and --std, or neither"),
    };
    if let Some((m, s)) = &given
        && (m.len() != channels || s.len() != channels || s.iter().any(|v| v.is_nan() || *v <= 0.0))
    {
        bail!("--mean and --std need {channels} values each, std positive");
    }
    let stats = given.clone().or_else(|| defaults::normalization(kind));
    let (mean, std) = stats
        .clone()
        .unwrap_or((vec![0.0; channels], vec![1.0; channels]));
    let spec = ModelSpec {
        arch,
        channels,
        height,
        width,
        num_classes,
        mean,
        std,
        images: true,
    };
    let (model, spec, from) = interop::import_checkpoint(&args.file, format, &spec, device)
        .with_context(|| format!("importing {}", args.file.display()))?;
    if !from.normalization_from_file && stats.is_none() {
        bail!(
            "{} carries no normaliser and {kind} has no fixed normalisation: pass --mean and --std",
            args.file.display()
        );
    }
    let meta = CheckpointMeta {
        version: env!("CARGO_PKG_VERSION").to_string(),
        spec: spec.clone(),
        dataset: kind.to_string(),
        class_names,
        epoch: from
            .epoch
            .and_then(|e| usize::try_from(e).ok())
            .unwrap_or(0),
        seed: 0,
        metrics: None,
        imported_from: Some(from.clone()),
        restricted_from: None,
    };
    checkpoint::save(&args.out, &model, &meta, None)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if args.json {
        print_json(&json!({
            "checkpoint": args.out,
            "arch": spec.arch,
            "dataset": kind.to_string(),
            "mean": spec.mean,
            "std": spec.std,
            "imported_from": from,
        }))?;
    } else {
        outln!(
            "imported {} ({} {}, {} classes, normalisation from {}) into {}",
            args.file.display(),
            spec.arch,
            kind,
            spec.num_classes,
            if from.normalization_from_file {
                "the file"
            } else {
                "the data set / flags"
            },
            args.out.display()
        );
    }
    Ok(())
}

pub fn export(args: ExportArgs, device: &robustness::Device) -> Result<()> {
    let report = interop::export_checkpoint(&args.checkpoint, &args.out, device)
        .with_context(|| format!("exporting {}", args.checkpoint.display()))?;
    if args.json {
        print_json(&report)?;
    } else {
        outln!(
            "wrote {} tensors to {} (load with scripts/interop/robustness_models.py)",
            report.tensors.len(),
            args.out.display()
        );
    }
    Ok(())
}

pub fn export_dataset(args: ExportDatasetArgs) -> Result<()> {
    let (meta, data) = store::load(&args.dataset)?;
    released::write(&data, &args.out, args.chunk)
        .with_context(|| format!("writing {}", args.out.display()))?;
    outln!(
        "wrote {} ({} images, {}) to {}/{{{},{}}}",
        meta.config.kind.paper_name(),
        data.len(),
        meta.source.describe(),
        args.out.display(),
        released::IMAGES_FILE,
        released::LABELS_FILE
    );
    Ok(())
}

pub fn predict(args: PredictArgs, device: &robustness::Device) -> Result<()> {
    let (model, meta) = checkpoint::load(&args.checkpoint, device)?;
    let tensors = torchfile::read_tensors(&args.images)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("reading {}", args.images.display()))?;
    let spec = &meta.spec;
    let expected = [spec.channels, spec.height, spec.width];
    let mut images = Vec::new();
    let mut n = 0;
    for (i, t) in tensors.iter().enumerate() {
        if t.shape.len() != 4 || t.shape[1..] != expected {
            bail!(
                "{}: item {i} has shape {:?}, but the model takes [N, {}, {}, {}]",
                args.images.display(),
                t.shape,
                expected[0],
                expected[1],
                expected[2]
            );
        }
        n += t.shape[0];
        images.extend(t.to_f32());
    }
    let [c, h, w] = expected;
    let logits = eval::logits(&model, &images, [n, c, h, w], args.batch_size, device);
    let out = torchfile::TorchTensor::f32(vec![n, spec.num_classes], &logits);
    torchfile::write_tensor_list(&args.out, &[out])
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("writing {}", args.out.display()))?;
    outln!(
        "wrote logits [{n}, {}] to {}",
        spec.num_classes,
        args.out.display()
    );
    Ok(())
}
