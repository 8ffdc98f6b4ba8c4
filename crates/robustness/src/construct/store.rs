//! On-disk layout of a constructed data set, built to survive crashes and to be split across
//! machines:
//!
//! ```text
//! DIR/meta.json                        what was built, from what, how (ConstructMeta)
//! DIR/chunks/chunk-000000.safetensors  examples [0, chunk_size), written atomically
//! DIR/chunks/chunk-000001.safetensors  ...
//! ```
//!
//! A chunk holds `images` (f32 [n, C, H, W] in [0, 1]; f32 because u8 would erase part of a
//! perturbation of L2 norm 0.5), `labels` (i64 [n], the new labels), `source_labels` (i64 [n]),
//! `index` (i64 [n], position in the source training set), `loss` (f32 [n], the final attack
//! objective), `agrees` (u8 [n], 1 where the model predicts the new label) and `distance`
//! (f32 [n], L2 distance to the source image). Its header
//! metadata holds the construction's `config_id`, so a chunk of another configuration is never
//! mistaken for one of this. Any SafeTensors reader (e.g. Python's `safetensors.numpy`) opens it.

use super::ConstructMeta;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::train::checkpoint::{write_atomic, write_json_atomic};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The metadata file of a constructed data set.
pub const META_FILE: &str = "meta.json";
/// The folder of chunk files.
pub const CHUNKS_DIR: &str = "chunks";
const CONFIG_KEY: &str = "config_id";

/// The examples of one chunk, on the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    /// n * C * H * W values in [0, 1].
    pub images: Vec<f32>,
    /// New labels.
    pub labels: Vec<usize>,
    /// Labels of the source images.
    pub source_labels: Vec<usize>,
    /// Positions in the source training set.
    pub index: Vec<usize>,
    /// Final value of the attack objective per example.
    pub loss: Vec<f32>,
    /// Whether the model predicts the new label on the new image.
    pub agrees: Vec<bool>,
    /// L2 distance between the new image and its source image.
    pub distance: Vec<f32>,
}

impl Chunk {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the chunk holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Path of chunk `i` inside a data set folder.
pub fn chunk_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(CHUNKS_DIR)
        .join(format!("chunk-{i:06}.safetensors"))
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Constructed {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn i64_bytes(values: &[usize]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| (v as i64).to_le_bytes())
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>> {
    TensorView::new(dtype, shape.clone(), data).map_err(|e| Error::Shape {
        context: format!("chunk tensor ({e})"),
        expected: shape,
        found: vec![data.len()],
    })
}

/// Encodes a chunk as SafeTensors bytes (deterministic: tensors sorted, one metadata key).
pub fn encode_chunk(chunk: &Chunk, image_shape: [usize; 3], config_id: &str) -> Result<Vec<u8>> {
    let n = chunk.len();
    let [c, h, w] = image_shape;
    let images = f32_bytes(&chunk.images);
    let labels = i64_bytes(&chunk.labels);
    let source = i64_bytes(&chunk.source_labels);
    let index = i64_bytes(&chunk.index);
    let loss = f32_bytes(&chunk.loss);
    let distance = f32_bytes(&chunk.distance);
    let agrees: Vec<u8> = chunk.agrees.iter().map(|&a| u8::from(a)).collect();
    let tensors = vec![
        ("images", view(Dtype::F32, vec![n, c, h, w], &images)?),
        ("labels", view(Dtype::I64, vec![n], &labels)?),
        ("source_labels", view(Dtype::I64, vec![n], &source)?),
        ("index", view(Dtype::I64, vec![n], &index)?),
        ("loss", view(Dtype::F32, vec![n], &loss)?),
        ("agrees", view(Dtype::U8, vec![n], &agrees)?),
        ("distance", view(Dtype::F32, vec![n], &distance)?),
    ];
    let info = HashMap::from([(CONFIG_KEY.to_string(), config_id.to_string())]);
    safetensors::serialize(tensors, Some(info)).map_err(|e| Error::Config(format!("{e}")))
}

/// Writes chunk `i` atomically.
pub fn write_chunk(
    dir: &Path,
    i: usize,
    chunk: &Chunk,
    image_shape: [usize; 3],
    config_id: &str,
) -> Result<()> {
    let path = chunk_path(dir, i);
    let bytes = encode_chunk(chunk, image_shape, config_id)?;
    write_atomic(&path, &bytes)
}

/// Reads chunk `i`, checking that it belongs to `config_id` and holds `expected_len` examples
/// of `image_shape`.
pub fn read_chunk(
    dir: &Path,
    i: usize,
    image_shape: [usize; 3],
    expected_len: usize,
    config_id: &str,
) -> Result<Chunk> {
    let path = chunk_path(dir, i);
    let bytes = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    decode_chunk(&bytes, &path, image_shape, expected_len, config_id)
}

fn decode_chunk(
    bytes: &[u8],
    path: &Path,
    image_shape: [usize; 3],
    expected_len: usize,
    config_id: &str,
) -> Result<Chunk> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| err(path, format!("not a SafeTensors file ({e})")))?;
    let found_id = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .cloned()
        .unwrap_or_default();
    if found_id != config_id {
        return Err(err(
            path,
            format!(
                "chunk belongs to another construction (config id {found_id}, expected {config_id})"
            ),
        ));
    }
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| err(path, format!("not a SafeTensors file ({e})")))?;
    let n = expected_len;
    let [c, h, w] = image_shape;
    let get = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<Vec<u8>> {
        let t = st
            .tensor(name)
            .map_err(|e| err(path, format!("tensor '{name}' missing ({e})")))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(err(
                path,
                format!(
                    "tensor '{name}' is {:?} {:?}, expected {dtype:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data().to_vec())
    };
    let f32s = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|q| f32::from_le_bytes([q[0], q[1], q[2], q[3]]))
            .collect()
    };
    let usizes = |b: Vec<u8>| -> Result<Vec<usize>> {
        b.chunks_exact(8)
            .map(|q| {
                let mut a = [0u8; 8];
                a.copy_from_slice(q);
                usize::try_from(i64::from_le_bytes(a))
                    .map_err(|_| err(path, "negative label or index"))
            })
            .collect()
    };
    Ok(Chunk {
        images: f32s(get("images", Dtype::F32, &[n, c, h, w])?),
        labels: usizes(get("labels", Dtype::I64, &[n])?)?,
        source_labels: usizes(get("source_labels", Dtype::I64, &[n])?)?,
        index: usizes(get("index", Dtype::I64, &[n])?)?,
        loss: f32s(get("loss", Dtype::F32, &[n])?),
        agrees: get("agrees", Dtype::U8, &[n])?
            .into_iter()
            .map(|b| b != 0)
            .collect(),
        distance: f32s(get("distance", Dtype::F32, &[n])?),
    })
}

/// Reads `DIR/meta.json`.
pub fn read_meta(dir: &Path) -> Result<ConstructMeta> {
    let path = dir.join(META_FILE);
    let text = fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            err(
                dir,
                format!(
                    "no {META_FILE}: not a constructed data set (build one with `robustness construct`)"
                ),
            )
        } else {
            Error::io("reading", &path, e)
        }
    })?;
    serde_json::from_str(&text).map_err(|e| err(&path, format!("malformed metadata: {e}")))
}

/// Writes `DIR/meta.json` atomically.
pub fn write_meta(dir: &Path, meta: &ConstructMeta) -> Result<()> {
    write_json_atomic(&dir.join(META_FILE), meta)
}

/// Reads every chunk of a complete, unsharded data set in order.
pub fn read_chunks(dir: &Path, meta: &ConstructMeta) -> Result<Vec<Chunk>> {
    if let Some(shard) = &meta.shard {
        return Err(err(
            dir,
            format!(
                "this is shard {}/{} of a construction; join the shards with `robustness merge --out DIR SHARD_DIRS...`",
                shard.index, shard.count
            ),
        ));
    }
    let shape = meta.source.image_shape();
    (0..meta.num_chunks())
        .map(|i| {
            let len = meta.chunk_range(i).len();
            read_chunk(dir, i, shape, len, &meta.config_id).map_err(|e| match e {
                Error::Io { .. } => err(
                    dir,
                    format!(
                        "chunk {i} of {} is missing: the construction did not finish (rerun the same `robustness construct` command to resume)",
                        meta.num_chunks()
                    ),
                ),
                other => other,
            })
        })
        .collect()
}

/// Loads a complete constructed data set: its metadata and the examples with their new labels.
pub fn load(dir: &Path) -> Result<(ConstructMeta, Dataset)> {
    let meta = read_meta(dir)?;
    if meta.summary.is_none() {
        return Err(err(
            dir,
            "the construction did not finish (rerun the same `robustness construct` command to resume)",
        ));
    }
    let chunks = read_chunks(dir, &meta)?;
    let mut images = Vec::with_capacity(meta.examples * meta.source.image_len());
    let mut labels = Vec::with_capacity(meta.examples);
    for chunk in chunks {
        images.extend_from_slice(&chunk.images);
        labels.extend_from_slice(&chunk.labels);
    }
    let [channels, height, width] = meta.source.image_shape();
    let data = Dataset {
        name: format!(
            "{} ({})",
            meta.config.kind.paper_name(),
            meta.source.describe()
        ),
        images,
        labels,
        channels,
        height,
        width,
        class_names: meta.source.class_names.clone(),
    };
    Ok((meta, data))
}

/// Joins the shards of one construction into `out`: every chunk must be present in exactly one
/// shard, and all shards must come from the same configuration. Writes the chunks and the
/// metadata of the unsharded data set (byte-identical to an unsharded run).
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<ConstructMeta> {
    let Some(first) = shards.first() else {
        return Err(Error::Config(
            "merge needs at least one shard folder".into(),
        ));
    };
    let metas = shards
        .iter()
        .map(|d| read_meta(d))
        .collect::<Result<Vec<_>>>()?;
    let base = &metas[0];
    for (dir, meta) in shards.iter().zip(&metas) {
        if !meta.same_construction(base)? {
            return Err(err(
                dir,
                format!(
                    "comes from another construction than {} (config id {} vs {})",
                    first.display(),
                    meta.config_id,
                    base.config_id
                ),
            ));
        }
        if meta.summary.is_none() {
            return Err(err(
                dir,
                "this shard did not finish (rerun its `robustness construct --shard` command)",
            ));
        }
    }
    let n_chunks = base.num_chunks();
    let mut owner: Vec<Option<usize>> = vec![None; n_chunks];
    for (s, dir) in shards.iter().enumerate() {
        for (i, slot) in owner.iter_mut().enumerate() {
            if chunk_path(dir, i).is_file() {
                if let Some(prev) = *slot {
                    return Err(err(
                        dir,
                        format!(
                            "chunk {i} is also in {}: a shard was given twice or shards overlap",
                            shards[prev].display()
                        ),
                    ));
                }
                *slot = Some(s);
            }
        }
    }
    let missing: Vec<usize> = (0..n_chunks).filter(|&i| owner[i].is_none()).collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
        return Err(err(
            out,
            format!(
                "{} of {n_chunks} chunks are in none of the shards (first: {}); run the missing shards first",
                missing.len(),
                list.join(", ")
            ),
        ));
    }
    fs::create_dir_all(out.join(CHUNKS_DIR)).map_err(|e| Error::io("creating", out, e))?;
    let shape = base.source.image_shape();
    let mut chunks = Vec::with_capacity(n_chunks);
    for (i, s) in owner.iter().enumerate() {
        let s = s.expect("every chunk has an owner (checked above)");
        let len = base.chunk_range(i).len();
        // Each shard's chunks carry its own id (they differ between shards built before the
        // id left the model's path out, when the checkpoint lay elsewhere for each shard).
        let chunk = read_chunk(&shards[s], i, shape, len, &metas[s].config_id)?;
        write_chunk(out, i, &chunk, shape, &base.config_id)?;
        chunks.push(chunk);
    }
    let mut meta = base.clone();
    meta.shard = None;
    meta.summary = Some(super::Summary::of(&chunks));
    write_meta(out, &meta)?;
    Ok(meta)
}
