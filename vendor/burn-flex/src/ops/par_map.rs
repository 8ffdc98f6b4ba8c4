//! Element-wise loops over large contiguous buffers, split over the rayon pool (robustness
//! patch).
//!
//! Flex runs its element-wise kernels (`binary_op`, `scalar_op`, `unary_op`) on the calling
//! thread. In a training step that thread is the one outside the pool, so while it walks
//! millions of values (ReLU and its gradient, residual additions, the optimizer's updates of
//! every parameter) the pool's threads sit idle: a fifth of a ResNet-18 train step on 2
//! cores. Each value is computed by the same scalar or SIMD code whichever chunk it falls
//! in, so the results do not depend on the number of threads.

use crate::ops::conv_native::output_vec;

/// Buffers shorter than this stay on the calling thread (the pool's wake-up costs more).
pub(crate) const MIN_PARALLEL: usize = 1 << 15;

/// Chunk length for `n` values: a few chunks per thread, a multiple of 64 values so SIMD
/// kernels see whole vectors except in the last chunk.
#[cfg(feature = "rayon")]
fn chunk_len(n: usize) -> usize {
    let pieces = rayon::current_num_threads().max(1) * 4;
    n.div_ceil(pieces)
        .next_multiple_of(64)
        .max(MIN_PARALLEL / 4)
}

#[cfg(feature = "rayon")]
fn parallel(n: usize) -> bool {
    n >= MIN_PARALLEL && rayon::current_num_threads() > 1
}

/// The chunk length to split `n` values over the pool with, or `None` when they stay on the
/// calling thread.
#[cfg(feature = "rayon")]
pub(crate) fn parallel_chunk_len(n: usize) -> Option<usize> {
    parallel(n).then(|| chunk_len(n))
}

/// `f(chunk)` over consecutive chunks of `data`.
pub(crate) fn for_chunks_mut<E: Send>(data: &mut [E], f: impl Fn(&mut [E]) + Sync + Send) {
    #[cfg(feature = "rayon")]
    if parallel(data.len()) {
        use rayon::prelude::*;
        let len = chunk_len(data.len());
        data.par_chunks_mut(len).for_each(f);
        return;
    }
    f(data)
}

/// `f(dst_chunk, src_chunk)` over matching chunks of two equally long buffers.
pub(crate) fn zip_chunks_mut<E: Send, S: Sync>(
    dst: &mut [E],
    src: &[S],
    f: impl Fn(&mut [E], &[S]) + Sync + Send,
) {
    debug_assert_eq!(dst.len(), src.len());
    #[cfg(feature = "rayon")]
    if parallel(dst.len()) {
        use rayon::prelude::*;
        let len = chunk_len(dst.len());
        dst.par_chunks_mut(len)
            .zip(src.par_chunks(len))
            .for_each(|(d, s)| f(d, s));
        return;
    }
    f(dst, src)
}

/// A new buffer as long as `src`, filled chunk by chunk by `f(src_chunk, out_chunk)`, which
/// must write every value of `out_chunk`.
pub(crate) fn map_collect<S: Sync, E: bytemuck::Pod + Send>(
    src: &[S],
    f: impl Fn(&[S], &mut [E]) + Sync + Send,
) -> Vec<E> {
    let mut out = output_vec::<E>(src.len());
    zip_chunks_mut(&mut out, src, |o, s| f(s, o));
    out
}

/// [`map_collect`] over two equally long buffers: `f(a_chunk, b_chunk, out_chunk)`.
pub(crate) fn map2_collect<A: Sync, B: Sync, E: bytemuck::Pod + Send>(
    a: &[A],
    b: &[B],
    f: impl Fn(&[A], &[B], &mut [E]) + Sync + Send,
) -> Vec<E> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = output_vec::<E>(a.len());
    #[cfg(feature = "rayon")]
    if parallel(a.len()) {
        use rayon::prelude::*;
        let len = chunk_len(a.len());
        out.par_chunks_mut(len)
            .zip(a.par_chunks(len).zip(b.par_chunks(len)))
            .for_each(|(o, (x, y))| f(x, y, o));
        return out;
    }
    f(a, b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long buffers are split into chunks and every value is computed once, in place or
    /// into a new buffer, whatever the chunking (the lengths straddle the chunk sizes).
    #[test]
    fn chunked_maps_cover_every_value_once() {
        for n in [
            0,
            1,
            63,
            MIN_PARALLEL - 1,
            MIN_PARALLEL,
            3 * MIN_PARALLEL + 17,
        ] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| (2 * i) as f32).collect();
            let mut c = a.clone();
            for_chunks_mut(&mut c, |x| x.iter_mut().for_each(|v| *v += 1.0));
            assert!(
                c.iter().enumerate().all(|(i, &v)| v == i as f32 + 1.0),
                "{n}"
            );
            let mut d = a.clone();
            zip_chunks_mut(&mut d, &b, |x, y| {
                x.iter_mut().zip(y).for_each(|(v, w)| *v += *w)
            });
            assert!(
                d.iter().enumerate().all(|(i, &v)| v == (3 * i) as f32),
                "{n}"
            );
            let e: Vec<f32> = map_collect(&a, |x, o| {
                x.iter().zip(o.iter_mut()).for_each(|(v, w)| *w = v * 2.0)
            });
            assert_eq!(e, b, "{n}");
            let f: Vec<f32> = map2_collect(&a, &b, |x, y, o| {
                for ((v, w), z) in x.iter().zip(y).zip(o.iter_mut()) {
                    *z = w - v;
                }
            });
            assert_eq!(f, a, "{n}");
        }
    }
}
