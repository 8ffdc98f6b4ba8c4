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
//! One GEMM per image writes its output rows in place: no channels-last copy of the input,
//! no scatter of the product, and a 1x1 / stride-1 / unpadded kernel skips the lowering.
//! Images are spread over threads; each output element comes from one GEMM in a fixed
//! order, so the bits do not depend on the thread count.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::ops::ConvOptions;
use burn_backend::ops::conv::calculate_conv_output_size;
use burn_std::{Bytes, Shape};

use super::conv_weight_grad::{Geometry, GradElement, im2col};
use crate::{FlexTensor, Layout};

/// Below this many output positions per image the per-image GEMMs are too thin (the
/// weights are repacked per image); Flex's tiled im2col path is used instead.
pub(crate) const MIN_SPATIAL: usize = 64;

fn is_pointwise(geo: &Geometry) -> bool {
    geo.k_h == 1 && geo.k_w == 1 && geo.stride == [1, 1] && geo.pad == [0, 0]
}

/// `dst (+)= lhs . rhs` for row-major operands given as (pointer, column stride, row stride).
///
/// # Safety
/// Each operand must hold the `m x k`, `k x n` and `m x n` elements its strides address.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: GradElement>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    parallel: bool,
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
            false,
            lhs.0,
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0,
            rhs.1 as isize,
            rhs.2 as isize,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Runs `f(n, chunk_n, scratch)` for every image: in parallel over images when there are
/// enough of them, otherwise one image at a time with a parallel GEMM (`true` passed on).
fn for_each_image<T: GradElement>(
    out: &mut [T],
    per_image: usize,
    batch: usize,
    scratch_len: usize,
    f: impl Fn(usize, &mut [T], &mut Vec<T>, bool) + Sync + Send,
) {
    if per_image == 0 || batch == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        if batch >= rayon::current_num_threads() {
            out.par_chunks_mut(per_image).enumerate().for_each_init(
                || vec![T::ZERO; scratch_len],
                |scratch, (n, chunk)| f(n, chunk, scratch, false),
            );
            return;
        }
        let mut scratch = vec![T::ZERO; scratch_len];
        for (n, chunk) in out.chunks_mut(per_image).enumerate() {
            f(n, chunk, &mut scratch, true);
        }
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = vec![T::ZERO; scratch_len];
        for (n, chunk) in out.chunks_mut(per_image).enumerate() {
            f(n, chunk, &mut scratch, false);
        }
    }
}

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
    let spatial = geo.spatial_out();
    let per_image = geo.c_out * spatial;
    let pointwise = is_pointwise(&geo);
    let scratch_len = if pointwise { 0 } else { geo.k_cols() * spatial };
    let mut out = vec![T::ZERO; geo.batch * per_image];

    for_each_image(
        &mut out,
        per_image,
        geo.batch,
        scratch_len,
        |n, out_n, cols, parallel| {
            let (m, k) = (geo.c_out_group(), geo.k_cols());
            for group in 0..geo.groups {
                let rhs: &[T] = if pointwise {
                    &x_data[(n * geo.c_in + group * geo.c_in_group()) * spatial..][..k * spatial]
                } else {
                    im2col(x_data, &geo, n, group, cols);
                    cols
                };
                let lhs = &w_data[group * m * k..][..m * k];
                let dst = &mut out_n[group * m * spatial..][..m * spatial];
                // SAFETY: lhs is m x k (row stride k), rhs is k x spatial (row stride
                // spatial), dst is m x spatial (row stride spatial); lengths checked above.
                unsafe {
                    matmul(
                        (m, spatial, k),
                        dst.as_mut_ptr(),
                        spatial,
                        (lhs.as_ptr(), 1, k),
                        (rhs.as_ptr(), 1, spatial),
                        parallel,
                    );
                }
            }
            if let Some(b) = bias_data {
                for (row, &bv) in out_n.chunks_mut(spatial).zip(b) {
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
    let spatial = geo.spatial_out();
    let plane = geo.h * geo.w;
    let per_image = geo.c_in * plane;
    let pointwise = is_pointwise(&geo);
    let scratch_len = if pointwise { 0 } else { geo.k_cols() * spatial };
    let mut dx = vec![T::ZERO; geo.batch * per_image];

    for_each_image(
        &mut dx,
        per_image,
        geo.batch,
        scratch_len,
        |n, dx_n, dcols, parallel| {
            let (m, k) = (geo.c_out_group(), geo.k_cols());
            for group in 0..geo.groups {
                let lhs = &w_data[group * m * k..][..m * k];
                let rhs = &g_data[(n * geo.c_out + group * m) * spatial..][..m * spatial];
                let dst: &mut [T] = if pointwise {
                    &mut dx_n[group * geo.c_in_group() * plane..][..k * spatial]
                } else {
                    &mut dcols[..k * spatial]
                };
                // SAFETY: lhs = W^T is k x m read from W (m x k row-major: element (i, j)
                // at j * k + i), rhs is m x spatial (row stride spatial), dst is k x spatial.
                unsafe {
                    matmul(
                        (k, spatial, m),
                        dst.as_mut_ptr(),
                        spatial,
                        (lhs.as_ptr(), k, 1),
                        (rhs.as_ptr(), 1, spatial),
                        parallel,
                    );
                }
                if !pointwise {
                    col2im(dcols, &geo, group, dx_n);
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

/// `dx_n[group channels] += col2im(dcols)`: every column entry is added back to the input
/// position it was read from (the adjoint of `im2col`), in a fixed order.
fn col2im<T: GradElement>(dcols: &[T], geo: &Geometry, group: usize, dx_n: &mut [T]) {
    let spatial = geo.spatial_out();
    let cig = geo.c_in_group();
    for ci in 0..cig {
        let channel = group * cig + ci;
        let plane = &mut dx_n[channel * geo.h * geo.w..][..geo.h * geo.w];
        for kh in 0..geo.k_h {
            for kw in 0..geo.k_w {
                let row = (ci * geo.k_h + kh) * geo.k_w + kw;
                let src = &dcols[row * spatial..(row + 1) * spatial];
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

/// Whether the native path pays off: output planes of at least [`MIN_SPATIAL`] positions.
pub(crate) fn worthwhile(x_shape: &Shape, w_shape: &Shape, options: &ConvOptions<2>) -> bool {
    if x_shape.num_dims() != 4 || w_shape.num_dims() != 4 {
        return false;
    }
    let pad = options.padding_begin();
    let out = [0, 1].map(|i| {
        let span = options.dilation[i] * (w_shape[2 + i].max(1) - 1) + 1;
        (x_shape[2 + i] + 2 * pad[i]).saturating_sub(span) / options.stride[i].max(1) + 1
    });
    out[0] * out[1] >= MIN_SPATIAL
}
