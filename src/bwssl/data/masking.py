"""Token masks for masked video modeling.

A mask is a bool tensor (B, N) over the flattened (t, h, w) token grid, w
fastest, True where a token is hidden from the encoder. Every clip of a batch
has the same number of visible tokens, so visible tokens stack into
(B, N_vis, D) without padding.
"""

from __future__ import annotations

import torch


def num_masked(num_tokens: int, ratio: float) -> int:
    """Tokens hidden by a mask ratio: ``int(ratio * num_tokens)``, rounded down as VideoMAE's
    mask generators count them (64 positions at 0.9 hide 57 and keep 7)."""
    return int(ratio * num_tokens)


def num_visible(num_tokens: int, ratio: float) -> int:
    """Tokens left visible by a mask ratio in [0, 1): ``num_tokens - num_masked``, at least 1."""
    return max(1, num_tokens - num_masked(num_tokens, ratio))


def tube_mask(
    batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """VideoMAE tube masking: one spatial mask per clip, repeated over time.

    The masked count is taken per frame slice, so each clip shows
    ``T' * (H'W' - int(ratio H'W'))`` tokens (:func:`num_visible`).
    """
    t, h, w = grid
    n_space = h * w
    keep = num_visible(n_space, ratio)
    noise = torch.rand(batch, n_space, generator=generator)
    order = noise.argsort(dim=1)
    space = torch.ones(batch, n_space, dtype=torch.bool)
    space.scatter_(1, order[:, :keep], False)
    return space.unsqueeze(1).expand(batch, t, n_space).reshape(batch, t * n_space)


def random_mask(
    batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Independent random masking over all tokens, same visible count per clip."""
    n = grid[0] * grid[1] * grid[2]
    keep = num_visible(n, ratio)
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], False)
    return mask


def make_mask(
    kind: str,
    batch: int,
    grid: tuple[int, int, int],
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dispatch on ``kind`` (``tube`` or ``random``)."""
    if kind == "tube":
        return tube_mask(batch, grid, ratio, generator)
    if kind == "random":
        return random_mask(batch, grid, ratio, generator)
    raise ValueError(f"unknown mask kind {kind!r}; allowed: tube, random")
