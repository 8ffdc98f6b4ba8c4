//! One pass SGD update with momentum and weight decay (robustness patch).
//!
//! `burn-optim`'s `Sgd` updates a parameter with about eight element-wise tensor ops
//! (decay, add, two scalings, add, scaling by the learning rate, subtract), each a pass over
//! the parameter's values and several a new buffer: ~20 ms of a ResNet-18 train step on 2
//! cores. [`sgd_step`] reads the parameter, its gradient and its velocity once and writes the
//! parameter and velocity once, with the same f32 operations in the same order as Burn's ops,
//! so the result has the same bits.

use alloc::vec::Vec;
use burn_backend::DType;
use burn_std::Bytes;

use crate::{FlexTensor, Layout};

/// Hyper-parameters of one update, as `burn-optim`'s `Sgd` applies them.
#[derive(Clone, Copy, Debug)]
pub struct SgdHyper {
    /// Learning rate (Burn's `lr`, converted to f32 as its `mul_scalar` does).
    pub lr: f32,
    /// L2 penalty: the gradient becomes `param * weight_decay + grad`.
    pub weight_decay: Option<f32>,
    /// Momentum: `velocity = grad * (1 - dampening) + velocity * momentum`, the first step
    /// `velocity = grad`.
    pub momentum: Option<SgdMomentum>,
}

/// Momentum factors of [`SgdHyper`] (no Nesterov).
#[derive(Clone, Copy, Debug)]
pub struct SgdMomentum {
    /// Momentum factor.
    pub momentum: f32,
    /// `1 - dampening`, as f32.
    pub keep: f32,
}

/// The inputs of a step [`sgd_step`] could not run on, handed back unchanged.
pub type SgdInputs = (FlexTensor, FlexTensor, Option<FlexTensor>);

/// `(param, velocity)` after one step: `param - lr * velocity` (or `param - lr * grad'`
/// without momentum) where `grad' = param * weight_decay + grad`.
///
/// Works in place on the parameter and velocity buffers when this is their only handle, and
/// turns a uniquely held gradient into the first velocity. Hands the inputs back when they are
/// not all contiguous f32 tensors of the same shape, or when a velocity is given without
/// momentum (or none after the first step is expected: a missing one means the first step).
pub fn sgd_step(
    param: FlexTensor,
    grad: FlexTensor,
    velocity: Option<FlexTensor>,
    hyper: &SgdHyper,
) -> Result<(FlexTensor, Option<FlexTensor>), SgdInputs> {
    let n = param.layout().shape().num_elements();
    let plain = |t: &FlexTensor| {
        t.dtype() == DType::F32
            && t.layout().shape() == param.layout().shape()
            && t.layout().contiguous_offsets() == Some((0, n))
            && t.bytes().len() == n * core::mem::size_of::<f32>()
    };
    let fits = plain(&param)
        && plain(&grad)
        && velocity.as_ref().is_none_or(plain)
        && (velocity.is_none() || hyper.momentum.is_some());
    if !fits {
        return Err((param, grad, velocity));
    }
    let mut param = param;
    let mut grad = grad;
    let wd = hyper.weight_decay;
    let lr = hyper.lr;
    let decayed = move |p: f32, g: f32| match wd {
        Some(wd) => p * wd + g,
        None => g,
    };
    let p = param.storage_mut::<f32>();
    match (hyper.momentum, velocity) {
        (None, _) => {
            let g = grad.storage::<f32>();
            for_chunks2(p, g, |p, g| {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p -= decayed(*p, g) * lr;
                }
            });
            Ok((param, None))
        }
        (Some(m), Some(mut velocity)) => {
            let v = velocity.storage_mut::<f32>();
            let g = grad.storage::<f32>();
            for_chunks3(p, v, g, |p, v, g| {
                for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
                    *v = decayed(*p, g) * m.keep + *v * m.momentum;
                    *p -= *v * lr;
                }
            });
            Ok((param, Some(velocity)))
        }
        (Some(_), None) => {
            // First step: the velocity is the (decayed) gradient itself.
            if let Some(gv) = grad.try_storage_mut::<f32>() {
                for_chunks2_mut(p, gv, |p, v| {
                    for (p, v) in p.iter_mut().zip(v.iter_mut()) {
                        *v = decayed(*p, *v);
                        *p -= *v * lr;
                    }
                });
                return Ok((param, Some(grad)));
            }
            let mut out: Vec<f32> = crate::ops::conv_native::output_vec(n);
            let g = grad.storage::<f32>();
            for_chunks3(p, &mut out, g, |p, v, g| {
                for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
                    *v = decayed(*p, g);
                    *p -= *v * lr;
                }
            });
            let velocity = FlexTensor::new(
                Bytes::from_elems(out),
                Layout::contiguous(param.layout().shape().clone()),
                DType::F32,
            );
            Ok((param, Some(velocity)))
        }
    }
}

fn for_chunks2(a: &mut [f32], b: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    crate::ops::par_map::zip_chunks_mut(a, b, f)
}

fn for_chunks2_mut(
    a: &mut [f32],
    b: &mut [f32],
    f: impl Fn(&mut [f32], &mut [f32]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if let Some(len) = crate::ops::par_map::parallel_chunk_len(a.len()) {
        use rayon::prelude::*;
        a.par_chunks_mut(len)
            .zip(b.par_chunks_mut(len))
            .for_each(|(x, y)| f(x, y));
        return;
    }
    f(a, b)
}

fn for_chunks3(
    a: &mut [f32],
    b: &mut [f32],
    c: &[f32],
    f: impl Fn(&mut [f32], &mut [f32], &[f32]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if let Some(len) = crate::ops::par_map::parallel_chunk_len(a.len()) {
        use rayon::prelude::*;
        a.par_chunks_mut(len)
            .zip(b.par_chunks_mut(len).zip(c.par_chunks(len)))
            .for_each(|(x, (y, z))| f(x, y, z));
        return;
    }
    f(a, b, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_backend::TensorData;

    fn tensor(values: &[f32]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values.to_vec(), [values.len()]))
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        t.storage::<f32>().to_vec()
    }

    /// Burn's op sequence, one value at a time.
    fn reference(p: f32, g: f32, v: Option<f32>, h: &SgdHyper) -> (f32, Option<f32>) {
        let g = match h.weight_decay {
            Some(wd) => p * wd + g,
            None => g,
        };
        match h.momentum {
            None => (p - g * h.lr, None),
            Some(m) => {
                let v = match v {
                    Some(v) => g * m.keep + v * m.momentum,
                    None => g,
                };
                (p - v * h.lr, Some(v))
            }
        }
    }

    /// Every combination of momentum, decay, first / later step and shared / unique buffers
    /// gives the reference values, also across the parallel chunking, and a shared input is
    /// never written.
    #[test]
    fn sgd_step_matches_the_op_by_op_update() {
        for n in [5, crate::ops::par_map::MIN_PARALLEL + 77] {
            let p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
            let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
            for wd in [None, Some(5e-4)] {
                for momentum in [
                    None,
                    Some(SgdMomentum {
                        momentum: 0.9,
                        keep: 1.0,
                    }),
                    Some(SgdMomentum {
                        momentum: 0.8,
                        keep: 0.9,
                    }),
                ] {
                    let h = SgdHyper {
                        lr: 0.1,
                        weight_decay: wd,
                        momentum,
                    };
                    for with_v in [false, true] {
                        if with_v && momentum.is_none() {
                            continue;
                        }
                        for shared in [false, true] {
                            let (pt, gt) = (tensor(&p), tensor(&g));
                            let vt = with_v.then(|| tensor(&v));
                            let keep = shared.then(|| (pt.clone(), gt.clone(), vt.clone()));
                            let (p2, v2) = sgd_step(pt, gt, vt, &h).expect("plain f32 inputs");
                            let (p2, v2) = (values(&p2), v2.map(|v| values(&v)));
                            for i in 0..n {
                                let vi = with_v.then(|| v[i]);
                                let (rp, rv) = reference(p[i], g[i], vi, &h);
                                assert_eq!(p2[i].to_bits(), rp.to_bits(), "{n} {i} {h:?}");
                                assert_eq!(
                                    v2.as_ref().map(|v| v[i].to_bits()),
                                    rv.map(f32::to_bits)
                                );
                            }
                            if let Some((pt, gt, vt)) = keep {
                                assert_eq!(values(&pt), p);
                                assert_eq!(values(&gt), g);
                                assert_eq!(vt.map(|v| values(&v)), with_v.then(|| v.clone()));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sgd_step_hands_back_what_it_cannot_update() {
        let h = SgdHyper {
            lr: 0.1,
            weight_decay: None,
            momentum: None,
        };
        let short = sgd_step(tensor(&[1.0, 2.0]), tensor(&[1.0]), None, &h);
        assert!(short.is_err());
        let stray_velocity = sgd_step(
            tensor(&[1.0]),
            tensor(&[1.0]),
            Some(tensor(&[1.0])),
            &h,
        );
        assert!(stray_velocity.is_err());
        let f64s = FlexTensor::from_data(TensorData::new(vec![1.0f64], [1]));
        assert!(sgd_step(f64s, tensor(&[1.0]), None, &h).is_err());
    }
}
