//! Multi-layer perceptron on flattened images: two hidden layers of 512 units with ReLU.

use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;

/// Hidden width of both layers.
pub const MLP_HIDDEN: usize = 512;

/// `input -> 512 -> 512 -> classes`.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    head: Linear,
    relu: Relu,
}

impl Mlp {
    /// `input_len` = C*H*W.
    pub fn new(input_len: usize, num_classes: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(input_len, MLP_HIDDEN).init(device),
            fc2: LinearConfig::new(MLP_HIDDEN, MLP_HIDDEN).init(device),
            head: LinearConfig::new(MLP_HIDDEN, num_classes).init(device),
            relu: Relu::new(),
        }
    }

    /// x: [batch, C, H, W] (normalised) -> [batch, 512].
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.relu.forward(self.fc1.forward(x));
        self.relu.forward(self.fc2.forward(x))
    }

    /// features: [batch, 512] -> logits [batch, classes].
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(features)
    }

    /// The final linear layer (features -> logits).
    pub(crate) fn head_layer_mut(&mut self) -> &mut Linear {
        &mut self.head
    }
}
