//! Integration tests that run the real `robustness` binary on the embedded digits data.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_robustness"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("robustness-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run robustness")
}

/// Runs a command that must succeed (the failure shows its stderr).
fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "robustness {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Trains a linear model on the embedded digits for `epochs` epochs into `out`; returns the
/// path of its `latest` checkpoint.
fn train_linear_digits(out: &Path, epochs: u32) -> String {
    let epochs = epochs.to_string();
    let dir = out.to_str().expect("utf-8 path");
    run_ok(&[
        "train", "--arch", "linear", "--epochs", &epochs, "--out", dir,
    ]);
    out.join("latest").to_string_lossy().into_owned()
}

/// Runs `robustness train ARGS --json` and returns the path of the checkpoint it reports.
fn trained_checkpoint(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--json");
    json_of(&run(&args))["checkpoint"]
        .as_str()
        .expect("checkpoint")
        .to_string()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A failed command: non-zero exit, one `error:` line, and no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "stderr lacks '{needle}': {stderr}"
    );
}

/// The tensor bytes of a SafeTensors file (after its JSON header).
fn weights_payload(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read weights");
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    bytes[8 + len..].to_vec()
}

fn metrics_without_times(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("metrics line");
            let obj = v.as_object_mut().expect("object");
            obj.remove("seconds");
            obj.remove("train_seconds");
            obj.remove("step_seconds");
            obj.remove("eval_seconds");
            v
        })
        .collect()
}

#[test]
fn train_on_digits_then_eval_the_best_checkpoint() {
    let dir = temp_dir("train-eval");
    let run_dir = dir.join("run");
    let run_dir_s = run_dir.to_str().expect("utf-8 path");
    let out = run(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "8",
        "--out",
        run_dir_s,
        "--json",
    ]);
    let train = json_of(&out);
    let acc = train["test_accuracy"].as_f64().expect("test_accuracy");
    assert!(acc > 0.95, "digits CNN reached only {acc}");
    assert_eq!(train["epochs"], 8);
    assert!(train["seconds"].as_f64().expect("seconds") > 0.0);
    let checkpoint = train["checkpoint"]
        .as_str()
        .expect("checkpoint")
        .to_string();
    assert!(Path::new(&checkpoint).join("model.safetensors").is_file());
    assert!(Path::new(&checkpoint).join("meta.json").is_file());
    assert_eq!(
        std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .expect("metrics")
            .lines()
            .count(),
        8
    );

    let eval = json_of(&run(&[
        "eval",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--json",
    ]));
    let best = train["best_test_accuracy"].as_f64().expect("best");
    assert!((eval["test_accuracy"].as_f64().expect("acc") - best).abs() < 1e-12);
    assert_eq!(eval["examples"], 360);
    let confusion = eval["confusion"].as_array().expect("confusion");
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter())
        .map(|c| c.as_u64().expect("count"))
        .sum();
    assert_eq!(total, 360);

    // Human-readable output has the per-class table.
    let text = run(&["eval", "--checkpoint", &checkpoint, "--dataset", "digits"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("| class | accuracy |"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_config_file_sets_train_and_eval_options_and_flags_win() {
    let dir = temp_dir("config-file");
    let run_dir = dir.join("run");
    let file = dir.join("pipeline.toml");
    let text = format!(
        "arch = \"linear\"\nseed = 3\n[train]\nepochs = 3\nlr = 0.02\nout = {out:?}\n\
         [eval]\ncheckpoint = {ckpt:?}\n",
        out = run_dir.to_str().expect("utf-8"),
        ckpt = run_dir.join("latest").to_str().expect("utf-8"),
    );
    std::fs::write(&file, text).expect("write config");
    let file = file.to_str().expect("utf-8");
    run_ok(&["train", "--config", file, "--epochs", "2"]);
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("config.json")).expect("config.json"),
    )
    .expect("JSON");
    assert_eq!(config["arch"], "linear", "top-level key");
    assert_eq!(config["seed"], 3, "top-level key");
    assert_eq!(config["lr"], 0.02, "[train] key");
    assert_eq!(config["epochs"], 2, "the flag wins over the file's 3");
    // The run records what it was started with; `--config` on that record runs it again.
    let recorded = run_dir.join("command.toml");
    let again = dir.join("again");
    run_ok(&[
        "train",
        "--config",
        recorded.to_str().expect("utf-8"),
        "--out",
        again.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        std::fs::read_to_string(again.join("config.json")).expect("config.json"),
        std::fs::read_to_string(run_dir.join("config.json")).expect("config.json"),
        "{}",
        std::fs::read_to_string(&recorded).expect("command.toml")
    );
    let eval = json_of(&run(&["eval", "--config", file, "--json"]));
    assert_eq!(
        eval["epochs"], 2,
        "eval read the file's [eval] checkpoint: {eval}"
    );
    assert!(eval["test_accuracy"].as_f64().is_some(), "{eval}");

    // A misspelt key stops the command before it writes anything.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[train]\nepoch = 3\n").expect("write config");
    let other = dir.join("other");
    let out = run(&[
        "train",
        "--config",
        bad.to_str().expect("utf-8"),
        "--out",
        other.to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "`epoch` is not an option of `robustness train`");
    assert_eq!(out.status.code(), Some(2));
    assert!(!other.exists(), "nothing written for a bad config");
}

#[test]
fn resume_after_kill_9_matches_an_uninterrupted_run() {
    let dir = temp_dir("resume");
    let args = |out: &Path| {
        vec![
            "train".to_string(),
            "--dataset".into(),
            "digits".into(),
            "--epochs".into(),
            "6".into(),
            "--batch-size".into(),
            "8".into(),
            "--seed".into(),
            "7".into(),
            "--out".into(),
            out.to_string_lossy().into_owned(),
        ]
    };
    let full = dir.join("full");
    let status = bin()
        .args(args(&full))
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert!(status.success());

    // Kill the second run as soon as it has written a checkpoint, wherever it is.
    let killed = dir.join("killed");
    let mut child = bin()
        .args(args(&killed))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !killed.join("latest").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().expect("kill -9");
    let _ = child.wait();
    let done = std::fs::read_to_string(killed.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    assert!(done < 6, "the run finished before it could be killed");

    let mut resume = args(&killed);
    resume.push("--resume".into());
    let out = bin().args(&resume).output().expect("resume");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(metrics_without_times(&full), metrics_without_times(&killed));
    assert_eq!(
        weights_payload(&full.join("latest/model.safetensors")),
        weights_payload(&killed.join("latest/model.safetensors")),
        "resumed weights differ from the uninterrupted run's"
    );
    // Checkpoint files themselves are byte-identical too (canonical header).
    assert_eq!(
        std::fs::read(full.join("latest/model.safetensors")).expect("read"),
        std::fs::read(killed.join("latest/model.safetensors")).expect("read"),
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn training_into_an_existing_run_without_resume_is_refused() {
    let dir = temp_dir("existing");
    let out = dir.to_string_lossy().into_owned();
    let first = run(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--out",
        &out,
    ]);
    assert!(first.status.success());
    let again = run(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--out",
        &out,
    ]);
    assert_clean_error(&again, "pass --resume");
    let changed = run(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--out",
        &out,
        "--resume",
    ]);
    assert_clean_error(&changed, "other settings");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ema_runs_report_both_accuracies_and_say_when_the_warm_up_sets_the_average() {
    let dir = temp_dir("ema");
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let train = |out: &str, decay: &str| {
        run_ok(&[
            "train",
            "--dataset",
            "digits",
            "--arch",
            "mlp",
            "--epochs",
            "2",
            "--ema",
            decay,
            "--out",
            &path(out),
        ])
    };
    // 2 epochs of 45 steps: the warm-up is at 90/99 by the end, below 0.999 but above 0.5.
    let capped = train("capped", "0.999");
    let stderr = String::from_utf8_lossy(&capped.stderr);
    assert!(stderr.contains("sets the average"), "{stderr}");
    assert!(stderr.contains("EMA; weights"), "{stderr}");
    let low = train("low", "0.5");
    let stderr = String::from_utf8_lossy(&low.stderr);
    assert!(!stderr.contains("sets the average"), "{stderr}");
    let metrics = std::fs::read_to_string(dir.join("capped").join("metrics.jsonl")).expect("m");
    for line in metrics.lines() {
        let m: Value = serde_json::from_str(line).expect("json");
        let raw = m["raw_test_accuracy"].as_f64().expect("raw accuracy");
        assert!((0.0..=1.0).contains(&raw), "{m}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mixup_and_label_smoothing_change_the_loss_are_recorded_and_still_learn() {
    let dir = temp_dir("mixup");
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--dataset",
            "digits",
            "--arch",
            "mlp",
            "--epochs",
            "2",
            "--out",
        ];
        let out = path(out);
        args.push(&out);
        args.extend_from_slice(extra);
        args.push("--json");
        let res = run_ok(&args);
        let v: Value = serde_json::from_slice(&res.stdout).expect("json");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(out).join("config.json")).expect("config"),
        )
        .expect("config json");
        (v, config)
    };
    let loss = |v: &Value| v["metrics"][0]["train_loss"].as_f64().expect("loss");
    let (plain, plain_config) = train("plain", &[]);
    assert!(plain_config.get("mixup").is_none() && plain_config.get("label_smoothing").is_none());
    let (smooth, config) = train("smooth", &["--label-smoothing", "0.2"]);
    assert_eq!(config["label_smoothing"], 0.2);
    let (mixed, config) = train("mixed", &["--mixup", "0.4"]);
    assert_eq!(config["mixup"], 0.4);
    // Same seed, same first batches: only the loss (smoothing) or the images and loss (mixup)
    // differ, so the first epoch's mean loss does too.
    assert_ne!(loss(&plain), loss(&smooth));
    assert_ne!(loss(&plain), loss(&mixed));
    for v in [&smooth, &mixed] {
        let acc = v["test_accuracy"].as_f64().expect("accuracy");
        assert!(acc > 0.5, "10 classes, chance 0.1: {v}");
    }
    // The same flags again give the same run (the mix draws from the run's seed).
    let (again, _) = train("mixed-again", &["--mixup", "0.4"]);
    assert_eq!(loss(&mixed), loss(&again));
    // Bad values and combinations are clean errors, before any training.
    let out = path("bad");
    let bad = |extra: &[&str], needle: &str| {
        let mut args = vec!["train", "--dataset", "digits", "--out", &out];
        args.extend_from_slice(extra);
        assert_clean_error(&run(&args), needle);
    };
    bad(&["--mixup", "0"], "--mixup 0");
    bad(&["--label-smoothing", "1"], "--label-smoothing 1");
    bad(
        &["--mixup", "0.2", "--adv-train"],
        "--mixup with --adv-train",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_naming_epoch_and_batch() {
    let dir = temp_dir("nan");
    let out = dir.to_string_lossy().into_owned();
    let res = run(&[
        "train",
        "--dataset",
        "digits",
        "--arch",
        "mlp",
        "--epochs",
        "2",
        "--lr",
        "1e12",
        "--no-augment",
        "--out",
        &out,
    ]);
    assert_clean_error(&res, "non-finite loss");
    assert_clean_error(&res, "epoch 1, batch");
    // Crop + flip is for natural images: refused on digits, before any training.
    let res = run(&["train", "--dataset", "digits", "--augment", "--out", &out]);
    assert_clean_error(&res, "--augment");
    let res = run(&["train", "--augment", "--no-augment", "--out", &out]);
    assert_clean_error(&res, "cannot be used with");
    let res = run(&[
        "train",
        "--dataset",
        "digits",
        "--augment",
        "reference",
        "--out",
        &out,
    ]);
    assert_clean_error(&res, "--augment");
    let res = run(&[
        "train",
        "--dataset",
        "digits",
        "--augment",
        "cutout",
        "--out",
        &out,
    ]);
    assert_clean_error(&res, "--augment");
    let res = run(&["train", "--ema", "1.5", "--out", &out]);
    assert_clean_error(&res, "--ema 1.5");
    let res = run(&["train", "--augment", "sideways", "--out", &out]);
    assert_clean_error(&res, "invalid value 'sideways'");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn eval_of_an_ensemble_reports_it_and_attacks_the_mean_logits() {
    let dir = temp_dir("eval-ensemble");
    let linear = train_linear_digits(&dir.join("linear"), 3);
    let mlp_dir = dir.join("mlp");
    run_ok(&[
        "train",
        "--arch",
        "mlp",
        "--epochs",
        "3",
        "--out",
        mlp_dir.to_str().expect("utf-8"),
    ]);
    let mlp = mlp_dir.join("latest").to_string_lossy().into_owned();
    let eval = |checkpoints: &[&str], extra: &[&str]| -> Value {
        let mut args = vec!["eval"];
        for c in checkpoints {
            args.extend(["--checkpoint", c]);
        }
        args.extend(extra);
        args.push("--json");
        json_of(&run(&args))
    };
    let alone = eval(&[&linear], &[]);
    assert!(alone["ensemble"].is_null());
    let twice = eval(&[&linear, &linear], &[]);
    assert_eq!(
        twice["test_accuracy"], alone["test_accuracy"],
        "the mean of two equal logits is the same model"
    );
    let both = eval(&[&linear, &mlp], &[]);
    assert_eq!(both["ensemble"].as_array().expect("members").len(), 2);
    assert_eq!(both["checkpoint"].as_str(), Some(linear.as_str()));
    let acc = both["test_accuracy"].as_f64().expect("accuracy");
    assert!(acc > 0.5, "an ensemble of two trained digits models: {acc}");
    let attacked = eval(
        &[&linear, &mlp],
        &["--attack", "pgd", "--eps", "1.0", "--steps", "5"],
    );
    let robust = attacked["robust_accuracy"].as_f64().expect("robust");
    assert!(
        robust < acc,
        "PGD on the ensemble: {robust} against clean {acc}"
    );
    assert_eq!(attacked["ensemble"].as_array().expect("members").len(), 2);
    let text = String::from_utf8_lossy(
        &run_ok(&["eval", "--checkpoint", &linear, "--checkpoint", &mlp]).stdout,
    )
    .into_owned();
    assert!(text.contains("ensemble of 2 checkpoints"), "{text}");
    // On the digits the seed picks the split: members of other seeds are refused.
    let other = dir.join("other");
    run_ok(&[
        "train",
        "--arch",
        "linear",
        "--epochs",
        "1",
        "--seed",
        "3",
        "--out",
        other.to_str().expect("utf-8"),
    ]);
    let other = other.join("latest").to_string_lossy().into_owned();
    let out = run(&["eval", "--checkpoint", &linear, "--checkpoint", &other]);
    assert_clean_error(&out, "seed");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_paths_and_flags_give_one_line_errors_without_panics() {
    let dir = temp_dir("bad");
    let missing = dir.join("nope");
    let missing = missing.to_string_lossy().into_owned();
    assert_clean_error(
        &run(&["eval", "--checkpoint", &missing, "--dataset", "digits"]),
        "not found",
    );
    assert_clean_error(
        &run(&["train", "--dataset", "imagenet", "--out", &missing]),
        "imagenet",
    );
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            "digits",
            "--arch",
            "resnet34",
            "--out",
            &missing,
        ]),
        "resnet34",
    );
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "0",
            "--out",
            &missing,
        ]),
        "--epochs",
    );
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            "digits",
            "--classes",
            "3,giraffe",
            "--out",
            &missing,
        ]),
        "giraffe",
    );
    assert_clean_error(&run(&["train", "--no-such-flag"]), "no-such-flag");
    assert_clean_error(&run(&["--device", "tpu", "bench"]), "unknown device");
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            "cifar10",
            "--data",
            &missing,
            "--out",
            &missing,
        ]),
        "nope",
    );

    // A corrupt weights file names the file.
    let run_dir = dir.join("run");
    let run_s = run_dir.to_string_lossy().into_owned();
    assert!(
        run(&[
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--out",
            &run_s
        ])
        .status
        .success()
    );
    let weights = run_dir.join("latest/model.safetensors");
    let bytes = std::fs::read(&weights).expect("weights");
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).expect("truncate");
    let latest = run_dir.join("latest").to_string_lossy().into_owned();
    assert_clean_error(
        &run(&["eval", "--checkpoint", &latest, "--dataset", "digits"]),
        "model.safetensors",
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A 10-class model serves a class subset through the logits of those classes: eval and
/// construct accept it, and the construction records the model's own classes.
#[test]
fn a_model_of_more_classes_is_restricted_to_a_class_subset() {
    let dir = temp_dir("restrict");
    let run_dir = dir.join("ten");
    let run_s = run_dir.to_string_lossy().into_owned();
    let ckpt = trained_checkpoint(&[
        "train",
        "--dataset",
        "digits",
        "--arch",
        "mlp",
        "--epochs",
        "2",
        "--out",
        &run_s,
    ]);
    let all = json_of(&run(&[
        "eval",
        "--checkpoint",
        &ckpt,
        "--dataset",
        "digits",
        "--json",
    ]));
    let two = json_of(&run(&[
        "eval",
        "--checkpoint",
        &ckpt,
        "--dataset",
        "digits",
        "--classes",
        "5,3",
        "--json",
    ]));
    assert_eq!(two["class_names"], serde_json::json!(["5", "3"]));
    assert_eq!(
        two["restricted_from"]
            .as_array()
            .expect("own classes")
            .len(),
        10
    );
    assert!(all["restricted_from"].is_null());
    // Restricted to {5, 3}, every 5 or 3 that the 10-class model got right is still right
    // (its logit beat all nine others), so the per-class accuracy can only rise.
    let per_class = |v: &Value, i: usize| v["per_class_accuracy"][i].as_f64().expect("acc");
    assert!(per_class(&two, 0) >= per_class(&all, 5) - 1e-9);
    assert!(per_class(&two, 1) >= per_class(&all, 3) - 1e-9);
    let confusion = two["confusion"].as_array().expect("confusion");
    assert_eq!(confusion.len(), 2);
    assert_eq!(confusion[0].as_array().expect("row").len(), 2);

    let out = dir.join("det");
    let out_s = out.to_string_lossy().into_owned();
    let built = json_of(&run(&[
        "construct",
        "det",
        "--model",
        &ckpt,
        "--dataset",
        "digits",
        "--classes",
        "3,5",
        "--steps",
        "5",
        "--out",
        &out_s,
        "--json",
    ]));
    assert!(built["summary"]["examples"].as_u64().expect("examples") > 0);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).expect("meta.json"))
            .expect("json");
    assert_eq!(
        meta["model"]["restricted_from"]
            .as_array()
            .expect("restricted_from")
            .len(),
        10
    );
    assert_eq!(meta["source"]["class_names"], serde_json::json!(["3", "5"]));
    // A model of fewer classes than asked for is still a clear error naming both.
    let two_class = dir.join("two");
    let two_s = two_class.to_string_lossy().into_owned();
    run(&[
        "train",
        "--dataset",
        "digits",
        "--classes",
        "3,5",
        "--arch",
        "mlp",
        "--epochs",
        "1",
        "--out",
        &two_s,
    ]);
    let small = two_class.join("latest").to_string_lossy().into_owned();
    // The same classes in another order are reordered, not silently swapped.
    let eval_small = |classes: &str| {
        json_of(&run(&[
            "eval",
            "--checkpoint",
            &small,
            "--dataset",
            "digits",
            "--classes",
            classes,
            "--json",
        ]))
    };
    let (forward, backward) = (eval_small("3,5"), eval_small("5,3"));
    assert_eq!(forward["test_accuracy"], backward["test_accuracy"]);
    assert_eq!(
        forward["per_class_accuracy"][0],
        backward["per_class_accuracy"][1]
    );
    assert!(forward["test_accuracy"].as_f64().expect("acc") > 0.6);
    // Other classes under the same count are an error naming both lists.
    assert_clean_error(
        &run(&[
            "eval",
            "--checkpoint",
            &small,
            "--dataset",
            "digits",
            "--classes",
            "3,7",
        ]),
        "are not the data's",
    );
    assert_clean_error(
        &run(&[
            "eval",
            "--checkpoint",
            &small,
            "--dataset",
            "digits",
            "--classes",
            "3,5,7",
        ]),
        "2 classes",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn class_subsets_give_a_relabelled_task() {
    let dir = temp_dir("classes");
    let out = dir.to_string_lossy().into_owned();
    let checkpoint = trained_checkpoint(&[
        "train",
        "--dataset",
        "digits",
        "--classes",
        "3,5",
        "--epochs",
        "3",
        "--out",
        &out,
    ]);
    let eval = json_of(&run(&[
        "eval",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--classes",
        "3,5",
        "--json",
    ]));
    assert_eq!(eval["class_names"], serde_json::json!(["3", "5"]));
    assert_eq!(eval["confusion"].as_array().expect("confusion").len(), 2);
    assert!(eval["test_accuracy"].as_f64().expect("acc") > 0.9);
    // Evaluating the binary model on all ten classes is a shape error that names both.
    let wrong = run(&["eval", "--checkpoint", &checkpoint, "--dataset", "digits"]);
    assert_clean_error(&wrong, "2 classes");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn synthetic_feature_model_is_learnable() {
    let dir = temp_dir("synthetic");
    let out = dir.to_string_lossy().into_owned();
    let train = json_of(&run(&[
        "train",
        "--dataset",
        "synthetic",
        "--d",
        "10",
        "--n-train",
        "2000",
        "--n-test",
        "500",
        "--epochs",
        "3",
        "--out",
        &out,
        "--json",
    ]));
    assert!(
        train["test_accuracy"].as_f64().expect("acc") > 0.9,
        "{train}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_reports_a_train_step_time() {
    let out = json_of(&run(&[
        "bench", "--arch", "mlp", "--batch", "16", "--shape", "1x8x8", "--warmup", "1", "--iters",
        "3", "--json",
    ]));
    assert!(out["train_step_ms"].as_f64().expect("ms") > 0.0);
    assert_eq!(out["samples_ms"].as_array().expect("samples").len(), 3);
}

/// Our CPU kernels (convolutions, batch norm) fix their blocking and summation order by the
/// shapes, never by the thread count: one and four threads train the same bytes (four
/// threads also take the path where blocks run one after another with a parallel GEMM).
#[test]
fn data_parallel_training_on_two_cpu_replicas() {
    let dir = temp_dir("data-parallel");
    let train = |device: &str, arch: &str, name: &str| {
        let out = dir.join(name);
        run_ok(&[
            "--device",
            device,
            "train",
            "--arch",
            arch,
            "--epochs",
            "2",
            "--seed",
            "4",
            "--out",
            out.to_str().expect("utf-8 path"),
        ]);
        out
    };
    // Without batch norm, two replicas take the one-device steps up to float rounding.
    let one = metrics_without_times(&train("cpu", "mlp", "mlp-one"));
    let two = metrics_without_times(&train("cpu,cpu", "mlp", "mlp-two"));
    assert_eq!(one.len(), 2);
    for (a, b) in one.iter().zip(&two) {
        let (la, lb) = (a["train_loss"].as_f64(), b["train_loss"].as_f64());
        let (la, lb) = (la.expect("loss"), lb.expect("loss"));
        assert!(
            (la - lb).abs() < 1e-4 * la.abs().max(1.0),
            "loss {la} vs {lb}"
        );
        assert_eq!(a["train_accuracy"], b["train_accuracy"]);
    }
    // With batch norm (per-replica statistics) the run differs from one device's, but the same
    // seed on the same devices gives the same bytes, and it learns.
    let first = train("cpu,cpu", "cnn", "cnn-a");
    let second = train("cpu,cpu", "cnn", "cnn-b");
    assert_eq!(
        metrics_without_times(&first),
        metrics_without_times(&second)
    );
    assert_eq!(
        weights_payload(&first.join("latest/model.safetensors")),
        weights_payload(&second.join("latest/model.safetensors"))
    );
    let accuracy = metrics_without_times(&first)[1]["test_accuracy"].as_f64();
    assert!(accuracy.expect("accuracy") > 0.8, "{accuracy:?}");
    // Only `train` takes several devices; a bad entry is named.
    let ckpt = first.join("latest");
    let out = run(&[
        "--device",
        "cpu,cpu",
        "eval",
        "--checkpoint",
        ckpt.to_str().expect("utf-8 path"),
    ]);
    assert_clean_error(&out, "only by `train`");
    let bad = dir.join("bad");
    let out = run(&[
        "--device",
        "cpu,gpu",
        "train",
        "--epochs",
        "1",
        "--out",
        bad.to_str().expect("utf-8 path"),
    ]);
    assert_clean_error(&out, "unknown device 'gpu'");
    assert!(!bad.exists(), "a refused run must not create its folder");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cnn_training_gives_the_same_bytes_on_one_and_four_threads() {
    let dir = temp_dir("threads");
    let weights: Vec<Vec<u8>> = ["1", "4"]
        .iter()
        .map(|threads| {
            let out = dir.join(format!("t{threads}"));
            let out_s = out.to_str().expect("utf-8 path");
            let res = bin()
                .env("RAYON_NUM_THREADS", threads)
                .args([
                    "train", "--arch", "cnn", "--epochs", "1", "--seed", "5", "--out", out_s,
                ])
                .output()
                .expect("run robustness");
            assert!(
                res.status.success(),
                "train on {threads} threads failed: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            weights_payload(&out.join("latest/model.safetensors"))
        })
        .collect();
    assert!(!weights[0].is_empty());
    assert!(
        weights[0] == weights[1],
        "1 and 4 threads trained different weights"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn attacks_on_a_trained_digits_model() {
    let dir = temp_dir("attacks");
    let run_dir = dir.join("run").to_string_lossy().into_owned();
    let checkpoint = trained_checkpoint(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "6",
        "--out",
        &run_dir,
    ]);

    // Targeted attacks reach the target in nearly all cases at a large eps.
    let out = dir.join("attack").to_string_lossy().into_owned();
    let targeted = json_of(&run(&[
        "attack",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--indices",
        "0..32",
        "--target",
        "0",
        "--eps",
        "4",
        "--steps",
        "100",
        "--out",
        &out,
        "--json",
    ]));
    assert!(
        targeted["success_rate"].as_f64().expect("rate") >= 0.9,
        "{targeted}"
    );
    assert!(Path::new(&out).join("grid.png").is_file());

    // A robustness curve: accuracy falls with eps and no perturbation exceeds eps.
    let curve_dir = dir.join("curve").to_string_lossy().into_owned();
    let eval = json_of(&run(&[
        "eval",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--attack",
        "pgd",
        "--constraint",
        "2",
        "--eps",
        "0.25,1,3",
        "--steps",
        "20",
        "--out",
        &curve_dir,
        "--json",
    ]));
    let curve = eval["curve"].as_array().expect("curve");
    let acc: Vec<f64> = curve
        .iter()
        .map(|c| c["robust_accuracy"].as_f64().expect("acc"))
        .collect();
    assert!(acc[0] >= acc[1] && acc[1] >= acc[2], "{acc:?}");
    assert!(
        acc[2] < 0.1,
        "L2 eps 3 should break the digits model: {acc:?}"
    );
    for c in curve {
        let eps = c["eps"].as_f64().expect("eps");
        assert!(c["max_perturbation_norm"].as_f64().expect("norm") <= eps + 1e-6);
    }
    assert!(eval["clean_accuracy"].as_f64().expect("clean") > 0.9);
    assert!(Path::new(&curve_dir).join("curve.png").is_file());

    // Linf APGD, AutoAttack's (APGD-T, FAB-T, Square) and FGSM run through the same command.
    let mut robust = std::collections::HashMap::new();
    for attack in [
        "apgd-ce",
        "apgd-dlr",
        "apgd-t",
        "fab-t",
        "square",
        "autoattack",
        "fgsm",
    ] {
        let r = json_of(&run(&[
            "eval",
            "--checkpoint",
            &checkpoint,
            "--dataset",
            "digits",
            "--attack",
            attack,
            "--constraint",
            "inf",
            "--eps",
            "0.1",
            "--steps",
            "10",
            "--limit",
            "64",
            "--random-start",
            "--queries",
            "300",
            "--json",
        ]));
        assert!(
            r["max_perturbation_norm"].as_f64().expect("norm") <= 0.1 + 1e-6,
            "{attack}"
        );
        robust.insert(attack, r["robust_accuracy"].as_f64().expect("acc"));
        assert!(
            r["robust_accuracy"].as_f64().expect("acc")
                < r["clean_accuracy"].as_f64().expect("clean")
        );
    }
    // AutoAttack starts with the same APGD-CE run (same steps, same random start and stream)
    // and only adds APGD-T's, FAB-T's and Square's successes.
    assert!(robust["autoattack"] <= robust["apgd-ce"], "{robust:?}");
    // Training has no use for the Square attack's budget.
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--queries",
            "10",
        ]),
        "--queries",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn adversarial_training_with_fgsm_rs_reports_robust_accuracy() {
    let dir = temp_dir("adv");
    let out = dir.to_string_lossy().into_owned();
    let train = json_of(&run(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--adv-train",
        "--adv-method",
        "fgsm-rs",
        "--constraint",
        "inf",
        "--eps",
        "0.1",
        "--adv-eval",
        "--adv-eval-limit",
        "100",
        "--out",
        &out,
        "--json",
    ]));
    let robust = train["robust_test_accuracy"]
        .as_f64()
        .expect("robust accuracy");
    assert!((0.0..=1.0).contains(&robust));
    assert!(
        train["test_accuracy"].as_f64().expect("acc") > 0.5,
        "{train}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn theory_command_passes_every_check_and_writes_figure_4() {
    let dir = temp_dir("theory");
    let out = dir.to_string_lossy().into_owned();
    let report = json_of(&run(&[
        "theory",
        "--samples",
        "100,1000",
        "--out",
        &out,
        "--json",
    ]));
    assert_eq!(report["all_pass"], true);
    let sections = report["sections"].as_array().expect("sections");
    assert!(sections.len() >= 3);
    for check in sections
        .iter()
        .flat_map(|s| s["checks"].as_array().expect("checks"))
    {
        assert!(check["relative_error"].is_number(), "{check}");
        assert!(check["closed_form"].is_number() && check["numeric"].is_number());
    }
    let png = std::fs::read(dir.join("figure4.png")).expect("figure");
    assert_eq!(&png[1..4], b"PNG");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every file of a constructed data set folder (chunks and meta.json), sorted by name.
fn construction_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.join("chunks"))
        .expect("chunks folder")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.push(dir.join("meta.json"));
    paths.sort();
    paths
        .iter()
        .map(|p| {
            (
                p.file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(p).expect("read"),
            )
        })
        .collect()
}

#[test]
fn construct_resumes_after_kill_9_and_shards_merge_to_the_same_bytes() {
    let dir = temp_dir("construct");
    let model = dir.join("std");
    run_ok(&[
        "train",
        "--arch",
        "mlp",
        "--epochs",
        "5",
        "--out",
        model.to_str().expect("utf-8"),
    ]);
    let ckpt = model.join("latest");
    let ckpt = ckpt.to_str().expect("utf-8");
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "construct",
            "det",
            "--model",
            ckpt,
            "--steps",
            "40",
            "--chunk-size",
            "100",
            "--batch-size",
            "50",
            "--out",
            out.to_str().expect("utf-8"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let full = dir.join("full");
    let summary = json_of(&bin().args(args(&full, &["--json"])).output().expect("run"));
    assert_eq!(summary["summary"]["examples"], 1437);
    assert_eq!(summary["summary"]["relabelled"], 1.0);
    assert!(summary["summary"]["distance"]["max"].as_f64().expect("max") <= 3.0 + 1e-4);

    // Kill -9 a second run once it has written its first chunks, then rerun the same command.
    let killed = dir.join("killed");
    let mut child = bin()
        .args(args(&killed, &[]))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let first = killed.join("chunks/chunk-000001.safetensors");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !first.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let written = std::fs::read_dir(killed.join("chunks"))
        .expect("chunks")
        .count();
    assert!(written < 15, "the run finished before it could be killed");
    let out = bin().args(args(&killed, &[])).output().expect("resume");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(construction_files(&full), construction_files(&killed));

    // Three shards as three concurrent processes, then merge.
    let shards: Vec<PathBuf> = (0..3).map(|k| dir.join(format!("shard{k}"))).collect();
    let children: Vec<_> = shards
        .iter()
        .enumerate()
        .map(|(k, d)| {
            bin()
                .args(args(d, &["--shard", &format!("{k}/3")]))
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn shard")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let merged = dir.join("merged");
    let mut merge: Vec<String> = vec!["merge".into(), "--out".into(), merged.display().to_string()];
    merge.extend(shards.iter().map(|s| s.display().to_string()));
    let out = bin().args(&merge).output().expect("merge");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(construction_files(&full), construction_files(&merged));
    // A missing shard is named, not silently skipped.
    let out = run(&[
        "merge",
        "--out",
        dir.join("gap").to_str().expect("utf-8"),
        shards[0].to_str().expect("utf-8"),
        shards[2].to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "in none of the shards");
    // Training on a shard alone is refused with the fix.
    let out = run(&[
        "train",
        "--dataset",
        &format!("constructed:{}", shards[0].display()),
        "--out",
        dir.join("bad").to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "robustness merge");

    // Train on the constructed set; it is tested on the original digits test set.
    let trained = json_of(&run(&[
        "train",
        "--dataset",
        &format!("constructed:{}", merged.display()),
        "--epochs",
        "3",
        "--out",
        dir.join("on-det").to_str().expect("utf-8"),
        "--json",
    ]));
    let acc = trained["test_accuracy"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&acc));
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("on-det/config.json")).expect("config"),
    )
    .expect("json");
    assert_eq!(config["constructed"]["kind"], "det");
    assert_eq!(
        config["augment"], false,
        "Table 3: D_det without augmentation"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn construct_with_an_ensemble_attacks_every_member_and_records_them() {
    let dir = temp_dir("construct-ensemble");
    let a = train_linear_digits(&dir.join("a"), 2);
    let b = train_linear_digits(&dir.join("b"), 4);
    let construct = |out: &str, models: &[&str]| {
        let mut args = vec!["construct", "det", "--limit", "60", "--steps", "10"];
        for m in models {
            args.extend(["--model", m]);
        }
        let out = dir.join(out);
        let out = out.to_str().expect("utf-8").to_string();
        args.extend(["--out", &out, "--json"]);
        json_of(&run(&args))
    };
    let single = construct("single", &[&a]);
    let both = construct("both", &[&a, &b]);
    assert_ne!(single["config_id"], both["config_id"]);
    assert!(both["summary"]["distance"]["max"].as_f64().expect("max") <= 3.0 + 1e-4);
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("both/meta.json")).expect("meta.json"),
    )
    .expect("json");
    assert_eq!(meta["model"]["path"], a.as_str());
    assert_eq!(meta["ensemble"].as_array().map(Vec::len), Some(1));
    assert_eq!(meta["ensemble"][0]["path"], b.as_str());
    let single_meta: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("single/meta.json")).expect("meta.json"),
    )
    .expect("json");
    assert!(
        single_meta.get("ensemble").is_none(),
        "one model: no ensemble entry"
    );
    // The images differ: the second member moved the attack.
    let (_, one) = robustness::construct::store::load(&dir.join("single")).expect("single");
    let (_, two) = robustness::construct::store::load(&dir.join("both")).expect("both");
    assert_eq!(one.images.len(), two.images.len());
    assert_ne!(one.images, two.images);
    // On the digits the seed picks the split: members of different seeds are refused.
    let other = dir.join("c");
    run_ok(&[
        "train",
        "--arch",
        "linear",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--out",
        other.to_str().expect("utf-8"),
    ]);
    let c = other.join("latest");
    let out = run(&[
        "construct",
        "det",
        "--model",
        &a,
        "--model",
        c.to_str().expect("utf-8"),
        "--out",
        dir.join("mixed").to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "seed");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn construct_rejects_bad_input_cleanly() {
    let dir = temp_dir("construct-bad");
    let out = run(&[
        "construct",
        "det",
        "--model",
        dir.join("nope").to_str().expect("utf-8"),
        "--out",
        dir.join("o").to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "nope");
    let out = run(&[
        "construct",
        "sideways",
        "--model",
        "x",
        "--out",
        dir.join("o").to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "unknown construction");
    let out = run(&[
        "train",
        "--dataset",
        &format!("constructed:{}", dir.display()),
        "--out",
        dir.join("t").to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "not a constructed data set");
    let model = train_linear_digits(&dir.join("m"), 1);
    let out = run(&[
        "construct",
        "rand",
        "--model",
        &model,
        "--copies",
        "0",
        "--out",
        dir.join("o").to_str().expect("utf-8"),
    ]);
    assert_clean_error(&out, "--copies must be at least 1");
    assert!(!dir.join("o").exists(), "nothing written");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reproduce_digits_shows_that_relabelled_sets_generalise_and_builds_d_r() {
    let dir = temp_dir("reproduce");
    let out = dir.join("r");
    let args = [
        "reproduce",
        "digits",
        "--scale",
        "quick",
        "--out",
        out.to_str().expect("utf-8"),
        "--json",
    ];
    let result = json_of(&run(&args));
    let rows = result["rows"].as_array().expect("rows");
    let acc = |set: &str| -> f64 {
        rows.iter()
            .find(|r| r["train_set"] == set)
            .and_then(|r| r["test_accuracy"].as_f64())
            .unwrap_or_else(|| panic!("no {set} row: {rows:?}"))
    };
    for r in rows {
        for key in ["experiment", "train_set", "arch", "test_accuracy", "paper"] {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
    }
    assert!(acc("D") > 0.9, "standard model {}", acc("D"));
    // The paper's point: trained only on images relabelled to a wrong class, the models still
    // beat chance (10%) on the original test set by far.
    assert!(acc("D_rand") > 0.5, "D_rand {}", acc("D_rand"));
    assert!(acc("D_det") > 0.25, "D_det {}", acc("D_det"));
    for f in [
        "report.md",
        "results.json",
        "accuracy.png",
        "examples.png",
        "robustness.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    // The robust-features half: an adversarially trained model and D_R / D_NR rows, each with
    // a robust accuracy in [0, 1]; the adversarially trained model is the most robust one.
    for set in ["D (adversarial training)", "D_R", "D_NR"] {
        assert!(acc(set) > 0.5, "{set}: {}", acc(set));
    }
    let robust = |set: &str| -> f64 {
        rows.iter()
            .find(|r| r["train_set"] == set)
            .and_then(|r| r["robust_accuracy"][0][1].as_f64())
            .unwrap_or_else(|| panic!("no robust accuracy for {set}: {rows:?}"))
    };
    assert!(robust("D (adversarial training)") > robust("D") + 0.2);
    // The control: the standard recipe stopped early, at the first epoch count whose clean
    // accuracy reaches the (less accurate) D_R model's, with its robust accuracy.
    let matched = "D (standard, D_R's accuracy)";
    assert!(acc("D_R") < acc("D"), "D_R {} D {}", acc("D_R"), acc("D"));
    assert!(
        acc(matched) >= acc("D_R"),
        "{} < {}",
        acc(matched),
        acc("D_R")
    );
    let epochs = |set: &str| {
        rows.iter()
            .find(|r| r["train_set"] == set)
            .and_then(|r| r["epochs"].as_u64())
            .expect("epochs")
    };
    assert!(epochs(matched) < epochs("D"), "{rows:?}");
    assert!((0.0..=1.0).contains(&robust(matched)));
    assert!(out.join(format!("standard-e{}", epochs(matched))).is_dir());
    // The run just below the target is reported too, when the first rung did not reach it.
    let below = "D (standard, just below D_R's accuracy)";
    let has_below = rows.iter().any(|r| r["train_set"] == below);
    assert_eq!(has_below, epochs(matched) > 1, "{rows:?}");
    if has_below {
        assert!(acc(below) < acc("D_R") && epochs(below) == epochs(matched) - 1);
    }
    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(report.contains(matched), "the report names the control");
    let labels = std::fs::read_to_string(out.join("d_robust/meta.json")).expect("D_R meta");
    assert!(
        labels.contains("\"relabelled\": 0.0"),
        "D_R keeps the labels"
    );
    // A rerun reuses every stage and gives the same numbers, also after the folder has moved
    // (its sets and runs are identified by checksums and settings, not by their paths).
    let written = |root: &Path| {
        ["train-d_det", "train-d_robust", "standard"].map(|run| {
            std::fs::metadata(root.join(run).join("latest").join("model.safetensors"))
                .and_then(|m| m.modified())
                .expect("weights")
        })
    };
    let before = written(&out);
    let moved = dir.join("moved");
    std::fs::rename(&out, &moved).expect("move the folder");
    let mut args = args;
    args[5] = moved.to_str().expect("utf-8");
    let again = json_of(&run(&args));
    assert_eq!(before, written(&moved), "no stage retrained after the move");
    assert_eq!(
        result["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["test_accuracy"].clone())
            .collect::<Vec<_>>(),
        again["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["test_accuracy"].clone())
            .collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn transfer_reports_rates_per_target_and_draws_figure_3() {
    let dir = temp_dir("transfer");
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    for (arch, out) in [("linear", "src"), ("mlp", "mlp")] {
        run_ok(&[
            "train",
            "--arch",
            arch,
            "--epochs",
            "8",
            "--out",
            &path(out),
        ]);
    }
    run_ok(&[
        "construct",
        "det",
        "--model",
        &path("src/latest"),
        "--steps",
        "10",
        "--out",
        &path("det"),
    ]);
    for (arch, out) in [("linear", "det-linear"), ("mlp", "det-mlp")] {
        run_ok(&[
            "train",
            "--arch",
            arch,
            "--epochs",
            "5",
            "--dataset",
            &format!("constructed:{}", path("det")),
            "--out",
            &path(out),
        ]);
    }
    let result = json_of(&run(&[
        "transfer",
        "--source",
        &path("src/latest"),
        "--targets",
        &format!("{},{}", path("src/latest"), path("mlp/latest")),
        "--det-models",
        &format!("{},{}", path("det-linear/latest"), path("det-mlp/latest")),
        "--eps",
        "1.5",
        "--steps",
        "10",
        "--out",
        &path("fig"),
        "--json",
    ]));
    let rows = result["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    // The source as a target transfers exactly its own success rate.
    let own = result["source"]["success_rate"].as_f64().expect("rate");
    assert_eq!(rows[0]["transfer_success_rate"].as_f64(), Some(own));
    assert!(own > 0.5, "the attack works on its own model: {own}");
    for r in rows {
        for key in ["transfer_success_rate", "d_det_accuracy", "clean_accuracy"] {
            let v = r[key].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&v), "{key}: {r}");
        }
    }
    for f in ["transfer.png", "transfer.md", "transfer.json"] {
        assert!(dir.join("fig").join(f).is_file(), "missing {f}");
    }
    let o = run(&[
        "transfer",
        "--source",
        &path("src/latest"),
        "--targets",
        &path("mlp/latest"),
        "--det-models",
        &format!("{},{}", path("det-linear/latest"), path("det-mlp/latest")),
    ]);
    assert_clean_error(&o, "one per target");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sharded_robust_evaluation_adds_up_to_the_unsharded_one() {
    let dir = temp_dir("eval-shards");
    let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
    train_linear_digits(&dir.join("m"), 5);
    let eval = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--checkpoint",
            "PLACEHOLDER",
            "--attack",
            "pgd",
            "--eps",
            "0.5,1",
            "--steps",
            "5",
            "--random-start",
            "--batch-size",
            "40",
        ];
        let ckpt = path("m/latest");
        a[2] = &ckpt;
        a.extend_from_slice(extra);
        bin().args(&a).output().expect("run")
    };
    let whole = json_of(&eval(&["--json"]));
    for k in 0..4 {
        let spec = format!("{k}/4");
        let o = eval(&["--shard", &spec, "--out", &path("parts")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let parts: Vec<String> = (0..4)
        .map(|k| path(&format!("parts/eval-shard-{k}-of-4.json")))
        .collect();
    let mut args = vec!["merge-eval".to_string()];
    args.extend(parts.iter().cloned());
    args.push("--json".into());
    let merged = json_of(&bin().args(&args).output().expect("merge-eval"));
    for (a, b) in whole["curve"]
        .as_array()
        .expect("curve")
        .iter()
        .zip(merged["curve"].as_array().expect("curve"))
    {
        for key in [
            "clean_accuracy",
            "robust_accuracy",
            "examples",
            "max_perturbation_norm",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
    }
    let o = run(&["merge-eval", &parts[0], &parts[1], &parts[3]]);
    assert_clean_error(&o, "shards 2 of 4 are missing");
    let _ = std::fs::remove_dir_all(dir);
}

fn interop_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../robustness/tests/fixtures/interop")
        .join(name)
}

fn read_logits(path: &Path) -> Vec<f32> {
    let t = robustness::interop::torchfile::read_tensors(path).expect("logits file");
    assert_eq!(t.len(), 1);
    t[0].to_f32()
}

#[test]
fn import_export_and_predict_round_trip_through_pytorch_files() {
    use robustness::interop::torchfile::{TorchTensor, write_tensor_list};
    let dir = temp_dir("interop");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(interop_fixture("logits.json")).expect("fixture"),
    )
    .expect("json");
    let fx = &fx["torch_mlp"];
    let inputs: Vec<f32> = fx["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|v| v.as_f64().expect("f") as f32)
        .collect();
    let expected: Vec<f32> = fx["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|v| v.as_f64().expect("f") as f32)
        .collect();
    let images = dir.join("images.pt");
    write_tensor_list(&images, &[TorchTensor::f32(vec![5, 1, 8, 8], &inputs)]).expect("images");

    // A plain state dict with no normaliser: digits has no fixed one, so --mean / --std are needed.
    let sd = interop_fixture("torch_mlp.pt");
    let a = dir.join("a");
    let base = [
        "import",
        "--from",
        "pytorch",
        "--arch",
        "mlp",
        "--dataset",
        "digits",
    ];
    let mut args: Vec<String> = base.iter().map(|x| x.to_string()).collect();
    args.extend([s(&sd), "--out".into(), s(&a)]);
    assert_clean_error(
        &bin().args(&args).output().expect("run"),
        "--mean and --std",
    );
    args.extend([
        "--mean".into(),
        "0.3".into(),
        "--std".into(),
        "0.25".into(),
        "--json".into(),
    ]);
    let imported = json_of(&bin().args(&args).output().expect("run"));
    assert_eq!(imported["imported_from"]["format"], "pytorch");

    // Export, then import the export (its normaliser travels with it).
    let exported = dir.join("a.safetensors");
    json_of(&run(&[
        "export",
        &s(&a.join("")),
        "--out",
        &s(&exported),
        "--json",
    ]));
    let b = dir.join("b");
    run_ok(&[
        "import",
        "--from",
        "pytorch",
        "--arch",
        "mlp",
        "--dataset",
        "digits",
        &s(&exported),
        "--out",
        &s(&b),
    ]);

    for (ckpt, name) in [(&a, "a.pt"), (&b, "b.pt")] {
        let logits = dir.join(name);
        run_ok(&[
            "predict",
            "--checkpoint",
            &s(ckpt),
            "--images",
            &s(&images),
            "--out",
            &s(&logits),
        ]);
        let ours = read_logits(&logits);
        let worst = ours
            .iter()
            .zip(&expected)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{name}: logits differ from PyTorch's by {worst}"
        );
    }

    // Wrong architecture: the error lists what does not fit; wrong image shape: a clear error.
    let out = run(&[
        "import",
        "--from",
        "pytorch",
        "--arch",
        "cnn",
        "--dataset",
        "digits",
        "--mean",
        "0.3",
        "--std",
        "0.25",
        &s(&sd),
        "--out",
        &s(&dir.join("c")),
    ]);
    assert_clean_error(&out, "missing: blocks.0.bn.bias");
    assert!(
        !dir.join("c").exists(),
        "no checkpoint after a failed import"
    );
    let wrong = dir.join("wrong.pt");
    write_tensor_list(&wrong, &[TorchTensor::f32(vec![1, 3, 8, 8], &[0.5; 192])]).expect("wrong");
    let out = run(&[
        "predict",
        "--checkpoint",
        &s(&a),
        "--images",
        &s(&wrong),
        "--out",
        &s(&dir.join("w.pt")),
    ]);
    assert_clean_error(&out, "the model takes [N, 1, 8, 8]");
    let out = run(&[
        "predict",
        "--checkpoint",
        &s(&a),
        "--images",
        &s(&sd),
        "--out",
        &s(&dir.join("w.pt")),
    ]);
    assert_clean_error(&out, "expected a tensor or a list of tensors");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn constructed_sets_export_to_the_released_layout() {
    let dir = temp_dir("export-dataset");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let model = train_linear_digits(&dir.join("std"), 1);
    // D_det of 60 training images, 5 steps; `extra` flags added.
    let construct_det = |out: &Path, extra: &[&str]| {
        let out = s(out);
        let mut args = vec![
            "construct",
            "det",
            "--model",
            &model,
            "--steps",
            "5",
            "--limit",
            "60",
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        run_ok(&args);
    };
    let set = dir.join("det");
    construct_det(&set, &[]);
    let released = dir.join("ddet_digits");
    run_ok(&[
        "export-dataset",
        &s(&set),
        "--out",
        &s(&released),
        "--chunk",
        "25",
    ]);
    let (meta, ours) = robustness::construct::store::load(&set).expect("our set");
    // --limit 60 takes every len/60-th training image (the model's split, seed 0), not the
    // first 60: D_det's labels are those images' labels plus one.
    assert_eq!(meta.source.limit, Some(60));
    assert!(meta.source.limit_spread);
    let train = robustness::data::digits::load(0).expect("digits").train;
    let expected: Vec<usize> = train
        .spread(60)
        .labels
        .iter()
        .map(|y| (y + 1) % 10)
        .collect();
    assert_eq!(ours.labels, expected);
    assert_ne!(
        train.spread(60).labels,
        train.labels[..60].to_vec(),
        "the first 60 would not test the spread"
    );
    // --limit-first: the first 60, recorded without limit_spread.
    let first = dir.join("det-first");
    construct_det(&first, &["--limit-first"]);
    let (meta_first, ours_first) = robustness::construct::store::load(&first).expect("first");
    assert!(!meta_first.source.limit_spread);
    let expected: Vec<usize> = train.labels[..60].iter().map(|y| (y + 1) % 10).collect();
    assert_eq!(ours_first.labels, expected);
    let back = robustness::interop::released::load(&released, &ours.class_names).expect("released");
    assert_eq!(back.len(), 60);
    assert_eq!(back.images, ours.images);
    assert_eq!(back.labels, ours.labels);
    // Three list items of 25, 25 and 10 images, as ch.cat(ch.load(...)) expects.
    let items = robustness::interop::torchfile::read_tensors(
        &released.join(robustness::interop::released::IMAGES_FILE),
    )
    .expect("items");
    assert_eq!(
        items.iter().map(|t| t.shape[0]).collect::<Vec<_>>(),
        vec![25, 25, 10]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn released_sets_train_against_the_cifar_test_set() {
    let Some(data) = std::env::var_os("ROBUSTNESS_DATA")
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
            p.exists().then_some(p)
        })
    else {
        eprintln!("skipping: no CIFAR-10 data (set ROBUSTNESS_DATA or place it in ../shared/data)");
        return;
    };
    let dir = temp_dir("train-released");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let set = interop_fixture("released_legacy/ddet_CIFAR");
    let out = run(&[
        "train",
        "--dataset",
        &format!("constructed:{}", s(&set)),
        "--data",
        &s(&data),
        "--arch",
        "linear",
        "--epochs",
        "1",
        "--out",
        &s(&dir.join("run")),
        "--json",
    ]);
    let v = json_of(&out);
    assert_eq!(v["dataset"], "cifar10");
    assert_eq!(v["epochs"], 1);
    let config = std::fs::read_to_string(dir.join("run/config.json")).expect("config");
    assert!(config.contains("\"det\""), "{config}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JSON header of a SafeTensors file.
fn safetensors_header(path: &Path) -> Value {
    let bytes = std::fs::read(path).expect("read safetensors");
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    serde_json::from_slice(&bytes[8..8 + len]).expect("SafeTensors header is JSON")
}

#[test]
fn synthesize_visualize_and_invert_on_a_digits_model() {
    let dir = temp_dir("synthesis");
    let run_dir = dir.join("run").to_string_lossy().into_owned();
    let checkpoint = trained_checkpoint(&[
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "6",
        "--out",
        &run_dir,
    ]);
    let out_of = |name: &str| dir.join(name).to_string_lossy().into_owned();

    // Class-conditional generation of one class by name-or-index, then of every class.
    let out = out_of("synth");
    let synth = json_of(&run(&[
        "synthesize",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--class",
        "3",
        "--n",
        "4",
        "--steps",
        "20",
        "--out",
        &out,
        "--json",
    ]));
    for file in [
        "grid.png",
        "seeds.png",
        "images.safetensors",
        "synthesis.json",
    ] {
        assert!(Path::new(&out).join(file).is_file(), "{file} missing");
    }
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&out).join("synthesis.json")).expect("json"),
    )
    .expect("synthesis.json parses");
    assert_eq!(written["per_image"], synth["per_image"]);
    assert_eq!(synth["per_image"].as_array().expect("per image").len(), 4);
    assert_eq!(synth["config"]["attack"]["eps"], 30.0);
    assert_eq!(
        synth["checkpoint"]["sha256"].as_str().expect("sha").len(),
        64
    );
    let p = synth["mean_class_probability"].as_f64().expect("p");
    let p0 = synth["mean_seed_class_probability"].as_f64().expect("p0");
    assert!(p >= p0 && p > 0.5, "class probability {p0} -> {p}");
    let header = safetensors_header(&Path::new(&out).join("images.safetensors"));
    assert_eq!(header["images"]["shape"], serde_json::json!([4, 1, 8, 8]));
    assert_eq!(header["target"]["dtype"], "I64");

    let all = json_of(&run(&[
        "synthesize",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--class",
        "all",
        "--n",
        "2",
        "--steps",
        "5",
        "--out",
        &out_of("synth-all"),
        "--json",
    ]));
    assert_eq!(all["per_image"].as_array().expect("per image").len(), 20);
    assert_clean_error(
        &run(&[
            "synthesize",
            "--checkpoint",
            &checkpoint,
            "--dataset",
            "digits",
            "--class",
            "giraffe",
            "--out",
            &out_of("bad"),
        ]),
        "giraffe",
    );

    // Feature visualisation of two units; an out-of-range unit is a clear error.
    let out = out_of("vis");
    let vis = json_of(&run(&[
        "visualize",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--feature",
        "0,5",
        "--indices",
        "0,5,9",
        "--steps",
        "20",
        "--out",
        &out,
        "--json",
    ]));
    let units = vis["units"].as_array().expect("units");
    assert_eq!(units.len(), 2);
    assert_eq!(vis["indices"], serde_json::json!([0, 5, 9]));
    for u in units {
        assert!(
            u["mean_activation"].as_f64().expect("a")
                >= u["mean_start_activation"].as_f64().expect("a0")
        );
    }
    for file in ["grid.png", "images.safetensors", "visualize.json"] {
        assert!(Path::new(&out).join(file).is_file(), "{file} missing");
    }
    assert_clean_error(
        &run(&[
            "visualize",
            "--checkpoint",
            &checkpoint,
            "--dataset",
            "digits",
            "--feature",
            "100000",
            "--out",
            &out_of("bad"),
        ]),
        "--feature 100000",
    );

    // Inversion of three test images from noise shrinks the representation distance.
    let out = out_of("inv");
    let inv = json_of(&run(&[
        "invert",
        "--checkpoint",
        &checkpoint,
        "--dataset",
        "digits",
        "--indices",
        "0,1,2",
        "--steps",
        "100",
        "--out",
        &out,
        "--json",
    ]));
    let d0 = inv["mean_start_distance"].as_f64().expect("d0");
    let d = inv["mean_distance"].as_f64().expect("d");
    assert!(d < 0.5 * d0, "distance {d0} -> {d}");
    assert_eq!(inv["indices"], serde_json::json!([0, 1, 2]));
    for file in ["grid.png", "images.safetensors", "invert.json"] {
        assert!(Path::new(&out).join(file).is_file(), "{file} missing");
    }
    assert_clean_error(
        &run(&[
            "invert",
            "--checkpoint",
            &checkpoint,
            "--dataset",
            "digits",
            "--indices",
            "5000",
            "--out",
            &out_of("bad"),
        ]),
        "5000",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_zero_limit_is_refused_before_anything_is_loaded() {
    let out = run(&["eval", "--checkpoint", "no-such-run/latest", "--limit", "0"]);
    assert_clean_error(&out, "--limit 0");
    let out = run(&[
        "transfer",
        "--source",
        "no-such-run/latest",
        "--targets",
        "also-missing/latest",
        "--limit",
        "0",
    ]);
    assert_clean_error(&out, "--limit 0");
}

#[test]
fn a_set_built_from_the_test_images_is_evaluated_not_trained_on() {
    // The paper's Table 8: a model on a robust *test* set (construct --from test), evaluated
    // with eval --constructed; train refuses such a set.
    let dir = temp_dir("from-test");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let model = dir.join("m");
    let ckpt = train_linear_digits(&model, 1);
    let set = dir.join("robust-test");
    run_ok(&[
        "construct",
        "robust",
        "--model",
        &ckpt,
        "--from",
        "test",
        "--limit",
        "30",
        "--steps",
        "3",
        "--step-size",
        "0.5",
        "--out",
        &s(&set),
    ]);
    let (meta, built) = robustness::construct::store::load(&set).expect("the set");
    assert!(meta.source.from_test);
    assert_eq!(built.len(), 30);
    // Labels are those of 30 test images spread over the model's test split (seed 0).
    let test = robustness::data::digits::load(0).expect("digits").test;
    assert_eq!(built.labels, test.spread(30).labels);

    let out = run_ok(&[
        "eval",
        "--checkpoint",
        &ckpt,
        "--constructed",
        &s(&set),
        "--json",
    ]);
    let v = json_of(&out);
    assert_eq!(v["examples"], 30);
    let acc = v["test_accuracy"].as_f64().expect("accuracy");
    let out = run_ok(&[
        "eval",
        "--checkpoint",
        &ckpt,
        "--constructed",
        &s(&set),
        "--limit",
        "10",
        "--attack",
        "pgd",
        "--eps",
        "1",
        "--steps",
        "3",
        "--json",
    ]);
    let r = json_of(&out);
    assert_eq!(r["examples"], 10);
    assert!(
        r["robust_accuracy"].as_f64().expect("robust")
            <= r["clean_accuracy"].as_f64().expect("clean")
    );
    // The same images through the library agree with the command's clean accuracy.
    let device = robustness::Device::flex();
    let (m, _) =
        robustness::train::checkpoint::load_for_data(&model.join("latest"), &built, &device)
            .expect("model");
    let direct = robustness::eval::evaluate(&m, &built, 256, &device);
    assert!(
        (direct.accuracy - acc).abs() < 1e-9,
        "{} vs {acc}",
        direct.accuracy
    );

    let out = run(&[
        "train",
        "--dataset",
        &format!("constructed:{}", s(&set)),
        "--out",
        &s(&dir.join("t")),
    ]);
    assert_clean_error(&out, "built from the test images");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reproduce_toy_keeps_only_the_robust_feature_in_d_r_and_robustifies() {
    // The theory's prediction on the synthetic feature model (Tsipras et al.): D_R carries the
    // robust feature's signal and not the non-robust ones', and a standard model trained on it
    // is as robust as adversarial training; D_NR and D are not robust.
    let dir = temp_dir("reproduce-toy");
    let out = dir.join("r");
    let result = json_of(&run(&[
        "reproduce",
        "toy",
        "--scale",
        "quick",
        "--out",
        out.to_str().expect("utf-8"),
        "--json",
    ]));
    let rows = result["rows"].as_array().expect("rows").clone();
    let row = |set: &str| -> Value {
        rows.iter()
            .find(|r| r["train_set"] == set)
            .cloned()
            .unwrap_or_else(|| panic!("no {set} row: {rows:?}"))
    };
    let robust = |set: &str| row(set)["robust_accuracy"][0][1].as_f64().expect("robust");
    let signal = |set: &str, k: usize| row(set)["feature_signal"][k].as_f64().expect("signal");
    // D carries both signals; D_R only the robust one, D_NR both.
    assert!(
        signal("D", 1) > 0.5,
        "D non-robust signal {}",
        signal("D", 1)
    );
    assert!(
        signal("D_R", 0) > 0.8,
        "D_R robust signal {}",
        signal("D_R", 0)
    );
    assert!(
        signal("D_R", 1).abs() < 0.1,
        "D_R non-robust signal {}",
        signal("D_R", 1)
    );
    assert!(
        signal("D_NR", 1) > 0.5,
        "D_NR non-robust signal {}",
        signal("D_NR", 1)
    );
    // Robustification without adversarial training.
    assert!(
        robust("D_R") > robust("D") + 0.3,
        "D_R {} D {}",
        robust("D_R"),
        robust("D")
    );
    assert!(robust("D_R") > robust("D_NR") + 0.3);
    assert!(robust("D (adversarial training)") > 0.9);
    // Relabelled images: D_rand's model still learns the true classes.
    assert!(row("D_rand")["test_accuracy"].as_f64().expect("acc") > 0.9);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reproduce_names_its_experiments_and_refuses_unknown_ones() {
    let dir = temp_dir("reproduce-names");
    let out = dir.join("r").to_string_lossy().into_owned();
    assert_clean_error(
        &run(&["reproduce", "imagenet", "--out", &out]),
        "unknown experiment",
    );
    // `cats-dogs` (the issue's name) is `catdog`: it gets as far as loading CIFAR-10.
    let empty = dir.join("no-data");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let res = run(&[
        "reproduce",
        "cats-dogs",
        "--data",
        &empty.to_string_lossy(),
        "--out",
        &out,
    ]);
    assert_clean_error(&res, "cifar");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!stderr.contains("unknown experiment"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_limit_trains_on_part_of_the_training_set_and_records_it() {
    let dir = temp_dir("train-limit");
    let out = |tag: &str| dir.join(tag).to_str().expect("utf-8").to_string();
    let train = |tag: &str, extra: &[&str]| {
        let o = out(tag);
        let mut args = vec![
            "train",
            "--dataset",
            "digits",
            "--arch",
            "mlp",
            "--epochs",
            "1",
            "--out",
            &o,
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let full = json_of(&train("full", &[]));
    let spread = json_of(&train("spread", &["--limit", "200"]));
    let first = json_of(&train("first", &["--limit", "200", "--limit-first"]));
    // The embedded digits' training split has 1,437 images.
    assert_eq!(full["train_images"], 1437);
    assert_eq!(spread["train_images"], 200);
    assert_eq!(first["train_images"], 200);
    let config = |tag: &str| -> Value {
        let text = std::fs::read_to_string(dir.join(tag).join("config.json")).expect("config");
        serde_json::from_str(&text).expect("config JSON")
    };
    assert!(config("full").get("train_limit").is_none());
    assert_eq!(config("spread")["train_limit"]["images"], 200);
    assert_eq!(config("spread")["train_limit"]["first"], false);
    assert_eq!(config("first")["train_limit"]["first"], true);
    // Fewer images, fewer SGD steps: the two subsets give other weights than the full set, and
    // spread and first are different subsets.
    let weights = |tag: &str| {
        std::fs::read(dir.join(tag).join("latest").join("model.safetensors")).expect("weights")
    };
    assert_ne!(weights("full"), weights("spread"));
    assert_ne!(weights("spread"), weights("first"));
    // More images than the set holds, and zero: clean errors naming the flag.
    assert_clean_error(&train("too-many", &["--limit", "5000"]), "--limit 5000");
    assert_clean_error(&train("zero", &["--limit", "0"]), "--limit 0");
    assert_clean_error(&train("alone", &["--limit-first"]), "--limit");
    // --resume with another --limit is refused (the run's config differs).
    let res = train("spread", &["--limit", "300", "--resume"]);
    assert_clean_error(&res, "other settings");
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes the embedded digits (split seed 0) as an image folder: `root/{train,test}/<digit>/*.png`.
fn digits_folder(root: &Path) {
    let split = robustness::data::digits::load(0).expect("the digits are embedded");
    for (name, set) in [("train", &split.train), ("test", &split.test)] {
        for i in 0..set.len() {
            let dir = root.join(name).join(&set.class_names[set.labels[i]]);
            std::fs::create_dir_all(&dir).expect("create class folder");
            let pixels = set.image(i);
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([(pixels[(y * 8 + x) as usize] * 255.0).round() as u8])
            });
            img.save(dir.join(format!("{i:04}.png")))
                .expect("write test PNG");
        }
    }
}

#[test]
fn an_image_folder_trains_evaluates_and_feeds_a_construction() {
    let dir = temp_dir("folder");
    let root = dir.join("digits-png");
    digits_folder(&root);
    let dataset = format!("folder:{}", root.display());
    let run_dir = dir.join("run");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let trained = json_of(&run(&[
        "train",
        "--dataset",
        &dataset,
        "--arch",
        "cnn",
        "--epochs",
        "8",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--no-augment",
        "--out",
        &s(&run_dir),
        "--json",
    ]));
    assert_eq!(trained["dataset"], "folder");
    let accuracy = trained["best_test_accuracy"].as_f64().expect("accuracy");
    // 10 classes: chance is 10%; the small CNN learns the 8x8 digits read back from PNG files.
    assert!(accuracy > 0.8, "test accuracy {accuracy}");
    let config: Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("config.json")).expect("config.json"))
            .expect("config.json is JSON");
    assert_eq!(config["folder"]["root"], s(&root));
    assert_eq!(config["arch"], "cnn", "--arch wins over a folder's default");
    // From 128 pixels on, a folder's default architecture is the ImageNet ResNet-18.
    run_ok(&[
        "train",
        "--dataset",
        &dataset,
        "--image-size",
        "128",
        "--limit",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        &s(&dir.join("run-128")),
    ]);
    let config: Value = serde_json::from_slice(
        &std::fs::read(dir.join("run-128/config.json")).expect("config.json"),
    )
    .expect("config.json is JSON");
    assert_eq!(config["arch"], "resnet18-imagenet");
    let best = s(&run_dir.join("best"));
    // Evaluation reloads the folder: the same accuracy on the same 360 test images.
    let eval = json_of(&run(&[
        "eval",
        "--checkpoint",
        &best,
        "--dataset",
        &dataset,
        "--json",
    ]));
    assert_eq!(eval["examples"], 360);
    assert_eq!(eval["test_accuracy"].as_f64(), Some(accuracy));
    assert_eq!(eval["class_names"][3], "3");
    // A class subset of the folder (read alone): the model answers through those two logits.
    assert_clean_error(
        &run(&[
            "eval",
            "--checkpoint",
            &best,
            "--dataset",
            &dataset,
            "--classes",
            "5,three",
        ]),
        "unknown class 'three'",
    );
    let pair = json_of(&run(&[
        "eval",
        "--checkpoint",
        &best,
        "--dataset",
        &dataset,
        "--classes",
        "5,3",
        "--json",
    ]));
    let row_sum = |k: usize| -> u64 {
        eval["confusion"][k]
            .as_array()
            .expect("confusion row")
            .iter()
            .map(|v| v.as_u64().expect("count"))
            .sum()
    };
    assert_eq!(pair["class_names"], serde_json::json!(["5", "3"]));
    assert_eq!(pair["examples"].as_u64(), Some(row_sum(5) + row_sum(3)));
    // Export and import for the folder's layout (its classes and image size): the same model.
    let exported = dir.join("folder-model.safetensors");
    run_ok(&["export", &best, "--out", &s(&exported)]);
    let imported = dir.join("imported");
    run_ok(&[
        "import",
        "--from",
        "pytorch",
        "--arch",
        "cnn",
        "--dataset",
        &dataset,
        &s(&exported),
        "--out",
        &s(&imported),
    ]);
    let eval_imported = json_of(&run(&[
        "eval",
        "--checkpoint",
        &s(&imported),
        "--dataset",
        &dataset,
        "--json",
    ]));
    assert_eq!(eval_imported["test_accuracy"].as_f64(), Some(accuracy));
    assert_eq!(eval_imported["class_names"], eval["class_names"]);
    // The images are RGB (grey repeated): a model of the 1-channel digits does not fit them.
    assert_clean_error(
        &run(&["eval", "--checkpoint", &best, "--dataset", "digits"]),
        "1x8x8",
    );
    // A construction from a class subset of the folder records it, and training on the
    // constructed set tests on those classes of the folder's test images.
    let set = dir.join("det");
    run_ok(&[
        "construct",
        "det",
        "--model",
        &best,
        "--dataset",
        &dataset,
        "--classes",
        "5,3",
        "--limit",
        "100",
        "--steps",
        "3",
        "--out",
        &s(&set),
    ]);
    // From here on one training image is undecodable: what needs only the test split (eval,
    // training on the constructed set, which tests on the folder) never decodes it.
    let junk = root.join("train/9/zz-junk.png");
    std::fs::write(&junk, b"not a PNG").expect("write");
    let eval_again = json_of(&run(&[
        "eval",
        "--checkpoint",
        &best,
        "--dataset",
        &dataset,
        "--json",
    ]));
    assert_eq!(eval_again["test_accuracy"].as_f64(), Some(accuracy));
    // --limit decodes only the spread images; --resize R sizes before the crop.
    let eval_args = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--checkpoint",
            &best,
            "--dataset",
            &dataset,
            "--json",
        ];
        a.extend_from_slice(extra);
        json_of(&run(&a))
    };
    assert_eq!(eval_args(&["--limit", "50"])["examples"], 50);
    let resized = eval_args(&["--image-size", "8", "--resize", "10"]);
    assert_eq!(resized["examples"], 360);
    assert!(resized["test_accuracy"].as_f64().expect("accuracy") > 0.3);
    assert_clean_error(
        &run(&[
            "eval",
            "--checkpoint",
            &best,
            "--dataset",
            &dataset,
            "--image-size",
            "8",
            "--resize",
            "4",
        ]),
        "smaller than the image size",
    );
    assert_clean_error(
        &run(&[
            "eval",
            "--checkpoint",
            &best,
            "--dataset",
            "digits",
            "--resize",
            "10",
        ]),
        "--resize applies to image folders",
    );
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            &dataset,
            "--out",
            &s(&dir.join("never")),
        ]),
        "zz-junk.png",
    );
    let retrained = json_of(&run(&[
        "train",
        "--dataset",
        &format!("constructed:{}", s(&set)),
        "--epochs",
        "1",
        "--out",
        &s(&dir.join("run-det")),
        "--json",
    ]));
    assert_eq!(retrained["dataset"], "folder");
    assert_eq!(retrained["train_images"], 100);
    let config: Value = serde_json::from_slice(
        &std::fs::read(dir.join("run-det/config.json")).expect("config.json"),
    )
    .expect("config.json is JSON");
    assert_eq!(config["folder"]["root"], s(&root));
    assert_eq!(config["classes"], serde_json::json!(["5", "3"]));
    // Bad folder flags are one-line errors.
    let out = s(&dir.join("never"));
    assert_clean_error(
        &run(&["train", "--dataset", "folder:", "--out", &out]),
        "folder:PATH",
    );
    assert_clean_error(
        &run(&["train", "--dataset", "folder", "--out", &out]),
        "needs its folder",
    );
    assert_clean_error(
        &run(&["train", "--image-size", "8", "--out", &out]),
        "--image-size applies to image folders",
    );
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            &format!("folder:{}", s(&dir.join("absent"))),
            "--out",
            &out,
        ]),
        "no such folder",
    );
    assert_clean_error(
        &run(&[
            "train",
            "--dataset",
            &dataset,
            "--data",
            &s(&root),
            "--out",
            &out,
        ]),
        "--data does not apply",
    );
    assert!(!dir.join("never").exists(), "a failed run wrote its folder");
    let _ = std::fs::remove_dir_all(&dir);
}
