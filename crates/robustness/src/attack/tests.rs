//! Correctness tests of the attack engine: geometry of each threat model, and PGD against the
//! closed-form optimal attacks on a linear classifier.

use super::threat::{Constraint, project_l1, threat_model};
use super::*;
use crate::models::{Arch, ModelSpec};
use rand::Rng;

const SHAPE: [usize; 4] = [5, 1, 4, 4];

fn device() -> Device {
    Device::flex()
}

fn host(values: Vec<f32>) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, SHAPE), &device())
}

fn uniform(lo: f32, hi: f32, seed: u64) -> Tensor<4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    host(
        (0..SHAPE.iter().product::<usize>())
            .map(|_| lo + (hi - lo) * rng.random::<f32>())
            .collect(),
    )
}

fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    tensors::to_vec(a - b)
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
}

fn in_unit_box(x: &Tensor<4>) -> bool {
    tensors::to_vec(x.clone())
        .iter()
        .all(|&v| (0.0..=1.0).contains(&v))
}

const BALLS: [(Constraint, f64); 3] = [
    (Constraint::Linf, 0.1),
    (Constraint::L2, 0.5),
    (Constraint::L1, 2.0),
];

#[test]
fn projection_is_idempotent_and_lands_in_the_ball_and_the_box() {
    for (constraint, eps) in BALLS {
        let threat = threat_model(constraint, eps, 0.1);
        let x0 = uniform(0.0, 1.0, 1);
        let far = uniform(-2.0, 3.0, 2);
        let p1 = threat.project(far, &x0);
        let p2 = threat.project(p1.clone(), &x0);
        assert!(
            max_abs_diff(p1.clone(), p2) < 1e-6,
            "{constraint}: not idempotent"
        );
        assert!(in_unit_box(&p1), "{constraint}: left [0, 1]");
        for norm in tensors::to_vec(threat.norm(p1 - x0)) {
            assert!(
                norm as f64 <= eps + 1e-5,
                "{constraint}: norm {norm} > eps {eps}"
            );
        }
    }
}

#[test]
fn random_starts_lie_in_the_ball_and_the_box() {
    for (constraint, eps) in BALLS {
        let threat = threat_model(constraint, eps, 0.1);
        let x0 = uniform(0.0, 1.0, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let start = threat.random_start(&x0, &mut rng);
        assert!(in_unit_box(&start), "{constraint}");
        let norms = tensors::to_vec(threat.norm(start - x0.clone()));
        assert!(
            norms.iter().all(|&n| n as f64 <= eps + 1e-5),
            "{constraint}: {norms:?}"
        );
        assert!(
            norms.iter().any(|&n| n > 0.0),
            "{constraint}: the start did not move"
        );
    }
}

#[test]
fn unit_steps_have_norm_one_in_their_geometry() {
    let g = uniform(-1.0, 1.0, 5);
    // L2: g / ||g||_2 has L2 norm 1.
    let l2 = threat_model(Constraint::L2, 0.5, 0.1);
    for n in tensors::to_vec(l2.norm(l2.step(g.clone()))) {
        assert!((n - 1.0).abs() < 1e-5, "L2 step norm {n}");
    }
    // L1: sparse sign step normalised to L1 norm 1, moving ceil(0.25 * 16) = 4 coordinates.
    let l1 = threat_model(Constraint::L1, 2.0, 0.25);
    let step = l1.step(g.clone());
    for n in tensors::to_vec(l1.norm(step.clone())) {
        assert!((n - 1.0).abs() < 1e-5, "L1 step norm {n}");
    }
    let moved = tensors::to_vec(step).iter().filter(|v| **v != 0.0).count();
    assert_eq!(moved, 4 * SHAPE[0]);
    // Linf: sign(g), every coordinate +-1.
    let linf = threat_model(Constraint::Linf, 0.1, 0.1);
    assert!(tensors::to_vec(linf.step(g)).iter().all(|v| v.abs() == 1.0));
}

#[test]
fn l1_projection_matches_a_bisection_on_the_threshold() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for _ in 0..50 {
        let v: Vec<f32> = (0..20).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
        let eps = 3.0;
        let mut p = v.clone();
        project_l1(&mut p, eps);
        // Independent: find theta with sum(max(|v| - theta, 0)) = eps by bisection.
        let l1 = |t: f64| v.iter().map(|x| (x.abs() as f64 - t).max(0.0)).sum::<f64>();
        let expected: Vec<f32> = if l1(0.0) <= eps {
            v.clone()
        } else {
            let (mut lo, mut hi) = (0.0, 2.0);
            for _ in 0..100 {
                let mid = 0.5 * (lo + hi);
                if l1(mid) > eps { lo = mid } else { hi = mid }
            }
            v.iter()
                .map(|x| (x.signum() as f64 * (x.abs() as f64 - lo).max(0.0)) as f32)
                .collect()
        };
        for (a, b) in p.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{p:?} vs {expected:?}");
        }
    }
}

/// A linear binary score s(x) = w.x + b with labels y in {-1, +1}; the attack minimises the
/// margin y s(x) (its loss is -y s(x)). Optimal perturbations: L2 -y eps w/||w||_2,
/// Linf -y eps sign(w); the margin drops by eps ||w||_2 and eps ||w||_1.
struct LinearScore {
    w: Vec<f32>,
    b: f32,
    y: Vec<f32>,
}

impl LinearScore {
    fn new() -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let d = SHAPE[1] * SHAPE[2] * SHAPE[3];
        Self {
            w: (0..d).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect(),
            b: 0.1,
            y: vec![1.0, -1.0, 1.0, -1.0, 1.0],
        }
    }

    fn margins(&self, x: &Tensor<4>) -> Vec<f64> {
        let d = self.w.len();
        tensors::to_vec(x.clone())
            .chunks(d)
            .zip(&self.y)
            .map(|(xi, &y)| {
                let s: f64 = xi.iter().zip(&self.w).map(|(a, b)| (a * b) as f64).sum();
                y as f64 * (s + self.b as f64)
            })
            .collect()
    }

    fn loss(&self) -> impl Fn(&Classifier, Tensor<4>, &Tensor<1, Int>) -> Tensor<1> + Sync + '_ {
        move |_model, x, _target| {
            let [b, c, h, w] = x.dims();
            let wt = Tensor::<1>::from_floats(self.w.as_slice(), &x.device()).reshape([1, c, h, w]);
            let y = Tensor::<1>::from_floats(self.y.as_slice(), &x.device());
            let score = (x * wt)
                .sum_dims(&[1, 2, 3])
                .reshape([b])
                .add_scalar(self.b);
            (score * y).neg()
        }
    }
}

fn any_model() -> Classifier {
    let spec = ModelSpec {
        arch: Arch::Linear,
        channels: SHAPE[1],
        height: SHAPE[2],
        width: SHAPE[3],
        num_classes: 2,
        mean: vec![0.0],
        std: vec![1.0],
        images: true,
    };
    Classifier::new(&spec, &device())
}

#[test]
fn pgd_reaches_the_closed_form_optimum_on_a_linear_classifier() {
    let lin = LinearScore::new();
    let x0 = host(vec![0.5; SHAPE.iter().product()]);
    let clean = lin.margins(&x0);
    let w_l2 = lin.w.iter().map(|v| (v * v) as f64).sum::<f64>().sqrt();
    let w_l1 = lin.w.iter().map(|v| v.abs() as f64).sum::<f64>();
    let labels = tensors::labels(&[0; 5], &device());
    let model = any_model();
    for (constraint, eps, drop) in [
        (Constraint::L2, 0.3, 0.3 * w_l2),
        (Constraint::Linf, 0.05, 0.05 * w_l1),
    ] {
        for random_start in [false, true] {
            let config = AttackConfig {
                constraint,
                eps,
                steps: 200,
                step_size: Some(eps / 10.0),
                random_start,
                ..AttackConfig::default()
            };
            let mut rng = ChaCha8Rng::seed_from_u64(8);
            let out = pgd(&model, &x0, &labels, &config, &lin.loss(), &mut rng).expect("pgd");
            for (i, m) in lin.margins(&out.adv).iter().enumerate() {
                let expected = clean[i] - drop;
                assert!(
                    (m - expected).abs() < 1e-4,
                    "{constraint} random_start={random_start} example {i}: margin {m}, optimum {expected}"
                );
            }
        }
    }
}

#[test]
fn untargeted_pgd_at_eps_zero_changes_nothing() {
    let x0 = uniform(0.0, 1.0, 9);
    let model = any_model();
    let labels = tensors::labels(&[0, 1, 0, 1, 0], &device());
    for constraint in [Constraint::L2, Constraint::Linf, Constraint::L1] {
        let config = AttackConfig {
            constraint,
            eps: 0.0,
            step_size: Some(0.1),
            random_start: true,
            ..AttackConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let out = pgd(
            &model,
            &x0,
            &labels,
            &config,
            &LossKind::CrossEntropy,
            &mut rng,
        )
        .expect("pgd");
        assert_eq!(max_abs_diff(out.adv, x0.clone()), 0.0, "{constraint}");
    }
}

#[test]
fn restarts_and_use_best_never_lower_the_loss() {
    let lin = LinearScore::new();
    let x0 = uniform(0.2, 0.8, 11);
    let labels = tensors::labels(&[0; 5], &device());
    let model = any_model();
    let base = AttackConfig {
        constraint: Constraint::L2,
        eps: 0.3,
        steps: 3,
        random_start: true,
        ..AttackConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let one = pgd(&model, &x0, &labels, &base, &lin.loss(), &mut rng).expect("pgd");
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let many = pgd(
        &model,
        &x0,
        &labels,
        &AttackConfig {
            restarts: 4,
            ..base
        },
        &lin.loss(),
        &mut rng,
    )
    .expect("pgd");
    for (a, b) in tensors::to_vec(one.loss)
        .iter()
        .zip(tensors::to_vec(many.loss))
    {
        assert!(b >= *a - 1e-6, "restarts lowered the loss: {a} -> {b}");
    }
}

#[test]
fn attacks_leave_the_model_and_its_batch_norm_statistics_unchanged() {
    let spec = crate::models::tiny_spec(Arch::Cnn);
    let dev = device().autodiff();
    dev.seed(1);
    let model = Classifier::new(&spec, &dev);
    let before = tensors::to_vec(model.valid().forward(Tensor::ones([2, 1, 8, 8], &device())));
    let x0 = Tensor::<4>::from_data(
        TensorData::new(vec![0.3f32; 2 * 64], [2, 1, 8, 8]),
        &device(),
    );
    let y = tensors::labels(&[0, 1], &device());
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for kind in [
        AttackKind::Pgd,
        AttackKind::ApgdCe,
        AttackKind::ApgdDlr,
        AttackKind::Fgsm,
    ] {
        let config = AttackConfig {
            steps: 5,
            ..AttackConfig::default()
        };
        attack_batch(kind, &model, &x0, &y, &config, &mut rng).expect("attack");
    }
    let after = tensors::to_vec(model.valid().forward(Tensor::ones([2, 1, 8, 8], &device())));
    assert_eq!(before, after);
}

#[test]
fn apgd_stays_in_the_ball_and_is_at_least_as_strong_as_its_start() {
    let lin = LinearScore::new();
    let _ = &lin;
    let dev = device().autodiff();
    dev.seed(2);
    let spec = ModelSpec {
        arch: Arch::Mlp,
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 3,
        mean: vec![0.5],
        std: vec![0.25],
        images: true,
    };
    let model = Classifier::new(&spec, &dev);
    let x0 = uniform(0.0, 1.0, 14);
    let y = tensors::labels(&[0, 1, 2, 0, 1], &device());
    for constraint in [Constraint::Linf, Constraint::L2] {
        let eps = if constraint == Constraint::Linf {
            0.05
        } else {
            0.3
        };
        let config = AttackConfig {
            constraint,
            eps,
            steps: 30,
            ..AttackConfig::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let out =
            apgd::apgd(&model, &x0, &y, &config, &LossKind::CrossEntropy, &mut rng).expect("apgd");
        let threat = threat_model(constraint, eps, 0.01);
        for n in tensors::to_vec(threat.norm(out.adv.clone() - x0.clone())) {
            assert!(n as f64 <= eps + 1e-5, "{constraint}: {n}");
        }
        assert!(in_unit_box(&out.adv));
        let clean = tensors::to_vec(LossKind::CrossEntropy.loss(&model.valid(), x0.clone(), &y));
        for (a, c) in tensors::to_vec(out.loss).iter().zip(clean) {
            assert!(*a >= c - 1e-6, "APGD ended below the clean loss: {a} < {c}");
        }
    }
}

#[test]
fn attacks_on_non_image_inputs_are_not_clamped_to_the_image_box() {
    // Regression: the synthetic feature vectors live far outside [0, 1]; clamping them there
    // (as for images) would destroy the data before the attack even starts.
    let spec = ModelSpec {
        arch: Arch::Linear,
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 2,
        mean: vec![0.0],
        std: vec![1.0],
        images: false,
    };
    let dev = device();
    dev.seed(4);
    let model = Classifier::new(&spec, &dev);
    assert!(!model.takes_images());
    let x0 = uniform(-3.0, 3.0, 9);
    let y = tensors::labels(&[0, 1, 0, 1, 0], &dev);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for constraint in [Constraint::L2, Constraint::Linf] {
        let config = AttackConfig {
            constraint,
            eps: 0.5,
            steps: 5,
            random_start: true,
            ..AttackConfig::default()
        };
        let out = pgd(&model, &x0, &y, &config, &config.loss, &mut rng).expect("pgd");
        assert!(!in_unit_box(&out.adv), "outputs stayed in [0, 1]");
        let threat = threat_model(constraint, 0.5, 0.01);
        let norms = tensors::to_vec(threat.norm(out.adv - x0.clone()));
        assert!(
            norms.iter().all(|&n| n <= 0.5 + 1e-5 && n > 0.1),
            "{norms:?}"
        );
    }
}

#[test]
fn targeted_dlr_matches_its_formula_and_falls_back_to_the_margin_below_four_classes() {
    let dev = device();
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![3.0f32, 1.0, 0.5, -1.0, 0.0, 2.0, -2.0, 4.0], [2, 4]),
        &dev,
    );
    let y = tensors::labels(&[1, 3], &dev);
    let t = tensors::labels(&[0, 1], &dev);
    let got = tensors::to_vec(loss::dlr_targeted(logits, &y, &t));
    // Row 0: sorted 3, 1, 0.5, -1: -(1 - 3) / (3 - (0.5 - 1) / 2). Row 1: sorted 4, 2, 0, -2:
    // -(4 - 2) / (4 - (0 - 2) / 2).
    let want = [2.0 / 3.25, -2.0 / 5.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    let two = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, 2.0], [1, 2]), &dev);
    let got = tensors::to_vec(loss::dlr_targeted(
        two,
        &tensors::labels(&[1], &dev),
        &tensors::labels(&[0], &dev),
    ));
    assert!((got[0] - (0.5 - 2.0)).abs() < 1e-6, "{got:?}");
}

/// A 10-class MLP on 1x4x4 inputs and 40 random inputs labelled with its own clean
/// predictions, except the first 4, labelled wrongly.
fn ten_class_batch() -> (Classifier, Tensor<4>, Vec<usize>) {
    let dev = device().autodiff();
    dev.seed(21);
    let spec = ModelSpec {
        arch: Arch::Mlp,
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 10,
        mean: vec![0.5],
        std: vec![0.25],
        images: true,
    };
    let model = Classifier::new(&spec, &dev).for_inference();
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let x0 = Tensor::<4>::from_data(
        TensorData::new(
            (0..40 * 16)
                .map(|_| rng.random::<f32>())
                .collect::<Vec<_>>(),
            [40, 1, 4, 4],
        ),
        &device(),
    );
    let mut labels = tensors::argmax_rows(model.forward(x0.clone()));
    for l in labels.iter_mut().take(4) {
        *l = (*l + 1) % 10;
    }
    (model, x0, labels)
}

#[test]
fn apgd_t_stays_in_the_ball_and_leaves_misclassified_inputs_alone() {
    let (model, x0, labels) = ten_class_batch();
    let y = tensors::labels(&labels, &device());
    let eps = 0.3;
    let config = AttackKind::ApgdT.base_config(20);
    let config = AttackConfig {
        eps,
        steps: 10,
        ..config
    };
    let out = attack_batch(
        AttackKind::ApgdT,
        &model,
        &x0,
        &y,
        &config,
        &mut ChaCha8Rng::seed_from_u64(3),
    )
    .expect("apgd-t");
    let threat = threat_model(Constraint::L2, eps, 0.01);
    let norms = tensors::to_vec(threat.norm(out.adv.clone() - x0.clone()));
    assert!(norms.iter().all(|&n| n as f64 <= eps + 1e-5), "{norms:?}");
    assert!(in_unit_box(&out.adv));
    // The 4 wrongly labelled inputs are already "misclassified": not attacked.
    assert!(norms[..4].iter().all(|&n| n == 0.0), "{norms:?}");
    assert!(norms[4..].iter().any(|&n| n > 0.1), "{norms:?}");
    // Its refusal of --target: `attacks_that_choose_their_own_targets_or_norms_refuse_...`.
}

#[test]
fn autoattack_fools_everything_apgd_ce_fools_and_more() {
    let (model, x0, labels) = ten_class_batch();
    let y = tensors::labels(&labels, &device());
    let config = AttackConfig {
        eps: 0.15,
        steps: 10,
        queries: Some(300),
        ..AttackKind::AutoAttack.base_config(20)
    };
    let wrong = |adv: Tensor<4>| -> Vec<bool> {
        tensors::argmax_rows(model.forward(adv))
            .iter()
            .zip(&labels)
            .map(|(p, l)| p != l)
            .collect()
    };
    // The same stream: AutoAttack's first stage is this APGD-CE run.
    let ce = attack_batch(
        AttackKind::ApgdCe,
        &model,
        &x0,
        &y,
        &config,
        &mut ChaCha8Rng::seed_from_u64(5),
    )
    .expect("apgd-ce");
    let aa = attack_batch(
        AttackKind::AutoAttack,
        &model,
        &x0,
        &y,
        &config,
        &mut ChaCha8Rng::seed_from_u64(5),
    )
    .expect("autoattack");
    let (ce_wrong, aa_wrong) = (wrong(ce.adv.clone()), wrong(aa.adv.clone()));
    let ce_rows = tensors::to_vec(ce.adv);
    let aa_rows = tensors::to_vec(aa.adv.clone());
    for i in 0..labels.len() {
        if ce_wrong[i] {
            assert!(
                aa_wrong[i],
                "example {i}: fooled by APGD-CE, not by AutoAttack"
            );
            assert_eq!(ce_rows[i * 16..(i + 1) * 16], aa_rows[i * 16..(i + 1) * 16]);
        }
    }
    let count = |v: &[bool]| v.iter().filter(|&&w| w).count();
    assert!(
        count(&aa_wrong) > count(&ce_wrong),
        "APGD-T added nothing: {} vs {}",
        count(&aa_wrong),
        count(&ce_wrong)
    );
    let threat = threat_model(Constraint::L2, 0.15, 0.01);
    for n in tensors::to_vec(threat.norm(aa.adv - x0)) {
        assert!(n as f64 <= 0.15 + 1e-5);
    }
}

/// Asserts that `out.loss` is the negated margin `max_{j != y} z_j - z_y` at `out.adv` (as
/// Square and FAB-T report it) and returns how many of its inputs are misclassified.
fn misclassified_with_loss_the_negated_margin(
    model: &Classifier,
    out: &AttackOutput,
    labels: &[usize],
    constraint: Constraint,
) -> usize {
    let logits = tensors::to_vec(model.forward(out.adv.clone()));
    let loss = tensors::to_vec(out.loss.clone());
    let k = logits.len() / labels.len();
    let mut wrong = 0;
    for (i, &label) in labels.iter().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        let other = (0..k)
            .filter(|&j| j != label)
            .map(|j| row[j])
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(
            (loss[i] - (other - row[label])).abs() < 1e-4,
            "{constraint}, example {i}: loss {} against margin {}",
            loss[i],
            row[label] - other
        );
        wrong += usize::from(other >= row[label]);
    }
    wrong
}

#[test]
fn square_stays_in_the_ball_reports_its_margin_fools_some_and_repeats_with_its_seed() {
    let (model, x0, labels) = ten_class_batch();
    let y = tensors::labels(&labels, &device());
    for (constraint, eps) in [(Constraint::Linf, 0.1), (Constraint::L2, 0.3)] {
        let config = AttackConfig {
            constraint,
            eps,
            queries: Some(300),
            ..AttackKind::Square.base_config(20)
        };
        let run_with = |queries: usize, seed: u64| {
            let config = AttackConfig {
                queries: Some(queries),
                ..config.clone()
            };
            attack_batch(
                AttackKind::Square,
                &model,
                &x0,
                &y,
                &config,
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
            .expect("square")
        };
        let run = |seed: u64| run_with(300, seed);
        let out = run(7);
        // One query is the random start alone (drawn first from the same stream): the search
        // never loses ground on it and fools more.
        let start = run_with(1, 7);
        let fooled = |loss: &[f32]| loss.iter().filter(|&&l| l >= 0.0).count();
        let (start_loss, loss) = (
            tensors::to_vec(start.loss),
            tensors::to_vec(out.loss.clone()),
        );
        for (i, (a, b)) in loss.iter().zip(&start_loss).enumerate() {
            assert!(
                a >= b,
                "{constraint}, example {i}: {a} below its start's {b}"
            );
        }
        assert!(
            fooled(&loss) > fooled(&start_loss),
            "{constraint}: the search fooled no more than its start ({} of 40)",
            fooled(&start_loss)
        );
        let threat = threat_model(constraint, eps, 0.01);
        for n in tensors::to_vec(threat.norm(out.adv.clone() - x0.clone())) {
            assert!(n as f64 <= eps + 1e-5, "{constraint}: norm {n} > {eps}");
        }
        assert!(in_unit_box(&out.adv), "{constraint}: left [0, 1]");
        // The reported loss is the negated margin at the returned input.
        let wrong = misclassified_with_loss_the_negated_margin(&model, &out, &labels, constraint);
        // Four labels are wrong from the start; the search must fool more than those.
        assert!(wrong > 8, "{constraint}: only {wrong} of 40 misclassified");
        assert_eq!(
            tensors::to_vec(run(7).adv),
            tensors::to_vec(out.adv),
            "{constraint}: not deterministic"
        );
    }
}

/// On a linear classifier the boundary FAB linearises is exact: class t beats y on the
/// half-space `f_t(x) = z_t - z_y >= 0`, so the smallest perturbation that misclassifies x is
/// `min_t -f_t(x) / ||grad f_t||_*` (dual norm: L2 for L2, L1 for L-inf). FAB-T's first step
/// toward the closest target lands at 1.05 times that distance, so it must fool every example
/// whose distance is at most eps / 1.05, and it can fool none farther than eps.
#[test]
fn fab_t_on_a_linear_model_fools_exactly_the_examples_its_geometry_allows() {
    let spec = ModelSpec {
        arch: Arch::Linear,
        channels: 1,
        height: 4,
        width: 4,
        num_classes: 10,
        mean: vec![0.0],
        std: vec![1.0],
        images: false,
    };
    let dev = device();
    let model = Classifier::new(&spec, &dev).for_inference();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let n = 60;
    let x0 = Tensor::<4>::from_data(
        TensorData::new(
            (0..n * 16)
                .map(|_| rng.random::<f32>() * 4.0 - 2.0)
                .collect::<Vec<_>>(),
            [n, 1, 4, 4],
        ),
        &dev,
    );
    let labels = tensors::argmax_rows(model.forward(x0.clone()));
    let y = tensors::labels(&labels, &dev);
    // The logits' input gradients, from the model itself: z(e_i) - z(0).
    let mut basis = vec![0f32; 17 * 16];
    for i in 0..16 {
        basis[(i + 1) * 16 + i] = 1.0;
    }
    let z = tensors::to_vec(model.forward(Tensor::from_data(
        TensorData::new(basis, [17, 1, 4, 4]),
        &dev,
    )));
    let grad = |class: usize, i: usize| z[(i + 1) * 10 + class] - z[class];
    let logits = tensors::to_vec(model.forward(x0.clone()));
    for (constraint, eps) in [(Constraint::L2, 0.4), (Constraint::Linf, 0.1)] {
        let distance: Vec<f32> = (0..n)
            .map(|e| {
                let label = labels[e];
                (0..10)
                    .filter(|&t| t != label)
                    .map(|t| {
                        let f = logits[e * 10 + t] - logits[e * 10 + label];
                        let g: Vec<f32> = (0..16).map(|i| grad(t, i) - grad(label, i)).collect();
                        let dual = match constraint {
                            Constraint::Linf => g.iter().map(|v| v.abs()).sum::<f32>(),
                            _ => g.iter().map(|v| v * v).sum::<f32>().sqrt(),
                        };
                        -f / dual
                    })
                    .fold(f32::INFINITY, f32::min)
            })
            .collect();
        let config = AttackConfig {
            constraint,
            eps,
            steps: 10,
            ..AttackKind::FabT.base_config(20)
        };
        let out = attack_batch(
            AttackKind::FabT,
            &model,
            &x0,
            &y,
            &config,
            &mut ChaCha8Rng::seed_from_u64(4),
        )
        .expect("fab-t");
        let pred = tensors::argmax_rows(model.forward(out.adv.clone()));
        let norms =
            tensors::to_vec(threat_model(constraint, eps, 0.01).norm(out.adv.clone() - x0.clone()));
        let (mut must, mut fooled) = (0, 0);
        for e in 0..n {
            let wrong = pred[e] != labels[e];
            fooled += usize::from(wrong);
            assert!(
                norms[e] as f64 <= eps + 1e-5,
                "{constraint}: norm {} > {eps}",
                norms[e]
            );
            if wrong {
                assert!(
                    distance[e] as f64 <= eps + 1e-4,
                    "{constraint}, example {e}: fooled at {} though the boundary is {} away",
                    norms[e],
                    distance[e]
                );
            } else {
                assert_eq!(
                    norms[e], 0.0,
                    "{constraint}, example {e}: unfooled but moved"
                );
            }
            if 1.05 * distance[e] as f64 <= eps * 0.999 {
                must += 1;
                assert!(
                    wrong,
                    "{constraint}, example {e}: boundary {} away, eps {eps}, not fooled",
                    distance[e]
                );
            }
        }
        // The check above has teeth: some examples are within reach and some are not.
        assert!(
            must >= 5 && fooled < n,
            "{constraint}: {must} within reach, {fooled} fooled of {n}"
        );
    }
}

#[test]
fn fab_t_on_images_stays_in_the_ball_and_box_reports_its_margin_and_repeats_with_its_seed() {
    let (model, x0, labels) = ten_class_batch();
    let y = tensors::labels(&labels, &device());
    for (constraint, eps) in [(Constraint::Linf, 0.1), (Constraint::L2, 0.3)] {
        let config = AttackConfig {
            constraint,
            eps,
            steps: 15,
            restarts: 2,
            ..AttackKind::FabT.base_config(20)
        };
        let run = |seed: u64| {
            attack_batch(
                AttackKind::FabT,
                &model,
                &x0,
                &y,
                &config,
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
            .expect("fab-t")
        };
        let out = run(9);
        let norms =
            tensors::to_vec(threat_model(constraint, eps, 0.01).norm(out.adv.clone() - x0.clone()));
        assert!(
            norms.iter().all(|&v| v as f64 <= eps + 1e-5),
            "{constraint}: {norms:?}"
        );
        assert!(in_unit_box(&out.adv), "{constraint}: left [0, 1]");
        // The 4 wrongly labelled inputs are left alone.
        assert!(
            norms[..4].iter().all(|&v| v == 0.0),
            "{constraint}: {norms:?}"
        );
        let wrong = misclassified_with_loss_the_negated_margin(&model, &out, &labels, constraint);
        assert!(wrong > 8, "{constraint}: only {wrong} of 40 misclassified");
        assert_eq!(
            tensors::to_vec(run(9).adv),
            tensors::to_vec(out.adv),
            "{constraint}: not deterministic"
        );
    }
    // L1 is refused with a clear error, not a panic.
    let l1 = AttackConfig {
        constraint: Constraint::L1,
        eps: 1.0,
        ..AttackKind::FabT.base_config(20)
    };
    assert!(
        attack_batch(
            AttackKind::FabT,
            &model,
            &x0,
            &y,
            &l1,
            &mut ChaCha8Rng::seed_from_u64(1)
        )
        .is_err()
    );
}

#[test]
fn attacks_that_choose_their_own_targets_or_norms_refuse_target_and_l1_by_name() {
    let (model, x0, labels) = ten_class_batch();
    let y = tensors::labels(&labels, &device());
    let base = AttackConfig {
        eps: 0.1,
        steps: 2,
        queries: Some(2),
        ..AttackKind::AutoAttack.base_config(2)
    };
    let attempt = |kind: AttackKind, config: &AttackConfig| {
        let err = attack_batch(
            kind,
            &model,
            &x0,
            &y,
            config,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .err()
        .unwrap_or_else(|| panic!("{} accepted {config:?}", kind.name()));
        err.to_string()
    };
    let targeted = AttackConfig {
        targeted: true,
        ..base.clone()
    };
    let l1 = AttackConfig {
        constraint: Constraint::L1,
        ..base.clone()
    };
    for (kind, name) in [
        (AttackKind::ApgdT, "APGD-T"),
        (AttackKind::FabT, "FAB-T"),
        (AttackKind::Square, "Square"),
        (AttackKind::AutoAttack, "AutoAttack"),
    ] {
        let msg = attempt(kind, &targeted);
        assert!(msg.contains(name) && msg.contains("--target"), "{msg}");
    }
    for (kind, name) in [
        (AttackKind::ApgdCe, "APGD"),
        (AttackKind::ApgdT, "APGD"),
        (AttackKind::FabT, "FAB-T"),
        (AttackKind::Square, "Square"),
        (AttackKind::AutoAttack, "AutoAttack"),
    ] {
        let msg = attempt(kind, &l1);
        assert!(msg.contains(name) && msg.contains("--constraint"), "{msg}");
    }
}
