"""Occlusion sensitivity: keep one patch (or one per hemifield), black out the rest.

Clips are normalized (ImageNet statistics, :mod:`bwssl.data.transforms`) with
shape (C, T, H, W) or (B, C, T, H, W). "Zeroed in pixel space" means the
occluded pixels become black, i.e. pixel value 0 *before* normalization,
which in the normalized clip is ``-mean / std`` per channel, not 0 (a
normalized 0 is a mid-gray). Pass ``normalized=False`` for clips in [0, 1]
pixels, which are then set to 0. Occlusion happens before tokenization and
covers every frame; the kept patch is one spatial cell of the token grid
(``patch`` x ``patch`` pixels), over all frames.

Patch indices are row-major over the spatial token grid (w fastest), the same
order as the tokens of one frame slice.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bwssl.data.transforms import normalize


def occdrop(acc_full: float, acc_occluded: float) -> float:
    """Relative accuracy drop under occlusion: ``(acc_full - acc_occluded) / acc_full``.

    0 means occlusion costs nothing, 1 that it brings accuracy to 0; negative
    values (occlusion helped) are returned as they are. ``acc_full == 0``
    raises ValueError: the relative drop is undefined, and a nan would pass
    silently into the averages.
    """
    full, occl = float(acc_full), float(acc_occluded)
    if not (math.isfinite(full) and math.isfinite(occl)):
        raise ValueError(f"occdrop needs finite accuracies, got {full} and {occl}")
    if full == 0.0:
        raise ValueError(
            "occdrop is undefined when acc_full == 0 (the probe never succeeds on unoccluded clips)"
        )
    return (full - occl) / full


def _grid(video: torch.Tensor, tubelet: int, patch: int) -> tuple[int, int]:
    if video.dim() not in (4, 5):
        raise ValueError(f"video must be (C, T, H, W) or (B, C, T, H, W), got {tuple(video.shape)}")
    t, h, w = video.shape[-3:]
    if t % tubelet or h % patch or w % patch:
        raise ValueError(
            f"clip (T, H, W)=({t}, {h}, {w}) is not divisible into tubelets "
            f"({tubelet}, {patch}, {patch})"
        )
    return h // patch, w // patch


def _black(video: torch.Tensor, normalized: bool) -> torch.Tensor:
    """The occluded value per channel, shaped to broadcast over (..., C, T, H, W)."""
    c = video.shape[-4]
    zero = torch.zeros(c, 1, 1, 1, dtype=video.dtype, device=video.device)
    return normalize(zero, channel_dim=0) if normalized else zero


def _keep_cells(
    video: torch.Tensor, cells: list[int], grid: tuple[int, int], patch: int, normalized: bool
) -> torch.Tensor:
    gh, gw = grid
    keep = torch.zeros(video.shape[-2:], dtype=torch.bool, device=video.device)  # (H, W)
    for cell in cells:
        if not 0 <= cell < gh * gw:
            raise ValueError(f"patch index {cell} outside the {gh}x{gw} spatial grid")
        r, c = divmod(cell, gw)
        keep[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = True
    return torch.where(keep, video, _black(video, normalized))


def keep_one_patch(
    video: torch.Tensor, patch_index: int, tubelet: int, patch: int, normalized: bool = True
) -> torch.Tensor:
    """A copy of ``video`` black everywhere except spatial patch ``patch_index`` (all frames).

    ``tubelet`` and ``patch`` are the model's token sizes; the clip must
    divide into them.
    """
    grid = _grid(video, tubelet, patch)
    return _keep_cells(video, [patch_index], grid, patch, normalized)


def keep_patch_per_hemifield(
    video: torch.Tensor,
    left_index: int,
    right_index: int,
    tubelet: int,
    patch: int,
    normalized: bool = True,
) -> torch.Tensor:
    """A copy of ``video`` black everywhere except one patch in each half (all frames).

    ``left_index`` must lie in the left half of the spatial grid (column <
    W'/2), ``right_index`` in the right half; the grid width W' must be even
    so that the hemifield border (at W/2, where Level-2 gratings are
    spliced) falls between patches.
    """
    gh, gw = _grid(video, tubelet, patch)
    if gw % 2:
        raise ValueError(f"hemifield occlusion needs an even number of patch columns, got {gw}")
    if not (0 <= left_index < gh * gw and left_index % gw < gw // 2):
        raise ValueError(f"left_index {left_index} is not in the left half of the {gh}x{gw} grid")
    if not (0 <= right_index < gh * gw and right_index % gw >= gw // 2):
        raise ValueError(
            f"right_index {right_index} is not in the right half of the {gh}x{gw} grid"
        )
    return _keep_cells(video, [left_index, right_index], (gh, gw), patch, normalized)


def patch_locations(grid: tuple[int, int], count: int | None = None, seed: int = 0) -> list[int]:
    """Spatial patch indices to occlude around: all of them, or ``count`` drawn (seeded)."""
    n = grid[0] * grid[1]
    if count is None or count >= n:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=count, replace=False))


def hemifield_pairs(
    grid: tuple[int, int], count: int | None = None, seed: int = 0
) -> list[tuple[int, int]]:
    """(left, right) patch pairs: the mirror-symmetric pairs, or ``count`` random pairs (seeded).

    Without ``count``, every left patch is paired with its mirror image in the
    right half (same row, same distance from the border). With ``count``,
    left and right patches are drawn independently.
    """
    gh, gw = grid
    if gw % 2:
        raise ValueError(f"hemifield pairs need an even number of patch columns, got {gw}")
    half = gw // 2
    lefts = [r * gw + c for r in range(gh) for c in range(half)]
    if count is None:
        return [(i, i - 2 * (i % gw) + gw - 1) for i in lefts]
    rights = [r * gw + c for r in range(gh) for c in range(half, gw)]
    rng = np.random.default_rng(seed)
    return [(int(rng.choice(lefts)), int(rng.choice(rights))) for _ in range(count)]
