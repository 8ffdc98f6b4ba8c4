//! Export -> import round trips for every architecture (logits must agree), and the errors a
//! wrong file gets. Fixtures produced with PyTorch and the reference library are tested in
//! `tests/interop.rs`.

use super::*;
use crate::models::Arch;

fn spec(arch: Arch, c: usize, h: usize, k: usize) -> ModelSpec {
    ModelSpec {
        arch,
        channels: c,
        height: h,
        width: h,
        num_classes: k,
        mean: vec![0.3; c],
        std: vec![0.2; c],
        images: true,
    }
}

fn meta(spec: &ModelSpec) -> CheckpointMeta {
    CheckpointMeta {
        version: "test".into(),
        spec: spec.clone(),
        dataset: "test".into(),
        class_names: (0..spec.num_classes).map(|i| i.to_string()).collect(),
        epoch: 0,
        seed: 0,
        metrics: None,
        imported_from: None,
        restricted_from: None,
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("robustness-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn logits(model: &Classifier, s: &ModelSpec, device: &Device) -> Vec<f32> {
    let n = 3;
    let len = s.channels * s.height * s.width;
    let x: Vec<f32> = (0..n * len)
        .map(|i| ((i * 37) % 101) as f32 / 100.0)
        .collect();
    crate::eval::logits(model, &x, [n, s.channels, s.height, s.width], 2, device)
}

#[test]
fn every_architecture_round_trips_through_pytorch_names() {
    let device = Device::flex();
    for arch in Arch::ALL {
        let s = spec(arch, 3, 8, 4);
        device.seed(7);
        let model = Classifier::new(&s, &device);
        let file = tmp(&format!("{arch}.safetensors"));
        let report = export_model(&model, &meta(&s), &file).expect("export");
        assert!(report.tensors.contains_key("normalizer.new_mean"));
        assert!(
            report
                .tensors
                .keys()
                .all(|k| k.starts_with("model.") || k.starts_with("normalizer."))
        );
        // A different normalisation in the requested spec: the file's must win.
        let mut other = s.clone();
        other.mean = vec![0.0; 3];
        other.std = vec![1.0; 3];
        let (back, back_spec, from) =
            import_checkpoint(&file, ImportFormat::Pytorch, &other, &device).expect("import");
        assert!(from.normalization_from_file);
        assert_eq!(back_spec.mean, s.mean);
        assert_eq!(
            logits(&model, &s, &device),
            logits(&back, &back_spec, &device),
            "{arch}"
        );
    }
}

#[test]
fn exports_are_byte_identical_for_the_same_weights() {
    let device = Device::flex();
    let s = spec(Arch::Cnn, 1, 8, 3);
    device.seed(1);
    let model = Classifier::new(&s, &device);
    let (a, b) = (tmp("a.safetensors"), tmp("b.safetensors"));
    export_model(&model, &meta(&s), &a).expect("export");
    export_model(&model, &meta(&s), &b).expect("export");
    assert_eq!(std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
}

#[test]
fn a_wrong_architecture_lists_the_mismatches() {
    let device = Device::flex();
    let s = spec(Arch::Mlp, 1, 8, 3);
    let model = Classifier::new(&s, &device);
    let file = tmp("mlp.safetensors");
    export_model(&model, &meta(&s), &file).expect("export");
    let err = import_checkpoint(
        &file,
        ImportFormat::Pytorch,
        &spec(Arch::Cnn, 1, 8, 3),
        &device,
    )
    .expect_err("an mlp is not a cnn")
    .to_string();
    assert!(err.contains("does not fit a cnn model"), "{err}");
    assert!(err.contains("missing: blocks.0.bn.bias [32]"), "{err}");
    assert!(err.contains("unexpected: fc1.bias [512]"), "{err}");
    // Same architecture, other class count: a shape mismatch naming both shapes.
    let err = import_checkpoint(
        &file,
        ImportFormat::Pytorch,
        &spec(Arch::Mlp, 1, 8, 5),
        &device,
    )
    .expect_err("3 classes are not 5")
    .to_string();
    assert!(
        err.contains("linear.weight: expected shape [5, 512], found [3, 512]"),
        "{err}"
    );
    // Not a MadryLab checkpoint.
    let err = import_checkpoint(&file, ImportFormat::Madry, &s, &device)
        .expect_err("safetensors is not madry")
        .to_string();
    assert!(err.contains("--from pytorch"), "{err}");
    let missing = tmp("nothing.pt");
    let err = import_checkpoint(&missing, ImportFormat::Madry, &s, &device)
        .expect_err("missing file")
        .to_string();
    assert!(err.contains("not found"), "{err}");
}
