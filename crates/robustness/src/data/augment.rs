//! In-place data augmentation on `[N, C, H, W]` batches: random crop from a zero-padded image
//! (as torchvision's `RandomCrop(H, padding=pad)`) and horizontal flip with probability 0.5.
//! Works with row `memmove`s (`copy_within`), no allocation; values stay in the input's range ∪ {0}.

use rand::Rng;

/// The padding used for CIFAR-10 (`RandomCrop(32, padding=4)`).
pub const DEFAULT_PAD: usize = 4;

/// For each of the `n` images in `images` (`[n, c, h, w]`): takes a random `h x w` crop of the
/// image zero-padded by `pad` on every side (offsets uniform in `0..=2*pad` per axis, i.e. a
/// shift by `-pad..=pad` with zero fill), then flips it horizontally with probability 0.5.
/// All channels of an image share the crop and flip. Draws 2 offsets (`u32`) then 1 flip per image.
///
/// # Panics
/// If `images.len() != n * c * h * w`, or `2 * pad` exceeds `u32::MAX`.
pub fn random_crop_flip(
    images: &mut [f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    rng: &mut impl Rng,
) {
    assert_eq!(
        images.len(),
        n * c * h * w,
        "random_crop_flip: buffer holds {} values, expected n*c*h*w = {n}*{c}*{h}*{w}",
        images.len()
    );
    let image_len = c * h * w;
    if image_len == 0 {
        return;
    }
    // Offsets are drawn as u32 in 0..=2*pad (portable across platforms), shift = offset - pad.
    let span = u32::try_from(2 * pad).expect("crop padding must be below 2^31 (documented panic)");
    let pad = pad as isize;
    for image in images.chunks_exact_mut(image_len) {
        let dy = rng.random_range(0..=span) as isize - pad;
        let dx = rng.random_range(0..=span) as isize - pad;
        let flip = rng.random_bool(0.5);
        shift_flip(image, c, h, w, dy, dx, flip);
    }
}

/// Deterministic core of [`random_crop_flip`] for one `[c, h, w]` image:
/// `out[ch][y][x] = in[ch][y + dy][x + dx]` (0 where outside the image), then, if `flip`,
/// `out[ch][y][x] <- out[ch][y][w - 1 - x]`. `dy = dx = 0, flip = false` is the identity.
///
/// # Panics
/// If `image.len() != c * h * w`.
pub fn shift_flip(
    image: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    dy: isize,
    dx: isize,
    flip: bool,
) {
    assert_eq!(image.len(), c * h * w, "shift_flip: image is not c*h*w");
    if w == 0 || h == 0 {
        return;
    }
    for plane in image.chunks_exact_mut(h * w) {
        if dx != 0 {
            for row in plane.chunks_exact_mut(w) {
                shift_line(row, dx);
            }
        }
        if dy != 0 {
            // Shifting whole rows of a plane is the same operation on a line of w-blocks.
            let k = dy.unsigned_abs().min(h) * w;
            let len = plane.len();
            if dy > 0 {
                plane.copy_within(k.., 0);
                plane[len - k..].fill(0.0);
            } else {
                plane.copy_within(..len - k, k);
                plane[..k].fill(0.0);
            }
        }
        if flip {
            for row in plane.chunks_exact_mut(w) {
                row.reverse();
            }
        }
    }
}

/// `line[i] <- line[i + d]`, zero where `i + d` falls outside.
fn shift_line(line: &mut [f32], d: isize) {
    let len = line.len();
    let k = d.unsigned_abs().min(len);
    if d > 0 {
        line.copy_within(k.., 0);
        line[len - k..].fill(0.0);
    } else {
        line.copy_within(..len - k, k);
        line[..k].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// `n` images `[c, h, w]` with value `1 + ch*100 + y*10 + x` (+ 1000 per image).
    fn ramp(n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(n * c * h * w);
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        v.push((1 + i * 1000 + ch * 100 + y * 10 + x) as f32);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn zero_shift_no_flip_is_identity() {
        let orig = ramp(2, 3, 5, 7);
        let mut img = orig.clone();
        for chunk in img.chunks_exact_mut(3 * 5 * 7) {
            shift_flip(chunk, 3, 5, 7, 0, 0, false);
        }
        assert_eq!(img, orig);
    }

    #[test]
    fn pad_zero_only_flips() {
        let orig = ramp(20, 2, 4, 4);
        let mut img = orig.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        random_crop_flip(&mut img, 20, 2, 4, 4, 0, &mut rng);
        let mut flipped = 0;
        for (a, b) in img.chunks_exact(32).zip(orig.chunks_exact(32)) {
            if a != b {
                let mut back = a.to_vec();
                shift_flip(&mut back, 2, 4, 4, 0, 0, true);
                assert_eq!(back, b);
                flipped += 1;
            }
        }
        assert!((3..=17).contains(&flipped), "{flipped} of 20 flipped");
    }

    #[test]
    fn flip_twice_is_identity() {
        let orig = ramp(1, 3, 4, 5);
        let mut img = orig.clone();
        shift_flip(&mut img, 3, 4, 5, 0, 0, true);
        assert_ne!(img, orig);
        assert_eq!(img[0], orig[4]);
        shift_flip(&mut img, 3, 4, 5, 0, 0, true);
        assert_eq!(img, orig);
    }

    #[test]
    fn crop_shifts_known_image() {
        // 1x3x4 image, values 1 + 10y + x.
        let mut img = ramp(1, 1, 3, 4);
        shift_flip(&mut img, 1, 3, 4, 1, -2, false);
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 11.0, 12.0,
            0.0, 0.0, 21.0, 22.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(img, want);
        let mut img = ramp(1, 1, 3, 4);
        shift_flip(&mut img, 1, 3, 4, -1, 1, true);
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 0.0, 0.0,
            0.0, 4.0, 3.0, 2.0,
            0.0, 14.0, 13.0, 12.0,
        ];
        assert_eq!(img, want);
        // Shifts beyond the size blank the image.
        let mut img = ramp(1, 2, 3, 4);
        shift_flip(&mut img, 2, 3, 4, 5, 0, false);
        assert!(img.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn values_stay_in_range_and_crop_matches_reference() {
        let (n, c, h, w, pad) = (16, 3, 8, 8, 4);
        let orig: Vec<f32> = ramp(n, c, h, w).iter().map(|v| v / 20_000.0).collect();
        let mut img = orig.clone();
        random_crop_flip(&mut img, n, c, h, w, pad, &mut ChaCha8Rng::seed_from_u64(9));
        assert!(img.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // Replay the same draws through a naive padded-crop reference.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let image_len = c * h * w;
        for i in 0..n {
            let oy = rng.random_range(0..=2 * pad as u32) as isize;
            let ox = rng.random_range(0..=2 * pad as u32) as isize;
            let flip = rng.random_bool(0.5);
            let src = &orig[i * image_len..(i + 1) * image_len];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let xs = if flip { w - 1 - x } else { x };
                        // Padded coordinates (y + oy, xs + ox) -> original minus pad.
                        let (py, px) = (y as isize + oy - 4, xs as isize + ox - 4);
                        let want = if (0..h as isize).contains(&py) && (0..w as isize).contains(&px)
                        {
                            src[ch * h * w + py as usize * w + px as usize]
                        } else {
                            0.0
                        };
                        assert_eq!(img[i * image_len + ch * h * w + y * w + x], want);
                    }
                }
            }
        }
    }
}
