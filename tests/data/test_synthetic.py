from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bwssl.config import ConfigError, DataConfig, load_config
from bwssl.data import MOTION_CLASSES, ClipFormat, SyntheticMotion, build_dataset
from bwssl.data.synthetic import render_clips, sample_params
from bwssl.data.transforms import clip_tensor, crop_window


def test_class_limit_in_config_matches_the_catalogue():
    assert len(MOTION_CLASSES) == 16 == len(set(MOTION_CLASSES))
    DataConfig(synthetic_classes=16)
    with pytest.raises(ConfigError, match=r"data\.synthetic_classes"):
        DataConfig(synthetic_classes=17)


def test_build_dataset_gives_balanced_deterministic_clips():
    cfg = load_config("tiny-debug").data
    ds = build_dataset(cfg, "train", seed=0)
    assert len(ds) == 16 and ds.num_classes == 10 and ds.class_names[0] == "translate_right"
    assert np.bincount(ds.labels).max() - np.bincount(ds.labels).min() <= 1
    video, label = ds[(3, 77)]
    assert video.shape == (3, 4, 32, 32) and video.dtype == torch.float32 and label == ds.labels[3]
    again = build_dataset(cfg, "train", seed=5)  # content does not depend on the run seed
    assert np.array_equal(ds.labels, again.labels)
    assert torch.equal(ds[(3, 77)][0], again[(3, 77)][0]) and torch.equal(ds[2][0], again[2][0])
    test = build_dataset(cfg, "test")
    assert len(test) == 8 and not torch.equal(test[0][0], ds[0][0])


def test_train_view_is_a_random_crop_never_a_flip():
    fmt = ClipFormat(4, 3, 32)
    ds = SyntheticMotion(fmt, 12, 10, "train")
    frames = ds.render(5, 6)[0]  # (T, 37, 37, 3)
    assert frames.shape == (4, 37, 37, 3)
    crops = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        rng.integers(0, 1)  # temporal start: the clip is the whole video
        window = crop_window(37, 37, ds.fmt, rng)
        assert torch.equal(ds[(5, seed)][0], clip_tensor(frames, window, False, ds.fmt))
        crops.add(window)
    assert len(crops) > 5
    assert torch.equal(ds[5][0], clip_tensor(frames, (2, 2, 32), False, ds.fmt))


def test_disk_cache_gives_the_same_clips(tmp_path, monkeypatch):
    fmt = ClipFormat(4, 2, 32)
    plain = SyntheticMotion(fmt, 6, 4, "test")
    cached = SyntheticMotion(fmt, 6, 4, "test", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    for key in (0, 5, (3, 11)):
        assert torch.equal(plain[key][0], cached[key][0])
    monkeypatch.setattr(SyntheticMotion, "render", lambda *a: pytest.fail("rendered again"))
    reopened = SyntheticMotion(fmt, 6, 4, "test", cache_dir=tmp_path)
    assert torch.equal(reopened[(1, 2)][0], cached[(1, 2)][0])


def test_default_dataset_renders_well_under_a_minute():
    """The clips of the default `bwssl run` (the demo preset: 4096 train + 256 test clips),
    clip by clip as a data loader renders them, in one process (a bound, not a benchmark)."""
    from bwssl.config import load_config

    data = load_config("demo", []).data
    start = time.perf_counter()
    for split, n in (("train", data.synthetic_train), ("test", data.synthetic_test)):
        ds = SyntheticMotion(
            ClipFormat(data.num_frames, 1, data.crop_size), n, data.synthetic_classes, split
        )
        for i in range(n):
            ds.render(i, i + 1)
    assert time.perf_counter() - start < 30


def _centroid_path(motion: str) -> np.ndarray:
    """(T, 2) wrapped displacement of the object's centroid (x, y) between frames."""
    rng = np.random.default_rng(3)
    params = sample_params(rng, motion, 64, 6)
    params.bg_velocity[:] = 0
    frames = render_clips([params], 64)[0].mean(-1) / 255  # (T, S, S)
    ang = 2 * np.pi * np.arange(64) / 64
    out = []
    for f in frames:
        m = f > 0.42  # the object is brighter than any background
        out.append(
            [
                np.angle((m * np.exp(1j * ang)[None, :]).sum()),
                np.angle((m * np.exp(1j * ang)[:, None]).sum()),
            ]
        )
    steps = np.diff(np.unwrap(np.array(out), axis=0), axis=0) * 64 / (2 * np.pi)
    return steps


@pytest.mark.parametrize(
    ("motion", "sign"),
    [
        ("translate_right", (1, 0)),
        ("translate_left", (-1, 0)),
        ("translate_up", (0, -1)),
        ("translate_down", (0, 1)),  # screen: up is towards row 0
    ],
)
def test_translations_move_the_object_on_screen(motion, sign):
    steps = _centroid_path(motion).mean(0)
    assert np.sign(np.round(steps, 1)).tolist() == list(sign)


@pytest.mark.parametrize("motion", MOTION_CLASSES)
def test_every_class_moves_the_object(motion):
    rng = np.random.default_rng(0)
    params = sample_params(rng, motion, 48, 8)
    params.bg_velocity[:] = 0
    frames = render_clips([params], 48)[0].astype(float)
    assert np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3)).min() > 0.05


def _probe(train: np.ndarray, test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray) -> float:
    train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    mean, std = train.mean(0), train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=300, C=0.01).fit((train - mean) / std, y_train)
    return float(clf.score((test - mean) / std, y_test))


def test_single_frame_is_near_chance_but_frame_differences_are_not():
    """The class is in the motion: a linear probe on one frame's pixels is at chance (10 %),
    on the differences between frames it is far above. Gray 4x4 pooled pixels, 16 frames."""
    fmt = ClipFormat(16, 1, 32)

    def pixels(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        ds = SyntheticMotion(fmt, n, 10, split)
        x = np.stack([ds[i][0].numpy() for i in range(n)]).mean(1)  # (N, T, 32, 32)
        return x.reshape(n, 16, 4, 8, 4, 8).mean((3, 5)), ds.labels  # (N, T, 4, 4)

    (xtr, ytr), (xte, yte) = pixels("train", 1000), pixels("test", 500)
    one_frame = _probe(xtr[:, 8], xte[:, 8], ytr, yte)
    first_frame = _probe(xtr[:, 0], xte[:, 0], ytr, yte)
    differences = _probe(np.diff(xtr, axis=1), np.diff(xte, axis=1), ytr, yte)
    assert one_frame < 0.15 and first_frame < 0.15, (one_frame, first_frame)  # chance: 0.10
    assert differences > 0.2 and differences > max(one_frame, first_frame) + 0.08, differences
