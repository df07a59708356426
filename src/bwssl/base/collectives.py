"""Collectives that keep autograd: statistics over the global batch of all processes."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

_DATA_GROUP: list[dist.ProcessGroup | None] = [None]
"""The process group the global batch is split over; None: the default group."""


@contextlib.contextmanager
def data_parallel_group(group: dist.ProcessGroup | None) -> Iterator[None]:
    """Within the block, batch statistics (:func:`world_size`, :func:`gather_batch`) are
    taken over ``group``'s processes, the ones that split one global batch (block-parallel
    training's replicas of one pipeline stage), instead of over every process."""
    before = _DATA_GROUP[0]
    _DATA_GROUP[0] = group
    try:
        yield
    finally:
        _DATA_GROUP[0] = before


def world_size() -> int:
    """Processes that split the global batch: those of the data-parallel group (see
    :func:`data_parallel_group`; 1 without an initialized process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(_DATA_GROUP[0])


def gather_batch(z: Tensor) -> Tensor:
    """Concatenate the local rows ``z`` (b, ...) of every process of the data-parallel group
    into (world_size * b, ...).

    Uses the autograd-aware ``torch.distributed.nn.functional.all_gather``: the backward pass
    sends each process the sum, over processes, of the gradients with respect to its rows. All
    processes must pass tensors of the same shape. Without an initialized process group, or with
    one process, ``z`` itself is returned and no collective is issued.
    """
    if world_size() == 1:
        return z
    if _DATA_GROUP[0] is not None:
        return _GroupGather.apply(z, _DATA_GROUP[0])
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # Recent torch marks this wrapper deprecated in favour of a private functional API;
        # it remains the public autograd-aware gather.
        warnings.filterwarnings(
            "ignore", message=r".*all_gather is deprecated", category=FutureWarning
        )
        parts = all_gather(z, group=_DATA_GROUP[0])
    return torch.cat(parts, dim=0)


class _GroupGather(torch.autograd.Function):
    """All-gather over a subgroup, with the backward of :func:`gather_batch`: each process
    gets the sum over the group's processes of the gradients of its rows (an all-reduce of
    the whole gradient, then its slice). Written here because torch's autograd-aware
    ``all_gather`` scatters its gradients to group ranks as if they were global ranks, which
    fails in any group that is not the default one."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, group: dist.ProcessGroup) -> Tensor:
        ctx.group, ctx.rows = group, z.shape[0]
        ctx.rank = dist.get_rank(group)
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, z.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None
