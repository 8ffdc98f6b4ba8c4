//! CIFAR-10 loader for the official binary format (`data_batch_{1..5}.bin`, `test_batch.bin`,
//! `batches.meta.txt`), from a directory or straight from `cifar-10-binary.tar.gz` in memory.
//! Output: 50,000 train / 10,000 test images, `3x32x32`, values `byte / 255` in `[0, 1]`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Split};

/// Bytes per record: 1 label byte, then 1,024 R, 1,024 G and 1,024 B bytes (row-major planes).
pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;
/// Records per batch file in the official distribution.
pub const RECORDS_PER_FILE: usize = 10_000;
/// The training batch files, in load order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";
/// The class-name file (one name a line).
pub const META_FILE: &str = "batches.meta.txt";
/// The official archive's file name.
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";
/// Standard class names, used when `batches.meta.txt` is absent.
pub const CLASS_NAMES: [&str; 10] = [
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
];

const HINT: &str = "expected data_batch_1..5.bin and test_batch.bin in it, in its cifar10/ or \
                    cifar-10-batches-bin/ subfolder, or cifar-10-binary.tar.gz";

/// Where the files are.
enum Source {
    Dir(PathBuf),
    Archive(PathBuf),
}

/// Loads CIFAR-10, requiring the official 10,000 records per batch file.
///
/// `path` may be: the folder holding the `.bin` files; a parent holding `cifar10/`,
/// `cifar-10-batches-bin/` or `cifar10/cifar-10-batches-bin/`; the `cifar-10-binary.tar.gz`
/// archive itself (read in memory, never unpacked to disk); or a folder (or its `cifar10/`)
/// holding that archive. Class names come from `batches.meta.txt` (blank lines skipped, exactly
/// 10 names); if that file is absent the standard [`CLASS_NAMES`] are used.
pub fn load(path: &Path) -> Result<Split, DataError> {
    load_with(path, Some(RECORDS_PER_FILE))
}

/// Like [`load`], with the record count per file as a parameter: `Some(n)` requires exactly
/// `n * 3073` bytes per file; `None` accepts any non-zero multiple of 3,073 bytes.
pub fn load_with(path: &Path, records_per_file: Option<usize>) -> Result<Split, DataError> {
    match locate(path)? {
        Source::Dir(dir) => load_dir(&dir, records_per_file),
        Source::Archive(archive) => load_archive(&archive, records_per_file),
    }
}

fn locate(path: &Path) -> Result<Source, DataError> {
    if path.is_file() {
        return Ok(Source::Archive(path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(DataError::NotFound {
            path: path.to_path_buf(),
            hint: format!("CIFAR-10 data directory or archive: {HINT}"),
        });
    }
    let dirs = [
        path.to_path_buf(),
        path.join("cifar10"),
        path.join("cifar-10-batches-bin"),
        path.join("cifar10").join("cifar-10-batches-bin"),
    ];
    if let Some(dir) = dirs.iter().find(|d| d.join(TRAIN_FILES[0]).is_file()) {
        return Ok(Source::Dir(dir.clone()));
    }
    let archives = [
        path.join(ARCHIVE_NAME),
        path.join("cifar10").join(ARCHIVE_NAME),
    ];
    if let Some(a) = archives.iter().find(|a| a.is_file()) {
        return Ok(Source::Archive(a.clone()));
    }
    Err(DataError::NotFound {
        path: path.join(TRAIN_FILES[0]),
        hint: format!("no CIFAR-10 data in {}: {HINT}", path.display()),
    })
}

fn load_dir(dir: &Path, records: Option<usize>) -> Result<Split, DataError> {
    let mut train = Vec::with_capacity(TRAIN_FILES.len());
    for name in TRAIN_FILES {
        let path = dir.join(name);
        let bytes = super::read_file(&path)?;
        check_size(&path, &bytes, records)?;
        train.push((path, bytes));
    }
    let test_path = dir.join(TEST_FILE);
    let test_bytes = super::read_file(&test_path)?;
    check_size(&test_path, &test_bytes, records)?;
    let meta_path = dir.join(META_FILE);
    let class_names = if meta_path.is_file() {
        let text = super::read_file(&meta_path)?;
        parse_meta(&meta_path, &text)?
    } else {
        standard_names()
    };
    build(train, (test_path, test_bytes), class_names)
}

fn load_archive(archive: &Path, records: Option<usize>) -> Result<Split, DataError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let file = std::fs::File::open(archive).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path: archive.to_path_buf(),
                hint: "file does not exist".to_string(),
            }
        } else {
            DataError::Io {
                path: archive.to_path_buf(),
                source,
            }
        }
    })?;
    let mut reader = std::io::BufReader::new(file);
    let mut magic = [0u8; 2];
    let gz = reader.read_exact(&mut magic).is_ok() && super::is_gzip(&magic);
    // Re-chain the two peeked bytes in front of the rest of the stream.
    let stream = std::io::Cursor::new(magic).chain(reader);
    let stream: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(stream))
    } else {
        Box::new(stream)
    };
    let mut tar = tar::Archive::new(stream);

    let mut train: [Option<(PathBuf, Vec<u8>)>; 5] = Default::default();
    let mut test = None;
    let mut meta = None;
    for entry in tar.entries().map_err(io_err(archive))? {
        let mut entry = entry.map_err(io_err(archive))?;
        let entry_path = entry.path().map_err(io_err(archive))?.into_owned();
        let Some(name) = entry_path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let slot = if let Some(i) = TRAIN_FILES.iter().position(|f| *f == name) {
            &mut train[i]
        } else if name == TEST_FILE {
            &mut test
        } else if name == META_FILE {
            &mut meta
        } else {
            continue;
        };
        let member = archive.join(&entry_path);
        // The header's size is untrusted: cap the pre-allocation at 64 MiB.
        let hint = usize::try_from(entry.size()).unwrap_or(0).min(1 << 26);
        let mut bytes = Vec::with_capacity(hint);
        entry.read_to_end(&mut bytes).map_err(io_err(&member))?;
        *slot = Some((member, bytes));
    }

    let missing = |name: &str| DataError::NotFound {
        path: archive.join("cifar-10-batches-bin").join(name),
        hint: format!("archive {} lacks this member", archive.display()),
    };
    let mut train_files = Vec::with_capacity(TRAIN_FILES.len());
    for (slot, name) in train.into_iter().zip(TRAIN_FILES) {
        let (path, bytes) = slot.ok_or_else(|| missing(name))?;
        check_size(&path, &bytes, records)?;
        train_files.push((path, bytes));
    }
    let (test_path, test_bytes) = test.ok_or_else(|| missing(TEST_FILE))?;
    check_size(&test_path, &test_bytes, records)?;
    let class_names = match meta {
        Some((path, text)) => parse_meta(&path, &text)?,
        None => standard_names(),
    };
    build(train_files, (test_path, test_bytes), class_names)
}

fn standard_names() -> Vec<String> {
    CLASS_NAMES.iter().map(|s| s.to_string()).collect()
}

/// Checks a batch file's size: exactly `records * 3073` bytes, or a non-zero multiple of 3073.
fn check_size(path: &Path, bytes: &[u8], records: Option<usize>) -> Result<(), DataError> {
    let ok = match records {
        Some(n) => bytes.len() == n * RECORD_BYTES,
        None => !bytes.is_empty() && bytes.len().is_multiple_of(RECORD_BYTES),
    };
    if ok {
        return Ok(());
    }
    let expected = match records {
        Some(n) => format!(
            "{} bytes ({n} records of {RECORD_BYTES} bytes)",
            super::thousands(n * RECORD_BYTES)
        ),
        None => format!("a non-zero multiple of {RECORD_BYTES} bytes"),
    };
    Err(DataError::BadSize {
        path: path.to_path_buf(),
        expected,
        found: bytes.len(),
    })
}

/// Parses `batches.meta.txt`: one class name a line, blank lines skipped, exactly 10 names.
fn parse_meta(path: &Path, bytes: &[u8]) -> Result<Vec<String>, DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DataError::Parse {
        path: path.to_path_buf(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        message: format!("not UTF-8: {e}"),
    })?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() != CLASS_NAMES.len() {
        return Err(DataError::ClassNames {
            path: path.to_path_buf(),
            expected: CLASS_NAMES.len(),
            found: names.len(),
        });
    }
    Ok(names)
}

/// Converts size-checked batch files into a split; validates every label.
fn build(
    train: Vec<(PathBuf, Vec<u8>)>,
    test: (PathBuf, Vec<u8>),
    class_names: Vec<String>,
) -> Result<Split, DataError> {
    let train = decode("cifar10-train", &train, &class_names)?;
    let test = decode("cifar10-test", std::slice::from_ref(&test), &class_names)?;
    Ok(Split { train, test })
}

fn decode(
    name: &str,
    files: &[(PathBuf, Vec<u8>)],
    class_names: &[String],
) -> Result<Dataset, DataError> {
    let n: usize = files.iter().map(|(_, b)| b.len() / RECORD_BYTES).sum();
    let mut images = Vec::with_capacity(n * (RECORD_BYTES - 1));
    let mut labels = Vec::with_capacity(n);
    for (path, bytes) in files {
        for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let label = usize::from(chunk[0]);
            if label >= class_names.len() {
                return Err(DataError::BadLabel {
                    path: path.clone(),
                    record,
                    label,
                    max: class_names.len() - 1,
                });
            }
            labels.push(label);
            // The record's R, G, B planes are already the [C, H, W] layout.
            images.extend(chunk[1..].iter().map(|&b| f32::from(b) / 255.0));
        }
    }
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        class_names: class_names.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;

    /// `records` records; record r has label `(r + file) % 10` and every byte `= r + file`.
    fn batch(records: usize, file: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(records * RECORD_BYTES);
        for r in 0..records {
            out.push(((r + file) % 10) as u8);
            out.extend(std::iter::repeat_n((r + file) as u8, RECORD_BYTES - 1));
        }
        out
    }

    fn write_dir(dir: &Path, records: usize, meta: Option<&str>) {
        std::fs::create_dir_all(dir).expect("create test dir");
        for (i, f) in TRAIN_FILES.iter().enumerate() {
            std::fs::write(dir.join(f), batch(records, i)).expect("write batch");
        }
        std::fs::write(dir.join(TEST_FILE), batch(records, 7)).expect("write test batch");
        if let Some(m) = meta {
            std::fs::write(dir.join(META_FILE), m).expect("write meta");
        }
    }

    const META: &str = "a0\nb1\nc2\nd3\n\ne4\nf5\ng6\nh7\ni8\nj9\n\n";

    #[test]
    fn loads_small_dir_and_parent_layouts() {
        let tmp = TempDir::new("cifar-dir");
        let dir = tmp.path().join("cifar10");
        write_dir(&dir, 3, Some(META));
        for path in [dir.as_path(), tmp.path()] {
            let s = load_with(path, Some(3)).expect("valid small files load");
            assert_eq!((s.train.len(), s.test.len()), (15, 3));
            assert_eq!(s.train.image_len(), 3072);
            assert_eq!(s.train.class_names[4], "e4");
            // File 1 (data_batch_2), record 2: label 3, all bytes 3.
            assert_eq!(s.train.labels[3], 1);
            assert_eq!(s.train.labels[5], 3);
            assert!(s.train.image(5).iter().all(|&v| v == 3.0 / 255.0));
            assert_eq!(s.test.labels, vec![7, 8, 9]);
        }
        // Any-multiple mode also accepts them; the official count does not.
        assert!(load_with(&dir, None).is_ok());
        let err = load(&dir).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("30,730,000") && err.contains("9219"), "{err}");
    }

    #[test]
    fn batches_bin_layout_and_default_names() {
        let tmp = TempDir::new("cifar-bb");
        write_dir(&tmp.path().join("cifar-10-batches-bin"), 2, None);
        let s = load_with(tmp.path(), None).expect("loads");
        assert_eq!(s.train.class_names, standard_names());
    }

    #[test]
    fn truncated_file_is_rejected() {
        let tmp = TempDir::new("cifar-trunc");
        write_dir(tmp.path(), 2, None);
        let mut b = batch(2, 2);
        b.pop();
        std::fs::write(tmp.path().join("data_batch_3.bin"), b).expect("write");
        match load_with(tmp.path(), None) {
            Err(DataError::BadSize { path, found, .. }) => {
                assert!(path.ends_with("data_batch_3.bin"));
                assert_eq!(found, 2 * RECORD_BYTES - 1);
            }
            other => panic!("expected BadSize, got {other:?}"),
        }
    }

    #[test]
    fn bad_label_names_file_and_record() {
        let tmp = TempDir::new("cifar-label");
        write_dir(tmp.path(), 3, None);
        let mut b = batch(3, 0);
        b[2 * RECORD_BYTES] = 10;
        std::fs::write(tmp.path().join(TEST_FILE), b).expect("write");
        match load_with(tmp.path(), Some(3)) {
            Err(DataError::BadLabel {
                path,
                record,
                label,
                ..
            }) => {
                assert!(path.ends_with(TEST_FILE));
                assert_eq!((record, label), (2, 10));
            }
            other => panic!("expected BadLabel, got {other:?}"),
        }
    }

    #[test]
    fn missing_file_and_bad_meta() {
        let tmp = TempDir::new("cifar-missing");
        write_dir(tmp.path(), 1, Some("a\nb\n"));
        match load_with(tmp.path(), None) {
            Err(DataError::ClassNames {
                expected, found, ..
            }) => assert_eq!((expected, found), (10, 2)),
            other => panic!("expected ClassNames, got {other:?}"),
        }
        std::fs::remove_file(tmp.path().join("data_batch_4.bin")).expect("remove");
        match load_with(tmp.path(), None) {
            Err(DataError::NotFound { path, .. }) => assert!(path.ends_with("data_batch_4.bin")),
            other => panic!("expected NotFound, got {other:?}"),
        }
        let empty = TempDir::new("cifar-empty");
        assert!(matches!(
            load(empty.path()),
            Err(DataError::NotFound { .. })
        ));
    }

    fn write_archive(path: &Path, records: usize, skip: Option<&str>) {
        let file = std::fs::File::create(path).expect("create archive");
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        let mut add = |name: &str, data: &[u8]| {
            if skip == Some(name) {
                return;
            }
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("cifar-10-batches-bin/{name}"), data)
                .expect("append");
        };
        add("readme.html", b"<html></html>");
        add(META_FILE, META.as_bytes());
        add(TEST_FILE, &batch(records, 7));
        for (i, f) in TRAIN_FILES.iter().enumerate().rev() {
            add(f, &batch(records, i));
        }
        builder
            .into_inner()
            .and_then(|gz| gz.finish())
            .expect("finish archive");
    }

    #[test]
    fn loads_from_tar_gz_archive() {
        let tmp = TempDir::new("cifar-tgz");
        let archive = tmp.path().join(ARCHIVE_NAME);
        write_archive(&archive, 2, None);
        let from_dir = load_with(&archive, Some(2)).expect("archive path loads");
        let from_parent = load_with(tmp.path(), Some(2)).expect("dir holding archive loads");
        for s in [from_dir, from_parent] {
            assert_eq!((s.train.len(), s.test.len()), (10, 2));
            // Members were added in reverse order; batches must still be in 1..5 order.
            assert_eq!(s.train.labels, vec![0, 1, 1, 2, 2, 3, 3, 4, 4, 5]);
            assert_eq!(s.train.class_names[0], "a0");
        }
        write_archive(&archive, 2, Some("data_batch_5.bin"));
        match load_with(&archive, Some(2)) {
            Err(DataError::NotFound { path, .. }) => assert!(path.ends_with("data_batch_5.bin")),
            other => panic!("expected NotFound, got {other:?}"),
        }
        // A truncated archive fails with an I/O error naming the archive, not a panic.
        let bytes = std::fs::read(&archive).expect("read archive");
        std::fs::write(&archive, &bytes[..bytes.len() / 2]).expect("truncate");
        assert!(load_with(&archive, Some(2)).is_err());
    }
}
