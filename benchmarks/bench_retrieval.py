"""Retrieval mAP: the vectorized implementation against the per-query sklearn loop.

    .venv/bin/python benchmarks/bench_retrieval.py [--n 1100] [--dim 384] [--classes 101]

The default shape is the paper's evaluation set: about 1100 UCF101 test clips
(a 30% subsample), 101 classes, DeiT-Small width. Prints both timings (best
of ``--repeats``), the speedup, and checks that the two values agree. The
class signal is set so that mAP is about 0.19, near the paper's values.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from bwssl.analysis.retrieval import retrieval_map, retrieval_map_reference


def _best_time(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    best, value = float("inf"), float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1100, help="number of embeddings (queries)")
    parser.add_argument("--dim", type=int, default=384, help="embedding width")
    parser.add_argument("--classes", type=int, default=101, help="number of labels")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is shown)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, args.classes, size=args.n)
    centers = rng.normal(size=(args.classes, args.dim))
    emb = (0.3 * centers[labels] + rng.normal(size=(args.n, args.dim))).astype(np.float32)

    print(
        f"retrieval mAP on {args.n} x {args.dim} embeddings, {args.classes} classes, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    t_vec, m_vec = _best_time(lambda: retrieval_map(emb, labels), args.repeats)
    t_ref, m_ref = _best_time(lambda: retrieval_map_reference(emb, labels), args.repeats)
    print(f"vectorized          {t_vec * 1e3:9.1f} ms   mAP {m_vec:.10f}")
    print(f"sklearn per query   {t_ref * 1e3:9.1f} ms   mAP {m_ref:.10f}")
    print(f"speedup             {t_ref / t_vec:9.1f} x   |difference| {abs(m_vec - m_ref):.2e}")
    if abs(m_vec - m_ref) > 1e-9:
        print("MISMATCH: the vectorized mAP differs from sklearn's")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
