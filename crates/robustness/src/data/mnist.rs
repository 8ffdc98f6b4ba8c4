//! MNIST loader for the four idx files, each plain or gzip-compressed (detected by the gzip magic
//! `1f 8b`, not by the name). Output: 60,000 train / 10,000 test images, `1x28x28`, values
//! `byte / 255` in `[0, 1]`, class names `"0"`..`"9"`.

use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Split};

/// Magic number of an idx3 (unsigned byte, 3 dimensions) image file.
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an idx1 (unsigned byte, 1 dimension) label file.
pub const LABELS_MAGIC: u32 = 2049;
/// Image side length.
pub const SIDE: usize = 28;
/// Training images file name (a `.gz` suffix is also accepted).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Training labels file name.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Test images file name.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Test labels file name.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// Loads MNIST from `path`: the folder holding the four idx files (each plain or `.gz`), or a
/// parent holding `mnist/` or `MNIST/raw/` (torchvision's layout). Image and label counts must
/// match; images must be 28x28; labels must be 0..=9.
pub fn load(path: &Path) -> Result<Split, DataError> {
    let dir = locate(path)?;
    let train = load_pair(&dir, TRAIN_IMAGES, TRAIN_LABELS, "mnist-train")?;
    let test = load_pair(&dir, TEST_IMAGES, TEST_LABELS, "mnist-test")?;
    Ok(Split { train, test })
}

fn locate(path: &Path) -> Result<PathBuf, DataError> {
    let candidates = [
        path.to_path_buf(),
        path.join("mnist"),
        path.join("MNIST").join("raw"),
    ];
    candidates
        .into_iter()
        .find(|d| find_file(d, TRAIN_IMAGES).is_some())
        .ok_or_else(|| DataError::NotFound {
            path: path.join(TRAIN_IMAGES),
            hint: format!(
                "no MNIST data in {}: expected {TRAIN_IMAGES}[.gz], {TRAIN_LABELS}[.gz], \
                 {TEST_IMAGES}[.gz], {TEST_LABELS}[.gz] in it or in its mnist/ subfolder",
                path.display()
            ),
        })
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    [plain, gz].into_iter().find(|p| p.is_file())
}

/// Reads a file, decompressing it if it starts with the gzip magic.
fn read_maybe_gz(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let path = find_file(dir, name).ok_or_else(|| DataError::NotFound {
        path: dir.join(name),
        hint: format!("neither {name} nor {name}.gz exists"),
    })?;
    let bytes = super::read_file(&path)?;
    let bytes = if super::is_gzip(&bytes) {
        super::gunzip(&bytes, &path)?
    } else {
        bytes
    };
    Ok((path, bytes))
}

fn load_pair(dir: &Path, images: &str, labels: &str, name: &str) -> Result<Dataset, DataError> {
    let (images_path, image_bytes) = read_maybe_gz(dir, images)?;
    let pixels = parse_images(&images_path, &image_bytes)?;
    let (labels_path, label_bytes) = read_maybe_gz(dir, labels)?;
    let labels = parse_labels(&labels_path, &label_bytes)?;
    let n_images = pixels.len() / (SIDE * SIDE);
    if n_images != labels.len() {
        return Err(DataError::CountMismatch {
            images_path,
            labels_path,
            images: n_images,
            labels: labels.len(),
        });
    }
    Ok(Dataset {
        name: name.to_string(),
        images: pixels.iter().map(|&b| f32::from(b) / 255.0).collect(),
        labels,
        channels: 1,
        height: SIDE,
        width: SIDE,
        class_names: (0..10).map(|d| d.to_string()).collect(),
    })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let word: [u8; 4] = bytes[at..at + 4]
        .try_into()
        .expect("slice of length 4 converts to [u8; 4]");
    u32::from_be_bytes(word)
}

/// Checks the header and exact length of an idx file; returns its payload.
fn payload<'a>(
    path: &Path,
    bytes: &'a [u8],
    header: usize,
    len: usize,
    what: &str,
) -> Result<&'a [u8], DataError> {
    let expected = len.saturating_add(header);
    if bytes.len() < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            found: bytes.len(),
        });
    }
    if bytes.len() > expected {
        return Err(DataError::BadSize {
            path: path.to_path_buf(),
            expected: format!(
                "{} bytes ({header}-byte header + {what})",
                super::thousands(expected)
            ),
            found: bytes.len(),
        });
    }
    Ok(&bytes[header..])
}

fn check_magic(path: &Path, bytes: &[u8], header: usize, magic: u32) -> Result<(), DataError> {
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header,
            found: bytes.len(),
        });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: magic,
            found,
        });
    }
    Ok(())
}

/// Parses an idx3 image file (decompressed); returns `n * 28 * 28` pixel bytes.
fn parse_images<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], DataError> {
    check_magic(path, bytes, IMAGES_HEADER, IMAGES_MAGIC)?;
    let n = be_u32(bytes, 4) as usize;
    let (rows, cols) = (be_u32(bytes, 8) as usize, be_u32(bytes, 12) as usize);
    if (rows, cols) != (SIDE, SIDE) {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            what: "image dimensions",
            expected: format!("{SIDE}x{SIDE}"),
            found: format!("{rows}x{cols}"),
        });
    }
    payload(
        path,
        bytes,
        IMAGES_HEADER,
        n.saturating_mul(SIDE * SIDE),
        &format!("{n} images of {SIDE}x{SIDE}"),
    )
}

/// Parses an idx1 label file (decompressed); every label must be 0..=9.
fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Vec<usize>, DataError> {
    check_magic(path, bytes, LABELS_HEADER, LABELS_MAGIC)?;
    let n = be_u32(bytes, 4) as usize;
    let data = payload(path, bytes, LABELS_HEADER, n, &format!("{n} labels"))?;
    data.iter()
        .enumerate()
        .map(|(record, &b)| {
            if b <= 9 {
                Ok(usize::from(b))
            } else {
                Err(DataError::BadLabel {
                    path: path.to_path_buf(),
                    record,
                    label: usize::from(b),
                    max: 9,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;
    use std::io::Write;

    fn idx_images(n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, n as u32, SIDE as u32, SIDE as u32] {
            v.extend(x.to_be_bytes());
        }
        for i in 0..n {
            v.extend(std::iter::repeat_n((i * 50) as u8, SIDE * SIDE));
        }
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(LABELS_MAGIC.to_be_bytes());
        v.extend((labels.len() as u32).to_be_bytes());
        v.extend(labels);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).expect("writing to a Vec cannot fail");
        e.finish().expect("writing to a Vec cannot fail")
    }

    /// Writes a 3-train / 2-test set; `gzip` picks compressed `.gz` files or plain ones.
    fn write_set(dir: &Path, gzip: bool) {
        std::fs::create_dir_all(dir).expect("create dir");
        let files = [
            (TRAIN_IMAGES, idx_images(3)),
            (TRAIN_LABELS, idx_labels(&[5, 0, 9])),
            (TEST_IMAGES, idx_images(2)),
            (TEST_LABELS, idx_labels(&[1, 2])),
        ];
        for (name, bytes) in files {
            if gzip {
                std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).expect("write");
            } else {
                std::fs::write(dir.join(name), bytes).expect("write");
            }
        }
    }

    fn check(s: &Split) {
        assert_eq!((s.train.len(), s.test.len()), (3, 2));
        assert_eq!(s.train.labels, vec![5, 0, 9]);
        assert_eq!(s.test.labels, vec![1, 2]);
        assert_eq!(s.train.image_len(), 784);
        assert!(s.train.image(2).iter().all(|&v| v == 100.0 / 255.0));
        assert_eq!(s.train.num_classes(), 10);
    }

    #[test]
    fn loads_plain_and_gz_from_dir_or_parent() {
        let plain = TempDir::new("mnist-plain");
        write_set(plain.path(), false);
        check(&load(plain.path()).expect("plain loads"));
        let gzd = TempDir::new("mnist-gz");
        write_set(&gzd.path().join("mnist"), true);
        check(&load(gzd.path()).expect("gz in parent loads"));
    }

    #[test]
    fn gzip_detected_by_magic_not_name() {
        let tmp = TempDir::new("mnist-magic");
        write_set(tmp.path(), false);
        // A gzip stream under the plain name, and a plain file under a .gz name.
        let p = tmp.path().join(TRAIN_IMAGES);
        std::fs::write(&p, gz(&idx_images(3))).expect("write");
        std::fs::remove_file(tmp.path().join(TEST_LABELS)).expect("remove");
        std::fs::write(
            tmp.path().join(format!("{TEST_LABELS}.gz")),
            idx_labels(&[1, 2]),
        )
        .expect("write");
        check(&load(tmp.path()).expect("loads"));
    }

    #[test]
    fn wrong_magic() {
        let tmp = TempDir::new("mnist-badmagic");
        write_set(tmp.path(), false);
        std::fs::write(tmp.path().join(TRAIN_LABELS), idx_images(3)).expect("write");
        match load(tmp.path()) {
            Err(DataError::BadMagic {
                path,
                expected,
                found,
            }) => {
                assert!(path.ends_with(TRAIN_LABELS));
                assert_eq!((expected, found), (LABELS_MAGIC, IMAGES_MAGIC));
            }
            other => panic!("expected BadMagic, got {other:?}"),
        }
    }

    #[test]
    fn truncated_and_oversized() {
        let tmp = TempDir::new("mnist-trunc");
        write_set(tmp.path(), false);
        let mut b = idx_images(3);
        b.truncate(b.len() - 10);
        std::fs::write(tmp.path().join(TRAIN_IMAGES), &b).expect("write");
        match load(tmp.path()) {
            Err(DataError::Truncated {
                expected, found, ..
            }) => assert_eq!((expected, found), (16 + 3 * 784, 16 + 3 * 784 - 10)),
            other => panic!("expected Truncated, got {other:?}"),
        }
        std::fs::write(tmp.path().join(TRAIN_IMAGES), &b[..7]).expect("write");
        assert!(matches!(load(tmp.path()), Err(DataError::Truncated { .. })));
        let mut b = idx_images(3);
        b.push(0);
        std::fs::write(tmp.path().join(TRAIN_IMAGES), &b).expect("write");
        assert!(matches!(load(tmp.path()), Err(DataError::BadSize { .. })));
        // A truncated gzip stream is an I/O error naming the file.
        let g = gz(&idx_images(3));
        std::fs::write(tmp.path().join(TRAIN_IMAGES), &g[..g.len() / 2]).expect("write");
        match load(tmp.path()) {
            Err(DataError::Io { path, .. }) => assert!(path.ends_with(TRAIN_IMAGES)),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn count_mismatch_dims_and_label_range() {
        let tmp = TempDir::new("mnist-count");
        write_set(tmp.path(), false);
        std::fs::write(tmp.path().join(TEST_LABELS), idx_labels(&[1, 2, 3])).expect("write");
        match load(tmp.path()) {
            Err(DataError::CountMismatch { images, labels, .. }) => {
                assert_eq!((images, labels), (2, 3))
            }
            other => panic!("expected CountMismatch, got {other:?}"),
        }
        std::fs::write(tmp.path().join(TEST_LABELS), idx_labels(&[1, 12])).expect("write");
        match load(tmp.path()) {
            Err(DataError::BadLabel { record, label, .. }) => assert_eq!((record, label), (1, 12)),
            other => panic!("expected BadLabel, got {other:?}"),
        }
        let mut b = idx_images(2);
        b[8..12].copy_from_slice(&27u32.to_be_bytes());
        std::fs::write(tmp.path().join(TEST_IMAGES), &b).expect("write");
        let msg = load(tmp.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("28x28") && msg.contains("27x28"), "{msg}");
        let empty = TempDir::new("mnist-empty");
        assert!(matches!(
            load(empty.path()),
            Err(DataError::NotFound { .. })
        ));
    }
}
