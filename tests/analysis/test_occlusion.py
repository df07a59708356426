"""OccDrop and the pixel-space occluders: token patches (ViT) and pixel windows (ResNet)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bwssl.analysis import occdrop
from bwssl.analysis.occlusion import (
    OccludedClips,
    cell_grid,
    hemifield_pairs,
    keep_one_patch,
    keep_patch_per_hemifield,
    patch_locations,
    per_clip_cells,
    window_side,
)
from bwssl.analysis.options import options_from_overrides
from bwssl.analysis.requirements import (
    frames_needed,
    occlusion_needs,
    read_skipped,
    token_grid_needs,
)
from bwssl.analysis.results import read_results
from bwssl.analysis.suite import analyze
from bwssl.config import ConfigError, load_config
from bwssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize
from bwssl.models import build_model
from bwssl.train.trainer import train


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


def test_a_pixel_window_keeps_exactly_its_pixels_of_a_one_frame_clip() -> None:
    side = window_side(32)
    assert (side, window_side(224), window_side(32, 4), window_side(3)) == (8, 56, 4, 1)
    assert cell_grid(32, 32, side) == (4, 4)
    clip = torch.rand(3, 1, 32, 32) + 1.0  # normalized image, no pixel is 0 (the grey fill)
    out = keep_one_patch(clip, 6, tubelet=1, patch=side)  # row 1, column 2 of the 4x4 grid
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:16, 16:24] = True
    assert torch.equal((out == clip).all(dim=0).all(dim=0), expected)
    assert out[..., ~expected].abs().max() == 0
    # the window's edges: its first and last rows and columns kept, their neighbours filled
    assert torch.equal(out[:, :, 8:16, 16:24], clip[:, :, 8:16, 16:24])
    for row in (7, 16):
        assert (out[:, :, row, 16:24] == 0).all()
    for col in (15, 24):
        assert (out[:, :, 8:16, col] == 0).all()
    corner = keep_one_patch(clip, 63, tubelet=1, patch=4, fill="black")  # 8x8 grid, last cell
    black = normalize(torch.zeros(3, 1, 1, 1), channel_dim=0)
    assert torch.allclose(
        black.flatten(), -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    )
    kept = torch.zeros(32, 32, dtype=torch.bool)
    kept[28:, 28:] = True
    assert torch.equal(corner[..., kept], clip[..., kept])
    assert torch.equal(corner[..., ~kept], black.view(3, 1, 1).expand(3, 1, int((~kept).sum())))
    pair = keep_patch_per_hemifield(clip, 4, 15, tubelet=1, patch=side)
    both = torch.zeros(32, 32, dtype=torch.bool)
    both[8:16, 0:8] = True  # left 4: row 1, column 0
    both[24:32, 24:32] = True  # right 15: row 3, column 3
    assert torch.equal((pair == clip).all(dim=0).all(dim=0), both)
    with pytest.raises(ValueError, match="not divisible into 5x5-pixel cells"):
        keep_one_patch(clip, 0, tubelet=1, patch=5)
    with pytest.raises(ValueError, match="not divisible"):
        cell_grid(30, 30, 8)


def test_per_clip_pixel_windows_on_images() -> None:
    clips = [torch.rand(3, 1, 32, 32) + 1.0 for _ in range(8)]
    cells = per_clip_cells(8, cell_grid(32, 32, 8), hemifields=False, seed=1)
    ds = OccludedClips([(c, i) for i, c in enumerate(clips)], cells, tubelet=1, patch=8)
    for i in range(8):
        out, label = ds[i]
        assert label == i and out.shape == (3, 1, 32, 32)
        r, c = divmod(int(cells[i, 0]), 4)
        keep = torch.zeros(32, 32, dtype=torch.bool)
        keep[8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = True
        assert torch.equal((out == clips[i]).all(dim=0).all(dim=0), keep)


def test_requirements_occdrop_serves_resnets_and_tf_still_needs_frames() -> None:
    resnet = build_model(load_config("resnet-debug")).backbone
    vit = build_model(load_config("tiny-debug")).backbone
    assert occlusion_needs(resnet, 32) == "" and occlusion_needs(resnet, 32, 4) == ""
    assert occlusion_needs(resnet, 32, 32) == ""  # one window: the whole frame
    why = occlusion_needs(resnet, 32, 5)
    assert "5-pixel window" in why and "occlusion_window" in why
    assert "occlusion_window" in occlusion_needs(resnet, 30)  # 30 // 4 = 7 does not tile 30
    assert occlusion_needs(vit, 32, 5) == ""  # a ViT keeps token patches, whatever the window
    assert token_grid_needs(resnet) and token_grid_needs(vit) == ""
    assert "tf needs 2+ frames" in frames_needed("tf", 1)
    assert frames_needed("tf", 2) == "" and frames_needed("orientation", 1) == ""
    with pytest.raises(ConfigError, match="occlusion_window"):
        options_from_overrides(["occlusion_window=0"])


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resnet") / "simultaneous-k4-s0"
    train(load_config("resnet-debug", ["train.max_steps=2"]), run)
    return run


def _occdrops(run: Path, out: Path, *extra: str) -> dict[tuple[str, int, str, int], float]:
    options = options_from_overrides(
        [
            "metrics=[occdrop_l1,occdrop_l2]",
            "grating_clips=48",
            "grating_folds=2",
            "progress=false",
            "device=cpu",
            *extra,
        ]
    )
    results = analyze([run], out, options)
    skipped = read_skipped(out / "skipped.csv")
    assert not any(s.metric.startswith("occdrop") for s in skipped), skipped
    return {(r.metric, r.block, r.target, r.repeat): r.value for r in read_results(results)}


def test_resnet_occdrop_rows_are_finite_and_a_whole_frame_window_costs_nothing(
    resnet_run: Path, tmp_path
) -> None:
    drops = _occdrops(resnet_run, tmp_path / "default")
    for metric in ("occdrop_l1", "occdrop_l2"):
        mine = {k: v for k, v in drops.items() if k[0] == metric}
        assert {k[1] for k in mine} == {1, 2, 3, 4}
        assert all(math.isfinite(v) for v in mine.values())
    assert not any(k[2] == "tf" for k in drops)
    assert any(v != 0 for v in drops.values())  # an 8x8 window of a 32-pixel image hides much
    fixed = _occdrops(
        resnet_run,
        tmp_path / "fixed",
        "occlusion=fixed",
        "occlusion_locations=2",
        "occlusion_fill=black",
    )
    assert {k[3] for k in fixed} == {0, 1} and all(math.isfinite(v) for v in fixed.values())
    # a window as large as the crop keeps every pixel: the occluded clips are the clips
    whole = _occdrops(resnet_run, tmp_path / "whole", "metrics=[occdrop_l1]", "occlusion_window=32")
    assert whole and all(v == 0 for v in whole.values())
