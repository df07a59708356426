"""Local heads that read a block's pooled features (the decoder lives in decoder.py)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from bwssl.base.collectives import gather_batch, world_size


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the global batch of all processes.

    With one process it is ``nn.BatchNorm1d``. Under DDP the local rows are
    gathered with an autograd-aware collective, so the normalization and its
    gradients equal one process running the whole batch, as the official
    joint-embedding code gets from SyncBatchNorm. ``nn.SyncBatchNorm`` itself
    is not used because it refuses CPU tensors, and bwssl trains (and tests)
    multi-process runs on CPU with gloo. Same parameters and buffers (and
    state-dict keys) as ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        xs = gather_batch(x)  # (B_global, D)
        mean, var = xs.mean(0), xs.var(0, unbiased=False)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                n = xs.shape[0]
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), m)
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
        out = (x - mean) / torch.sqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch of all processes.

    With one process it is ``nn.BatchNorm2d``. Under DDP each process's per-channel mean
    and mean square (not its feature maps) are gathered with an autograd-aware collective,
    so normalization, gradients and running statistics equal one process on the whole
    batch, as with SyncBatchNorm (which refuses the CPU tensors of gloo runs). Every
    process must hold maps of the same shape. Half-precision maps are normalized in
    float32 (the output too, as autocast runs batch norm). Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        if x.dtype in (torch.float16, torch.bfloat16):  # statistics in fp32, as batch_norm
            x = x.float()
        mean, var, count = self.global_stats(x)
        factor = count_batch(self)
        if factor is not None:
            assert self.running_mean is not None and self.running_var is not None
            move_running_stats(self.running_mean, self.running_var, mean, var, count, factor)
        return self.normalize(x, mean, var)

    def global_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-channel mean and biased variance of the global batch (autograd flows through
        them to ``x``, whatever process holds the rows) and the global number of values per
        channel; under DDP, one gather of each process's (2C,) mean and mean square."""
        local = torch.cat([x.mean((0, 2, 3)), x.square().mean((0, 2, 3))])  # (2C,)
        return self.gather_moments(local, x.numel() // x.shape[1])

    def gather_moments(
        self, local: torch.Tensor, count: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """What :meth:`global_stats` does with one process's per-channel moments: ``local``
        (2C,), its mean then its mean square over ``count`` values per channel (the same on
        every process), gathered into the global batch's mean, biased variance and count."""
        mean, sq = gather_batch(local[None]).mean(0).chunk(2)  # equal counts per process
        var = (sq - mean.square()).clamp_min(0)
        return mean, var, count * world_size()

    def normalize(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """``x`` normalized with the per-channel ``mean`` and ``var``, then the affine map."""
        shape = (1, -1, 1, 1)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def count_batch(bn: nn.modules.batchnorm._BatchNorm) -> float | None:
    """What a training forward of ``bn`` does first: count the batch in
    ``num_batches_tracked`` and return the factor by which the running statistics move
    towards the batch's (``momentum``; with ``momentum=None`` one over the count, the
    cumulative average), as ``nn.BatchNorm2d`` does; None, counting nothing, for a norm
    without running statistics."""
    if not bn.track_running_stats or bn.running_mean is None or bn.num_batches_tracked is None:
        return None
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


def move_running_stats(
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    count: int,
    factor: float,
) -> None:
    """Move running statistics in place by ``factor`` towards a batch's per-channel ``mean``
    and biased ``var`` over ``count`` values per channel (the variance's unbiased estimate,
    as batch norm keeps it). No autograd."""
    with torch.no_grad():
        running_mean.lerp_(mean.detach(), factor)
        running_var.lerp_(var.detach() * count / max(count - 1, 1), factor)


class Projector(nn.Module):
    """Pooled features (B, D) -> embedding (B, widths[-1]), optionally behind a pooling head.

    Every layer but the last is Linear without bias, batch norm (over the
    global batch), ReLU; the last is a Linear without bias, as in the Barlow
    Twins and VICReg projectors (``8192-8192-8192`` there).

    With ``pool`` (a module of :mod:`bwssl.models.pooling` whose output has ``in_dim``
    values) the head reads a feature map (B, C, H, W) and pools it first; its parameters
    are the head's, under ``pool.``. Without, it reads (B, in_dim) and has exactly the
    projector's parameters (``net.``).
    """

    def __init__(self, in_dim: int, widths: list[int], pool: nn.Module | None = None) -> None:
        super().__init__()
        self.pool = pool
        layers: list[nn.Module] = []
        dims = [in_dim, *widths]
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b, bias=False))
            if i < len(widths) - 1:
                layers += [GlobalBatchNorm1d(b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The head's pooled vector (B, in_dim), what enters the projector: ``x`` pooled, or
        ``x`` itself without a pooling module (what probes of "the head's output" read)."""
        return x if self.pool is None else self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.pooled(x))
