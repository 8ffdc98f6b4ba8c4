#!/usr/bin/env python3
"""Markdown tables from the results.jsonl of `scripts/bench-gpu`.

  python3 scripts/gpu_table.py OUT/results.jsonl
"""

import json
import sys


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def step_ms(r):
    for k in ("median_ms", "train_step_ms", "pgd_step_ms"):
        if k in r:
            return r[k]
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = load(sys.argv[1])
    out = []
    dev = [r for r in rows if r.get("what") == "device"]
    if dev:
        out.append(f"GPU: {dev[0].get('gpu')}, PyTorch {dev[0].get('torch')}\n")

    bench = [r for r in rows if r.get("what") == "bench"]
    keys = sorted({(r["workload"], r["arch"], r["batch"]) for r in bench},
                  key=lambda k: (k[0] != "train", k[1], k[2]))
    def find(side, prec, k):
        for r in bench:
            if r["side"] == side and (r["workload"], r["arch"], r["batch"]) == k and \
                    (prec is None or r.get("precision") == prec):
                return step_ms(r)
        return None
    if keys:
        out.append("| step | ours, Vulkan f32 (ms) | PyTorch fp32 (ms) | ratio | PyTorch TF32 (ms) "
                   "| PyTorch bf16 autocast (ms) |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for k in keys:
            ours = find("ours-vulkan", None, k)
            fp32 = find("pytorch", "fp32", k)
            ratio = ours / fp32 if ours and fp32 else None
            out.append(f"| {k[0]} {k[1]} b{k[2]} | {fmt(ours, 2)} | {fmt(fp32, 2)} | "
                       f"{fmt(ratio, 2)} | {fmt(find('pytorch', 'tf32', k), 2)} | "
                       f"{fmt(find('pytorch', 'bf16', k), 2)} |")
        out.append("")

    train = [r for r in rows if r.get("what") == "train"]
    if train:
        out.append("| ResNet-18, CIFAR-10 | images | epochs | seconds per epoch | test accuracy |")
        out.append("|---|---:|---:|---:|---:|")
        for r in train:
            if r["side"] == "ours-vulkan":
                ms = r.get("metrics") or []
                secs = sorted(m["train_seconds"] for m in ms)
                med = secs[len(secs) // 2] if secs else None
                out.append(f"| ours, Vulkan f32 | 50000 | {r.get('epochs')} | {fmt(med)} | "
                           f"{fmt(100 * r['test_accuracy'], 2)}% |")
            else:
                out.append(f"| PyTorch {r['precision']} | {r['images']} | {r['epochs']} | "
                           f"{fmt(r['median_epoch_seconds'])} | "
                           f"{fmt(100 * r['test_accuracy'], 2)}% |")
        out.append("")

    det = [r for r in rows if r.get("what") == "construct_det"]
    if det:
        out.append("| D_det construction (100 steps) | images | seconds | images/s | "
                   "50,000 images (extrapolated, s) | attack success |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for r in det:
            name = "ours, Vulkan f32" if r["side"] == "ours-vulkan" else \
                f"PyTorch {r['precision']}"
            succ = r.get("attack_success")
            out.append(f"| {name} | {r['images']} | {fmt(r['seconds'])} | "
                       f"{fmt(r['images_per_second'])} | "
                       f"{fmt(r['extrapolated_50000_seconds'], 0)} | "
                       f"{'-' if succ is None else fmt(100 * succ, 1) + '%'} |")
        out.append("")

    stages = [r for r in rows if r.get("what") == "stage"]
    if stages:
        out.append("Stages: " + ", ".join(f"{r['name']} {r['seconds']}s"
                                          + ("" if r["rc"] == 0 else f" (exit {r['rc']})")
                                          for r in stages))
    print("\n".join(out))


if __name__ == "__main__":
    main()
