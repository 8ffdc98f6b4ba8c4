#!/usr/bin/env python3
"""Writes crates/robustness/tests/fixtures/pgd_golden.json: PGD outputs of the reference library
(MadryLab `robustness` 1.2.1.post2, robustness/attacker.py) on a small fixed linear model, for
our golden test (crates/robustness/tests/golden.rs). Not run by CI.

Run with the benchmark virtualenv (scripts/bench-compare creates it):
    .venv-bench/bin/python scripts/golden/make_pgd_fixture.py

The reference library calls .cuda() unconditionally; on a CPU-only machine we make
torch.Tensor.cuda and nn.Module.cuda return self (as shared/PAPER.md section 4 describes).
"""
import json
import os
import sys

import torch
import torch.nn as nn

torch.Tensor.cuda = lambda self, *a, **k: self
nn.Module.cuda = lambda self, *a, **k: self

from robustness.attacker import Attacker  # noqa: E402


class Data:
    """What Attacker needs from a dataset: the normalisation statistics."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean)
        self.std = torch.tensor(std)


def main():
    torch.manual_seed(0)
    c, h, w, k, n = 1, 4, 4, 3, 6
    mean, std = [0.4], [0.3]
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(k, c * h * w) * 0.5)
        model[1].bias.copy_(torch.randn(k) * 0.1)
    model.eval()
    attacker = Attacker(model, Data(mean, std))
    x = torch.rand(n, c, h, w, dtype=torch.float32) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    cases = []
    for constraint, eps, step, iters, targeted, use_best in [
        ("2", 0.5, 0.1, 10, False, True),
        ("2", 1.0, 0.25, 7, False, False),
        ("inf", 0.1, 0.02, 10, False, True),
        ("inf", 0.05, 0.01, 8, True, True),
        ("2", 0.4, 0.1, 8, True, True),
        ("2", 0.3, 0.05, 12, False, True),
    ]:
        target = (y + 1) % k if targeted else y
        adv = attacker(x, target, constraint=constraint, eps=eps, step_size=step,
                       iterations=iters, random_start=False, targeted=targeted,
                       use_best=use_best)
        cases.append({
            "constraint": constraint, "eps": eps, "step_size": step, "iterations": iters,
            "targeted": targeted, "use_best": use_best,
            "target": target.tolist(),
            "output": adv.detach().reshape(-1).tolist(),
        })
    fixture = {
        "generator": "scripts/golden/make_pgd_fixture.py",
        "reference": "robustness 1.2.1.post2, torch " + torch.__version__,
        "shape": [n, c, h, w], "classes": k, "mean": mean, "std": std,
        # Burn's Linear stores weight as [d_input, d_output]: the transpose of PyTorch's.
        "weight_in_out": model[1].weight.detach().t().contiguous().reshape(-1).tolist(),
        "bias": model[1].bias.detach().tolist(),
        "inputs": x.reshape(-1).tolist(),
        "labels": y.tolist(),
        "cases": cases,
    }
    out = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "robustness", "tests",
                       "fixtures", "pgd_golden.json")
    with open(out, "w") as f:
        json.dump(fixture, f, indent=1)
    print("wrote", os.path.normpath(out), file=sys.stderr)


if __name__ == "__main__":
    main()
