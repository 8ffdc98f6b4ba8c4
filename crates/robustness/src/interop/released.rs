//! The authors' released constructed data sets (MadryLab/constructed-datasets: `d_robust_CIFAR`,
//! `d_non_robust_CIFAR`, `drand_CIFAR`, `ddet_CIFAR`): a folder with `CIFAR_ims` (float images
//! `[N, 3, 32, 32]` in [0, 1]) and `CIFAR_lab` (int64 labels `[N]`), each a `torch.save`d list of
//! tensors that their README loads with `ch.cat(ch.load(path))`. We read that layout (both
//! PyTorch containers, any split into list items) and write it (one list item per chunk).

use super::torchfile::{self, TorchTensor};
use crate::construct::ConstructKind;
use crate::data::Dataset;
use crate::error::{Error, Result};
use std::path::Path;

/// The images file of the released layout.
pub const IMAGES_FILE: &str = "CIFAR_ims";
/// The labels file of the released layout.
pub const LABELS_FILE: &str = "CIFAR_lab";

/// True when `dir` holds the released layout (both files).
pub fn is_released(dir: &Path) -> bool {
    dir.join(IMAGES_FILE).is_file() && dir.join(LABELS_FILE).is_file()
}

/// The construction a released folder holds, from its name as released (`d_robust_CIFAR` ->
/// D_R, `d_non_robust_CIFAR` -> D_NR, `drand_CIFAR` -> D_rand, `ddet_CIFAR` -> D_det); `None`
/// when the name says nothing.
pub fn kind_from_name(dir: &Path) -> Option<ConstructKind> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| {
            d.file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
        })
        .or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
        })?
        .replace('-', "_");
    if name.contains("non_robust") || name.contains("nonrobust") {
        Some(ConstructKind::NonRobust)
    } else if name.contains("robust") {
        Some(ConstructKind::Robust)
    } else if name.contains("drand") || name.contains("d_rand") {
        Some(ConstructKind::Rand)
    } else if name.contains("ddet") || name.contains("d_det") {
        Some(ConstructKind::Det)
    } else {
        None
    }
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Constructed {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a released folder as a data set with `class_names` (labels must index them).
pub fn load(dir: &Path, class_names: &[String]) -> Result<Dataset> {
    let read = |name: &str| {
        let path = dir.join(name);
        torchfile::read_tensors(&path).map_err(|e| err(&path, e.to_string()))
    };
    let images_path = dir.join(IMAGES_FILE);
    let labels_path = dir.join(LABELS_FILE);
    let ims = read(IMAGES_FILE)?;
    let labs = read(LABELS_FILE)?;
    let mut shape: Option<[usize; 3]> = None;
    let mut images = Vec::new();
    for (i, t) in ims.iter().enumerate() {
        let [_, c, h, w] = t.shape[..] else {
            return Err(err(
                &images_path,
                format!("item {i} has shape {:?}, expected [N, C, H, W]", t.shape),
            ));
        };
        if *shape.get_or_insert([c, h, w]) != [c, h, w] {
            return Err(err(
                &images_path,
                format!("item {i} has images {c}x{h}x{w}, earlier items {shape:?}"),
            ));
        }
        let values = t.to_f32();
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(err(
                &images_path,
                format!("item {i}: non-finite value at {bad}"),
            ));
        }
        images.extend(values);
    }
    let [channels, height, width] = shape.ok_or_else(|| err(&images_path, "holds no images"))?;
    let mut labels = Vec::new();
    for (i, t) in labs.iter().enumerate() {
        if t.shape.len() != 1 {
            return Err(err(
                &labels_path,
                format!("item {i} has shape {:?}, expected [N]", t.shape),
            ));
        }
        for v in t.to_i64() {
            let label = usize::try_from(v)
                .ok()
                .filter(|&l| l < class_names.len())
                .ok_or_else(|| {
                    err(
                        &labels_path,
                        format!("label {v} outside 0..{}", class_names.len()),
                    )
                })?;
            labels.push(label);
        }
    }
    let n = images.len() / (channels * height * width);
    if labels.len() != n {
        return Err(err(
            dir,
            format!(
                "{n} images in {IMAGES_FILE} but {} labels in {LABELS_FILE}",
                labels.len()
            ),
        ));
    }
    Ok(Dataset {
        name: format!("released {}", dir.display()),
        images,
        labels,
        channels,
        height,
        width,
        class_names: class_names.to_vec(),
    })
}

/// Writes `data` to the folder `out` in the released layout, `chunk` images per list item.
/// The folder is written under a temporary name and renamed, so it is complete or absent.
pub fn write(data: &Dataset, out: &Path, chunk: usize) -> Result<()> {
    let chunk = chunk.max(1);
    let staging = {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        out.with_file_name(name)
    };
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;
    let len = data.image_len();
    let mut ims = Vec::new();
    let mut labs = Vec::new();
    for start in (0..data.len()).step_by(chunk) {
        let end = (start + chunk).min(data.len());
        ims.push(TorchTensor::f32(
            vec![end - start, data.channels, data.height, data.width],
            &data.images[start * len..end * len],
        ));
        let labels: Vec<i64> = data.labels[start..end].iter().map(|&l| l as i64).collect();
        labs.push(TorchTensor::i64(vec![end - start], &labels));
    }
    for (name, tensors) in [(IMAGES_FILE, &ims), (LABELS_FILE, &labs)] {
        let path = staging.join(name);
        torchfile::write_tensor_list(&path, tensors).map_err(|e| err(&path, e.to_string()))?;
    }
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&staging, out).map_err(|e| Error::io("renaming into", out, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let n = 5;
        Dataset {
            name: "tiny".into(),
            images: (0..n * 12).map(|i| i as f32 / 60.0).collect(),
            labels: vec![0, 1, 2, 1, 0],
            channels: 3,
            height: 2,
            width: 2,
            class_names: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    #[test]
    fn the_layout_round_trips() {
        let dir = std::env::temp_dir().join(format!("robustness-released-{}", std::process::id()));
        let out = dir.join("drand_CIFAR");
        let data = tiny();
        write(&data, &out, 2).expect("write");
        assert!(is_released(&out));
        assert_eq!(kind_from_name(&out), Some(ConstructKind::Rand));
        let back = load(&out, &data.class_names).expect("load");
        assert_eq!(back.images, data.images);
        assert_eq!(back.labels, data.labels);
        assert_eq!([back.channels, back.height, back.width], [3, 2, 2]);
        // Labels beyond the class list are refused with the label named.
        let e = load(&out, &data.class_names[..2]).expect_err("label 2 of 2 classes");
        assert!(e.to_string().contains("label 2"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn released_names_tell_the_construction() {
        for (name, kind) in [
            ("d_robust_CIFAR", ConstructKind::Robust),
            ("d_non_robust_CIFAR", ConstructKind::NonRobust),
            ("ddet_CIFAR", ConstructKind::Det),
            ("drand_CIFAR", ConstructKind::Rand),
        ] {
            assert_eq!(kind_from_name(Path::new(name)), Some(kind), "{name}");
        }
        assert_eq!(kind_from_name(Path::new("my_data")), None);
    }
}
