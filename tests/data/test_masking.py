"""Mask counts follow VideoMAE: int(ratio x positions) hidden, the rest visible."""

from __future__ import annotations

import pytest
import torch

from bwssl.config import ConfigError, load_config
from bwssl.data.masking import num_masked, num_visible, random_mask, tube_mask


def test_64_positions_at_0_9_keep_7_as_videomae() -> None:
    assert num_masked(64, 0.9) == 57  # int(57.6)
    assert num_visible(64, 0.9) == 7
    # the released evaluation code's grid: tubelet 2, 8-pixel patches on 16x128x128 clips
    mask = tube_mask(3, (8, 16, 16), 0.9, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 2048)
    visible = (~mask).sum(dim=1)
    assert visible.tolist() == [8 * (256 - int(0.9 * 256))] * 3  # 8 x 26
    # the paper text's 8x16x16 tubelets on 16x128x128 clips: a 2x8x8 grid, 64 positions
    # per frame group keep 7
    mask = tube_mask(2, (2, 8, 8), 0.9, torch.Generator().manual_seed(1))
    assert (~mask).sum(dim=1).tolist() == [14, 14]
    per_t = (~mask).view(2, 2, 64)
    assert torch.equal(per_t[:, 0], per_t[:, 1])  # a tube: the same positions every time


def test_random_mask_counts_the_same_way() -> None:
    mask = random_mask(4, (2, 8, 8), 0.9, torch.Generator().manual_seed(0))
    assert (~mask).sum(dim=1).tolist() == [128 - int(0.9 * 128)] * 4


def test_a_ratio_that_masks_nothing_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"mask\.ratio"):
        load_config("tiny-debug", ["data.crop_size=8", "mask.ratio=0.5"])  # 1 position
    cfg = load_config("tiny-debug", ["mask.ratio=0.9"])  # 16 positions: 14 hidden
    assert num_visible(16, cfg.mask.ratio) == 2
