"""Pooling heads: a block's feature map (B, C, H, W) to one vector per example.

What a joint-embedding or supervised head reads before its projector
(``objective.pooling``):

- ``backbone``: the backbone's own pooling (:meth:`Backbone.pool`), the default;
- ``gsp``: global average over positions, (B, C);
- ``lsp``: average within a grid of spatial bins, concatenated to ``objective.pool_width``
  values (C times the number of bins);
- ``cbe``: a ``objective.cbe_kernel`` convolution expanding C to ``objective.pool_width``
  channels (no bias), batch norm, ReLU, then global average, L2 or square-root pooling
  (``objective.cbe_pool``).

The map comes from :meth:`~bwssl.models.Backbone.feature_map` (a ResNet's block output
itself; the video ViT's token grid averaged over time).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bwssl.config import ConfigError, ObjectiveConfig
from bwssl.models.backbone import Backbone
from bwssl.models.heads import GlobalBatchNorm2d

POOL_EPS = 1e-6
"""Added under the square roots of L2 and square-root pooling, so that their gradient stays
finite where a channel is zero."""


def lsp_grid(channels: int, width: int) -> tuple[int, int]:
    """The (rows, cols) bin grid that makes ``channels`` x bins equal ``width``: the bin
    count ``width / channels`` laid out as the most nearly square grid with rows <= cols
    (8 bins: 2 x 4; 2 bins: 1 x 2).

    Raises :class:`~bwssl.config.ConfigError` naming ``objective.pool_width`` when
    ``width`` is not a positive multiple of ``channels``.
    """
    if width < channels or width % channels:
        raise ConfigError(
            f"config key 'objective.pool_width': lsp concatenates one {channels}-channel "
            f"average per spatial bin, so the width must be a multiple of {channels} "
            f"(a block's channels), got {width}"
        )
    bins = width // channels
    rows = max(r for r in range(1, math.isqrt(bins) + 1) if bins % r == 0)
    return rows, bins // rows


class GlobalSpatialPool(nn.Module):
    """GSP: the mean over positions, (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class LocalSpatialPool(nn.Module):
    """LSP: averages over a ``grid`` of spatial bins (adaptive pooling's bins: rounded, so
    they may overlap by a pixel), flattened channel-major, (B, C, H, W) -> (B, C x bins).

    The map must have at least as many rows and columns as the grid.
    """

    def __init__(self, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] < self.grid[0] or x.shape[3] < self.grid[1]:
            raise ValueError(
                f"lsp needs a map of at least {self.grid[0]}x{self.grid[1]} positions for its "
                f"bins, got {x.shape[2]}x{x.shape[3]}; lower objective.pool_width"
            )
        return F.adaptive_avg_pool2d(x, self.grid).flatten(1)  # (B, C * rows * cols)


def l2_pool(x: torch.Tensor) -> torch.Tensor:
    """L2 pooling, the root of the mean square over positions: (B, C, H, W) -> (B, C),
    ``sqrt(mean(x^2) + POOL_EPS)``; it stresses the largest activations."""
    return torch.sqrt(x.square().mean(dim=(2, 3)) + POOL_EPS)


def sqrt_pool(x: torch.Tensor) -> torch.Tensor:
    """Square-root pooling, the mean over positions of the root of the (ReLU'd, so
    non-negative) map: (B, C, H, W) -> (B, C), ``mean(sqrt(relu(x) + POOL_EPS))``; it squeezes
    large activations and lifts small ones (the paper names it without a formula; this is the
    plain reading)."""
    return torch.sqrt(F.relu(x) + POOL_EPS).mean(dim=(2, 3))


CBE_POOLS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "avg": lambda x: x.mean(dim=(2, 3)),
    "l2": l2_pool,
    "sqrt": sqrt_pool,
}
"""The spatial poolings after the expansion, by ``objective.cbe_pool``."""


class ConvExpansion(nn.Module):
    """CbE: Conv2d(C, width, k, padding k // 2, no bias) -> norm -> ReLU -> spatial pooling,
    (B, C, H, W) -> (B, width).

    ``norm`` builds the batch norm from its channel count; the default normalizes over the
    global batch under DDP (as the official code's SyncBatchNorm does), so two processes
    splitting a batch train the head as one process on the whole batch.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        kernel: int,
        pool: str,
        norm: Callable[[int], nn.Module] = GlobalBatchNorm2d,
    ) -> None:
        super().__init__()
        if pool not in CBE_POOLS:
            raise ValueError(f"unknown CbE pooling {pool!r}; allowed: {', '.join(CBE_POOLS)}")
        self.conv = nn.Conv2d(channels, width, kernel, padding=kernel // 2, bias=False)
        self.norm = norm(width)
        self.pool_name = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm(self.conv(x)))  # (B, width, H, W)
        return CBE_POOLS[self.pool_name](y)


def build_pooling(
    cfg: ObjectiveConfig, channels: int, norm: Callable[[int], nn.Module] = GlobalBatchNorm2d
) -> tuple[nn.Module | None, int]:
    """The pooling module of ``cfg.pooling`` for a ``channels``-channel map and the width of
    its output; ``None`` and ``channels`` for ``backbone`` (the head then reads
    :meth:`Backbone.pool`, which has that width). ``norm``: CbE's batch norm (by default
    over the global batch of all processes)."""
    if cfg.pooling == "backbone":
        return None, channels
    if cfg.pooling == "gsp":
        return GlobalSpatialPool(), channels
    if cfg.pooling == "lsp":
        return LocalSpatialPool(lsp_grid(channels, cfg.pool_width)), cfg.pool_width
    if cfg.pooling == "cbe":
        cbe = ConvExpansion(channels, cfg.pool_width, cfg.cbe_kernel, cfg.cbe_pool, norm)
        return cbe, cfg.pool_width
    raise ValueError(f"unknown pooling {cfg.pooling!r}")


def head_input(pooling: str, backbone: Backbone, k: int, h: torch.Tensor) -> torch.Tensor:
    """What a pooling head of kind ``pooling`` reads from block k's output ``h``: the
    backbone's pooled vector (B, D_k) for ``backbone``, else the block's feature map
    (B, C, H, W)."""
    return backbone.pool(k, h) if pooling == "backbone" else backbone.feature_map(k, h)
