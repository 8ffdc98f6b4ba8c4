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
use robustness::data::{self, Dataset, DatasetKind, FolderSource, Split, SyntheticConfig};
use std::path::{Path, PathBuf};

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

/// The data set named by the flags: its kind and, for an image folder (`folder:PATH`, or
/// `folder` with `--data PATH`), the folder with `--image-size`.
pub fn dataset_of(args: &DataArgs) -> Result<(DatasetKind, Option<FolderSource>)> {
    let spec = args.dataset.trim();
    let folder_root = match spec.split_once(':') {
        Some((prefix, path)) if prefix.eq_ignore_ascii_case("folder") => {
            if path.is_empty() {
                bail!("--dataset folder: needs the folder's path: --dataset folder:PATH");
            }
            if args.data.is_some() {
                bail!(
                    "--data does not apply to --dataset folder:PATH (the path names the image folder)"
                );
            }
            Some(PathBuf::from(path))
        }
        _ => None,
    };
    let kind = match folder_root {
        Some(_) => DatasetKind::Folder,
        None => spec.parse()?,
    };
    let folder = match (kind, folder_root) {
        (DatasetKind::Folder, Some(root)) => Some(root),
        (DatasetKind::Folder, None) => Some(args.data.clone().ok_or(data::DataError::NoFolder)?),
        _ => None,
    }
    .map(|root| FolderSource {
        image_size: args.image_size,
        resize: args.resize,
        ..FolderSource::new(root)
    });
    if folder.is_none() && args.image_size.is_some() {
        bail!("--image-size applies to image folders (--dataset folder:PATH), not to {kind}");
    }
    if folder.is_none() && args.resize.is_some() {
        bail!("--resize applies to image folders (--dataset folder:PATH), not to {kind}");
    }
    Ok((kind, folder))
}

/// A data set as the flags name it, its class subset applied.
pub struct Loaded {
    /// Which data set.
    pub kind: DatasetKind,
    /// Its train and test splits (after `--classes`).
    pub split: Split,
    /// The selected class names (`None` = all classes).
    pub classes: Option<Vec<String>>,
    /// The image folder, for `folder:PATH`.
    pub folder: Option<FolderSource>,
}

/// Loads the data set named by the flags, with its class subset applied.
pub fn load_data(args: &DataArgs, seed: u64) -> Result<Loaded> {
    load_splits(args, seed, Splits::Both)
}

/// The test split of [`load_data`], spread to `limit` images ([`Dataset::spread`]). An image
/// folder's training images are then not decoded, nor its test images beyond the limit
/// (evaluating on ImageNet's validation split needs none of its 1.28 million training images).
pub fn load_test_data(args: &DataArgs, seed: u64, limit: Option<usize>) -> Result<Dataset> {
    let test = load_splits(args, seed, Splits::TestOnly { limit }).map(|l| l.split.test)?;
    Ok(match limit {
        Some(n) => test.spread(n),
        None => test,
    })
}

/// Which splits of an image folder to decode.
enum Splits {
    /// Both.
    Both,
    /// The test split only (the training split left empty), and of it only the images
    /// `Dataset::spread(limit)` keeps.
    TestOnly { limit: Option<usize> },
}

/// [`load_data`], decoding an image folder's `splits` only.
fn load_splits(args: &DataArgs, seed: u64, splits: Splits) -> Result<Loaded> {
    let (kind, folder) = dataset_of(args)?;
    let split = match &folder {
        Some(f) => {
            // A class subset reads only its classes' images: their names from the folder's
            // layout (`--classes` may give indices), then the subset of the folder.
            let keep = match &args.classes {
                Some(spec) => {
                    let (_, names) =
                        data::folder::layout(&f.root, f.image_size).with_context(|| {
                            format!("reading the image folder {}", f.root.display())
                        })?;
                    let picked = data::parse_classes(spec, &names)?;
                    Some(
                        picked
                            .into_iter()
                            .map(|c| names[c].clone())
                            .collect::<Vec<_>>(),
                    )
                }
                None => None,
            };
            let context = || format!("loading the image folder {}", f.root.display());
            let split = if let Splits::TestOnly { limit } = splits {
                // A class subset is reordered below: spread only after that.
                let limit = limit.filter(|_| keep.is_none());
                let test = f
                    .load_test_classes(keep.as_deref(), limit)
                    .with_context(context)?;
                Split {
                    train: test.subset(&[]),
                    test,
                }
            } else {
                f.load_classes(keep.as_deref()).with_context(context)?
            };
            // The loaded classes are the kept ones in the folder's order: select by name.
            let picked = keep.map(|keep| {
                keep.iter()
                    .filter_map(|k| split.train.class_names.iter().position(|c| c == k))
                    .collect()
            });
            return select(kind, split, picked, folder);
        }
        None => {
            let dir = data::resolve_data_dir(args.data.as_deref());
            if kind.needs_data_dir() && dir.is_none() {
                bail!(
                    "no data folder for {kind}: pass --data PATH, set ROBUSTNESS_DATA, or place the files in ../shared/data"
                );
            }
            data::load(kind, dir.as_deref(), seed, &synthetic_config(args))
                .with_context(|| format!("loading {kind}"))?
        }
    };
    let picked = match &args.classes {
        Some(spec) => Some(data::parse_classes(spec, &split.train.class_names)?),
        None => None,
    };
    select(kind, split, picked, folder)
}

/// `split` with the classes `picked` (indices into its classes) kept, relabelled in that order.
fn select(
    kind: DatasetKind,
    split: Split,
    picked: Option<Vec<usize>>,
    folder: Option<FolderSource>,
) -> Result<Loaded> {
    let (split, classes) = match picked {
        None => (split, None),
        Some(classes) => {
            let names = classes
                .iter()
                .map(|&c| split.train.class_names[c].clone())
                .collect();
            let split = Split {
                train: split.train.select_classes(&classes),
                test: split.test.select_classes(&classes),
            };
            (split, Some(names))
        }
    };
    Ok(Loaded {
        kind,
        split,
        classes,
        folder,
    })
}

/// The original test set of the data set a constructed set was built from (same split, same
/// classes), checked against the constructed images' shape.
pub fn load_source_test(source: &Source, data_dir: Option<&Path>) -> Result<Dataset> {
    let kind = source.dataset;
    let dir = data::resolve_data_dir(data_dir);
    if kind.needs_data_dir() && source.folder.is_none() && dir.is_none() {
        bail!(
            "no data folder for {kind} (the test set of this constructed data set): pass --data PATH, set ROBUSTNESS_DATA, or place the files in ../shared/data"
        );
    }
    let synthetic = source.synthetic.clone().unwrap_or_default();
    let test = match (&source.folder, kind) {
        (Some(folder), _) => folder
            .load_test_classes(source.classes.as_deref(), None)
            .with_context(|| {
                format!(
                    "loading the test set of the image folder {}",
                    folder.root.display()
                )
            })?,
        (None, DatasetKind::Folder) => {
            bail!("the constructed set's metadata names an image folder but not its path")
        }
        (None, _) => {
            data::load(kind, dir.as_deref(), source.split_seed, &synthetic)
                .with_context(|| format!("loading the test set of {kind}"))?
                .test
        }
    };
    let test = match &source.classes {
        None => test,
        Some(names) => {
            // By name (a folder's class names may hold commas); the shape check below catches
            // a name that is missing.
            let classes: Vec<usize> = names
                .iter()
                .filter_map(|n| test.class_names.iter().position(|c| c == n))
                .collect();
            test.select_classes(&classes)
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
