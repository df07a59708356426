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
from torch.utils.checkpoint import checkpoint

from bwssl.base.collectives import world_size
from bwssl.config import ConfigError, ObjectiveConfig
from bwssl.models.backbone import Backbone
from bwssl.models.heads import GlobalBatchNorm2d, count_batch, move_running_stats

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
    global batch under DDP, as the official code's SyncBatchNorm does (one process: exactly
    ``nn.BatchNorm2d``).

    ``checkpoint`` (``objective.cbe_checkpoint``): in training with autograd on, the
    expansion is recomputed in backward (:func:`torch.utils.checkpoint.checkpoint`,
    non-reentrant) instead of keeping its (B, width, H, W) conv and ReLU outputs; only the
    input and the pooled vector stay. The running statistics still move once per forward,
    exactly as the norm's own forward moves them: the checkpointed function is given copies
    and returns them moved with the pooled vector, and only the first run's are kept
    (``num_batches_tracked`` counts outside). The norm must be an ``nn.BatchNorm2d`` (the
    global one included) or hold no buffers. The backward of one head still holds a few
    (B, width, H, W) maps while it runs (the recomputed ones and their gradients); what goes
    is their lifetime from the forward to that point.
    """

    def __init__(
        self,
        channels: int,
        width: int,
        kernel: int,
        pool: str,
        norm: Callable[[int], nn.Module] = GlobalBatchNorm2d,
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if pool not in CBE_POOLS:
            raise ValueError(f"unknown CbE pooling {pool!r}; allowed: {', '.join(CBE_POOLS)}")
        self.conv = nn.Conv2d(channels, width, kernel, padding=kernel // 2, bias=False)
        self.norm = norm(width)
        self.pool_name = pool
        stateful = next(self.norm.buffers(), None) is not None
        if checkpoint and not isinstance(self.norm, nn.BatchNorm2d) and stateful:
            raise ValueError(
                f"CbE checkpointing (objective.cbe_checkpoint) recomputes the norm in "
                f"backward, so it needs an nn.BatchNorm2d or a norm without buffers, got "
                f"{type(self.norm).__name__}"
            )
        self.checkpoint = checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return self._checkpointed(x)
        y = F.relu(self.norm(self.conv(x)))  # (B, width, H, W)
        return CBE_POOLS[self.pool_name](y)

    def _checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        if not isinstance(norm, nn.BatchNorm2d):  # stateless: the plain module recomputes
            return checkpoint(self._expand_stateless, x, use_reentrant=False)
        factor = count_batch(norm)  # the batch counts once, here, not in the recomputation
        before: tuple[torch.Tensor, ...] = ()
        if factor is not None:
            assert norm.running_mean is not None and norm.running_var is not None
            # Copies, passed in: the function never reads the buffers that change below
            # (under torch.compile, what it reads becomes an input the recomputation checks).
            before = (norm.running_mean.clone(), norm.running_var.clone())
        pooled, *after = checkpoint(
            self._expand, x, factor, *before, use_reentrant=False, preserve_rng_state=False
        )
        if after:
            assert norm.running_mean is not None and norm.running_var is not None
            with torch.no_grad():
                norm.running_mean.copy_(after[0])
                norm.running_var.copy_(after[1])
        return pooled

    def _expand_stateless(self, x: torch.Tensor) -> torch.Tensor:
        return CBE_POOLS[self.pool_name](F.relu(self.norm(self.conv(x))))

    def _expand(
        self, x: torch.Tensor, factor: float | None, *running: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """The checkpointed expansion in training: the pooled vector, and with ``running``
        (the norm's running mean and variance) those statistics moved by ``factor`` towards
        the batch's, as the norm's forward moves them, but on copies: the function changes
        no tensor it is given, so its recomputation in backward has no effect."""
        norm = self.norm
        assert isinstance(norm, nn.BatchNorm2d)
        z = self.conv(x)  # (B, width, H, W)
        moved = [r.clone() for r in running]
        running_mean, running_var = moved if moved else (None, None)
        if isinstance(norm, GlobalBatchNorm2d) and world_size() > 1:
            if z.dtype in (torch.float16, torch.bfloat16):  # as GlobalBatchNorm2d.forward
                z = z.float()
            mean, var, count = norm.global_stats(z)
            if running_mean is not None and running_var is not None and factor is not None:
                move_running_stats(running_mean, running_var, mean, var, count, factor)
            y = norm.normalize(z, mean, var)
        else:  # nn.BatchNorm2d's own call, on the batch statistics, moving the copies
            y = F.batch_norm(
                z, running_mean, running_var, norm.weight, norm.bias, True, factor or 0.0, norm.eps
            )
        return CBE_POOLS[self.pool_name](F.relu(y)), *moved


def build_pooling(
    cfg: ObjectiveConfig, channels: int, norm: Callable[[int], nn.Module] = GlobalBatchNorm2d
) -> tuple[nn.Module | None, int]:
    """The pooling module of ``cfg.pooling`` for a ``channels``-channel map and the width of
    its output; ``None`` and ``channels`` for ``backbone`` (the head then reads
    :meth:`Backbone.pool`, which has that width). ``norm``: CbE's batch norm (default: over
    the global batch under DDP)."""
    if cfg.pooling == "backbone":
        return None, channels
    if cfg.pooling == "gsp":
        return GlobalSpatialPool(), channels
    if cfg.pooling == "lsp":
        return LocalSpatialPool(lsp_grid(channels, cfg.pool_width)), cfg.pool_width
    if cfg.pooling == "cbe":
        cbe = ConvExpansion(
            channels, cfg.pool_width, cfg.cbe_kernel, cfg.cbe_pool, norm, cfg.cbe_checkpoint
        )
        return cbe, cfg.pool_width
    raise ValueError(f"unknown pooling {cfg.pooling!r}")


def head_input(pooling: str, backbone: Backbone, k: int, h: torch.Tensor) -> torch.Tensor:
    """What a pooling head of kind ``pooling`` reads from block k's output ``h``: the
    backbone's pooled vector (B, D_k) for ``backbone``, else the block's feature map
    (B, C, H, W)."""
    return backbone.pool(k, h) if pooling == "backbone" else backbone.feature_map(k, h)
