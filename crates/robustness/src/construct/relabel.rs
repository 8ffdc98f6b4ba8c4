//! Target labels of the non-robust-feature data sets (paper Sec. 3.2, C.5): D_det moves every
//! image toward `t = (y + 1) mod C`; D_rand toward `t` uniform over the C classes (`t = y` is
//! possible, as the paper writes "t ~uar [C]"). Each example's draw comes from its own stream,
//! so a target never depends on how the set is cut into batches, chunks or shards.

use super::ConstructKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tags that separate the random streams of the construction's different choices.
pub(crate) const TARGET_STREAM: u64 = 0x7461_7267_6574_0001;
pub(crate) const START_STREAM: u64 = 0x7374_6172_7400_0002;
pub(crate) const NOISE_STREAM: u64 = 0x6e6f_6973_6500_0003;
pub(crate) const ATTACK_STREAM: u64 = 0x6174_7461_636b_0004;

/// The random stream of example (or batch) `i` for one kind of choice.
pub(crate) fn stream(seed: u64, tag: u64, i: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ tag);
    rng.set_stream(i as u64);
    rng
}

/// The new label of training example `i` (label `y`, `classes` classes).
pub fn target(kind: ConstructKind, seed: u64, i: usize, y: usize, classes: usize) -> usize {
    match kind {
        ConstructKind::Det => (y + 1) % classes,
        ConstructKind::Rand => stream(seed, TARGET_STREAM, i).random_range(0..classes),
        ConstructKind::Robust | ConstructKind::NonRobust => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn det_targets_are_the_next_class() {
        for y in 0..10 {
            assert_eq!(target(ConstructKind::Det, 3, y, y, 10), (y + 1) % 10);
        }
        assert_eq!(target(ConstructKind::Det, 0, 0, 1, 2), 0);
    }

    #[test]
    fn rand_targets_are_per_example_uniform_and_seeded() {
        let draw = |seed| -> Vec<usize> {
            (0..5000)
                .map(|i| target(ConstructKind::Rand, seed, i, 0, 10))
                .collect()
        };
        let a = draw(1);
        assert_eq!(a, draw(1), "same seed, same targets");
        assert_ne!(a, draw(2), "another seed, other targets");
        let mut counts = [0usize; 10];
        for &t in &a {
            counts[t] += 1;
        }
        // 5000 draws over 10 classes: each count is 500 +- ~21 (sd); 100 is > 4.5 sd.
        assert!(
            counts.iter().all(|&c| (400..=600).contains(&c)),
            "{counts:?}"
        );
        // The label itself is among the possible targets (t = y allowed).
        assert!(counts[0] > 0);
    }

    #[test]
    fn robust_kinds_keep_the_label() {
        assert_eq!(target(ConstructKind::Robust, 0, 5, 7, 10), 7);
        assert_eq!(target(ConstructKind::NonRobust, 0, 5, 7, 10), 7);
    }
}
