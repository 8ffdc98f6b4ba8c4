//! Image-folder data sets (`--dataset folder:ROOT`): the layout of torchvision's `ImageFolder`
//! and of the reference library's CINIC-10 and ImageNet sets.
//!
//! ```text
//! ROOT/train/<class>/<image>.png     training images, one folder per class
//! ROOT/test/<class>/<image>.jpg      test images (or ROOT/val/..., ROOT/valid/...)
//! ```
//!
//! As in `ImageFolder`: the classes are the sub-folders of `train/`, sorted by name (label =
//! position); the images of a class are the files under its folder (sub-folders included) with an
//! image extension ([`EXTENSIONS`], any case), in torchvision's order (folder by folder, a
//! folder's own files first, each folder's by name); other files and hidden entries are
//! skipped; every image is converted to RGB (grey levels repeated, alpha dropped), values
//! `byte / 255` in `[0, 1]`. The test split is `test/`, else `val/`, else `valid/` (CINIC-10 has
//! all three: `test/` is used), and must have the same class folders.
//!
//! All images must share one size, unless an image size `N` is given: then each is resized so
//! that its shorter side is `N` (bilinear, aspect kept) and centre-cropped to `N x N`, the
//! `Resize(N)` + `CenterCrop(N)` of torchvision; with a resize side `R >= N` as well, the shorter
//! side becomes `R` before the `N x N` centre crop (`Resize(R)` + `CenterCrop(N)`: ImageNet's
//! usual test transform is `R = 256`, `N = 224`). Images are decoded in parallel; the order, and
//! so the data set, does not depend on the number of threads.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use serde::{Deserialize, Serialize};

use super::{DataError, Dataset, Split};

/// The training split's folder.
pub const TRAIN_DIR: &str = "train";
/// The test split's folder, in order of preference.
pub const TEST_DIRS: [&str; 3] = ["test", "val", "valid"];
/// File extensions read as images (compared case-insensitively).
pub const EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "bmp", "ppm", "pgm", "pbm", "pnm", "webp",
];

/// An image folder and how its images are sized: enough to load it again (recorded in a run's
/// `config.json` and a constructed set's metadata).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderSource {
    /// The folder holding `train/` and `test/` (or `val/`, `valid/`), as given.
    pub root: PathBuf,
    /// Resize (shorter side) and centre-crop every image to `image_size x image_size`;
    /// `None`: the images' own size, which they must share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// With `image_size`: scale the shorter side to this (`>= image_size`) before the centre
    /// crop; `None`: to `image_size` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
}

/// How images are brought to one size: the shorter side scaled to `resize` (bilinear), then the
/// central `crop x crop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sizing {
    resize: usize,
    crop: usize,
}

impl Sizing {
    /// `Resize(n)` + `CenterCrop(n)`.
    fn square(image_size: Option<usize>) -> Option<Sizing> {
        image_size.map(|n| Sizing { resize: n, crop: n })
    }
}

impl FolderSource {
    /// A folder read at the images' own size.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            image_size: None,
            resize: None,
        }
    }

    /// The sizing of `image_size` and `resize`, checked: an error for a resize side without an
    /// image size, or smaller than it.
    fn sizing(&self) -> Result<Option<Sizing>, DataError> {
        match (self.image_size, self.resize) {
            (n, None) => Ok(Sizing::square(n)),
            (Some(crop), Some(resize)) if resize >= crop => Ok(Some(Sizing { resize, crop })),
            (Some(crop), Some(resize)) => Err(layout_error(
                &self.root,
                &format!(
                    "resize side {resize} is smaller than the image size {crop}: the crop would not fit"
                ),
            )),
            (None, Some(_)) => Err(layout_error(
                &self.root,
                "a resize side needs an image size (--resize R with --image-size N)",
            )),
        }
    }

    /// Loads the train and test splits ([`load`]).
    pub fn load(&self) -> Result<Split, DataError> {
        self.load_classes(None)
    }

    /// Loads only the classes named in `keep` ([`load_classes`]).
    pub fn load_classes(&self, keep: Option<&[String]>) -> Result<Split, DataError> {
        let (train, test) = load_splits(&self.root, self.sizing()?, keep, true, None)?;
        let train =
            train.ok_or_else(|| layout_error(&self.root, "the training split was not read"))?;
        Ok(Split { train, test })
    }

    /// Loads only the test split of the classes named in `keep` ([`load_test_classes`]).
    pub fn load_test_classes(
        &self,
        keep: Option<&[String]>,
        limit: Option<usize>,
    ) -> Result<Dataset, DataError> {
        Ok(load_splits(&self.root, self.sizing()?, keep, false, limit)?.1)
    }
}

/// Loads `root/train` and `root/test` (or `val`, `valid`); see the module documentation.
///
/// Errors: `root` or `train/` missing, no test folder, no class folder, a class without images,
/// test classes that differ from the training classes, an image that cannot be decoded, images of
/// different sizes without `image_size`, `image_size` 0.
pub fn load(root: &Path, image_size: Option<usize>) -> Result<Split, DataError> {
    load_classes(root, image_size, None)
}

/// [`load`] restricted to the classes named in `keep` (all when `None`): only their images are
/// read, and the result is the full set's images of those classes, in the same order, labelled
/// by their position among the kept classes (sorted by name, as in the full set). A class subset
/// of a large folder (`--classes`) thus costs only its own images. Errors also on a name that
/// is not a class.
pub fn load_classes(
    root: &Path,
    image_size: Option<usize>,
    keep: Option<&[String]>,
) -> Result<Split, DataError> {
    FolderSource {
        image_size,
        ..FolderSource::new(root)
    }
    .load_classes(keep)
}

/// The test split of [`load_classes`], without decoding (or holding in memory) a single
/// training image: what evaluation needs, e.g. ImageNet's 50,000 validation images without its
/// 1.28 million training ones. The layout checks are those of [`load_classes`] (`train/` is
/// still listed: it defines the classes). With `limit`, only the images that
/// [`Dataset::spread`]`(limit)` would keep are decoded (the result equals the spread of the
/// whole split).
pub fn load_test_classes(
    root: &Path,
    image_size: Option<usize>,
    keep: Option<&[String]>,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    FolderSource {
        image_size,
        ..FolderSource::new(root)
    }
    .load_test_classes(keep, limit)
}

/// [`load_classes`], decoding the training split only `with_train`, and of the test split only
/// the `Dataset::spread(limit)` images.
fn load_splits(
    root: &Path,
    sizing: Option<Sizing>,
    keep: Option<&[String]>,
    with_train: bool,
    test_limit: Option<usize>,
) -> Result<(Option<Dataset>, Dataset), DataError> {
    let train_dir = train_dir(root, sizing.map(|s| s.crop))?;
    let test_dir = TEST_DIRS
        .iter()
        .map(|d| root.join(d))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::NotFound {
            path: root.join(TEST_DIRS[0]),
            hint: format!(
                "no test split: looked for {} under {}",
                TEST_DIRS.join("/, ") + "/",
                root.display()
            ),
        })?;
    let class_names = class_folders(&train_dir)?;
    let test_classes = class_folders(&test_dir)?;
    if test_classes != class_names {
        let missing: Vec<&str> = class_names
            .iter()
            .filter(|c| !test_classes.contains(c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = test_classes
            .iter()
            .filter(|c| !class_names.contains(c))
            .map(String::as_str)
            .collect();
        return Err(layout_error(
            &test_dir,
            &format!(
                "its class folders differ from {}: missing [{}], not in training [{}]",
                train_dir.display(),
                missing.join(", "),
                extra.join(", ")
            ),
        ));
    }
    let class_names = match keep {
        None => class_names,
        Some(keep) => {
            if let Some(bad) = keep.iter().find(|k| !class_names.contains(k)) {
                return Err(layout_error(
                    &train_dir,
                    &format!("no class folder '{bad}'"),
                ));
            }
            class_names
                .into_iter()
                .filter(|c| keep.contains(c))
                .collect()
        }
    };
    let name = root.file_name().map_or_else(
        || "folder".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let train_files = image_files(&train_dir, &class_names)?;
    let mut test_files = image_files(&test_dir, &class_names)?;
    if let Some(limit) = test_limit {
        // Dataset::spread's choice, made on the file list.
        let (len, n) = (test_files.len(), limit.min(test_files.len()));
        test_files = (0..n).map(|i| test_files[i * len / n].clone()).collect();
    }
    // Without a target size, every image (both splits) must have the first one's size.
    let size = match sizing {
        Some(s) => (s.crop, s.crop),
        None => {
            let (first, _) = &train_files[0];
            let (w, h) = image::image_dimensions(first).map_err(|e| decode_error(first, &e))?;
            (h as usize, w as usize)
        }
    };
    let decoded = if with_train { train_files.len() } else { 0 } + test_files.len();
    let values = decoded as u64 * 3 * size.0 as u64 * size.1 as u64;
    fits_in_memory(root, values * 4, available_memory())?;
    let train = if with_train {
        Some(decode_all(
            &format!("{name}-train"),
            &train_files,
            &class_names,
            size,
            sizing,
        )?)
    } else {
        None
    };
    let test = decode_all(
        &format!("{name}-test"),
        &test_files,
        &class_names,
        size,
        sizing,
    )?;
    Ok((train, test))
}

/// The shape (`[3, H, W]`) and class names a model of the folder at `root` has, without
/// decoding the images: the training classes, and `image_size` or the first training image's
/// size (header only). Errors as [`load`] for the training split's layout.
pub fn layout(
    root: &Path,
    image_size: Option<usize>,
) -> Result<([usize; 3], Vec<String>), DataError> {
    let train_dir = train_dir(root, image_size)?;
    let class_names = class_folders(&train_dir)?;
    let (h, w) = match image_size {
        Some(n) => (n, n),
        None => {
            let files = image_files(&train_dir, &class_names[..1])?;
            let (first, _) = &files[0];
            let (w, h) = image::image_dimensions(first).map_err(|e| decode_error(first, &e))?;
            (h as usize, w as usize)
        }
    };
    Ok(([3, h, w], class_names))
}

/// `root/train`, after checking it, `root` and `image_size` (not 0).
fn train_dir(root: &Path, image_size: Option<usize>) -> Result<PathBuf, DataError> {
    if image_size == Some(0) {
        return Err(layout_error(
            root,
            "image size 0: give a positive --image-size",
        ));
    }
    if !root.is_dir() {
        return Err(DataError::NotFound {
            path: root.to_path_buf(),
            hint: format!(
                "no such folder: an image folder holds {TRAIN_DIR}/<class>/<images> and test/<class>/<images>"
            ),
        });
    }
    let dir = root.join(TRAIN_DIR);
    if !dir.is_dir() {
        return Err(DataError::NotFound {
            path: dir,
            hint: "an image folder holds train/<class>/<images> and test/<class>/<images> (or val/, valid/)"
                .to_string(),
        });
    }
    Ok(dir)
}

/// Bytes of memory available (`MemAvailable` of `/proc/meminfo`); `None` where unknown.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a folder whose images, as f32, would not fit in the available memory (rather than
/// let the system kill the process part-way through decoding).
fn fits_in_memory(root: &Path, bytes: u64, available: Option<u64>) -> Result<(), DataError> {
    const GIB: f64 = (1u64 << 30) as f64;
    match available {
        Some(free) if bytes > free => Err(layout_error(
            root,
            &format!(
                "its images need {:.1} GiB in memory as f32, but {:.1} GiB is available: give a smaller --image-size, or a folder with fewer images or classes",
                bytes as f64 / GIB,
                free as f64 / GIB
            ),
        )),
        _ => Ok(()),
    }
}

/// A layout error about `path`.
fn layout_error(path: &Path, message: &str) -> DataError {
    DataError::Folder {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn decode_error(path: &Path, e: &image::ImageError) -> DataError {
    DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Entries of `dir` that are not hidden, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// The class folders of a split: its sub-folders' names, sorted.
fn class_folders(split: &Path) -> Result<Vec<String>, DataError> {
    let classes: Vec<String> = sorted_entries(split)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if classes.is_empty() {
        return Err(layout_error(
            split,
            "no class folders: put each class's images in a folder named after the class",
        ));
    }
    Ok(classes)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The image files of every class, class by class, each class's in torchvision's order (sub-folders
/// included), with their labels. Errors on a class without images.
fn image_files(split: &Path, classes: &[String]) -> Result<Vec<(PathBuf, usize)>, DataError> {
    let mut out = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = split.join(class);
        let mut files = Vec::new();
        let mut pending = vec![dir.clone()];
        while let Some(d) = pending.pop() {
            for p in sorted_entries(&d)? {
                if p.is_dir() {
                    pending.push(p);
                } else if is_image(&p) {
                    files.push(p);
                }
            }
        }
        if files.is_empty() {
            return Err(layout_error(
                &dir,
                &format!("no images (read: .{})", EXTENSIONS.join(", .")),
            ));
        }
        // torchvision's order: folder by folder (`sorted(os.walk(...))`: a folder's own files
        // before its sub-folders'), each folder's files by name.
        files.sort_by(|a, b| {
            (a.parent().map(Path::as_os_str), a.file_name())
                .cmp(&(b.parent().map(Path::as_os_str), b.file_name()))
        });
        out.extend(files.into_iter().map(|f| (f, label)));
    }
    Ok(out)
}

/// Decodes `files` into a data set of `size = (height, width)` RGB images, in parallel.
fn decode_all(
    name: &str,
    files: &[(PathBuf, usize)],
    class_names: &[String],
    size: (usize, usize),
    sizing: Option<Sizing>,
) -> Result<Dataset, DataError> {
    let (h, w) = size;
    let image_len = 3 * h * w;
    let mut images = vec![0f32; files.len() * image_len];
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(files.len().max(1));
    let per_thread = files.len().div_ceil(threads).max(1);
    let results: Vec<Result<(), DataError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = images
            .chunks_mut(per_thread * image_len)
            .zip(files.chunks(per_thread))
            .map(|(out, files)| {
                scope.spawn(move || {
                    for ((path, _), out) in files.iter().zip(out.chunks_exact_mut(image_len)) {
                        decode_into(path, size, sizing, out)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(layout_error(
                        Path::new(name),
                        "an image-decoding thread panicked",
                    ))
                })
            })
            .collect()
    });
    // The first error in file order, whatever the threads.
    results.into_iter().collect::<Result<(), DataError>>()?;
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels: files.iter().map(|&(_, l)| l).collect(),
        channels: 3,
        height: h,
        width: w,
        class_names: class_names.to_vec(),
    })
}

/// Decodes one image into `out` (`[3, h, w]`, values in `[0, 1]`): resized and centre-cropped
/// to `size` when `resize`, else required to be that size.
fn decode_into(
    path: &Path,
    (h, w): (usize, usize),
    sizing: Option<Sizing>,
    out: &mut [f32],
) -> Result<(), DataError> {
    let decoded = image::ImageReader::open(path)
        .map_err(|e| io_error(path, e))?
        .with_guessed_format()
        .map_err(|e| io_error(path, e))?
        .decode()
        .map_err(|e| decode_error(path, &e))?;
    let mut rgb = decoded.to_rgb8();
    if let Some(s) = sizing {
        rgb = resize_center_crop(&rgb, s.resize, s.crop);
    } else if (rgb.height() as usize, rgb.width() as usize) != (h, w) {
        return Err(layout_error(
            path,
            &format!(
                "{}x{} pixels, but the first training image is {w}x{h}: give --image-size N to resize and centre-crop every image to NxN",
                rgb.width(),
                rgb.height()
            ),
        ));
    }
    let plane = h * w;
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(px[c]) / 255.0;
        }
    }
    Ok(())
}

/// torchvision's `Resize(r)` then `CenterCrop(n)` (`r >= n`): the shorter side scaled to `r`
/// (the longer to `floor(r * long / short)`), bilinear, then the central `n x n`, its offset
/// `(side - n) / 2` rounded half to even as torchvision's `round` does.
fn resize_center_crop(img: &image::RgbImage, r: usize, n: usize) -> image::RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (nw, nh) = if w <= h {
        (r, (r * h / w.max(1)).max(r))
    } else {
        ((r * w / h.max(1)).max(r), r)
    };
    let resized = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, nw as u32, nh as u32, FilterType::Triangle)
    };
    let offset = |side: usize| ((side - n) as f64 / 2.0).round_ties_even() as u32;
    let (left, top) = (offset(nw), offset(nh));
    imageops::crop_imm(&resized, left, top, n as u32, n as u32).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;

    /// Writes a `w x h` RGB PNG whose pixel (x, y) is `(seed, x, y)`.
    fn png(path: &Path, w: u32, h: u32, seed: u8) {
        std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("test folder");
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([seed, x as u8, y as u8]));
        img.save(path).expect("test PNG must be writable");
    }

    /// root/{train,test}/{cat,dog}: 3 training and 1 test image per class, 4x2 pixels.
    fn toy(root: &Path) {
        for (split, n) in [("train", 3u8), ("test", 1)] {
            for (c, class) in ["dog", "cat"].iter().enumerate() {
                for i in 0..n {
                    png(
                        &root.join(split).join(class).join(format!("{i}.png")),
                        4,
                        2,
                        10 * c as u8 + i,
                    );
                }
            }
        }
    }

    #[test]
    fn loads_classes_sorted_images_as_rgb_planes() {
        let dir = TempDir::new("folder-basic");
        toy(dir.path());
        // Files that are not images, and hidden ones, are skipped.
        std::fs::write(dir.path().join("train/cat/notes.txt"), "x").expect("write");
        png(&dir.path().join("train/cat/.hidden.png"), 9, 9, 0);
        // A sub-folder's images belong to the class.
        png(&dir.path().join("train/cat/more/3.PNG"), 4, 2, 99);
        // As torchvision: a folder's own files come before its sub-folders', whatever the names.
        png(&dir.path().join("train/cat/zz.png"), 4, 2, 77);
        let split = load(dir.path(), None).expect("a valid folder loads");
        let (train, test) = (&split.train, &split.test);
        assert_eq!(train.class_names, vec!["cat", "dog"]);
        assert_eq!(train.labels, vec![0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!(test.labels, vec![0, 1]);
        assert_eq!((train.channels, train.height, train.width), (3, 2, 4));
        // cat = the second class written (seed 10 + i); order: 0, 1, 2, zz, more/3.
        let first = train.image(0);
        assert_eq!(first[0], 10.0 / 255.0); // R plane, pixel (0, 0)
        assert_eq!(first[8 + 3], 3.0 / 255.0); // G plane = x, pixel (3, 0)
        assert_eq!(first[16 + 4], 1.0 / 255.0); // B plane = y, pixel (0, 1)
        assert_eq!(train.image(3)[0], 77.0 / 255.0);
        assert_eq!(train.image(4)[0], 99.0 / 255.0);
        assert_eq!(train.image(5)[0], 0.0); // dog, i = 0
        assert!(train.name.ends_with("-train"));
    }

    #[test]
    fn falls_back_to_val_and_resizes_with_a_centre_crop() {
        let dir = TempDir::new("folder-val");
        png(&dir.path().join("train/a/0.png"), 8, 4, 1);
        png(&dir.path().join("train/b/0.png"), 4, 8, 2);
        png(&dir.path().join("val/a/0.png"), 6, 6, 3);
        png(&dir.path().join("val/b/0.jpg"), 6, 6, 4);
        let split = load(dir.path(), Some(2)).expect("val/ serves as the test split");
        assert_eq!((split.train.height, split.train.width), (2, 2));
        assert_eq!(split.test.len(), 2);
        // 8x4 -> 4x2 (shorter side 2) -> central 2x2: columns 1..3 of the 4.
        let img = image::RgbImage::from_fn(8, 4, |x, y| image::Rgb([1, x as u8, y as u8]));
        let want = resize_center_crop(&img, 2, 2);
        assert_eq!((want.width(), want.height()), (2, 2));
        let resized = imageops::resize(&img, 4, 2, FilterType::Triangle);
        assert_eq!(want.get_pixel(0, 0), resized.get_pixel(1, 0));
        assert_eq!(
            split.train.image(0)[2],
            f32::from(want.get_pixel(0, 1)[0]) / 255.0
        );
    }

    #[test]
    fn a_class_subset_reads_only_its_classes_and_equals_the_full_sets_selection() {
        let dir = TempDir::new("folder-keep");
        toy(dir.path());
        png(&dir.path().join("train/bird/0.png"), 4, 2, 50);
        png(&dir.path().join("test/bird/0.png"), 4, 2, 51);
        let full = load(dir.path(), None).expect("loads");
        assert_eq!(full.train.class_names, vec!["bird", "cat", "dog"]);
        // Order of `keep` does not matter: the kept classes stay in the folder's order.
        let keep = ["dog".to_string(), "bird".to_string()];
        // An undecodable image of a class not kept is never read.
        std::fs::write(dir.path().join("train/cat/junk.png"), b"junk").expect("write");
        assert!(load(dir.path(), None).is_err());
        let part = load_classes(dir.path(), None, Some(&keep)).expect("the subset loads");
        let want = full.train.select_classes(&[0, 2]);
        assert_eq!(part.train.class_names, want.class_names);
        assert_eq!(part.train.labels, want.labels);
        assert_eq!(part.train.images, want.images);
        assert_eq!(part.test.labels, full.test.select_classes(&[0, 2]).labels);
        let e = load_classes(dir.path(), None, Some(&["cow".to_string()]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no class folder 'cow'"), "{e}");
    }

    #[test]
    fn the_test_split_alone_decodes_no_training_image() {
        let dir = TempDir::new("folder-test-only");
        toy(dir.path());
        let full = load(dir.path(), None).expect("loads");
        // An undecodable training image (not the first, whose header gives the size) breaks
        // the full load, not the test split's.
        std::fs::write(dir.path().join("train/dog/9.png"), b"junk").expect("write");
        assert!(load(dir.path(), None).is_err());
        let test = load_test_classes(dir.path(), None, None, None).expect("the test split loads");
        assert_eq!(test.class_names, full.test.class_names);
        assert_eq!(test.labels, full.test.labels);
        assert_eq!(test.images, full.test.images);
        let dog =
            load_test_classes(dir.path(), None, Some(&["dog".to_string()]), None).expect("dog");
        assert_eq!(dog.class_names, vec!["dog"]);
        assert_eq!(dog.images, full.test.select_classes(&[1]).images);
        // The layout checks still apply.
        std::fs::remove_dir_all(dir.path().join("test/cat")).expect("remove");
        assert!(load_test_classes(dir.path(), None, None, None).is_err());
    }

    #[test]
    fn a_limit_decodes_only_the_spread_images() {
        let dir = TempDir::new("folder-limit");
        for i in 0..7u8 {
            png(&dir.path().join(format!("train/a/{i}.png")), 4, 2, i);
            png(&dir.path().join(format!("test/a/{i}.png")), 4, 2, 100 + i);
        }
        png(&dir.path().join("test/a/z.png"), 4, 2, 0);
        let full = load(dir.path(), None).expect("loads").test;
        for limit in [1, 3, 5, 8, 20] {
            let want = full.spread(limit);
            let got = load_test_classes(dir.path(), None, None, Some(limit)).expect("loads");
            assert_eq!(got.images, want.images, "limit {limit}");
            assert_eq!(got.labels, want.labels, "limit {limit}");
        }
        // Of 8 test files, spread(2) takes the 1st and 5th: a broken 2nd file is never read.
        std::fs::write(dir.path().join("test/a/1.png"), b"junk").expect("write");
        assert!(load_test_classes(dir.path(), None, None, Some(2)).is_ok());
        assert!(load_test_classes(dir.path(), None, None, None).is_err());
    }

    #[test]
    fn resize_then_crop_rounds_the_offset_half_to_even_as_torchvision() {
        // 10x4 -> shorter side 2: 5x2; the central 2x2 starts at round(1.5) = 2 (not 1).
        let img = image::RgbImage::from_fn(10, 4, |x, y| image::Rgb([x as u8 * 20, y as u8, 0]));
        let resized = imageops::resize(&img, 5, 2, FilterType::Triangle);
        let got = resize_center_crop(&img, 2, 2);
        assert_eq!(got.get_pixel(0, 0), resized.get_pixel(2, 0));
        // Resize(4) + CenterCrop(2) of a 6x6 image: 4x4, offset 1 on both axes.
        let img =
            image::RgbImage::from_fn(6, 6, |x, y| image::Rgb([x as u8 * 40, y as u8 * 40, 7]));
        let resized = imageops::resize(&img, 4, 4, FilterType::Triangle);
        let got = resize_center_crop(&img, 4, 2);
        assert_eq!((got.width(), got.height()), (2, 2));
        assert_eq!(got.get_pixel(0, 0), resized.get_pixel(1, 1));
        assert_eq!(got.get_pixel(1, 1), resized.get_pixel(2, 2));
    }

    #[test]
    fn a_resize_side_sizes_images_before_the_crop_and_is_checked() {
        let dir = TempDir::new("folder-resize");
        toy(dir.path());
        let source = FolderSource {
            image_size: Some(2),
            resize: Some(4),
            ..FolderSource::new(dir.path())
        };
        let split = source.load().expect("loads");
        assert_eq!((split.train.height, split.train.width), (2, 2));
        // The 4x2 toy images: shorter side 2 -> 4, so 8x4, then the central 2x2.
        let img = image::RgbImage::from_fn(4, 2, |x, y| image::Rgb([10, x as u8, y as u8]));
        let want = resize_center_crop(&img, 4, 2);
        assert_eq!(
            split.train.image(0)[0],
            f32::from(want.get_pixel(0, 0)[0]) / 255.0
        );
        assert_eq!(
            split.train.image(0)[4],
            f32::from(want.get_pixel(0, 0)[1]) / 255.0
        );
        let err = |s: FolderSource| s.load().err().map(|e| e.to_string()).unwrap_or_default();
        let e = err(FolderSource {
            image_size: Some(4),
            resize: Some(2),
            ..FolderSource::new(dir.path())
        });
        assert!(e.contains("smaller than the image size"), "{e}");
        let e = err(FolderSource {
            resize: Some(4),
            ..FolderSource::new(dir.path())
        });
        assert!(e.contains("needs an image size"), "{e}");
    }

    #[test]
    fn layout_reads_classes_and_the_first_image_size_only() {
        let dir = TempDir::new("folder-layout");
        toy(dir.path());
        // An undecodable image elsewhere does not matter: only the first one's header is read.
        std::fs::write(dir.path().join("train/dog/9.png"), b"junk").expect("write");
        let (shape, classes) = layout(dir.path(), None).expect("layout");
        assert_eq!(shape, [3, 2, 4]);
        assert_eq!(classes, vec!["cat", "dog"]);
        assert_eq!(layout(dir.path(), Some(5)).expect("layout").0, [3, 5, 5]);
        assert!(layout(&dir.path().join("absent"), None).is_err());
    }

    #[test]
    fn a_folder_too_large_for_memory_is_refused_before_decoding() {
        let root = Path::new("/data/imagenet");
        let e = fits_in_memory(root, 3 << 30, Some(2 << 30))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("3.0 GiB") && e.contains("2.0 GiB"), "{e}");
        assert!(fits_in_memory(root, 1 << 30, Some(2 << 30)).is_ok());
        assert!(fits_in_memory(root, u64::MAX, None).is_ok());
    }

    #[test]
    fn bad_layouts_are_named_errors() {
        let msg = |r: Result<Split, DataError>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let dir = TempDir::new("folder-bad");
        let root = dir.path();
        assert!(msg(load(&root.join("absent"), None)).contains("no such folder"));
        assert!(msg(load(root, None)).contains("train/<class>"));
        png(&root.join("train/a/0.png"), 4, 4, 0);
        assert!(msg(load(root, None)).contains("no test split"));
        png(&root.join("test/b/0.png"), 4, 4, 0);
        let e = msg(load(root, None));
        assert!(
            e.contains("missing [a]") && e.contains("not in training [b]"),
            "{e}"
        );
        std::fs::rename(root.join("test/b"), root.join("test/a")).expect("rename");
        png(&root.join("train/a/1.png"), 5, 4, 0);
        let e = msg(load(root, None));
        assert!(e.contains("1.png") && e.contains("--image-size"), "{e}");
        assert!(load(root, Some(3)).is_ok());
        assert!(msg(load(root, Some(0))).contains("image size 0"));
        std::fs::write(root.join("train/a/2.png"), b"not a png").expect("write");
        let e = msg(load(root, Some(3)));
        assert!(e.contains("2.png"), "{e}");
        std::fs::create_dir_all(root.join("train/c")).expect("mkdir");
        std::fs::create_dir_all(root.join("test/c")).expect("mkdir");
        assert!(msg(load(root, Some(3))).contains("no images"));
    }

    #[test]
    fn order_follows_the_sorted_files_across_decoding_threads() {
        let dir = TempDir::new("folder-threads");
        for i in 0..7u8 {
            png(&dir.path().join(format!("train/x/{i}.png")), 3, 3, i);
            png(&dir.path().join(format!("test/x/{i}.png")), 3, 3, i);
        }
        let split = load(dir.path(), None).expect("loads");
        for i in 0..7 {
            assert_eq!(split.train.image(i)[0], f32::from(i as u8) / 255.0);
        }
        assert_eq!(split.train.images, split.test.images);
    }
}
