"""Collectives that keep autograd: statistics over the global batch of all processes."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes of the default group (1 without an initialized process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def gather_batch(z: Tensor) -> Tensor:
    """Concatenate the local rows ``z`` (b, ...) of every process into (world_size * b, ...).

    Uses the autograd-aware ``torch.distributed.nn.functional.all_gather``: the backward pass
    sends each process the sum, over processes, of the gradients with respect to its rows. All
    processes must pass tensors of the same shape. Without an initialized process group, or with
    one process, ``z`` itself is returned and no collective is issued.
    """
    if world_size() == 1:
        return z
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # Recent torch marks this wrapper deprecated in favour of a private functional API;
        # it remains the public autograd-aware gather.
        warnings.filterwarnings(
            "ignore", message=r".*all_gather is deprecated", category=FutureWarning
        )
        parts = all_gather(z)
    return torch.cat(parts, dim=0)
