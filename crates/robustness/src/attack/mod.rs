//! Adversarial attacks. [`pgd`] is the one projected-gradient loop (start, step, project,
//! clamp, keep-best, restarts, targeted sign) that every attack and data-set construction uses;
//! a threat model ([`threat`]) supplies the geometry and a loss ([`loss`]) the objective. FGSM is
//! PGD with one step. APGD ([`apgd`]) is Croce & Hein's step-size-adaptive variant, FAB-T
//! ([`fab`]) their minimal-perturbation boundary attack, Square ([`square`]) the gradient-free
//! random search that completes AutoAttack's checks.
//!
//! Attacks run on batches in pixel space [0, 1] (normalisation is inside the model), on the
//! model in inference mode (batch norm uses its running statistics and is never updated), and
//! never change the model's parameters.

pub mod apgd;
pub mod fab;
pub mod loss;
pub mod square;
pub mod threat;
pub mod transfer;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::tensors;
use burn::prelude::*;
use loss::{AttackLoss, LossKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use threat::{Constraint, ThreatModel, threat_model, threat_model_in};

/// Which attack algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    /// Projected gradient descent.
    Pgd,
    /// One step of size eps (no random start unless asked).
    Fgsm,
    /// APGD with cross-entropy.
    ApgdCe,
    /// APGD with the DLR loss.
    ApgdDlr,
    /// APGD-T: APGD with the targeted DLR loss toward each of the 9 most likely other classes
    /// in turn (AutoAttack's targeted APGD).
    ApgdT,
    /// FAB-T: the fast adaptive boundary attack toward each of the 9 most likely other classes
    /// in turn (AutoAttack's targeted FAB; L-infinity or L2).
    FabT,
    /// The Square Attack (Andriushchenko et al. 2020): gradient-free random search on the
    /// margin, untargeted, L-infinity or L2.
    Square,
    /// AutoAttack's standard attacks in sequence: APGD-CE, then APGD-T on what it left
    /// correctly classified, then FAB-T, then Square, each on what is still correct (per
    /// example, the first adversarial input found).
    AutoAttack,
}

impl AttackKind {
    /// The attack's usual name, e.g. "APGD-CE".
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Pgd => "PGD",
            AttackKind::Fgsm => "FGSM",
            AttackKind::ApgdCe => "APGD-CE",
            AttackKind::ApgdDlr => "APGD-DLR",
            AttackKind::ApgdT => "APGD-T",
            AttackKind::FabT => "FAB-T",
            AttackKind::Square => "Square",
            AttackKind::AutoAttack => "AutoAttack (APGD-CE + APGD-T + FAB-T + Square)",
        }
    }

    /// Whether this is one of AutoAttack's attacks, whose standard budget (100 steps, a random
    /// start; Square: 5,000 queries) the commands use unless told otherwise.
    pub fn is_autoattack(self) -> bool {
        matches!(
            self,
            AttackKind::ApgdT | AttackKind::FabT | AttackKind::Square | AttackKind::AutoAttack
        )
    }

    /// The settings a command starts from before its flags: `steps` steps, or AutoAttack's
    /// standard budget (100 steps from a random start) for its attacks.
    pub fn base_config(self, steps: usize) -> AttackConfig {
        if self.is_autoattack() {
            AttackConfig {
                steps: 100,
                random_start: true,
                ..AttackConfig::default()
            }
        } else {
            AttackConfig {
                steps,
                ..AttackConfig::default()
            }
        }
    }
}

impl std::str::FromStr for AttackKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pgd" => Ok(AttackKind::Pgd),
            "fgsm" => Ok(AttackKind::Fgsm),
            "apgd-ce" | "apgd" => Ok(AttackKind::ApgdCe),
            "apgd-dlr" => Ok(AttackKind::ApgdDlr),
            "apgd-t" => Ok(AttackKind::ApgdT),
            "fab-t" | "fab" => Ok(AttackKind::FabT),
            "square" => Ok(AttackKind::Square),
            "autoattack" | "aa" => Ok(AttackKind::AutoAttack),
            other => Err(format!(
                "unknown attack '{other}': expected pgd, fgsm, apgd-ce, apgd-dlr, apgd-t, fab-t, square or autoattack"
            )),
        }
    }
}

/// PGD settings. Defaults follow the reference library (use-best on, no random start, no
/// restarts) with the README's evaluation step rule `2.5 * eps / steps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackConfig {
    /// Threat model.
    pub constraint: Constraint,
    /// Radius of the ball.
    pub eps: f64,
    /// Step size; `None` = 2.5 * eps / steps.
    pub step_size: Option<f64>,
    /// Number of steps.
    pub steps: usize,
    /// Start from a random point of the ball.
    pub random_start: bool,
    /// Number of runs (>= 1); with more than one, each example keeps the run with the highest
    /// loss (lowest when targeted). Restarts after the first start randomly.
    pub restarts: usize,
    /// Minimise the loss toward the given target labels instead of maximising it.
    pub targeted: bool,
    /// Return each example's iterate with the best loss instead of the last one.
    pub use_best: bool,
    /// Stop moving an example once it is misclassified (reaches its target when targeted).
    pub early_stop: bool,
    /// Objective.
    pub loss: LossKind,
    /// L1 only: fraction of coordinates a step moves.
    pub l1_sparsity: f64,
    /// Square attack only: queries per example (`None`: AutoAttack's 5,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<usize>,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            constraint: Constraint::L2,
            eps: 0.5,
            step_size: None,
            steps: 20,
            random_start: false,
            restarts: 1,
            targeted: false,
            use_best: true,
            early_stop: false,
            loss: LossKind::CrossEntropy,
            l1_sparsity: 0.01,
            queries: None,
        }
    }
}

impl AttackConfig {
    /// The step size in use.
    pub fn step(&self) -> f64 {
        self.step_size
            .unwrap_or(2.5 * self.eps / self.steps.max(1) as f64)
    }

    /// FGSM: one step of size eps (Linf), or `1.25 eps` from a random start for fast
    /// adversarial training (Wong, Rice & Kolter 2020).
    pub fn fgsm(constraint: Constraint, eps: f64, random_start: bool) -> Self {
        Self {
            constraint,
            eps,
            step_size: Some(if random_start { 1.25 * eps } else { eps }),
            steps: 1,
            random_start,
            use_best: false,
            ..Self::default()
        }
    }

    /// For the attacks that take the true labels and choose their own targets, if any
    /// (APGD-T, FAB-T, Square, AutoAttack): an error naming `attack` when `targeted` is set.
    pub(crate) fn require_untargeted(&self, attack: &str) -> Result<()> {
        if self.targeted {
            return Err(Error::Config(format!(
                "{attack} takes the true labels and chooses its own target classes, if any; drop --target"
            )));
        }
        Ok(())
    }

    /// For the attacks defined under L-inf and L2 only (APGD, FAB-T, Square, AutoAttack).
    pub(crate) fn require_linf_or_l2(&self, attack: &str) -> Result<()> {
        if !matches!(self.constraint, Constraint::Linf | Constraint::L2) {
            return Err(Error::Config(format!(
                "{attack} supports --constraint inf and 2, not {}",
                self.constraint
            )));
        }
        Ok(())
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::Config(format!(
                "--eps must be >= 0, got {}",
                self.eps
            )));
        }
        if self.steps == 0 {
            return Err(Error::Config("--steps must be at least 1".into()));
        }
        if !self.step().is_finite() || self.step() < 0.0 {
            return Err(Error::Config(format!(
                "--attack-lr must be >= 0, got {}",
                self.step()
            )));
        }
        if !(self.l1_sparsity > 0.0 && self.l1_sparsity <= 1.0) {
            return Err(Error::Config("L1 sparsity must be in (0, 1]".into()));
        }
        if self.queries == Some(0) {
            return Err(Error::Config("--queries must be at least 1".into()));
        }
        Ok(())
    }
}

/// Loss and input gradient at x: (per-example loss [B], d(sign * mean loss)/dx [B, C, H, W]).
/// `model` must be in inference mode; `x` lives on a plain (non-autodiff) device.
pub fn loss_and_grad(
    model: &Classifier,
    loss: &dyn AttackLoss,
    x: &Tensor<4>,
    target: &Tensor<1, Int>,
    sign: f64,
) -> (Tensor<1>, Tensor<4>) {
    let x_ad = x.clone().autodiff().require_grad();
    let losses = loss.loss(model, x_ad.clone(), target);
    let objective = losses.clone().mean().mul_scalar(sign);
    let grads = objective.backward();
    let grad = x_ad
        .grad(&grads)
        .expect("x requires grad and the loss depends on it");
    (losses.inner(), grad)
}

/// Replaces, per example, `best` by `x` where `loss` improves on `best_loss` (higher, or lower
/// when `sign` < 0).
fn keep_best(
    best: &mut Option<(Tensor<4>, Tensor<1>)>,
    x: &Tensor<4>,
    loss: &Tensor<1>,
    sign: f64,
) {
    *best = Some(match best.take() {
        None => (x.clone(), loss.clone()),
        Some((bx, bl)) => {
            let [b, _, _, _] = x.dims();
            let better = loss
                .clone()
                .mul_scalar(sign)
                .greater(bl.clone().mul_scalar(sign));
            let mask4 = better.clone().reshape([b, 1, 1, 1]).expand(x.dims());
            (
                bx.mask_where(mask4, x.clone()),
                bl.mask_where(better, loss.clone()),
            )
        }
    });
}

/// The output of an attack on one batch.
#[derive(Clone, Debug)]
pub struct AttackOutput {
    /// Adversarial inputs [B, C, H, W] in [0, 1].
    pub adv: Tensor<4>,
    /// Per-example loss at `adv`.
    pub loss: Tensor<1>,
}

/// Projected gradient descent, the loop every attack and construction shares.
///
/// model: any classifier (put in inference mode here); x0: [B, C, H, W] in [0, 1] on a plain
/// device; target: [B] true labels (untargeted) or target labels (targeted). `rng` drives the
/// random starts. Returns adversarial inputs within the eps-ball around x0 and in [0, 1].
pub fn pgd(
    model: &Classifier,
    x0: &Tensor<4>,
    target: &Tensor<1, Int>,
    config: &AttackConfig,
    loss: &dyn AttackLoss,
    rng: &mut ChaCha8Rng,
) -> Result<AttackOutput> {
    config.validate()?;
    let model = model.for_inference();
    let threat = threat_model_in(
        config.constraint,
        config.eps,
        config.l1_sparsity,
        model.takes_images(),
    );
    let sign = if config.targeted { -1.0 } else { 1.0 };
    let mut overall: Option<(Tensor<4>, Tensor<1>)> = None;
    for run in 0..config.restarts.max(1) {
        let random = config.random_start || run > 0;
        let out = pgd_run(
            &model,
            threat.as_ref(),
            x0,
            target,
            config,
            loss,
            random,
            sign,
            rng,
        );
        keep_best(&mut overall, &out.adv, &out.loss, sign);
    }
    let (adv, loss) = overall.expect("at least one run");
    Ok(AttackOutput { adv, loss })
}

#[allow(clippy::too_many_arguments)]
fn pgd_run(
    model: &Classifier,
    threat: &dyn ThreatModel,
    x0: &Tensor<4>,
    target: &Tensor<1, Int>,
    config: &AttackConfig,
    loss: &dyn AttackLoss,
    random_start: bool,
    sign: f64,
    rng: &mut ChaCha8Rng,
) -> AttackOutput {
    let [b, _, _, _] = x0.dims();
    let step_size = config.step();
    let mut x = if random_start {
        threat.random_start(x0, rng)
    } else {
        x0.clone()
    };
    let mut best: Option<(Tensor<4>, Tensor<1>)> = None;
    for _ in 0..config.steps {
        let (losses, grad) = loss_and_grad(model, loss, &x, target, sign);
        if config.use_best {
            keep_best(&mut best, &x, &losses, sign);
        }
        let stepped = threat.project(x.clone() + threat.step(grad).mul_scalar(step_size), x0);
        x = if config.early_stop {
            let done = done_mask(model, &x, target, config.targeted);
            stepped.mask_where(done.reshape([b, 1, 1, 1]).expand(x.dims()), x)
        } else {
            stepped
        };
    }
    let final_loss = loss.loss(model, x.clone(), target);
    if !config.use_best {
        return AttackOutput {
            adv: x,
            loss: final_loss,
        };
    }
    keep_best(&mut best, &x, &final_loss, sign);
    let (adv, loss) = best.expect("kept at least the final iterate");
    AttackOutput { adv, loss }
}

/// Examples that already succeed: misclassified (untargeted) or at their target (targeted).
fn done_mask(
    model: &Classifier,
    x: &Tensor<4>,
    target: &Tensor<1, Int>,
    targeted: bool,
) -> Tensor<1, Bool> {
    let [b, _, _, _] = x.dims();
    let pred = model.forward(x.clone()).argmax(1).reshape([b]);
    let hit = pred.equal(target.clone());
    if targeted { hit } else { hit.bool_not() }
}

/// Which of a chained attack's results [`on_still_correct`] writes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteBack {
    /// Only where the attack misclassifies: a failed run leaves `prev`'s input and loss.
    Fooled,
    /// Every example it attacked: a failed run replaces `prev`'s input and loss (APGD-T reports
    /// its last run's for an example no run fools).
    All,
}

/// Runs `attack` on the examples that `prev` leaves correctly classified (from their clean
/// inputs, with their labels; the closure also gets their indices in the batch, in order) and
/// writes its result back per `write_back`; every other example keeps `prev`'s input and loss.
/// For chaining untargeted attacks, AutoAttack-style, and for APGD-T's runs over target classes.
pub(crate) fn on_still_correct(
    model: &Classifier,
    x0: &Tensor<4>,
    y: &Tensor<1, Int>,
    prev: AttackOutput,
    write_back: WriteBack,
    attack: impl FnOnce(&[usize], &Tensor<4>, &Tensor<1, Int>) -> Result<AttackOutput>,
) -> Result<AttackOutput> {
    let device = x0.device();
    let [b, c, h, w] = x0.dims();
    let per = c * h * w;
    let labels = tensors::label_values(y);
    let pred = tensors::argmax_rows(model.forward(prev.adv.clone()));
    let remaining: Vec<usize> = (0..b).filter(|&i| pred[i] == labels[i]).collect();
    if remaining.is_empty() {
        return Ok(prev);
    }
    let index = tensors::labels(&remaining, &device);
    let out = attack(
        &remaining,
        &x0.clone().select(0, index.clone()),
        &y.clone().select(0, index),
    )?;
    let keep: Vec<bool> = match write_back {
        WriteBack::All => vec![true; remaining.len()],
        WriteBack::Fooled => tensors::argmax_rows(model.forward(out.adv.clone()))
            .iter()
            .zip(&remaining)
            .map(|(&p, &i)| p != labels[i])
            .collect(),
    };
    let (rows, new_loss) = (tensors::to_vec(out.adv), tensors::to_vec(out.loss));
    let mut adv = tensors::to_vec(prev.adv);
    let mut loss = tensors::to_vec(prev.loss);
    for (j, &i) in remaining.iter().enumerate() {
        if keep[j] {
            adv[i * per..(i + 1) * per].copy_from_slice(&rows[j * per..(j + 1) * per]);
            loss[i] = new_loss[j];
        }
    }
    Ok(AttackOutput {
        adv: tensors::images(adv, [b, c, h, w], &device),
        loss: Tensor::from_data(TensorData::new(loss, [b]), &device),
    })
}

/// Runs any attack kind on one batch.
pub fn attack_batch(
    kind: AttackKind,
    model: &Classifier,
    x0: &Tensor<4>,
    target: &Tensor<1, Int>,
    config: &AttackConfig,
    rng: &mut ChaCha8Rng,
) -> Result<AttackOutput> {
    match kind {
        AttackKind::Pgd => pgd(model, x0, target, config, &config.loss, rng),
        AttackKind::Fgsm => {
            let fgsm = AttackConfig {
                targeted: config.targeted,
                restarts: config.restarts,
                ..AttackConfig::fgsm(config.constraint, config.eps, config.random_start)
            };
            pgd(model, x0, target, &fgsm, &fgsm.loss, rng)
        }
        AttackKind::ApgdCe => apgd::apgd(model, x0, target, config, &LossKind::CrossEntropy, rng),
        AttackKind::ApgdDlr if config.targeted => Err(Error::Config(
            "APGD-DLR is untargeted here; use apgd-ce for targeted attacks".into(),
        )),
        AttackKind::ApgdDlr => apgd::apgd(model, x0, target, config, &LossKind::Dlr, rng),
        AttackKind::ApgdT => {
            apgd::apgd_targeted(model, x0, target, config, apgd::APGD_T_TARGETS, None, rng)
        }
        AttackKind::FabT => {
            fab::fab_targeted(model, x0, target, config, fab::FAB_T_TARGETS, None, rng)
        }
        AttackKind::Square => square::square(
            model,
            x0,
            target,
            config,
            config.queries.unwrap_or(square::SQUARE_QUERIES),
            rng,
        ),
        AttackKind::AutoAttack => {
            config.require_untargeted("AutoAttack")?;
            // FAB-T and Square are L-inf / L2 here; refuse before the APGD runs.
            config.require_linf_or_l2("AutoAttack")?;
            let model = model.for_inference();
            let first = apgd::apgd(&model, x0, target, config, &LossKind::CrossEntropy, rng)?;
            let second = apgd::apgd_targeted(
                &model,
                x0,
                target,
                config,
                apgd::APGD_T_TARGETS,
                Some(first),
                rng,
            )?;
            let third = fab::fab_targeted(
                &model,
                x0,
                target,
                config,
                fab::FAB_T_TARGETS,
                Some(second),
                rng,
            )?;
            if !model.takes_images() {
                // Square perturbs image windows; on feature vectors AutoAttack ends here.
                return Ok(third);
            }
            let queries = config.queries.unwrap_or(square::SQUARE_QUERIES);
            on_still_correct(&model, x0, target, third, WriteBack::Fooled, |_, x, y| {
                square::square(&model, x, y, config, queries, rng)
            })
        }
    }
}

/// Robust-evaluation result on a data set.
#[derive(Clone, Debug, Serialize)]
pub struct RobustReport {
    /// Clean accuracy, in [0, 1].
    pub clean_accuracy: f64,
    /// Accuracy on the adversarial examples, in [0, 1].
    pub robust_accuracy: f64,
    /// Fraction of clean-correct examples the attack turned wrong.
    pub attack_success_rate: f64,
    /// Mean perturbation norm (threat model's norm).
    pub mean_perturbation_norm: f64,
    /// Largest perturbation norm.
    pub max_perturbation_norm: f64,
    /// Number of examples.
    pub examples: usize,
}

/// Raw counts of a robust evaluation; the counts of disjoint shards add up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RobustCounts {
    /// Examples attacked.
    pub examples: usize,
    /// Correct on the clean input.
    pub clean: usize,
    /// Correct on the adversarial input.
    pub robust: usize,
    /// Correct when clean, wrong after the attack.
    pub flipped: usize,
    /// Sum of the perturbation norms.
    pub norm_sum: f64,
    /// Largest perturbation norm.
    pub norm_max: f64,
}

impl RobustCounts {
    /// Adds another shard's counts.
    pub fn add(&mut self, other: &RobustCounts) {
        self.examples += other.examples;
        self.clean += other.clean;
        self.robust += other.robust;
        self.flipped += other.flipped;
        self.norm_sum += other.norm_sum;
        self.norm_max = self.norm_max.max(other.norm_max);
    }

    /// Fractions.
    pub fn report(&self) -> RobustReport {
        let frac = |k: usize, of: usize| if of == 0 { 0.0 } else { k as f64 / of as f64 };
        let n = self.examples;
        RobustReport {
            clean_accuracy: frac(self.clean, n),
            robust_accuracy: frac(self.robust, n),
            attack_success_rate: frac(self.flipped, self.clean),
            mean_perturbation_norm: if n == 0 {
                0.0
            } else {
                self.norm_sum / n as f64
            },
            max_perturbation_norm: self.norm_max,
            examples: n,
        }
    }
}

/// Attacks every example of `data` (untargeted, true labels) and reports clean and robust
/// accuracy. The random stream of batch i derives from (seed, i), so results do not depend on
/// how batches are scheduled.
#[allow(clippy::too_many_arguments)]
pub fn robust_eval(
    model: &Classifier,
    data: &Dataset,
    kind: AttackKind,
    config: &AttackConfig,
    batch_size: usize,
    seed: u64,
    device: &Device,
    progress: impl FnMut(usize, usize),
) -> Result<RobustReport> {
    let all = 0..data.len().div_ceil(batch_size.max(1));
    let counts = robust_eval_batches(
        model, data, kind, config, batch_size, seed, all, device, progress,
    )?;
    Ok(counts.report())
}

/// Batch `i` of `data` (the examples from `i * batch_size`, at most `batch_size`) on `device`:
/// images [b, C, H, W] in [0, 1], their labels, and the batch's random stream, the same in
/// whichever process, shard or order the batch is attacked.
pub(crate) fn nth_batch<'a>(
    data: &'a Dataset,
    i: usize,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> (Tensor<4>, &'a [usize], ChaCha8Rng) {
    let (c, h, w) = (data.channels, data.height, data.width);
    let per = data.image_len();
    let start = (i * batch_size).min(data.len());
    let end = (start + batch_size).min(data.len());
    let x = tensors::images(
        data.images[start * per..end * per].to_vec(),
        [end - start, c, h, w],
        device,
    );
    let rng = ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (x, &data.labels[start..end], rng)
}

/// The batches `[K * B / N, (K + 1) * B / N)` of shard K of N, for `B` batches.
pub fn shard_batches(batches: usize, index: usize, count: usize) -> std::ops::Range<usize> {
    (index * batches / count.max(1))..((index + 1) * batches / count.max(1))
}

/// [`robust_eval`] restricted to the given batches (of `batch_size` examples, numbered from the
/// start of `data`), as raw counts; each batch's random stream is the same as in the whole run,
/// so shards add up to the unsharded counts.
#[allow(clippy::too_many_arguments)]
pub fn robust_eval_batches(
    model: &Classifier,
    data: &Dataset,
    kind: AttackKind,
    config: &AttackConfig,
    batch_size: usize,
    seed: u64,
    batches: std::ops::Range<usize>,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<RobustCounts> {
    let device = device.clone().without_autodiff();
    let model = model.for_inference();
    let threat = threat_model(config.constraint, config.eps, config.l1_sparsity);
    let n = data.len();
    let batch_size = batch_size.max(1);
    let mut counts = RobustCounts::default();
    let total = batches
        .clone()
        .map(|i| (n.min((i + 1) * batch_size)).saturating_sub(i * batch_size))
        .sum();
    for i in batches {
        let start = i * batch_size;
        if start >= n {
            break;
        }
        let end = (start + batch_size).min(n);
        let (x0, labels, mut rng) = nth_batch(data, i, batch_size, seed, &device);
        let y = tensors::labels(labels, &device);
        let out = attack_batch(kind, &model, &x0, &y, config, &mut rng)?;
        let clean_pred = tensors::argmax_rows(model.forward(x0.clone()));
        let adv_pred = tensors::argmax_rows(model.forward(out.adv.clone()));
        for ((&p, &q), &l) in clean_pred.iter().zip(&adv_pred).zip(labels) {
            counts.clean += usize::from(p == l);
            counts.robust += usize::from(q == l);
            counts.flipped += usize::from(p == l && q != l);
        }
        for v in tensors::to_vec(threat.norm(out.adv - x0)) {
            counts.norm_sum += v as f64;
            counts.norm_max = counts.norm_max.max(v as f64);
        }
        counts.examples += end - start;
        progress(counts.examples, total);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests;
