//! Interoperability with the Python ecosystem.
//!
//! - [`import_checkpoint`]: a checkpoint of the reference library (MadryLab `robustness`: a
//!   `torch.save`d dict whose `model` entry is the state dict of its `AttackerModel`, keys
//!   `module.model.*`, `module.attacker.model.*`, `module.normalizer.*`) or a plain PyTorch state
//!   dict of one of our architectures, read natively (no Python) into a [`Classifier`].
//! - [`export_checkpoint`]: our weights as SafeTensors under PyTorch module names ([`names`]),
//!   loadable with `scripts/interop/robustness_models.py`.
//! - [`released`]: the authors' released constructed data sets (`CIFAR_ims` / `CIFAR_lab`).

pub mod names;
pub mod released;
pub mod torchfile;

use crate::error::{Error, Result};
use crate::models::{Classifier, ModelSpec};
use crate::train::checkpoint::{self, CheckpointMeta};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use pytorch_reader::PytorchReader;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Largest single tensor or storage read from a file (guards against corrupt sizes).
pub const MAX_TENSOR_BYTES: usize = 16 << 30;

/// Which kind of PyTorch checkpoint to import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    /// A checkpoint of the reference library (`model` entry, `module.model.` keys).
    Madry,
    /// A plain state dict with our documented PyTorch names (optionally under `model.` with
    /// `normalizer.new_mean` / `new_std`, as [`export_checkpoint`] writes, or nested under a
    /// `state_dict` or `model` entry).
    Pytorch,
}

impl std::str::FromStr for ImportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "madry" | "madrylab" | "robustness" => Ok(ImportFormat::Madry),
            "pytorch" | "torch" | "state-dict" => Ok(ImportFormat::Pytorch),
            other => Err(format!(
                "unknown checkpoint format '{other}': expected madry or pytorch"
            )),
        }
    }
}

/// Where an imported checkpoint came from (kept in its metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportedFrom {
    /// The format it was read as.
    pub format: ImportFormat,
    /// The file, as given.
    pub file: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// The epoch the file records (MadryLab's `epoch` entry), if any.
    pub epoch: Option<i64>,
    /// Whether the normalisation came from the file (`normalizer.new_mean` / `new_std`) rather
    /// than from the data set's defaults.
    pub normalization_from_file: bool,
}

/// A tensor of a PyTorch state dict, as f32.
struct Entry {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Reads a PyTorch checkpoint in `format` into a model of `spec` (architecture, input shape and
/// class count; its mean / std are used unless the file carries a normaliser). Every parameter
/// of the architecture must be present with the right shape and every tensor of the file must be
/// used (batch-norm step counters and the reference library's attacker copy aside); otherwise
/// the error lists the first mismatches. Returns the model and where it came from.
pub fn import_checkpoint(
    file: &Path,
    format: ImportFormat,
    spec: &ModelSpec,
    device: &Device,
) -> Result<(Classifier, ModelSpec, ImportedFrom)> {
    let fail = |message: String| Error::Checkpoint {
        path: file.to_path_buf(),
        message,
    };
    let (mut entries, epoch) = read_state_dict(file, format)?;

    // Normalisation stored with the weights wins over the data set's defaults.
    let mut spec = spec.clone();
    let mean = entries.remove("normalizer.new_mean");
    let std = entries.remove("normalizer.new_std");
    let normalization_from_file = match (mean, std) {
        (Some(mean), Some(std)) => {
            if mean.values.len() != spec.channels || std.values.len() != spec.channels {
                return Err(fail(format!(
                    "the file's normaliser has {} channels, the model {}",
                    mean.values.len(),
                    spec.channels
                )));
            }
            if std.values.iter().any(|s| s.is_nan() || *s <= 0.0) {
                return Err(fail("the file's normaliser has a non-positive std".into()));
            }
            spec.mean = mean.values;
            spec.std = std.values;
            true
        }
        _ => false,
    };

    // Our parameters, their PyTorch names and shapes.
    let model = Classifier::new(&spec, device);
    let ours = parameter_layout(&model, file)?;
    let (mut missing, mut wrong_shape) = (Vec::new(), Vec::new());
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut used = std::collections::HashSet::new();
    for (path, shape) in &ours {
        let Some(torch) = names::torch_name(spec.arch, path) else {
            missing.push(format!("{path} (no PyTorch name)"));
            continue;
        };
        let torch_shape: Vec<usize> = if torch.transpose {
            shape.iter().rev().copied().collect()
        } else {
            shape.clone()
        };
        match entries.get(&torch.name) {
            None => missing.push(format!("{} {:?}", torch.name, torch_shape)),
            Some(e) if e.shape != torch_shape => wrong_shape.push(format!(
                "{}: expected shape {:?}, found {:?}",
                torch.name, torch_shape, e.shape
            )),
            Some(e) => {
                used.insert(torch.name.clone());
                let values = if torch.transpose {
                    transpose(&e.values, e.shape[0], e.shape[1])
                } else {
                    e.values.clone()
                };
                tensors.push((path.clone(), shape.clone(), values));
            }
        }
    }
    let mut unused: Vec<String> = entries
        .keys()
        .filter(|k| !used.contains(*k) && !names::ignored_torch_key(k))
        .map(|k| format!("{k} {:?}", entries[k].shape))
        .collect();
    unused.sort();
    if !(missing.is_empty() && wrong_shape.is_empty() && unused.is_empty()) {
        let list = |what: &str, items: &[String]| {
            (!items.is_empty()).then(|| {
                let more = items.len().saturating_sub(5);
                format!(
                    "{} {what}: {}{}",
                    items.len(),
                    items[..items.len().min(5)].join(", "),
                    if more > 0 {
                        format!(", ... ({more} more)")
                    } else {
                        String::new()
                    }
                )
            })
        };
        let parts: Vec<String> = [
            list("missing", &missing),
            list("with another shape", &wrong_shape),
            list("unexpected", &unused),
        ]
        .into_iter()
        .flatten()
        .collect();
        return Err(fail(format!(
            "does not fit a {} model ({}x{}x{} input, {} classes): {}",
            spec.arch,
            spec.channels,
            spec.height,
            spec.width,
            spec.num_classes,
            parts.join("; ")
        )));
    }

    let bytes = safetensors_bytes(&tensors, None).map_err(|e| fail(e.to_string()))?;
    let mut model = model;
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = model
        .load_from(&mut store)
        .map_err(|e| fail(format!("cannot apply the weights: {e}")))?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(fail(format!(
            "cannot apply the weights ({} missing, {} errors)",
            result.missing.len(),
            result.errors.len()
        )));
    }
    let from = ImportedFrom {
        format,
        file: file.display().to_string(),
        sha256: crate::construct::sha256_file(file)?,
        epoch,
        normalization_from_file,
    };
    Ok((model, spec, from))
}

/// The file's tensors under PyTorch names relative to the network (wrapper prefixes removed;
/// the normaliser, when present, as `normalizer.new_mean` / `normalizer.new_std`), and its
/// recorded epoch.
fn read_state_dict(
    file: &Path,
    format: ImportFormat,
) -> Result<(HashMap<String, Entry>, Option<i64>)> {
    let fail = |message: String| Error::Checkpoint {
        path: file.to_path_buf(),
        message,
    };
    if !file.is_file() {
        return Err(fail(
            "not found (expected a .pt file written by torch.save)".into(),
        ));
    }
    let is_safetensors = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (raw, epoch) = if is_safetensors {
        if format == ImportFormat::Madry {
            return Err(fail(
                "a .safetensors file is not a checkpoint of the reference library: use --from pytorch"
                    .into(),
            ));
        }
        (read_safetensors(file)?, None)
    } else {
        read_torch(file, format)?
    };
    let keys: Vec<&String> = raw.iter().map(|(k, _)| k).collect();
    // Which prefix holds the network, and where the normaliser is.
    let (net, norm): (Vec<&str>, Vec<&str>) = match format {
        ImportFormat::Madry => (
            vec!["module.model.", "model."],
            vec!["module.normalizer.", "normalizer."],
        ),
        ImportFormat::Pytorch => (
            vec!["state_dict.model.", "state_dict.", "model.", ""],
            vec!["state_dict.normalizer.", "normalizer."],
        ),
    };
    let net = net
        .into_iter()
        .find(|p| {
            keys.iter()
                .any(|k| k.starts_with(p) && !k.contains("normalizer."))
        })
        .ok_or_else(|| {
            fail(format!(
                "no network weights: expected keys starting with {}",
                match format {
                    ImportFormat::Madry =>
                        "'module.model.' (the reference library's AttackerModel)",
                    ImportFormat::Pytorch => "a module name",
                }
            ))
        })?;
    let mut entries = HashMap::new();
    for (name, mut entry) in raw {
        let key = if let Some(p) = norm.iter().find(|p| name.starts_with(**p)) {
            entry.shape = vec![entry.values.len()];
            format!("normalizer.{}", &name[p.len()..])
        } else if let Some(rest) = name.strip_prefix(net) {
            rest.to_string()
        } else if format == ImportFormat::Madry {
            // The attacker's copy of the model and normaliser (the same tensors), and anything
            // else the reference library keeps beside the network.
            continue;
        } else {
            name
        };
        entries.insert(key, entry);
    }
    Ok((entries, epoch))
}

/// Named tensors of a file, as f32.
type Entries = Vec<(String, Entry)>;

/// Every tensor of a `torch.save` file (under `model` for the reference library's checkpoints)
/// by dotted name, and the recorded epoch.
fn read_torch(file: &Path, format: ImportFormat) -> Result<(Entries, Option<i64>)> {
    let fail = |message: String| Error::Checkpoint {
        path: file.to_path_buf(),
        message,
    };
    let reader = match format {
        ImportFormat::Madry => PytorchReader::with_top_level_key(file, "model"),
        ImportFormat::Pytorch => PytorchReader::new(file),
    }
    .map_err(|e| {
        fail(match format {
            ImportFormat::Madry => format!(
                "not a checkpoint of the reference library (a dict with a 'model' entry): {e}"
            ),
            ImportFormat::Pytorch => format!("not a PyTorch state dict: {e}"),
        })
    })?;
    let epoch = match format {
        ImportFormat::Madry => match PytorchReader::read_pickle_data(file, Some("epoch")) {
            Ok(pytorch_reader::PickleValue::Int(e)) => Some(e),
            _ => None,
        },
        ImportFormat::Pytorch => None,
    };
    let mut out = Vec::new();
    for tensor in reader.tensors().values() {
        let bytes = tensor.read().map_err(|e| fail(e.to_string()))?;
        let values = to_f32(tensor.dtype(), &bytes).ok_or_else(|| {
            fail(format!(
                "{}: unsupported element type {:?}",
                tensor.name,
                tensor.dtype()
            ))
        })?;
        let shape = tensor.shape().to_vec();
        out.push((tensor.name.clone(), Entry { shape, values }));
    }
    Ok((out, epoch))
}

/// Every float tensor of a SafeTensors file by name (integer counters are skipped).
fn read_safetensors(file: &Path) -> Result<Entries> {
    let bytes = std::fs::read(file).map_err(|e| Error::io("reading", file, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        path: file.to_path_buf(),
        message: format!("not a SafeTensors file: {e}"),
    })?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            _ => continue,
        };
        let shape = view.shape().to_vec();
        out.push((name, Entry { shape, values }));
    }
    Ok(out)
}

fn to_f32(dtype: pytorch_reader::DType, b: &[u8]) -> Option<Vec<f32>> {
    use pytorch_reader::DType as D;
    let ne = |n: usize| b.chunks_exact(n);
    Some(match dtype {
        D::F32 => ne(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        D::F64 => ne(8)
            .map(|c| f64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        D::I64 => ne(8)
            .map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        D::I32 => ne(4)
            .map(|c| i32::from_ne_bytes(c.try_into().expect("4 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The PyTorch state-dict layout of a network of `spec` (no wrapper prefix, no normaliser, no
/// batch-norm counters): name -> shape, as `robustness export` writes it under `model.` and as
/// `robustness import` expects it.
pub fn torch_layout(spec: &ModelSpec, device: &Device) -> Result<BTreeMap<String, Vec<usize>>> {
    let model = Classifier::new(spec, device);
    let context = Path::new(spec.arch.name());
    parameter_layout(&model, context)?
        .into_iter()
        .map(|(path, shape)| {
            let torch = names::torch_name(spec.arch, &path).ok_or_else(|| Error::Checkpoint {
                path: context.to_path_buf(),
                message: format!("parameter {path} has no PyTorch name"),
            })?;
            let shape = if torch.transpose {
                shape.into_iter().rev().collect()
            } else {
                shape
            };
            Ok((torch.name, shape))
        })
        .collect()
}

/// Our model's parameters (Burn paths) and shapes, in sorted order.
fn parameter_layout(model: &Classifier, context: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let bytes = model_safetensors(model, context)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        path: context.to_path_buf(),
        message: format!("cannot list the model's parameters: {e}"),
    })?;
    let mut out: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    out.sort();
    Ok(out)
}

fn model_safetensors(model: &Classifier, context: &Path) -> Result<Vec<u8>> {
    let fail = |e: String| Error::Checkpoint {
        path: context.to_path_buf(),
        message: format!("cannot serialise the model: {e}"),
    };
    let mut store = SafetensorsStore::from_bytes(None);
    model
        .clone()
        .save_into(&mut store)
        .map_err(|e| fail(e.to_string()))?;
    store.get_bytes().map_err(|e| fail(e.to_string()))
}

/// SafeTensors bytes of f32 tensors (sorted by name by the format), with `metadata`.
fn safetensors_bytes(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> std::result::Result<Vec<u8>, safetensors::SafeTensorError> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    safetensors::serialize(views, metadata)
}

/// What [`export_checkpoint`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    /// The SafeTensors file.
    pub file: String,
    /// PyTorch name -> shape.
    pub tensors: BTreeMap<String, Vec<usize>>,
}

/// Writes checkpoint `dir`'s weights to `out` as SafeTensors under PyTorch names: `model.<name>`
/// for the network ([`names`]), `model.<bn>.num_batches_tracked` (0), and
/// `normalizer.new_mean` / `normalizer.new_std` (`[C, 1, 1]`), the reference library's
/// `AttackerModel` layout without the attacker. The metadata holds `arch` and `spec` (JSON).
pub fn export_checkpoint(dir: &Path, out: &Path, device: &Device) -> Result<ExportReport> {
    let (model, meta) = checkpoint::load(dir, device)?;
    export_model(&model, &meta, out)
}

/// [`export_checkpoint`] for a model already in memory.
pub fn export_model(model: &Classifier, meta: &CheckpointMeta, out: &Path) -> Result<ExportReport> {
    if model.is_folded() {
        return Err(Error::Checkpoint {
            path: out.to_path_buf(),
            message: "the model's batch norms are folded into its convolutions (an inference \
                      copy); export the model it was made from"
                .into(),
        });
    }
    let bytes = model_safetensors(model, out)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        path: out.to_path_buf(),
        message: format!("cannot read back the model's weights: {e}"),
    })?;
    let spec = &meta.spec;
    let mut tensors = Vec::new();
    let mut bn_counters = std::collections::BTreeSet::new();
    for (path, view) in st.tensors() {
        let torch = names::torch_name(spec.arch, &path).ok_or_else(|| Error::Checkpoint {
            path: out.to_path_buf(),
            message: format!("parameter {path} has no PyTorch name"),
        })?;
        let shape = view.shape().to_vec();
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (shape, values) = if torch.transpose {
            (
                vec![shape[1], shape[0]],
                transpose(&values, shape[0], shape[1]),
            )
        } else {
            (shape, values)
        };
        if let Some(module) = torch.name.strip_suffix(".running_mean") {
            bn_counters.insert(module.to_string());
        }
        tensors.push((format!("model.{}", torch.name), shape, values));
    }
    let c = spec.channels;
    tensors.push((
        "normalizer.new_mean".into(),
        vec![c, 1, 1],
        spec.mean.clone(),
    ));
    tensors.push(("normalizer.new_std".into(), vec![c, 1, 1], spec.std.clone()));
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert("arch".to_string(), spec.arch.name().to_string());
    metadata.insert(
        "spec".to_string(),
        serde_json::to_string(spec).map_err(|e| Error::Config(e.to_string()))?,
    );
    metadata.insert(
        "class_names".to_string(),
        serde_json::to_string(&meta.class_names).map_err(|e| Error::Config(e.to_string()))?,
    );
    let mut report = ExportReport {
        file: out.display().to_string(),
        tensors: tensors
            .iter()
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect(),
    };
    // num_batches_tracked is int64 in PyTorch: these views are built by hand.
    let zero = 0i64.to_le_bytes();
    let mut all: Vec<(String, TensorView<'_>)> = Vec::new();
    let float_data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let bad = |e: safetensors::SafeTensorError| Error::Checkpoint {
        path: out.to_path_buf(),
        message: format!("cannot serialise: {e}"),
    };
    for ((name, shape, _), data) in tensors.iter().zip(&float_data) {
        all.push((
            name.clone(),
            TensorView::new(Dtype::F32, shape.clone(), data).map_err(bad)?,
        ));
    }
    for module in &bn_counters {
        let name = format!("model.{module}.num_batches_tracked");
        report.tensors.insert(name.clone(), vec![]);
        all.push((
            name,
            TensorView::new(Dtype::I64, vec![], &zero).map_err(bad)?,
        ));
    }
    let bytes = safetensors::serialize(all, Some(metadata)).map_err(bad)?;
    // Sorted header keys, so the same weights always give the same bytes.
    let bytes = checkpoint::canonical_safetensors(bytes, out)?;
    checkpoint::write_atomic(out, &bytes)?;
    Ok(report)
}

#[cfg(test)]
mod tests;
