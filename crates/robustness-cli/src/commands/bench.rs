//! `robustness bench`: train-step time of an architecture, median and spread after warm-up.

use crate::cli::{BenchArgs, WorkloadArg};
use crate::commands::print_json;
use anyhow::{Context, Result, bail};
use robustness::{Arch, ModelSpec, bench};
use serde_json::json;

pub fn run(args: BenchArgs, device: &robustness::Device) -> Result<()> {
    let arch: Arch = args.arch.parse()?;
    let dims: Vec<usize> = args
        .shape
        .split('x')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--shape '{}': expected CxHxW, e.g. 3x32x32", args.shape))?;
    let [c, h, w] = dims[..] else {
        bail!(
            "--shape '{}': expected three numbers CxHxW, e.g. 3x32x32",
            args.shape
        );
    };
    if args.batch == 0 || args.iters == 0 || c == 0 || h == 0 || w == 0 || args.classes < 2 {
        bail!("--batch, --iters and the shape must be positive, and --classes at least 2");
    }
    let spec = ModelSpec {
        arch,
        channels: c,
        height: h,
        width: w,
        num_classes: args.classes,
        mean: vec![0.5; c],
        std: vec![0.25; c],
        images: true,
    };
    if args.phases {
        let p = bench::phases(&spec, args.batch, args.warmup, args.iters, device)?;
        if args.json {
            return print_json(&json!({
                "arch": arch, "batch": args.batch, "shape": [c, h, w],
                "forward_ms": p.forward_ms,
                "forward_backward_ms": p.forward_backward_ms,
                "train_step_ms": p.train_step_ms,
                "forward_gflops": bench::forward_flops(&spec) * args.batch as f64 / (p.forward_ms * 1e-3) / 1e9,
            }));
        }
        outln!(
            "{arch} batch {}: inference forward {:.1} ms, forward+backward {:.1} ms, full step {:.1} ms (backward ~{:.1} ms, optimizer ~{:.1} ms)",
            args.batch,
            p.forward_ms,
            p.forward_backward_ms,
            p.train_step_ms,
            p.forward_backward_ms - p.forward_ms,
            p.train_step_ms - p.forward_backward_ms
        );
        return Ok(());
    }
    if args.workload != WorkloadArg::Train {
        return attack(&args, &spec, device);
    }
    let timing = bench::train_step(&spec, args.batch, args.warmup, args.iters, device)?;
    let gflops = bench::train_step_flops(&spec, args.batch) / (timing.median_ms * 1e-3) / 1e9;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.json {
        return print_json(&json!({
            "arch": arch,
            "batch": args.batch,
            "shape": [c, h, w],
            "train_step_ms": timing.median_ms,
            "min_ms": timing.min_ms,
            "max_ms": timing.max_ms,
            "samples_ms": timing.samples_ms,
            "gflops": gflops,
            "threads": threads,
            "device": robustness::device::describe(device),
            "cpu_kernels": robustness::device::cpu_kernels(),
        }));
    }
    outln!(
        "{arch} batch {} ({c}x{h}x{w}): train step median {:.1} ms (min {:.1}, max {:.1}, {} steps after {} warm-up), {:.1} GFLOP/s",
        args.batch,
        timing.median_ms,
        timing.min_ms,
        timing.max_ms,
        args.iters,
        args.warmup,
        gflops
    );
    Ok(())
}

/// Times one step of the PGD loop (pgd) or of representation inversion (invert).
fn attack(args: &BenchArgs, spec: &ModelSpec, device: &robustness::Device) -> Result<()> {
    let (kind, key, what) = match args.workload {
        WorkloadArg::Invert => (
            bench::AttackStep::Inversion,
            "invert_step_ms",
            "inversion step",
        ),
        _ => (bench::AttackStep::Pgd, "pgd_step_ms", "L2 PGD step"),
    };
    let timing = bench::attack_step(kind, spec, args.batch, args.warmup, args.iters, device)?;
    let gflops = bench::attack_step_flops(spec, args.batch) / (timing.median_ms * 1e-3) / 1e9;
    // Images x steps per second: the attack throughput a construction or evaluation sees.
    let throughput = args.batch as f64 / (timing.median_ms * 1e-3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.json {
        return print_json(&json!({
            "arch": spec.arch,
            "batch": args.batch,
            "shape": [spec.channels, spec.height, spec.width],
            "workload": kind,
            key: timing.median_ms,
            "min_ms": timing.min_ms,
            "max_ms": timing.max_ms,
            "samples_ms": timing.samples_ms,
            "images_steps_per_s": throughput,
            "gflops": gflops,
            "threads": threads,
            "device": robustness::device::describe(device),
            "cpu_kernels": robustness::device::cpu_kernels(),
        }));
    }
    outln!(
        "{} batch {}: {what} median {:.1} ms (min {:.1}, max {:.1}), {:.0} image-steps/s, {:.1} GFLOP/s",
        spec.arch,
        args.batch,
        timing.median_ms,
        timing.min_ms,
        timing.max_ms,
        throughput,
        gflops
    );
    Ok(())
}
