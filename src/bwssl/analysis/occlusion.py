"""Occlusion sensitivity: keep one cell (or one per hemifield), fill the rest.

Clips are normalized (ImageNet statistics, :mod:`bwssl.data.transforms`) with
shape (C, T, H, W) or (B, C, T, H, W). Two fills (:data:`Fill`):

- ``grey`` (the paper's protocol): the occluded pixels are 0 in the model's
  input space, i.e. 0 in the normalized clip, the mean pixel (a mid-grey).
- ``black``: pixel value 0 *before* normalization, which in the normalized
  clip is ``-mean / std`` per channel.

Pass ``normalized=False`` for clips in [0, 1] pixels. Occlusion happens
before the model sees the clip and covers every frame. The kept *cell* is a
square of ``patch`` x ``patch`` pixels, over all frames, in the grid of such
squares that tiles the frame:

- on a patch-token backbone (the video ViT) a cell is one spatial token patch
  (``patch`` = the model's patch size, ``tubelet`` its tubelet size), so the
  kept pixels are whole tokens;
- on a backbone without a token grid (a ResNet) a cell is a pixel window of
  side :func:`window_side` (``tubelet`` = 1: any frame count), by default a
  quarter of the crop, a 4x4 grid.

Cell indices are row-major over the spatial grid (w fastest), the same
order as the tokens of one frame slice. Where the cell is kept: a few fixed
locations shared by all clips (:func:`patch_locations`,
:func:`hemifield_pairs`; one probe per location), or one random location per
clip (:func:`per_clip_cells`, the paper's protocol: one probe over mixed
locations, which must read the stimulus wherever the window is), applied by
:class:`OccludedClips`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from bwssl.data.transforms import denormalize, normalize

Fill = Literal["grey", "black"]
"""What occluded pixels become: ``grey`` (0 in the model's input space, the mean pixel) or
``black`` (pixel value 0)."""


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


WINDOWS_PER_SIDE = 4
"""Pixel windows along each side of the frame by default (:func:`window_side`)."""


def window_side(crop_size: int, window: int | None = None) -> int:
    """The side in pixels of the kept window on a backbone without a token grid: ``window``
    when given, else ``crop_size // WINDOWS_PER_SIDE`` (a 4x4 grid of windows; at least 1).
    Whether it tiles the crop is :func:`~bwssl.analysis.requirements.occlusion_needs`'s
    question."""
    return window if window is not None else max(1, crop_size // WINDOWS_PER_SIDE)


def cell_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """The (rows, cols) grid of ``patch`` x ``patch`` cells tiling a ``height`` x ``width``
    frame; ValueError when the cells do not tile it exactly."""
    if patch < 1 or height % patch or width % patch:
        raise ValueError(
            f"a {height}x{width} frame is not divisible into {patch}x{patch}-pixel cells"
        )
    return height // patch, width // patch


def _grid(video: torch.Tensor, tubelet: int, patch: int) -> tuple[int, int]:
    if video.dim() not in (4, 5):
        raise ValueError(f"video must be (C, T, H, W) or (B, C, T, H, W), got {tuple(video.shape)}")
    t, h, w = video.shape[-3:]
    if t % tubelet:
        raise ValueError(f"a clip of {t} frames is not divisible into tubelets of {tubelet}")
    return cell_grid(h, w, patch)


def fill_value(video: torch.Tensor, normalized: bool, fill: Fill) -> torch.Tensor:
    """The occluded value per channel, shaped (C, 1, 1, 1) to broadcast over
    (..., C, T, H, W): in the clip's own space (normalized or pixels)."""
    if fill not in ("grey", "black"):
        raise ValueError(f"unknown fill {fill!r}; allowed: grey, black")
    c = video.shape[-4]
    zero = torch.zeros(c, 1, 1, 1, dtype=video.dtype, device=video.device)
    if fill == "grey":  # 0 in the normalized input
        return zero if normalized else denormalize(zero, channel_dim=0)
    return normalize(zero, channel_dim=0) if normalized else zero


def _keep_cells(
    video: torch.Tensor,
    cells: list[int],
    grid: tuple[int, int],
    patch: int,
    normalized: bool,
    fill: Fill,
) -> torch.Tensor:
    gh, gw = grid
    keep = torch.zeros(video.shape[-2:], dtype=torch.bool, device=video.device)  # (H, W)
    for cell in cells:
        if not 0 <= cell < gh * gw:
            raise ValueError(f"patch index {cell} outside the {gh}x{gw} spatial grid")
        r, c = divmod(cell, gw)
        keep[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = True
    return torch.where(keep, video, fill_value(video, normalized, fill))


def keep_one_patch(
    video: torch.Tensor,
    patch_index: int,
    tubelet: int,
    patch: int,
    normalized: bool = True,
    fill: Fill = "grey",
) -> torch.Tensor:
    """A copy of ``video`` filled everywhere except spatial cell ``patch_index`` (all frames).

    A cell is ``patch`` x ``patch`` pixels: a ViT's token patch (``tubelet``
    and ``patch`` its token sizes) or a ResNet's pixel window (``tubelet`` 1,
    ``patch`` = :func:`window_side`). The clip must divide into them.
    """
    grid = _grid(video, tubelet, patch)
    return _keep_cells(video, [patch_index], grid, patch, normalized, fill)


def keep_patch_per_hemifield(
    video: torch.Tensor,
    left_index: int,
    right_index: int,
    tubelet: int,
    patch: int,
    normalized: bool = True,
    fill: Fill = "grey",
) -> torch.Tensor:
    """A copy of ``video`` filled everywhere except one cell in each half (all frames).

    Cells as in :func:`keep_one_patch`. ``left_index`` must lie in the left
    half of the spatial grid (column < W'/2), ``right_index`` in the right
    half; the grid width W' must be even so that the hemifield border (at
    W/2, where Level-2 gratings are spliced) falls between cells.
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
    return _keep_cells(video, [left_index, right_index], (gh, gw), patch, normalized, fill)


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


def per_clip_cells(
    num_clips: int, grid: tuple[int, int], hemifields: bool, seed: int = 0
) -> np.ndarray:
    """One random kept location per clip, seeded: (N, 1) patch indices, or with
    ``hemifields`` (N, 2) (left, right) pairs drawn independently in each half."""
    gh, gw = grid
    rng = np.random.default_rng([seed, 7])
    if not hemifields:
        return rng.integers(0, gh * gw, size=(num_clips, 1))
    if gw % 2:
        raise ValueError(f"hemifield cells need an even number of patch columns, got {gw}")
    half = gw // 2
    rows = rng.integers(0, gh, size=(num_clips, 2))
    cols = rng.integers(0, half, size=(num_clips, 2)) + np.array([0, half])
    return rows * gw + cols


class OccludedClips(torch.utils.data.Dataset):
    """``dataset`` with item i occluded around its own cells ``cells[i]`` (one cell, or one
    per hemifield; ``patch`` x ``patch`` pixels over ``tubelet`` frames, as in
    :func:`keep_one_patch`): what the per-clip protocol feeds the model. ``dataset[i]`` is a clip
    (C, T, H, W), a ``(clip, label)`` pair, or None (unreadable), passed on as such."""

    def __init__(
        self,
        dataset: Any,
        cells: np.ndarray,
        tubelet: int,
        patch: int,
        fill: Fill = "grey",
    ) -> None:
        if len(cells) != len(dataset):
            raise ValueError(f"{len(cells)} cell rows for {len(dataset)} clips")
        self.dataset, self.cells = dataset, np.asarray(cells, dtype=np.int64)
        self.tubelet, self.patch, self.fill = tubelet, patch, fill

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        sample = self.dataset[i]
        if sample is None:
            return None
        clip = sample[0] if isinstance(sample, tuple) else sample
        cells = [int(c) for c in self.cells[i]]
        if len(cells) == 1:
            out = keep_one_patch(clip, cells[0], self.tubelet, self.patch, fill=self.fill)
        else:
            out = keep_patch_per_hemifield(
                clip, cells[0], cells[1], self.tubelet, self.patch, fill=self.fill
            )
        return (out, *sample[1:]) if isinstance(sample, tuple) else out
