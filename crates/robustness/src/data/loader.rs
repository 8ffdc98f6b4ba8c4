//! Deterministic mini-batch iteration: the order of epoch `e` and each batch's augmentation
//! depend only on `(seed, e, batch index)`, so resuming or prefetching reproduces them exactly.
//! [`prefetch`] runs batch assembly on a background thread behind a bounded channel.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::Dataset;
use super::augment::{Augmentation, DEFAULT_PAD, augment};

/// One mini-batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `[B, C, H, W]` flattened row-major (`B = labels.len()`).
    pub images: Vec<f32>,
    /// Class index per image.
    pub labels: Vec<usize>,
    /// Index of each image in the source data set.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Images in the batch (`B`).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for an empty batch (never yielded by [`BatchIter`]).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Iterator over the batches of one epoch; see [`batches`]. Owns an `Arc` of the data set, so
/// it is `Send + 'static` and can be handed to [`prefetch`].
#[derive(Clone, Debug)]
pub struct BatchIter {
    dataset: Arc<Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    drop_last: bool,
    pos: usize,
    batch_index: u64,
    seed: u64,
    epoch: u64,
    augment: bool,
    augmentation: Augmentation,
    pad: usize,
}

/// The batches of epoch `epoch`.
///
/// - `shuffle`: order is a permutation drawn from `(seed, epoch)` alone; otherwise `0..N`.
/// - `augment`: each image gets [`super::random_crop_flip`] with padding [`DEFAULT_PAD`] (change
///   it with [`BatchIter::with_pad`], and the recipe with [`BatchIter::with_augmentation`]); the
///   randomness of batch `b` comes from `(seed, epoch, b)`
///   only, so batches are identical however and whenever they are produced.
/// - `drop_last`: skip a final batch smaller than `batch_size`.
///
/// # Panics
/// If `batch_size == 0`.
pub fn batches(
    dataset: Arc<Dataset>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    epoch: u64,
    augment: bool,
    drop_last: bool,
) -> BatchIter {
    assert!(batch_size > 0, "batches: batch_size must be at least 1");
    let mut order: Vec<usize> = (0..dataset.len()).collect();
    if shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
            seed,
            &[PERMUTATION_TAG, epoch],
        )));
    }
    BatchIter {
        dataset,
        order,
        batch_size,
        drop_last,
        pos: 0,
        batch_index: 0,
        seed,
        epoch,
        augment,
        augmentation: Augmentation::CropFlip,
        pad: DEFAULT_PAD,
    }
}

/// Number of batches `batches` yields for `len` items.
pub fn num_batches(len: usize, batch_size: usize, drop_last: bool) -> usize {
    if batch_size == 0 {
        0
    } else if drop_last {
        len / batch_size
    } else {
        len.div_ceil(batch_size)
    }
}

const PERMUTATION_TAG: u64 = 0x5045_524d; // "PERM"
const AUGMENT_TAG: u64 = 0x4155_474d; // "AUGM"

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from `seed` and `parts`, order-sensitive.
fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |acc, &p| mix(acc ^ mix(p)))
}

impl BatchIter {
    /// Sets the crop padding used when augmenting (default [`DEFAULT_PAD`] = 4).
    pub fn with_pad(mut self, pad: usize) -> Self {
        self.pad = pad;
        self
    }

    /// Sets what augmentation does (default [`Augmentation::CropFlip`]); only used when the
    /// iterator augments.
    pub fn with_augmentation(mut self, augmentation: Augmentation) -> Self {
        self.augmentation = augmentation;
        self
    }

    /// The epoch's order: `order()[k]` is the data-set index of the `k`-th item.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Batches left to yield.
    fn remaining(&self) -> usize {
        let left = self.order.len() - self.pos;
        num_batches(left, self.batch_size, self.drop_last)
    }
}

impl Iterator for BatchIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining() == 0 {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let indices = self.order[self.pos..end].to_vec();
        self.pos = end;
        let d = &*self.dataset;
        let image_len = d.image_len();
        let mut images = Vec::with_capacity(indices.len() * image_len);
        for &i in &indices {
            images.extend_from_slice(d.image(i));
        }
        let labels = indices.iter().map(|&i| d.labels[i]).collect();
        if self.augment {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                self.seed,
                &[AUGMENT_TAG, self.epoch, self.batch_index],
            ));
            augment(
                self.augmentation,
                &mut images,
                indices.len(),
                [d.channels, d.height, d.width],
                self.pad,
                &mut rng,
            );
        }
        self.batch_index += 1;
        Some(Batch {
            images,
            labels,
            indices,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n, Some(n))
    }
}

impl ExactSizeIterator for BatchIter {}

/// Runs `iter` on a background thread, keeping up to `depth` items ready in a bounded channel
/// (`depth = 0` hands items over one at a time). Dropping the returned iterator stops the
/// thread at its next send; a panic in the thread is re-raised by `next`.
pub fn prefetch<T, I>(iter: I, depth: usize) -> Prefetch<T>
where
    T: Send + 'static,
    I: Iterator<Item = T> + Send + 'static,
{
    let (tx, rx) = sync_channel(depth);
    let handle = std::thread::Builder::new()
        .name("batch-prefetch".to_string())
        .spawn(move || {
            for item in iter {
                if tx.send(item).is_err() {
                    break; // receiver dropped
                }
            }
        })
        .expect("spawning a thread only fails when the OS is out of resources");
    Prefetch {
        rx: Some(rx),
        handle: Some(handle),
    }
}

/// Iterator returned by [`prefetch`].
#[derive(Debug)]
pub struct Prefetch<T> {
    rx: Option<Receiver<T>>,
    handle: Option<JoinHandle<()>>,
}

impl<T> Iterator for Prefetch<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let item = self.rx.as_ref()?.recv().ok();
        if item.is_none() {
            // The producer finished (or panicked): join it and surface a panic.
            self.rx = None;
            if let Some(Err(panic)) = self.handle.take().map(JoinHandle::join) {
                std::panic::resume_unwind(panic);
            }
        }
        item
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Close the channel first so a blocked producer wakes up, then wait for it.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` images of 1x2x2, image i filled with i, label i % 3.
    fn toy(n: usize) -> Arc<Dataset> {
        Arc::new(Dataset {
            name: "toy".into(),
            images: (0..n).flat_map(|i| [i as f32; 4]).collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            channels: 1,
            height: 2,
            width: 2,
            class_names: vec!["a".into(), "b".into(), "c".into()],
        })
    }

    #[test]
    fn sequential_batches_cover_everything() {
        let d = toy(10);
        let it = batches(d.clone(), 4, false, 0, 0, false, false);
        assert_eq!(it.len(), 3);
        let all: Vec<Batch> = it.collect();
        assert_eq!(
            all.iter().map(Batch::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(all[2].indices, vec![8, 9]);
        assert_eq!(all[2].labels, vec![2, 0]);
        assert_eq!(all[2].images, vec![8.0, 8.0, 8.0, 8.0, 9.0, 9.0, 9.0, 9.0]);
        let dropped: Vec<Batch> = batches(d, 4, false, 0, 0, false, true).collect();
        assert_eq!(dropped.len(), 2);
        assert_eq!(num_batches(10, 4, true), 2);
        assert_eq!(num_batches(10, 5, false), 2);
    }

    #[test]
    fn shuffle_depends_on_seed_and_epoch_only() {
        let d = toy(100);
        let order = |seed, epoch| batches(d.clone(), 7, true, seed, epoch, false, false).order;
        let a = order(1, 3);
        assert_eq!(a, order(1, 3));
        assert_ne!(a, order(1, 4));
        assert_ne!(a, order(2, 3));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        let flat: Vec<usize> = batches(d.clone(), 7, true, 1, 3, false, false)
            .flat_map(|b| b.indices)
            .collect();
        assert_eq!(flat, a);
    }

    #[test]
    fn augmentation_is_reproducible_per_batch() {
        let d = Arc::new(Dataset {
            name: "ramp".into(),
            images: (0..8 * 3 * 6 * 6).map(|v| (v % 97) as f32 / 97.0).collect(),
            labels: vec![0; 8],
            channels: 3,
            height: 6,
            width: 6,
            class_names: vec!["x".into()],
        });
        let run = || -> Vec<Batch> { batches(d.clone(), 3, true, 5, 2, true, false).collect() };
        let a = run();
        assert_eq!(a, run());
        // Skipping batches (as after a resume) does not change later batches.
        let mut it = batches(d.clone(), 3, true, 5, 2, true, false);
        it.next();
        assert_eq!(it.next().as_ref(), a.get(1));
        let plain: Vec<Batch> = batches(d.clone(), 3, true, 5, 2, false, false).collect();
        assert_ne!(a, plain);
        assert!(
            a.iter()
                .flat_map(|b| &b.images)
                .all(|&v| (0.0..=1.0).contains(&v))
        );
        let padded: Vec<Batch> = batches(d.clone(), 3, true, 5, 2, true, false)
            .with_pad(0)
            .collect();
        assert_ne!(padded, a);
        // The reference library's recipe: other images, same order and labels, reproducible.
        let reference = || -> Vec<Batch> {
            batches(d.clone(), 3, true, 5, 2, true, false)
                .with_augmentation(Augmentation::Reference)
                .collect()
        };
        let r = reference();
        assert_eq!(r, reference());
        for (x, y) in r.iter().zip(&a) {
            assert_eq!((&x.indices, &x.labels), (&y.indices, &y.labels));
            assert_ne!(x.images, y.images);
        }
        // Without `augment` the recipe is not applied.
        let off: Vec<Batch> = batches(d, 3, true, 5, 2, false, false)
            .with_augmentation(Augmentation::Reference)
            .collect();
        assert_eq!(off, plain);
    }

    #[test]
    fn prefetch_yields_the_same_batches() {
        let d = toy(50);
        let direct: Vec<Batch> = batches(d.clone(), 8, true, 9, 1, true, false).collect();
        let fetched: Vec<Batch> =
            prefetch(batches(d.clone(), 8, true, 9, 1, true, false), 2).collect();
        assert_eq!(direct, fetched);
        let zero: Vec<Batch> =
            prefetch(batches(d.clone(), 8, true, 9, 1, true, false), 0).collect();
        assert_eq!(direct, zero);
        // Dropping early does not hang.
        let mut p = prefetch(batches(d, 1, false, 0, 0, false, false), 1);
        assert!(p.next().is_some());
        drop(p);
    }

    #[test]
    #[should_panic(expected = "producer failed")]
    fn prefetch_propagates_panics() {
        let it = (0..3).map(|i| if i == 2 { panic!("producer failed") } else { i });
        let _: Vec<i32> = prefetch(it, 1).collect();
    }
}
