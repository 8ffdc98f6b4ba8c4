//! Image classifiers. Every model normalises its input itself (first layer), so it takes raw
//! images in [0, 1], and exposes `forward_features` (the penultimate representation, the input
//! of the final linear layer) besides the logits.

mod cnn;
mod linear;
mod mlp;
mod normalize;
mod resnet;
pub(crate) mod vgg;

pub use cnn::{CNN_FEATURES, Cnn};
pub use linear::LinearModel;
pub use mlp::{MLP_HIDDEN, Mlp};
pub use normalize::Normalize;
pub use resnet::{ResNet, ResNetDepth, ResNetStem};
pub use vgg::Vgg;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Architecture names accepted by `--arch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Linear classifier on the flattened image.
    Linear,
    /// Two hidden layers of 512.
    Mlp,
    /// conv3x3 32-64-128 with max-pools, FC 256.
    Cnn,
    /// CIFAR ResNet-18.
    Resnet18,
    /// CIFAR ResNet-50.
    Resnet50,
    /// VGG-11 with batch norm.
    Vgg11,
    /// ImageNet ResNet-18 (7x7 stride-2 stem and max-pool; torchvision's names).
    #[serde(rename = "resnet18-imagenet")]
    Resnet18Imagenet,
    /// ImageNet ResNet-50 (7x7 stride-2 stem and max-pool; torchvision's names).
    #[serde(rename = "resnet50-imagenet")]
    Resnet50Imagenet,
}

impl Arch {
    /// All architectures, in the order the docs list them.
    pub const ALL: [Arch; 8] = [
        Arch::Linear,
        Arch::Mlp,
        Arch::Cnn,
        Arch::Resnet18,
        Arch::Resnet50,
        Arch::Vgg11,
        Arch::Resnet18Imagenet,
        Arch::Resnet50Imagenet,
    ];

    /// The `--arch` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Linear => "linear",
            Arch::Mlp => "mlp",
            Arch::Cnn => "cnn",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet50 => "resnet50",
            Arch::Vgg11 => "vgg11",
            Arch::Resnet18Imagenet => "resnet18-imagenet",
            Arch::Resnet50Imagenet => "resnet50-imagenet",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown architecture name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown architecture '{0}': expected one of linear, mlp, cnn, resnet18, resnet50, vgg11, \
     resnet18-imagenet, resnet50-imagenet"
)]
pub struct UnknownArch(pub String);

impl FromStr for Arch {
    type Err = UnknownArch;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownArch(s.to_string()))
    }
}

/// A one-channel 8x8, three-class spec for unit tests (small enough for every architecture
/// that takes images).
#[cfg(test)]
pub(crate) fn tiny_spec(arch: Arch) -> ModelSpec {
    ModelSpec {
        arch,
        channels: 1,
        height: 8,
        width: 8,
        num_classes: 3,
        mean: vec![0.5],
        std: vec![0.25],
        images: true,
    }
}

/// What a model is built for: input shape, classes and normalisation. Stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Architecture.
    pub arch: Arch,
    /// Input channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Number of output classes.
    pub num_classes: usize,
    /// Per-channel normalisation mean.
    pub mean: Vec<f32>,
    /// Per-channel normalisation std.
    pub std: Vec<f32>,
    /// Inputs are images in [0, 1] (clamped before normalisation, as the reference library
    /// does); false for the synthetic feature vectors.
    #[serde(default = "images_by_default")]
    pub images: bool,
}

fn images_by_default() -> bool {
    true
}

// Boxing would save a few hundred bytes per model value, which is irrelevant next to the
// weights, and the derive would need Module for Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
enum Network {
    Linear(LinearModel),
    Mlp(Mlp),
    Cnn(Cnn),
    ResNet(ResNet),
    Vgg(Vgg),
    /// Several classifiers of the same inputs and classes: mean logits, joined features.
    Ensemble(Vec<Classifier>),
}

/// A classifier: input normalisation, a network body and a linear head.
#[derive(Module, Debug)]
pub struct Classifier {
    normalize: Normalize,
    net: Network,
    /// Batch norms folded into their convolutions ([`Classifier::for_inference`]).
    #[module(skip)]
    folded: bool,
}

impl Classifier {
    /// Builds a freshly initialised model on `device` (seed the device first for determinism).
    pub fn new(spec: &ModelSpec, device: &Device) -> Self {
        use ResNetDepth::{R18, R50};
        use ResNetStem::{Cifar, Imagenet};
        let (c, h, w, k) = (spec.channels, spec.height, spec.width, spec.num_classes);
        let net = match spec.arch {
            Arch::Linear => Network::Linear(LinearModel::new(c * h * w, k, device)),
            Arch::Mlp => Network::Mlp(Mlp::new(c * h * w, k, device)),
            Arch::Cnn => Network::Cnn(Cnn::new(c, h, w, k, device)),
            Arch::Resnet18 => Network::ResNet(ResNet::new(R18, Cifar, c, k, device)),
            Arch::Resnet50 => Network::ResNet(ResNet::new(R50, Cifar, c, k, device)),
            Arch::Resnet18Imagenet => Network::ResNet(ResNet::new(R18, Imagenet, c, k, device)),
            Arch::Resnet50Imagenet => Network::ResNet(ResNet::new(R50, Imagenet, c, k, device)),
            Arch::Vgg11 => Network::Vgg(Vgg::new(c, h, w, k, device)),
        };
        Self {
            normalize: Normalize::new(spec.mean.clone(), spec.std.clone(), spec.images),
            net,
            folded: false,
        }
    }

    /// An ensemble of `members` (trained models of the same input shape and classes; load them
    /// with [`crate::train::checkpoint::load_for_data`] so that this is checked): its logits
    /// are the mean of the members' logits (the logit ensemble of transfer attacks, e.g. Dong
    /// et al. 2018) and its representation is the members' representations side by side. For
    /// attacks and constructions, not for training or checkpoints.
    pub fn ensemble(members: Vec<Classifier>) -> crate::Result<Self> {
        let Some(first) = members.first() else {
            return Err(crate::Error::Config(
                "an ensemble needs at least one model".into(),
            ));
        };
        let images = first.takes_images();
        if members.iter().any(|m| m.takes_images() != images) {
            return Err(crate::Error::Config(
                "an ensemble cannot mix image models with feature-vector models".into(),
            ));
        }
        let c = first.normalize.mean().len();
        Ok(Self {
            normalize: Normalize::new(vec![0.0; c], vec![1.0; c], images),
            net: Network::Ensemble(members),
            folded: false,
        })
    }

    /// The same model answering only for the classes `keep` (indices into its outputs, in the
    /// order given): the rows of its final linear layer for those classes, so its logits are
    /// the original logits of those classes and its softmax is taken over them alone. A
    /// 10-class CIFAR model becomes a cats-vs-dogs model this way (`keep = [3, 5]`); every
    /// member of an ensemble is restricted alike.
    pub fn restrict_classes(mut self, keep: &[usize]) -> crate::Result<Self> {
        match &mut self.net {
            Network::Ensemble(members) => {
                let restricted = std::mem::take(members)
                    .into_iter()
                    .map(|m| m.restrict_classes(keep))
                    .collect::<crate::Result<Vec<_>>>()?;
                *members = restricted;
            }
            Network::Linear(m) => select_outputs(m.head_layer_mut(), keep)?,
            Network::Mlp(m) => select_outputs(m.head_layer_mut(), keep)?,
            Network::Cnn(m) => select_outputs(m.head_layer_mut(), keep)?,
            Network::ResNet(m) => select_outputs(m.head_layer_mut(), keep)?,
            Network::Vgg(m) => select_outputs(m.head_layer_mut(), keep)?,
        }
        Ok(self)
    }

    /// The model for attacks and evaluation: in inference mode (no autodiff on its parameters;
    /// batch norm with its running statistics, as `valid()` gives it) and with every batch norm
    /// folded into the convolution before it, so that a conv + batch norm pair costs one
    /// convolution with a bias, forward and backward (see [`fold_batch_norm`]). The outputs
    /// equal those of `valid()` up to float rounding. Not for training or checkpoints
    /// ([`crate::train::checkpoint::save`] refuses a folded model). Folding an already folded
    /// model changes nothing.
    pub fn for_inference(&self) -> Self {
        let mut model = self.valid();
        model.fold_batch_norm();
        model
    }

    /// Whether the batch norms are folded ([`Classifier::for_inference`]).
    pub fn is_folded(&self) -> bool {
        self.folded
    }

    fn fold_batch_norm(&mut self) {
        if self.folded {
            return;
        }
        match &mut self.net {
            Network::Linear(_) | Network::Mlp(_) => {}
            Network::Cnn(m) => m.fold_batch_norm(),
            Network::ResNet(m) => m.fold_batch_norm(),
            Network::Vgg(m) => m.fold_batch_norm(),
            Network::Ensemble(members) => members.iter_mut().for_each(Self::fold_batch_norm),
        }
        self.folded = true;
    }

    /// Number of models: 1, or the members of an ensemble.
    pub fn members(&self) -> usize {
        match &self.net {
            Network::Ensemble(m) => m.len(),
            _ => 1,
        }
    }

    /// Whether inputs are images in [0, 1] (attacks then stay in that box); false for the
    /// synthetic feature vectors.
    pub fn takes_images(&self) -> bool {
        self.normalize.clamps()
    }

    /// x: [batch, C, H, W] in [0, 1] -> representation [batch, features].
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let normalize = |x| self.normalize.forward(x);
        match &self.net {
            Network::Linear(m) => m.forward_features(normalize(x)),
            Network::Mlp(m) => m.forward_features(normalize(x)),
            Network::Cnn(m) => m.forward_features(normalize(x)),
            Network::ResNet(m) => m.forward_features(normalize(x)),
            Network::Vgg(m) => m.forward_features(normalize(x)),
            Network::Ensemble(members) => Tensor::cat(
                members
                    .iter()
                    .map(|m| m.forward_features(x.clone()))
                    .collect(),
                1,
            ),
        }
    }

    /// x: [batch, C, H, W] in [0, 1] -> logits [batch, classes].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match &self.net {
            Network::Linear(m) => m.head(self.forward_features(x)),
            Network::Mlp(m) => m.head(self.forward_features(x)),
            Network::Cnn(m) => m.head(self.forward_features(x)),
            Network::ResNet(m) => m.head(self.forward_features(x)),
            Network::Vgg(m) => m.head(self.forward_features(x)),
            Network::Ensemble(members) => {
                let logits = members.iter().map(|m| m.forward(x.clone())).collect();
                Tensor::stack::<3>(logits, 0)
                    .mean_dim(0)
                    .squeeze_dim::<2>(0)
            }
        }
    }
}

/// `bn(conv(x))`, or `conv(x)` once `bn` is folded into `conv` ([`fold_batch_norm`]).
fn conv_bn(
    conv: &burn::nn::conv::Conv2d,
    bn: &burn::nn::BatchNorm,
    folded: bool,
    x: Tensor<4>,
) -> Tensor<4> {
    let y = conv.forward(x);
    if folded { y } else { bn.forward(y) }
}

/// Folds an inference-mode batch norm into the convolution right before it: with
/// `scale = gamma / sqrt(running_var + eps)` per output channel, `bn(conv(x) + b)` equals a
/// convolution with weights `w * scale` and bias `(b - running_mean) * scale + beta` (b = 0
/// without a bias), up to float rounding. The batch norm itself is left as it is; the caller
/// stops applying it.
fn fold_batch_norm(conv: &mut burn::nn::conv::Conv2d, bn: &burn::nn::BatchNorm) {
    use burn::module::Param;
    let mean = bn.running_mean.value();
    let var = bn.running_var.value();
    let scale = bn.gamma.val().div(var.add_scalar(bn.epsilon).sqrt());
    let [out_channels, _, _, _] = conv.weight.dims();
    let weight = conv
        .weight
        .val()
        .mul(scale.clone().reshape([out_channels, 1, 1, 1]));
    let bias = match &conv.bias {
        Some(b) => b.val().sub(mean).mul(scale).add(bn.beta.val()),
        None => mean.neg().mul(scale).add(bn.beta.val()),
    };
    conv.weight = Param::from_tensor(weight);
    conv.bias = Some(Param::from_tensor(bias));
}

/// Keeps the outputs `keep` of a linear layer stored `[d_input, d_output]` (Burn's default
/// layout, which every head here uses): the weight columns and bias entries of those outputs.
fn select_outputs(layer: &mut burn::nn::Linear, keep: &[usize]) -> crate::Result<()> {
    let [d_input, d_output] = layer.weight.val().dims();
    if keep.is_empty() {
        return Err(crate::Error::Config(
            "restricting a model to no class at all".into(),
        ));
    }
    if let Some(&bad) = keep.iter().find(|&&k| k >= d_output) {
        return Err(crate::Error::Config(format!(
            "class index {bad} is not an output of a {d_output}-class model"
        )));
    }
    let device = layer.weight.val().device();
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(keep.iter().map(|&k| k as i64).collect(), [keep.len()]),
        &device,
    );
    let weight = layer.weight.val().select(1, index.clone());
    debug_assert_eq!(weight.dims(), [d_input, keep.len()]);
    layer.weight = burn::module::Param::from_tensor(weight);
    if let Some(bias) = &layer.bias {
        layer.bias = Some(burn::module::Param::from_tensor(
            bias.val().select(0, index),
        ));
    }
    Ok(())
}

/// Per-example cross-entropy. logits: [batch, classes], targets: [batch] -> [batch].
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let log_probs = burn::tensor::activation::log_softmax(logits, 1);
    log_probs
        .gather(1, targets.reshape([batch, 1]))
        .reshape([batch])
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Arch, c: usize, h: usize) -> ModelSpec {
        ModelSpec {
            arch,
            channels: c,
            height: h,
            width: h,
            num_classes: 10,
            mean: vec![0.5; c],
            std: vec![0.25; c],
            images: true,
        }
    }

    #[test]
    fn every_arch_gives_logits_and_features_of_the_right_shape() {
        let device = Device::flex();
        for (arch, features) in [
            (Arch::Mlp, 512),
            (Arch::Cnn, 256),
            (Arch::Resnet18, 512),
            (Arch::Vgg11, 512),
            (Arch::Resnet18Imagenet, 512),
            (Arch::Resnet50Imagenet, 2048),
        ] {
            for (c, h) in [(3, 32), (1, 8)] {
                let model = Classifier::new(&spec(arch, c, h), &device);
                let x = Tensor::<4>::zeros([2, c, h, h], &device);
                assert_eq!(model.forward(x.clone()).dims(), [2, 10], "{arch} {c}x{h}");
                assert_eq!(model.forward_features(x).dims(), [2, features], "{arch}");
            }
        }
    }

    /// A model of `arch` after three SGD steps (lr 0.1) in training mode, so that its batch
    /// norms have moved running statistics and affine parameters. (At lr 0.5 ResNet-50
    /// diverged to NaN on some CPUs, whose kernels round differently.)
    fn trained(arch: Arch, x: &Tensor<4>, y: &Tensor<1, Int>) -> Classifier {
        use burn::optim::{GradientsParams, SgdConfig};
        let device = Device::flex().autodiff();
        device.seed(11);
        let mut model = Classifier::new(&tiny_spec(arch), &device);
        let mut sgd = SgdConfig::new().init();
        let (x, y) = (x.clone().autodiff(), y.clone().autodiff());
        for _ in 0..3 {
            let loss = cross_entropy(model.forward(x.clone()), y.clone()).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = sgd.step(0.1, model, grads);
        }
        model
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // f32::max ignores NaN: without this a NaN output would compare as equal.
        assert!(
            a.iter().chain(b).all(|v| v.is_finite()),
            "non-finite values: {a:?} / {b:?}"
        );
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs() / scale))
    }

    #[test]
    fn folding_batch_norm_keeps_logits_features_and_input_gradients() {
        use crate::attack::loss::LossKind;
        let device = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..6 * 64).map(|i| ((i * 29) % 97) as f32 / 96.0).collect(),
                [6, 1, 8, 8],
            ),
            &device,
        );
        let y = crate::tensors::labels(&[0, 1, 2, 0, 1, 2], &device);
        for arch in [
            Arch::Cnn,
            Arch::Resnet18,
            Arch::Resnet50,
            Arch::Vgg11,
            Arch::Resnet18Imagenet,
        ] {
            let model = trained(arch, &x, &y);
            let plain = model.valid();
            let folded = model.for_inference();
            assert!(folded.is_folded() && !plain.is_folded() && !model.is_folded());
            let logits = crate::tensors::to_vec(plain.forward(x.clone()));
            let got = crate::tensors::to_vec(folded.forward(x.clone()));
            // Leaving out the batch norms altogether (no folding) would be far off: the
            // trained statistics are not the identity.
            assert!(max_rel_diff(&logits, &got) < 1e-4, "{arch} logits");
            let features = crate::tensors::to_vec(plain.forward_features(x.clone()));
            let got = crate::tensors::to_vec(folded.forward_features(x.clone()));
            assert!(max_rel_diff(&features, &got) < 1e-4, "{arch} features");
            let ce = LossKind::CrossEntropy;
            let (_, g_plain) = crate::attack::loss_and_grad(&plain, &ce, &x, &y, 1.0);
            let (_, g_folded) = crate::attack::loss_and_grad(&folded, &ce, &x, &y, 1.0);
            let (a, b) = (
                crate::tensors::to_vec(g_plain),
                crate::tensors::to_vec(g_folded),
            );
            assert!(max_rel_diff(&a, &b) < 1e-3, "{arch} input gradient");
            // Folding twice is folding once.
            assert_eq!(
                crate::tensors::to_vec(folded.for_inference().forward(x.clone())),
                crate::tensors::to_vec(folded.forward(x.clone())),
                "{arch}"
            );
        }
    }

    /// The small CNN and VGG-11 pool before their ReLU: max-pool(ReLU(y)) and
    /// ReLU(max-pool(y)) must agree bit for bit, values and input gradients, including on ties
    /// and zeros.
    #[test]
    fn relu_commutes_with_max_pool() {
        use burn::nn::pool::MaxPool2dConfig;
        let device = Device::flex().autodiff();
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let relu = burn::nn::Relu::new();
        // Values from a small set, so windows hold ties, zeros and all-negative windows.
        let y = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 3 * 8 * 8)
                    .map(|i| ((i * 7919) % 9) as f32 / 4.0 - 1.0)
                    .collect(),
                [2, 3, 8, 8],
            ),
            &device,
        );
        let weights = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 3 * 4 * 4).map(|i| (i % 5) as f32 - 1.5).collect(),
                [2, 3, 4, 4],
            ),
            &device,
        );
        let run = |pool_first: bool| {
            let y = y.clone().require_grad();
            let out = if pool_first {
                relu.forward(pool.forward(y.clone()))
            } else {
                pool.forward(relu.forward(y.clone()))
            };
            let grads = out.clone().mul(weights.clone()).sum().backward();
            let grad = y.grad(&grads).expect("y requires grad");
            (
                crate::tensors::to_vec(out.inner()),
                crate::tensors::to_vec(grad),
            )
        };
        let (a, b) = (run(true), run(false));
        assert!(a.0.contains(&0.0) && a.0.iter().any(|&v| v > 0.0));
        assert_eq!(a, b);
    }

    #[test]
    fn a_folded_model_is_neither_saved_nor_exported() {
        let device = Device::flex();
        let spec = tiny_spec(Arch::Cnn);
        let folded = Classifier::new(&spec, &device).for_inference();
        let meta = crate::train::checkpoint::CheckpointMeta {
            version: "test".into(),
            spec: spec.clone(),
            dataset: "test".into(),
            class_names: vec!["a".into(), "b".into(), "c".into()],
            epoch: 0,
            seed: 0,
            metrics: None,
            imported_from: None,
            restricted_from: None,
        };
        let dir = std::env::temp_dir().join(format!("robustness-fold-{}", std::process::id()));
        let err = crate::train::checkpoint::save(&dir.join("ckpt"), &folded, &meta, None)
            .expect_err("a folded model must not be saved");
        assert!(err.to_string().contains("folded"), "{err}");
        assert!(!dir.join("ckpt").exists());
        let err = crate::interop::export_model(&folded, &meta, &dir.join("m.safetensors"))
            .expect_err("a folded model must not be exported");
        assert!(err.to_string().contains("folded"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_ensemble_averages_logits_and_joins_features() {
        let device = Device::flex();
        device.seed(3);
        let members: Vec<Classifier> = [Arch::Cnn, Arch::Mlp, Arch::Cnn]
            .into_iter()
            .map(|arch| Classifier::new(&spec(arch, 3, 8), &device))
            .collect();
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 3 * 8 * 8)
                    .map(|i| (i % 17) as f32 / 16.0)
                    .collect::<Vec<_>>(),
                [2, 3, 8, 8],
            ),
            &device,
        );
        let each: Vec<Vec<f32>> = members
            .iter()
            .map(|m| crate::tensors::to_vec(m.forward(x.clone())))
            .collect();
        let ensemble = Classifier::ensemble(members).expect("three image models");
        assert_eq!(ensemble.members(), 3);
        assert!(ensemble.takes_images());
        let got = crate::tensors::to_vec(ensemble.forward(x.clone()));
        assert_eq!(got.len(), 2 * 10);
        for (i, g) in got.iter().enumerate() {
            let want = (each[0][i] + each[1][i] + each[2][i]) / 3.0;
            assert!((g - want).abs() < 1e-5, "logit {i}: {g} vs {want}");
        }
        assert!(each[0] != each[2], "members should differ");
        assert_eq!(
            ensemble.forward_features(x).dims(),
            [2, CNN_FEATURES + MLP_HIDDEN + CNN_FEATURES]
        );
        assert!(Classifier::ensemble(Vec::new()).is_err());
    }

    #[test]
    fn restricting_classes_keeps_exactly_their_logits() {
        let device = Device::flex();
        device.seed(5);
        let x = Tensor::<4>::from_data(
            TensorData::new(values(3 * 3 * 8 * 8, 2), [3, 3, 8, 8]),
            &device,
        );
        let keep = [5, 3, 9];
        for arch in [
            Arch::Linear,
            Arch::Mlp,
            Arch::Cnn,
            Arch::Resnet18,
            Arch::Vgg11,
        ] {
            let model = Classifier::new(&spec(arch, 3, 8), &device);
            let full = crate::tensors::to_vec(model.forward(x.clone()));
            let features = crate::tensors::to_vec(model.forward_features(x.clone()));
            let small = model.restrict_classes(&keep).expect("valid classes");
            let got = crate::tensors::to_vec(small.forward(x.clone()));
            assert_eq!(got.len(), 3 * keep.len(), "{arch}");
            for image in 0..3 {
                for (j, &k) in keep.iter().enumerate() {
                    let (g, w) = (got[image * keep.len() + j], full[image * 10 + k]);
                    assert!(
                        (g - w).abs() < 1e-5,
                        "{arch} image {image} class {k}: {g} vs {w}"
                    );
                }
            }
            // The representation is untouched.
            assert_eq!(
                crate::tensors::to_vec(small.forward_features(x.clone())),
                features
            );
        }
        // Ensembles restrict every member; bad indices are errors, not panics.
        let members = (0..2)
            .map(|_| Classifier::new(&spec(Arch::Cnn, 3, 8), &device))
            .collect();
        let ensemble = Classifier::ensemble(members).expect("two models");
        let full = crate::tensors::to_vec(ensemble.forward(x.clone()));
        let two = ensemble.restrict_classes(&[3, 5]).expect("valid classes");
        let got = crate::tensors::to_vec(two.forward(x.clone()));
        for image in 0..3 {
            assert!((got[image * 2] - full[image * 10 + 3]).abs() < 1e-5);
            assert!((got[image * 2 + 1] - full[image * 10 + 5]).abs() < 1e-5);
        }
        let model = Classifier::new(&spec(Arch::Cnn, 3, 8), &device);
        assert!(model.clone().restrict_classes(&[10]).is_err());
        assert!(model.restrict_classes(&[]).is_err());
    }

    /// Deterministic values in [-1, 1) with a few exact ties (multiples of 1/8).
    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 + salt * 11) % 16) as f32 / 8.0 - 1.0)
            .collect()
    }

    // The CPU backend's conv forward, input gradient and weight gradient are our kernels
    // (vendor/burn-flex): one GEMM per image for planes of >= 256 positions, blocks of
    // images below. Check both against the definition, with bias, stride, padding,
    // dilation, groups and the 1x1 shortcut.
    #[test]
    fn conv_forward_and_gradients_match_their_definitions() {
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        let device = Device::flex().autodiff();
        // (batch, c_in, h, w, c_out, kernel, stride, padding, dilation, groups)
        let cases = [
            (2, 3, 6, 5, 4, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (3, 2, 7, 8, 2, [3, 2], [2, 3], [0, 1], [1, 1], 1),
            (2, 4, 8, 7, 6, [3, 3], [1, 2], [2, 1], [2, 1], 2),
            (2, 3, 10, 9, 4, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (2, 2, 22, 18, 3, [3, 2], [2, 3], [0, 1], [1, 1], 1),
            (2, 4, 17, 16, 6, [3, 3], [1, 2], [2, 1], [2, 1], 2),
            (2, 4, 8, 9, 6, [1, 1], [1, 1], [0, 0], [1, 1], 2),
            (3, 5, 9, 8, 3, [1, 1], [1, 1], [0, 0], [1, 1], 1),
            // Planes of >= 256 positions: one GEMM per image (and a 1x1 one without lowering).
            (2, 3, 16, 17, 4, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (2, 3, 16, 16, 5, [1, 1], [1, 1], [0, 0], [1, 1], 1),
            // Small planes: several images per GEMM, the last block shorter (3 + 2, 4 + 1
            // with a lone pointwise image) or the whole batch in one (a strided shortcut).
            (5, 3, 8, 12, 4, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            (5, 4, 8, 8, 6, [1, 1], [1, 1], [0, 0], [1, 1], 2),
            (6, 4, 8, 8, 8, [1, 1], [2, 2], [0, 0], [1, 1], 1),
            // Stride 1 with the output as wide as the input: lowered as one shifted copy
            // per kernel tap (dilated; taller kernel than padding; no width padding).
            (2, 3, 9, 7, 4, [3, 3], [1, 1], [2, 2], [2, 2], 1),
            (2, 2, 9, 6, 3, [5, 3], [1, 1], [1, 1], [1, 1], 1),
            (3, 2, 7, 5, 2, [3, 1], [1, 1], [0, 0], [1, 1], 1),
            // Wide padding: 4 wrapped columns per row to clear in the lowering; then taps that
            // miss the input entirely.
            (2, 2, 20, 9, 3, [1, 9], [1, 1], [0, 4], [1, 1], 1),
            (2, 2, 4, 3, 2, [1, 9], [1, 1], [0, 4], [1, 1], 1),
            // 3x3, stride 1, min(channels) x width >= 1024: Winograd, with the tile sizes of
            // `conv_winograd::choose` in the vendored Flex. 4x4 tiles for the forward and
            // input gradient, 2x2 for the weight gradient (80 tiles of 4x4; 8 + 2 images per
            // group of the 4x4 transforms):
            (5, 64, 16, 16, 64, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            // 4x4 tiles for all three passes, a full and a shorter group of images:
            (10, 64, 16, 16, 64, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            // 2x2 tiles for the forward and input gradient (planes 32-40 wide), 4x4 for the
            // weight gradient (3 images in a group of 8):
            (3, 32, 40, 40, 32, [3, 3], [1, 1], [1, 1], [1, 1], 1),
            // 2x2 tiles everywhere (odd planes, paddings 0 and 2; several images per block
            // and a shorter last block):
            (5, 32, 7, 35, 40, [3, 3], [1, 1], [0, 2], [1, 1], 1),
            // 2x2 tiles for the forward and input gradient, im2col for the weight gradient
            // (too few tiles):
            (2, 64, 16, 16, 64, [3, 3], [1, 1], [1, 1], [1, 1], 1),
        ];
        for (n, ci, h, w, co, k, stride, pad, dil, groups) in cases {
            let oh = (h + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) / stride[0] + 1;
            let ow = (w + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) / stride[1] + 1;
            let (cig, cog) = (ci / groups, co / groups);
            let (xv, wv, gv, bv) = (
                values(n * ci * h * w, 1),
                values(co * cig * k[0] * k[1], 2),
                values(n * co * oh * ow, 3),
                values(co, 5),
            );
            let x = Tensor::<4>::from_data(TensorData::new(xv.clone(), [n, ci, h, w]), &device)
                .require_grad();
            let weight =
                Tensor::<4>::from_data(TensorData::new(wv.clone(), [co, cig, k[0], k[1]]), &device)
                    .require_grad();
            let bias =
                Tensor::<1>::from_data(TensorData::new(bv.clone(), [co]), &device).require_grad();
            let g = Tensor::<4>::from_data(TensorData::new(gv.clone(), [n, co, oh, ow]), &device);
            let y = conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                ConvOptions::new(stride, pad, dil, groups),
            );
            assert_eq!(y.dims(), [n, co, oh, ow]);
            let got_y = crate::tensors::to_vec(y.clone());
            let grads = (y * g).sum().backward();
            let got_w = crate::tensors::to_vec(weight.grad(&grads).expect("weight gradient"));
            let got_x = crate::tensors::to_vec(x.grad(&grads).expect("input gradient"));
            let got_b = crate::tensors::to_vec(bias.grad(&grads).expect("bias gradient"));
            let mut want_b = vec![0.0f64; co];
            for (i, gi) in gv.iter().enumerate() {
                want_b[(i / (oh * ow)) % co] += f64::from(*gi);
            }
            let mut want_y: Vec<f64> = (0..n * co * oh * ow)
                .map(|i| f64::from(bv[(i / (oh * ow)) % co]))
                .collect();
            let mut want_w = vec![0.0f64; wv.len()];
            let mut want_x = vec![0.0f64; xv.len()];
            for b in 0..n {
                for o in 0..co {
                    let group = o / cog;
                    for c in 0..cig {
                        for (kh, kw) in (0..k[0]).flat_map(|a| (0..k[1]).map(move |b| (a, b))) {
                            let wi = ((o * cig + c) * k[0] + kh) * k[1] + kw;
                            for (y, x) in (0..oh).flat_map(|a| (0..ow).map(move |b| (a, b))) {
                                let ih = (y * stride[0] + kh * dil[0]) as isize - pad[0] as isize;
                                let iw = (x * stride[1] + kw * dil[1]) as isize - pad[1] as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                    continue;
                                }
                                let xi = ((b * ci + group * cig + c) * h + ih as usize) * w
                                    + iw as usize;
                                let yi = ((b * co + o) * oh + y) * ow + x;
                                want_y[yi] += f64::from(xv[xi]) * f64::from(wv[wi]);
                                want_w[wi] += f64::from(xv[xi]) * f64::from(gv[yi]);
                                want_x[xi] += f64::from(wv[wi]) * f64::from(gv[yi]);
                            }
                        }
                    }
                }
            }
            for (what, got, want) in [
                ("output", &got_y, &want_y),
                ("weight gradient", &got_w, &want_w),
                ("input gradient", &got_x, &want_x),
                ("bias gradient", &got_b, &want_b),
            ] {
                assert_eq!(got.len(), want.len(), "{what}");
                // 1e-4, or 1e-5 of the largest magnitude where that is more: the 4x4-tile
                // Winograd transforms round f32 more than a direct sum (the vendored crate's
                // own Winograd tests use the same relative bound).
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let tol = 1e-4f64.max(1e-5 * scale);
                for (i, (a, b)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (f64::from(*a) - b).abs() < tol,
                        "case {n}x{ci}x{h}x{w} -> {co}, k {k:?}, stride {stride:?}, pad {pad:?}, dilation {dil:?}, groups {groups}: {what} element {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    // Batch normalization with batch statistics, its gradients and the inference form are
    // our fused kernels: check them against the definitions (planes of 30 and of 1 element).
    #[test]
    fn batch_norm_matches_its_definition() {
        use burn::tensor::module::{batch_norm, batch_norm_train};
        let device = Device::flex().autodiff();
        let eps = 1e-5;
        for dims in [vec![3usize, 4, 5, 6], vec![7, 3]] {
            let (n, c) = (dims[0], dims[1]);
            let s: usize = dims[2..].iter().product();
            let len = n * c * s;
            // Not centred, so that mean subtraction matters.
            let xv: Vec<f32> = values(len, 7)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + (i % 3) as f32) + 2.0)
                .collect();
            let gv = values(len, 8);
            let (gamma_v, beta_v) = (values(c, 9), values(c, 10));
            let shape: Vec<usize> = dims.clone();
            let x = Tensor::<2>::from_data(TensorData::new(xv.clone(), [n, c * s]), &device);
            let x: Tensor<4> = x.reshape([n, c, s, 1]).require_grad();
            let gamma = Tensor::<1>::from_data(TensorData::new(gamma_v.clone(), [c]), &device)
                .require_grad();
            let beta = Tensor::<1>::from_data(TensorData::new(beta_v.clone(), [c]), &device)
                .require_grad();
            let g = Tensor::<2>::from_data(TensorData::new(gv.clone(), [n, c * s]), &device)
                .reshape([n, c, s, 1]);
            let out = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), eps);
            let (y, mean, var) = (out.output, out.mean, out.variance);
            let got_y = crate::tensors::to_vec(y.clone());
            let got_mean = crate::tensors::to_vec(mean.clone());
            let got_var = crate::tensors::to_vec(var.clone());
            let grads = (y * g).sum().backward();
            let got_x = crate::tensors::to_vec(x.grad(&grads).expect("x gradient"));
            let got_gamma = crate::tensors::to_vec(gamma.grad(&grads).expect("gamma gradient"));
            let got_beta = crate::tensors::to_vec(beta.grad(&grads).expect("beta gradient"));
            let at = |b: usize, ch: usize, i: usize| (b * c + ch) * s + i;
            let m = (n * s) as f64;
            for ch in 0..c {
                let xs: Vec<(usize, f64)> = (0..n)
                    .flat_map(|b| (0..s).map(move |i| at(b, ch, i)))
                    .map(|k| (k, f64::from(xv[k])))
                    .collect();
                let mu = xs.iter().map(|p| p.1).sum::<f64>() / m;
                let var = xs.iter().map(|p| (p.1 - mu).powi(2)).sum::<f64>() / m;
                let inv = 1.0 / (var + eps).sqrt();
                let (ga, be) = (f64::from(gamma_v[ch]), f64::from(beta_v[ch]));
                let close = |a: f32, b: f64, what: &str| {
                    assert!(
                        (f64::from(a) - b).abs() < 1e-4,
                        "{shape:?} channel {ch}: {what}: {a} vs {b}"
                    );
                };
                close(got_mean[ch], mu, "mean");
                close(got_var[ch], var, "variance");
                let sum_g: f64 = xs.iter().map(|p| f64::from(gv[p.0])).sum();
                let sum_gx: f64 = xs
                    .iter()
                    .map(|p| f64::from(gv[p.0]) * (p.1 - mu) * inv)
                    .sum();
                close(got_beta[ch], sum_g, "beta gradient");
                close(got_gamma[ch], sum_gx, "gamma gradient");
                for &(k, v) in &xs {
                    let xhat = (v - mu) * inv;
                    close(got_y[k], xhat * ga + be, "output");
                    let dx = ga * inv * (f64::from(gv[k]) - sum_g / m - xhat * sum_gx / m);
                    close(got_x[k], dx, "x gradient");
                }
            }
            // Inference form with given statistics (without autodiff, which composes it).
            let plain = Device::flex();
            let (mean_v, var_v) = (
                values(c, 11),
                values(c, 12).iter().map(|v| v + 1.5).collect::<Vec<f32>>(),
            );
            let y = batch_norm(
                Tensor::<2>::from_data(TensorData::new(xv.clone(), [n, c * s]), &plain)
                    .reshape([n, c, s, 1]),
                Tensor::<1>::from_data(TensorData::new(gamma_v.clone(), [c]), &plain),
                Tensor::<1>::from_data(TensorData::new(beta_v.clone(), [c]), &plain),
                Tensor::<1>::from_data(TensorData::new(mean_v.clone(), [c]), &plain),
                Tensor::<1>::from_data(TensorData::new(var_v.clone(), [c]), &plain),
                eps,
            );
            let got = crate::tensors::to_vec(y);
            for (k, (&a, &v)) in got.iter().zip(&xv).enumerate() {
                let ch = (k / s) % c;
                let want = (f64::from(v) - f64::from(mean_v[ch]))
                    / (f64::from(var_v[ch]) + eps).sqrt()
                    * f64::from(gamma_v[ch])
                    + f64::from(beta_v[ch]);
                assert!(
                    (f64::from(a) - want).abs() < 1e-4,
                    "inference element {k}: {a} vs {want}"
                );
            }
        }
    }

    // The 2x2 / stride-2 max pooling is our kernel too: values, NaN propagation, odd sizes
    // (the last row / column is dropped) and the gradient going to the first maximum. Rows of
    // 8 and more windows take the AVX2 path (8 at a time, the rest scalar) on CPUs with AVX2.
    #[test]
    fn max_pool_2x2_matches_its_definition() {
        use burn::tensor::module::max_pool2d;
        use burn::tensor::ops::MaxPoolOptions;
        let device = Device::flex().autodiff();
        for (n, c, h, w, nans) in [
            (2, 3, 5, 7, vec![9]),
            (2, 2, 6, 34, vec![0, 35, 70, 103, 250]),
            (1, 3, 4, 16, vec![17, 40]),
            (3, 1, 7, 17, vec![]),
        ] {
            let mut xv = values(n * c * h * w, 4);
            for i in nans {
                xv[i] = f32::NAN;
            }
            let x = Tensor::<4>::from_data(TensorData::new(xv.clone(), [n, c, h, w]), &device)
                .require_grad();
            let y = max_pool2d(x.clone(), MaxPoolOptions::new([2, 2]).with_stride([2, 2]));
            let (oh, ow) = (h / 2, w / 2);
            assert_eq!(y.dims(), [n, c, oh, ow]);
            let got = crate::tensors::to_vec(y.clone());
            // A different upstream gradient per window, so a value sent to the wrong position
            // of its window shows.
            let gv: Vec<f32> = (0..n * c * oh * ow).map(|i| 1.0 + i as f32).collect();
            let g = Tensor::<4>::from_data(TensorData::new(gv.clone(), [n, c, oh, ow]), &device);
            let grads = (y.clone() * g).sum().backward();
            let gx = crate::tensors::to_vec(x.grad(&grads).expect("input gradient"));
            let mut want_grad = vec![0.0f32; xv.len()];
            for p in 0..n * c {
                for (i, j) in (0..oh).flat_map(|a| (0..ow).map(move |b| (a, b))) {
                    let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(a, b)| p * h * w + (2 * i + a) * w + 2 * j + b);
                    let mut best = window[0];
                    for &k in &window[1..] {
                        if xv[k] > xv[best] || xv[k].is_nan() {
                            best = k;
                        }
                    }
                    let out = got[(p * oh + i) * ow + j];
                    if xv[best].is_nan() {
                        assert!(
                            out.is_nan(),
                            "{h}x{w} window {p} {i} {j}: NaN must propagate"
                        );
                    } else {
                        assert_eq!(out, xv[best], "{h}x{w} window {p} {i} {j}");
                    }
                    want_grad[best] += gv[(p * oh + i) * ow + j];
                }
            }
            assert_eq!(gx, want_grad, "{h}x{w} gradient");
        }
    }

    #[test]
    fn resnet50_features_are_2048_wide() {
        let device = Device::flex();
        let model = Classifier::new(&spec(Arch::Resnet50, 3, 8), &device);
        let x = Tensor::<4>::zeros([1, 3, 8, 8], &device);
        assert_eq!(model.forward_features(x).dims(), [1, 2048]);
    }

    #[test]
    fn parameter_counts_match_the_documented_ones() {
        let device = Device::flex();
        // conv 896 + 18,496 + 73,856; fc 524,544 + 2,570; batch-norm gamma/beta 2*(32+64+128);
        // batch-norm running mean/var are not counted by num_params.
        let cnn = Classifier::new(&spec(Arch::Cnn, 3, 32), &device);
        let bn_params = 2 * (32 + 64 + 128);
        let counted = cnn.num_params();
        assert!(
            counted == 620_362 + bn_params || counted == 620_362 + 2 * bn_params,
            "cnn has {counted} parameters"
        );
        // The CIFAR ResNet-18 of the reference library has 11,173,962 parameters.
        let r18 = Classifier::new(&spec(Arch::Resnet18, 3, 32), &device);
        let n = r18.num_params();
        assert!(
            n == 11_173_962 || n == 11_173_962 + 9_600,
            "resnet18 has {n}"
        );
        // torchvision's ResNet-18 / ResNet-50 (1000 classes): 11,689,512 / 25,557,032
        // parameters; their batch norms hold 9,600 / 53,120 running statistics.
        for (arch, published, running) in [
            (Arch::Resnet18Imagenet, 11_689_512, 9_600),
            (Arch::Resnet50Imagenet, 25_557_032, 53_120),
        ] {
            let s = ModelSpec {
                num_classes: 1000,
                ..spec(arch, 3, 224)
            };
            let n = Classifier::new(&s, &device).num_params();
            assert!(n == published || n == published + running, "{arch} has {n}");
        }
    }

    #[test]
    fn arch_names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().expect("known name"), arch);
        }
        assert!("resnet34".parse::<Arch>().is_err());
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 1.0, 0.0], [2, 2]),
            &device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 0], [2]), &device);
        let loss = crate::tensors::to_vec(cross_entropy(logits, targets));
        assert!((loss[0] - std::f32::consts::LN_2).abs() < 1e-6);
        let expected = (1.0f32 + (-1.0f32).exp()).ln();
        assert!((loss[1] - expected).abs() < 1e-6, "{loss:?}");
    }
}
