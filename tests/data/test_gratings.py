from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bwssl.data import GratingDataset, GratingGrid, denormalize, normalize
from bwssl.data.gratings import LEVEL1_TARGETS, LEVEL2_TARGETS, render_grating


def _uint8(clip: torch.Tensor) -> np.ndarray:
    """Normalized (C, T, H, W) -> 8-bit levels (T, H, W, C)."""
    return (denormalize(clip) * 255).round().permute(1, 2, 3, 0).numpy()


def test_default_grids_have_the_protocol_sizes_and_targets():
    l1, l2 = GratingDataset(1, 16, 128), GratingDataset(2, 16, 128)
    assert len(l1) == 10_800 and len(l2) == 15_552
    assert tuple(l1.targets) == LEVEL1_TARGETS and tuple(l2.targets) == LEVEL2_TARGETS
    assert all(t.dtype == np.int64 and len(t) == len(l1) for t in l1.targets.values())
    assert l1.target_classes["orientation"] == [str(o) for o in range(0, 360, 30)]
    assert l2.target_classes["sf_delta"] == ["-12", "-6", "+0", "+6", "+12"]


def _measured_tf(frames: np.ndarray, sf: float) -> np.ndarray:
    """Cycles per frame of a rightward grating (T, H, W), from the carrier's phase steps."""
    w = frames.shape[-1]
    x = -1 + (2 * np.arange(w) + 1) / w
    a = (frames.mean(1) * np.exp(-2j * np.pi * sf / 2 * x)).sum(-1)  # (T,) complex amplitude
    return -np.angle(a[1:] / a[:-1]) / (2 * np.pi)  # the smallest step: what anyone sees


@pytest.mark.parametrize("level", [1, 2])
def test_temporal_frequencies_do_not_alias(level):
    tfs = (GratingGrid.level1() if level == 1 else GratingGrid.level2()).tf
    assert all(0 < f < 0.5 for f in tfs) and list(tfs) == sorted(set(tfs))
    grid = GratingGrid(sf=(4,), tf=tfs, orientation=(0.0,), contrast=(1.0,))
    ds = GratingDataset(1, 16, 64, grid=grid)
    for i in range(len(ds)):
        measured = _measured_tf(_uint8(ds[i])[..., 0], 4)
        np.testing.assert_allclose(measured, ds.params(i)["tf"], atol=2e-3)
    # The protocol's 8 Hz at 6.25 frames/s (1.28 cycles/frame) would be seen as 0.28, forwards,
    # and 6 Hz as 0.04 backwards: such values are refused.
    fast = render_grating(4, 1.28, 0.0, 1.0, "gray", 0.0, 16, 64)[..., 0]
    assert _measured_tf(fast, 4)[0] == pytest.approx(0.28, abs=1e-6)
    with pytest.raises(ValueError, match="Nyquist"):
        GratingGrid(sf=(4,), tf=(0.6,), orientation=(0.0,), contrast=(1.0,))


@pytest.mark.parametrize(
    ("orientation", "axis", "shift"),
    [
        (0.0, 1, 1),  # drifts right: columns increase
        (90.0, 0, -1),  # drifts up: towards row 0
        (180.0, 1, -1),  # left
        (270.0, 0, 1),  # down
    ],
)
def test_orientation_is_the_drift_direction_counter_clockwise_from_right(orientation, axis, shift):
    # sf 4 on 32 pixels: an 8-pixel period; tf 1/8 cycle per frame: one pixel per frame.
    grid = GratingGrid(sf=(4,), tf=(0.125,), orientation=(orientation,), contrast=(1.0,))
    frames = GratingDataset(1, 3, 32, grid=grid).render(0, 1)[0].astype(int)  # (T, H, W, 3)
    for t in range(2):
        assert np.abs(frames[t + 1] - np.roll(frames[t], shift, axis=axis)).max() <= 1
    bars = frames[0, :, :, 0]  # (H, W)
    assert (np.ptp(bars, axis=0).max() <= 1) == (axis == 1)  # vertical bars drift sideways


def test_contrast_labels_are_all_distinct_and_match_the_pixels():
    ds = GratingDataset(1, 2, 64, max_items=150, seed=1)
    assert ds.target_classes["contrast"] == ["0.2", "0.4", "0.6", "0.8", "1"]
    assert set(ds.targets["contrast"].tolist()) == {0, 1, 2, 3, 4}
    for i in range(0, 150, 7):
        frames = _uint8(ds[i]) / 255  # (T, H, W, 3); every colour has a channel of gain 1
        amplitude = frames.std(axis=(0, 1, 2)).max() * 2 * np.sqrt(2)  # sinusoid: std = A / sqrt 2
        assert amplitude == pytest.approx(ds.params(i)["contrast"], rel=0.1)


def test_labels_are_fixed_by_the_grid_and_identical_in_every_worker():
    full = GratingDataset(1, 4, 32)
    sub = GratingDataset(1, 4, 32, max_items=300, seed=3)
    assert len(sub) == 300 and sub.target_classes == full.target_classes
    for name, values in sub.targets.items():
        assert np.array_equal(values, full.targets[name][sub.flat_index]), name
    copy = pickle.loads(pickle.dumps(sub))
    assert all(np.array_equal(copy.targets[k], v) for k, v in sub.targets.items())
    loader = torch.utils.data.DataLoader(sub, batch_size=50, num_workers=2)
    clips = torch.cat(list(loader))
    assert torch.equal(clips[[0, 123, 299]], torch.stack([sub[0], sub[123], sub[299]]))
    assert np.array_equal(
        GratingDataset(1, 4, 32, max_items=300, seed=3).flat_index, sub.flat_index
    )


def test_subsample_is_balanced_per_factor():
    for level in (1, 2):
        ds = GratingDataset(level, 4, 64, max_items=240, seed=0)
        assert len(np.unique(ds.flat_index)) == 240
        for f, values in enumerate(ds.factors.values()):
            counts = np.bincount(ds.combos[:, f], minlength=len(values))
            assert counts.max() - counts.min() <= 2, (level, f, counts)


def test_level2_relations_and_hemifields():
    ds = GratingDataset(2, 4, 32, max_items=200, seed=2)
    cls = {k: np.array(v) for k, v in ds.target_classes.items()}
    lab = {k: cls[k][v] for k, v in ds.targets.items()}  # class names per clip
    sf_l, sf_r = lab["sf_left"].astype(float), lab["sf_right"].astype(float)
    assert np.array_equal(lab["sf_delta"].astype(float), sf_r - sf_l)
    assert np.array_equal(lab["sf_match"] == "match", sf_l == sf_r)
    assert np.array_equal(
        lab["sf_higher_side"],
        np.where(sf_l > sf_r, "left", np.where(sf_r > sf_l, "right", "equal")),
    )
    th_l, d = lab["orientation_left"].astype(float), lab["orientation_delta"].astype(float)
    assert np.array_equal(lab["orientation_right"].astype(float), (th_l + d) % 360)
    assert np.array_equal(lab["orientation_match"] == "match", d == 0)
    for i in (0, 57, 199):
        p = ds.params(i)
        left = render_grating(
            p["sf_left"],
            p["tf"],
            p["orientation_left"],
            p["contrast"],
            p["colour"],
            p["phase"],
            4,
            32,
        )
        right = render_grating(
            p["sf_right"],
            p["tf"],
            (p["orientation_left"] + p["orientation_delta"]) % 360,
            p["contrast"],
            p["colour"],
            p["phase_right"],
            4,
            32,
        )
        got = ds.render(i, i + 1)[0]
        assert np.array_equal(got[:, :, :16], np.rint(left[:, :, :16] * 255))
        assert np.array_equal(got[:, :, 16:], np.rint(right[:, :, 16:] * 255))


def test_clips_are_normalized_like_training_clips_and_deterministic_by_seed(tmp_path):
    ds = GratingDataset(1, 4, 32, max_items=20, seed=0)
    frames = ds.render(7, 8)[0]
    want = normalize(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255)
    assert ds[7].shape == (3, 4, 32, 32) and torch.equal(ds[7], want)
    assert torch.equal(GratingDataset(1, 4, 32, max_items=20, seed=0)[7], ds[7])
    other = GratingDataset(1, 4, 32, max_items=20, seed=1)
    assert not np.array_equal(other.flat_index, ds.flat_index) or not torch.equal(other[7], ds[7])
    cached = GratingDataset(1, 4, 32, max_items=20, seed=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("gratings-*.npy"))) == 1
    assert all(torch.equal(cached[i], ds[i]) for i in range(20))


def test_spatial_frequencies_stay_below_nyquist():
    small = GratingDataset(1, 2, 32, max_items=10)
    assert small.target_classes["sf"] == ["4", "8", "12"]  # 16, 20, 24 would alias at 32 px
    with pytest.raises(ValueError, match="Nyquist"):
        GratingDataset(1, 2, 32, grid=GratingGrid.level1())


def test_grayscale_gratings_and_single_valued_targets():
    grid = GratingGrid(sf=(4, 8), tf=(0.1,), orientation=(0.0, 90.0), contrast=(1.0,))
    ds = GratingDataset(1, 2, 32, channels=1, grid=grid)
    assert ds[0].shape == (1, 2, 32, 32)
    assert set(ds.targets) == {"sf", "orientation"}  # one-valued factors cannot be probed
    with pytest.raises(ValueError, match="colours"):
        GratingDataset(
            1,
            2,
            32,
            channels=1,
            grid=GratingGrid(
                sf=(4,), tf=(0.1,), orientation=(0.0,), contrast=(1.0,), colour=("red", "gray")
            ),
        )
