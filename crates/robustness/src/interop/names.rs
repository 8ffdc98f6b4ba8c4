//! Parameter names: our (Burn) paths and the PyTorch module names of the same architectures.
//!
//! ResNet-18/50 and VGG-11 use the names of the reference library's `cifar_models` (MadryLab
//! `robustness`), so its checkpoints import directly: `conv1`, `bn1`, `layer{1-4}.{j}.conv{k}`,
//! `layer{s}.{j}.bn{k}`, `layer{s}.{j}.shortcut.{0,1}`, `linear` (ResNet); `features.{i}` (a
//! Sequential of conv, batch norm, ReLU and max-pools, in the reference order) and `classifier`
//! (VGG). The ImageNet ResNets use torchvision's names, which the reference library's
//! `imagenet_models` keep: as the CIFAR ResNet, but `layer{s}.{j}.downsample.{0,1}` and `fc`. Our own small architectures use the names of `scripts/interop/robustness_models.py`:
//! `linear` (linear); `fc1`, `fc2`, `linear` (mlp); `blocks.{i}.conv`, `blocks.{i}.bn`, `fc`,
//! `linear` (cnn).
//!
//! Batch norm: Burn's `gamma` / `beta` are PyTorch's `weight` / `bias`; running statistics keep
//! their names; PyTorch's `num_batches_tracked` has no counterpart (ignored on import, written
//! as 0 on export). Linear weights are stored transposed by Burn (`[in, out]`) and PyTorch
//! (`[out, in]`); convolution weights agree (`[out, in, kh, kw]`).

use crate::models::Arch;

/// The pattern of every ResNet architecture.
macro_rules! RESNETS {
    () => {
        Arch::Resnet18 | Arch::Resnet50 | Arch::Resnet18Imagenet | Arch::Resnet50Imagenet
    };
}

/// How one of our parameters is stored under PyTorch's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchName {
    /// The PyTorch state-dict key (without any wrapper prefix such as `module.model.`).
    pub name: String,
    /// The tensor is a linear layer's weight: transpose between the two layouts.
    pub transpose: bool,
}

/// The PyTorch name of the Burn parameter `path` (as Burn writes it, e.g.
/// `net.ResNet.blocks.3.convs.1.weight`) in architecture `arch`; `None` for a path this module
/// does not know (a bug: every parameter of our models has a name).
pub fn torch_name(arch: Arch, path: &str) -> Option<TorchName> {
    let parts: Vec<&str> = path.split('.').collect();
    // ["net", variant, module path..., leaf]
    let (&leaf, rest) = parts.split_last()?;
    let module = rest.get(2..)?;
    let leaf = match leaf {
        "gamma" => "weight",
        "beta" => "bias",
        other => other,
    };
    let name = |module: String| TorchName {
        transpose: false,
        name: format!("{module}.{leaf}"),
    };
    let linear = |module: &str| TorchName {
        transpose: leaf == "weight",
        name: format!("{module}.{leaf}"),
    };
    let index = |s: &str| s.parse::<usize>().ok();
    match (arch, module) {
        (_, ["head"]) => Some(linear(match arch {
            Arch::Vgg11 => "classifier",
            Arch::Resnet18Imagenet | Arch::Resnet50Imagenet => "fc",
            _ => "linear",
        })),
        (Arch::Mlp, [fc @ ("fc1" | "fc2")]) => Some(linear(fc)),
        (Arch::Cnn, ["fc"]) => Some(linear("fc")),
        (Arch::Cnn, ["blocks", i, layer @ ("conv" | "bn")]) => {
            Some(name(format!("blocks.{}.{layer}", index(i)?)))
        }
        (RESNETS!(), ["stem"]) => Some(name("conv1".into())),
        (RESNETS!(), ["stem_bn"]) => Some(name("bn1".into())),
        (RESNETS!(), ["blocks", b, tail @ ..]) => {
            let (stage, j) = resnet_block(arch, index(b)?)?;
            let block = format!("layer{}.{j}", stage + 1);
            let shortcut = match arch {
                Arch::Resnet18Imagenet | Arch::Resnet50Imagenet => "downsample",
                _ => "shortcut",
            };
            match tail {
                ["convs", k] => Some(name(format!("{block}.conv{}", index(k)? + 1))),
                ["bns", k] => Some(name(format!("{block}.bn{}", index(k)? + 1))),
                ["shortcut", "conv"] => Some(name(format!("{block}.{shortcut}.0"))),
                ["shortcut", "bn"] => Some(name(format!("{block}.{shortcut}.1"))),
                _ => None,
            }
        }
        (Arch::Vgg11, ["layers", i, layer @ ("conv" | "bn")]) => {
            let conv = vgg_conv_index(index(i)?)?;
            Some(name(format!(
                "features.{}",
                if *layer == "conv" { conv } else { conv + 1 }
            )))
        }
        _ => None,
    }
}

/// Blocks per stage of the reference library's CIFAR ResNets.
fn resnet_stages(arch: Arch) -> &'static [usize] {
    match arch {
        Arch::Resnet50 | Arch::Resnet50Imagenet => &[3, 4, 6, 3],
        _ => &[2, 2, 2, 2],
    }
}

/// Global block index -> (stage, index within the stage).
fn resnet_block(arch: Arch, mut b: usize) -> Option<(usize, usize)> {
    for (stage, &count) in resnet_stages(arch).iter().enumerate() {
        if b < count {
            return Some((stage, b));
        }
        b -= count;
    }
    None
}

/// Index in the reference VGG's `features` Sequential of the `i`-th conv layer: each conv is
/// followed by batch norm and ReLU, and the configuration's max-pools take one slot each
/// (`[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]`).
fn vgg_conv_index(i: usize) -> Option<usize> {
    let mut slot = 0;
    let mut conv = 0;
    for item in crate::models::vgg::VGG11 {
        if item.is_some() {
            if conv == i {
                return Some(slot);
            }
            conv += 1;
            slot += 3;
        } else {
            slot += 1;
        }
    }
    None
}

/// True for PyTorch state-dict entries that have no counterpart in our models and are safely
/// ignored on import (batch-norm step counters).
pub fn ignored_torch_key(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(arch: Arch, path: &str) -> (String, bool) {
        let t = torch_name(arch, path).expect(path);
        (t.name, t.transpose)
    }

    #[test]
    fn resnet_paths_map_to_the_reference_names() {
        let r18 = Arch::Resnet18;
        assert_eq!(
            n(r18, "net.ResNet.stem.weight"),
            ("conv1.weight".into(), false)
        );
        assert_eq!(
            n(r18, "net.ResNet.stem_bn.gamma"),
            ("bn1.weight".into(), false)
        );
        assert_eq!(
            n(r18, "net.ResNet.blocks.3.convs.1.weight"),
            ("layer2.1.conv2.weight".into(), false)
        );
        assert_eq!(
            n(r18, "net.ResNet.blocks.2.shortcut.bn.running_var"),
            ("layer2.0.shortcut.1.running_var".into(), false)
        );
        assert_eq!(
            n(r18, "net.ResNet.head.weight"),
            ("linear.weight".into(), true)
        );
        assert_eq!(
            n(r18, "net.ResNet.head.bias"),
            ("linear.bias".into(), false)
        );
        // ResNet-50: blocks 0-2 are layer1, 3-6 layer2, 7-12 layer3, 13-15 layer4.
        let r50 = Arch::Resnet50;
        assert_eq!(
            n(r50, "net.ResNet.blocks.12.bns.2.beta"),
            ("layer3.5.bn3.bias".into(), false)
        );
        assert_eq!(
            n(r50, "net.ResNet.blocks.13.convs.0.weight"),
            ("layer4.0.conv1.weight".into(), false)
        );
        assert!(torch_name(r50, "net.ResNet.blocks.16.convs.0.weight").is_none());
    }

    #[test]
    fn imagenet_resnets_use_torchvision_names() {
        let r18 = Arch::Resnet18Imagenet;
        assert_eq!(
            n(r18, "net.ResNet.stem.weight"),
            ("conv1.weight".into(), false)
        );
        assert_eq!(
            n(r18, "net.ResNet.blocks.2.shortcut.conv.weight"),
            ("layer2.0.downsample.0.weight".into(), false)
        );
        assert_eq!(
            n(r18, "net.ResNet.blocks.2.shortcut.bn.running_mean"),
            ("layer2.0.downsample.1.running_mean".into(), false)
        );
        assert_eq!(n(r18, "net.ResNet.head.weight"), ("fc.weight".into(), true));
        let r50 = Arch::Resnet50Imagenet;
        assert_eq!(
            n(r50, "net.ResNet.blocks.15.bns.2.gamma"),
            ("layer4.2.bn3.weight".into(), false)
        );
        assert_eq!(n(r50, "net.ResNet.head.bias"), ("fc.bias".into(), false));
    }

    #[test]
    fn vgg_conv_layers_skip_the_pool_slots() {
        let v = Arch::Vgg11;
        assert_eq!(n(v, "net.Vgg.layers.0.conv.weight").0, "features.0.weight");
        assert_eq!(n(v, "net.Vgg.layers.0.bn.gamma").0, "features.1.weight");
        // conv 1 comes after conv, bn, relu, pool.
        assert_eq!(n(v, "net.Vgg.layers.1.conv.bias").0, "features.4.bias");
        assert_eq!(
            n(v, "net.Vgg.layers.7.bn.running_mean").0,
            "features.26.running_mean"
        );
        assert_eq!(
            n(v, "net.Vgg.head.weight"),
            ("classifier.weight".into(), true)
        );
        assert!(torch_name(v, "net.Vgg.layers.8.conv.weight").is_none());
    }

    #[test]
    fn small_architectures_use_the_documented_names() {
        assert_eq!(
            n(Arch::Linear, "net.Linear.head.weight"),
            ("linear.weight".into(), true)
        );
        assert_eq!(
            n(Arch::Mlp, "net.Mlp.fc2.weight"),
            ("fc2.weight".into(), true)
        );
        assert_eq!(
            n(Arch::Cnn, "net.Cnn.blocks.2.bn.beta"),
            ("blocks.2.bn.bias".into(), false)
        );
        assert_eq!(
            n(Arch::Cnn, "net.Cnn.fc.weight"),
            ("fc.weight".into(), true)
        );
        assert!(torch_name(Arch::Cnn, "net.Cnn.nonsense.weight").is_none());
    }
}
