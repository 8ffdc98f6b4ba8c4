//! Files made by PyTorch and the reference library (scripts/interop/make-fixtures, not run by
//! CI): a MadryLab checkpoint and a plain state dict import with PyTorch's logits (to 1e-4), the
//! authors' released data-set layout reads in both containers, and our PyTorch names are exactly
//! those of scripts/interop/robustness_models.py and of MadryLab's ResNets and VGG.

use robustness::interop::{self, ImportFormat, released};
use robustness::{Arch, Device, ModelSpec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interop")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn spec(arch: Arch, shape: [usize; 3], classes: usize, mean: f32, std: f32) -> ModelSpec {
    ModelSpec {
        arch,
        channels: shape[0],
        height: shape[1],
        width: shape[2],
        num_classes: classes,
        mean: vec![mean; shape[0]],
        std: vec![std; shape[0]],
        images: true,
    }
}

fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "{what}: largest logit difference {worst}");
}

#[test]
fn a_madry_checkpoint_gives_pytorchs_logits() {
    let fx = &json("logits.json")["madry_cnn"];
    let device = Device::flex();
    // The requested normalisation is wrong on purpose: the file's normaliser must be used.
    let s = spec(Arch::Cnn, [3, 8, 8], 10, 0.0, 1.0);
    let file = fixtures().join("madry_cnn.pt");
    let (model, s, from) = interop::import_checkpoint(&file, ImportFormat::Madry, &s, &device)
        .expect("import the MadryLab checkpoint");
    assert!(from.normalization_from_file);
    assert_eq!(from.epoch, Some(7));
    assert!((s.mean[0] - 0.4914).abs() < 1e-6 && (s.std[2] - 0.2010).abs() < 1e-6);
    let x = floats(&fx["inputs"]);
    let logits = robustness::eval::logits(&model, &x, [x.len() / 192, 3, 8, 8], 4, &device);
    assert_close(&logits, &floats(&fx["logits"]), "madry cnn");
}

#[test]
fn a_plain_state_dict_gives_pytorchs_logits() {
    let fx = &json("logits.json")["torch_mlp"];
    let device = Device::flex();
    let s = spec(Arch::Mlp, [1, 8, 8], 10, 0.3, 0.25);
    let (model, _, from) = interop::import_checkpoint(
        &fixtures().join("torch_mlp.pt"),
        ImportFormat::Pytorch,
        &s,
        &device,
    )
    .expect("import the state dict");
    assert!(!from.normalization_from_file);
    let x = floats(&fx["inputs"]);
    let logits = robustness::eval::logits(&model, &x, [x.len() / 64, 1, 8, 8], 2, &device);
    assert_close(&logits, &floats(&fx["logits"]), "torch mlp");
    // The same file is not a MadryLab checkpoint, and says why.
    let err = interop::import_checkpoint(
        &fixtures().join("torch_mlp.pt"),
        ImportFormat::Madry,
        &s,
        &device,
    )
    .expect_err("no 'model' entry")
    .to_string();
    assert!(err.contains("'model'"), "{err}");
}

#[test]
fn released_sets_read_in_both_containers() {
    let fx = json("released.json");
    let pixels: Vec<f32> = fx["pixels"]
        .as_array()
        .expect("pixels")
        .iter()
        .map(|v| v.as_u64().expect("int") as f32 / 255.0)
        .collect();
    let labels: Vec<usize> = fx["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|v| v.as_u64().expect("int") as usize)
        .collect();
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    for folder in ["released_legacy/ddet_CIFAR", "released_zip/drand_CIFAR"] {
        let dir = fixtures().join(folder);
        assert!(released::is_released(&dir), "{folder}");
        let data = released::load(&dir, &names).expect(folder);
        assert_eq!([data.channels, data.height, data.width], [3, 32, 32]);
        assert_eq!(data.labels, labels, "{folder}");
        assert_eq!(data.images, pixels, "{folder}");
    }
}

fn layout(v: &Value) -> BTreeMap<String, Vec<usize>> {
    v.as_object()
        .expect("object")
        .iter()
        .map(|(k, s)| {
            let shape = s
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect()
}

#[test]
fn our_pytorch_names_are_those_of_the_python_models_and_of_madrylab() {
    let fx = json("layouts.json");
    let device = Device::flex();
    let counters =
        |l: BTreeMap<String, Vec<usize>>, prefix: &str| -> BTreeMap<String, Vec<usize>> {
            l.into_iter()
                .filter_map(|(k, s)| {
                    let k = k.strip_prefix(prefix)?.to_string();
                    (!k.ends_with("num_batches_tracked")).then_some((k, s))
                })
                .collect()
        };
    for arch in Arch::ALL {
        let ours =
            interop::torch_layout(&spec(arch, [3, 8, 8], 4, 0.0, 1.0), &device).expect("layout");
        let python = counters(layout(&fx["ours"][arch.name()]), "model.");
        assert_eq!(ours, python, "{arch} vs robustness_models.py");
    }
    for arch in [Arch::Resnet18, Arch::Resnet50, Arch::Vgg11] {
        let ours =
            interop::torch_layout(&spec(arch, [3, 32, 32], 10, 0.0, 1.0), &device).expect("layout");
        let madry = counters(layout(&fx["madry"][arch.name()]), "module.model.");
        assert_eq!(ours, madry, "{arch} vs MadryLab cifar_models");
    }
    for arch in [Arch::Resnet18Imagenet, Arch::Resnet50Imagenet] {
        let ours = interop::torch_layout(&spec(arch, [3, 64, 64], 1000, 0.0, 1.0), &device)
            .expect("layout");
        let madry = counters(layout(&fx["madry"][arch.name()]), "module.model.");
        assert_eq!(ours, madry, "{arch} vs MadryLab imagenet_models");
    }
}
