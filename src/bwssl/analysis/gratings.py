"""The grating metrics, per block k, on Level 1 and Level 2 gratings in the run's clip format
(:mod:`bwssl.data.gratings`); z_k is block k's mean-pooled tokens with masking off.

- ``probe_l1``, ``probe_l2`` (target = grating label): stratified k-fold
  cross-validated probe accuracy on ``grating_clips`` Level 1 / Level 2
  gratings (null: the full grids); ``stderr`` is the standard error over the
  folds, ``protocol`` names the clips and folds.
- ``occdrop_l1``, ``occdrop_l2`` (target = grating label):
  ``(acc_full - acc_occluded) / acc_full`` where the occluded gratings keep
  one patch (Level 1) or one patch per hemifield (Level 2), the rest filled
  (``occlusion_fill``) in pixel space before tokenization, their features
  recomputed and the same cross-validated probe refitted. With
  ``occlusion=per_clip`` (the paper's protocol) every clip keeps its own
  random location and one probe reads them all (repeat 0); with ``fixed``,
  each of ``occlusion_locations`` locations is shared by all clips and has
  its own probe (repeat = location). ``stderr`` is the standard error of the
  per-fold drops (the folds of the full and occluded probes are the same
  clips); ``protocol`` names the locations and the fill.

The kept cell is a token patch on the video ViT; on a backbone without a patch-token
grid (a ResNet) it is a square pixel window of ``occlusion_window`` pixels (default: a
quarter of the crop, a 4x4 grid), with the same fills, protocols and rows
(:mod:`bwssl.analysis.occlusion`). On one-frame clips (images) the gratings are still: the
``tf`` target is skipped and ``orientation`` is read modulo 180 degrees, recorded in
``skipped.csv``.
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
    OccludedClips,
    cell_grid,
    hemifield_pairs,
    keep_one_patch,
    keep_patch_per_hemifield,
    occdrop,
    patch_locations,
    per_clip_cells,
    window_side,
)
from bwssl.analysis.probes import cv_probe_fold_accuracies, fold_stderr
from bwssl.analysis.requirements import cv_needs, frames_needed, occlusion_needs

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

    o, d = ctx.opt, ctx.data
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
        if frames_needed(name, d.num_frames):
            if f"probe_l{level}" in ctx.want:
                ctx.skip(f"probe_l{level}", frames_needed(name, d.num_frames))
            continue
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

    def folds(f: feat.Features, k: int, name: str) -> np.ndarray:
        rows, y = targets[name]
        return cv_probe_fold_accuracies(
            f.pooled[k][rows],
            y,
            folds=o.grating_folds,
            seed=o.seed,
            device=ctx.device,
            max_iter=o.probe_max_iter,
        )

    full_folds = {(k, t): folds(full, k, t) for k in range(ctx.k) for t in targets}
    n_folds = {len(v) for v in full_folds.values()}
    probe_protocol = f"{len(full.index)} clips,{'/'.join(map(str, sorted(n_folds)))} folds"
    if f"probe_l{level}" in ctx.want:
        for (k, t), acc in full_folds.items():
            ctx.add(
                f"probe_l{level}",
                k + 1,
                float(acc.mean()),
                t,
                stderr=fold_stderr(acc),
                protocol=probe_protocol,
            )
    if f"occdrop_l{level}" not in ctx.want or not ctx.requires(
        f"occdrop_l{level}", occlusion_needs(ctx.model.backbone, d.crop_size, o.occlusion_window)
    ):
        return
    tub, patch, (_, gw) = occlusion_cells(ctx)
    if level == 2 and gw % 2:
        logger.warning(
            "%s: %d occlusion columns cannot be split into hemifields; no occdrop_l2",
            ctx.src.name,
            gw,
        )
        return
    for r, (where, occluded, transform) in enumerate(_occlusions(ctx, ds, level)):
        f = ctx.features(
            occluded,
            {**ident, **where, "tubelet": tub, "patch": patch},
            f"level {level} occluded {r + 1}",
            transform=transform,
        )
        if not np.array_equal(f.index, full.index):
            raise RuntimeError("occluded and full gratings differ in readable clips")
        protocol = f"{o.occlusion},{o.occlusion_fill}"
        for (k, t), acc in full_folds.items():
            if acc.mean() == 0:
                logger.warning(
                    "level %d %s block %d: probe accuracy 0, OccDrop undefined", level, t, k + 1
                )
                continue
            occl = folds(f, k, t)
            drops = np.array([occdrop(a, b) for a, b in zip(acc, occl, strict=True) if a > 0])
            ctx.add(
                f"occdrop_l{level}",
                k + 1,
                occdrop(float(acc.mean()), float(occl.mean())),
                t,
                r,
                stderr=fold_stderr(drops) if len(drops) > 1 else None,
                protocol=protocol,
            )


Occlusion = tuple[dict[str, Any], Any, Callable[[torch.Tensor], torch.Tensor] | None]
"""(what identifies it in the feature cache, the dataset to extract, a batch transform)."""


def occlusion_cells(ctx: RunContext) -> tuple[int, int, tuple[int, int]]:
    """(tubelet, side, (rows, cols)): the cells OccDrop keeps on ``ctx``'s model, ``side`` x
    ``side`` pixels over all frames (divisible into ``tubelet``-frame groups) in a (rows,
    cols) grid. A patch-token backbone's cells are its token patches; a backbone without a
    token grid gets pixel windows of ``occlusion_window`` (default: a quarter of the crop)."""
    m, size = ctx.src.config.model, ctx.data.crop_size
    token_grid = getattr(ctx.model.backbone, "grid", None)
    if token_grid is not None:
        return m.tubelet_size, m.patch_size, (token_grid[1], token_grid[2])
    side = window_side(size, ctx.opt.occlusion_window)
    return 1, side, cell_grid(size, size, side)


def _occlusions(ctx: RunContext, ds: Any, level: int) -> list[Occlusion]:
    """The occluded versions of ``ds`` that ``ctx.opt`` asks for: one with a random location
    per clip, or one per fixed location."""
    o = ctx.opt
    tub, patch, grid = occlusion_cells(ctx)
    fill = o.occlusion_fill
    if o.occlusion == "per_clip":
        cells = per_clip_cells(len(ds), grid, hemifields=level == 2, seed=o.seed)
        where = {"occlusion": "per_clip", "fill": fill, "cells_seed": o.seed}
        return [(where, OccludedClips(ds, cells, tub, patch, fill), None)]
    out: list[Occlusion] = []
    if level == 1:
        for loc in patch_locations(grid, o.occlusion_locations, o.seed):
            out.append(
                (
                    {"keep_patches": loc, "fill": fill},
                    ds,
                    lambda v, i=loc: keep_one_patch(v, i, tub, patch, fill=fill),
                )
            )
        return out
    for pair in hemifield_pairs(grid, o.occlusion_locations, o.seed):
        out.append(
            (
                {"keep_patches": list(pair), "fill": fill},
                ds,
                lambda v, p=pair: keep_patch_per_hemifield(v, p[0], p[1], tub, patch, fill=fill),
            )
        )
    return out
