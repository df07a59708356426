"""The action-clip metrics, per block k; z_k is block k's mean-pooled tokens with masking off.

- ``probe_acc`` (target ``action``): linear probe fitted on the train clips'
  z_k, top-1 on the test clips. sklearn's lbfgs is deterministic, so the
  paper's three fits of one network would be three identical numbers;
  here repeat r fits on its own seeded ``probe_fraction`` subsample of the
  training clips (90% by default), so the repeats measure the probe's
  sensitivity to its training set. ``probe_fraction=1`` gives the paper's
  protocol (identical repeats).
- ``map``: retrieval mAP of the test clips' z_k.
- ``cka_next`` (block k = transition k -> k+1): linear CKA of the test clips'
  z_k and z_{k+1} (target ""); with ``cka=rbf`` or ``both``, RBF CKA rows
  with target ``rbf``.
- ``cps``: cosine patch similarity of h_k on ``cps_clips`` test clips.
- ``feature_std``: the spread of the test clips' z_k across clips, the collapse
  measure of :func:`~bwssl.analysis.collapse.feature_std`: of the L2-normalized
  z_k (target ""; 0 = every clip the same vector) and of z_k itself (target
  ``raw``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from bwssl.analysis.collapse import feature_std
from bwssl.analysis.context import seeded_subset
from bwssl.analysis.probes import linear_probe_accuracy
from bwssl.analysis.retrieval import retrieval_map
from bwssl.analysis.similarity import cps, linear_cka, rbf_cka
from bwssl.data import build_dataset

if TYPE_CHECKING:
    from bwssl.analysis.context import RunContext
    from bwssl.config import DataConfig

logger = logging.getLogger(__name__)

METRICS_HANDLED: tuple[str, ...] = ("probe_acc", "map", "cka_next", "cps", "feature_std")


def _clips_id(data: DataConfig, split: str, seed: int) -> dict[str, Any]:
    d = asdict(data)
    for name in ("cache_dir", "max_unreadable_fraction"):
        d.pop(name)
    return {"kind": "clips", "split": split, "seed": seed, "data": d}


def run(ctx: RunContext) -> None:
    """The wanted action-clip metrics of ``ctx``'s model, on every block."""
    o, want, test = ctx.opt, ctx.want, ctx.test_clips
    # tokens are kept whether or not cps is asked for, so every metric subset shares one
    # cache entry for the test clips
    token_items = seeded_subset(len(test), o.cps_clips, o.seed, 1)
    ft = ctx.features(
        test, _clips_id(ctx.data, "test", o.seed), "test clips", token_items=token_items
    )
    y_test = test.labels[ft.index]
    if "probe_acc" in want:
        train = build_dataset(ctx.data, "train", seed=o.seed)
        fr = ctx.features(train, _clips_id(ctx.data, "train", o.seed), "train clips")
        y_train = train.labels[fr.index]
        n = len(fr.index)
        protocol = f"train fraction {o.probe_fraction:g}"
        for r in range(o.probe_repeats):
            rows = seeded_subset(n, round(o.probe_fraction * n), o.seed, 2, r)
            for k in range(ctx.k):
                acc = linear_probe_accuracy(
                    fr.pooled[k][rows],
                    y_train[rows],
                    ft.pooled[k],
                    y_test,
                    seed=o.seed + r,
                    device=ctx.device,
                    max_iter=o.probe_max_iter,
                )
                ctx.add("probe_acc", k + 1, acc, "action", r, protocol=protocol)
    if "map" in want:
        if np.bincount(y_test).max() < 2:
            logger.warning("%s: no two test clips share a label; no map rows", ctx.src.name)
        else:
            for k in range(ctx.k):
                ctx.add("map", k + 1, retrieval_map(ft.pooled[k], y_test, device=ctx.device))
    if "cka_next" in want:
        for k in range(ctx.k - 1):
            if o.cka in ("linear", "both"):
                ctx.add("cka_next", k + 1, linear_cka(ft.pooled[k], ft.pooled[k + 1]))
            if o.cka in ("rbf", "both"):
                ctx.add("cka_next", k + 1, rbf_cka(ft.pooled[k], ft.pooled[k + 1]), "rbf")
    if "cps" in want:
        for k in range(ctx.k):
            ctx.add("cps", k + 1, cps(ft.tokens[k].astype(np.float32)))
    if "feature_std" in want:
        for k in range(ctx.k):
            ctx.add("feature_std", k + 1, feature_std(ft.pooled[k]))
            ctx.add("feature_std", k + 1, feature_std(ft.pooled[k], normalize=False), "raw")
