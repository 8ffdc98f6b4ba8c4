//! One file per subcommand; this file dispatches and holds the data-loading step they share.

mod attack;
mod bench;
mod construct;
mod eval;
mod interop;
mod invert;
mod reproduce;
mod synthesize;
mod theory;
mod train;
mod transfer;
mod visualize;

use crate::cli::{AttackArgs, Cli, Command, DataArgs};
use anyhow::{Context, Result, bail};
use robustness::attack::AttackConfig;
use robustness::attack::threat::Constraint;
use robustness::construct::Source;
use robustness::data::{self, Dataset, DatasetKind, Split, SyntheticConfig};
use std::path::Path;

/// Runs the parsed command; `options` are the options it was given explicitly, as a config
/// file (`train` records them in its run folder).
pub fn run(cli: Cli, options: &toml::Table) -> Result<()> {
    // Several devices serve data-parallel training only; every other command takes one.
    let devices = robustness::device::select_many(&cli.device)?;
    let device = match (devices.as_slice(), &cli.command) {
        ([one], _) | ([one, ..], Command::Train(_)) => one.clone(),
        _ => bail!(
            "--device {}: several devices are used only by `train` (data-parallel); for constructions and evaluations run one process per device with --shard K/N",
            cli.device
        ),
    };
    match cli.command {
        Command::Train(args) => train::run(args, &devices, options),
        Command::Eval(args) => eval::run(args, &device),
        Command::Bench(args) => bench::run(args, &device),
        Command::Theory(args) => theory::run(args),
        Command::Attack(args) => attack::run(args, &device),
        Command::Construct(args) => construct::run(args, &device),
        Command::Merge(args) => construct::merge(args),
        Command::MergeEval(args) => eval::merge(args),
        Command::Reproduce(args) => reproduce::run(args, &device),
        Command::Transfer(args) => transfer::run(args, &device),
        Command::Import(args) => interop::import(args, &device),
        Command::Export(args) => interop::export(args, &device),
        Command::ExportDataset(args) => interop::export_dataset(args),
        Command::Predict(args) => interop::predict(args, &device),
        Command::Synthesize(args) => synthesize::run(args, &device),
        Command::Visualize(args) => visualize::run(args, &device),
        Command::Invert(args) => invert::run(args, &device),
    }
}

/// The synthetic-data settings from the flags (defaults where absent).
pub fn synthetic_config(args: &DataArgs) -> SyntheticConfig {
    let mut s = SyntheticConfig::default();
    if let Some(d) = args.d {
        s.d = d;
        s.eta = SyntheticConfig::default_eta(d);
    }
    if let Some(p) = args.p {
        s.p = p;
    }
    if let Some(eta) = args.eta {
        s.eta = eta;
    }
    if let Some(n) = args.n_train {
        s.n_train = n;
    }
    if let Some(n) = args.n_test {
        s.n_test = n;
    }
    s
}

/// Loads the data set named by the flags, with its class subset applied. Returns the split and
/// the selected class names (`None` = all classes).
pub fn load_data(args: &DataArgs, seed: u64) -> Result<(DatasetKind, Split, Option<Vec<String>>)> {
    let kind: DatasetKind = args.dataset.parse()?;
    let dir = data::resolve_data_dir(args.data.as_deref());
    if kind.needs_data_dir() && dir.is_none() {
        bail!(
            "no data folder for {kind}: pass --data PATH, set ROBUSTNESS_DATA, or place the files in ../shared/data"
        );
    }
    let split = data::load(kind, dir.as_deref(), seed, &synthetic_config(args))
        .with_context(|| format!("loading {kind}"))?;
    match &args.classes {
        None => Ok((kind, split, None)),
        Some(spec) => {
            let classes = data::parse_classes(spec, &split.train.class_names)?;
            let names = classes
                .iter()
                .map(|&c| split.train.class_names[c].clone())
                .collect();
            let split = Split {
                train: split.train.select_classes(&classes),
                test: split.test.select_classes(&classes),
            };
            Ok((kind, split, Some(names)))
        }
    }
}

/// The original test set of the data set a constructed set was built from (same split, same
/// classes), checked against the constructed images' shape.
pub fn load_source_test(source: &Source, data_dir: Option<&Path>) -> Result<Dataset> {
    let kind = source.dataset;
    let dir = data::resolve_data_dir(data_dir);
    if kind.needs_data_dir() && dir.is_none() {
        bail!(
            "no data folder for {kind} (the test set of this constructed data set): pass --data PATH, set ROBUSTNESS_DATA, or place the files in ../shared/data"
        );
    }
    let synthetic = source.synthetic.clone().unwrap_or_default();
    let split = data::load(kind, dir.as_deref(), source.split_seed, &synthetic)
        .with_context(|| format!("loading the test set of {kind}"))?;
    let test = match &source.classes {
        None => split.test,
        Some(names) => {
            let classes = data::parse_classes(&names.join(","), &split.test.class_names)?;
            split.test.select_classes(&classes)
        }
    };
    let shape = |d: &Dataset| [d.channels, d.height, d.width];
    if shape(&test) != source.image_shape() || test.class_names != source.class_names {
        bail!(
            "the test set of {} has images {:?} and classes {:?}, but the constructed set has {:?} and {:?}",
            source.describe(),
            shape(&test),
            test.class_names,
            source.image_shape(),
            source.class_names
        );
    }
    Ok(test)
}

/// Applies the step-rule flags several commands share to `attack`; unset flags keep its values.
pub fn override_steps(
    attack: &mut AttackConfig,
    eps: Option<f64>,
    step: Option<f64>,
    steps: Option<usize>,
) {
    if let Some(eps) = eps {
        attack.eps = eps;
    }
    if let Some(step) = step {
        attack.step_size = Some(step);
    }
    if let Some(steps) = steps {
        attack.steps = steps;
    }
}

/// The library's start for `--start image|noise`.
pub fn start_of(arg: crate::cli::StartArg) -> robustness::construct::Start {
    match arg {
        crate::cli::StartArg::Image => robustness::construct::Start::Image,
        crate::cli::StartArg::Noise => robustness::construct::Start::Noise,
    }
}

/// Prints a value as one JSON object on stdout.
/// Members of an ensemble (`construct --model`, `eval --checkpoint`, flag `flag`) on the
/// embedded digits must share the first member's training seed, which picks the split.
pub fn same_split(
    flag: &str,
    digits: bool,
    path: &Path,
    seed: u64,
    first: &Path,
    split_seed: u64,
) -> Result<()> {
    if digits && seed != split_seed {
        anyhow::bail!(
            "{flag} {} was trained with seed {seed} and {} with seed {split_seed}: on the embedded digits the seed picks the train/test split, so the ensemble's members would have trained on each other's test images",
            path.display(),
            first.display()
        );
    }
    Ok(())
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    outln!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// The attack settings from the flags, for one radius. `base` supplies what the flags leave
/// open (the per-dataset adversarial-training table, or the evaluation defaults).
pub fn attack_config(args: &AttackArgs, eps: f64, base: AttackConfig) -> Result<AttackConfig> {
    let constraint: Constraint = args.constraint.parse().map_err(anyhow::Error::msg)?;
    let steps = args.steps.unwrap_or(base.steps);
    let config = AttackConfig {
        constraint,
        eps,
        step_size: args.attack_lr.or(base.step_size),
        steps,
        random_start: args.random_start || base.random_start,
        restarts: args.restarts.max(1),
        targeted: false,
        use_best: !args.no_use_best && base.use_best,
        early_stop: args.early_stop,
        loss: args.loss.parse().map_err(anyhow::Error::msg)?,
        l1_sparsity: args.l1_sparsity,
        queries: args.queries,
    };
    config.validate()?;
    Ok(config)
}

/// The constraint named by the flags.
pub fn constraint_of(args: &AttackArgs) -> Result<Constraint> {
    args.constraint.parse().map_err(anyhow::Error::msg)
}
