"""The action probe at the paper's scale: sklearn on CPU against the torch L-BFGS solver.

Both fit the same objective (StandardScaler + multinomial logistic regression,
C=1, max_iter 1000). The data imitate pooled features of UCF101 split 1:
9537 training and 1100 test embeddings of width 384 (DeiT-Small), 101
classes, with a class signal that puts accuracy near the paper's 40%::

    python benchmarks/bench_probe.py --device cuda

prints the accuracy and wall time of each solver and their difference in
accuracy points (the suite's requirement: within 0.5).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bwssl.analysis.probes import linear_probe_accuracy


def data(
    seed: int = 0,
    n_train: int = 9537,
    n_test: int = 1100,
    dim: int = 384,
    classes: int = 101,
    signal: float = 0.15,
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * signal
    ytr, yte = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    xtr = centres[ytr] + rng.normal(size=(n_train, dim))
    xte = centres[yte] + rng.normal(size=(n_test, dim))
    return xtr.astype(np.float32), ytr, xte.astype(np.float32), yte


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    xtr, ytr, xte, yte = data()
    results = {}
    for name, solver, device in (
        ("sklearn (cpu)", "sklearn", "cpu"),
        (f"torch ({args.device})", "torch", args.device),
    ):
        t0 = time.perf_counter()
        acc = linear_probe_accuracy(xtr, ytr, xte, yte, solver=solver, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        results[name] = (acc, time.perf_counter() - t0)
        print(f"{name:<16} accuracy {acc:.4f}  {results[name][1]:.1f} s", flush=True)
    (a, _), (b, _) = results.values()
    print(f"difference: {100 * abs(a - b):.2f} accuracy points")


if __name__ == "__main__":
    main()
