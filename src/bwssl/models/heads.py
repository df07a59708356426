"""Local heads that read a block's pooled features (the decoder lives in decoder.py)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class Projector(nn.Module):
    """Pooled features (B, D) -> embedding (B, widths[-1]).

    Every layer but the last is Linear without bias, BatchNorm1d, ReLU; the
    last is a Linear without bias, as in the Barlow Twins and VICReg projectors
    (``8192-8192-8192`` there).
    """

    def __init__(self, in_dim: int, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dims = [in_dim, *widths]
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(a, b, bias=False))
            if i < len(widths) - 1:
                layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
