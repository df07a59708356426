from __future__ import annotations

import numpy as np
import pytest
import torch

from bwssl.config import ConfigError, DataConfig
from bwssl.data import ClipBatch, ClipFormat, check_unreadable, collate_clips, normalize
from bwssl.data.transforms import (
    LUMA,
    center_start,
    clip_tensor,
    crop_window,
    frame_indices,
    random_start,
)
from bwssl.errors import DataError


def test_clip_tensor_normalizes_exactly_like_normalize():
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    fmt = ClipFormat(4, 1, 16)
    got = clip_tensor(frames, (0, 0, 16), False, fmt)  # (C, T, H, W)
    want = normalize(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255)
    assert got.shape == (3, 4, 16, 16) and got.dtype == torch.float32
    assert torch.equal(got, want)
    flipped = clip_tensor(frames, (0, 0, 16), True, fmt)
    assert torch.equal(flipped, want.flip(-1))


def test_one_channel_clips_are_luma():
    frames = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    got = clip_tensor(frames, (0, 0, 8), False, ClipFormat(2, 1, 8, channels=1))
    luma = torch.from_numpy(frames).float().div(255) @ torch.tensor(LUMA)
    assert got.shape == (1, 2, 8, 8)
    torch.testing.assert_close(got[0], (luma - 0.485) / 0.229)


def test_temporal_sampling():
    fmt = ClipFormat(4, 3, 8)
    assert fmt.span == 12
    assert frame_indices(5, fmt).tolist() == [5, 8, 11, 14]
    assert center_start(12, fmt) == 0 and center_start(20, fmt) == 4
    starts = {random_start(np.random.default_rng(s), 20, fmt) for s in range(200)}
    assert starts == set(range(9))  # every clip that fits, and only those


def test_crop_window_follows_the_resize_policy():
    fmt = ClipFormat(4, 1, 112)  # short side scaled to 128
    assert fmt.short_side == 128
    assert crop_window(240, 320, fmt, None) == (15, 55, 210)  # 112 * 240 / 128 = 210
    for seed in range(20):
        top, left, side = crop_window(240, 320, fmt, np.random.default_rng(seed))
        assert side == 210 and 0 <= top <= 30 and 0 <= left <= 110
    native = ClipFormat(4, 1, 112, resize="none")
    assert crop_window(240, 320, native, None) == (64, 104, 112)
    assert crop_window(100, 90, native, None)[2] == 90  # too small: the short side, scaled up


def test_collate_drops_unreadable_items_and_handles_an_empty_batch():
    item = (torch.zeros(3, 2, 4, 4), 1)
    batch = collate_clips([item, None, item])
    assert isinstance(batch, ClipBatch)
    assert batch.video.shape == (2, 3, 2, 4, 4) and batch.label.tolist() == [1, 1]
    assert batch.label.dtype == torch.int64 and batch.skipped == 1
    empty = collate_clips([None, None], clip_shape=(3, 2, 4, 4))
    assert empty.video.shape == (0, 3, 2, 4, 4) and empty.label.shape == (0,)
    assert empty.skipped == 2


def test_check_unreadable():
    cfg = DataConfig(max_unreadable_fraction=0.05)
    check_unreadable(0, 0, cfg)
    check_unreadable(3, 8, cfg)  # judged over at least 200 clips: 3 <= 10
    check_unreadable(50, 1000, cfg)
    with pytest.raises(DataError, match=r"51 of 1000 clips.*max_unreadable_fraction=0\.05"):
        check_unreadable(51, 1000, cfg)
    with pytest.raises(DataError):
        check_unreadable(1, 1, DataConfig(max_unreadable_fraction=0.0))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"channels": 2}, "data.channels"),
        ({"resize_to": 100}, "data.resize_to"),
        ({"synthetic_classes": 1}, "data.synthetic_classes"),
        ({"split": 4}, "data.split"),
    ],
)
def test_data_config_validation_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        DataConfig(**override)  # type: ignore[arg-type]
