//! `robustness reproduce`: the paper's experiments end to end. Train (or reuse) a standard model
//! (and, for D_R, an adversarially trained one), build D_det / D_rand / D_R / D_NR, train fresh
//! models on them, evaluate on the ORIGINAL test set (clean, and robust for the D_R / D_NR
//! experiment), and write `report.md`, `results.json` and PNG figures. Every stage
//! writes into its own folder under `--out` and is skipped (or resumed) when it already exists
//! for the same configuration, so a rerun after an interruption continues.

use crate::cli::{ReproduceArgs, Scale};
use crate::commands::print_json;
use crate::progress::{Examples, Progress};
use anyhow::{Context, Result, bail};
use robustness::attack::threat::Constraint;
use robustness::attack::{self, AttackConfig, AttackKind};
use robustness::construct::{
    self, ConstructConfig, ConstructKind, ConstructMeta, ConstructedRef, ModelRef, Source, store,
};
use robustness::data::{self, Dataset, DatasetKind, Limit, Split, SyntheticConfig};
use robustness::models::Arch;
use robustness::report::{self, Tile};
use robustness::train::schedule::Schedule;
use robustness::train::{self, AdvMethod, Adversarial, TrainConfig, checkpoint};
use robustness::{defaults, eval};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One experiment at one scale: what to train, build and compare.
struct Plan {
    dataset: DatasetKind,
    classes: Option<&'static str>,
    standard: TrainConfig,
    /// The adversarially trained model D_R is built from.
    robust: TrainConfig,
    /// Radii of the robust-accuracy evaluation (D_R / D_NR experiment).
    eval_eps: Vec<f64>,
    /// Its threat model.
    eval_constraint: Constraint,
    /// The synthetic feature model: report each set's robust / non-robust feature signal.
    toy: bool,
    /// Test images attacked for robust accuracy.
    eval_limit: usize,
    /// The paper's robust accuracy (at the first radius) per train set name.
    paper_robust: Vec<(&'static str, f64)>,
    construct: Vec<ConstructConfig>,
    retrain: Vec<TrainConfig>,
    /// The paper's (or the talk's) test accuracy per train set name.
    paper: Vec<(&'static str, f64)>,
    note: &'static str,
}

const EXPERIMENTS: &str = "toy, digits, catdog (or cats-dogs), cifar10";

/// D_R / D_NR at quick scale on CIFAR images: 150 normalised steps of 0.5 (ours). Two CIFAR
/// images lie ~20 apart in L2, so the paper's steps of 0.1 need its 1000 iterations to get
/// there; with 128 cat images and a standard cats-vs-dogs CNN, 200 steps of 0.5 ended at a
/// smaller mean representation distance (0.71) than 1000 steps of 0.1 (1.04), in a fifth of
/// the time.
const CIFAR_QUICK_INVERSION: (usize, f64) = (150, 0.5);

/// Weight decay of every model of `toy` (ours; the data set's default is 5e-4). The MLP keeps
/// its random first-layer weights on inputs that carry no label information unless weight decay
/// removes them: at 5e-4 the robust model's hidden layer still encodes the non-robust features,
/// so D_R kept most of their signal (0.50 of D's 0.67), and a model trained on D_R gave weight
/// to D_R's label-independent coordinates, which the attacker then used (4.45% robust). At 0.05
/// D_R holds the robust feature's signal only and the model trained on it is robust (measured,
/// REPRODUCTION.md).
const TOY_WEIGHT_DECAY: f64 = 0.05;

/// D_det / D_rand radius of `catdog` and `cifar10` at quick scale (ours; the paper's is L2 0.5
/// on a 95% ResNet-50).
const CIFAR_QUICK_RELABEL_EPS: f64 = 1.0;

/// `cifar10` at quick scale trains (and builds its sets from) the first 10,000 of the 50,000
/// training images (about 1,000 per class), so that the D_R / D_NR constructions fit in an
/// hour on 2 cores.
const CIFAR_QUICK_TRAIN_IMAGES: usize = 10_000;

/// Adversarial training with L2 PGD (or FGSM from a random start) at `eps`.
fn adversarial(base: &TrainConfig, eps: f64, fast: bool) -> TrainConfig {
    let attack = defaults::adversarial(base.dataset, Constraint::L2, Some(eps));
    TrainConfig {
        adversarial: Some(Adversarial {
            attack,
            method: if fast {
                AdvMethod::FgsmRs
            } else {
                AdvMethod::Pgd
            },
            eval: false,
            eval_limit: 0,
        }),
        ..base.clone()
    }
}

fn plan(experiment: &str, scale: Scale, sets: &[ConstructKind]) -> Result<Plan> {
    let quick = matches!(scale, Scale::Quick);
    let retrain_for = |source: DatasetKind, kind, arch, epochs: usize| TrainConfig {
        arch,
        epochs,
        schedule: Schedule::Step {
            step: (epochs * 2 / 3).max(1),
            gamma: 0.1,
        },
        ..defaults::for_constructed(source, kind)
    };
    let construct_for = |source, kind, steps: Option<usize>| {
        let mut c = defaults::construction(source, kind);
        if let Some(s) = steps {
            c.attack.steps = s;
        }
        c
    };
    // The constructed sets at quick scale: `relabel` = (attack steps, radius) for D_det /
    // D_rand (a radius given: steps of radius / 5, the paper's ratio; none: the data set's
    // default) and `inversion` = (steps, step size) for D_R / D_NR (full scale: the paper's
    // L2 0.5 with 100 steps of 0.1, and 1000 steps of 0.1).
    let constructs = |source, relabel: (usize, Option<f64>), inversion: (usize, f64)| {
        sets.iter()
            .map(|&k| {
                let steps = if k.relabels() { relabel.0 } else { inversion.0 };
                let mut c = construct_for(source, k, quick.then_some(steps));
                match (quick, k.relabels(), relabel.1) {
                    (true, false, _) => c.attack.step_size = Some(inversion.1),
                    (true, true, Some(eps)) => {
                        c.attack.eps = eps;
                        c.attack.step_size = Some(eps / 5.0);
                    }
                    _ => {}
                }
                c
            })
            .collect::<Vec<ConstructConfig>>()
    };
    let retrains = |source, arch, epochs| -> Vec<TrainConfig> {
        sets.iter()
            .map(|&k| retrain_for(source, k, arch, epochs))
            .collect()
    };
    Ok(match experiment {
        "toy" => {
            let kind = DatasetKind::Synthetic;
            let epochs = if quick { 10 } else { 20 };
            let standard = TrainConfig {
                epochs,
                weight_decay: TOY_WEIGHT_DECAY,
                ..defaults::for_dataset(kind)
            };
            // Just above eta (0.67 here): enough to flip the sign of every non-robust feature's
            // mean, far from 1, where the robust feature x_1 = +-1 itself would flip.
            // (Tsipras et al.'s 2 eta = 1.34 exceeds 1 with the default d = 20; at 0.9
            // adversarial training of the MLP collapsed to chance, at 0.7 it reaches p = 95%.)
            let eta = SyntheticConfig::default().eta;
            let eps = 1.05 * eta;
            let robust = TrainConfig {
                adversarial: Some(Adversarial {
                    attack: defaults::adversarial(kind, Constraint::Linf, Some(eps)),
                    method: AdvMethod::Pgd,
                    eval: false,
                    eval_limit: 0,
                }),
                ..standard.clone()
            };
            Plan {
                dataset: kind,
                classes: None,
                standard,
                robust,
                eval_eps: vec![eps],
                eval_constraint: Constraint::Linf,
                toy: true,
                eval_limit: 2000,
                paper_robust: vec![],
                construct: sets
                    .iter()
                    .map(|&k| {
                        let mut c = defaults::construction(kind, k);
                        if k.relabels() {
                            c.attack.constraint = Constraint::Linf;
                            c.attack.eps = eps;
                            c.attack.step_size = Some(eps / 8.0);
                            c.attack.steps = 20;
                        } else {
                            c.attack.steps = if quick { 100 } else { 300 };
                        }
                        c
                    })
                    .collect(),
                retrain: retrains(kind, Arch::Mlp, epochs)
                    .into_iter()
                    .map(|c| TrainConfig {
                        weight_decay: TOY_WEIGHT_DECAY,
                        ..c
                    })
                    .collect(),
                paper: vec![],
                note: "The feature model of Tsipras et al. (2019): one robust feature x_1 = y with probability 0.95 and 20 non-robust features N(0.67 y, 1); MLP with weight decay 0.05 (ours, so that no model keeps weights on inputs without label information); D_det / D_rand and the robust model at L-inf eps 1.05 eta = 0.70, which flips the sign of every non-robust feature's mean but not x_1. `signal` columns: E[y x_1] and E[y mean(x_2..x_21)] of each training set, y in {-1, +1} its labels.",
            }
        }
        "digits" => {
            let kind = DatasetKind::Digits;
            let epochs = if quick { 10 } else { 30 };
            let standard = TrainConfig {
                epochs,
                ..defaults::for_dataset(kind)
            };
            Plan {
                dataset: kind,
                classes: None,
                // Ours: L2 eps 1 on the 8x8 digits (PGD, 7 steps of eps/4 from a random start).
                robust: adversarial(&standard, 1.0, false),
                eval_eps: vec![1.0],
                eval_constraint: Constraint::L2,
                toy: false,
                eval_limit: 360,
                paper_robust: vec![],
                standard,
                construct: constructs(kind, (30, None), (100, 0.1)),
                retrain: retrains(kind, Arch::Cnn, epochs),
                paper: vec![],
                note: "Embedded UCI digits (8x8), small CNN; D_det/D_rand with L2 eps 3 (eps 0.5 barely moves 8x8 images).",
            }
        }
        "catdog" => {
            let kind = DatasetKind::Cifar10;
            let epochs = if quick { 12 } else { 40 };
            // Ours (measured 85.85% at 40 epochs): small CNN, lr 0.05, cosine, 1 warm-up epoch.
            let standard = TrainConfig {
                arch: Arch::Cnn,
                epochs,
                lr: 0.05,
                schedule: Schedule::Cosine,
                warmup_epochs: 1,
                ..defaults::for_dataset(kind)
            };
            Plan {
                dataset: kind,
                classes: Some("cat,dog"),
                // The paper's radius (L2 0.5) with FGSM from a random start, which makes
                // adversarial training affordable on 2 cores (PGD-7 costs 4x more).
                robust: adversarial(&standard, 0.5, true),
                eval_eps: vec![0.25, 0.5],
                eval_constraint: Constraint::L2,
                toy: false,
                eval_limit: 1000,
                paper_robust: vec![],
                standard,
                // Quick: L2 1.0 as for cifar10 (measured on this pair: D_det 56.85% at 0.5,
                // 61.40% at 1.0, 55.80% at 2.0; REPRODUCTION.md).
                construct: constructs(
                    kind,
                    (20, Some(CIFAR_QUICK_RELABEL_EPS)),
                    CIFAR_QUICK_INVERSION,
                ),
                retrain: {
                    let mut r = retrains(kind, Arch::Cnn, epochs);
                    if quick {
                        // Ours: crop + flip for the D_det model too (Table 3 has none): 64.10%
                        // against 61.40% without (REPRODUCTION.md).
                        for (k, c) in sets.iter().zip(r.iter_mut()) {
                            c.augment |= *k == ConstructKind::Det;
                        }
                    }
                    r
                },
                // The talk: 78% on cats vs dogs (with two classes D_det flips every label).
                paper: vec![("D_det", 0.78)],
                note: if quick {
                    "CIFAR-10 cats vs dogs, small CNN, 12 epochs (the talk's experiment; its model is not stated); D_det / D_rand at L2 eps 1.0 with 20 steps of 0.2 (the paper's radius: 0.5); the D_det model trains with crop + flip (the paper's Table 3: none)."
                } else {
                    "CIFAR-10 cats vs dogs, small CNN, 40 epochs (the talk's experiment; its model is not stated); the paper's attack: L2 eps 0.5, 100 steps of 0.1."
                },
            }
        }
        "cifar10" => {
            let kind = DatasetKind::Cifar10;
            let (arch, epochs) = if quick {
                (Arch::Cnn, 15)
            } else {
                (Arch::Resnet18, 150)
            };
            let mut standard = TrainConfig {
                arch,
                epochs,
                ..defaults::for_dataset(kind)
            };
            if quick {
                standard.schedule = Schedule::Cosine;
                // Recorded in config.json (what `train --limit 10000 --limit-first` does).
                standard.train_limit = Some(Limit {
                    images: CIFAR_QUICK_TRAIN_IMAGES,
                    first: true,
                });
            }
            Plan {
                dataset: kind,
                classes: None,
                // [P] C.3: L2 eps 0.5, PGD 7 steps of eps/5 (FGSM-RS at quick scale).
                robust: adversarial(&standard, 0.5, quick),
                eval_eps: vec![0.25, 0.5],
                eval_constraint: Constraint::L2,
                toy: false,
                eval_limit: if quick { 1000 } else { 10000 },
                // [P] Fig. 2b / Table 7 (eps 0.25): std on D 4.49, adv on D 82.48, std on D_R
                // 48.27, std on D_NR 0.82.
                paper_robust: vec![
                    ("D", 0.0449),
                    ("D (adversarial training)", 0.8248),
                    ("D_R", 0.4827),
                    ("D_NR", 0.0082),
                ],
                standard,
                // Quick: L2 1.0 (20 steps of 0.2). At the paper's 0.5 the 10,000-image source
                // (69.7%) is pushed to its target on only 36% of the images and the model
                // trained on D_det falls below chance (7.51%, it learns the label shift); at
                // 1.0 the attack reaches 78% (measured, REPRODUCTION.md).
                construct: constructs(
                    kind,
                    (20, Some(CIFAR_QUICK_RELABEL_EPS)),
                    CIFAR_QUICK_INVERSION,
                ),
                retrain: retrains(kind, arch, epochs),
                // [P] Table 1 (ResNet-50): D 95.3%, D_rand 63.3%, D_det 43.7%; Fig. 2b / Table 7:
                // adv on D 90.83%, std on D_R 84.10%, std on D_NR 87.68%.
                paper: vec![
                    ("D", 0.953),
                    ("D_rand", 0.633),
                    ("D_det", 0.437),
                    ("D (adversarial training)", 0.9083),
                    ("D_R", 0.8410),
                    ("D_NR", 0.8768),
                ],
                note: if quick {
                    "CIFAR-10, all classes, quick scale: small CNN, 15 epochs, the first 10,000 training images; D_det / D_rand at L2 eps 1.0 with 20 attack steps of 0.2 (the paper: eps 0.5, 100 steps of 0.1), D_R / D_NR with 150 inversion steps of 0.5 (the paper uses ResNet-50 on all 50,000)."
                } else {
                    "CIFAR-10, all classes (the paper's Table 1 uses ResNet-50; full scale here uses ResNet-18 and needs a GPU)."
                },
            }
        }
        other => bail!("unknown experiment '{other}': expected one of {EXPERIMENTS}"),
    })
}

/// One line of the results table.
#[derive(Serialize)]
struct Row {
    experiment: String,
    train_set: String,
    arch: Arch,
    test_accuracy: f64,
    paper: Option<f64>,
    /// D_det: accuracy on the test set relabelled (y + 1) mod C ([P] Table 10).
    shifted_test_accuracy: Option<f64>,
    /// Constructed sets: the targeted attack's success rate (D_det, D_rand) or how often the
    /// model predicts the label on the re-synthesised image (D_R, D_NR).
    attack_success: Option<f64>,
    /// Robust accuracy under L2 PGD-20 per radius (D_R / D_NR experiment), on `robust_examples`
    /// test images.
    robust_accuracy: Vec<(f64, f64)>,
    /// The paper's robust accuracy at the first radius.
    paper_robust: Option<f64>,
    robust_examples: usize,
    /// Synthetic model: (E[y x_1], E[y mean of the non-robust features]) of the training set.
    feature_signal: Option<(f64, f64)>,
    train_examples: usize,
    epochs: usize,
    /// Wall seconds spent on this row's stages in this invocation (0 when reused).
    seconds: f64,
}

/// The experiment's canonical name (`cats-dogs` is `catdog`).
fn canonical(experiment: &str) -> String {
    match experiment.to_ascii_lowercase().as_str() {
        "cats-dogs" | "catsdogs" | "cats_dogs" | "cat-dog" => "catdog".to_string(),
        other => other.to_string(),
    }
}

/// The sets built when `--sets` is not given.
fn default_sets(experiment: &str) -> &'static str {
    match experiment {
        // Adversarial training of the small CNN collapses on cats vs dogs (REPRODUCTION.md).
        "catdog" => "det,rand",
        _ => "det,rand,robust,nonrobust",
    }
}

pub fn run(args: ReproduceArgs, device: &robustness::Device) -> Result<()> {
    let experiment = canonical(&args.experiment);
    let sets: Vec<ConstructKind> = args
        .sets
        .as_deref()
        .unwrap_or(default_sets(&experiment))
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let robust_experiment = sets.iter().any(|k| !k.relabels());
    let plan = plan(&experiment, args.scale, &sets)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/reproduce-{experiment}-{}",
            args.scale.as_str()
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let split = load(&plan, args.data.as_deref(), args.seed)?;
    let classes = plan
        .classes
        .map(|c| c.split(',').map(str::to_string).collect::<Vec<_>>());
    let paper = |name: &str| plan.paper.iter().find(|(n, _)| *n == name).map(|p| p.1);
    let paper_robust = |name: &str| {
        plan.paper_robust
            .iter()
            .find(|(n, _)| *n == name)
            .map(|p| p.1)
    };
    // Robust accuracy of a checkpoint (only in the D_R / D_NR experiment).
    let eval_set = split.test.spread(plan.eval_limit);
    let robust_of = |ckpt: &Path| -> Result<Vec<(f64, f64)>> {
        if !robust_experiment {
            return Ok(Vec::new());
        }
        let (model, _) = checkpoint::load(ckpt, device)?;
        plan.eval_eps
            .iter()
            .map(|&eps| {
                let config = AttackConfig {
                    constraint: plan.eval_constraint,
                    eps,
                    steps: 20,
                    ..AttackConfig::default()
                };
                let mut progress = Examples::new(&format!("PGD-20 eps {eps}"));
                let r = attack::robust_eval(
                    &model,
                    &eval_set,
                    AttackKind::Pgd,
                    &config,
                    250,
                    args.seed,
                    device,
                    |d, t| progress.update(d, t),
                )?;
                Ok((eps, r.robust_accuracy))
            })
            .collect()
    };
    let mut rows = Vec::new();

    // Stage 1: the standard model (trained here, or reused with --source).
    let stage = Instant::now();
    let (source_ckpt, standard_acc, standard_arch, standard_epochs) = match &args.source {
        Some(ckpt) => {
            let (model, meta) = checkpoint::load_for_data(ckpt, &split.test, device)?;
            let acc = eval::evaluate(&model, &split.test, 256, device).accuracy;
            (ckpt.clone(), acc, meta.spec.arch, meta.epoch)
        }
        None => {
            let mut config = plan.standard.clone();
            config.classes = classes.clone();
            config.seed = args.seed;
            let dir = out.join("standard");
            eprintln!("[1] standard {} on {}", config.arch, plan.dataset);
            let mut progress = Progress::new();
            let s = train::train(&config, &split, &dir, true, device, &mut progress)
                .with_context(|| format!("training the standard model in {}", dir.display()))?;
            (dir.join("latest"), s.test_accuracy, config.arch, s.epochs)
        }
    };
    rows.push(Row {
        experiment: experiment.clone(),
        train_set: "D".into(),
        arch: standard_arch,
        test_accuracy: standard_acc,
        paper: paper("D"),
        shifted_test_accuracy: None,
        attack_success: None,
        robust_accuracy: robust_of(&source_ckpt)?,
        paper_robust: paper_robust("D"),
        robust_examples: eval_set.len(),
        feature_signal: plan.toy.then(|| feature_signal(&split.train)),
        train_examples: split.train.len(),
        epochs: standard_epochs,
        seconds: stage.elapsed().as_secs_f64(),
    });

    // Stage 1b: the adversarially trained model D_R is built from.
    let robust_ckpt = if !sets.contains(&ConstructKind::Robust) {
        None
    } else {
        let stage = Instant::now();
        let (ckpt, acc, arch, epochs) = match &args.robust_source {
            Some(ckpt) => {
                let (model, meta) = checkpoint::load_for_data(ckpt, &split.test, device)?;
                let acc = eval::evaluate(&model, &split.test, 256, device).accuracy;
                (ckpt.clone(), acc, meta.spec.arch, meta.epoch)
            }
            None => {
                let mut config = plan.robust.clone();
                config.classes = classes.clone();
                config.seed = args.seed;
                let dir = out.join("robust");
                eprintln!(
                    "[1b] adversarially trained {} on {}",
                    config.arch, plan.dataset
                );
                let mut progress = Progress::new();
                let s = train::train(&config, &split, &dir, true, device, &mut progress)
                    .with_context(|| format!("training the robust model in {}", dir.display()))?;
                (dir.join("latest"), s.test_accuracy, config.arch, s.epochs)
            }
        };
        // A collapsed adversarial training (a constant prediction) gives a representation
        // that carries nothing to invert: stop before spending hours on D_R.
        let chance = 1.0 / split.test.num_classes().max(1) as f64;
        if acc < chance + 0.02 {
            bail!(
                "the adversarially trained model {} is at chance on the test set ({:.2}%, chance {:.2}%): adversarial training collapsed, so D_R built from it would carry no features; pass a working robust model with --robust-source",
                ckpt.display(),
                100.0 * acc,
                100.0 * chance
            );
        }
        let name = "D (adversarial training)";
        rows.push(Row {
            experiment: experiment.clone(),
            train_set: name.into(),
            arch,
            test_accuracy: acc,
            paper: paper(name),
            shifted_test_accuracy: None,
            attack_success: None,
            robust_accuracy: robust_of(&ckpt)?,
            paper_robust: paper_robust(name),
            robust_examples: eval_set.len(),
            feature_signal: None,
            train_examples: split.train.len(),
            epochs,
            seconds: stage.elapsed().as_secs_f64(),
        });
        Some(ckpt)
    };

    let mut built: Vec<(ConstructKind, Dataset)> = Vec::new();
    for (config, retrain) in plan.construct.iter().zip(&plan.retrain) {
        let kind = config.kind;
        let name = kind.paper_name();
        let stage = Instant::now();
        // Stage 2: the constructed set.
        let set_dir = out.join(format!("d_{}", kind.as_str()));
        let from = match (&robust_ckpt, kind) {
            (Some(r), ConstructKind::Robust) => r,
            _ => &source_ckpt,
        };
        eprintln!("[2] {name} from {}", from.display());
        let meta = build(
            config,
            from,
            &split.train,
            plan.dataset,
            classes.clone(),
            &set_dir,
            device,
        )?;
        let (_, set) = store::load(&set_dir)?;
        // Stage 3: a fresh model on it, tested on the original test set.
        let mut train_config = retrain.clone();
        train_config.classes = classes.clone();
        train_config.seed = args.seed;
        train_config.constructed = Some(ConstructedRef {
            path: set_dir.display().to_string(),
            kind,
            config_id: meta.config_id.clone(),
        });
        let run_dir = out.join(format!("train-d_{}", kind.as_str()));
        eprintln!("[3] standard {} on {name}", train_config.arch);
        let on_set = Split {
            train: set.clone(),
            test: split.test.clone(),
        };
        let mut progress = Progress::new();
        let s = train::train(
            &train_config,
            &on_set,
            &run_dir,
            true,
            device,
            &mut progress,
        )
        .with_context(|| format!("training on {name} in {}", run_dir.display()))?;
        drop(progress);
        let shifted = (kind == ConstructKind::Det).then(|| {
            let (model, _) = checkpoint::load(&run_dir.join("latest"), device)?;
            let mut shifted = split.test.clone();
            let c = shifted.num_classes();
            for l in &mut shifted.labels {
                *l = (*l + 1) % c;
            }
            anyhow::Ok(eval::evaluate(&model, &shifted, 256, device).accuracy)
        });
        rows.push(Row {
            experiment: experiment.clone(),
            train_set: name.into(),
            arch: train_config.arch,
            test_accuracy: s.test_accuracy,
            paper: paper(name),
            shifted_test_accuracy: shifted.transpose()?,
            attack_success: meta.summary.as_ref().map(|m| m.agreement),
            robust_accuracy: robust_of(&run_dir.join("latest"))?,
            paper_robust: paper_robust(name),
            robust_examples: eval_set.len(),
            feature_signal: plan.toy.then(|| feature_signal(&set)),
            train_examples: set.len(),
            epochs: s.epochs,
            seconds: stage.elapsed().as_secs_f64(),
        });
        built.push((kind, set));
    }

    // Stage 4: the control for D_R's robust accuracy. A less accurate model is also harder to
    // push across its decision boundary, so D_R's model (usually less accurate than the
    // standard one) is compared with the standard recipe stopped early at its accuracy.
    let ladder = matched_ladder(plan.standard.epochs)
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let (matched, matched_note): (Vec<Row>, Option<String>) = match rows
        .iter()
        .find(|r| r.train_set == "D_R")
    {
        None => (Vec::new(), None),
        Some(_) if args.no_matched => (Vec::new(), None),
        Some(d_r) if d_r.test_accuracy >= standard_acc => (
            Vec::new(),
            Some(
                "No early-stopped control: the D_R model is at least as accurate as the standard one."
                    .to_string(),
            ),
        ),
        Some(d_r) => {
            let mut tried: Vec<(usize, f64)> = Vec::new();
            let target = d_r.test_accuracy;
            let stage = Instant::now();
            // The standard recipe over `epochs` (trained here, or reused from its folder).
            let mut train_for = |epochs: usize| -> Result<(f64, usize)> {
                let mut config = shortened(&plan.standard, epochs);
                config.classes = classes.clone();
                config.seed = args.seed;
                let dir = out.join(format!("standard-e{epochs}"));
                eprintln!(
                    "[4] standard {} for {epochs} epochs (matching D_R's {:.2}%)",
                    config.arch,
                    100.0 * target
                );
                let mut progress = Progress::new();
                let s = train::train(&config, &split, &dir, true, device, &mut progress)
                    .with_context(|| format!("training the control in {}", dir.display()))?;
                tried.push((epochs, s.test_accuracy));
                Ok((s.test_accuracy, s.train_images))
            };
            // Up the ladder until one reaches the target, then bisect between it and the
            // last one below: the fewest epochs that reach D_R's accuracy.
            let mut below = 0;
            let mut reached = None;
            for epochs in matched_ladder(plan.standard.epochs) {
                let (acc, images) = train_for(epochs)?;
                if acc >= target {
                    reached = Some((epochs, acc, images));
                    break;
                }
                below = epochs;
            }
            if let Some((mut hi, mut hi_acc, mut hi_images)) = reached {
                while hi - below > 1 {
                    let mid = below + (hi - below) / 2;
                    let (acc, images) = train_for(mid)?;
                    if acc >= target {
                        (hi, hi_acc, hi_images) = (mid, acc, images);
                    } else {
                        below = mid;
                    }
                }
                // Both sides of the target: the fewest epochs that reach it and, when there
                // is one, the run just below it (less accurate, so if anything more robust).
                let row = |name: &str, epochs: usize, acc: f64, seconds: f64| -> Result<Row> {
                    Ok(Row {
                        experiment: experiment.clone(),
                        train_set: name.into(),
                        arch: plan.standard.arch,
                        test_accuracy: acc,
                        paper: None,
                        shifted_test_accuracy: None,
                        attack_success: None,
                        robust_accuracy: robust_of(
                            &out.join(format!("standard-e{epochs}/latest")),
                        )?,
                        paper_robust: None,
                        robust_examples: eval_set.len(),
                        feature_signal: None,
                        train_examples: hi_images,
                        epochs,
                        seconds,
                    })
                };
                let mut control = Vec::new();
                if let Some(&(_, acc)) = tried.iter().find(|(e, _)| *e == below) {
                    control.push(row(MATCHED_BELOW, below, acc, 0.0)?);
                }
                control.push(row(MATCHED, hi, hi_acc, stage.elapsed().as_secs_f64())?);
                let note = format!(
                    "`{MATCHED}`: the standard recipe trained for {hi} epoch{} only (its schedule compressed to them), the fewest epochs whose clean accuracy reaches the D_R model's (runs of {ladder} epochs, then bisection; tried: {}); D_R's robust accuracy is to be judged against this row (and `{MATCHED_BELOW}`, the longest run below D_R's accuracy, where there is one), since a less accurate model is also harder to attack.",
                    if hi == 1 { "" } else { "s" },
                    tried
                        .iter()
                        .map(|(e, a)| format!("{e} epochs {:.2}%", 100.0 * a))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                (control, Some(note))
            } else {
                (
                    Vec::new(),
                    Some(format!(
                        "No early-stopped control: none of the standard recipe's shorter runs ({ladder} epochs) reached the D_R model's clean accuracy, so the fully trained standard model is the closest."
                    )),
                )
            }
        }
    };
    rows.extend(matched);

    write_report(
        &out,
        &experiment,
        &args,
        &plan,
        &rows,
        &split.train,
        &built,
        matched_note.as_deref(),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        print_json(&json!({
            "experiment": experiment,
            "scale": args.scale.as_str(),
            "out": out,
            "seconds": seconds,
            "rows": rows,
        }))?;
    } else {
        for r in &rows {
            outln!(
                "{:<8} {:<8} test accuracy {:6.2}%{}",
                r.train_set,
                r.arch,
                100.0 * r.test_accuracy,
                r.paper
                    .map(|p| format!(" (paper {:.1}%)", 100.0 * p))
                    .unwrap_or_default()
            );
        }
        outln!(
            "report: {} ({:.0}s)",
            out.join("report.md").display(),
            seconds
        );
    }
    Ok(())
}

/// The row of the standard model stopped early at the D_R model's clean accuracy.
const MATCHED: &str = "D (standard, D_R's accuracy)";

/// The longest of the early-stopped runs that stays below the D_R model's clean accuracy.
const MATCHED_BELOW: &str = "D (standard, just below D_R's accuracy)";

/// Epoch counts tried for the early-stopped control, each shorter than the standard model's
/// `epochs`: 1, 2, 3, 4, 5, 7, 9, 12, 15, 19, ... (each about 1.25 times the last).
fn matched_ladder(epochs: usize) -> Vec<usize> {
    let mut ladder = Vec::new();
    let mut e = 1;
    while e < epochs {
        ladder.push(e);
        e = (e + 1).max((e * 5).div_ceil(4));
    }
    ladder
}

/// The standard recipe over `epochs` instead of its own: a cosine schedule compresses by
/// itself, a step schedule's drop and the warm-up scale with the epochs.
fn shortened(config: &TrainConfig, epochs: usize) -> TrainConfig {
    let scale = |e: usize| (e * epochs).div_ceil(config.epochs.max(1));
    TrainConfig {
        epochs,
        schedule: match config.schedule {
            Schedule::Step { step, gamma } => Schedule::Step {
                step: scale(step).max(1),
                gamma,
            },
            ref other => other.clone(),
        },
        warmup_epochs: scale(config.warmup_epochs).min(epochs.saturating_sub(1)),
        ..config.clone()
    }
}

/// (E[y x_1], E[y mean(x_2..)]) over a synthetic-model data set, y = +1 for class 1, -1 for 0.
fn feature_signal(data: &Dataset) -> (f64, f64) {
    let d = data.image_len();
    let n = data.len().max(1) as f64;
    let (mut robust, mut weak) = (0.0, 0.0);
    for i in 0..data.len() {
        let y = if data.labels[i] == 1 { 1.0 } else { -1.0 };
        let x = data.image(i);
        robust += y * f64::from(x[0]);
        weak += y * x[1..].iter().map(|&v| f64::from(v)).sum::<f64>() / (d - 1).max(1) as f64;
    }
    (robust / n, weak / n)
}

fn load(plan: &Plan, data_dir: Option<&Path>, seed: u64) -> Result<Split> {
    let dir = data::resolve_data_dir(data_dir);
    if plan.dataset.needs_data_dir() && dir.is_none() {
        bail!(
            "no data folder for {}: pass --data PATH, set ROBUSTNESS_DATA, or place the files in ../shared/data",
            plan.dataset
        );
    }
    let split = data::load(plan.dataset, dir.as_deref(), seed, &Default::default())
        .with_context(|| format!("loading {}", plan.dataset))?;
    let mut split = match plan.classes {
        None => split,
        Some(spec) => {
            let classes = data::parse_classes(spec, &split.train.class_names)?;
            Split {
                train: split.train.select_classes(&classes),
                test: split.test.select_classes(&classes),
            }
        }
    };
    // The standard model's training subset (cifar10 quick: the first 10,000): every model and
    // constructed set of the experiment uses it.
    if let Some(limit) = plan.standard.train_limit {
        split.train = limit.apply(&split.train)?;
    }
    Ok(split)
}

/// Builds (or resumes, or finds finished) a constructed set with the same metadata the
/// `construct` command would write for the same flags.
fn build(
    config: &ConstructConfig,
    ckpt: &Path,
    train_set: &Dataset,
    dataset: DatasetKind,
    classes: Option<Vec<String>>,
    out: &Path,
    device: &robustness::Device,
) -> Result<ConstructMeta> {
    let ckpt_dir = checkpoint::resolve(ckpt)?;
    let (model, saved) = checkpoint::load_for_data(ckpt, train_set, device)?;
    let synthetic = (dataset == DatasetKind::Synthetic).then(SyntheticConfig::default);
    let source = Source::of(train_set, dataset, classes, saved.seed, synthetic);
    let model_ref = ModelRef {
        path: ckpt.display().to_string(),
        sha256: construct::sha256_file(&ckpt_dir.join(checkpoint::WEIGHTS_FILE))?,
        arch: saved.spec.arch,
        epoch: saved.epoch,
        adversarially_trained: super::construct::adversarially_trained(&ckpt_dir),
        restricted_from: saved.restricted_from.clone(),
    };
    let meta = ConstructMeta::new(config.clone(), source, model_ref, None)?;
    let mut progress = Examples::new(config.kind.paper_name());
    let meta = construct::construct(&model, train_set, meta, out, device, |d, t| {
        progress.update(d, t)
    })
    .with_context(|| format!("building {} in {}", config.kind.paper_name(), out.display()))?;
    Ok(meta)
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    out: &Path,
    experiment: &str,
    args: &ReproduceArgs,
    plan: &Plan,
    rows: &[Row],
    original: &Dataset,
    built: &[(ConstructKind, Dataset)],
    matched_note: Option<&str>,
) -> Result<()> {
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    let radii: Vec<f64> = rows
        .iter()
        .find(|r| !r.robust_accuracy.is_empty())
        .map(|r| r.robust_accuracy.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.train_set.clone(),
                r.arch.to_string(),
                r.train_examples.to_string(),
                r.epochs.to_string(),
                pct(r.test_accuracy),
                r.paper.map(pct).unwrap_or_else(|| "-".into()),
            ];
            for (i, _) in radii.iter().enumerate() {
                row.push(
                    r.robust_accuracy
                        .get(i)
                        .map(|p| pct(p.1))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            if !radii.is_empty() && rows.iter().any(|r| r.paper_robust.is_some()) {
                row.push(r.paper_robust.map(pct).unwrap_or_else(|| "-".into()));
            }
            if let Some((a, b)) = r.feature_signal {
                row.push(format!("{a:.3}"));
                row.push(format!("{b:.3}"));
            } else if rows.iter().any(|r| r.feature_signal.is_some()) {
                row.push("-".into());
                row.push("-".into());
            }
            row.push(r.attack_success.map(pct).unwrap_or_else(|| "-".into()));
            row.push(
                r.shifted_test_accuracy
                    .map(pct)
                    .unwrap_or_else(|| "-".into()),
            );
            row
        })
        .collect();
    let mut header: Vec<String> = [
        "train set",
        "arch",
        "examples",
        "epochs",
        "test accuracy (original test set)",
        "paper",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for eps in &radii {
        header.push(format!(
            "robust accuracy, {} eps {eps:.3}",
            if plan.eval_constraint == Constraint::Linf {
                "L-inf"
            } else {
                "L2"
            }
        ));
    }
    let any_paper_robust = rows.iter().any(|r| r.paper_robust.is_some());
    if let (Some(eps), true) = (radii.first(), any_paper_robust) {
        header.push(format!("paper, eps {eps}"));
    }
    if rows.iter().any(|r| r.feature_signal.is_some()) {
        header.push("signal E[y x_1] (robust)".into());
        header.push("signal E[y mean x_2..] (non-robust)".into());
    }
    header.push("attack success / model agrees".into());
    header.push("accuracy on test relabelled y+1".into());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let table = report::markdown_table(&header, &table_rows);
    // Short names on the figures: the early-stopped controls by their epochs.
    let categories: Vec<String> = rows
        .iter()
        .map(|r| {
            if r.train_set == MATCHED || r.train_set == MATCHED_BELOW {
                format!("D ({} epochs)", r.epochs)
            } else {
                r.train_set.clone()
            }
        })
        .collect();
    if let Some(&eps) = radii.first() {
        let mut series = vec![
            (
                "clean".to_string(),
                rows.iter().map(|r| Some(r.test_accuracy)).collect(),
            ),
            (
                format!("robust, eps {eps}"),
                rows.iter()
                    .map(|r| r.robust_accuracy.first().map(|p| p.1))
                    .collect(),
            ),
        ];
        if rows.iter().any(|r| r.paper_robust.is_some()) {
            series.push(("paper clean".into(), rows.iter().map(|r| r.paper).collect()));
            series.push((
                "paper robust".into(),
                rows.iter().map(|r| r.paper_robust).collect(),
            ));
        }
        report::bar_chart(
            &out.join("robustness.png"),
            &format!("{experiment}: clean and robust accuracy (Figure 2b)"),
            "accuracy (%)",
            &categories,
            &series,
        )?;
    }
    // Figures: accuracies next to the paper's, and examples of the constructed sets.
    let mut series = vec![(
        "ours".to_string(),
        rows.iter().map(|r| Some(r.test_accuracy)).collect(),
    )];
    if rows.iter().any(|r| r.paper.is_some()) {
        series.push((
            "paper / talk".to_string(),
            rows.iter().map(|r| r.paper).collect(),
        ));
    }
    report::bar_chart(
        &out.join("accuracy.png"),
        &format!("{experiment}: accuracy on the original test set"),
        "test accuracy (%)",
        &categories,
        &series,
    )?;
    // Columns: the first training images of every class (Figure 2a), at most 10 in all.
    let per_class = (10 / original.num_classes().max(1)).clamp(1, 4);
    let mut shown = original.first_of_each_class(per_class);
    shown.truncate(10);
    let name = |k: usize| {
        original
            .class_names
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    };
    let mut grid = vec![(
        "original (label)".to_string(),
        shown
            .iter()
            .map(|&i| Tile {
                pixels: original.image(i),
                caption: name(original.labels[i]),
            })
            .collect(),
    )];
    for (kind, set) in built {
        grid.push((
            format!(
                "{} ({})",
                kind.paper_name(),
                if kind.relabels() {
                    "new label"
                } else {
                    "label"
                }
            ),
            shown
                .iter()
                .map(|&i| Tile {
                    pixels: set.image(i),
                    caption: name(set.labels[i]),
                })
                .collect(),
        ));
    }
    if original.height > 1 {
        let scale = (96 / original.height.max(1)).max(1);
        report::image_grid(
            &out.join("examples.png"),
            &grid,
            original.channels,
            original.height,
            original.width,
            scale,
        )?;
    }
    let mut command = format!(
        "robustness reproduce {experiment} --scale {}",
        args.scale.as_str()
    );
    if let Some(s) = &args.source {
        command.push_str(&format!(" --source {}", s.display()));
    }
    if let Some(r) = &args.robust_source {
        command.push_str(&format!(" --robust-source {}", r.display()));
    }
    if let Some(sets) = &args.sets {
        command.push_str(&format!(" --sets {sets}"));
    }
    if args.no_matched {
        command.push_str(" --no-matched");
    }
    let md = format!(
        "# Adversarial examples are features: {experiment} ({} scale)\n\n{}\n\nCommand: `{command}` (stages in this folder are reused when rerun).\n\n{table}\nEvery model is tested on the original, correctly labelled test set. Models trained on D_det / D_rand saw only images relabelled to a (mostly) wrong class; models on D_R / D_NR saw only images re-synthesised from a robust / standard model's representation. Chance is {:.1}%.{}{}\n\n![accuracy](accuracy.png)\n{}\n![examples](examples.png)\n",
        args.scale.as_str(),
        plan.note,
        100.0 / original.num_classes().max(1) as f64,
        if radii.is_empty() {
            String::new()
        } else {
            format!(
                " Robust accuracy: {} PGD, 20 steps of 2.5 eps / 20, no random start, best iterate, on {} test images spread evenly over the test set.",
                if plan.eval_constraint == Constraint::Linf {
                    "L-inf"
                } else {
                    "L2"
                },
                rows[0].robust_examples
            )
        },
        matched_note.map(|n| format!(" {n}")).unwrap_or_default(),
        if radii.is_empty() {
            ""
        } else {
            "\n![robustness (Figure 2b)](robustness.png)\n"
        },
    );
    train::checkpoint::write_atomic(&out.join("report.md"), md.as_bytes())?;
    train::checkpoint::write_json_atomic(
        &out.join("results.json"),
        &json!({ "experiment": experiment, "scale": args.scale.as_str(), "rows": rows }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catdog_quick_trains_its_d_det_model_with_augmentation_full_scale_keeps_table_3() {
        let sets = [ConstructKind::Det, ConstructKind::Rand];
        let quick = plan("catdog", Scale::Quick, &sets).expect("quick plan");
        assert!(quick.retrain[0].augment, "quick D_det: crop + flip");
        let full = plan("catdog", Scale::Full, &sets).expect("full plan");
        assert!(!full.retrain[0].augment, "full D_det: Table 3 has none");
        // D_rand keeps Table 3's recipe (with augmentation) at both scales.
        assert_eq!(quick.retrain[1].augment, full.retrain[1].augment);
        assert!(full.retrain[1].augment);
        // The other experiments keep Table 3's D_det recipe.
        let c10 = plan("cifar10", Scale::Quick, &sets).expect("cifar10 plan");
        assert!(!c10.retrain[0].augment);
    }

    #[test]
    fn the_matched_accuracy_ladder_stays_below_the_standard_epochs_and_grows() {
        assert_eq!(matched_ladder(15), vec![1, 2, 3, 4, 5, 7, 9, 12]);
        assert_eq!(matched_ladder(1), Vec::<usize>::new());
        assert_eq!(matched_ladder(2), vec![1]);
        let long = matched_ladder(150);
        assert!(long.windows(2).all(|w| w[1] > w[0]));
        assert!(*long.last().expect("steps") < 150);
        // Far fewer runs than epochs, and at most ~5x the standard model's epochs in all.
        assert!(long.len() < 25, "{long:?}");
        assert!(long.iter().sum::<usize>() < 5 * 150, "{long:?}");
    }

    #[test]
    fn a_shortened_recipe_keeps_its_drops_and_warm_up_in_proportion() {
        let base = TrainConfig {
            epochs: 150,
            schedule: Schedule::Step {
                step: 50,
                gamma: 0.1,
            },
            warmup_epochs: 5,
            ..defaults::for_dataset(DatasetKind::Cifar10)
        };
        let short = shortened(&base, 15);
        assert_eq!(short.epochs, 15);
        assert_eq!(
            short.schedule,
            Schedule::Step {
                step: 5,
                gamma: 0.1
            }
        );
        assert_eq!(short.warmup_epochs, 1);
        assert_eq!(short.lr, base.lr);
        let one = shortened(&base, 1);
        assert_eq!(one.warmup_epochs, 0, "a one-epoch run has no warm-up");
        let cosine = TrainConfig {
            schedule: Schedule::Cosine,
            ..base.clone()
        };
        assert_eq!(shortened(&cosine, 7).schedule, Schedule::Cosine);
    }
}
