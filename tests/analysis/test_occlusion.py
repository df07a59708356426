"""OccDrop and the pixel-space occluders."""

from __future__ import annotations

import pytest
import torch

from bwssl.analysis import occdrop
from bwssl.analysis.occlusion import (
    hemifield_pairs,
    keep_one_patch,
    keep_patch_per_hemifield,
    patch_locations,
)
from bwssl.data.transforms import denormalize, normalize


def test_occdrop_formula() -> None:
    assert occdrop(0.8, 0.6) == pytest.approx(0.25)
    assert occdrop(0.5, 0.5) == 0.0
    assert occdrop(0.4, 0.0) == 1.0
    assert occdrop(0.4, 0.5) == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="acc_full == 0"):
        occdrop(0.0, 0.1)


def test_keep_one_patch_blacks_out_the_rest_in_pixel_space() -> None:
    pixels = torch.rand(2, 3, 4, 32, 32) * 0.9 + 0.1  # (B, C, T, H, W), no black pixel
    out = keep_one_patch(normalize(pixels, channel_dim=1), patch_index=5, tubelet=2, patch=8)
    back = denormalize(out, channel_dim=1)
    keep = torch.zeros(32, 32, dtype=torch.bool)
    keep[8:16, 8:16] = True  # index 5 on a 4x4 grid: row 1, column 1
    assert torch.allclose(back[..., keep], pixels[..., keep], atol=1e-6)
    assert back[..., ~keep].abs().max() < 1e-6
    raw = keep_one_patch(pixels[0], 0, tubelet=2, patch=8, normalized=False)  # (C, T, H, W)
    assert raw[..., 8:, :].abs().max() == 0 and torch.equal(
        raw[..., :8, :8], pixels[0, ..., :8, :8]
    )


def test_keep_patch_per_hemifield() -> None:
    pixels = torch.rand(3, 4, 32, 32) + 0.5
    out = keep_patch_per_hemifield(pixels, 4, 11, tubelet=2, patch=8, normalized=False)
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
