//! Native weight gradient of 2D convolution (robustness patch).
//!
//! Burn's default `conv2d_weight_backward` swaps the batch and channel axes and runs a
//! convolution whose kernel is the whole output gradient: a skinny product that the im2col
//! path handles badly. Here, for each image `n`:
//!
//! ```text
//! cols[(ci, kh, kw), (oh, ow)] = x[n, ci, oh * sh + kh * dh - ph, ow * sw + kw * dw - pw]  (0 outside)
//! grad_w[co, (ci, kh, kw)]   += grad_out[n, co, (oh, ow)] . cols^T
//! ```
//!
//! one GEMM per image and group, accumulated in place; where the output planes are small
//! (under `conv_native::TARGET_COLS` positions) several images are lowered side by side and
//! reduced in one GEMM. The batch is split into at most `BLOCKS` contiguous blocks, a number
//! fixed by the shapes whatever the thread count; each block accumulates into its own
//! buffer and the buffers are added in block order, so the result is the same bits on 1 or
//! 16 threads.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};

use crate::{FlexTensor, Layout};

/// Element types with a native path (gemm supports both).
pub(crate) trait GradElement:
    bytemuck::Pod + burn_backend::Element + Copy + Send + Sync + 'static + core::ops::Add<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const DTYPE: DType;
}

impl GradElement for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const DTYPE: DType = DType::F32;
}

impl GradElement for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const DTYPE: DType = DType::F64;
}

/// Shapes and options of one weight-gradient problem.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) batch: usize,
    pub(crate) c_in: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c_out: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
    pub(crate) k_h: usize,
    pub(crate) k_w: usize,
    pub(crate) stride: [usize; 2],
    pub(crate) pad: [usize; 2],
    pub(crate) dilation: [usize; 2],
    pub(crate) groups: usize,
}

impl Geometry {
    pub(crate) fn c_in_group(&self) -> usize {
        self.c_in / self.groups
    }
    pub(crate) fn c_out_group(&self) -> usize {
        self.c_out / self.groups
    }
    /// Columns of the weight matrix of one group: (ci, kh, kw).
    pub(crate) fn k_cols(&self) -> usize {
        self.c_in_group() * self.k_h * self.k_w
    }
    pub(crate) fn spatial_out(&self) -> usize {
        self.out_h * self.out_w
    }
}

/// Gradient of `conv2d(x, weight)` with respect to `weight`, given the output gradient.
///
/// `x`: `[batch, c_in, h, w]`, `output_grad`: `[batch, c_out, out_h, out_w]`; returns
/// `[c_out, c_in / groups, k_h, k_w]` in the dtype of `x` (f32 or f64).
pub(crate) fn conv2d_weight_grad<T: GradElement>(
    x: FlexTensor,
    weight_shape: &Shape,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let x = x.to_contiguous();
    let g = output_grad.to_contiguous();
    let xs = x.layout().shape();
    let gs = g.layout().shape();
    let geo = Geometry {
        batch: xs[0],
        c_in: xs[1],
        h: xs[2],
        w: xs[3],
        c_out: gs[1],
        out_h: gs[2],
        out_w: gs[3],
        k_h: weight_shape[2],
        k_w: weight_shape[3],
        stride: options.stride,
        pad: options.padding_begin(),
        dilation: options.dilation,
        groups: options.groups.max(1),
    };
    let x_data: &[T] = x.storage();
    let g_data: &[T] = g.storage();
    if let Some(tile) =
        super::conv_winograd::weight_grad_tile(&geo).filter(|_| T::DTYPE == DType::F32)
    {
        let dw = super::conv_winograd::weight_grad(
            bytemuck::cast_slice(x_data),
            bytemuck::cast_slice(g_data),
            &geo,
            tile,
        );
        return FlexTensor::new(
            Bytes::from_elems(dw),
            Layout::contiguous(weight_shape.clone()),
            DType::F32,
        );
    }
    let len = geo.c_out * geo.k_cols();

    // Small output planes: several images per GEMM (`ipb`, from the shapes only), so that
    // the reduction over positions is not a thin product; and no more blocks than that
    // leaves images for.
    let spatial = geo.spatial_out();
    let ipb = super::conv_native::images_per_block(spatial, geo.batch);
    let blocks = BLOCKS.min(geo.batch.div_ceil(ipb).max(1));
    let per_block = geo.batch.div_ceil(blocks.max(1)).max(1);
    let m = geo.c_out_group();
    let accumulate = |block: usize| -> Vec<T> {
        let mut acc = vec![T::ZERO; len];
        let start = (block * per_block).min(geo.batch);
        let end = ((block + 1) * per_block).min(geo.batch);
        let cols_len = geo.k_cols() * ipb * spatial;
        let gathered_len = if ipb > 1 { m * ipb * spatial } else { 0 };
        super::conv_native::with_scratch(cols_len + gathered_len, |scratch: &mut [T]| {
            let (cols, gathered) = scratch.split_at_mut(cols_len);
            let mut n0 = start;
            while n0 < end {
                let count = ipb.min(end - n0);
                let ld = count * spatial;
                for group in 0..geo.groups {
                    for j in 0..count {
                        im2col_at(x_data, &geo, n0 + j, group, cols, ld, j * spatial);
                    }
                    let lhs =
                        super::conv_native::grad_block(g_data, &geo, n0, count, group, gathered);
                    accumulate_group(
                        lhs,
                        &geo,
                        ld,
                        group,
                        &cols[..geo.k_cols() * ld],
                        &mut acc,
                        n0 > start,
                    );
                }
                n0 += count;
            }
        });
        acc
    };

    #[cfg(feature = "rayon")]
    let partials: Vec<Vec<T>> = {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().map(accumulate).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let partials: Vec<Vec<T>> = (0..blocks).map(accumulate).collect();

    let mut parts = partials.into_iter();
    let mut grad = parts.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for part in parts {
        for (a, b) in grad.iter_mut().zip(part) {
            *a = *a + b;
        }
    }
    FlexTensor::new(
        Bytes::from_elems(grad),
        Layout::contiguous(weight_shape.clone()),
        T::DTYPE,
    )
}

/// Batch blocks reduced in parallel (fixed, so that the summation order never depends on
/// the number of threads).
const BLOCKS: usize = 8;

/// Fill the columns `col0..col0 + spatial_out` of `cols` (`[k_cols, ld]`, row-major) with
/// the input patches of image `n`, input channels of `group` (several images side by side:
/// image `j` of a block at `col0 = j * spatial_out`).
pub(crate) fn im2col_at<T: GradElement>(
    x: &[T],
    geo: &Geometry,
    n: usize,
    group: usize,
    cols: &mut [T],
    ld: usize,
    col0: usize,
) {
    let spatial = geo.spatial_out();
    let cig = geo.c_in_group();
    for ci in 0..cig {
        let channel = group * cig + ci;
        let plane = &x[(n * geo.c_in + channel) * geo.h * geo.w..][..geo.h * geo.w];
        for kh in 0..geo.k_h {
            for kw in 0..geo.k_w {
                let row = (ci * geo.k_h + kh) * geo.k_w + kw;
                let dst = &mut cols[row * ld + col0..][..spatial];
                let offset_h = kh * geo.dilation[0];
                let offset_w = kw * geo.dilation[1];
                if geo.stride == [1, 1] && geo.out_w == geo.w {
                    shifted_plane(plane, dst, geo, offset_h, offset_w);
                    continue;
                }
                for oh in 0..geo.out_h {
                    let out_row = &mut dst[oh * geo.out_w..(oh + 1) * geo.out_w];
                    let ih = (oh * geo.stride[0] + offset_h).wrapping_sub(geo.pad[0]);
                    if ih >= geo.h {
                        out_row.fill(T::ZERO);
                        continue;
                    }
                    let src = &plane[ih * geo.w..(ih + 1) * geo.w];
                    fill_row(src, out_row, geo.stride[1], offset_w, geo.pad[1]);
                }
            }
        }
    }
}

/// One im2col row block for stride 1 when the output is as wide as the input ("same"
/// width, e.g. 3x3 with padding 1): `dst[oh][ow] = plane[oh + offset_h - pad_h][ow +
/// offset_w - pad_w]`, zero outside the plane. Since rows have the same length, all valid
/// rows are one contiguous shifted copy of the plane; only the rows above / below it and
/// the at most `pad_w` wrapped columns of each row are then set to zero. (Row by row, a
/// small CNN's 8- and 16-wide rows spent most of their time in memcpy / memset calls.)
fn shifted_plane<T: GradElement>(
    plane: &[T],
    dst: &mut [T],
    geo: &Geometry,
    offset_h: usize,
    offset_w: usize,
) {
    let (h, w, out_h) = (geo.h, geo.w, geo.out_h);
    let (pad_h, pad_w) = (geo.pad[0], geo.pad[1]);
    // Output rows whose input row lies inside [0, h).
    let lo = pad_h.saturating_sub(offset_h).min(out_h);
    let hi = if h + pad_h > offset_h {
        (h + pad_h - offset_h).min(out_h)
    } else {
        0
    }
    .max(lo);
    dst[..lo * w].fill(T::ZERO);
    dst[hi * w..out_h * w].fill(T::ZERO);
    if lo == hi {
        return;
    }
    // dst index d (within rows lo..hi) reads plane index d - lo * w + row0 + shift.
    let row0 = (lo + offset_h - pad_h) * w;
    let (skip_front, skip_back) = if offset_w >= pad_w {
        (0, offset_w - pad_w)
    } else {
        (pad_w - offset_w, 0)
    };
    let d0 = lo * w + skip_front;
    let d1 = (hi * w).saturating_sub(skip_back);
    if d0 < d1 {
        // skip_front + offset_w >= pad_w in both cases above.
        let s0 = row0 + skip_front + offset_w - pad_w;
        dst[d0..d1].copy_from_slice(&plane[s0..s0 + (d1 - d0)]);
    }
    // The columns that wrapped into the neighbouring row.
    let bad_front = skip_front.min(w);
    let bad_back = skip_back.min(w);
    for row in dst[lo * w..hi * w].chunks_exact_mut(w) {
        for v in &mut row[..bad_front] {
            *v = T::ZERO;
        }
        for v in &mut row[w - bad_back..] {
            *v = T::ZERO;
        }
    }
}

/// `out[ow] = src[ow * stride + offset - pad]`, zero where that index is outside `src`.
fn fill_row<T: GradElement>(src: &[T], out: &mut [T], stride: usize, offset: usize, pad: usize) {
    let w = src.len();
    // First and one-past-last ow whose input column lies inside [0, w).
    let first = pad.saturating_sub(offset).div_ceil(stride);
    let last = if w + pad > offset {
        ((w + pad - offset - 1) / stride + 1).min(out.len())
    } else {
        0
    };
    let first = first.min(last);
    out[..first].fill(T::ZERO);
    out[last..].fill(T::ZERO);
    if first < last {
        let start = first * stride + offset - pad;
        if stride == 1 {
            out[first..last].copy_from_slice(&src[start..start + (last - first)]);
        } else {
            for (i, o) in out[first..last].iter_mut().enumerate() {
                *o = src[start + i * stride];
            }
        }
    }
}

/// `acc[group rows] (+)= lhs . cols^T`, where `lhs` (`[co, positions]`, `m x k`) is the
/// output gradient of the group's channels for one or more images side by side and `cols`
/// (`[(ci, kh, kw), positions]`) their lowered input, both with rows `k` long.
fn accumulate_group<T: GradElement>(
    lhs: &[T],
    geo: &Geometry,
    k: usize,
    group: usize,
    cols: &[T],
    acc: &mut [T],
    read_acc: bool,
) {
    let m = geo.c_out_group();
    let ncols = geo.k_cols();
    let lhs = &lhs[..m * k];
    let cols = &cols[..ncols * k];
    let dst = &mut acc[group * m * ncols..][..m * ncols];
    // SAFETY: dst is m x ncols row-major (row stride ncols), lhs is m x k row-major (row
    // stride k) and rhs = cols^T is k x ncols read from cols (ncols x k row-major): element
    // (kk, j) at j * k + kk. All three slices have exactly these sizes.
    unsafe {
        super::conv_native::matmul_nt(
            (m, ncols, k),
            dst.as_mut_ptr(),
            ncols,
            (lhs.as_ptr(), k),
            (cols.as_ptr(), k),
            read_acc,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64], g: &[f64], geo: &Geometry) -> Vec<f64> {
        let mut out = vec![0.0; geo.c_out * geo.k_cols()];
        for n in 0..geo.batch {
            for co in 0..geo.c_out {
                let group = co / geo.c_out_group();
                for ci in 0..geo.c_in_group() {
                    for kh in 0..geo.k_h {
                        for kw in 0..geo.k_w {
                            let mut s = 0.0;
                            for oh in 0..geo.out_h {
                                for ow in 0..geo.out_w {
                                    let ih = (oh * geo.stride[0] + kh * geo.dilation[0]) as isize
                                        - geo.pad[0] as isize;
                                    let iw = (ow * geo.stride[1] + kw * geo.dilation[1]) as isize
                                        - geo.pad[1] as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= geo.h as isize
                                        || iw >= geo.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * geo.c_in + group * geo.c_in_group() + ci)
                                        * geo.h
                                        + ih as usize)
                                        * geo.w
                                        + iw as usize;
                                    let gi =
                                        ((n * geo.c_out + co) * geo.out_h + oh) * geo.out_w + ow;
                                    s += x[xi] * g[gi];
                                }
                            }
                            out[((co * geo.c_in_group() + ci) * geo.k_h + kh) * geo.k_w + kw] += s;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn weight_grad_matches_the_definition() {
        // (batch, c_in, h, w, c_out, k, stride, pad, dilation, groups)
        let cases = [
            (3, 2, 7, 6, 4, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (2, 3, 9, 8, 2, [3, 2], [2, 3], [0, 1], [1, 1], 1),
            (2, 4, 8, 8, 6, [3, 3], [1, 2], [2, 1], [2, 1], 2),
            (5, 1, 5, 5, 3, [1, 1], [1, 1], [0, 0], [1, 1], 1),
        ];
        for (batch, c_in, h, w, c_out, k, stride, pad, dilation, groups) in cases {
            let out_h = (h + 2 * pad[0] - dilation[0] * (k[0] - 1) - 1) / stride[0] + 1;
            let out_w = (w + 2 * pad[1] - dilation[1] * (k[1] - 1) - 1) / stride[1] + 1;
            let geo = Geometry {
                batch,
                c_in,
                h,
                w,
                c_out,
                out_h,
                out_w,
                k_h: k[0],
                k_w: k[1],
                stride,
                pad,
                dilation,
                groups,
            };
            let x: Vec<f64> = (0..batch * c_in * h * w)
                .map(|i| ((i * 37 % 101) as f64) / 50.0 - 1.0)
                .collect();
            let g: Vec<f64> = (0..batch * c_out * out_h * out_w)
                .map(|i| ((i * 53 % 97) as f64) / 48.0 - 1.0)
                .collect();
            let xt = FlexTensor::new(
                Bytes::from_elems(x.clone()),
                Layout::contiguous(Shape::from(vec![batch, c_in, h, w])),
                DType::F64,
            );
            let gt = FlexTensor::new(
                Bytes::from_elems(g.clone()),
                Layout::contiguous(Shape::from(vec![batch, c_out, out_h, out_w])),
                DType::F64,
            );
            let options = ConvOptions::new(stride, pad, dilation, groups);
            let ws = Shape::from(vec![c_out, c_in / groups, k[0], k[1]]);
            let got = conv2d_weight_grad::<f64>(xt, &ws, gt, &options);
            let got: &[f64] = got.storage();
            let want = naive(&x, &g, &geo);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-9, "{a} vs {b}");
            }
        }
    }
}
