//! Attack objectives, per example. The PGD loop ascends the loss (untargeted) or descends it
//! (targeted, toward the given target labels), as the reference library does.

use crate::models::{Classifier, cross_entropy};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// A per-example objective over (model, x, target). Closures
/// `Fn(&Classifier, Tensor<4>, &Tensor<1, Int>) -> Tensor<1>` implement it, so any custom loss
/// (e.g. representation matching) plugs into the same loop.
pub trait AttackLoss: Sync {
    /// model: inference-mode classifier; x: [B, C, H, W] in [0, 1]; target: [B] -> loss [B].
    fn loss(&self, model: &Classifier, x: Tensor<4>, target: &Tensor<1, Int>) -> Tensor<1>;
}

impl<F> AttackLoss for F
where
    F: Fn(&Classifier, Tensor<4>, &Tensor<1, Int>) -> Tensor<1> + Sync,
{
    fn loss(&self, model: &Classifier, x: Tensor<4>, target: &Tensor<1, Int>) -> Tensor<1> {
        self(model, x, target)
    }
}

/// The built-in losses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy (the default).
    CrossEntropy,
    /// Carlini-Wagner margin: max_{j != t} z_j - z_t.
    CwMargin,
    /// Difference of logits ratio (Croce & Hein 2020), untargeted:
    /// -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12).
    Dlr,
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ce" | "xent" | "cross-entropy" => Ok(LossKind::CrossEntropy),
            "cw" | "cw-margin" | "margin" => Ok(LossKind::CwMargin),
            "dlr" => Ok(LossKind::Dlr),
            other => Err(format!("unknown loss '{other}': expected ce, cw or dlr")),
        }
    }
}

impl AttackLoss for LossKind {
    fn loss(&self, model: &Classifier, x: Tensor<4>, target: &Tensor<1, Int>) -> Tensor<1> {
        let logits = model.forward(x);
        match self {
            LossKind::CrossEntropy => cross_entropy(logits, target.clone()),
            LossKind::CwMargin => {
                let (own, other) = own_and_best_other(logits, target);
                other - own
            }
            LossKind::Dlr => {
                let [b, _] = logits.dims();
                let sorted = logits.clone().sort_descending(1);
                let top1 = sorted.clone().narrow(1, 0, 1).reshape([b]);
                let top3 = sorted.narrow(1, 2, 1).reshape([b]);
                let (own, other) = own_and_best_other(logits, target);
                (other - own) / (top1 - top3).add_scalar(1e-12)
            }
        }
    }
}

/// The targeted DLR loss of APGD-T (Croce & Hein 2020, eq. 6), to be maximised:
/// `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`, with `pi` the classes sorted by
/// decreasing logit. logits: [B, K]; y: true labels [B]; t: target classes [B]; returns [B].
/// With fewer than 4 classes the denominator does not exist; the loss is then the plain
/// margin `z_t - z_y` (with 2 classes the only target is the other class, so the direction is
/// that of every untargeted margin loss).
pub fn dlr_targeted(logits: Tensor<2>, y: &Tensor<1, Int>, t: &Tensor<1, Int>) -> Tensor<1> {
    let [b, k] = logits.dims();
    let pick = |labels: &Tensor<1, Int>| {
        logits
            .clone()
            .gather(1, labels.clone().reshape([b, 1]))
            .reshape([b])
    };
    let margin = pick(t) - pick(y);
    if k < 4 {
        return margin;
    }
    let sorted = logits.clone().sort_descending(1);
    let at = |r: usize| sorted.clone().narrow(1, r, 1).reshape([b]);
    let scale = at(0) - (at(2) + at(3)).mul_scalar(0.5);
    margin / scale.add_scalar(1e-12)
}

/// logits [B, K] -> (z_target [B], max_{j != target} z_j [B]).
fn own_and_best_other(logits: Tensor<2>, target: &Tensor<1, Int>) -> (Tensor<1>, Tensor<1>) {
    let [b, k] = logits.dims();
    let own = logits
        .clone()
        .gather(1, target.clone().reshape([b, 1]))
        .reshape([b]);
    let mask: Tensor<2, Bool> = target.clone().one_hot::<2>(k).bool();
    let other = logits
        .mask_fill(mask, f32::NEG_INFINITY)
        .max_dim(1)
        .reshape([b]);
    (own, other)
}
