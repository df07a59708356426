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
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bwssl.base.collectives import gather_batch, world_size
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
        chunk: int | None = None,
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
        if chunk is not None:
            if chunk < 1:
                raise ValueError(f"objective.cbe_chunk must be >= 1 images per chunk, got {chunk}")
            if not checkpoint or not isinstance(self.norm, nn.BatchNorm2d):
                raise ValueError(
                    f"objective.cbe_chunk computes the checkpointed expansion chunk by chunk, "
                    f"so it needs objective.cbe_checkpoint=true and an nn.BatchNorm2d, got "
                    f"checkpoint={checkpoint} and {type(self.norm).__name__}"
                )
        self.checkpoint = checkpoint
        self.chunk = chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            if self.chunk is not None:
                return self._chunked(x, self.chunk)
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

    def _chunked(self, x: torch.Tensor, chunk: int) -> torch.Tensor:
        """The expansion in training, ``chunk`` images at a time forward and backward
        (:class:`_ChunkedExpansion`); the running statistics move once, here, by the batch's
        (global under DDP) mean and variance, as the norm's forward moves them."""
        norm = self.norm
        assert isinstance(norm, nn.BatchNorm2d)
        factor = count_batch(norm)
        spec = _ChunkSpec(self, x, chunk)
        pooled, mean, var = _ChunkedExpansion.apply(
            x, self.conv.weight, norm.weight, norm.bias, spec
        )
        if factor is not None:
            assert norm.running_mean is not None and norm.running_var is not None
            count = x.shape[0] * x.shape[2] * x.shape[3]  # the conv keeps the spatial size
            if spec.global_norm is not None:
                count *= world_size()
            move_running_stats(norm.running_mean, norm.running_var, mean, var, count, factor)
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


def _relu_pool_backward(
    pool: str, grad: torch.Tensor, a: torch.Tensor, pooled: torch.Tensor | None
) -> torch.Tensor:
    """The gradient at the norm's output y of ReLU then a CbE pooling (``CBE_POOLS[pool]``),
    given ``grad`` (b, W) of the pooled output ``pooled`` (b, W; only ``l2`` reads it),
    computed in place in ``a = relu(y)`` (b, W, H, W'), which it overwrites. With P the
    number of positions, and ReLU's gradient the indicator of a > 0:

    - ``avg``, p = mean(a): dp/da = 1 / P;
    - ``l2``, p = sqrt(mean(a^2) + eps): dp/da = a / (P p), already 0 where a = 0;
    - ``sqrt``, p = mean(sqrt(relu(a) + eps)): dp/da = 1 / (2 P sqrt(a + eps)).
    """
    positions = a.shape[2] * a.shape[3]
    g = grad[:, :, None, None].to(a.dtype)
    if pool == "avg":
        return a.gt_(0).mul_(g / positions)
    if pool == "l2":
        assert pooled is not None
        return a.mul_(g / (positions * pooled[:, :, None, None].to(a.dtype)))
    if pool == "sqrt":
        off = a == 0
        return a.add_(POOL_EPS).rsqrt_().mul_(g / (2 * positions)).masked_fill_(off, 0)
    raise ValueError(f"unknown CbE pooling {pool!r}")


class _ChunkSpec:
    """What :class:`_ChunkedExpansion` needs besides tensors: the conv's geometry, the
    pooling, the norm's epsilon, the chunk size, whether the statistics are the global
    batch's (``GlobalBatchNorm2d`` under DDP), and the autocast state of the forward (which
    the recomputations in backward replay)."""

    def __init__(self, cbe: ConvExpansion, x: torch.Tensor, chunk: int) -> None:
        conv = cbe.conv
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.pool = cbe.pool_name
        self.eps = cbe.norm.eps
        self.chunk = chunk
        self.global_norm = (
            cbe.norm if isinstance(cbe.norm, GlobalBatchNorm2d) and world_size() > 1 else None
        )
        self.device = x.device.type
        self.autocast = torch.is_autocast_enabled(self.device)
        self.autocast_dtype = torch.get_autocast_dtype(self.device)
        self.map_dtype = x.dtype  # the conv output's, set by conv()

    def conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The expanding conv on a chunk, under the forward's autocast state; half-precision
        outputs come back in float32, in which the norm computes (as batch norm does)."""
        with torch.autocast(self.device, self.autocast_dtype, enabled=self.autocast):
            z = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)
        self.map_dtype = z.dtype
        return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


class _ChunkedExpansion(torch.autograd.Function):
    """CbE's training expansion (conv, batch norm on the batch statistics, ReLU, pooling)
    computed ``chunk`` images at a time, forward and backward, so that no more than a chunk's
    expanded maps exist at once; saved for backward: the input, the parameters, the batch
    mean and inverse standard deviation, and the pooled output.

    Forward: a pass over the chunks accumulates each channel's mean and biased variance
    (combined chunk by chunk, Chan's parallel formula; under DDP, gathered as
    ``GlobalBatchNorm2d`` gathers them), then a second pass normalizes, applies ReLU and
    pools. Backward, with y_hat the normalized map and dy the gradient at the norm's output:
    a first pass sums dy and dy * y_hat per channel (the gradients of the norm's bias and
    weight; under DDP summed over processes for the input's gradient), a second gives the
    conv's output the batch norm gradient ``weight * invstd * (dy - mean(dy) - y_hat *
    mean(dy * y_hat))`` and backpropagates it through a recomputed conv, chunk by chunk.
    The last chunk of each first pass is kept for the start of the second (which runs in
    reverse), saving one conv per pass.

    Returns the pooled vector (B, width) and, not differentiable, the batch mean and biased
    variance (what the caller moves the running statistics with).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        spec: _ChunkSpec,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chunks = x.split(spec.chunk)
        n = 0
        mean_acc = var_acc = torch.zeros(())
        z = x.new_empty(0)
        for xc in chunks:  # per-channel statistics, combined over chunks in float64
            z = spec.conv(xc, weight)
            var_c, mean_c = torch.var_mean(z, dim=(0, 2, 3), correction=0)
            m = z.numel() // z.shape[1]
            if n == 0:
                mean_acc, var_acc = mean_c.double(), var_c.double()
            else:
                delta = mean_c.double() - mean_acc
                mean_acc = mean_acc + delta * (m / (n + m))
                var_acc = (
                    var_acc * n + var_c.double() * m + delta.square() * (n * m / (n + m))
                ) / (n + m)
            n += m
        if spec.global_norm is not None:
            local = torch.cat([mean_acc, var_acc + mean_acc.square()]).to(z.dtype)
            mean, var, count = spec.global_norm.gather_moments(local, n)
        else:
            mean, var, count = mean_acc.to(z.dtype), var_acc.to(z.dtype), n
        invstd = torch.rsqrt(var + spec.eps)
        shape = (1, -1, 1, 1)
        mean4 = mean.view(shape)
        scale4 = (invstd if gamma is None else invstd * gamma).view(shape)
        outs: list[torch.Tensor] = []
        for i in reversed(range(len(chunks))):  # the last chunk's map is still at hand
            if i < len(chunks) - 1:
                z = spec.conv(chunks[i], weight)
            y = z.sub_(mean4).mul_(scale4)  # the norm, in place
            if beta is not None:
                y.add_(beta.view(shape))
            outs.append(CBE_POOLS[spec.pool](y.relu_()))
            del z, y
        out = torch.cat(outs[::-1])
        if spec.global_norm is None and spec.map_dtype in (torch.float16, torch.bfloat16):
            out = out.to(spec.map_dtype)  # nn.BatchNorm2d keeps a half map half
        ctx.spec, ctx.count = spec, count
        ctx.save_for_backward(x, weight, gamma, beta, mean, invstd, out)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor, *_: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        x, weight, gamma, beta, mean, invstd, out = ctx.saved_tensors
        spec: _ChunkSpec = ctx.spec
        need_x, need_w, need_gamma, need_beta = ctx.needs_input_grad[:4]
        shape = (1, -1, 1, 1)
        mean4, invstd4 = mean.view(shape), invstd.view(shape)
        gamma4 = gamma.view(shape) if gamma is not None else None
        beta4 = beta.view(shape) if beta is not None else None
        rows = list(
            zip(x.split(spec.chunk), grad.split(spec.chunk), out.split(spec.chunk), strict=True)
        )

        def maps(
            z: torch.Tensor, gc: torch.Tensor, oc: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """y_hat and dL/dy of a chunk from its conv output ``z``; y_hat overwrites z's
            values (which the conv's backward does not read), so a chunk holds two maps."""
            y_hat = z.detach().sub_(mean4).mul_(invstd4)
            a = y_hat.clone() if gamma4 is None else y_hat * gamma4
            if beta4 is not None:
                a.add_(beta4)
            return y_hat, _relu_pool_backward(spec.pool, gc, a.relu_(), oc)

        def conv_with_grad(xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            with torch.enable_grad():
                xl = xc.detach().requires_grad_(need_x)
                wl = weight.detach().requires_grad_(need_w)
                return xl, wl, spec.conv(xl, wl)

        keep = need_x or need_w
        kept: tuple[torch.Tensor, ...] = ()
        sum_dy = sum_dy_yhat = torch.zeros(())
        for i, (xc, gc, oc) in enumerate(rows):  # pass 1: the two sums per channel
            if keep and i == len(rows) - 1:  # its conv, with autograd, starts pass 2
                xl, wl, z = conv_with_grad(xc)
                y_hat, dy = maps(z, gc, oc)
                kept = (xl, wl, z, y_hat, dy)
                s2 = (dy * y_hat).sum((0, 2, 3))
            else:
                y_hat, dy = maps(spec.conv(xc, weight), gc, oc)
                s2 = y_hat.mul_(dy).sum((0, 2, 3))
            s1 = dy.sum((0, 2, 3))
            if i == 0:
                sum_dy, sum_dy_yhat = s1.double(), s2.double()
            else:
                sum_dy, sum_dy_yhat = sum_dy + s1.double(), sum_dy_yhat + s2.double()
            del y_hat, dy
        grad_gamma = sum_dy_yhat.to(gamma.dtype) if gamma is not None and need_gamma else None
        grad_beta = sum_dy.to(beta.dtype) if beta is not None and need_beta else None
        if not keep:
            return None, None, grad_gamma, grad_beta, None
        sums = torch.cat([sum_dy, sum_dy_yhat]).to(mean.dtype)
        if spec.global_norm is not None:  # the input's gradient needs the global batch's sums
            sums = gather_batch(sums[None]).sum(0)
        mean_dy, mean_dy_yhat = (sums / ctx.count).view(2, *shape).unbind(0)
        scale = invstd4 if gamma4 is None else invstd4 * gamma4
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        start = x.shape[0]
        for i in reversed(range(len(rows))):  # pass 2: through the conv, last chunk first
            xc, gc, oc = rows[i]
            start -= xc.shape[0]
            if kept:
                xl, wl, z, y_hat, dy = kept
                kept = ()
            else:
                xl, wl, z = conv_with_grad(xc)
                y_hat, dy = maps(z, gc, oc)
            # dL/dz = weight * invstd * (dy - mean(dy) - y_hat * mean(dy * y_hat)), in dy
            dz = dy.sub_(mean_dy).sub_(y_hat.mul_(mean_dy_yhat)).mul_(scale)
            del y_hat, dy
            leaves = [t for t, need in ((xl, need_x), (wl, need_w)) if need]
            grads = torch.autograd.grad(z, leaves, dz.to(z.dtype))
            del z, dz
            if need_x:
                assert grad_x is not None
                grad_x[start : start + xc.shape[0]] = grads[0]
            if need_w:
                assert grad_w is not None
                grad_w += grads[-1]
        return grad_x, grad_w, grad_gamma, grad_beta, None


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
            channels,
            cfg.pool_width,
            cfg.cbe_kernel,
            cfg.cbe_pool,
            norm,
            cfg.cbe_checkpoint,
            cfg.cbe_chunk,
        )
        return cbe, cfg.pool_width
    raise ValueError(f"unknown pooling {cfg.pooling!r}")


def head_input(pooling: str, backbone: Backbone, k: int, h: torch.Tensor) -> torch.Tensor:
    """What a pooling head of kind ``pooling`` reads from block k's output ``h``: the
    backbone's pooled vector (B, D_k) for ``backbone``, else the block's feature map
    (B, C, H, W)."""
    return backbone.pool(k, h) if pooling == "backbone" else backbone.feature_map(k, h)
