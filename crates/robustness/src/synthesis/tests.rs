//! Synthesis tests on the embedded digits with a small trained model: each optimisation moves
//! its objective the right way, and bad input gives errors, not panics.

use super::*;
use crate::data::test_util::TempDir;
use crate::data::{DatasetKind, Split};
use crate::models::Arch;
use crate::train::{self, Silent};

/// A standard MLP trained on the digits (about a second), with its split.
fn trained() -> (Classifier, Split) {
    let split = data::load(DatasetKind::Digits, None, 0, &Default::default()).expect("digits");
    let config = train::TrainConfig {
        arch: Arch::Mlp,
        epochs: 8,
        ..crate::defaults::for_dataset(DatasetKind::Digits)
    };
    let dir = TempDir::new("synthesis-model");
    let out = dir.path().join("run");
    let device = Device::flex();
    train::train(&config, &split, &out, false, &device, &mut Silent).expect("training");
    let (model, _) =
        train::checkpoint::load(&out.join("latest"), &device.clone().autodiff()).expect("load");
    (model, split)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

#[test]
fn synthesis_raises_the_target_class_probability_above_the_seed() {
    let (model, split) = trained();
    let device = Device::flex();
    let mut config = crate::defaults::synthesis(DatasetKind::Digits, [1, 8, 8]);
    config.attack.steps = 20;
    config.batch_size = 5;
    let class = 3;
    let out = synthesize(&model, &split.train, class, 12, &config, &device).expect("synthesis");
    assert_eq!(out.len(), 12);
    assert_eq!(out.images.len(), 12 * 64);
    assert_eq!(out.start.len(), 12 * 64);
    assert!(out.images.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(out.target.iter().all(|&t| t == class));
    // Keep-best includes the seed, so no image ends below its seed; on average the class's
    // probability must rise well above the seed's.
    for (s, e) in out.start_score.iter().zip(&out.score) {
        assert!(e + 1e-5 >= *s, "score fell from {s} to {e}");
    }
    assert!(
        mean(&out.score) > mean(&out.start_score) + 0.2 || mean(&out.start_score) > 0.9,
        "seed {} -> {}",
        mean(&out.start_score),
        mean(&out.score)
    );
    let hits = out.predicted.iter().filter(|&&p| p == class).count();
    assert!(
        hits >= 10,
        "only {hits}/12 generated images are classified {class}"
    );
    // The same seed gives the same images.
    let again = synthesize(&model, &split.train, class, 12, &config, &device).expect("again");
    assert_eq!(again.start, out.start);
    assert_eq!(again.images, out.images);
}

#[test]
fn feature_visualisation_raises_the_chosen_unit() {
    let (model, split) = trained();
    let device = Device::flex();
    let n = 6;
    // The unit whose smallest activation over the start images is largest (a unit that is zero
    // on an image has no gradient there to follow).
    let plain = device.clone().without_autodiff();
    let x = tensors::images(split.test.images[..n * 64].to_vec(), [n, 1, 8, 8], &plain);
    let features = tensors::to_vec(model.valid().forward_features(x));
    let width = features.len() / n;
    let smallest = |u: usize| {
        (0..n)
            .map(|i| features[i * width + u])
            .fold(f32::INFINITY, f32::min)
    };
    let k = (0..width)
        .max_by(|&a, &b| smallest(a).total_cmp(&smallest(b)))
        .expect("features");
    let mut config = crate::defaults::feature_visualization(DatasetKind::Digits);
    config.attack.steps = 30;
    config.attack.step_size = Some(0.3);
    config.batch_size = 4;
    let starts: Vec<usize> = (0..n).collect();
    let out =
        visualize_feature(&model, &split.test, k, &starts, &config, &device).expect("visualise");
    assert_eq!(out.len(), n);
    assert_eq!(out.start, split.test.images[..n * 64].to_vec());
    let mut raised = 0;
    for (s, e) in out.start_score.iter().zip(&out.score) {
        assert!(e >= s, "unit {k}: {s} -> {e}");
        if *s > 0.0 {
            assert!(*e > s + 0.5 && *e > 1.5 * s, "unit {k}: {s} -> {e}");
            raised += 1;
        }
    }
    assert!(
        raised >= n / 2,
        "unit {k} is active on only {raised} of {n} start images"
    );
    // From noise too.
    config.start = Start::Noise;
    let noise =
        visualize_feature(&model, &split.test, k, &[0, 7], &config, &device).expect("noise");
    assert!(noise.start.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(mean(&noise.score) >= mean(&noise.start_score));
}

#[test]
fn inversion_shrinks_the_representation_distance() {
    let (model, split) = trained();
    let device = Device::flex();
    let mut config = crate::defaults::inversion(DatasetKind::Digits);
    config.attack.steps = 100;
    config.batch_size = 3;
    let indices = [0, 5, 9, 11];
    let out = invert(&model, &split.test, &indices, &config, &device).expect("invert");
    assert_eq!(out.target, indices.to_vec());
    for (s, e) in out.start_score.iter().zip(&out.score) {
        assert!(*e < 0.5 * s, "distance {s} -> {e}");
    }
    // The noise starts are the construction's (same seed, same example index).
    assert_eq!(
        out.start[64..128],
        robust::noise_start(config.seed, 5, 64)[..]
    );
    // Inverted images mostly keep the class of the image they match.
    let kept = indices
        .iter()
        .zip(&out.predicted)
        .filter(|&(&i, &p)| split.test.labels[i] == p)
        .count();
    assert!(kept >= 3, "{kept}/4 inversions keep their class");
}

#[test]
fn bad_classes_features_and_indices_are_errors_not_panics() {
    let (model, split) = trained();
    let device = Device::flex();
    let names = &split.train.class_names;
    assert_eq!(parse_class_spec("all", names).expect("all").len(), 10);
    assert_eq!(parse_class_spec("3,7", names).expect("list"), vec![3, 7]);
    let err = parse_class_spec("giraffe", names).expect_err("unknown");
    assert!(err.to_string().contains("giraffe"), "{err}");
    assert!(parse_class_spec("10", names).is_err());

    let config = crate::defaults::feature_visualization(DatasetKind::Digits);
    let err = visualize_feature(&model, &split.test, 512, &[0, 1], &config, &device)
        .expect_err("MLP features are 512 wide");
    let text = err.to_string();
    assert!(
        text.contains("--feature 512") && text.contains("512 features"),
        "{text}"
    );
    let err = visualize_feature(&model, &split.test, 0, &[100_000], &config, &device)
        .expect_err("no such start image");
    assert!(err.to_string().contains("100000"), "{err}");

    let err = invert(
        &model,
        &split.test,
        &[1_000_000],
        &crate::defaults::inversion(DatasetKind::Digits),
        &device,
    )
    .expect_err("no such image");
    assert!(err.to_string().contains("1000000"), "{err}");

    let mut bad = crate::defaults::synthesis(DatasetKind::Digits, [1, 8, 8]);
    bad.grain = 3;
    let err =
        synthesize(&model, &split.train, 0, 1, &bad, &device).expect_err("3 does not divide 8");
    assert!(err.to_string().contains("--grain 3"), "{err}");
}

#[test]
fn generated_images_round_trip_through_safetensors() {
    let generated = Generated {
        shape: [1, 2, 2],
        start: vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        images: vec![1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
        target: vec![3, 4],
        start_score: vec![0.1, 0.2],
        score: vec![0.8, 0.9],
        predicted: vec![3, 1],
        confidence: vec![0.8, 0.5],
    };
    let dir = TempDir::new("synthesis-st");
    let path = dir.path().join("images.safetensors");
    generated.write_safetensors(&path).expect("write");
    let bytes = std::fs::read(&path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let images = st.tensor("images").expect("images");
    assert_eq!(images.shape(), &[2, 1, 2, 2]);
    let values: Vec<f32> = images
        .data()
        .chunks_exact(4)
        .map(|q| f32::from_le_bytes([q[0], q[1], q[2], q[3]]))
        .collect();
    assert_eq!(values, generated.images);
    assert_eq!(st.tensor("target").expect("target").shape(), &[2]);
    assert_eq!(st.tensor("confidence").expect("conf").dtype(), Dtype::F32);
}
