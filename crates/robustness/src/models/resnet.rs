//! ResNet-18 / ResNet-50: BasicBlock [2,2,2,2] or Bottleneck [3,4,6,3] (stride on the 3x3
//! convolution), then global average pooling and one linear layer.
//!
//! Two stems: the CIFAR variant (3x3 convolution, stride 1, no max-pool), as in the reference
//! library's `cifar_models/resnet.py`; and the ImageNet variant (7x7 convolution, stride 2,
//! padding 3, then a 3x3 max-pool, stride 2, padding 1), as in torchvision's `resnet.py` and
//! the reference library's `imagenet_models/resnet.py` (a copy of it).

use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu,
    conv::{Conv2d, Conv2dConfig},
};
use burn::prelude::*;

/// A bias-free convolution with "same" padding (`kernel / 2`).
fn conv(cin: usize, cout: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

/// 1x1 conv + batch norm on the skip path when the shape changes.
#[derive(Module, Debug)]
struct Shortcut {
    conv: Conv2d,
    bn: BatchNorm,
}

/// One residual block: either two 3x3 convs (basic) or 1x1-3x3-1x1 (bottleneck, expansion 4).
#[derive(Module, Debug)]
struct Block {
    convs: Vec<Conv2d>,
    bns: Vec<BatchNorm>,
    shortcut: Option<Shortcut>,
    relu: Relu,
    /// Every batch norm of the block lives in its convolution (see
    /// [`super::fold_batch_norm`]).
    #[module(skip)]
    folded: bool,
}

impl Block {
    fn basic(cin: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let convs = vec![
            conv(cin, planes, 3, stride, device),
            conv(planes, planes, 3, 1, device),
        ];
        Self::assemble(convs, &[planes, planes], cin, planes, stride, device)
    }

    fn bottleneck(cin: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let out = planes * 4;
        let convs = vec![
            conv(cin, planes, 1, 1, device),
            conv(planes, planes, 3, stride, device),
            conv(planes, out, 1, 1, device),
        ];
        Self::assemble(convs, &[planes, planes, out], cin, out, stride, device)
    }

    fn assemble(
        convs: Vec<Conv2d>,
        widths: &[usize],
        cin: usize,
        cout: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let bns = widths
            .iter()
            .map(|&w| BatchNormConfig::new(w).init(device))
            .collect();
        let shortcut = (stride != 1 || cin != cout).then(|| Shortcut {
            conv: conv(cin, cout, 1, stride, device),
            bn: BatchNormConfig::new(cout).init(device),
        });
        Self {
            convs,
            bns,
            shortcut,
            relu: Relu::new(),
            folded: false,
        }
    }

    fn fold(&mut self) {
        if self.folded {
            return;
        }
        for (conv, bn) in self.convs.iter_mut().zip(&self.bns) {
            super::fold_batch_norm(conv, bn);
        }
        if let Some(s) = &mut self.shortcut {
            super::fold_batch_norm(&mut s.conv, &s.bn);
        }
        self.folded = true;
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match &self.shortcut {
            Some(s) => super::conv_bn(&s.conv, &s.bn, self.folded, x.clone()),
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        let mut out = x;
        for (i, (conv, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            out = super::conv_bn(conv, bn, self.folded, out);
            if i < last {
                out = self.relu.forward(out);
            }
        }
        self.relu.forward(out + skip)
    }
}

/// Which residual block and how many per stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetDepth {
    /// BasicBlock [2, 2, 2, 2]; 512 features.
    R18,
    /// Bottleneck [3, 4, 6, 3]; 2048 features.
    R50,
}

/// The layers before the first residual stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetStem {
    /// 3x3 convolution, stride 1, no max-pool (CIFAR: 32x32 inputs keep their resolution).
    Cifar,
    /// 7x7 convolution, stride 2, then a 3x3 max-pool, stride 2 (ImageNet: 224x224 inputs
    /// reach the first stage at 56x56).
    Imagenet,
}

/// ResNet with either stem.
#[derive(Module, Debug)]
pub struct ResNet {
    stem: Conv2d,
    stem_bn: BatchNorm,
    blocks: Vec<Block>,
    pool: AdaptiveAvgPool2d,
    head: Linear,
    relu: Relu,
    /// `stem_bn` lives in `stem` (see [`super::fold_batch_norm`]).
    #[module(skip)]
    folded: bool,
    /// The ImageNet stem: a max-pool after the stem's ReLU (the 7x7 stride-2 convolution is
    /// `stem` itself).
    #[module(skip)]
    stem_pool: bool,
}

impl ResNet {
    /// Builds a ResNet for `channels`-channel inputs.
    pub fn new(
        depth: ResNetDepth,
        stem: ResNetStem,
        channels: usize,
        num_classes: usize,
        device: &Device,
    ) -> Self {
        let (counts, expansion) = match depth {
            ResNetDepth::R18 => ([2, 2, 2, 2], 1),
            ResNetDepth::R50 => ([3, 4, 6, 3], 4),
        };
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (stage, &count) in counts.iter().enumerate() {
            let planes = 64 << stage;
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(match depth {
                    ResNetDepth::R18 => Block::basic(cin, planes, stride, device),
                    ResNetDepth::R50 => Block::bottleneck(cin, planes, stride, device),
                });
                cin = planes * expansion;
            }
        }
        let (kernel, stride) = match stem {
            ResNetStem::Cifar => (3, 1),
            ResNetStem::Imagenet => (7, 2),
        };
        Self {
            stem: conv(channels, 64, kernel, stride, device),
            stem_bn: BatchNormConfig::new(64).init(device),
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(cin, num_classes).init(device),
            relu: Relu::new(),
            folded: false,
            stem_pool: stem == ResNetStem::Imagenet,
        }
    }

    /// x: [batch, C, H, W] (normalised) -> [batch, 512] (R18) or [batch, 2048] (R50).
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .relu
            .forward(super::conv_bn(&self.stem, &self.stem_bn, self.folded, x));
        if self.stem_pool {
            // After the ReLU every value is >= 0 and every 3x3 window holds at least one
            // input pixel, so the padding value (-inf or 0) cannot change the maximum.
            x = MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init()
                .forward(x);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.pool.forward(x).flatten(1, 3)
    }

    /// features -> logits [batch, classes].
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(features)
    }

    /// Folds every batch norm into its convolution (inference only).
    pub(crate) fn fold_batch_norm(&mut self) {
        if !self.folded {
            super::fold_batch_norm(&mut self.stem, &self.stem_bn);
            self.folded = true;
        }
        self.blocks.iter_mut().for_each(Block::fold);
    }

    /// The final linear layer (features -> logits).
    pub(crate) fn head_layer_mut(&mut self) -> &mut Linear {
        &mut self.head
    }
}
