//! Command-line arguments (clap derive): one struct per subcommand. They are converted once into
//! the library's configs in `commands/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Adversarial robustness research: train, evaluate and benchmark image classifiers.
#[derive(Parser, Debug)]
#[command(name = "robustness", version, about)]
pub struct Cli {
    /// Compute device: cpu, vulkan[:I] (needs --features vulkan), cuda[:I] (needs --features
    /// cuda). `train` also takes a comma-separated list (cuda:0,cuda:1): data-parallel training.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// TOML file of options, merged in before parsing; flags on the command line win. Keys are
    /// long option names (`epochs = 12`, `classes = "cat,dog"`, `adv-train = true`, `eps =
    /// [0.25, 0.5]`); top-level keys serve every command that has the option, a `[train]` (or
    /// `[eval]`, ...) table that command only.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a classifier; writes RUN_DIR/{config.json, command.toml, metrics.jsonl, latest,
    /// best}.
    Train(TrainArgs),
    /// Evaluate a checkpoint: accuracy, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// Time the train step (forward + backward + SGD step) of an architecture.
    Bench(BenchArgs),
    /// Check the paper's Gaussian-model theory numerically and draw its Figure 4.
    Theory(TheoryArgs),
    /// Attack some test images of a checkpoint; writes a PNG grid of originals, perturbations
    /// and adversarial examples with predicted labels.
    Attack(AttackCmdArgs),
    /// Build a data set of the paper: det / rand (each training image pushed toward a target
    /// class by a small targeted attack on a standard model, relabelled with it) or robust /
    /// nonrobust (each image re-synthesised from a model's representation). Resumable; shardable.
    Construct(ConstructArgs),
    /// Join the shard folders of one `construct --shard K/N` run into one data set.
    Merge(MergeArgs),
    /// Join the parts of one `eval --attack ... --shard K/N` evaluation.
    MergeEval(MergeEvalArgs),
    /// Transferability (paper Fig. 3): adversarial examples of a source model tried on target
    /// models; with --det-models, against each architecture's accuracy when trained on D_det.
    Transfer(TransferArgs),
    /// Run an experiment of the paper end to end (train, construct, retrain, evaluate) and
    /// write report.md, results.json and figures. Experiments: digits, catdog, cifar10.
    Reproduce(ReproduceArgs),
    /// Convert a PyTorch checkpoint (the reference library's, or a plain state dict of one of
    /// our architectures) into a `robustness` checkpoint folder.
    Import(ImportArgs),
    /// Write a checkpoint's weights as SafeTensors under PyTorch module names (loadable with
    /// scripts/interop/robustness_models.py).
    Export(ExportArgs),
    /// Write a constructed data set in the authors' released layout (CIFAR_ims / CIFAR_lab,
    /// torch.save'd lists of tensors) for use from PyTorch.
    ExportDataset(ExportDatasetArgs),
    /// Logits of a checkpoint on images from a torch.save'd tensor (or list of tensors)
    /// [N, C, H, W] in [0, 1]; written as a torch.save'd list holding one [N, classes] tensor.
    Predict(PredictArgs),
    /// Class-conditional image synthesis (Santurkar et al. 2019): seeds from a Gaussian fitted
    /// to each class's training images, pushed toward the class by targeted L2 PGD; writes
    /// grid.png, seeds.png, images.safetensors and synthesis.json.
    Synthesize(SynthesizeArgs),
    /// Feature visualisation: maximise units of the representation by L2 PGD from test images
    /// (or noise); writes grid.png, images.safetensors and visualize.json.
    Visualize(VisualizeArgs),
    /// Representation inversion: from noise (or another image), match the representation of
    /// chosen images with the D_R construction's loop; writes grid.png, images.safetensors and
    /// invert.json.
    Invert(InvertArgs),
}

/// Attack settings shared by `eval`, `attack` and `train --adv-train`.
#[derive(Args, Debug, Clone)]
pub struct AttackArgs {
    /// Threat model: inf, 2, 1 or unconstrained.
    #[arg(long, default_value = "2")]
    pub constraint: String,
    /// Radius (or comma-separated radii for a robustness curve in `eval`).
    #[arg(long, value_delimiter = ',')]
    pub eps: Vec<f64>,
    /// PGD steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Step size (default 2.5 * eps / steps; adversarial training: the per-dataset table).
    #[arg(long)]
    pub attack_lr: Option<f64>,
    /// Runs per example; each example keeps the run with the highest loss.
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// Start from a random point of the eps-ball.
    #[arg(long)]
    pub random_start: bool,
    /// Return the last iterate instead of the best one.
    #[arg(long)]
    pub no_use_best: bool,
    /// Stop moving an example once it is misclassified.
    #[arg(long)]
    pub early_stop: bool,
    /// Attack loss: ce, cw or dlr.
    #[arg(long, default_value = "ce")]
    pub loss: String,
    /// L1 steps: fraction of coordinates moved per step.
    #[arg(long, default_value_t = 0.01)]
    pub l1_sparsity: f64,
    /// Square attack (and AutoAttack's Square stage): queries per example (default 5000).
    #[arg(long)]
    pub queries: Option<usize>,
}

/// Where the data comes from.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set: digits (embedded, no download), mnist, cifar10, synthetic, folder:PATH (an
    /// image folder: PATH/train/<class>/*.png|jpg..., PATH/test/<class>/... or val/, valid/);
    /// for `train` also constructed:DIR (a set written by `robustness construct`, tested on its
    /// source's test set).
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Image folders (folder:PATH): resize every image's shorter side to N and centre-crop it to
    /// NxN (torchvision's Resize(N) + CenterCrop(N)); default: the images' own size, which they
    /// must share.
    #[arg(long, value_name = "N")]
    pub image_size: Option<usize>,
    /// Image folders, with --image-size N: resize the shorter side to R (>= N) before the NxN
    /// centre crop (torchvision's Resize(R) + CenterCrop(N); ImageNet's test transform is
    /// --resize 256 --image-size 224).
    #[arg(long, value_name = "R")]
    pub resize: Option<usize>,
    /// Folder with the data files (else $ROBUSTNESS_DATA, else ../shared/data); for CIFAR-10 also
    /// the path of cifar-10-binary.tar.gz.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Class subset by names or indices, e.g. `cat,dog` or `3,5` (relabelled 0..k in this order).
    #[arg(long)]
    pub classes: Option<String>,
    /// Synthetic data: probability that the robust feature agrees with the label.
    #[arg(long)]
    pub p: Option<f64>,
    /// Synthetic data: number of non-robust features.
    #[arg(long)]
    pub d: Option<usize>,
    /// Synthetic data: mean shift eta of each non-robust feature.
    #[arg(long)]
    pub eta: Option<f64>,
    /// Synthetic data: training examples.
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Synthetic data: test examples.
    #[arg(long)]
    pub n_test: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScheduleArg {
    Step,
    Cosine,
    Constant,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Adam,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Architecture: mlp, cnn, resnet18, resnet50, vgg11 (default: per data set).
    #[arg(long)]
    pub arch: Option<String>,
    /// Epochs (default: per data set).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed for initialisation, shuffling, augmentation and splits.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue from RUN_DIR/latest.
    #[arg(long)]
    pub resume: bool,
    /// Batch size (default: per data set).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate (default: per data set).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum (SGD) or beta1 (Adam).
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule (default: per data set).
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Step schedule: epochs between drops (x0.1); implies --schedule step.
    #[arg(long)]
    pub step_lr: Option<usize>,
    /// Step schedule: multiplier at each drop.
    #[arg(long, default_value_t = 0.1)]
    pub step_gamma: f64,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long)]
    pub warmup_epochs: Option<usize>,
    /// Optimizer.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Turn off training-time augmentation (random crop + flip).
    #[arg(long)]
    pub no_augment: bool,
    /// Turn on training-time augmentation where the defaults leave it off (e.g. D_det, whose
    /// Table 3 recipe has none), or choose its recipe: `--augment` alone is crop-flip (random
    /// crop with padding 4 + horizontal flip); `--augment reference` is the reference library's
    /// CIFAR recipe (crop + flip, ColorJitter(.25, .25, .25), RandomRotation(2)); `--augment
    /// cutout` is crop + flip + Cutout (one zeroed square of half the image's side).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "crop-flip", conflicts_with = "no_augment")]
    pub augment: Option<AugmentArg>,
    /// PGD adversarial training (Madry et al. 2018) with the attack flags below.
    #[arg(long)]
    pub adv_train: bool,
    /// Adversarial training method: pgd, or fgsm-rs (FGSM from a random start, step 1.25 eps).
    #[arg(long, default_value = "pgd")]
    pub adv_method: String,
    /// Also measure robust test accuracy (same attack) after every epoch.
    #[arg(long)]
    pub adv_eval: bool,
    /// Number of test images for --adv-eval, spread evenly over the test set (default 1000).
    #[arg(long, default_value_t = 1000)]
    pub adv_eval_limit: usize,
    /// Train on only N training images, spread evenly over the training set (every class even
    /// when the files are sorted by class); recorded in the run's config.json. Quick runs, and
    /// learning curves over the training-set size.
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --limit: the first N images instead, e.g. the 10,000 that `reproduce cifar10
    /// --scale quick` trains its models on.
    #[arg(long, requires = "limit")]
    pub limit_first: bool,
    /// Keep an exponential moving average of the weights with this decay per step (e.g.
    /// 0.999; warmed up as min(decay, (1 + t) / (10 + t))): the average is what the run tests
    /// and saves as its model; metrics also show the optimizer's own weights' accuracy.
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f64>,
    /// Label smoothing of the training loss: the target puts 1 - S on the label and S spread
    /// evenly over all classes (e.g. 0.1; PyTorch's `label_smoothing`).
    #[arg(long, value_name = "S")]
    pub label_smoothing: Option<f64>,
    /// Mixup (Zhang et al. 2018): every batch is blended with a shuffled copy of itself,
    /// lambda * x + (1 - lambda) * x', loss lambda * L(y) + (1 - lambda) * L(y'), one lambda ~
    /// Beta(ALPHA, ALPHA) per batch (e.g. 0.2 or 1). Training accuracy counts the first label.
    #[arg(long, value_name = "ALPHA")]
    pub mixup: Option<f64>,
    #[command(flatten)]
    pub attack: AttackArgs,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint folder (RUN_DIR/best, RUN_DIR/latest or a checkpoints/epoch-N folder).
    /// Repeat it to evaluate an ensemble: `--checkpoint A --checkpoint B` predicts with the
    /// mean of their logits, and attacks (`--attack`) attack that mean.
    #[arg(long, required = true)]
    pub checkpoint: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of the data split (digits, synthetic); default: the checkpoint's training seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluation batch size (default: 256, fewer for images larger than 32x32, at least 8:
    /// 8 at 224x224, where an attack's gradients hold ~0.1 GB per image for a ResNet-50).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Attack to evaluate against: pgd, fgsm, apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack (APGD-CE, APGD-T, FAB-T, then Square; AutoAttack's attacks default to 100 steps from a random start and 5000 Square queries). None: clean accuracy only.
    #[arg(long)]
    pub attack: Option<String>,
    #[command(flatten)]
    pub attack_args: AttackArgs,
    /// Evaluate on N test images spread evenly over the test set (every len/N-th).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate on a set written by `robustness construct` (its images and labels) instead of
    /// the test set: e.g. a D_R model on its robust training set and on a robust test set
    /// (`construct robust --from test`), the paper's Table 8. --limit applies to it.
    #[arg(long)]
    pub constructed: Option<PathBuf>,
    /// Folder for the robustness-curve table and plot (with several --eps).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --attack: evaluate only shard K of N (0-based; a contiguous block of batches) and
    /// write OUT/eval-shard-K-of-N.json; join the parts with `robustness merge-eval`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MergeEvalArgs {
    /// The parts written by `eval --attack ... --shard K/N --out DIR`.
    #[arg(required = true)]
    pub parts: Vec<PathBuf>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AttackCmdArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Test-set indices, e.g. 0..16 or 3,7,9.
    #[arg(long, default_value = "0..16")]
    pub indices: String,
    /// Attack: pgd, fgsm, apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack.
    #[arg(long, default_value = "pgd")]
    pub attack: String,
    #[command(flatten)]
    pub attack_args: AttackArgs,
    /// Targeted attack toward this class (name or index) instead of untargeted.
    #[arg(long)]
    pub target: Option<String>,
    /// Seed of the data split and random starts (default: the checkpoint's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder (grid.png, attack.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadArg {
    Train,
    Pgd,
    Invert,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Architecture.
    #[arg(long, default_value = "cnn")]
    pub arch: String,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Input shape as CxHxW (default: CIFAR-10's 3x32x32).
    #[arg(long, default_value = "3x32x32")]
    pub shape: String,
    /// Number of classes.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// What to time: train (forward + backward + SGD update), pgd (one L2 PGD step: input
    /// gradient, step, projection) or invert (one representation-inversion step).
    #[arg(long, value_enum, default_value = "train")]
    pub workload: WorkloadArg,
    /// Also time the phases of a train step: inference forward, forward + backward, full step.
    #[arg(long)]
    pub phases: bool,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TheoryArgs {
    /// Dimension of the Gaussian model.
    #[arg(long, default_value_t = 6)]
    pub dim: usize,
    /// Comma-separated adversary budgets eps.
    #[arg(long, default_value = "0.1,0.5,1,3", value_delimiter = ',')]
    pub eps: Vec<f64>,
    /// Comma-separated sample sizes for the learning-from-samples table.
    #[arg(long, default_value = "100,1000,10000,100000", value_delimiter = ',')]
    pub samples: Vec<usize>,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for figure4.png and report.md.
    #[arg(long, default_value = "theory")]
    pub out: PathBuf,
    /// Print one JSON object with every check on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ConstructArgs {
    /// det (D_det: t = y+1 mod C), rand (D_rand: t uniform), robust (D_R) or nonrobust (D_NR).
    pub kind: String,
    /// The model checkpoint (standard for det/rand/nonrobust, adversarially trained for robust).
    /// Repeat it for an ensemble: `--model A --model B` attacks the mean of their logits
    /// (inverts their representations side by side), which tends to give perturbations that
    /// transfer better than one model's.
    #[arg(long, required = true)]
    pub model: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output folder (meta.json + chunks/); rerunning the same command resumes it.
    #[arg(long)]
    pub out: PathBuf,
    /// Which images to build from: train (the paper's training sets) or test (an evaluation
    /// set such as the paper's robust test set, Table 8: `eval --constructed DIR`; refused by
    /// `train`).
    #[arg(long, value_enum, default_value = "train")]
    pub from: SplitArg,
    /// Threat model of det/rand: 2 (the paper) or inf.
    #[arg(long, default_value = "2")]
    pub constraint: String,
    /// Radius of det/rand (default: the paper's 0.5; 3 on the 8x8 digits).
    #[arg(long)]
    pub eps: Option<f64>,
    /// Step size (default: the paper's 0.1; 0.6 for det/rand on the 8x8 digits).
    #[arg(long)]
    pub step_size: Option<f64>,
    /// Steps (default: the paper's 100 for det/rand, 1000 for robust/nonrobust).
    #[arg(long)]
    pub steps: Option<usize>,
    /// robust/nonrobust: start from another training image or from Gaussian noise.
    #[arg(long, value_enum, default_value = "image")]
    pub start: StartArg,
    /// robust/nonrobust: divide the representation distance by ||g(x)||_2 (the reference
    /// library's inversion example).
    #[arg(long)]
    pub normalized_loss: bool,
    /// Return the last iterate instead of the one with the best objective.
    #[arg(long)]
    pub no_use_best: bool,
    /// Only N training images, spread evenly over the training set (quick runs; every class
    /// even when the files are sorted by class).
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --limit: the first N images instead, e.g. the 10,000 that `reproduce cifar10
    /// --scale quick` trains its models on.
    #[arg(long, requires = "limit")]
    pub limit_first: bool,
    /// Examples built from each image (default 1, the paper's): K copies, each with its own
    /// target (rand), start image (robust/nonrobust) and random start; the set has K times as
    /// many examples and its first copy is the one-copy set.
    #[arg(long, default_value_t = 1)]
    pub copies: usize,
    /// Examples attacked together (default: 250, fewer for images larger than 32x32, as
    /// `eval`'s batch: 8 at 224x224).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Examples per chunk file (the unit of resuming and sharding).
    #[arg(long, default_value_t = 1000)]
    pub chunk_size: usize,
    /// Seed of the targets (rand), start images (robust) and random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Build only shard K of N (0-based; a contiguous block of chunks); join with `merge`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AugmentArg {
    CropFlip,
    Reference,
    Cutout,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum StartArg {
    Image,
    Noise,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shard folders (each written by `construct --shard K/N`).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Output folder of the joined data set.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Scale {
    /// Fewer epochs and attack steps: checks the pipeline in minutes.
    Quick,
    /// The settings behind the recorded figures.
    Full,
}

impl Scale {
    pub fn as_str(self) -> &'static str {
        match self {
            Scale::Quick => "quick",
            Scale::Full => "full",
        }
    }
}

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// digits (embedded data, a minute), toy (the synthetic feature model), catdog or cats-dogs
    /// (CIFAR-10 cats vs dogs), cifar10.
    #[arg(default_value = "digits")]
    pub experiment: String,
    /// quick (CPU-sized, the default) or full (the paper's settings; for cifar10 a GPU).
    #[arg(long, value_enum, default_value = "quick")]
    pub scale: Scale,
    /// Folder with the data files (else $ROBUSTNESS_DATA, else ../shared/data).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder (default runs/reproduce-EXPERIMENT-SCALE); rerunning continues it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Reuse this standard model instead of training one.
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Reuse this adversarially trained model (for D_R) instead of training one.
    #[arg(long)]
    pub robust_source: Option<PathBuf>,
    /// Constructed sets to build and train on: det, rand (non-robust features suffice), robust,
    /// nonrobust (robust features; adds the robust model and robust-accuracy evaluations).
    /// Default: det,rand for catdog (adversarial training of the small CNN collapses on cats vs
    /// dogs, so D_R has nothing to invert), all four otherwise.
    #[arg(long)]
    pub sets: Option<String>,
    /// Skip the control row of the robust-features experiment: standard models trained for
    /// fewer epochs (1, 2, 3, 4, 5, 7, ...) until one reaches the D_R model's clean accuracy,
    /// whose robust accuracy is the fair comparison for D_R's.
    #[arg(long)]
    pub no_matched: bool,
    /// Seed of the trainings.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The model the adversarial examples are made on.
    #[arg(long)]
    pub source: PathBuf,
    /// Standard models of other architectures (checkpoints, comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub targets: Vec<PathBuf>,
    /// Per target, in the same order: a model of the same architecture trained on D_det built
    /// from the source; its accuracy on the original test set is the figure's x axis.
    #[arg(long, value_delimiter = ',')]
    pub det_models: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Attack on the source: pgd, fgsm, apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack.
    #[arg(long, default_value = "pgd")]
    pub attack: String,
    #[command(flatten)]
    pub attack_args: AttackArgs,
    /// Only N test images, spread evenly over the test set (every len/N-th).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Seed of the attack's random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for transfer.md, transfer.json and transfer.png.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The PyTorch file (.pt / .pth written by torch.save; a .safetensors file with our PyTorch
    /// names is also read with --from pytorch).
    pub file: PathBuf,
    /// What the file is: madry (a checkpoint of MadryLab's `robustness`: a dict whose `model`
    /// entry has `module.model.*` and `module.normalizer.*` keys) or pytorch (a plain state dict
    /// with the names of scripts/interop/robustness_models.py).
    #[arg(long = "from", default_value = "madry")]
    pub from: String,
    /// Architecture of the weights: linear, mlp, cnn, resnet18, resnet50, vgg11.
    #[arg(long)]
    pub arch: String,
    /// Data set the model is for (input shape, class names, default normalisation): cifar10,
    /// mnist, digits or folder:PATH (an image folder: its training classes and image size; no
    /// fixed normalisation).
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,
    /// With folder:PATH: the side the model's inputs have (`--image-size` of train/eval).
    #[arg(long, value_name = "N")]
    pub image_size: Option<usize>,
    /// Number of output classes, when not the data set's (e.g. 2 for a cats-vs-dogs model).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Normalisation mean per channel (comma-separated), when the file carries no normaliser and
    /// the data set has no fixed one.
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Normalisation std per channel (comma-separated); see --mean.
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Output checkpoint folder (use it wherever a --checkpoint is asked for).
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint folder (RUN_DIR/best, RUN_DIR/latest, an imported folder, ...).
    pub checkpoint: PathBuf,
    /// Output .safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the tensor names and shapes on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportDatasetArgs {
    /// A data set folder written by `robustness construct` (or `merge`).
    pub dataset: PathBuf,
    /// Output folder; it gets CIFAR_ims and CIFAR_lab. Name it as the authors did
    /// (d_robust_CIFAR, d_non_robust_CIFAR, drand_CIFAR, ddet_CIFAR) to keep the kind visible.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per list item.
    #[arg(long, default_value_t = 1000)]
    pub chunk: usize,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images: a torch.save'd tensor or list of tensors [N, C, H, W] in [0, 1].
    #[arg(long)]
    pub images: PathBuf,
    /// Output file: a torch.save'd list with one float32 tensor [N, classes] of logits.
    #[arg(long)]
    pub out: PathBuf,
    /// Batch size.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

#[derive(Args, Debug)]
pub struct SynthesizeArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Class(es) to generate: a name (e.g. dog), an index, a comma-separated list, or `all`.
    #[arg(long)]
    pub class: String,
    /// Images per class.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the seed-distribution draws (the data split is the checkpoint's).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// L2 radius around the seed (default: 30, the authors' CIFAR setting; 40, their ImageNet
    /// one, for images of 128 pixels and more).
    #[arg(long)]
    pub eps: Option<f64>,
    /// Step size (default: 0.5, the authors' CIFAR setting; 1 from 128 pixels on).
    #[arg(long)]
    pub step: Option<f64>,
    /// PGD steps (default: 60, the authors' CIFAR and ImageNet setting).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Block size of the seed distribution's downsampling (default: the smallest that leaves
    /// at most 9,408 values per image: 1 for CIFAR, 4 at 224x224 as the authors).
    #[arg(long)]
    pub grain: Option<usize>,
    /// Images optimised together.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Pixel zoom of the PNG grids (default: about 128 pixels per image side).
    #[arg(long)]
    pub zoom: Option<usize>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VisualizeArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Representation unit(s) to maximise (comma-separated), each < the feature width.
    #[arg(long, value_delimiter = ',', required = true)]
    pub feature: Vec<usize>,
    /// Images per unit: the first N test images (or N noise images); see --indices.
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// Test images to start from instead of the first N, e.g. 0,1000,2000 or 0..16 (with
    /// --start noise they seed the noise).
    #[arg(long)]
    pub indices: Option<String>,
    /// Start from the test images or from grey noise.
    #[arg(long, value_enum, default_value = "image")]
    pub start: StartArg,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the noise starts (the data split is the checkpoint's).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// L2 radius around the start (default 40).
    #[arg(long)]
    pub eps: Option<f64>,
    /// Step size (default 1).
    #[arg(long)]
    pub step: Option<f64>,
    /// PGD steps (default 200).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Images optimised together.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Pixel zoom of the PNG grid (default: about 128 pixels per image side).
    #[arg(long)]
    pub zoom: Option<usize>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum SplitArg {
    Train,
    Test,
}

#[derive(Args, Debug)]
pub struct InvertArgs {
    /// Checkpoint folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Which split of the checkpoint's data set the images come from.
    #[arg(long, value_enum, default_value = "test")]
    pub from: SplitArg,
    /// Indices of the images to invert, e.g. 0..8 or 3,7,9.
    #[arg(long, default_value = "0..8")]
    pub indices: String,
    /// Start from grey noise or from another image of the same split.
    #[arg(long, value_enum, default_value = "noise")]
    pub start: StartArg,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the starts (the data split is the checkpoint's).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Step size (default: the D_R construction's 0.1).
    #[arg(long)]
    pub step: Option<f64>,
    /// Steps (default: the D_R construction's 1000).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Divide the representation distance by ||g(x)||_2.
    #[arg(long)]
    pub normalized_loss: bool,
    /// Images optimised together.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Pixel zoom of the PNG grid (default: about 128 pixels per image side).
    #[arg(long)]
    pub zoom: Option<usize>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    pub json: bool,
}
