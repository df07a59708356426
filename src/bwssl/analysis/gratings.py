"""The grating metrics, per block k, on Level 1 and Level 2 gratings in the run's clip format
(:mod:`bwssl.data.gratings`); z_k is block k's mean-pooled tokens with masking off.

- ``probe_l1``, ``probe_l2`` (target = grating label): stratified k-fold
  cross-validated probe accuracy on ``grating_clips`` Level 1 / Level 2
  gratings.
- ``occdrop_l1``, ``occdrop_l2`` (target = grating label, repeat = location):
  for each of ``occlusion_locations`` patch locations (Level 1: one kept
  patch; Level 2: one kept patch per hemifield), the gratings are occluded
  in pixel space, their features recomputed, the same cross-validated probe
  refitted, and ``(acc_full - acc_occluded) / acc_full`` recorded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bwssl.analysis import features as feat
from bwssl.analysis.occlusion import (
    hemifield_pairs,
    keep_one_patch,
    keep_patch_per_hemifield,
    occdrop,
    patch_locations,
)
from bwssl.analysis.probes import cv_probe_accuracy
from bwssl.analysis.requirements import cv_needs

if TYPE_CHECKING:
    from bwssl.analysis.context import RunContext

logger = logging.getLogger(__name__)

METRICS_HANDLED: tuple[str, ...] = ("probe_l1", "probe_l2", "occdrop_l1", "occdrop_l2")


def _cv_rows(y: np.ndarray) -> np.ndarray:
    """Rows whose class has at least 2 members (stratified CV cannot use singletons)."""
    counts = np.bincount(y)
    return np.flatnonzero(counts[y] >= 2)


def run(ctx: RunContext) -> None:
    """The wanted grating metrics of ``ctx``'s model: Level 1, then Level 2."""
    for level in (1, 2):
        if ctx.want & {f"probe_l{level}", f"occdrop_l{level}"}:
            run_level(ctx, level)


def run_level(ctx: RunContext, level: int) -> None:
    """``probe_l{level}`` and ``occdrop_l{level}`` (those wanted) on every block."""
    from bwssl.data.gratings import GratingDataset, GratingGrid

    o, d, m = ctx.opt, ctx.data, ctx.src.config.model
    grid = GratingGrid.default(level, d.crop_size)
    if d.channels == 1:
        grid = dataclasses.replace(grid, colour=("gray",))
    ds = GratingDataset(
        level,
        d.num_frames,
        d.crop_size,
        d.channels,
        grid=grid,
        max_items=o.grating_clips,
        seed=o.seed,
        cache_dir=d.cache_dir,
    )
    ident = {
        "kind": "gratings",
        "level": level,
        "num_frames": d.num_frames,
        "size": d.crop_size,
        "channels": d.channels,
        "grid": asdict(grid),
        "max_items": o.grating_clips,
        "seed": o.seed,
    }
    full = ctx.features(ds, ident, f"level {level} gratings")
    targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, y_all in ds.targets.items():
        y = y_all[full.index]
        rows = _cv_rows(y)
        missing = cv_needs(y, o.grating_folds)
        if missing:
            logger.warning(
                "level %d target %s: %s; skipped (raise grating_clips)", level, name, missing
            )
            continue
        targets[name] = (rows, np.unique(y[rows], return_inverse=True)[1].reshape(-1))
    if not targets:
        for metric in sorted(ctx.want & {f"probe_l{level}", f"occdrop_l{level}"}):
            ctx.skip(
                metric, f"no grating target has 2+ classes of 2+ clips among {len(full.index)}"
            )
        return

    def accuracy(f: feat.Features, k: int, name: str) -> float:
        rows, y = targets[name]
        return cv_probe_accuracy(
            f.pooled[k][rows],
            y,
            folds=o.grating_folds,
            seed=o.seed,
            device=ctx.device,
            max_iter=o.probe_max_iter,
        )

    acc_full = {(k, t): accuracy(full, k, t) for k in range(ctx.k) for t in targets}
    if f"probe_l{level}" in ctx.want:
        for (k, t), acc in acc_full.items():
            ctx.add(f"probe_l{level}", k + 1, acc, t)
    if f"occdrop_l{level}" not in ctx.want:
        return
    gh, gw = ctx.model.backbone.grid[1:]
    tub, patch = m.tubelet_size, m.patch_size
    occluders: list[tuple[Any, Callable[[torch.Tensor], torch.Tensor]]] = []
    if level == 1:
        for loc in patch_locations((gh, gw), o.occlusion_locations, o.seed):
            occluders.append((loc, lambda v, i=loc: keep_one_patch(v, i, tub, patch)))
    elif gw % 2:
        logger.warning(
            "%s: %d patch columns cannot be split into hemifields; no occdrop_l2",
            ctx.src.name,
            gw,
        )
    else:
        for pair in hemifield_pairs((gh, gw), o.occlusion_locations, o.seed):
            occluders.append(
                (
                    list(pair),
                    lambda v, p=pair: keep_patch_per_hemifield(v, p[0], p[1], tub, patch),
                )
            )
    for r, (where, occlude) in enumerate(occluders):
        f = ctx.features(
            ds,
            {**ident, "keep_patches": where, "tubelet": tub, "patch": patch},
            f"level {level} occluded {r + 1}/{len(occluders)}",
            transform=occlude,
        )
        if not np.array_equal(f.index, full.index):
            raise RuntimeError("occluded and full gratings differ in readable clips")
        for (k, t), acc in acc_full.items():
            if acc == 0:
                logger.warning(
                    "level %d %s block %d: probe accuracy 0, OccDrop undefined", level, t, k + 1
                )
                continue
            ctx.add(f"occdrop_l{level}", k + 1, occdrop(acc, accuracy(f, k, t)), t, r)
