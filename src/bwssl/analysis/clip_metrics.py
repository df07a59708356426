"""The action-clip metrics, per block k; z_k is block k's mean-pooled tokens with masking off.

- ``probe_acc`` (target ``action``): linear probe fitted on the train clips'
  z_k, top-1 on the test clips. sklearn's lbfgs is deterministic, so the
  paper's three fits of one network would be three identical numbers;
  here repeat r fits on its own seeded ``probe_fraction`` subsample of the
  training clips (90% by default), so the repeats measure the probe's
  sensitivity to its training set. ``probe_fraction=1`` gives the paper's
  protocol (identical repeats).
- ``knn_acc`` (target ``action``): the weighted kNN monitor of
  :mod:`~bwssl.analysis.knn` (``knn_k`` neighbours by cosine similarity, votes
  exp(s / ``knn_temperature``)) over repeat r's training subsample of the probe,
  top-1 on the test clips.
- ``map``: retrieval mAP of the test clips' z_k.
- ``probe_acc_head``, ``knn_acc_head``, ``map_head``: the same three on block k's
  head vector instead of z_k (what its head pools before the projector, e.g. a
  CbE head's expansion; :data:`~bwssl.analysis.options.HEAD_METRICS`), for
  the blocks that have one of their own (``Features.head``); ``features``
  chooses which of the two kinds are computed.

A metric whose clips are too few (:mod:`~bwssl.analysis.requirements`) is skipped
with one line saying why.
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
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from bwssl.analysis.collapse import feature_std
from bwssl.analysis.context import seeded_subset
from bwssl.analysis.knn import knn_accuracy
from bwssl.analysis.options import HEAD_METRICS
from bwssl.analysis.probes import linear_probe_accuracy
from bwssl.analysis.requirements import clips_needed, probe_needs, retrieval_needs
from bwssl.analysis.retrieval import retrieval_map
from bwssl.analysis.similarity import cps, linear_cka, rbf_cka
from bwssl.data import build_dataset

if TYPE_CHECKING:
    from bwssl.analysis.context import RunContext
    from bwssl.analysis.features import Features
    from bwssl.config import DataConfig

logger = logging.getLogger(__name__)


METRICS_HANDLED: tuple[str, ...] = (
    "probe_acc",
    "knn_acc",
    "map",
    "cka_next",
    "cps",
    "feature_std",
)


def _clips_id(data: DataConfig, split: str, seed: int) -> dict[str, Any]:
    d = asdict(data)
    for name in ("cache_dir", "max_unreadable_fraction"):
        d.pop(name)
    return {"kind": "clips", "split": split, "seed": seed, "data": d}


Kind = tuple[Callable[[str], str], Callable[["Features", int], "np.ndarray | None"]]
"""A kind of features: the row name of a metric on it, and block k's array of an
extraction (None: the block has none)."""


def _kinds(ctx: RunContext, train: Features | None, test: Features) -> list[Kind]:
    """The kinds of features the options ask for; the head kind only when some block has a
    head vector of its own in ``test`` (and ``train``)."""
    out: list[Kind] = []
    if "backbone" in ctx.opt.features:
        out.append((lambda m: m, lambda f, k: f.pooled[k]))
    if "head" in ctx.opt.features:
        own = set(test.head_blocks())
        if train is not None:
            own &= set(train.head_blocks())
        if own:
            out.append(
                (HEAD_METRICS.__getitem__, lambda f, k: (f.head or [])[k] if k in own else None)
            )
        else:
            logger.info("%s: no head pools a vector of its own; no head rows", ctx.src.name)
    return out


def run(ctx: RunContext) -> None:
    """The wanted action-clip metrics of ``ctx``'s model, on every block."""
    o, want, test = ctx.opt, ctx.want, ctx.test_clips
    # tokens are kept whether or not cps is asked for, and head vectors whenever they may be
    # probed, so every metric subset shares one cache entry for the test clips
    heads = "head" in o.features and bool(want.intersection(HEAD_METRICS))
    token_items = seeded_subset(len(test), o.cps_clips, o.seed, 1)
    ft = ctx.features(
        test,
        _clips_id(ctx.data, "test", o.seed),
        "test clips",
        token_items=token_items,
        heads=heads,
    )
    y_test = test.labels[ft.index]
    n_test = len(ft.index)
    if "setup" in want:
        ctx.add("setup", 0, float(n_test), "test_clips")
    if want.intersection(("probe_acc", "knn_acc")):
        train = build_dataset(ctx.data, "train", seed=o.seed)
        fr = ctx.features(train, _clips_id(ctx.data, "train", o.seed), "train clips", heads=heads)
        y_train = train.labels[fr.index]
        n = len(fr.index)
        kinds = _kinds(ctx, fr, ft)
        protocol = f"train fraction {o.probe_fraction:g}"
        for r in range(o.probe_repeats):
            rows = seeded_subset(n, round(o.probe_fraction * n), o.seed, 2, r)
            missing = probe_needs(y_train[rows], y_test)
            if missing:
                for metric in sorted(want & {"probe_acc", "knn_acc"}):
                    ctx.skip(metric, missing)
                break
            for k in range(ctx.k):
                for name, read in kinds:
                    x_train, x_test = read(fr, k), read(ft, k)
                    if x_train is None or x_test is None:
                        continue
                    if "probe_acc" in want:
                        acc = linear_probe_accuracy(
                            x_train[rows],
                            y_train[rows],
                            x_test,
                            y_test,
                            seed=o.seed + r,
                            device=ctx.device,
                            max_iter=o.probe_max_iter,
                        )
                        ctx.add(name("probe_acc"), k + 1, acc, "action", r, protocol=protocol)
                    if "knn_acc" in want:
                        acc = knn_accuracy(
                            x_train[rows],
                            y_train[rows],
                            x_test,
                            y_test,
                            k=o.knn_k,
                            temperature=o.knn_temperature,
                            device=ctx.device,
                        )
                        ctx.add(name("knn_acc"), k + 1, acc, "action", r, protocol=protocol)
    if "map" in want and ctx.requires("map", retrieval_needs(y_test)):
        for k in range(ctx.k):
            for name, read in _kinds(ctx, None, ft):
                x = read(ft, k)
                if x is not None:
                    ctx.add(name("map"), k + 1, retrieval_map(x, y_test, device=ctx.device))
    if "cka_next" in want and ctx.requires("cka_next", clips_needed("CKA", n_test)):
        for k in range(ctx.k - 1):
            if o.cka in ("linear", "both"):
                ctx.add("cka_next", k + 1, linear_cka(ft.pooled[k], ft.pooled[k + 1]))
            if o.cka in ("rbf", "both"):
                ctx.add("cka_next", k + 1, rbf_cka(ft.pooled[k], ft.pooled[k + 1]), "rbf")
    if "cps" in want:
        for k in range(ctx.k):
            ctx.add("cps", k + 1, cps(ft.tokens[k].astype(np.float32)))
    if "feature_std" in want and ctx.requires(
        "feature_std", clips_needed("the spread across clips", n_test)
    ):
        for k in range(ctx.k):
            ctx.add("feature_std", k + 1, feature_std(ft.pooled[k]))
            ctx.add("feature_std", k + 1, feature_std(ft.pooled[k], normalize=False), "raw")
