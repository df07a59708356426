"""What the full-grid grating analysis of one run costs, from a timing sample.

The paper presets probe the full grids (10,800 Level-1 and 15,552 Level-2
clips) and refit every probe on per-clip occluded copies. This script times
the three parts on a sample and extrapolates to one run of ``--train``
(default ``deit-tiny``) with K blocks:

- rendering: ``--render-clips`` clips per level through
  :class:`bwssl.data.gratings.GratingDataset` (the full grid, no clip cache);
- the encoder: ``--forward-clips`` clips through the untrained model's
  ``block_outputs`` in batches of ``--batch`` (as the feature extraction
  runs it), pooled per block;
- the probes: the stratified 5-fold CV probe of every Level-1 and Level-2
  target at the full grid's size, once (one block), on features that
  imitate pooled ones (width D, a class signal per target).

Extrapolated: the full and the per-clip occluded pass each render and encode
both grids once (with ``data.cache_dir`` set the occluded pass reuses the
rendered frames), and fit K x (targets) CV probes::

    OMP_NUM_THREADS=1 python benchmarks/bench_grating_analysis.py --threads 1
    python benchmarks/bench_grating_analysis.py --device cuda --threads 8 --forward-clips 512

prints one JSON object (and writes it with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bwssl.analysis.probes import cv_probe_fold_accuracies
from bwssl.config import load_config
from bwssl.data.gratings import GratingDataset, GratingGrid
from bwssl.models.blockwise import build_model


def _features(y: np.ndarray, dim: int, signal: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(y.max()) + 1, dim)) * signal
    return (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default="deit-tiny", help="training preset of the run")
    p.add_argument("--render-clips", type=int, default=32)
    p.add_argument("--forward-clips", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--signal", type=float, default=0.3, help="class signal of the features")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the encoder runs and the probes are fitted (cuda: the torch L-BFGS solver)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.train, ["data.name=synthetic"])
    d = cfg.data
    out: dict[str, object] = {
        "train": args.train,
        "token_grid": list(cfg.token_grid),
        "threads": args.threads,
        "device": args.device,
        "num_blocks": cfg.model.num_blocks,
    }
    sizes, render_s = {}, {}
    datasets = {}
    for level in (1, 2):
        grid = GratingGrid.default(level, d.crop_size)
        ds = GratingDataset(level, d.num_frames, d.crop_size, d.channels, grid=grid)
        datasets[level], sizes[level] = ds, len(ds)
        step = max(1, len(ds) // args.render_clips)
        items = list(range(0, len(ds), step))[: args.render_clips]
        t0 = time.perf_counter()
        for i in items:
            ds[i]
        render_s[level] = (time.perf_counter() - t0) / len(items)
    out["grid_clips"] = sizes
    out["render_s_per_clip"] = render_s

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(cfg).eval().to(device)
    ds = datasets[1]
    clips = torch.stack([ds[i] for i in range(args.batch)]).to(device)  # (B, C, T, H, W)
    with torch.inference_mode():
        model.block_outputs(clips[:2])  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < args.forward_clips:
            outs = model.block_outputs(clips)
            [model.pool(k, h) for k, h in enumerate(outs)]
            done += len(clips)
        if device.type == "cuda":
            torch.cuda.synchronize()
    forward = (time.perf_counter() - t0) / done
    out["forward_s_per_clip"] = forward

    probe_s: dict[str, float] = {}
    dim = cfg.model.embed_dim
    for level, ds in datasets.items():
        for name, y in ds.targets.items():
            x = _features(y, dim, args.signal, seed=len(probe_s))
            t0 = time.perf_counter()
            cv_probe_fold_accuracies(x, y, folds=args.folds, device=device)
            probe_s[f"l{level}:{name}"] = time.perf_counter() - t0
    out["probe_cv_s_per_target_block"] = probe_s

    k = cfg.model.num_blocks
    n = sizes[1] + sizes[2]
    passes = 2  # the full and the per-clip occluded gratings
    render_total = passes * sum(sizes[lv] * render_s[lv] for lv in (1, 2))
    forward_total = passes * n * forward
    probe_total = passes * k * sum(probe_s.values())
    out["extrapolated_s"] = {
        "render": render_total,
        "render_with_clip_cache": render_total / passes,
        "encoder": forward_total,
        "probes": probe_total,
        "total": render_total + forward_total + probe_total,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
