#!/usr/bin/env python3
"""Sums the lines of ROBUSTNESS_CONV_TRACE=1 (one per 2D convolution pass, on stderr) into
milliseconds per step for each pass and shape, largest first.

    ROBUSTNESS_CONV_TRACE=1 RAYON_NUM_THREADS=2 robustness bench --arch resnet18 --batch 32 \\
        --workload train --shape 3x32x32 --warmup 2 --iters 10 --json 2>trace.txt
    scripts/conv_trace_summary.py --steps 12 trace.txt

--steps is the number of steps the trace covers (warm-up + timed). Each pass and shape's
figure is its median time times its calls per step.
"""
import argparse
import collections
import re
import statistics
import sys

LINE = re.compile(r"^conv-trace (\S+) (.*) ([0-9.]+) ms$")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="file holding the trace lines (other lines are ignored)")
    ap.add_argument("--steps", type=int, required=True, help="steps the trace covers (warm-up + timed)")
    args = ap.parse_args()
    if args.steps < 1:
        sys.exit("conv_trace_summary: --steps must be at least 1")
    try:
        with open(args.trace, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        sys.exit(f"conv_trace_summary: cannot read {args.trace}: {e.strerror}")
    times = collections.defaultdict(list)
    for line in lines:
        m = LINE.match(line.strip())
        if m:
            times[(m.group(1), m.group(2))].append(float(m.group(3)))
    if not times:
        sys.exit(f"conv_trace_summary: no conv-trace lines in {args.trace} "
                 "(was ROBUSTNESS_CONV_TRACE=1 set, and stderr redirected there?)")
    rows = []
    for (kind, shape), v in times.items():
        calls = len(v) / args.steps
        rows.append((statistics.median(v) * calls, kind, shape, calls, statistics.median(v)))
    rows.sort(reverse=True)
    per_kind = collections.Counter()
    print("| ms per step | pass | shapes | calls per step | median ms per call |")
    print("|---:|---|---|---:|---:|")
    for total, kind, shape, calls, med in rows:
        per_kind[kind] += total
        print(f"| {total:.1f} | {kind} | {shape} | {calls:g} | {med:.2f} |")
    print()
    print("per pass: " + ", ".join(f"{k} {v:.1f} ms" for k, v in per_kind.most_common())
          + f"; all convolutions {sum(per_kind.values()):.1f} ms per step")


if __name__ == "__main__":
    main()
