//! Batch normalization kernels (robustness patch).
//!
//! Burn's default `batch_norm_train` / `batch_norm_train_backward` take the per-channel
//! statistics of a `[batch, channels, ...]` tensor by swapping the batch and channel axes
//! (a full copy of the activation) and then run about ten broadcast element-wise passes.
//! Here each channel's sums are taken in place over its `batch` contiguous planes, in f64
//! and in a fixed order (one channel is summed by one thread, so the bits do not depend on
//! the thread count), and the output and the input gradient are each one fused pass whose
//! per-channel coefficients are worked out in f64.

use alloc::vec::Vec;
use burn_backend::DType;
use burn_std::{Bytes, Shape};

use crate::{FlexTensor, Layout};

/// Element types with a native path.
pub(crate) trait NormElement:
    bytemuck::Pod
    + burn_backend::Element
    + Copy
    + Send
    + Sync
    + 'static
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
{
    const DTYPE: DType;
    fn widen(self) -> f64;
    fn narrow(v: f64) -> Self;
}

impl NormElement for f32 {
    const DTYPE: DType = DType::F32;
    fn widen(self) -> f64 {
        self as f64
    }
    fn narrow(v: f64) -> Self {
        v as f32
    }
}

impl NormElement for f64 {
    const DTYPE: DType = DType::F64;
    fn widen(self) -> f64 {
        self
    }
    fn narrow(v: f64) -> Self {
        v
    }
}

/// `[batch, channels, spatial]` view of a contiguous tensor.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    channels: usize,
    spatial: usize,
}

impl Dims {
    fn of(shape: &Shape) -> Self {
        let batch = shape[0];
        let channels = shape[1];
        let spatial = shape.iter().skip(2).product::<usize>();
        Self {
            batch,
            channels,
            spatial,
        }
    }
    fn count(&self) -> f64 {
        (self.batch * self.spatial) as f64
    }
    /// Plane `(n, c)` of a contiguous `[batch, channels, spatial]` buffer.
    fn plane<'a, T>(&self, data: &'a [T], n: usize, c: usize) -> &'a [T] {
        &data[(n * self.channels + c) * self.spatial..][..self.spatial]
    }
}

/// `sum f(v)` over `values`, with eight independent lanes (vectorizable) added in a fixed order.
#[inline(always)]
fn lane_sum<T: NormElement>(values: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for i in 0..8 {
            acc[i] += f(chunk[i]);
        }
    }
    let mut sum = 0.0;
    for a in acc {
        sum += a;
    }
    for &v in rest {
        sum += f(v);
    }
    sum
}

/// `sum f(a, b)` over two equally long slices, as [`lane_sum`].
#[inline(always)]
fn lane_sum2<T: NormElement>(a: &[T], b: &[T], f: impl Fn(T, T) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += f(x[i], y[i]);
        }
    }
    let mut sum = 0.0;
    for s in acc {
        sum += s;
    }
    for (&x, &y) in ra.iter().zip(rb) {
        sum += f(x, y);
    }
    sum
}

/// One value per channel, computed in parallel over channels.
fn per_channel<R: Send>(channels: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..channels).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        (0..channels).map(f).collect()
    }
}

/// Fill `out` plane by plane with `fill(channel, n, plane_out)`, in parallel over plane groups.
fn per_plane<T: NormElement>(
    dims: Dims,
    out: &mut [T],
    fill: impl Fn(usize, usize, &mut [T]) + Sync + Send,
) {
    if dims.spatial == 0 || out.is_empty() {
        return;
    }
    // Whole planes per task, at least ~16k elements each so tiny planes stay cheap.
    let planes_per_task = (16_384 / dims.spatial).max(1);
    let task_len = planes_per_task * dims.spatial;
    let run = |(task, chunk): (usize, &mut [T])| {
        for (i, plane) in chunk.chunks_mut(dims.spatial).enumerate() {
            let p = task * planes_per_task + i;
            fill(p % dims.channels, p / dims.channels, plane);
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(task_len).enumerate().for_each(run);
    }
    #[cfg(not(feature = "rayon"))]
    {
        out.chunks_mut(task_len).enumerate().for_each(run);
    }
}

fn channel_values<T: NormElement>(t: FlexTensor) -> Vec<f64> {
    let t = t.to_contiguous();
    let data: &[T] = t.storage();
    data.iter().map(|&v| v.widen()).collect()
}

fn tensor<T: NormElement>(data: Vec<T>, shape: Shape) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), Layout::contiguous(shape), T::DTYPE)
}

fn channel_tensor<T: NormElement>(values: &[f64]) -> FlexTensor {
    let data: Vec<T> = values.iter().map(|&v| T::narrow(v)).collect();
    tensor(data, Shape::new([values.len()]))
}

/// `out = (x - mean[c]) * scale[c] + beta[c]` with `scale = gamma / sqrt(var + eps)`, one pass.
fn normalize<T: NormElement>(
    x_data: &[T],
    dims: Dims,
    stats: (&[f64], &[f64]),
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
    shape: Shape,
) -> FlexTensor {
    let (mean, variance) = stats;
    let (gamma, beta) = (channel_values::<T>(gamma), channel_values::<T>(beta));
    let coefficients: Vec<(T, T, T)> = (0..dims.channels)
        .map(|c| {
            let scale = gamma[c] / (variance[c] + epsilon).sqrt();
            (T::narrow(mean[c]), T::narrow(scale), T::narrow(beta[c]))
        })
        .collect();
    // Every plane is written by `per_plane`.
    let mut out = super::conv_native::output_vec::<T>(x_data.len());
    per_plane(dims, &mut out, |c, n, plane| {
        let (m, a, b) = coefficients[c];
        for (o, &v) in plane.iter_mut().zip(dims.plane(x_data, n, c)) {
            *o = (v - m) * a + b;
        }
    });
    tensor(out, shape)
}

/// Batch normalization with given statistics: `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub(crate) fn batch_norm<T: NormElement>(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
) -> FlexTensor {
    let x = x.to_contiguous();
    let shape = x.layout().shape().clone();
    let dims = Dims::of(&shape);
    let (mean, variance) = (channel_values::<T>(mean), channel_values::<T>(variance));
    normalize(
        x.storage::<T>(),
        dims,
        (&mean, &variance),
        gamma,
        beta,
        epsilon,
        shape,
    )
}

/// Batch normalization with the batch's own statistics; returns the output, the mean and
/// the biased variance (each `[channels]`).
pub(crate) fn batch_norm_train<T: NormElement>(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let x = x.to_contiguous();
    let shape = x.layout().shape().clone();
    let dims = Dims::of(&shape);
    let x_data: &[T] = x.storage();
    let stats = per_channel(dims.channels, |c| {
        let mut sum = 0.0;
        for n in 0..dims.batch {
            sum += lane_sum(dims.plane(x_data, n, c), T::widen);
        }
        let mean = sum / dims.count();
        let mut squares = 0.0;
        for n in 0..dims.batch {
            squares += lane_sum(dims.plane(x_data, n, c), |v| {
                let d = v.widen() - mean;
                d * d
            });
        }
        (mean, squares / dims.count())
    });
    let mean: Vec<f64> = stats.iter().map(|s| s.0).collect();
    let variance: Vec<f64> = stats.iter().map(|s| s.1).collect();
    let output = normalize(
        x_data,
        dims,
        (&mean, &variance),
        gamma,
        beta,
        epsilon,
        shape,
    );
    (
        output,
        channel_tensor::<T>(&mean),
        channel_tensor::<T>(&variance),
    )
}

/// Per-channel sum of a `[batch, channels, ...]` tensor over its batch and spatial axes,
/// e.g. the bias gradient of a convolution. Burn's default swaps the batch and channel
/// axes into a contiguous copy first (8% of the small CNN's train step); here each
/// channel is summed in place, in f64 and in a fixed order.
pub(crate) fn channel_sum<T: NormElement>(t: FlexTensor) -> FlexTensor {
    let t = t.to_contiguous();
    let dims = Dims::of(t.layout().shape());
    let data: &[T] = t.storage();
    let sums = per_channel(dims.channels, |c| {
        let mut sum = 0.0;
        for n in 0..dims.batch {
            sum += lane_sum(dims.plane(data, n, c), T::widen);
        }
        sum
    });
    channel_tensor::<T>(&sums)
}

/// Gradients of [`batch_norm_train`] with respect to `x`, `gamma` and `beta`.
///
/// With `xhat = (x - mean) * inv_std`, `M = batch * spatial`:
/// `d_beta = sum g`, `d_gamma = sum g * xhat`,
/// `d_x = gamma * inv_std * (g - d_beta / M - xhat * d_gamma / M)`, which is
/// `k * g + p * (x - mean) + q` with per-channel `k, p, q`.
pub(crate) fn batch_norm_train_backward<T: NormElement>(
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    output_grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let x = x.to_contiguous();
    let g = output_grad.to_contiguous();
    let shape = x.layout().shape().clone();
    let dims = Dims::of(&shape);
    let x_data: &[T] = x.storage();
    let g_data: &[T] = g.storage();
    let gamma = channel_values::<T>(gamma);
    let mean = channel_values::<T>(mean);
    let variance = channel_values::<T>(variance);
    let inv_std: Vec<f64> = variance
        .iter()
        .map(|&v| 1.0 / (v + epsilon).sqrt())
        .collect();

    let sums = per_channel(dims.channels, |c| {
        let m = mean[c];
        let (mut sum_g, mut sum_gx) = (0.0, 0.0);
        for n in 0..dims.batch {
            let gp = dims.plane(g_data, n, c);
            sum_g += lane_sum(gp, T::widen);
            sum_gx += lane_sum2(gp, dims.plane(x_data, n, c), |gv, xv| {
                gv.widen() * (xv.widen() - m)
            });
        }
        (sum_g, sum_gx * inv_std[c])
    });
    let beta_grad: Vec<f64> = sums.iter().map(|s| s.0).collect();
    let gamma_grad: Vec<f64> = sums.iter().map(|s| s.1).collect();

    let count = dims.count();
    let coefficients: Vec<(T, T, T, T)> = (0..dims.channels)
        .map(|c| {
            let k = gamma[c] * inv_std[c];
            let p = -k * inv_std[c] * gamma_grad[c] / count;
            let q = -k * beta_grad[c] / count;
            (T::narrow(k), T::narrow(p), T::narrow(q), T::narrow(mean[c]))
        })
        .collect();
    let mut x_grad = super::conv_native::output_vec::<T>(x_data.len());
    per_plane(dims, &mut x_grad, |c, n, plane| {
        let (k, p, q, m) = coefficients[c];
        let gp = dims.plane(g_data, n, c);
        let xp = dims.plane(x_data, n, c);
        for ((o, &gv), &xv) in plane.iter_mut().zip(gp).zip(xp) {
            *o = gv * k + (xv - m) * p + q;
        }
    });
    (
        tensor(x_grad, shape),
        channel_tensor::<T>(&gamma_grad),
        channel_tensor::<T>(&beta_grad),
    )
}
