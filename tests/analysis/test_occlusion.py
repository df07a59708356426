"""OccDrop and the pixel-space occluders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bwssl.analysis import occdrop
from bwssl.analysis.occlusion import (
    OccludedClips,
    hemifield_pairs,
    keep_one_patch,
    keep_patch_per_hemifield,
    patch_locations,
    per_clip_cells,
)
from bwssl.data.transforms import IMAGENET_MEAN, denormalize, normalize


def test_occdrop_formula() -> None:
    assert occdrop(0.8, 0.6) == pytest.approx(0.25)
    assert occdrop(0.5, 0.5) == 0.0
    assert occdrop(0.4, 0.0) == 1.0
    assert occdrop(0.4, 0.5) == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="acc_full == 0"):
        occdrop(0.0, 0.1)


def test_keep_one_patch_blacks_out_the_rest_in_pixel_space() -> None:
    pixels = torch.rand(2, 3, 4, 32, 32) * 0.9 + 0.1  # (B, C, T, H, W), no black pixel
    out = keep_one_patch(
        normalize(pixels, channel_dim=1), patch_index=5, tubelet=2, patch=8, fill="black"
    )
    back = denormalize(out, channel_dim=1)
    keep = torch.zeros(32, 32, dtype=torch.bool)
    keep[8:16, 8:16] = True  # index 5 on a 4x4 grid: row 1, column 1
    assert torch.allclose(back[..., keep], pixels[..., keep], atol=1e-6)
    assert back[..., ~keep].abs().max() < 1e-6
    raw = keep_one_patch(pixels[0], 0, tubelet=2, patch=8, normalized=False, fill="black")
    assert raw[..., 8:, :].abs().max() == 0 and torch.equal(
        raw[..., :8, :8], pixels[0, ..., :8, :8]
    )


def test_keep_patch_per_hemifield() -> None:
    pixels = torch.rand(3, 4, 32, 32) + 0.5
    out = keep_patch_per_hemifield(
        pixels, 4, 11, tubelet=2, patch=8, normalized=False, fill="black"
    )
    kept = (out != 0).all(dim=0).all(dim=0)  # (H, W)
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:16, 0:8] = True  # left 4: row 1, col 0
    expected[16:24, 24:32] = True  # right 11: row 2, col 3
    assert torch.equal(kept, expected)
    with pytest.raises(ValueError, match="left half"):
        keep_patch_per_hemifield(pixels, 2, 11, tubelet=2, patch=8)
    with pytest.raises(ValueError, match="divisible"):
        keep_one_patch(pixels, 0, tubelet=3, patch=8)


def test_locations() -> None:
    assert patch_locations((4, 4)) == list(range(16))
    assert patch_locations((4, 4), 5, seed=1) == patch_locations((4, 4), 5, seed=1)
    assert len(set(patch_locations((4, 4), 5, seed=1))) == 5
    pairs = hemifield_pairs((2, 4))
    assert pairs == [(0, 3), (1, 2), (4, 7), (5, 6)]
    assert all(l_ % 4 < 2 <= r % 4 for l_, r in hemifield_pairs((4, 4), 6, seed=0))


def test_grey_fill_is_zero_in_the_normalized_input_the_mean_pixel() -> None:
    pixels = torch.rand(3, 4, 32, 32) * 0.9 + 0.1
    out = keep_one_patch(normalize(pixels, channel_dim=0), 5, tubelet=2, patch=8)  # grey
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[8:16, 8:16] = False
    assert out[..., outside].abs().max() == 0  # 0 in the model's input space
    back = denormalize(out, channel_dim=0)[..., outside]  # (C, T, n): the mean pixel
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    assert torch.allclose(back, mean.expand_as(back), atol=1e-6)
    raw = keep_one_patch(pixels, 5, tubelet=2, patch=8, normalized=False)  # pixels in [0, 1]
    assert torch.allclose(raw[..., outside], mean.expand(3, 4, int(outside.sum())), atol=1e-6)


def test_per_clip_locations_differ_across_clips_and_are_seeded() -> None:
    cells = per_clip_cells(200, (4, 4), hemifields=False, seed=0)
    assert cells.shape == (200, 1) and len(np.unique(cells)) == 16  # every location used
    assert np.array_equal(cells, per_clip_cells(200, (4, 4), hemifields=False, seed=0))
    assert not np.array_equal(cells, per_clip_cells(200, (4, 4), hemifields=False, seed=1))
    pairs = per_clip_cells(200, (4, 4), hemifields=True, seed=0)
    assert pairs.shape == (200, 2)
    assert (pairs[:, 0] % 4 < 2).all() and (pairs[:, 1] % 4 >= 2).all()
    assert len({tuple(p) for p in pairs}) > 20


def test_occluded_clips_keep_each_clips_own_patch() -> None:
    clips = [normalize(torch.rand(3, 4, 32, 32) * 0.9 + 0.1, channel_dim=0) for _ in range(6)]
    cells = per_clip_cells(6, (4, 4), hemifields=False, seed=3)
    ds = OccludedClips(clips, cells, tubelet=2, patch=8)
    kept = []
    for i in range(6):
        out = ds[i]
        seen = (out != 0).all(dim=0).all(dim=0)  # (H, W): where the clip shows through
        rows, cols = torch.nonzero(seen, as_tuple=True)
        assert len(rows) == 64  # one 8x8 patch
        kept.append(int(rows[0]) // 8 * 4 + int(cols[0]) // 8)
    assert kept == cells[:, 0].tolist() and len(set(kept)) > 1
