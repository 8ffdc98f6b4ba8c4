//! The UCI 8x8 handwritten digits (1,797 images, 10 classes; E. Alpaydin, C. Kaynak, CC BY 4.0),
//! embedded in the binary as `digits.csv.gz` (see `digits-LICENSE.md`), so no files are needed.
//! Images `1x8x8`, values `count / 16` in `[0, 1]`; seeded stratified split 1,437 train / 360 test.

use std::io::Read;
use std::path::PathBuf;

use super::{DataError, Dataset, Split};

/// The embedded CSV (gzip): 1,797 lines of 64 pixel counts (0..=16) then the label (0..=9).
/// Taken unchanged from scikit-learn 1.9.1 (`sklearn/datasets/data/digits.csv.gz`).
const DIGITS_CSV_GZ: &[u8] = include_bytes!("digits.csv.gz");

/// Number of images.
pub const NUM_IMAGES: usize = 1797;
/// Test images in the split (20%, rounded up, as scikit-learn's `train_test_split`).
pub const NUM_TEST: usize = 360;
/// Image side length.
pub const SIDE: usize = 8;
/// Largest pixel value in the raw data (number of "on" pixels in a 4x4 block, plus 0).
pub const MAX_VALUE: u8 = 16;

fn source_path() -> PathBuf {
    PathBuf::from("<embedded>/digits.csv.gz")
}

/// All 1,797 images, in the file's order, as one data set named `"digits"`.
pub fn load_all() -> Result<Dataset, DataError> {
    let path = source_path();
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
    let mut images = Vec::with_capacity(NUM_IMAGES * SIDE * SIDE);
    let mut labels = Vec::with_capacity(NUM_IMAGES);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parse_err = |message: String| DataError::Parse {
            path: path.clone(),
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != SIDE * SIDE + 1 {
            return Err(parse_err(format!(
                "expected {} comma-separated fields, found {}",
                SIDE * SIDE + 1,
                fields.len()
            )));
        }
        for f in &fields[..SIDE * SIDE] {
            let v: u8 = f
                .trim()
                .parse()
                .ok()
                .filter(|&v| v <= MAX_VALUE)
                .ok_or_else(|| parse_err(format!("pixel '{f}' is not an integer 0..=16")))?;
            images.push(f32::from(v) / f32::from(MAX_VALUE));
        }
        let label_field = fields[SIDE * SIDE].trim();
        let label: usize = label_field
            .parse()
            .ok()
            .filter(|&l| l <= 9)
            .ok_or_else(|| parse_err(format!("label '{label_field}' is not a digit 0..=9")))?;
        labels.push(label);
    }
    Ok(Dataset {
        name: "digits".to_string(),
        images,
        labels,
        channels: 1,
        height: SIDE,
        width: SIDE,
        class_names: (0..10).map(|d| d.to_string()).collect(),
    })
}

/// The train/test split: 1,437 / 360 images, stratified by class, deterministic for `seed`
/// (see [`Dataset::stratified_split`]). Names are `"digits-train"` / `"digits-test"`.
pub fn load(seed: u64) -> Result<Split, DataError> {
    Ok(load_all()?.stratified_split(NUM_TEST, seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_counts() {
        let d = load_all().expect("embedded data parses");
        assert_eq!(d.len(), NUM_IMAGES);
        assert_eq!(d.images.len(), NUM_IMAGES * 64);
        assert_eq!(d.num_classes(), 10);
        assert_eq!(
            d.class_counts(),
            vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        );
        assert!(d.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(d.images.contains(&1.0));
        // First row of the file: 0,0,5,13,9,1,0,0,... label 0.
        assert_eq!(d.labels[0], 0);
        assert_eq!(&d.image(0)[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let a = load(7).expect("loads");
        let b = load(7).expect("loads");
        let c = load(8).expect("loads");
        assert_eq!((a.train.len(), a.test.len()), (1437, 360));
        assert_eq!(a.train.labels, b.train.labels);
        assert_eq!(a.test.images, b.test.images);
        assert_ne!(a.test.labels, c.test.labels);
        // Each class gets 20% of its images in the test set, within rounding.
        let total = load_all().expect("loads").class_counts();
        for (k, (&t, &all)) in a.test.class_counts().iter().zip(&total).enumerate() {
            let share = all as f64 * 360.0 / 1797.0;
            assert!((t as f64 - share).abs() < 1.0, "class {k}: {t} vs {share}");
        }
        let train_counts = a.train.class_counts();
        for k in 0..10 {
            assert_eq!(train_counts[k] + a.test.class_counts()[k], total[k]);
        }
        // Train and test are disjoint: no test image appears in train.
        let train: std::collections::HashSet<Vec<u32>> = (0..a.train.len())
            .map(|i| a.train.image(i).iter().map(|v| v.to_bits()).collect())
            .collect();
        let overlap = (0..a.test.len())
            .filter(|&i| {
                train.contains(
                    &a.test
                        .image(i)
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>(),
                )
            })
            .count();
        // The UCI data holds a few exact duplicate images; the split itself is disjoint by index.
        assert!(overlap < 10, "{overlap} test images also in train");
    }
}
