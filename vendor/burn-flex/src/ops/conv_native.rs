//! Native 2D convolution forward and input gradient on NCHW data (robustness patch).
//!
//! Per image `n` and group, with `cols = im2col(x[n])` of shape `[(ci, kh, kw), (oh, ow)]`
//! (the same lowering as [`conv_weight_grad`](super::conv_weight_grad)):
//!
//! ```text
//! forward:         y[n, co, (oh, ow)]  = W[co, (ci, kh, kw)] . cols
//! input gradient:  dcols               = W^T . dy[n];   dx[n] = col2im(dcols)
//! ```
//!
//! Where an output plane has at least [`TARGET_COLS`] positions, one GEMM per image writes
//! its output rows in place: no channels-last copy of the input, no scatter of the product,
//! and a 1x1 / stride-1 / unpadded kernel skips the lowering. Smaller planes (ResNet's 8x8
//! and 4x4 stages) would make thin products, so a block of images is lowered side by side
//! (`cols` of shape `[(ci, kh, kw), (image, oh, ow)]`) and multiplied at once, the product
//! then copied to NCHW (and the output gradient gathered the other way). The block size
//! depends only on the shapes; blocks are spread over threads, and each output element
//! comes from one GEMM in a fixed order, so the bits do not depend on the thread count.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::ops::ConvOptions;
use burn_backend::ops::conv::calculate_conv_output_size;
use burn_std::{Bytes, Shape};

use super::conv_weight_grad::{Geometry, GradElement, im2col_at};
use super::conv_winograd;
use crate::{FlexTensor, Layout};
use burn_backend::DType;

/// Columns (output positions) wanted per GEMM: images are grouped until a block has this
/// many, so that the product is not too thin for the GEMM kernels.
pub(crate) const TARGET_COLS: usize = 256;

/// Images per block for output planes of `spatial` positions (shapes only, never threads).
pub(crate) fn images_per_block(spatial: usize, batch: usize) -> usize {
    TARGET_COLS.div_ceil(spatial.max(1)).clamp(1, batch.max(1))
}

fn is_pointwise(geo: &Geometry) -> bool {
    geo.k_h == 1 && geo.k_w == 1 && geo.stride == [1, 1] && geo.pad == [0, 0]
}

/// `dst = lhs . rhs`, or `dst += lhs . rhs` with `accumulate`, for operands given as
/// (pointer, column stride, row stride); `dst` has column stride 1. The one `gemm` call of
/// our convolution kernels (im2col, weight gradient, Winograd).
///
/// # Safety
/// Each operand must hold the `m x k`, `k x n` and `m x n` elements its strides address.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul<T: GradElement>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    parallel: bool,
    accumulate: bool,
) {
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.0,
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0,
            rhs.1 as isize,
            rhs.2 as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `dst = a . b^T`, or `dst += a . b^T` with `accumulate`, where `a` is `m x k` and `b` is
/// `n x k`, both with contiguous rows (`lda`, `ldb` apart) and `dst` is `m x n` (rows `ldc`
/// apart). The products of weight gradients have this shape: both operands run along the
/// summed positions. The GEMM crate packs such operands one value at a time (rows of
/// thousands of values apart), which took a third of the Winograd weight gradient at 64
/// channels; where the CPU has AVX-512 (f32 only) and `m` is at most [`NT_MAX_ROWS`], a
/// dot-product kernel reads them as they are (64 x 64 at 512 positions: 5.9 against 9.0 ms
/// per weight gradient; 128 x 1152 at 256: 5.6 against 6.2; the small CNN's training step
/// 4% faster). With more rows the GEMM crate's kernels amortise their packing and were
/// faster (256 x 256 at 128 positions: 3.3 against 3.9 ms; 512 x 4608 at 256: 7.1 against
/// 9.0 ms). One thread; the result does not depend on the thread count.
///
/// # Safety
/// `a`, `b` and `dst` must hold the `m x k`, `n x k` and `m x n` elements their strides
/// address.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_nt<T: GradElement>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    ldc: usize,
    (a, lda): (*const T, usize),
    (b, ldb): (*const T, usize),
    accumulate: bool,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if core::any::TypeId::of::<T>() == core::any::TypeId::of::<f32>()
        && m <= NT_MAX_ROWS
        && std::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: T is f32 (checked above), AVX-512F is present, and the operands are as
        // the caller guarantees.
        unsafe {
            nt_avx512::matmul_nt(
                (m, n, k),
                dst as *mut f32,
                ldc,
                (a as *const f32, lda),
                (b as *const f32, ldb),
                accumulate,
            )
        };
        return;
    }
    // SAFETY: as the caller guarantees (b^T is k x n: column stride ldb, row stride 1).
    unsafe {
        matmul(
            (m, n, k),
            dst,
            ldc,
            (a, 1, lda),
            (b, ldb, 1),
            false,
            accumulate,
        )
    }
}

/// Largest `m` for [`matmul_nt`]'s own kernel.
const NT_MAX_ROWS: usize = 128;

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod nt_avx512 {
    use core::arch::x86_64::*;

    /// Positions per pass over a block of rows: 4 rows of `a` stay in L1 meanwhile.
    const KC: usize = 512;
    /// Rows of `a` and of `b` per block (16 accumulators of 16 lanes).
    const R: usize = 4;

    /// [`super::matmul_nt`] for f32 with AVX-512F.
    ///
    /// # Safety
    /// AVX-512F is present; the operands as in [`super::matmul_nt`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul_nt(
        (m, n, k): (usize, usize, usize),
        dst: *mut f32,
        ldc: usize,
        (a, lda): (*const f32, usize),
        (b, ldb): (*const f32, usize),
        accumulate: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                for i in 0..m {
                    // SAFETY: row i of dst has n values.
                    unsafe { core::ptr::write_bytes(dst.add(i * ldc), 0, n) };
                }
            }
            return;
        }
        let mut k0 = 0;
        let mut add = accumulate;
        while k0 < k {
            let kc = KC.min(k - k0);
            for i0 in (0..m).step_by(R) {
                // Rows past the end repeat the last one; their sums are not stored.
                let rows_a: [*const f32; R] =
                    core::array::from_fn(|r| a.wrapping_add((i0 + r).min(m - 1) * lda + k0));
                for j0 in (0..n).step_by(R) {
                    let rows_b: [*const f32; R] =
                        core::array::from_fn(|s| b.wrapping_add((j0 + s).min(n - 1) * ldb + k0));
                    // SAFETY: every row pointer addresses kc values of its operand.
                    let sums = unsafe { block(rows_a, rows_b, kc) };
                    for (r, row) in sums.iter().enumerate().take(m - i0) {
                        for (s, &v) in row.iter().enumerate().take(n - j0) {
                            // SAFETY: (i0 + r, j0 + s) is inside dst.
                            unsafe {
                                let d = dst.add((i0 + r) * ldc + j0 + s);
                                *d = if add { *d + v } else { v };
                            }
                        }
                    }
                }
            }
            add = true;
            k0 += kc;
        }
    }

    /// The `R x R` dot products of `kc` values of the rows `a[r]` and `b[s]`.
    ///
    /// # Safety
    /// AVX-512F is present; each pointer addresses `kc` readable values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block(a: [*const f32; R], b: [*const f32; R], kc: usize) -> [[f32; R]; R] {
        let mut acc = [[_mm512_setzero_ps(); R]; R];
        let full = kc / 16 * 16;
        let mut kk = 0;
        while kk < full {
            // SAFETY: kk + 16 <= kc.
            let av: [__m512; R] =
                core::array::from_fn(|r| unsafe { _mm512_loadu_ps(a[r].add(kk)) });
            let bv: [__m512; R] =
                core::array::from_fn(|s| unsafe { _mm512_loadu_ps(b[s].add(kk)) });
            for r in 0..R {
                for s in 0..R {
                    acc[r][s] = _mm512_fmadd_ps(av[r], bv[s], acc[r][s]);
                }
            }
            kk += 16;
        }
        if kk < kc {
            let mask: __mmask16 = (1u32 << (kc - kk)) as u16 - 1;
            // SAFETY: the masked loads read only the kc - kk values left.
            let av: [__m512; R] =
                core::array::from_fn(|r| unsafe { _mm512_maskz_loadu_ps(mask, a[r].add(kk)) });
            let bv: [__m512; R] =
                core::array::from_fn(|s| unsafe { _mm512_maskz_loadu_ps(mask, b[s].add(kk)) });
            for r in 0..R {
                for s in 0..R {
                    acc[r][s] = _mm512_fmadd_ps(av[r], bv[s], acc[r][s]);
                }
            }
        }
        // The 16 horizontal sums at once: a tree of shuffles and adds (an `_mm512_reduce_add_ps`
        // per accumulator cost as much as the products at 128 positions). Vector v = 4 r + s
        // is acc[r][s]; each level halves the lanes per vector.
        let v: [__m512; 16] = core::array::from_fn(|i| acc[i / R][i % R]);
        let w: [__m512; 8] = core::array::from_fn(|j| {
            let (x, y) = (v[2 * j], v[2 * j + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
            )
        });
        let x: [__m512; 4] = core::array::from_fn(|j| {
            let (p, q) = (w[2 * j], w[2 * j + 1]);
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(p, q),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(p, q),
            )
        });
        let y: [__m512; 2] = core::array::from_fn(|j| {
            let (p, q) = (x[2 * j], x[2 * j + 1]);
            _mm512_add_ps(_mm512_unpacklo_ps(p, q), _mm512_unpackhi_ps(p, q))
        });
        let (p, q) = (_mm512_castps_pd(y[0]), _mm512_castps_pd(y[1]));
        let z = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(p, q)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(p, q)),
        );
        let mut lanes = [0.0f32; 16];
        // SAFETY: `lanes` holds 16 values.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), z) };
        // Lane 4 s + r holds the sum of acc[r][s].
        core::array::from_fn(|r| core::array::from_fn(|s| lanes[4 * s + r]))
    }
}

/// Runs `f(n0, count, chunk, scratch, parallel)` for every block of `ipb` images (the
/// last one may be shorter; `chunk` holds the block's `count * per_image` outputs): in
/// parallel over blocks when there are enough of them, otherwise one block at a time with a
/// parallel GEMM (`parallel` true).
pub(crate) fn for_each_block<T: GradElement>(
    out: &mut [T],
    per_image: usize,
    batch: usize,
    ipb: usize,
    scratch_len: usize,
    f: impl Fn(usize, usize, &mut [T], &mut [T], bool) + Sync + Send,
) {
    if per_image == 0 || batch == 0 {
        return;
    }
    let ipb = ipb.max(1);
    let chunk = ipb * per_image;
    let blocks = batch.div_ceil(ipb);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        if blocks >= rayon::current_num_threads() {
            out.par_chunks_mut(chunk).enumerate().for_each(|(b, c)| {
                with_scratch(scratch_len, |scratch| {
                    f(b * ipb, c.len() / per_image, c, scratch, false)
                })
            });
            return;
        }
        with_scratch(scratch_len, |scratch| {
            for (b, c) in out.chunks_mut(chunk).enumerate() {
                f(b * ipb, c.len() / per_image, c, scratch, true);
            }
        });
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = blocks;
        with_scratch(scratch_len, |scratch| {
            for (b, c) in out.chunks_mut(chunk).enumerate() {
                f(b * ipb, c.len() / per_image, c, scratch, false);
            }
        });
    }
}

/// Runs `f` on `len` elements of this thread's scratch memory, kept from call to call. The
/// contents are left from an earlier use: every kernel here writes each scratch element
/// before reading it (in test builds the memory is first filled with NaN bit patterns, so a
/// kernel that read an unwritten element would fail its tests). A fresh zero-filled buffer
/// per block cost ~4% of a ResNet-18 PGD step (memset under the allocator in a `perf`
/// profile). The buffer is taken out of the thread's slot while in use, so a nested call
/// (rayon may run another block on this thread while `f` waits) gets a buffer of its own.
pub(crate) fn with_scratch<T: GradElement, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    // Words of 8 bytes: aligned for f32 and f64, and any bit pattern is a valid T (Pod).
    let words = (len * core::mem::size_of::<T>()).div_ceil(8);
    let mut buf = take_scratch();
    if buf.len() < words {
        buf = vec![0u64; words];
    }
    #[cfg(test)]
    buf[..words].fill(u64::MAX);
    let elems: &mut [T] = bytemuck::cast_slice_mut(&mut buf[..words]);
    let result = f(&mut elems[..len]);
    put_scratch(buf);
    result
}

/// An output buffer of `len` values that the caller writes completely before reading any
/// (robustness patch). `vec![0.0; len]` zero-fills on the calling thread, which is the one
/// thread not running the parallel kernel that follows: in a ResNet-18 train step on 2
/// cores those fills were a third of the time the main thread worked alone. Kernels that
/// accumulate into their output zero their own part of it inside their parallel loop.
/// Flex does the same for its mask outputs (`mask.rs::uninit_vec`). In this crate's test
/// builds the buffer is filled with NaN bit patterns, so a kernel that leaves a value
/// unwritten fails its test.
pub(crate) fn output_vec<T: bytemuck::Pod>(len: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    // SAFETY: T is Pod (every bit pattern is a value, no drop glue); callers write every
    // element before reading it.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len);
    }
    #[cfg(test)]
    bytemuck::cast_slice_mut::<T, u8>(&mut v).fill(0xff);
    v
}

#[cfg(feature = "std")]
std::thread_local! {
    static SCRATCH: core::cell::Cell<Vec<u64>> = const { core::cell::Cell::new(Vec::new()) };
}

#[cfg(feature = "std")]
fn take_scratch() -> Vec<u64> {
    SCRATCH.with(|s| s.take())
}

/// Keeps the larger of `buf` and whatever a nested call left in the slot.
#[cfg(feature = "std")]
fn put_scratch(buf: Vec<u64>) {
    SCRATCH.with(|s| {
        let other = s.take();
        s.set(if other.len() > buf.len() { other } else { buf });
    });
}

#[cfg(not(feature = "std"))]
fn take_scratch() -> Vec<u64> {
    Vec::new()
}

#[cfg(not(feature = "std"))]
fn put_scratch(_: Vec<u64>) {}

/// `conv2d(x, weight) + bias` with symmetric padding (asymmetric padding is applied to the
/// input beforehand by the caller), NCHW.
pub(crate) fn conv2d_forward<T: GradElement>(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let x = x.to_contiguous();
    let weight = weight.to_contiguous();
    let xs = x.layout().shape();
    let ws = weight.layout().shape();
    let pad = options.padding_begin();
    let (k_h, k_w) = (ws[2], ws[3]);
    let out_h =
        calculate_conv_output_size(k_h, options.stride[0], pad[0], options.dilation[0], xs[2]);
    let out_w =
        calculate_conv_output_size(k_w, options.stride[1], pad[1], options.dilation[1], xs[3]);
    let geo = Geometry {
        batch: xs[0],
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out: ws[0],
        out_h,
        out_w,
        k_h,
        k_w,
        stride: options.stride,
        pad,
        dilation: options.dilation,
        groups: options.groups.max(1),
    };
    let x_data: &[T] = x.storage();
    let w_data: &[T] = weight.storage();
    let bias = bias.map(|b| b.to_contiguous());
    let bias_data: Option<&[T]> = bias.as_ref().map(|b| b.storage());
    if let Some(tile) =
        conv_winograd::plane_tile(&geo, out_h, out_w).filter(|_| T::DTYPE == DType::F32)
    {
        let out = conv_winograd::forward(
            bytemuck::cast_slice(x_data),
            bytemuck::cast_slice(w_data),
            bias_data.map(bytemuck::cast_slice),
            &geo,
            tile,
        );
        return FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(Shape::from(vec![geo.batch, geo.c_out, out_h, out_w])),
            DType::F32,
        );
    }
    let spatial = geo.spatial_out();
    let per_image = geo.c_out * spatial;
    let pointwise = is_pointwise(&geo);
    let ipb = images_per_block(spatial, geo.batch);
    let (m, k) = (geo.c_out_group(), geo.k_cols());
    let cols_len = if pointwise && ipb == 1 {
        0
    } else {
        k * ipb * spatial
    };
    let tmp_len = if ipb > 1 { m * ipb * spatial } else { 0 };
    // Every value is written below: by the product, or copied from `tmp`.
    let mut out = output_vec::<T>(geo.batch * per_image);

    for_each_block(
        &mut out,
        per_image,
        geo.batch,
        ipb,
        cols_len + tmp_len,
        |n0, count, out_blk, scratch, parallel| {
            let ncols = count * spatial;
            let (cols, tmp) = scratch.split_at_mut(cols_len);
            for group in 0..geo.groups {
                let rhs: &[T] = if pointwise && count == 1 {
                    &x_data[(n0 * geo.c_in + group * geo.c_in_group()) * spatial..][..k * spatial]
                } else {
                    for j in 0..count {
                        im2col_at(x_data, &geo, n0 + j, group, cols, ncols, j * spatial);
                    }
                    &cols[..k * ncols]
                };
                let lhs = &w_data[group * m * k..][..m * k];
                // One image: straight into its output rows; several: into `tmp`
                // (`[co, (image, oh, ow)]`), then copied to NCHW.
                let dst: &mut [T] = if count == 1 {
                    &mut out_blk[group * m * spatial..][..m * spatial]
                } else {
                    &mut tmp[..m * ncols]
                };
                // SAFETY: lhs is m x k (row stride k), rhs is k x ncols (row stride ncols),
                // dst is m x ncols (row stride ncols); lengths checked above.
                unsafe {
                    matmul(
                        (m, ncols, k),
                        dst.as_mut_ptr(),
                        ncols,
                        (lhs.as_ptr(), 1, k),
                        (rhs.as_ptr(), 1, ncols),
                        parallel,
                        false,
                    );
                }
                if count > 1 {
                    for j in 0..count {
                        for r in 0..m {
                            out_blk[(j * geo.c_out + group * m + r) * spatial..][..spatial]
                                .copy_from_slice(&tmp[r * ncols + j * spatial..][..spatial]);
                        }
                    }
                }
            }
            if let Some(b) = bias_data {
                for (i, row) in out_blk.chunks_mut(spatial).enumerate() {
                    let bv = b[i % geo.c_out];
                    for v in row {
                        *v = *v + bv;
                    }
                }
            }
        },
    );

    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(vec![geo.batch, geo.c_out, out_h, out_w])),
        T::DTYPE,
    )
}

/// Gradient of `conv2d(x, weight)` with respect to `x` (whose shape is `x_shape`), given the
/// output gradient. Any padding (only its beginning matters: the output size comes from
/// `output_grad`), stride, dilation and groups.
pub(crate) fn conv2d_x_grad<T: GradElement>(
    x_shape: &Shape,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let weight = weight.to_contiguous();
    let g = output_grad.to_contiguous();
    let ws = weight.layout().shape();
    let gs = g.layout().shape();
    let geo = Geometry {
        batch: x_shape[0],
        c_in: x_shape[1],
        h: x_shape[2],
        w: x_shape[3],
        c_out: ws[0],
        out_h: gs[2],
        out_w: gs[3],
        k_h: ws[2],
        k_w: ws[3],
        stride: options.stride,
        pad: options.padding_begin(),
        dilation: options.dilation,
        groups: options.groups.max(1),
    };
    let w_data: &[T] = weight.storage();
    let g_data: &[T] = g.storage();
    if let Some(tile) =
        conv_winograd::plane_tile(&geo, geo.h, geo.w).filter(|_| T::DTYPE == DType::F32)
    {
        let dx = conv_winograd::x_grad(
            bytemuck::cast_slice(w_data),
            bytemuck::cast_slice(g_data),
            &geo,
            tile,
        );
        return FlexTensor::new(
            Bytes::from_elems(dx),
            Layout::contiguous(x_shape.clone()),
            DType::F32,
        );
    }
    let spatial = geo.spatial_out();
    let plane = geo.h * geo.w;
    let per_image = geo.c_in * plane;
    let pointwise = is_pointwise(&geo);
    let ipb = images_per_block(spatial, geo.batch);
    let (m, k) = (geo.c_out_group(), geo.k_cols());
    let dcols_len = if pointwise && ipb == 1 {
        0
    } else {
        k * ipb * spatial
    };
    let gather_len = if ipb > 1 { m * ipb * spatial } else { 0 };
    let mut dx = output_vec::<T>(geo.batch * per_image);

    for_each_block(
        &mut dx,
        per_image,
        geo.batch,
        ipb,
        dcols_len + gather_len,
        |n0, count, dx_blk, scratch, parallel| {
            let ncols = count * spatial;
            // col2im adds into the block; the 1x1 product writes it whole.
            if !(pointwise && count == 1) {
                dx_blk.fill(T::ZERO);
            }
            let (dcols, gathered) = scratch.split_at_mut(dcols_len);
            for group in 0..geo.groups {
                let lhs = &w_data[group * m * k..][..m * k];
                let rhs = grad_block(g_data, &geo, n0, count, group, gathered);
                let direct = pointwise && count == 1;
                let dst: &mut [T] = if direct {
                    &mut dx_blk[group * geo.c_in_group() * plane..][..k * spatial]
                } else {
                    &mut dcols[..k * ncols]
                };
                // SAFETY: lhs = W^T is k x m read from W (m x k row-major: element (i, j)
                // at j * k + i), rhs is m x ncols (row stride ncols), dst is k x ncols.
                unsafe {
                    matmul(
                        (k, ncols, m),
                        dst.as_mut_ptr(),
                        ncols,
                        (lhs.as_ptr(), k, 1),
                        (rhs.as_ptr(), 1, ncols),
                        parallel,
                        false,
                    );
                }
                if !direct {
                    for j in 0..count {
                        col2im(
                            dcols,
                            ncols,
                            j * spatial,
                            &geo,
                            group,
                            &mut dx_blk[j * per_image..][..per_image],
                        );
                    }
                }
            }
        },
    );

    FlexTensor::new(
        Bytes::from_elems(dx),
        Layout::contiguous(x_shape.clone()),
        T::DTYPE,
    )
}

/// The output gradient (`[batch, c_out, positions]`) of images `n0..n0 + count`, channels
/// of `group`, as one `[co, (image, position)]` matrix: a slice of `g` for one image, else
/// gathered into `buf` (at least `c_out_group * count * positions` long).
pub(crate) fn grad_block<'a, T: GradElement>(
    g: &'a [T],
    geo: &Geometry,
    n0: usize,
    count: usize,
    group: usize,
    buf: &'a mut [T],
) -> &'a [T] {
    let (m, spatial) = (geo.c_out_group(), geo.spatial_out());
    if count == 1 {
        return &g[(n0 * geo.c_out + group * m) * spatial..][..m * spatial];
    }
    let ncols = count * spatial;
    for j in 0..count {
        for r in 0..m {
            buf[r * ncols + j * spatial..][..spatial]
                .copy_from_slice(&g[((n0 + j) * geo.c_out + group * m + r) * spatial..][..spatial]);
        }
    }
    &buf[..m * ncols]
}

/// `dx_n[group channels] += col2im(dcols)` for the image in columns `col0..col0 + spatial`
/// of `dcols` (rows `ld` long): every column entry is added back to the input position it
/// was read from (the adjoint of `im2col`), in a fixed order.
fn col2im<T: GradElement>(
    dcols: &[T],
    ld: usize,
    col0: usize,
    geo: &Geometry,
    group: usize,
    dx_n: &mut [T],
) {
    let spatial = geo.spatial_out();
    let cig = geo.c_in_group();
    for ci in 0..cig {
        let channel = group * cig + ci;
        let plane = &mut dx_n[channel * geo.h * geo.w..][..geo.h * geo.w];
        for kh in 0..geo.k_h {
            for kw in 0..geo.k_w {
                let row = (ci * geo.k_h + kh) * geo.k_w + kw;
                let src = &dcols[row * ld + col0..][..spatial];
                let offset_h = kh * geo.dilation[0];
                let offset_w = kw * geo.dilation[1];
                for oh in 0..geo.out_h {
                    let ih = (oh * geo.stride[0] + offset_h).wrapping_sub(geo.pad[0]);
                    if ih >= geo.h {
                        continue;
                    }
                    let dst = &mut plane[ih * geo.w..(ih + 1) * geo.w];
                    add_row(
                        &src[oh * geo.out_w..(oh + 1) * geo.out_w],
                        dst,
                        geo.stride[1],
                        offset_w,
                        geo.pad[1],
                    );
                }
            }
        }
    }
}

/// `dst[ow * stride + offset - pad] += src[ow]` where that index lies inside `dst`.
fn add_row<T: GradElement>(src: &[T], dst: &mut [T], stride: usize, offset: usize, pad: usize) {
    let w = dst.len();
    let first = pad.saturating_sub(offset).div_ceil(stride);
    let last = if w + pad > offset {
        ((w + pad - offset - 1) / stride + 1).min(src.len())
    } else {
        0
    };
    if first >= last {
        return;
    }
    let start = first * stride + offset - pad;
    if stride == 1 {
        for (d, &s) in dst[start..start + (last - first)]
            .iter_mut()
            .zip(&src[first..last])
        {
            *d = *d + s;
        }
    } else {
        for (i, &s) in src[first..last].iter().enumerate() {
            let d = &mut dst[start + i * stride];
            *d = *d + s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `matmul_nt` against sums in f64, on sizes that leave partial row blocks, a partial
    /// last vector of positions and more than one pass over the positions, with and without
    /// accumulation into the destination.
    #[test]
    fn matmul_nt_matches_f64() {
        let value =
            |i: usize, seed: usize| ((i * 7919 + seed * 104_729) % 2001) as f32 / 1000.0 - 1.0;
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 4, 16),
            (9, 6, 33),
            (17, 13, 1100),
            (64, 64, 512),
            (130, 5, 40),
            (7, 300, 20),
        ] {
            let (lda, ldb, ldc) = (k + 3, k + 1, n + 2);
            let a: Vec<f32> = (0..m * lda).map(|i| value(i, 1)).collect();
            let b: Vec<f32> = (0..n * ldb).map(|i| value(i, 2)).collect();
            for accumulate in [false, true] {
                let init: Vec<f32> = (0..m * ldc).map(|i| value(i, 3)).collect();
                let mut dst = init.clone();
                // SAFETY: the buffers hold the m x k, n x k and m x n values addressed.
                unsafe {
                    matmul_nt::<f32>(
                        (m, n, k),
                        dst.as_mut_ptr(),
                        ldc,
                        (a.as_ptr(), lda),
                        (b.as_ptr(), ldb),
                        accumulate,
                    )
                };
                for i in 0..m {
                    for j in 0..n {
                        let mut want: f64 = (0..k)
                            .map(|t| a[i * lda + t] as f64 * b[j * ldb + t] as f64)
                            .sum();
                        if accumulate {
                            want += init[i * ldc + j] as f64;
                        }
                        let got = dst[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "m{m} n{n} k{k} acc {accumulate}: ({i}, {j}) {got} vs {want}"
                        );
                    }
                    // The padding between rows is left alone.
                    for j in n..ldc {
                        assert_eq!(dst[i * ldc + j], init[i * ldc + j]);
                    }
                }
            }
        }
    }
}
