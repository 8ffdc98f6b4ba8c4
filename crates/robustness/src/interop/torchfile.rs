//! Files written by `torch.save` that hold one tensor or a list (or tuple) of tensors, such as the
//! authors' released data sets (`CIFAR_ims`, `CIFAR_lab`, loaded with `ch.cat(ch.load(path))`).
//!
//! Checkpoints (dictionaries of tensors) are read with the `pytorch-reader` crate; it accepts
//! only a dictionary at the root, so these files get this small reader. Both containers
//! `torch.save` has used are read: the ZIP archive of PyTorch 1.6 and later, and the legacy
//! stream of pickles of 0.4-1.5 (the released data sets date from 2019). Writing produces the
//! ZIP archive with a protocol-2 pickle, as `torch.save` does by default.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// What a stored tensor's elements are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// float32.
    F32,
    /// float64.
    F64,
    /// float16 (read only).
    F16,
    /// int64.
    I64,
    /// int32.
    I32,
    /// int16.
    I16,
    /// int8.
    I8,
    /// uint8.
    U8,
    /// bool.
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    fn storage_name(self) -> &'static str {
        match self {
            DType::F32 => "FloatStorage",
            DType::F64 => "DoubleStorage",
            DType::F16 => "HalfStorage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
        }
    }
}

/// A tensor read from a file: contiguous, row-major, little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchTensor {
    /// Element type.
    pub dtype: DType,
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product() * dtype.size()` bytes.
    pub bytes: Vec<u8>,
}

impl TorchTensor {
    /// A float32 tensor.
    pub fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            dtype: DType::F32,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// An int64 tensor.
    pub fn i64(shape: Vec<usize>, values: &[i64]) -> Self {
        Self {
            dtype: DType::I64,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (floating and integer types; float16 is converted).
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.bytes;
        match self.dtype {
            DType::F32 => chunks::<4>(b).map(f32::from_le_bytes).collect(),
            DType::F64 => chunks::<8>(b)
                .map(|c| f64::from_le_bytes(c) as f32)
                .collect(),
            DType::F16 => chunks::<2>(b)
                .map(|c| f16_to_f32(u16::from_le_bytes(c)))
                .collect(),
            _ => self.to_i64().into_iter().map(|v| v as f32).collect(),
        }
    }

    /// The values as i64 (integer types; floating values are truncated).
    pub fn to_i64(&self) -> Vec<i64> {
        let b = &self.bytes;
        match self.dtype {
            DType::I64 => chunks::<8>(b).map(i64::from_le_bytes).collect(),
            DType::I32 => chunks::<4>(b)
                .map(|c| i32::from_le_bytes(c) as i64)
                .collect(),
            DType::I16 => chunks::<2>(b)
                .map(|c| i16::from_le_bytes(c) as i64)
                .collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as i64).collect(),
            DType::F32 | DType::F64 | DType::F16 => {
                self.to_f32().into_iter().map(|v| v as i64).collect()
            }
        }
    }
}

fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact gives N bytes"))
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Why a file could not be read or written (the caller adds the path).
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    /// The OS could not read or write it.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The ZIP container is broken.
    #[error("broken ZIP archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// The content is not what `torch.save` writes for tensors.
    #[error("{0}")]
    Format(String),
}

type Result<T> = std::result::Result<T, TorchFileError>;

fn format_err<T>(message: impl Into<String>) -> Result<T> {
    Err(TorchFileError::Format(message.into()))
}

/// Reads a `torch.save` file holding one tensor (returned as a one-element list) or a list or
/// tuple of tensors.
pub fn read_tensors(path: &Path) -> Result<Vec<TorchTensor>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    if n >= 4 && magic == *b"PK\x03\x04" {
        read_zip(file)
    } else if n >= 1 && magic[0] == 0x80 {
        read_legacy(BufReader::new(file))
    } else {
        format_err(
            "neither a ZIP archive (PyTorch >= 1.6) nor a legacy pickle stream (PyTorch 0.4-1.5): not a file written by torch.save",
        )
    }
}

fn read_zip(file: File) -> Result<Vec<TorchTensor>> {
    let mut archive = zip::ZipArchive::new(file)?;
    let pickle_name = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i)?.ok().map(|n| n.to_string()))
        .find(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        .ok_or_else(|| TorchFileError::Format("no data.pkl in the archive".into()))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut order) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        order.read_to_string(&mut text)?;
        if text.trim() != "little" {
            return format_err(format!(
                "byte order '{}' (only little-endian files are read)",
                text.trim()
            ));
        }
    }
    let mut pickle = Vec::new();
    archive.by_name(&pickle_name)?.read_to_end(&mut pickle)?;
    let root = Unpickler::new(Cursor::new(pickle)).load()?;
    let refs = tensor_list(root)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        if !storages.contains_key(&r.storage.key) {
            let mut bytes = Vec::new();
            archive
                .by_name(&format!("{prefix}data/{}", r.storage.key))?
                .read_to_end(&mut bytes)?;
            storages.insert(r.storage.key.clone(), bytes);
        }
        out.push(gather(&r, &storages[&r.storage.key])?);
    }
    Ok(out)
}

fn read_legacy<R: BufRead + Seek>(mut r: R) -> Result<Vec<TorchTensor>> {
    // torch/serialization.py `_legacy_save`: magic number, protocol version, system info, the
    // object, the sorted storage keys; then each storage as an int64 element count and its bytes.
    const MAGIC: i64 = 0x1950a86a20f9469cfc6c_i128 as i64;
    let magic = Unpickler::new(&mut r).load()?;
    if !matches!(magic, Value::Int(m) if m == MAGIC) && !matches!(magic, Value::BigInt) {
        return format_err("legacy pickle stream without torch's magic number");
    }
    let _protocol = Unpickler::new(&mut r).load()?;
    let sys_info = Unpickler::new(&mut r).load()?;
    if let Value::Dict(items) = &sys_info {
        for (k, v) in items {
            if matches!(k, Value::Str(s) if s == "little_endian") && matches!(v, Value::Bool(false))
            {
                return format_err("a big-endian file (only little-endian files are read)");
            }
        }
    }
    let mut unpickler = Unpickler::new(&mut r);
    let root = unpickler.load()?;
    let dtypes = unpickler.storage_dtypes;
    let keys = match Unpickler::new(&mut r).load()? {
        Value::List(keys) => keys
            .into_iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s),
                other => format_err(format!("storage key {other:?} is not a string")),
            })
            .collect::<Result<Vec<String>>>()?,
        other => return format_err(format!("storage key list expected, found {other:?}")),
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let mut count = [0u8; 8];
        r.read_exact(&mut count)?;
        let count = usize::try_from(u64::from_le_bytes(count))
            .map_err(|_| TorchFileError::Format("storage size overflows".into()))?;
        let dtype = *dtypes
            .get(&key)
            .ok_or_else(|| TorchFileError::Format(format!("storage {key} is never used")))?;
        let len = count
            .checked_mul(dtype.size())
            .filter(|&l| l <= crate::interop::MAX_TENSOR_BYTES)
            .ok_or_else(|| TorchFileError::Format(format!("storage {key} is implausibly large")))?;
        let mut bytes = vec![0u8; len];
        r.read_exact(&mut bytes)?;
        storages.insert(key, bytes);
    }
    tensor_list(root)?
        .iter()
        .map(|t| {
            let bytes = storages.get(&t.storage.key).ok_or_else(|| {
                TorchFileError::Format(format!("storage {} missing from the file", t.storage.key))
            })?;
            gather(t, bytes)
        })
        .collect()
}

/// The root object as a list of tensors.
fn tensor_list(root: Value) -> Result<Vec<TensorRef>> {
    let items = match root {
        Value::Tensor(t) => return Ok(vec![t]),
        Value::List(items) | Value::Tuple(items) => items,
        other => {
            return format_err(format!(
                "expected a tensor or a list of tensors at the root, found {}",
                other.describe()
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Tensor(t) => Ok(t),
            other => format_err(format!("item {i} is {}, not a tensor", other.describe())),
        })
        .collect()
}

/// Copies a (possibly strided) view out of its storage.
fn gather(t: &TensorRef, storage: &[u8]) -> Result<TorchTensor> {
    let size = t.storage.dtype.size();
    let numel: usize = t.shape.iter().product();
    let bad = || {
        TorchFileError::Format(format!(
            "tensor of shape {:?} does not fit its storage {} ({} bytes)",
            t.shape,
            t.storage.key,
            storage.len()
        ))
    };
    let contiguous = {
        let mut expect = 1usize;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && s != expect {
                ok = false;
            }
            expect *= d;
        }
        ok
    };
    let mut bytes = Vec::with_capacity(numel * size);
    if numel > 0 {
        if contiguous {
            let start = t.offset * size;
            let end = start.checked_add(numel * size).ok_or_else(bad)?;
            bytes.extend_from_slice(storage.get(start..end).ok_or_else(bad)?);
        } else {
            let mut index = vec![0usize; t.shape.len()];
            for _ in 0..numel {
                let e = t.offset
                    + index
                        .iter()
                        .zip(&t.stride)
                        .map(|(i, s)| i * s)
                        .sum::<usize>();
                bytes.extend_from_slice(storage.get(e * size..(e + 1) * size).ok_or_else(bad)?);
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    if index[d] < t.shape[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
        }
    }
    Ok(TorchTensor {
        dtype: t.storage.dtype,
        shape: t.shape.clone(),
        bytes,
    })
}

/// Writes `tensors` as `torch.save(list_of_tensors, path)` would (a ZIP archive), atomically.
/// Each tensor is stored contiguously in its own storage.
pub fn write_tensor_list(path: &Path, tensors: &[TorchTensor]) -> Result<()> {
    let mut pickle = vec![0x80, 2, b']', b'('];
    for (key, t) in tensors.iter().enumerate() {
        if t.bytes.len() != t.numel() * t.dtype.size() {
            return format_err(format!(
                "tensor {key}: {} bytes for shape {:?}",
                t.bytes.len(),
                t.shape
            ));
        }
        global(&mut pickle, "torch._utils", "_rebuild_tensor_v2");
        pickle.push(b'(');
        // Persistent id: ('storage', torch.XStorage, key, 'cpu', numel).
        pickle.push(b'(');
        unicode(&mut pickle, "storage");
        global(&mut pickle, "torch", t.dtype.storage_name());
        unicode(&mut pickle, &key.to_string());
        unicode(&mut pickle, "cpu");
        int(&mut pickle, t.numel() as u64);
        pickle.extend_from_slice(b"tQ");
        int(&mut pickle, 0); // storage offset
        pickle.push(b'(');
        for &d in &t.shape {
            int(&mut pickle, d as u64);
        }
        pickle.push(b't');
        pickle.push(b'(');
        let mut stride = 1u64;
        let mut strides = vec![0u64; t.shape.len()];
        for (s, &d) in strides.iter_mut().zip(&t.shape).rev() {
            *s = stride;
            stride *= d as u64;
        }
        for s in strides {
            int(&mut pickle, s);
        }
        pickle.push(b't');
        pickle.push(0x89); // requires_grad = False
        global(&mut pickle, "collections", "OrderedDict");
        pickle.extend_from_slice(b")R"); // backward hooks: OrderedDict()
        pickle.extend_from_slice(b"tR");
    }
    pickle.extend_from_slice(b"e.");

    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .large_file(tensors.iter().map(|t| t.bytes.len()).sum::<usize>() >= u32::MAX as usize)
        .with_alignment(64);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("archive/data.pkl", options)?;
    zip.write_all(&pickle)?;
    zip.start_file("archive/byteorder", options)?;
    zip.write_all(b"little")?;
    for (key, t) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{key}"), options)?;
        zip.write_all(&t.bytes)?;
    }
    zip.start_file("archive/version", options)?;
    zip.write_all(b"3\n")?;
    let bytes = zip.finish()?.into_inner();
    crate::train::checkpoint::write_atomic(path, &bytes)
        .map_err(|e| TorchFileError::Format(e.to_string()))
}

fn global(p: &mut Vec<u8>, module: &str, name: &str) {
    p.push(b'c');
    p.extend_from_slice(module.as_bytes());
    p.push(b'\n');
    p.extend_from_slice(name.as_bytes());
    p.push(b'\n');
}

fn unicode(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

fn int(p: &mut Vec<u8>, v: u64) {
    if v < 256 {
        p.extend_from_slice(&[b'K', v as u8]);
    } else if v < 65_536 {
        p.push(b'M');
        p.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < (1 << 31) {
        p.push(b'J');
        p.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        // LONG1: 8 little-endian two's-complement bytes (positive, top bit clear).
        p.extend_from_slice(&[0x8a, 8]);
        p.extend_from_slice(&v.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// A pickle machine for what torch.save writes around tensors.

#[derive(Clone, Debug)]
struct StorageRef {
    key: String,
    dtype: DType,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (the legacy magic number).
    BigInt,
    Float,
    Str(String),
    Bytes,
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRef),
    /// Any other Python object, by type.
    Object(String),
    Mark,
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) | Value::BigInt => "an int".into(),
            Value::Float => "a float".into(),
            Value::Str(_) => "a string".into(),
            Value::Bytes => "bytes".into(),
            Value::List(_) => "a list".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
            Value::Object(t) => format!("a {t} object"),
            Value::Mark => "a mark".into(),
        }
    }

    fn usize(&self, what: &str) -> Result<usize> {
        match self {
            Value::Int(v) if *v >= 0 => Ok(*v as usize),
            other => format_err(format!(
                "{what}: expected a non-negative int, found {other:?}"
            )),
        }
    }

    fn usizes(&self, what: &str) -> Result<Vec<usize>> {
        match self {
            Value::Tuple(items) | Value::List(items) => {
                items.iter().map(|v| v.usize(what)).collect()
            }
            other => format_err(format!("{what}: expected a tuple, found {other:?}")),
        }
    }
}

struct Unpickler<R> {
    r: R,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    /// Element type of every storage seen, by key (the legacy format needs it to read them).
    storage_dtypes: HashMap<String, DType>,
}

impl<R: BufRead> Unpickler<R> {
    fn new(r: R) -> Self {
        Self {
            r,
            stack: Vec::new(),
            memo: HashMap::new(),
            storage_dtypes: HashMap::new(),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        if n > crate::interop::MAX_TENSOR_BYTES {
            return format_err("pickle field implausibly large");
        }
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        self.r.read_line(&mut s)?;
        Ok(s.trim_end_matches('\n').to_string())
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack
            .pop()
            .ok_or_else(|| TorchFileError::Format("pickle stack underflow".into()))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| TorchFileError::Format("pickle MARK missing".into()))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| TorchFileError::Format("pickle stack underflow".into()))
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let b = self.bytes(n)?;
        String::from_utf8(b)
            .map(Value::Str)
            .map_err(|_| TorchFileError::Format("pickle string is not UTF-8".into()))
    }

    fn load(&mut self) -> Result<Value> {
        loop {
            let [op] = self.array::<1>()?;
            match op {
                0x80 => {
                    self.array::<1>()?;
                }
                0x95 => {
                    self.array::<8>()?;
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b']' => self.stack.push(Value::List(Vec::new())),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let [v] = self.array::<1>()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        usize::from(self.array::<1>()?[0])
                    } else {
                        u32::from_le_bytes(self.array()?) as usize
                    };
                    let b = self.bytes(n)?;
                    self.stack.push(if n <= 8 {
                        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                            0xff
                        } else {
                            0
                        };
                        let mut full = [fill; 8];
                        full[..n].copy_from_slice(&b);
                        Value::Int(i64::from_le_bytes(full))
                    } else if n <= 16 {
                        let mut full = [0u8; 16];
                        full[..n].copy_from_slice(&b);
                        Value::Int(i128::from_le_bytes(full) as i64)
                    } else {
                        Value::BigInt
                    });
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let text = line.trim_end_matches('L');
                    self.stack.push(match text {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        t => t.parse().map(Value::Int).unwrap_or(Value::BigInt),
                    });
                }
                b'G' => {
                    self.array::<8>()?;
                    self.stack.push(Value::Float);
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                0x8c => {
                    let n = usize::from(self.array::<1>()?[0]);
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                0x8d => {
                    let n = usize::try_from(u64::from_le_bytes(self.array()?))
                        .map_err(|_| TorchFileError::Format("string too long".into()))?;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                b'T' | b'B' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    self.bytes(n)?;
                    self.stack.push(Value::Bytes);
                }
                b'U' | b'C' => {
                    let n = usize::from(self.array::<1>()?[0]);
                    self.bytes(n)?;
                    self.stack.push(Value::Bytes);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return format_err("STACK_GLOBAL without strings"),
                    }
                }
                b'q' | b'r' | 0x94 | b'p' => {
                    let key = match op {
                        b'q' => u32::from(self.array::<1>()?[0]),
                        b'r' => u32::from_le_bytes(self.array()?),
                        b'p' => self
                            .line()?
                            .parse()
                            .map_err(|_| TorchFileError::Format("bad PUT index".into()))?,
                        _ => self.memo.len() as u32,
                    };
                    let v = self.top()?.clone();
                    self.memo.insert(key, v);
                }
                b'h' | b'j' | b'g' => {
                    let key = match op {
                        b'h' => u32::from(self.array::<1>()?[0]),
                        b'j' => u32::from_le_bytes(self.array()?),
                        _ => self
                            .line()?
                            .parse()
                            .map_err(|_| TorchFileError::Format("bad GET index".into()))?,
                    };
                    let v = self
                        .memo
                        .get(&key)
                        .cloned()
                        .ok_or_else(|| TorchFileError::Format(format!("memo {key} unset")))?;
                    self.stack.push(v);
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(items) => items.push(v),
                        _ => return format_err("APPEND to a non-list"),
                    }
                }
                b'e' => {
                    let new = self.pop_mark()?;
                    match self.top()? {
                        Value::List(items) => items.extend(new),
                        _ => return format_err("APPENDS to a non-list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    if let Value::Dict(items) = self.top()? {
                        items.push((k, v));
                    }
                }
                b'u' => {
                    let new = self.pop_mark()?;
                    if let Value::Dict(items) = self.top()? {
                        let mut it = new.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            items.push((k, v));
                        }
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return format_err("pickle stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.stack.push(v);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Object(cls.describe()));
                }
                b'b' => {
                    self.pop()?; // BUILD: the state of an object we keep opaque
                }
                other => {
                    return format_err(format!(
                        "unsupported pickle opcode 0x{other:02x} (not a file torch.save writes for tensors)"
                    ));
                }
            }
        }
    }

    /// `('storage', torch.XStorage, key, location, numel[, view])`.
    fn persistent(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(items) = pid else {
            return format_err(format!("persistent id {pid:?} is not a tuple"));
        };
        match items.as_slice() {
            [
                Value::Str(kind),
                Value::Global(_, storage),
                key,
                _location,
                _numel,
                ..,
            ] if kind == "storage" => {
                let dtype = DType::from_storage(storage).ok_or_else(|| {
                    TorchFileError::Format(format!("unsupported storage type {storage}"))
                })?;
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => return format_err(format!("storage key {other:?}")),
                };
                self.storage_dtypes.insert(key.clone(), dtype);
                Ok(Value::Storage(StorageRef { key, dtype }))
            }
            _ => format_err(format!("unsupported persistent id {items:?}")),
        }
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(module, name) = &callable else {
            return Ok(Value::Object(callable.describe()));
        };
        let Value::Tuple(args) = args else {
            return Ok(Value::Object(format!("{module}.{name}")));
        };
        match (module.as_str(), name.as_str(), args.as_slice()) {
            (
                "torch._utils",
                "_rebuild_tensor_v2" | "_rebuild_tensor",
                [Value::Storage(storage), offset, shape, stride, ..],
            ) => {
                let shape = shape.usizes("tensor shape")?;
                let stride = stride.usizes("tensor stride")?;
                if shape.len() != stride.len() {
                    return format_err("tensor shape and stride differ in length");
                }
                Ok(Value::Tensor(TensorRef {
                    storage: storage.clone(),
                    offset: offset.usize("storage offset")?,
                    shape,
                    stride,
                }))
            }
            ("torch._utils", "_rebuild_parameter", [tensor @ Value::Tensor(_), ..]) => {
                Ok(tensor.clone())
            }
            ("collections", "OrderedDict", _) => Ok(Value::Dict(Vec::new())),
            _ => Ok(Value::Object(format!("{module}.{name}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("robustness-torchfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    #[test]
    fn written_lists_read_back() {
        let path = tmp("list.pt");
        let a = TorchTensor::f32(vec![2, 3], &[0.0, 0.5, 1.0, -1.5, 2.25, 1e-7]);
        let b = TorchTensor::i64(vec![4], &[0, 9, 70_000, 1 << 40]);
        write_tensor_list(&path, &[a.clone(), b.clone()]).expect("write");
        let back = read_tensors(&path).expect("read");
        assert_eq!(back, vec![a, b]);
        assert_eq!(back[1].to_i64(), vec![0, 9, 70_000, 1 << 40]);
    }

    #[test]
    fn writing_is_deterministic() {
        let t = [TorchTensor::f32(vec![3], &[1.0, 2.0, 3.0])];
        let (p, q) = (tmp("a.pt"), tmp("b.pt"));
        write_tensor_list(&p, &t).expect("write");
        write_tensor_list(&q, &t).expect("write");
        assert_eq!(std::fs::read(p).expect("a"), std::fs::read(q).expect("b"));
    }

    #[test]
    fn strided_views_are_gathered() {
        // A 2x3 storage read as its 3x2 transpose.
        let r = TensorRef {
            storage: StorageRef {
                key: "0".into(),
                dtype: DType::F32,
            },
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        let storage: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = gather(&r, &storage).expect("gather");
        assert_eq!(t.to_f32(), vec![1., 4., 2., 5., 3., 6.]);
        let short = gather(&r, &storage[..20]);
        assert!(short.is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let path = tmp("garbage.pt");
        std::fs::write(&path, b"hello, not a tensor").expect("write");
        let err = read_tensors(&path).expect_err("garbage");
        assert!(err.to_string().contains("torch.save"), "{err}");
        // A truncated archive.
        let good = tmp("good.pt");
        write_tensor_list(&good, &[TorchTensor::f32(vec![64], &[0.5; 64])]).expect("write");
        let bytes = std::fs::read(&good).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
        assert!(read_tensors(&path).is_err());
    }

    #[test]
    fn half_precision_converts() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    }
}
