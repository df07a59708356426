"""Joint-embedding objectives per block: two views of each clip, pooled block features, a
projector, and Barlow Twins, VICReg or SimCLR between the two embeddings."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bwssl.config import Config
from bwssl.data.views import apply_view, draw_configured_view
from bwssl.models.backbone import Backbone
from bwssl.models.heads import Projector
from bwssl.models.pooling import build_pooling, head_input
from bwssl.objectives.base import Objective, StepData, StepKey
from bwssl.objectives.losses import barlow_twins_loss, nt_xent_loss, vicreg_loss

VIEW_STREAMS = (4, 5)
"""Generator streams of the step key for the first and the second view."""


def augmented_view(
    cfg: Config, video: torch.Tensor, key: StepKey, rows: torch.Tensor, view: int
) -> torch.Tensor:
    """View ``view`` (0 or 1: per-view probabilities of ``objective.views`` differ) of
    ``video``, the ``rows`` of ``key``'s global batch, drawn from the key's generator stream
    for that view."""
    params = draw_configured_view(
        cfg.objective.views, view, key.batch_size, key.generator(VIEW_STREAMS[view])
    )
    return apply_view(video, params.rows(rows))


def pooled_head(cfg: Config, backbone: Backbone, k: int, widths: list[int]) -> Projector:
    """Block k's head: the pooling of ``objective.pooling`` (none for ``backbone``) and an
    MLP of ``widths`` (:class:`~bwssl.models.heads.Projector`) on its output."""
    pool, width = build_pooling(cfg.objective, backbone.feature_dim(k))
    return Projector(width, widths, pool)


class PooledHeadObjective(Objective):
    """An objective whose heads are :func:`pooled_head` projectors (joint embedding,
    supervised): the head features the probes read are the pooled vector before the MLP."""

    head_key = "projectors"
    pooling_heads = True

    def head_features(
        self, k: int, h: torch.Tensor, head: nn.Module, backbone: Backbone
    ) -> torch.Tensor:
        assert isinstance(head, Projector)
        return head.pooled(head_input(self.cfg.objective.pooling, backbone, k, h))


class JointEmbedding(PooledHeadObjective):
    """Block k's output, pooled (``objective.pooling``), through block k's projector, for two
    views; the loss compares the two embeddings (``objective.*`` keys)."""

    head_key = "projectors"
    min_batch = 2
    pooling_heads = True

    def __init__(
        self, cfg: Config, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> None:
        super().__init__(cfg)
        self.loss_fn = loss_fn

    def make_head(self, backbone: Backbone, k: int) -> nn.Module:
        return pooled_head(self.cfg, backbone, k, list(self.cfg.objective.projector))

    def prepare(
        self, video: torch.Tensor, key: StepKey, rows: torch.Tensor, *, train: bool = True
    ) -> StepData:
        views = [augmented_view(self.cfg, video, key, rows, v) for v in range(len(VIEW_STREAMS))]
        return StepData(views, [None, None])

    def loss(
        self, k: int, outs: list[torch.Tensor], head: nn.Module, step: StepData, backbone: Backbone
    ) -> torch.Tensor:
        pooling = self.cfg.objective.pooling
        z1, z2 = (head(head_input(pooling, backbone, k, h)) for h in outs)
        return self.loss_fn(z1, z2)


def barlow_twins(cfg: Config) -> Objective:
    o = cfg.objective
    return JointEmbedding(
        cfg, lambda a, b: barlow_twins_loss(a, b, lambd=o.barlow_lambda, scale=o.barlow_scale)
    )


def vicreg(cfg: Config) -> Objective:
    o = cfg.objective
    return JointEmbedding(
        cfg,
        lambda a, b: vicreg_loss(
            a, b, sim_coeff=o.vicreg_sim, std_coeff=o.vicreg_std, cov_coeff=o.vicreg_cov
        ),
    )


def simclr(cfg: Config) -> Objective:
    o = cfg.objective
    return JointEmbedding(cfg, lambda a, b: nt_xent_loss(a, b, temperature=o.temperature))
