"""Masked pixel reconstruction: tubelet targets and the masked MSE."""

from __future__ import annotations

import torch

from bwssl.data.transforms import denormalize


def patch_targets(video: torch.Tensor, tubelet: int, patch: int,
                  normalize: bool = True) -> torch.Tensor:
    """Per-token pixel targets (B, N, t*p*p*C) from a normalized clip (B, C, T, H, W).

    Pixels are first mapped back to [0, 1]. With ``normalize`` each tubelet is
    standardized per channel over its t*p*p pixels (unbiased variance,
    ``(x - mean) / (std + 1e-6)``), as VideoMAE does. Channel is the fastest axis.
    """
    b, c, t, h, w = video.shape
    x = denormalize(video.float(), channel_dim=1)
    x = x.view(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    # -> (B, T', H', W', t, p, p, C) -> (B, N, t*p*p, C)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, tubelet * patch * patch, c)
    if normalize:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True)
                                                  .sqrt() + 1e-6)
    return x.flatten(2)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over batch, reconstructed tokens and target dims (both (B, M, P))."""
    return (pred.float() - target).pow(2).mean()
