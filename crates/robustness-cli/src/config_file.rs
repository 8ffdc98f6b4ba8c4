//! `--config FILE`: a command's options from a TOML file, merged into the command line before
//! clap parses it, so a file and flags fill the same argument structs and flags win.
//!
//! A key is an option's long name (`batch-size` or `batch_size`); its value is what the flag
//! takes: `epochs = 12`, `lr = 0.05`, `classes = "cat,dog"`, a switch as `adv-train = true`, a
//! list as an array (`eps = [0.25, 0.5]` for a comma-separated option, `checkpoint = ["a",
//! "b"]` for a repeated one). Keys at the top level apply to every command that has the
//! option (`dataset = "cifar10"` serves `train`, `eval` and `construct`); a table named after a
//! command (`[train]`, `[eval]`) applies to that command only and wins over the top level, so
//! one file can hold the settings of a whole pipeline. A key that is no option of its table's
//! command (or, at the top level, of any command) is an error: a misspelt option must not be
//! ignored. Paths are relative to the working directory, as on the command line.

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction};
use std::ffi::{OsStr, OsString};

/// The option that names the file.
const FLAG: &str = "--config";

/// What a config file contributed to the command line, for messages.
#[derive(Debug)]
pub struct FileOptions {
    pub path: String,
    pub tokens: Vec<String>,
}

/// The command line with the options of its `--config` file (if any) inserted after the
/// subcommand, except those the command line itself gives. `root` is the tool's clap command.
/// Returns the arguments and, when a file was read, what it contributed.
pub fn expand(
    root: &clap::Command,
    args: Vec<OsString>,
) -> Result<(Vec<OsString>, Option<FileOptions>)> {
    let Some(path) = config_path(&args)? else {
        return Ok((args, None));
    };
    let Some((position, name)) = subcommand_at(root, &args) else {
        // No subcommand (e.g. `robustness --config f.toml`): clap reports what is missing.
        return Ok((args, None));
    };
    let sub = root
        .find_subcommand(&name)
        .expect("subcommand_at returns a subcommand of root");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let given: Vec<&OsStr> = args[1..]
        .iter()
        .take_while(|a| a.as_os_str() != "--")
        .map(OsString::as_os_str)
        .collect();
    let tokens = tokens_for(root, sub, &table, &given)
        .with_context(|| format!("config file {}", path.display()))?;
    let mut out = args[..=position].to_vec();
    out.extend(tokens.iter().map(OsString::from));
    out.extend_from_slice(&args[position + 1..]);
    let path = path.display().to_string();
    Ok((out, Some(FileOptions { path, tokens })))
}

/// The value of `--config FILE` / `--config=FILE` (before any `--`); an error if given twice.
fn config_path(args: &[OsString]) -> Result<Option<std::path::PathBuf>> {
    let mut found = None;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        let value = if arg == FLAG {
            match iter.next() {
                Some(v) => v.clone(),
                None => bail!("{FLAG} needs a file: {FLAG} FILE.toml"),
            }
        } else if let Some(v) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            OsString::from(v)
        } else {
            continue;
        };
        if found.replace(value).is_some() {
            bail!(
                "{FLAG} is given twice; give one file (a [command] table in it can hold each command's options)"
            );
        }
    }
    Ok(found.map(std::path::PathBuf::from))
}

/// The position and name of the subcommand: the first argument that is not an option of the
/// root command or the value of one.
fn subcommand_at(root: &clap::Command, args: &[OsString]) -> Option<(usize, String)> {
    let mut i = 1;
    while i < args.len() {
        let arg = args[i].to_str()?;
        if let Some(long) = arg.strip_prefix("--") {
            let takes_value = !long.contains('=')
                && (long == "config"
                    || root
                        .get_arguments()
                        .any(|a| a.get_long() == Some(long) && takes_values(a)));
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        if arg.starts_with('-') {
            i += 1;
            continue;
        }
        return root
            .find_subcommand(arg)
            .map(|s| (i, s.get_name().to_string()));
    }
    None
}

fn takes_values(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
}

/// The flags that `table` sets for the subcommand `sub`, skipping options in `given` (the
/// command line's own arguments).
fn tokens_for(
    root: &clap::Command,
    sub: &clap::Command,
    table: &toml::Table,
    given: &[&OsStr],
) -> Result<Vec<String>> {
    let commands: Vec<&str> = root
        .get_subcommands()
        .map(clap::Command::get_name)
        .collect();
    // Top-level keys (shared: `false`), then the command's own table over them (`true`).
    let mut entries: Vec<(&String, &toml::Value, bool)> = Vec::new();
    for (key, value) in table {
        if value.is_table() {
            if commands.contains(&key.as_str()) {
                continue;
            }
            bail!(
                "[{key}] is not a command of robustness (its commands: {})",
                commands.join(", ")
            );
        }
        entries.push((key, value, false));
    }
    // A command's name with a value that is no table (`train = 3`) stays a top-level key and
    // is refused below as no option.
    if let Some(own) = table.get(sub.get_name()).and_then(toml::Value::as_table) {
        for (key, value) in own {
            entries.retain(|(k, _, _)| normalise(k) != normalise(key));
            entries.push((key, value, true));
        }
    }
    let mut tokens = Vec::new();
    for (key, value, own) in entries {
        let long = normalise(key);
        let Some(arg) = option(root, sub, &long) else {
            // A shared key serves the commands that have the option; one that no command has
            // is a typo.
            let elsewhere = root
                .get_subcommands()
                .any(|other| option(root, other, &long).is_some());
            if !own && elsewhere {
                continue;
            }
            bail!(
                "`{key}` is not an option of `robustness {}` (its options: {})",
                sub.get_name(),
                option_names(root, sub).join(", ")
            );
        };
        if long == "config" {
            bail!("`config` cannot name another config file");
        }
        if given_on_command_line(given, &long) {
            continue;
        }
        tokens.extend(
            flag_tokens(arg, &long, value)
                .with_context(|| format!("key `{key}` (the option --{long})"))?,
        );
    }
    Ok(tokens)
}

/// `batch_size` and `batch-size` both name `--batch-size`.
fn normalise(key: &str) -> String {
    key.replace('_', "-")
}

/// The subcommand's option `--long`, or a global one of the root command.
fn option<'a>(root: &'a clap::Command, sub: &'a clap::Command, long: &str) -> Option<&'a Arg> {
    let named = |a: &&Arg| a.get_long() == Some(long) && !a.is_positional();
    sub.get_arguments().find(named).or_else(|| {
        root.get_arguments()
            .filter(|a| a.is_global_set())
            .find(named)
    })
}

/// The names a config file may use with `sub`, for the error about an unknown key.
fn option_names(root: &clap::Command, sub: &clap::Command) -> Vec<String> {
    sub.get_arguments()
        .chain(root.get_arguments().filter(|a| a.is_global_set()))
        .filter_map(Arg::get_long)
        .filter(|l| *l != "config")
        .map(str::to_string)
        .collect()
}

fn given_on_command_line(given: &[&OsStr], long: &str) -> bool {
    let flag = format!("--{long}");
    let with_value = format!("--{long}=");
    given.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == flag || a.starts_with(&with_value))
    })
}

/// The command-line tokens for one key: `--long` for a switch, `--long=VALUE` otherwise (one
/// per element for a repeated option; elements joined by the delimiter for a list option).
fn flag_tokens(arg: &Arg, long: &str, value: &toml::Value) -> Result<Vec<String>> {
    let one = |v: &toml::Value| scalar(v).map(|s| format!("--{long}={s}"));
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(on)) => Ok(if *on {
            vec![format!("--{long}")]
        } else {
            vec![]
        }),
        (ArgAction::SetTrue, _) => bail!("it is a switch: write `{long} = true` or `= false`"),
        // An option whose value may be left out (`--augment` alone): `true` gives it alone.
        (ArgAction::Set, toml::Value::Boolean(on))
            if arg.get_num_args().is_some_and(|n| n.min_values() == 0) =>
        {
            Ok(if *on {
                vec![format!("--{long}")]
            } else {
                vec![]
            })
        }
        (ArgAction::Set, toml::Value::Array(items)) => match arg.get_value_delimiter() {
            Some(d) => {
                let parts: Result<Vec<String>> = items.iter().map(scalar).collect();
                Ok(vec![format!("--{long}={}", parts?.join(&d.to_string()))])
            }
            None => bail!("it takes one value, not a list"),
        },
        (ArgAction::Set, v) => Ok(vec![one(v)?]),
        (ArgAction::Append, toml::Value::Array(items)) => items.iter().map(one).collect(),
        (ArgAction::Append, v) => Ok(vec![one(v)?]),
        (action, _) => bail!("options of kind {action:?} cannot be set from a config file"),
    }
}

/// The options given explicitly (on the command line or through `--config`; defaults left
/// out) to the subcommand of `matches`, as a config file: one table named after the
/// subcommand, so `--config` on the result runs the same command again. Positional arguments
/// and `--config` itself are not recorded.
pub fn explicit_options(root: &clap::Command, matches: &clap::ArgMatches) -> toml::Table {
    let mut table = toml::Table::new();
    let Some((name, sub_matches)) = matches.subcommand() else {
        return table;
    };
    let Some(sub) = root.find_subcommand(name) else {
        return table;
    };
    let mut options = toml::Table::new();
    // Global options (`--device`) are parsed into the root's matches and the subcommand's.
    for (source, arg) in sub
        .get_arguments()
        .map(|a| (sub_matches, a))
        .chain(root.get_arguments().map(|a| (matches, a)))
    {
        let Some(long) = arg.get_long() else { continue };
        let id = arg.get_id().as_str();
        if long == "config"
            || options.contains_key(long)
            || source.value_source(id) != Some(clap::parser::ValueSource::CommandLine)
        {
            continue;
        }
        let raw: Vec<String> = source
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let value = match arg.get_action() {
            ArgAction::SetTrue => toml::Value::Boolean(true),
            ArgAction::Append => toml::Value::Array(raw.iter().map(|v| typed(v)).collect()),
            _ if arg.get_value_delimiter().is_some() => {
                toml::Value::Array(raw.iter().map(|v| typed(v)).collect())
            }
            _ => match raw.as_slice() {
                [one] => typed(one),
                _ => continue,
            },
        };
        options.insert(long.to_string(), value);
    }
    table.insert(name.to_string(), toml::Value::Table(options));
    table
}

/// A flag's text as a TOML value: an integer or a float where it reads as one (the flag's
/// parser takes the same text back), else a string.
fn typed(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f.to_string().parse::<f64>() == Ok(f) => toml::Value::Float(f),
        _ => toml::Value::String(text.to_string()),
    }
}

/// A TOML scalar as the text a flag takes.
fn scalar(value: &toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!(
            "expected a string, number or boolean, found a {}",
            other.type_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, Parser};

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    /// Writes `text` as a config file and expands `args` (which name it as `FILE`).
    fn expand_with(tag: &str, text: &str, args: &[&str]) -> Result<Vec<String>> {
        let dir =
            std::env::temp_dir().join(format!("robustness-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("run.toml");
        std::fs::write(&file, text).expect("write config");
        let file = file.to_str().expect("utf-8 path").to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("FILE", &file)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, _) = expand(&Cli::command(), os(&args))?;
        Ok(out
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect())
    }

    fn train_args(args: &[String]) -> crate::cli::TrainArgs {
        match Cli::try_parse_from(args).expect("parses").command {
            Command::Train(t) => t,
            other => panic!("expected train, got {other:?}"),
        }
    }

    #[test]
    fn without_config_the_command_line_is_untouched() {
        let args = os(&["robustness", "train", "--out", "x"]);
        let (out, from) = expand(&Cli::command(), args.clone()).expect("expands");
        assert_eq!(out, args);
        assert!(from.is_none());
    }

    #[test]
    fn file_options_fill_the_same_struct_as_flags_and_flags_win() {
        let text = r#"
            epochs = 3
            lr = 0.05
            classes = "cat,dog"
            adv_train = true
            random-start = false
            eps = [0.25, 0.5]
            [train]
            epochs = 7
            arch = "linear"
            [eval]
            checkpoint = ["a", "b"]
        "#;
        let out = expand_with(
            "merge",
            text,
            &[
                "robustness",
                "train",
                "--config",
                "FILE",
                "--out",
                "r",
                "--lr=0.2",
            ],
        )
        .expect("expands");
        let t = train_args(&out);
        assert_eq!(
            t.epochs,
            Some(7),
            "the [train] table wins over the top level"
        );
        assert_eq!(t.arch.as_deref(), Some("linear"));
        assert_eq!(t.lr, Some(0.2), "the command line wins over the file");
        assert_eq!(t.data.classes.as_deref(), Some("cat,dog"));
        assert!(t.adv_train);
        assert!(!t.attack.random_start);
        assert_eq!(t.attack.eps, vec![0.25, 0.5]);
        assert!(
            !out.iter().any(|a| a.contains("checkpoint")),
            "another command's table is ignored: {out:?}"
        );
    }

    #[test]
    fn arrays_repeat_a_repeated_option_and_switch_an_optional_value() {
        let out = expand_with(
            "eval",
            "epochs = 5\n[eval]\ncheckpoint = [\"a\", \"b\"]\nlimit = 10\n",
            &["robustness", "--config=FILE", "eval"],
        )
        .expect("expands");
        match Cli::try_parse_from(&out).expect("parses").command {
            Command::Eval(e) => {
                assert!(
                    !out.iter().any(|a| a.contains("epochs")),
                    "a shared key that eval lacks serves only train: {out:?}"
                );
                assert_eq!(e.checkpoint.len(), 2);
                assert_eq!(e.limit, Some(10));
            }
            other => panic!("expected eval, got {other:?}"),
        }
        let out = expand_with(
            "augment",
            "augment = true\ndevice = \"cpu\"\n",
            &["robustness", "train", "--out", "r", "--config", "FILE"],
        )
        .expect("expands");
        assert!(train_args(&out).augment.is_some(), "{out:?}");
        let out = expand_with(
            "augment-ref",
            "augment = \"reference\"\n",
            &["robustness", "train", "--out", "r", "--config", "FILE"],
        )
        .expect("expands");
        assert!(out.contains(&"--augment=reference".to_string()), "{out:?}");
    }

    #[test]
    fn a_misspelt_key_a_wrong_type_and_bad_toml_are_errors_naming_the_file_and_key() {
        let args = ["robustness", "train", "--config", "FILE", "--out", "r"];
        let err = expand_with("typo", "epoch = 3\n", &args).expect_err("unknown key");
        let msg = format!("{err:#}");
        assert!(msg.contains("run.toml") && msg.contains("`epoch`"), "{msg}");
        assert!(msg.contains("epochs"), "lists the real options: {msg}");
        let eval = ["robustness", "eval", "--config", "FILE"];
        let err = expand_with("own", "[eval]\nepochs = 3\n", &eval).expect_err("not eval's");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("`epochs`") && msg.contains("robustness eval"),
            "{msg}"
        );
        let err = expand_with("switch", "adv-train = 1\n", &args).expect_err("not a bool");
        assert!(format!("{err:#}").contains("switch"), "{err:#}");
        let err = expand_with("list", "arch = [\"cnn\", \"mlp\"]\n", &args).expect_err("list");
        assert!(format!("{err:#}").contains("one value"), "{err:#}");
        let err = expand_with("table", "[trian]\nepochs = 3\n", &args).expect_err("table");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("[trian] is not a command") && msg.contains("train"),
            "{msg}"
        );
        let err = expand_with("scalar", "train = 3\n", &args).expect_err("not a table");
        assert!(
            format!("{err:#}").contains("`train` is not an option"),
            "{err:#}"
        );
        let err = expand_with("toml", "epochs = \n", &args).expect_err("bad toml");
        assert!(format!("{err:#}").contains("not valid TOML"), "{err:#}");
        let err = expand_with("nested", "config = \"other.toml\"\n", &args).expect_err("nested");
        assert!(
            format!("{err:#}").contains("another config file"),
            "{err:#}"
        );
    }

    #[test]
    fn a_missing_file_or_a_second_config_is_an_error() {
        let root = Cli::command();
        let err = expand(
            &root,
            os(&["robustness", "train", "--config", "/nonexistent/run.toml"]),
        )
        .expect_err("missing file");
        assert!(
            format!("{err:#}").contains("/nonexistent/run.toml"),
            "{err:#}"
        );
        let err = expand(
            &root,
            os(&["robustness", "train", "--config", "a", "--config=b"]),
        )
        .expect_err("twice");
        assert!(format!("{err:#}").contains("twice"), "{err:#}");
    }

    #[test]
    fn recorded_options_run_the_same_command_again() {
        let root = Cli::command();
        for line in [
            "robustness train --out r --epochs 3 --lr 1e-3 --eps 0.25,0.5 --augment --classes 3,5",
            "robustness --device cpu train --out r --adv-train --constraint inf --seed 7",
            "robustness train --out r --augment reference --ema 0.999 --dataset constructed:d",
            "robustness eval --checkpoint a --checkpoint b --attack apgd-t --eps 1 --json",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            let matches = root.clone().try_get_matches_from(&args).expect("parses");
            let options = explicit_options(&root, &matches);
            let text = toml::to_string(&options).expect("serialises");
            assert!(
                !text.contains("dataset = \"digits\""),
                "no defaults: {text}"
            );
            assert_eq!(
                line.contains("--device"),
                text.contains("device = \"cpu\""),
                "{text}"
            );
            let command = args.iter().find(|a| matches!(**a, "train" | "eval"));
            let replay = expand_with(
                "replay",
                &text,
                &["robustness", command.expect("command"), "--config", "FILE"],
            )
            .expect("expands");
            let again = Cli::try_parse_from(&replay).expect("replay parses");
            let first = Cli::try_parse_from(&args).expect("parses");
            // The replay differs only in naming its config file.
            let again = format!("{:?}", again.command);
            assert_eq!(again, format!("{:?}", first.command), "{text}");
        }
    }

    #[test]
    fn the_shipped_example_config_parses_for_each_of_its_commands() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/config-example.toml"
        );
        let root = Cli::command();
        for command in ["train", "eval"] {
            let (out, _) = expand(&root, os(&["robustness", command, "--config", path]))
                .unwrap_or_else(|e| panic!("{command}: {e:#}"));
            Cli::try_parse_from(&out).unwrap_or_else(|e| panic!("{command}: {e}"));
        }
    }
}
