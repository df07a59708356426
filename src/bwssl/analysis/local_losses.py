"""The local objectives' own losses on evaluation clips, per block with a head.

- ``local_loss``: block k's local loss under the run's objective, through
  block k's head, on ``mse_clips`` seeded test clips (all of them when
  null; ``protocol`` says how many were scored); the objective's step
  inputs (masks, views) are drawn from ``seed`` for those clips as one
  global batch (so the numbers do not depend on ``batch_size``), in their
  evaluation form (masked pixels: every masked token rebuilt). Losses built
  on batch statistics (Barlow Twins, VICReg, SimCLR) are averaged over
  batches of ``batch_size`` clips, weighted by size; a batch smaller than
  the objective needs is left out.
- ``mse``: the pixel loss for objectives that rebuild pixels (masked
  pixels: normalized-pixel MSE, the paper's reconstruction curve); the same
  number as ``local_loss`` unless the run ended on latent targets (LayerLock),
  whose pixel read-out is then scored on its own. Other objectives have no
  pixel reconstruction, and get no ``mse`` rows.

Blocks without a head (E2E: all but the last) get no rows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from bwssl.analysis import features as feat
from bwssl.analysis.context import seeded_subset
from bwssl.analysis.requirements import clips_needed
from bwssl.objectives.base import StepKey, with_labels

if TYPE_CHECKING:
    from bwssl.analysis.context import RunContext

logger = logging.getLogger(__name__)

METRICS_HANDLED: tuple[str, ...] = ("mse", "local_loss")


def run(ctx: RunContext) -> None:
    """``local_loss`` (and ``mse`` for pixel objectives) per head block on seeded test clips."""
    model, o = ctx.model, ctx.opt
    objective = model.objective
    test = ctx.test_clips  # built even without heads, so a bad data config still stops
    if not model.head_blocks:
        logger.info("%s has no local head: no mse or local_loss rows", ctx.src.name)
        return
    pixels = objective.reconstructs_pixels
    if "mse" in ctx.want and not pixels:
        logger.info(
            "%s: objective %s rebuilds no pixels; no mse rows (see local_loss)",
            ctx.src.name,
            ctx.src.config.objective.name,
        )
    size = len(test) if o.mse_clips is None else o.mse_clips
    items = seeded_subset(len(test), size, o.seed, 3)
    wanted = sorted(ctx.want & ({"local_loss", "mse"} if pixels else {"local_loss"}))
    few = clips_needed("the local loss", len(items), objective.min_batch)
    if few:
        for metric in wanted:
            ctx.skip(metric, few)
        return
    key = StepKey(o.seed, 0, 0, len(items))
    row_of = {int(i): j for j, i in enumerate(items)}
    final = objective.targets
    passes = [final]
    if pixels and "mse" in ctx.want and final != ("pixels",):
        passes.append(("pixels",))
    sums = np.zeros((len(passes), len(model.head_blocks)))
    count = 0
    batches = feat.clip_batches(test, items, o.batch_size, o.num_workers, ctx.device.type == "cuda")
    with torch.inference_mode():
        for idx, video, _ in batches:
            if len(idx) < objective.min_batch:
                continue
            rows = torch.tensor([row_of[int(i)] for i in idx])
            step = objective.prepare(video.to(ctx.device), key, rows, train=False)
            labels = torch.as_tensor(test.labels[np.asarray(idx)], device=ctx.device)
            step = with_labels(step, labels)
            for p, targets in enumerate(passes):
                objective.set_targets(targets)
                losses = model.local_losses(step)
                sums[p] += np.array([float(losses[k]) for k in model.head_blocks]) * len(idx)
            objective.set_targets(final)
            count += len(idx)
    if count == 0:
        for metric in wanted:
            ctx.skip(
                metric,
                f"no batch of at least {objective.min_batch} readable test clips "
                "(raise mse_clips or batch_size)",
            )
        return
    protocol = f"{count} clips"
    for j, k in enumerate(model.head_blocks):
        if "local_loss" in ctx.want:
            ctx.add("local_loss", k + 1, sums[0, j] / count, protocol=protocol)
        if "mse" in ctx.want and pixels:
            ctx.add("mse", k + 1, sums[-1, j] / count, protocol=protocol)
