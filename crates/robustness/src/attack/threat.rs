//! Threat models: the set an adversary may move an input in. Each is a small type with four
//! methods used by the one PGD loop (`attack::pgd`): a random start, the direction of a unit
//! step from a gradient, the projection back onto the eps-ball around the original input (and
//! into [0, 1]), and the per-example norm of a perturbation.
//!
//! Step and projection rules follow the reference library's `attack_steps.py` (see
//! `shared/PAPER.md` section 4), including its 1e-10 in the L2 step and `renorm`'s 1e-7.

use burn::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

/// The norm that bounds the perturbation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Constraint {
    /// L-infinity ball (`--constraint inf`).
    Linf,
    /// L2 ball (`--constraint 2`).
    L2,
    /// L1 ball (`--constraint 1`).
    L1,
    /// No ball: only [0, 1] (`--constraint unconstrained`); steps are L2-normalised.
    Unconstrained,
}

impl std::str::FromStr for Constraint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "inf" | "linf" => Ok(Constraint::Linf),
            "2" | "l2" => Ok(Constraint::L2),
            "1" | "l1" => Ok(Constraint::L1),
            "unconstrained" | "none" => Ok(Constraint::Unconstrained),
            other => Err(format!(
                "unknown constraint '{other}': expected inf, 2, 1 or unconstrained"
            )),
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Constraint::Linf => "inf",
            Constraint::L2 => "2",
            Constraint::L1 => "1",
            Constraint::Unconstrained => "unconstrained",
        })
    }
}

/// What the PGD loop needs from a threat model.
pub trait ThreatModel: Send + Sync {
    /// Short name (`inf`, `2`, `1`, `unconstrained`).
    fn name(&self) -> &'static str;
    /// x0: [B, C, H, W] in [0, 1] -> a random point of the ball around x0, in [0, 1].
    fn random_start(&self, x0: &Tensor<4>, rng: &mut ChaCha8Rng) -> Tensor<4>;
    /// grad: [B, C, H, W] -> the direction of a step of size 1 (the update is x + a * direction).
    fn step(&self, grad: Tensor<4>) -> Tensor<4>;
    /// Projects x onto the ball around x0 and clamps to [0, 1] (images).
    fn project(&self, x: Tensor<4>, x0: &Tensor<4>) -> Tensor<4>;
    /// delta: [B, C, H, W] -> per-example norm [B] in this threat model's norm.
    fn norm(&self, delta: Tensor<4>) -> Tensor<1>;
}

/// Builds the threat model for a constraint on images (outputs clamped to [0, 1]).
/// `l1_sparsity` is the fraction of coordinates an L1 step moves (ignored by the others).
pub fn threat_model(constraint: Constraint, eps: f64, l1_sparsity: f64) -> Box<dyn ThreatModel> {
    threat_model_in(constraint, eps, l1_sparsity, true)
}

/// [`threat_model`], with the [0, 1] box only when `bounded` (inputs that are not images, such
/// as the synthetic feature vectors, are not clamped).
pub fn threat_model_in(
    constraint: Constraint,
    eps: f64,
    l1_sparsity: f64,
    bounded: bool,
) -> Box<dyn ThreatModel> {
    match constraint {
        Constraint::Linf => Box::new(LinfBall { eps, bounded }),
        Constraint::L2 => Box::new(L2Ball { eps, bounded }),
        Constraint::L1 => Box::new(L1Ball {
            eps,
            sparsity: l1_sparsity,
            bounded,
        }),
        Constraint::Unconstrained => Box::new(Unconstrained { eps, bounded }),
    }
}

/// Clamps to the image box [0, 1] when `bounded`.
fn in_box(x: Tensor<4>, bounded: bool) -> Tensor<4> {
    if bounded { x.clamp(0.0, 1.0) } else { x }
}

fn host_tensor(values: Vec<f32>, like: &Tensor<4>) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, like.dims()), &like.device())
}

fn numel(x: &Tensor<4>) -> usize {
    x.dims().iter().product()
}

/// Per-example L2 norms of x: [B, C, H, W] -> [B, 1, 1, 1].
pub fn l2_norms(x: Tensor<4>) -> Tensor<4> {
    let [b, _, _, _] = x.dims();
    x.powi_scalar(2)
        .sum_dims(&[1, 2, 3])
        .sqrt()
        .reshape([b, 1, 1, 1])
}

fn flat_norm(x: Tensor<4>, p: f64) -> Tensor<1> {
    let [b, _, _, _] = x.dims();
    let flat: Tensor<2> = x.flatten(1, 3);
    if p == 1.0 {
        flat.abs().sum_dim(1).reshape([b])
    } else if p.is_infinite() {
        flat.abs().max_dim(1).reshape([b])
    } else {
        flat.powi_scalar(2).sum_dim(1).sqrt().reshape([b])
    }
}

/// The L-infinity ball.
pub struct LinfBall {
    /// Clamp to the [0, 1] image box (false for non-image inputs such as the synthetic model).
    pub bounded: bool,
    /// Radius.
    pub eps: f64,
}

impl ThreatModel for LinfBall {
    fn name(&self) -> &'static str {
        "inf"
    }
    fn random_start(&self, x0: &Tensor<4>, rng: &mut ChaCha8Rng) -> Tensor<4> {
        // [R] LinfStep.random_perturb: x + 2 (U[0,1) - 0.5) eps, clamped.
        let noise: Vec<f32> = (0..numel(x0))
            .map(|_| (2.0 * (rng.random::<f64>() - 0.5) * self.eps) as f32)
            .collect();
        in_box(x0.clone() + host_tensor(noise, x0), self.bounded)
    }
    fn step(&self, grad: Tensor<4>) -> Tensor<4> {
        grad.sign()
    }
    fn project(&self, x: Tensor<4>, x0: &Tensor<4>) -> Tensor<4> {
        let diff = (x - x0.clone()).clamp(-self.eps, self.eps);
        in_box(x0.clone() + diff, self.bounded)
    }
    fn norm(&self, delta: Tensor<4>) -> Tensor<1> {
        flat_norm(delta, f64::INFINITY)
    }
}

/// The L2 ball.
pub struct L2Ball {
    /// Clamp to the [0, 1] image box (false for non-image inputs such as the synthetic model).
    pub bounded: bool,
    /// Radius.
    pub eps: f64,
}

/// Rescales each example of `diff` to norm at most eps, like `torch.renorm(p=2, maxnorm=eps)`.
fn renorm(diff: Tensor<4>, eps: f64) -> Tensor<4> {
    let norms = l2_norms(diff.clone());
    let factor = norms
        .clone()
        .add_scalar(1e-7)
        .recip()
        .mul_scalar(eps)
        .mask_fill(norms.lower_equal_elem(eps), 1.0);
    diff * factor
}

fn unit_l2(grad: Tensor<4>) -> Tensor<4> {
    // [R] L2Step.step: g / (||g||_2 + 1e-10).
    let norms = l2_norms(grad.clone());
    grad / norms.add_scalar(1e-10)
}

fn l2_sphere_start(x0: &Tensor<4>, eps: f64, bounded: bool, rng: &mut ChaCha8Rng) -> Tensor<4> {
    // [R] L2Step.random_perturb (2020): x + eps * r / (||r|| + 1e-10), r ~ N(0, I), clamped.
    let noise: Vec<f32> = (0..numel(x0)).map(|_| StandardNormal.sample(rng)).collect();
    let r = host_tensor(noise, x0);
    in_box(x0.clone() + unit_l2(r).mul_scalar(eps), bounded)
}

impl ThreatModel for L2Ball {
    fn name(&self) -> &'static str {
        "2"
    }
    fn random_start(&self, x0: &Tensor<4>, rng: &mut ChaCha8Rng) -> Tensor<4> {
        l2_sphere_start(x0, self.eps, self.bounded, rng)
    }
    fn step(&self, grad: Tensor<4>) -> Tensor<4> {
        unit_l2(grad)
    }
    fn project(&self, x: Tensor<4>, x0: &Tensor<4>) -> Tensor<4> {
        in_box(x0.clone() + renorm(x - x0.clone(), self.eps), self.bounded)
    }
    fn norm(&self, delta: Tensor<4>) -> Tensor<1> {
        flat_norm(delta, 2.0)
    }
}

/// No ball, only the [0, 1] box; steps are L2-normalised ("normalized gradient descent", the
/// paper's optimiser for representation inversion, Sec. 3.1 / C.4). `eps` is only the radius of
/// the random start.
pub struct Unconstrained {
    /// Clamp to the [0, 1] image box (false for non-image inputs such as the synthetic model).
    pub bounded: bool,
    /// Random-start radius.
    pub eps: f64,
}

impl ThreatModel for Unconstrained {
    fn name(&self) -> &'static str {
        "unconstrained"
    }
    fn random_start(&self, x0: &Tensor<4>, rng: &mut ChaCha8Rng) -> Tensor<4> {
        l2_sphere_start(x0, self.eps, self.bounded, rng)
    }
    fn step(&self, grad: Tensor<4>) -> Tensor<4> {
        unit_l2(grad)
    }
    fn project(&self, x: Tensor<4>, _x0: &Tensor<4>) -> Tensor<4> {
        in_box(x, self.bounded)
    }
    fn norm(&self, delta: Tensor<4>) -> Tensor<1> {
        flat_norm(delta, 2.0)
    }
}

/// The L1 ball, with the sparse steepest-ascent step of Tramèr & Boneh (2019): move only the
/// `sparsity` fraction of coordinates with the largest |g|, by sign(g), the step normalised to
/// unit L1 norm; and the exact Euclidean projection onto the L1 ball (Duchi et al. 2008).
pub struct L1Ball {
    /// Clamp to the [0, 1] image box (false for non-image inputs such as the synthetic model).
    pub bounded: bool,
    /// Radius.
    pub eps: f64,
    /// Fraction of coordinates a step moves (at least one).
    pub sparsity: f64,
}

/// Euclidean projection of `v` onto the L1 ball of radius `eps` (Duchi et al. 2008, Fig. 1).
pub fn project_l1(v: &mut [f32], eps: f64) {
    let l1: f64 = v.iter().map(|x| x.abs() as f64).sum();
    if l1 <= eps {
        return;
    }
    if eps <= 0.0 {
        v.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let mut u: Vec<f64> = v.iter().map(|x| x.abs() as f64).collect();
    u.sort_by(|a, b| b.total_cmp(a));
    let (mut cumsum, mut theta) = (0.0, 0.0);
    for (i, &ui) in u.iter().enumerate() {
        cumsum += ui;
        let t = (cumsum - eps) / (i + 1) as f64;
        if ui > t {
            theta = t;
        } else {
            break;
        }
    }
    for x in v.iter_mut() {
        let a = (x.abs() as f64 - theta).max(0.0);
        *x = (x.signum() as f64 * a) as f32;
    }
}

impl ThreatModel for L1Ball {
    fn name(&self) -> &'static str {
        "1"
    }
    fn random_start(&self, x0: &Tensor<4>, rng: &mut ChaCha8Rng) -> Tensor<4> {
        // A uniform point of the L1 ball: Laplace direction, radius eps * U^(1/d).
        let [b, c, h, w] = x0.dims();
        let d = c * h * w;
        let mut noise = Vec::with_capacity(b * d);
        for _ in 0..b {
            let e: Vec<f64> = (0..d)
                .map(|_| {
                    let m: f64 = Exp1.sample(rng);
                    if rng.random::<bool>() { m } else { -m }
                })
                .collect();
            let l1: f64 = e.iter().map(|v| v.abs()).sum::<f64>().max(1e-12);
            let radius = self.eps * rng.random::<f64>().powf(1.0 / d as f64);
            noise.extend(e.iter().map(|v| (v / l1 * radius) as f32));
        }
        in_box(x0.clone() + host_tensor(noise, x0), self.bounded)
    }
    fn step(&self, grad: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = grad.dims();
        let d = c * h * w;
        let k = ((self.sparsity * d as f64).ceil() as usize).clamp(1, d);
        let g = crate::tensors::to_vec(grad.clone());
        let mut out = vec![0f32; b * d];
        for (row, dst) in g.chunks(d).zip(out.chunks_mut(d)) {
            let mut idx: Vec<usize> = (0..d).collect();
            idx.select_nth_unstable_by(k - 1, |&i, &j| row[j].abs().total_cmp(&row[i].abs()));
            for &i in &idx[..k] {
                dst[i] = row[i].signum() / k as f32;
            }
        }
        host_tensor(out, &grad)
    }
    fn project(&self, x: Tensor<4>, x0: &Tensor<4>) -> Tensor<4> {
        let [_, c, h, w] = x.dims();
        let mut diff = crate::tensors::to_vec(x - x0.clone());
        for row in diff.chunks_mut(c * h * w) {
            project_l1(row, self.eps);
        }
        in_box(x0.clone() + host_tensor(diff, x0), self.bounded)
    }
    fn norm(&self, delta: Tensor<4>) -> Tensor<1> {
        flat_norm(delta, 1.0)
    }
}
