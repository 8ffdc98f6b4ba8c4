//! Data sets for the experiments: in-memory [`Dataset`]s (images as `f32`, layout `[N, C, H, W]`),
//! loaders for CIFAR-10, MNIST, the embedded UCI 8x8 digits and the Tsipras et al. synthetic
//! distribution, plus augmentation and a deterministic, prefetchable batch iterator.

pub mod augment;
pub mod cifar10;
pub mod digits;
pub mod folder;
pub mod loader;
pub mod mnist;
pub mod synthetic;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use augment::{Augmentation, random_crop_flip};
pub use folder::FolderSource;
pub use loader::{Batch, BatchIter, Prefetch, batches, prefetch};
pub use synthetic::SyntheticConfig;

/// Environment variable naming the data directory (used when no `--data` flag is given).
pub const DATA_ENV: &str = "ROBUSTNESS_DATA";

/// Default data directory, relative to the current directory (the project's root).
pub const DEFAULT_DATA_DIR: &str = "../shared/data";

/// Part of a training set a run uses (`train --limit N [--limit-first]`, and the first 10,000
/// CIFAR-10 images of `reproduce cifar10 --scale quick`), recorded in the run's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Number of images kept.
    pub images: usize,
    /// The first `images` of the set (`true`) or `images` spread evenly over it
    /// ([`Dataset::spread`]; `false`).
    pub first: bool,
}

impl Limit {
    /// The images of `set` this limit keeps; an error when `set` has fewer than `images`
    /// (or `images` is 0).
    pub fn apply(&self, set: &Dataset) -> crate::Result<Dataset> {
        if self.images == 0 || self.images > set.len() {
            return Err(crate::Error::Config(format!(
                "--limit {}: the set {} has {} images",
                self.images,
                set.name,
                set.len()
            )));
        }
        Ok(if self.first {
            set.subset(&(0..self.images).collect::<Vec<_>>())
        } else {
            set.spread(self.images)
        })
    }
}

/// An in-memory labelled image data set.
///
/// `images` holds `N * C * H * W` values, layout `[N, C, H, W]` flattened row-major. Image data
/// sets (CIFAR-10, MNIST, digits) hold values in `[0, 1]`; the synthetic data set holds raw real
/// features (see [`synthetic`]). `labels[i] < class_names.len()` for every `i`.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Human-readable name, e.g. `"cifar10-train"`.
    pub name: String,
    /// Pixel values, `len() * channels * height * width` of them, layout `[N, C, H, W]`.
    pub images: Vec<f32>,
    /// One class index per image, each `< class_names.len()`.
    pub labels: Vec<usize>,
    /// Channels per image (`C`).
    pub channels: usize,
    /// Image height (`H`).
    pub height: usize,
    /// Image width (`W`).
    pub width: usize,
    /// Name of each class; index = label.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of images (`N`).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the data set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: `C * H * W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Number of classes (`class_names.len()`).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image `i` as a `[C, H, W]` slice of `image_len()` values.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// `n` images spread evenly over the set (every `len / n`-th, in order; all of it when
    /// `n >= len`): the evaluation subsets of `--limit`. Not the first `n`: files sorted by
    /// class (such as the shared CIFAR-10 copy) would give a single class.
    pub fn spread(&self, n: usize) -> Dataset {
        let len = self.len();
        let n = n.min(len);
        self.subset(&(0..n).map(|i| i * len / n).collect::<Vec<_>>())
    }

    /// Indices of the first `per_class` images of every class, class by class (`[a0, a1, b0,
    /// b1, ...]`; fewer for a class with fewer images): the example grids of the reports, one
    /// column per class as in the paper's Figure 2a, whatever the order of the files.
    pub fn first_of_each_class(&self, per_class: usize) -> Vec<usize> {
        let classes = self
            .num_classes()
            .max(self.labels.iter().map(|&l| l + 1).max().unwrap_or(0));
        let mut taken = vec![Vec::new(); classes];
        for (i, &label) in self.labels.iter().enumerate() {
            if taken[label].len() < per_class {
                taken[label].push(i);
            }
        }
        taken.concat()
    }

    /// A new data set holding the images at `indices`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= self.len()`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels,
            channels: self.channels,
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
        }
    }

    /// Keeps only the images of `classes` and relabels them `0..classes.len()` in the order
    /// given; `class_names` follow (e.g. `[3, 5]` on CIFAR-10 gives `["cat", "dog"]`, cat = 0).
    /// Image order is preserved. Use [`parse_classes`] to validate user input first.
    ///
    /// # Panics
    /// If a class is `>= self.num_classes()` or appears twice.
    pub fn select_classes(&self, classes: &[usize]) -> Dataset {
        let mut map = vec![None; self.num_classes()];
        for (new, &old) in classes.iter().enumerate() {
            assert!(
                old < map.len(),
                "select_classes: class {old} out of range (data set has {} classes)",
                map.len()
            );
            assert!(
                map[old].is_none(),
                "select_classes: class {old} given twice"
            );
            map[old] = Some(new);
        }
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| map.get(self.labels[i]).copied().flatten().is_some())
            .collect();
        let mut out = self.subset(&keep);
        for label in &mut out.labels {
            *label = map[*label].expect("kept images belong to selected classes");
        }
        out.class_names = classes
            .iter()
            .map(|&c| self.class_names[c].clone())
            .collect();
        out
    }

    /// Splits into train/test with `n_test` test images (clamped to `len()`), stratified by
    /// class: each class gets its proportional share of the test set (largest-remainder
    /// rounding, ties to the lower class), chosen at random. Deterministic for a given `seed`
    /// (`ChaCha8Rng`); both parts are shuffled. Names get `-train` / `-test` appended.
    pub fn stratified_split(&self, n_test: usize, seed: u64) -> Split {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;

        let n = self.len();
        let n_test = n_test.min(n);
        let counts = self.class_counts();
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); counts.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l].push(i);
        }
        // Largest-remainder apportionment of n_test over the classes.
        let mut quota: Vec<usize> = counts.iter().map(|&c| c * n_test / n.max(1)).collect();
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by_key(|&k| std::cmp::Reverse(counts[k] * n_test % n.max(1)));
        let short = n_test - quota.iter().sum::<usize>();
        for &k in order.iter().take(short) {
            quota[k] += 1;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut train, mut test) = (Vec::with_capacity(n - n_test), Vec::with_capacity(n_test));
        for (members, q) in by_class.iter_mut().zip(quota) {
            members.shuffle(&mut rng);
            test.extend_from_slice(&members[..q]);
            train.extend_from_slice(&members[q..]);
        }
        train.shuffle(&mut rng);
        test.shuffle(&mut rng);
        let mut train = self.subset(&train);
        let mut test = self.subset(&test);
        train.name = format!("{}-train", self.name);
        test.name = format!("{}-test", self.name);
        Split { train, test }
    }

    /// Images per class, indexed by label (length `num_classes()`, or more if a label exceeds it).
    pub fn class_counts(&self) -> Vec<usize> {
        let len = self
            .labels
            .iter()
            .map(|&l| l + 1)
            .max()
            .unwrap_or(0)
            .max(self.num_classes());
        let mut counts = vec![0; len];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// A train/test pair.
#[derive(Clone, Debug)]
pub struct Split {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
}

/// Errors from loading or selecting data. Each names the file and what was expected and found.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or decompressing a file failed.
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        /// File (for archive members: `archive/member`).
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A required file or directory is missing.
    #[error("{} not found: {hint}", .path.display())]
    NotFound {
        /// What was looked for.
        path: PathBuf,
        /// What should be there.
        hint: String,
    },
    /// No data directory was given and none could be found.
    #[error(
        "no data directory for {kind}: pass --data <dir>, set {DATA_ENV}, or place the files under {DEFAULT_DATA_DIR}"
    )]
    NoDataDir {
        /// The data set that needs files.
        kind: DatasetKind,
    },
    /// A file has the wrong size.
    #[error("{}: wrong size: expected {expected}, found {found} bytes", .path.display())]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Expected size, in words (e.g. "30,730,000 bytes (10000 records of 3073 bytes)").
        expected: String,
        /// Actual size in bytes.
        found: usize,
    },
    /// A file does not start with the expected magic number.
    #[error("{}: bad magic number: expected {expected}, found {found}", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Expected magic number.
        expected: u32,
        /// Magic number found.
        found: u32,
    },
    /// A header field has an unexpected value.
    #[error("{}: bad {what}: expected {expected}, found {found}", .path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Which field (e.g. "image dimensions").
        what: &'static str,
        /// Expected value.
        expected: String,
        /// Value found.
        found: String,
    },
    /// A file ends before its header says it should.
    #[error("{}: truncated: expected {expected} bytes, found {found}", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes expected in total.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A label is out of range.
    #[error("{}: record {record}: label {label} out of range (expected 0..={max})", .path.display())]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Record index within the file.
        record: usize,
        /// Label found.
        label: usize,
        /// Largest valid label.
        max: usize,
    },
    /// Image and label files disagree on the number of records.
    #[error(
        "record count mismatch: {} holds {images} images but {} holds {labels} labels",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// The label file.
        labels_path: PathBuf,
        /// Images in the image file.
        images: usize,
        /// Labels in the label file.
        labels: usize,
    },
    /// A class-name file has the wrong number of names.
    #[error("{}: expected {expected} class names, found {found}", .path.display())]
    ClassNames {
        /// The file.
        path: PathBuf,
        /// Names expected.
        expected: usize,
        /// Names found.
        found: usize,
    },
    /// A text file could not be parsed.
    #[error("{}: line {line}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A class name or index in a class list is not valid.
    #[error("unknown class '{name}'; valid classes: {valid}")]
    UnknownClass {
        /// The offending item.
        name: String,
        /// The valid names and index range.
        valid: String,
    },
    /// A class list names the same class twice.
    #[error("class '{name}' given more than once")]
    DuplicateClass {
        /// The repeated class's name.
        name: String,
    },
    /// A class list is empty or has an empty item.
    #[error(
        "empty class list or item in '{spec}': give class names or indices separated by commas"
    )]
    EmptyClasses {
        /// The list as given.
        spec: String,
    },
    /// A data set name is not known.
    #[error(
        "unknown data set '{name}'; valid: digits, mnist, cifar10 (or cifar), synthetic, folder:PATH"
    )]
    UnknownDataset {
        /// The name given.
        name: String,
    },
    /// An image-folder data set was named without its folder.
    #[error("the folder data set needs its folder: --dataset folder:PATH (or --data PATH)")]
    NoFolder,
    /// An image folder's layout is wrong (see [`folder`]).
    #[error("{}: {message}", .path.display())]
    Folder {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An image file cannot be decoded.
    #[error("{}: cannot decode the image: {message}", .path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A synthetic-data configuration is invalid.
    #[error("invalid synthetic data configuration: {message}")]
    InvalidConfig {
        /// What is wrong.
        message: String,
    },
}

/// The data sets this module can provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// UCI 8x8 handwritten digits, embedded (no files needed); `1x8x8`, 10 classes.
    Digits,
    /// MNIST from idx files; `1x28x28`, 10 classes.
    Mnist,
    /// CIFAR-10 from the binary batches; `3x32x32`, 10 classes. Parsed from `cifar10` or `cifar`.
    #[serde(alias = "cifar")]
    Cifar10,
    /// The Tsipras et al. robust/non-robust feature distribution; `1x1x(d+1)`, 2 classes.
    Synthetic,
    /// An image folder (`train/<class>/...`, `test/<class>/...`; see [`folder`]): RGB, the
    /// classes its folders name. Its root is the data directory ([`FolderSource`]).
    Folder,
}

impl DatasetKind {
    /// All kinds, in display order.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Digits,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Synthetic,
        DatasetKind::Folder,
    ];

    /// The canonical lowercase name (`"digits"`, `"mnist"`, `"cifar10"`, `"synthetic"`,
    /// `"folder"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Digits => "digits",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::Folder => "folder",
        }
    }

    /// Whether loading needs files from a data directory.
    pub fn needs_data_dir(self) -> bool {
        matches!(
            self,
            DatasetKind::Mnist | DatasetKind::Cifar10 | DatasetKind::Folder
        )
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    /// Case-insensitive: `digits`, `mnist`, `cifar10` or `cifar`, `synthetic`, `folder` (the
    /// command line's `folder:PATH` names the root as well).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "digits" => Ok(DatasetKind::Digits),
            "mnist" => Ok(DatasetKind::Mnist),
            "cifar10" | "cifar" | "cifar-10" => Ok(DatasetKind::Cifar10),
            "synthetic" => Ok(DatasetKind::Synthetic),
            "folder" => Ok(DatasetKind::Folder),
            _ => Err(DataError::UnknownDataset {
                name: s.to_string(),
            }),
        }
    }
}

/// Parses a comma-separated class list such as `"cat,dog"`, `"3,5"` or `"cat,5"` into class
/// indices, in the order given. Each item is matched first against `class_names`
/// (case-insensitively), then as an index `< class_names.len()`. Whitespace around items is
/// ignored. Errors on an empty list or item, an unknown class (listing the valid ones), or a
/// class given twice.
pub fn parse_classes(spec: &str, class_names: &[String]) -> Result<Vec<usize>, DataError> {
    let empty = || DataError::EmptyClasses {
        spec: spec.to_string(),
    };
    if spec.trim().is_empty() {
        return Err(empty());
    }
    let mut out = Vec::new();
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(empty());
        }
        let idx = class_names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(item))
            .or_else(|| {
                item.parse::<usize>()
                    .ok()
                    .filter(|&i| i < class_names.len())
            })
            .ok_or_else(|| DataError::UnknownClass {
                name: item.to_string(),
                valid: format!(
                    "{} (or indices 0..={})",
                    class_names.join(", "),
                    class_names.len().saturating_sub(1)
                ),
            })?;
        if out.contains(&idx) {
            return Err(DataError::DuplicateClass {
                name: class_names[idx].clone(),
            });
        }
        out.push(idx);
    }
    Ok(out)
}

/// The data directory: `flag` if given, else `$ROBUSTNESS_DATA` if set and non-empty, else
/// `../shared/data` if that directory exists (relative to the current directory), else `None`.
pub fn resolve_data_dir(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(v) = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    let default = Path::new(DEFAULT_DATA_DIR);
    default.is_dir().then(|| default.to_path_buf())
}

/// Loads a data set's train/test split.
///
/// - `Digits`: the embedded data, split 1,437/360 by `seed`; `data_dir` is ignored.
/// - `Mnist`, `Cifar10`: read from `data_dir` (see [`mnist::load`], [`cifar10::load`]); when
///   `data_dir` is `None` it is found with [`resolve_data_dir`]`(None)`.
/// - `Synthetic`: generated from `synthetic` and `seed`; `data_dir` is ignored.
/// - `Folder`: the image folder `data_dir` (required: never looked up), images at their own size
///   (for resizing see [`FolderSource`]).
pub fn load(
    kind: DatasetKind,
    data_dir: Option<&Path>,
    seed: u64,
    synthetic: &SyntheticConfig,
) -> Result<Split, DataError> {
    let dir = || {
        data_dir
            .map(Path::to_path_buf)
            .or_else(|| resolve_data_dir(None))
            .ok_or(DataError::NoDataDir { kind })
    };
    match kind {
        DatasetKind::Digits => digits::load(seed),
        DatasetKind::Mnist => mnist::load(&dir()?),
        DatasetKind::Cifar10 => cifar10::load(&dir()?),
        DatasetKind::Synthetic => synthetic::generate(synthetic, seed),
        DatasetKind::Folder => folder::load(data_dir.ok_or(DataError::NoFolder)?, None),
    }
}

/// Formats `n` with thousands separators (`30730000` -> `"30,730,000"`), for error messages.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Reads a whole file, mapping errors to [`DataError::Io`] / [`DataError::NotFound`].
fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path: path.to_path_buf(),
                hint: "file does not exist".to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// True if `bytes` starts with the gzip magic number `1f 8b`.
fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses gzip data in memory; `path` names the source in errors.
fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers shared by the module's tests: a self-removing temporary directory.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A unique directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "robustness-data-test-{}-{tag}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir must be creatable in tests");
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The real-data directory if present: `$ROBUSTNESS_DATA`, `../shared/data` from the current
    /// directory, the crate's `../../../shared/data` or `../shared/data`, or `/work/shared/data`.
    pub fn real_data_dir() -> Option<PathBuf> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let candidates = [
            super::resolve_data_dir(None),
            Some(manifest.join("../../../shared/data")),
            Some(manifest.join("../shared/data")),
            Some(PathBuf::from("/work/shared/data")),
        ];
        candidates.into_iter().flatten().find(|p| p.is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        // 6 images of 1x1x2, labels 0,1,2,0,1,2; image i = [i, i + 0.5] / 10.
        let images = (0..6)
            .flat_map(|i| [i as f32 / 10.0, (i as f32 + 0.5) / 10.0])
            .collect();
        Dataset {
            name: "toy".into(),
            images,
            labels: vec![0, 1, 2, 0, 1, 2],
            channels: 1,
            height: 1,
            width: 2,
            class_names: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dataset_basics() {
        let d = toy();
        assert_eq!(d.len(), 6);
        assert!(!d.is_empty());
        assert_eq!(d.image_len(), 2);
        assert_eq!(d.num_classes(), 3);
        assert_eq!(d.image(2), &[0.2, 0.25]);
        assert_eq!(d.class_counts(), vec![2, 2, 2]);
        let s = d.subset(&[5, 0, 5]);
        assert_eq!(s.labels, vec![2, 0, 2]);
        assert_eq!(s.image(0), d.image(5));
        assert_eq!(s.image(1), d.image(0));
        assert!(d.subset(&[]).is_empty());
    }

    #[test]
    fn spread_samples_every_class_of_a_sorted_set() {
        // Sorted by class, as the shared CIFAR-10 files: the first 3 would all be class 0.
        let mut d = toy();
        d.labels = vec![0, 0, 1, 1, 2, 2];
        let s = d.spread(3);
        assert_eq!(s.labels, vec![0, 1, 2]);
        assert_eq!(s.image(1), d.image(2));
        assert_eq!(d.spread(100).len(), 6);
        assert_eq!(d.spread(6).labels, d.labels);
        assert!(d.spread(0).is_empty());
    }

    #[test]
    fn first_of_each_class_takes_every_class_in_order() {
        let mut d = toy();
        d.labels = vec![2, 0, 2, 1, 0, 2];
        assert_eq!(d.first_of_each_class(1), vec![1, 3, 0]);
        assert_eq!(d.first_of_each_class(2), vec![1, 4, 3, 0, 2]);
        assert!(d.first_of_each_class(0).is_empty());
    }

    #[test]
    fn select_classes_relabels_in_given_order() {
        let d = toy();
        let s = d.select_classes(&[2, 0]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.labels, vec![1, 0, 1, 0]);
        assert_eq!(s.class_names, names(&["c", "a"]));
        assert_eq!(s.image(0), d.image(0));
        assert_eq!(s.image(1), d.image(2));
        assert_eq!(s.class_counts(), vec![2, 2]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn select_classes_rejects_bad_class() {
        toy().select_classes(&[3]);
    }

    #[test]
    fn parse_classes_names_indices_mixed() {
        let cifar = names(&[
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]);
        assert_eq!(parse_classes("cat,dog", &cifar).ok(), Some(vec![3, 5]));
        assert_eq!(parse_classes("3,5", &cifar).ok(), Some(vec![3, 5]));
        assert_eq!(parse_classes(" Dog , 3 ", &cifar).ok(), Some(vec![5, 3]));
        let err = parse_classes("cat,zebra", &cifar)
            .err()
            .map(|e| e.to_string());
        let msg = err.unwrap_or_default();
        assert!(msg.contains("zebra") && msg.contains("airplane"), "{msg}");
        assert!(matches!(
            parse_classes("cat,3", &cifar),
            Err(DataError::DuplicateClass { .. })
        ));
        assert!(matches!(
            parse_classes("10", &cifar),
            Err(DataError::UnknownClass { .. })
        ));
        assert!(matches!(
            parse_classes("", &cifar),
            Err(DataError::EmptyClasses { .. })
        ));
        assert!(matches!(
            parse_classes("cat,,dog", &cifar),
            Err(DataError::EmptyClasses { .. })
        ));
        // Names take precedence over indices: "+1" is the name of class 1, "-1" of class 0.
        let syn = names(&["-1", "+1"]);
        assert_eq!(parse_classes("+1,-1", &syn).ok(), Some(vec![1, 0]));
    }

    #[test]
    fn dataset_kind_parse_display_serde() {
        for k in DatasetKind::ALL {
            assert_eq!(k.to_string().parse::<DatasetKind>().ok(), Some(k));
            let json = serde_json::to_string(&k).expect("serializing an enum cannot fail");
            assert_eq!(json, format!("\"{k}\""));
            let back: DatasetKind = serde_json::from_str(&json).expect("round trip");
            assert_eq!(back, k);
        }
        assert_eq!(
            "CIFAR".parse::<DatasetKind>().ok(),
            Some(DatasetKind::Cifar10)
        );
        let alias: DatasetKind = serde_json::from_str("\"cifar\"").expect("alias");
        assert_eq!(alias, DatasetKind::Cifar10);
        assert!(matches!(
            "imagenet".parse::<DatasetKind>(),
            Err(DataError::UnknownDataset { .. })
        ));
    }

    #[test]
    fn resolve_prefers_flag() {
        let p = Path::new("/some/where");
        assert_eq!(resolve_data_dir(Some(p)), Some(p.to_path_buf()));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(30_730_000), "30,730,000");
    }

    #[test]
    fn load_dispatch_without_files() {
        let cfg = SyntheticConfig {
            n_train: 10,
            n_test: 4,
            ..SyntheticConfig::default()
        };
        let s = load(DatasetKind::Synthetic, None, 1, &cfg).expect("synthetic needs no files");
        assert_eq!((s.train.len(), s.test.len()), (10, 4));
        let d = load(
            DatasetKind::Digits,
            Some(Path::new("/nonexistent")),
            1,
            &cfg,
        )
        .expect("digits are embedded");
        assert_eq!(d.train.len() + d.test.len(), 1797);
        let missing = load(
            DatasetKind::Cifar10,
            Some(Path::new("/nonexistent/robustness-data")),
            0,
            &cfg,
        );
        assert!(matches!(missing, Err(DataError::NotFound { .. })));
    }

    /// Loads the real data when present (`$ROBUSTNESS_DATA`, `../shared/data`, ...); skips otherwise.
    #[test]
    fn real_data_counts() {
        let Some(dir) = test_util::real_data_dir() else {
            eprintln!("skipping real_data_counts: ../shared/data not found (set {DATA_ENV})");
            return;
        };
        let cfg = SyntheticConfig::default();
        if dir.join("cifar10").is_dir() {
            let s = load(DatasetKind::Cifar10, Some(&dir), 0, &cfg).expect("real CIFAR-10 loads");
            assert_eq!((s.train.len(), s.test.len()), (50_000, 10_000));
            assert_eq!(s.train.class_counts(), vec![5000; 10]);
            assert_eq!(s.test.class_counts(), vec![1000; 10]);
            assert_eq!(s.train.class_names[3], "cat");
            assert_eq!(s.train.image_len(), 3 * 32 * 32);
            assert!(s.train.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
        } else {
            eprintln!("skipping CIFAR-10: {}/cifar10 not found", dir.display());
        }
        if dir.join("mnist").is_dir() {
            let s = load(DatasetKind::Mnist, Some(&dir), 0, &cfg).expect("real MNIST loads");
            assert_eq!((s.train.len(), s.test.len()), (60_000, 10_000));
            assert_eq!(s.train.image_len(), 28 * 28);
            // Known MNIST class counts.
            assert_eq!(
                s.train.class_counts(),
                vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
            );
            assert_eq!(
                s.test.class_counts(),
                vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
            );
        } else {
            eprintln!("skipping MNIST: {}/mnist not found", dir.display());
        }
    }
}
