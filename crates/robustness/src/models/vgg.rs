//! VGG-11 with batch norm (configuration "A": 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512,
//! M), then one linear layer on the 512 pooled features, as in the reference library's CIFAR VGG.
//! Max-pools are skipped once the feature map is 1 pixel wide, so small inputs (8x8 digits) work.

use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu,
    conv::{Conv2d, Conv2dConfig},
};
use burn::prelude::*;

/// `Some(width)` is a conv layer, `None` a 2x2 max-pool.
pub(crate) const VGG11: [Option<usize>; 13] = [
    Some(64),
    None,
    Some(128),
    None,
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    None,
];

#[derive(Module, Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    #[module(skip)]
    pool_after: bool,
    /// The batch norm lives in `conv` (see [`super::fold_batch_norm`]).
    #[module(skip)]
    folded: bool,
}

/// VGG-11-BN.
#[derive(Module, Debug)]
pub struct Vgg {
    layers: Vec<ConvBn>,
    pool: MaxPool2d,
    global: AdaptiveAvgPool2d,
    head: Linear,
    relu: Relu,
}

impl Vgg {
    /// Builds VGG-11-BN for `channels x height x width` inputs.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        num_classes: usize,
        device: &Device,
    ) -> Self {
        let mut layers: Vec<ConvBn> = Vec::new();
        let mut cin = channels;
        let mut side = height.min(width);
        for item in VGG11 {
            match item {
                Some(cout) => {
                    layers.push(ConvBn {
                        conv: Conv2dConfig::new([cin, cout], [3, 3])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .init(device),
                        bn: BatchNormConfig::new(cout).init(device),
                        pool_after: false,
                        folded: false,
                    });
                    cin = cout;
                }
                None => {
                    if side >= 2
                        && let Some(last) = layers.last_mut()
                    {
                        last.pool_after = true;
                        side /= 2;
                    }
                }
            }
        }
        Self {
            layers,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            global: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(512, num_classes).init(device),
            relu: Relu::new(),
        }
    }

    /// x: [batch, C, H, W] (normalised) -> [batch, 512].
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for layer in &self.layers {
            let y = super::conv_bn(&layer.conv, &layer.bn, layer.folded, x);
            // Pool before the ReLU: the same values and gradients (see `Cnn`), a quarter of
            // the ReLU's work.
            x = if layer.pool_after {
                self.relu.forward(self.pool.forward(y))
            } else {
                self.relu.forward(y)
            };
        }
        self.global.forward(x).flatten(1, 3)
    }

    /// features: [batch, 512] -> logits.
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(features)
    }

    /// Folds every batch norm into its convolution (inference only).
    pub(crate) fn fold_batch_norm(&mut self) {
        for layer in self.layers.iter_mut().filter(|l| !l.folded) {
            super::fold_batch_norm(&mut layer.conv, &layer.bn);
            layer.folded = true;
        }
    }

    /// The final linear layer (features -> logits).
    pub(crate) fn head_layer_mut(&mut self) -> &mut Linear {
        &mut self.head
    }
}
