//! A linear classifier on the flattened (normalised) image: the smallest model, used for the
//! golden test against the reference library and for closed-form attack checks.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// `logits = W x + b` on the flattened input; its representation is the input itself.
#[derive(Module, Debug)]
pub struct LinearModel {
    head: Linear,
}

impl LinearModel {
    /// `input_len` = C*H*W.
    pub fn new(input_len: usize, num_classes: usize, device: &Device) -> Self {
        Self {
            head: LinearConfig::new(input_len, num_classes).init(device),
        }
    }

    /// x: [batch, C, H, W] (normalised) -> [batch, C*H*W].
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        x.flatten(1, 3)
    }

    /// features -> logits.
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(features)
    }

    /// The final linear layer (features -> logits).
    pub(crate) fn head_layer_mut(&mut self) -> &mut Linear {
        &mut self.head
    }
}
