"""Clip normalization shared by every dataset, the model's targets and the analyses.

Clips are float tensors (C, T, H, W) normalized with the ImageNet statistics,
as in VideoMAE; reconstruction targets undo this to [0, 1] pixels first.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    c = x.shape[channel_dim]
    mean = torch.tensor(IMAGENET_MEAN[:c] if c <= 3 else [0.5] * c, dtype=x.dtype, device=x.device)
    std = torch.tensor(IMAGENET_STD[:c] if c <= 3 else [0.25] * c, dtype=x.dtype, device=x.device)
    return mean.view(shape), std.view(shape)


def normalize(x: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """[0, 1] pixels -> normalized clip (channel axis ``channel_dim``)."""
    mean, std = _stats(x, channel_dim)
    return (x - mean) / std


def denormalize(x: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """Normalized clip -> [0, 1] pixels (channel axis ``channel_dim``)."""
    mean, std = _stats(x, channel_dim)
    return x * std + mean
