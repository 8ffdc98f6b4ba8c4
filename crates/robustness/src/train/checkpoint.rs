//! Checkpoints that survive a crash.
//!
//! A run directory holds `checkpoints/epoch-NNNN/` folders, each complete before it is used:
//! `model.safetensors` (the weights, readable by any SafeTensors tool), `meta.json` (architecture,
//! data set, classes, normalisation, epoch, seed, metrics, version) and, for resuming,
//! `state.bpk` + `optimizer.bpk` (Burn's own format, which keeps the parameter ids the
//! optimizer state is keyed by). `latest` and `best` are symbolic links to such folders,
//! replaced atomically (a new link renamed over the old one), so `kill -9` at any moment leaves
//! either the old or the new checkpoint, never half of one.

use crate::error::{Error, Result};
use crate::models::{Classifier, ModelSpec};
use crate::train::metrics::EpochMetrics;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::store::{ModuleRecord, ModuleSnapshot, SafetensorsStore};
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// File names inside a checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Metadata file name.
pub const META_FILE: &str = "meta.json";
const STATE_FILE: &str = "state.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// Everything about a checkpoint except its tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Version of the `robustness` crate that wrote it.
    pub version: String,
    /// Architecture, input shape, classes and normalisation.
    pub spec: ModelSpec,
    /// Data set name.
    pub dataset: String,
    /// Names of the model's output classes, in order.
    pub class_names: Vec<String>,
    /// Completed epochs.
    pub epoch: usize,
    /// The run's seed.
    pub seed: u64,
    /// Metrics of the epoch that produced the checkpoint.
    pub metrics: Option<EpochMetrics>,
    /// The PyTorch file it was converted from (`robustness import`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<crate::interop::ImportedFrom>,
    /// Set when the model was restricted to some of its classes, or its classes reordered, on
    /// loading (see [`load_for_data`]): the class names it was trained with, in its order.
    /// Never written to checkpoints.
    #[serde(skip)]
    pub restricted_from: Option<Vec<String>>,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("writing", path, e)
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes a JSON file atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("cannot serialise {}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// Saves a checkpoint folder `dir` (created; must not exist yet) with weights and metadata, and,
/// when `optimizer` is given, the state needed to resume training.
pub fn save(
    dir: &Path,
    model: &Classifier,
    meta: &CheckpointMeta,
    optimizer: Option<&ModuleOptimizer>,
) -> Result<()> {
    save_with(dir, model, optimizer.map(|o| (model, o)), meta)
}

/// Saves a training run's checkpoint: `weights` as the checkpoint's model (what loading it
/// gives: the weights' moving average with `--ema`, else the trained weights) and `state` (the
/// optimizer's weights, with their parameter ids) with `optimizer` for resuming.
pub fn save_run(
    dir: &Path,
    weights: &Classifier,
    state: &Classifier,
    meta: &CheckpointMeta,
    optimizer: &ModuleOptimizer,
) -> Result<()> {
    save_with(dir, weights, Some((state, optimizer)), meta)
}

fn save_with(
    dir: &Path,
    model: &Classifier,
    training: Option<(&Classifier, &ModuleOptimizer)>,
    meta: &CheckpointMeta,
) -> Result<()> {
    if model.is_folded() {
        return Err(checkpoint_error(
            dir,
            "the model's batch norms are folded into its convolutions (an inference copy); \
             save the model it was made from",
        ));
    }
    let staging = tmp_path(dir);
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;

    let mut store = SafetensorsStore::from_bytes(None)
        .metadata("arch", meta.spec.arch.name())
        .metadata("dataset", meta.dataset.as_str());
    model
        .save_into(&mut store)
        .map_err(|e| checkpoint_error(dir, format!("cannot serialise weights: {e}")))?;
    let weights = store
        .get_bytes()
        .map_err(|e| checkpoint_error(dir, format!("cannot serialise weights: {e}")))?;
    write_atomic(
        &staging.join(WEIGHTS_FILE),
        &canonical_safetensors(weights, dir)?,
    )?;

    if let Some((state_model, optimizer)) = training {
        let state = state_model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| checkpoint_error(dir, format!("cannot serialise model state: {e}")))?;
        write_atomic(&staging.join(STATE_FILE), &state)?;
        let optim = optimizer
            .into_bytes()
            .map_err(|e| checkpoint_error(dir, format!("cannot serialise optimizer: {e}")))?;
        write_atomic(&staging.join(OPTIMIZER_FILE), &optim)?;
    }
    write_json_atomic(&staging.join(META_FILE), meta)?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&staging, dir).map_err(|e| Error::io("renaming into", dir, e))
}

/// Rewrites a SafeTensors header with sorted keys (Burn writes its metadata map in hash order),
/// so the same weights always give the same bytes. The header is padded with spaces to a
/// multiple of 8 bytes, as the format allows.
pub(crate) fn canonical_safetensors(bytes: Vec<u8>, dir: &Path) -> Result<Vec<u8>> {
    let bad = |m: &str| checkpoint_error(dir, format!("malformed SafeTensors output: {m}"));
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("shorter than its header"))?;
    let len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| bad("header length"))?;
    let header = bytes
        .get(8..8 + len)
        .ok_or_else(|| bad("truncated header"))?;
    // serde_json's default map is a BTreeMap: serialising sorts every object's keys.
    let value: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let mut text = serde_json::to_vec(&value).map_err(|e| bad(&e.to_string()))?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// Points the symbolic link `link` at `target` (a path relative to the link's folder), atomically.
pub fn point_link(link: &Path, target: &Path) -> Result<()> {
    let tmp = tmp_path(link);
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io("linking", &tmp, e))?;
    #[cfg(not(unix))]
    {
        let dir = link.parent().unwrap_or(Path::new(".")).join(target);
        copy_dir(&dir, &tmp)?;
        let _ = fs::remove_dir_all(link);
    }
    fs::rename(&tmp, link).map_err(|e| Error::io("renaming into", link, e))
}

#[cfg(not(unix))]
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| Error::io("creating", to, e))?;
    for entry in fs::read_dir(from).map_err(|e| Error::io("reading", from, e))? {
        let entry = entry.map_err(|e| Error::io("reading", from, e))?;
        fs::copy(entry.path(), to.join(entry.file_name()))
            .map_err(|e| Error::io("copying", entry.path(), e))?;
    }
    Ok(())
}

fn checkpoint_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Finds the checkpoint folder for a user-given path: the folder itself (or a `latest`/`best`
/// link), its `meta.json`, or its `model.safetensors`.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        return Err(checkpoint_error(
            path,
            "not found: expected a checkpoint folder such as RUN_DIR/best or RUN_DIR/latest",
        ));
    };
    if !dir.join(META_FILE).is_file() {
        return Err(checkpoint_error(
            &dir,
            format!("no {META_FILE} here: expected a folder written by `robustness train`"),
        ));
    }
    Ok(dir)
}

/// Reads a checkpoint's metadata.
pub fn read_meta(dir: &Path) -> Result<CheckpointMeta> {
    let path = dir.join(META_FILE);
    let text = fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| checkpoint_error(&path, format!("malformed metadata: {e}")))
}

/// Loads a checkpoint's model on `device` (a user path, see [`resolve`]).
pub fn load(path: &Path, device: &Device) -> Result<(Classifier, CheckpointMeta)> {
    let dir = resolve(path)?;
    let meta = read_meta(&dir)?;
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = fs::read(&weights).map_err(|e| Error::io("reading", &weights, e))?;
    let mut model = Classifier::new(&meta.spec, device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result = model
        .load_from(&mut store)
        .map_err(|e| checkpoint_error(&weights, format!("unreadable weights: {e}")))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(checkpoint_error(
            &weights,
            format!(
                "weights do not fit a {} model ({} missing, {} unexpected, {} errors{})",
                meta.spec.arch,
                result.missing.len(),
                result.unused.len(),
                result.errors.len(),
                result
                    .errors
                    .first()
                    .map(|e| format!(": {e:?}"))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok((model, meta))
}

/// Loads a checkpoint and checks it holds the expected architecture and input shape.
pub fn load_expecting(
    path: &Path,
    expected: &ModelSpec,
    device: &Device,
) -> Result<(Classifier, CheckpointMeta)> {
    let dir = resolve(path)?;
    let meta = read_meta(&dir)?;
    let describe = |s: &ModelSpec| {
        format!(
            "{} ({}x{}x{} input, {} classes)",
            s.arch, s.channels, s.height, s.width, s.num_classes
        )
    };
    if meta.spec.arch != expected.arch
        || meta.spec.channels != expected.channels
        || meta.spec.height != expected.height
        || meta.spec.width != expected.width
        || meta.spec.num_classes != expected.num_classes
    {
        return Err(Error::ArchMismatch {
            path: dir,
            expected: describe(expected),
            found: describe(&meta.spec),
        });
    }
    load(&dir, device)
}

/// Loads a checkpoint to run on `data`: its input shape and class count must match the
/// checkpoint's (an error names both otherwise). A model of more classes serves a data set
/// whose classes are some of its own (by name: a 10-class CIFAR-10 model on `--classes
/// cat,dog`): it is restricted to their logits, in the data set's order
/// ([`Classifier::restrict_classes`]), and the returned metadata describes the restricted
/// model, with the original classes in `restricted_from`. A model of the same classes in
/// another order is reordered the same way; one of other classes (by name) is an error.
pub fn load_for_data(
    path: &Path,
    data: &crate::data::Dataset,
    device: &Device,
) -> Result<(Classifier, CheckpointMeta)> {
    let dir = resolve(path)?;
    let saved = read_meta(&dir)?;
    let wanted = data.num_classes();
    let mut keep = (saved.spec.num_classes > wanted)
        .then(|| subset_indices(&saved.class_names, &data.class_names))
        .flatten();
    // The same number of classes under other names: the same classes in another order
    // (`--classes dog,cat` for a cat,dog model) are reordered; other classes are an error
    // rather than a silent relabelling. Imported checkpoints keep positional classes (their
    // names are placeholders when the file had no class list).
    if saved.spec.num_classes == wanted
        && saved.class_names != data.class_names
        && saved.imported_from.is_none()
        && saved.class_names.len() == wanted
    {
        match subset_indices(&saved.class_names, &data.class_names) {
            Some(order) => keep = Some(order),
            None => {
                return Err(checkpoint_error(
                    &dir,
                    format!(
                        "the model's classes [{}] are not the data's [{}]",
                        saved.class_names.join(", "),
                        data.class_names.join(", ")
                    ),
                ));
            }
        }
    }
    let expected = ModelSpec {
        channels: data.channels,
        height: data.height,
        width: data.width,
        num_classes: if keep.is_some() {
            saved.spec.num_classes
        } else {
            wanted
        },
        ..saved.spec
    };
    let (model, mut meta) = load_expecting(path, &expected, device)?;
    let Some(keep) = keep else {
        return Ok((model, meta));
    };
    let model = model.restrict_classes(&keep)?;
    meta.restricted_from = Some(std::mem::replace(
        &mut meta.class_names,
        data.class_names.clone(),
    ));
    meta.spec.num_classes = wanted;
    Ok((model, meta))
}

/// Where each of `wanted` is in `names` (all must be there, each once), or None.
fn subset_indices(names: &[String], wanted: &[String]) -> Option<Vec<usize>> {
    let keep = wanted
        .iter()
        .map(|w| names.iter().position(|n| n == w))
        .collect::<Option<Vec<_>>>()?;
    let distinct: std::collections::BTreeSet<_> = keep.iter().collect();
    (distinct.len() == keep.len()).then_some(keep)
}

/// Restores the model (with its parameter ids) and optimizer of a checkpoint written with
/// training state, on `device`.
pub fn load_training_state(
    dir: &Path,
    device: &Device,
    optimizer: ModuleOptimizer,
) -> Result<(Classifier, ModuleOptimizer, CheckpointMeta)> {
    let meta = read_meta(dir)?;
    let read = |name: &str| -> Result<Bytes> {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        Ok(Bytes::from_bytes_vec(bytes))
    };
    let record = ModuleRecord::from_bytes(read(STATE_FILE)?)
        .map_err(|e| checkpoint_error(dir, format!("unreadable {STATE_FILE}: {e}")))?;
    let model = Classifier::new(&meta.spec, device)
        .try_load_record(record)
        .map_err(|e| checkpoint_error(dir, format!("{STATE_FILE} does not fit the model: {e}")))?;
    let optimizer = optimizer
        .from_bytes(read(OPTIMIZER_FILE)?)
        .map_err(|e| checkpoint_error(dir, format!("unreadable {OPTIMIZER_FILE}: {e}")))?;
    Ok((model, optimizer, meta))
}
