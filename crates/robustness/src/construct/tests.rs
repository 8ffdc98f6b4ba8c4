//! Construction tests on the embedded digits with a small trained model: the attack does what
//! the paper's construction says, and chunks make resuming and sharding exact.

use super::*;
use crate::data::test_util::TempDir;
use crate::data::{self, Split};
use crate::train::{self, Silent};
use std::path::PathBuf;

/// A standard MLP trained on the digits (about a second), with its split and checkpoint.
fn trained() -> (Classifier, Split, TempDir) {
    let split = data::load(DatasetKind::Digits, None, 0, &Default::default()).expect("digits");
    let config = train::TrainConfig {
        arch: Arch::Mlp,
        epochs: 8,
        ..crate::defaults::for_dataset(DatasetKind::Digits)
    };
    let dir = TempDir::new("construct-model");
    let out = dir.path().join("run");
    let device = Device::flex();
    train::train(&config, &split, &out, false, &device, &mut Silent).expect("training");
    let (model, _) =
        train::checkpoint::load(&out.join("latest"), &device.clone().autodiff()).expect("load");
    (model, split, dir)
}

fn small_config(kind: ConstructKind) -> ConstructConfig {
    let mut config = ConstructConfig::paper(kind);
    config.seed = 5;
    config.batch_size = 16;
    config.chunk_size = 40;
    if kind.relabels() {
        // 8x8 digits: eps 3 in L2 is ~0.375 per pixel, enough to reach nearly any class.
        config.attack.eps = 3.0;
        config.attack.step_size = Some(0.3);
        config.attack.steps = 30;
    } else {
        config.attack.steps = 30;
    }
    config
}

fn meta_for(config: ConstructConfig, train: &Dataset, shard: Option<Shard>) -> ConstructMeta {
    let source = Source::of(train, DatasetKind::Digits, None, 0, None);
    let model = ModelRef {
        path: "test-model".into(),
        sha256: "0".into(),
        arch: Arch::Mlp,
        epoch: 8,
        adversarially_trained: Some(false),
        restricted_from: None,
    };
    ConstructMeta::new(config, source, model, shard).expect("meta")
}

/// The first 150 training images (4 chunks of 40, the last one short).
fn subset(split: &Split) -> Dataset {
    split.train.subset(&(0..150).collect::<Vec<_>>())
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join(store::CHUNKS_DIR))
        .expect("chunks dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    let mut out: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|p| {
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read(p).expect("read"),
            )
        })
        .collect();
    out.push((
        "meta.json".into(),
        std::fs::read(dir.join(store::META_FILE)).expect("meta"),
    ));
    out
}

fn build(model: &Classifier, train: &Dataset, meta: ConstructMeta, out: &Path) -> ConstructMeta {
    construct(model, train, meta, out, &Device::flex(), |_, _| {}).expect("construct")
}

#[test]
fn det_moves_each_image_toward_the_next_class_inside_the_ball() {
    let (model, split, _keep) = trained();
    let train = subset(&split);
    let tmp = TempDir::new("construct-det");
    let config = small_config(ConstructKind::Det);
    let eps = config.attack.eps;
    let meta = build(&model, &train, meta_for(config, &train, None), tmp.path());
    let summary = meta.summary.clone().expect("finished");
    assert_eq!(summary.examples, 150);
    assert_eq!(summary.relabelled, 1.0, "D_det changes every label");
    assert!(
        summary.agreement > 0.9,
        "targeted attack success {:.3}",
        summary.agreement
    );
    assert!(summary.distance.max <= eps + 1e-4, "{:?}", summary.distance);
    assert!(summary.distance.median > 0.1, "the images moved");
    let (_, data) = store::load(tmp.path()).expect("load");
    assert_eq!(data.len(), 150);
    for i in 0..150 {
        assert_eq!(data.labels[i], (train.labels[i] + 1) % 10);
    }
    assert!(data.images.iter().all(|v| (0.0..=1.0).contains(v)));
    // The stored distance is the real one.
    let chunk = store::read_chunk(tmp.path(), 0, [1, 8, 8], 40, &meta.config_id).expect("chunk");
    let d0: f32 = chunk.images[..64]
        .iter()
        .zip(train.image(0))
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    assert!((d0 - chunk.distance[0]).abs() < 1e-4);
}

#[test]
fn rand_labels_follow_the_per_example_draw() {
    let (model, split, _keep) = trained();
    let train = subset(&split);
    let tmp = TempDir::new("construct-rand");
    let mut config = small_config(ConstructKind::Rand);
    config.attack.steps = 3;
    let seed = config.seed;
    build(&model, &train, meta_for(config, &train, None), tmp.path());
    let (_, data) = store::load(tmp.path()).expect("load");
    for i in 0..150 {
        assert_eq!(
            data.labels[i],
            relabel::target(ConstructKind::Rand, seed, i, train.labels[i], 10)
        );
    }
}

#[test]
fn copies_give_each_image_its_own_targets_and_the_first_copy_is_the_one_copy_set() {
    let (model, split, _keep) = trained();
    // 80 images: whole chunks (40) and batches (16), so copy 0 runs in the same batches.
    let train = split.train.subset(&(0..80).collect::<Vec<_>>());
    let mut config = small_config(ConstructKind::Rand);
    config.attack.steps = 5;
    let (eps, seed) = (config.attack.eps, config.seed);
    let one_dir = TempDir::new("construct-copies-1");
    let one = build(
        &model,
        &train,
        meta_for(config.clone(), &train, None),
        one_dir.path(),
    );
    assert!(
        !serde_json::to_string(&one.config)
            .expect("json")
            .contains("copies"),
        "one copy leaves the field out, so older sets keep their config id"
    );
    config.copies = 3;
    let three_dir = TempDir::new("construct-copies-3");
    let three = build(
        &model,
        &train,
        meta_for(config, &train, None),
        three_dir.path(),
    );
    assert_ne!(one.config_id, three.config_id);
    assert_eq!(three.examples, 240);
    assert_eq!(three.summary.as_ref().expect("finished").examples, 240);
    let (_, a) = store::load(one_dir.path()).expect("load");
    let (_, b) = store::load(three_dir.path()).expect("load");
    assert_eq!(b.len(), 240);
    assert_eq!(
        &b.images[..a.images.len()],
        &a.images[..],
        "copy 0 = one copy"
    );
    assert_eq!(&b.labels[..80], &a.labels[..]);
    let mut other_targets = 0;
    for j in 0..240 {
        let i = j % 80;
        assert_eq!(
            b.labels[j],
            relabel::target(ConstructKind::Rand, seed, j, train.labels[i], 10)
        );
        other_targets += usize::from(b.labels[j] != b.labels[i]);
        let d: f32 = b
            .image(j)
            .iter()
            .zip(train.image(i))
            .map(|(p, q)| (p - q) * (p - q))
            .sum::<f32>()
            .sqrt();
        assert!(d <= eps as f32 + 1e-4, "copy {j} is {d} from image {i}");
    }
    // Targets are independent draws over 10 classes: ~90% of the 160 later copies differ.
    assert!(other_targets > 100, "{other_targets} of 160 copies differ");
    let chunk =
        store::read_chunk(three_dir.path(), 5, [1, 8, 8], 40, &three.config_id).expect("chunk");
    assert_eq!(chunk.index, (200..240).collect::<Vec<_>>());
    assert_eq!(chunk.source_labels, train.labels[40..80].to_vec());
    // Further copies of an inversion start from another image than their own.
    for j in 80..240 {
        assert_ne!(robust::start_index(seed, j, 80), j % 80);
    }
    let mut zero = small_config(ConstructKind::Rand);
    zero.copies = 0;
    assert!(zero.validate().is_err());
}

#[test]
fn a_resumed_construction_writes_the_same_bytes() {
    let (model, split, _keep) = trained();
    let train = subset(&split);
    let config = small_config(ConstructKind::Det);
    let full = TempDir::new("construct-full");
    build(
        &model,
        &train,
        meta_for(config.clone(), &train, None),
        full.path(),
    );
    // Simulate a crash after two chunks: later chunks and the summary are missing.
    let part = TempDir::new("construct-part");
    let meta = meta_for(config, &train, None);
    std::fs::create_dir_all(part.path().join(store::CHUNKS_DIR)).expect("mkdir");
    for i in 0..2 {
        std::fs::copy(chunk_path_of(full.path(), i), chunk_path_of(part.path(), i)).expect("cp");
    }
    store::write_meta(part.path(), &meta).expect("meta");
    let mut seen = Vec::new();
    construct(
        &model,
        &train,
        meta,
        part.path(),
        &Device::flex(),
        |d, t| seen.push((d, t)),
    )
    .expect("resume");
    assert_eq!(seen.first(), Some(&(80, 150)), "resumes after the 2 chunks");
    assert_eq!(files(full.path()), files(part.path()));
}

fn chunk_path_of(dir: &Path, i: usize) -> PathBuf {
    store::chunk_path(dir, i)
}

#[test]
fn merged_shards_equal_the_unsharded_run_and_gaps_are_errors() {
    let (model, split, _keep) = trained();
    let train = subset(&split);
    let config = small_config(ConstructKind::Det);
    let full = TempDir::new("construct-unsharded");
    build(
        &model,
        &train,
        meta_for(config.clone(), &train, None),
        full.path(),
    );
    let shards: Vec<TempDir> = (0..3).map(|k| TempDir::new(&format!("shard{k}"))).collect();
    for (k, dir) in shards.iter().enumerate() {
        let shard = Shard { index: k, count: 3 };
        build(
            &model,
            &train,
            meta_for(config.clone(), &train, Some(shard)),
            dir.path(),
        );
    }
    let paths: Vec<PathBuf> = shards.iter().map(|d| d.path().to_path_buf()).collect();
    // A shard is not a data set by itself.
    let err = store::load(&paths[0]).expect_err("shard alone");
    assert!(err.to_string().contains("robustness merge"), "{err}");
    let merged = TempDir::new("construct-merged");
    store::merge(&paths, merged.path()).expect("merge");
    assert_eq!(files(full.path()), files(merged.path()));

    let gap = TempDir::new("construct-gap");
    let err = store::merge(&paths[..2], gap.path()).expect_err("missing shard");
    assert!(err.to_string().contains("in none of the shards"), "{err}");
    let twice = vec![
        paths[0].clone(),
        paths[1].clone(),
        paths[2].clone(),
        paths[1].clone(),
    ];
    let err = store::merge(&twice, gap.path()).expect_err("duplicate shard");
    assert!(err.to_string().contains("is also in"), "{err}");
}

#[test]
fn a_folder_of_another_construction_is_refused() {
    let (model, split, _keep) = trained();
    let train = split.train.subset(&(0..20).collect::<Vec<_>>());
    let tmp = TempDir::new("construct-other");
    let mut config = small_config(ConstructKind::Det);
    config.attack.steps = 1;
    build(
        &model,
        &train,
        meta_for(config.clone(), &train, None),
        tmp.path(),
    );
    config.seed += 1;
    let err = construct(
        &model,
        &train,
        meta_for(config, &train, None),
        tmp.path(),
        &Device::flex(),
        |_, _| {},
    )
    .expect_err("other config");
    assert!(err.to_string().contains("another construction"), "{err}");
}

/// `meta` as the rule before the models' paths were left out of the id would have written it:
/// the id hashes the path, and every chunk carries that id.
fn with_legacy_id(dir: &Path, meta: &ConstructMeta) -> ConstructMeta {
    let text =
        serde_json::to_string(&(FORMAT, &meta.config, &meta.source, &meta.model)).expect("json");
    let legacy: String = Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(legacy, meta.config_id, "the old rule hashed the path");
    let shape = meta.source.image_shape();
    for i in 0..meta.num_chunks() {
        let len = meta.chunk_range(i).len();
        let chunk = store::read_chunk(dir, i, shape, len, &meta.config_id).expect("chunk");
        store::write_chunk(dir, i, &chunk, shape, &legacy).expect("rewrite");
    }
    let old = ConstructMeta {
        config_id: legacy,
        ..meta.clone()
    };
    store::write_meta(dir, &old).expect("meta");
    old
}

#[test]
fn a_moved_model_or_folder_still_resumes_also_with_an_old_id() {
    let (model, split, _keep) = trained();
    let train = split.train.subset(&(0..100).collect::<Vec<_>>());
    let tmp = TempDir::new("construct-moved");
    let mut config = small_config(ConstructKind::Det);
    config.attack.steps = 2;
    let first = build(
        &model,
        &train,
        meta_for(config.clone(), &train, None),
        tmp.path(),
    );
    let before = files(tmp.path());
    // The same checkpoint (same checksum) at another path: the same construction, so the
    // chunks are reused (progress starts complete) and stay byte for byte; only the path in
    // meta.json changes.
    let moved = |path: &str| {
        let mut meta = meta_for(config.clone(), &train, None);
        meta.model.path = path.into();
        ConstructMeta::new(meta.config.clone(), meta.source.clone(), meta.model, None)
            .expect("meta")
    };
    let elsewhere = moved("elsewhere/model");
    assert_eq!(
        elsewhere.config_id, first.config_id,
        "the path is not identity"
    );
    let mut seen = Vec::new();
    let again = construct(
        &model,
        &train,
        elsewhere,
        tmp.path(),
        &Device::flex(),
        |d, t| seen.push((d, t)),
    )
    .expect("resume after a move");
    assert_eq!(seen.first(), Some(&(100, 100)), "every chunk reused");
    assert_eq!(again.model.path, "elsewhere/model");
    let after = files(tmp.path());
    assert_eq!(before[..before.len() - 1], after[..after.len() - 1]);
    // A folder written by the old rule (id over the path, in meta.json and every chunk):
    // built from a checkpoint that has moved since, it resumes too, keeping its id so that its
    // chunks (and runs trained on it) stay valid.
    let old = with_legacy_id(tmp.path(), &again);
    let mut seen = Vec::new();
    let resumed = construct(
        &model,
        &train,
        moved("yet/another/place"),
        tmp.path(),
        &Device::flex(),
        |d, t| seen.push((d, t)),
    )
    .expect("resume an old folder");
    assert_eq!(seen.first(), Some(&(100, 100)), "every old chunk reused");
    assert_eq!(resumed.config_id, old.config_id);
    assert_eq!(resumed.summary, first.summary);
    // Other weights (another checksum) are still another construction, wherever they lie.
    let mut other = meta_for(config, &train, None);
    other.model.sha256 = "1".into();
    let other = ConstructMeta::new(other.config, other.source, other.model, None).expect("meta");
    let err = construct(
        &model,
        &train,
        other,
        tmp.path(),
        &Device::flex(),
        |_, _| {},
    )
    .expect_err("other weights");
    assert!(err.to_string().contains("another construction"), "{err}");
}

#[test]
fn inversion_matches_the_representation_and_keeps_the_label() {
    let (model, split, _keep) = trained();
    let train = split.train.subset(&(0..48).collect::<Vec<_>>());
    let config = small_config(ConstructKind::Robust);
    let seed = config.seed;
    let tmp = TempDir::new("construct-robust");
    let meta = build(&model, &train, meta_for(config, &train, None), tmp.path());
    let summary = meta.summary.expect("finished");
    assert_eq!(summary.relabelled, 0.0);
    // Distance of the start images' representations to the targets, before any step.
    let dev = Device::flex();
    let model = model.valid();
    let x = tensors::images(train.images.clone(), [48, 1, 8, 8], &dev);
    let starts: Vec<f32> = (0..48)
        .flat_map(|i| train.image(robust::start_index(seed, i, 48)).to_vec())
        .collect();
    let x_start = tensors::images(starts, [48, 1, 8, 8], &dev);
    let loss = robust::representation_loss(model.forward_features(x), false);
    let y = tensors::labels(&train.labels, &dev);
    let before = Quantiles::of(&tensors::to_vec(loss.loss_of(&model, x_start, &y)));
    assert!(
        summary.loss.median < 0.5 * before.median,
        "representation distance {} -> {}",
        before.median,
        summary.loss.median
    );
    let (_, data) = store::load(tmp.path()).expect("load");
    assert_eq!(data.labels, train.labels);
    assert!(data.images.iter().all(|v| (0.0..=1.0).contains(v)));
}

/// Calls a closure loss through the attack-loss trait.
trait LossOf {
    fn loss_of(&self, model: &Classifier, x: Tensor<4>, y: &Tensor<1, Int>) -> Tensor<1>;
}

impl<L: crate::attack::loss::AttackLoss> LossOf for L {
    fn loss_of(&self, model: &Classifier, x: Tensor<4>, y: &Tensor<1, Int>) -> Tensor<1> {
        self.loss(model, x, y)
    }
}

#[test]
fn shard_specs_parse_and_cover_the_chunks_once() {
    assert_eq!(
        "2/4".parse::<Shard>().expect("valid"),
        Shard { index: 2, count: 4 }
    );
    for bad in ["4/4", "1", "a/2", "0/0"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    let train = data::load(DatasetKind::Digits, None, 0, &Default::default())
        .expect("digits")
        .train;
    let config = small_config(ConstructKind::Det);
    for count in 1..9 {
        let mut covered = Vec::new();
        for index in 0..count {
            let meta = meta_for(config.clone(), &train, Some(Shard { index, count }));
            covered.extend(meta.assigned_chunks());
        }
        let all: Vec<usize> = meta_for(config.clone(), &train, None)
            .assigned_chunks()
            .collect();
        assert_eq!(covered, all, "{count} shards");
    }
}
