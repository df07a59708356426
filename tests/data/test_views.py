from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bwssl.data.transforms import denormalize, normalize
from bwssl.data.views import ViewParams, apply_view, draw_view_params


def make_params(
    batch: int, box=(0.0, 0.0, 1.0, 1.0), flip: bool = False, jitter=(1.0, 1.0, 1.0, 0.0)
) -> ViewParams:
    return ViewParams(
        torch.tensor([box] * batch, dtype=torch.float32),
        torch.full((batch,), flip, dtype=torch.bool),
        torch.tensor([jitter] * batch, dtype=torch.float32),
    )


def random_clips(shape=(3, 3, 4, 16, 20), seed: int = 0) -> torch.Tensor:
    pixels = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    return normalize(pixels, channel_dim=1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identity_params_return_the_input():
    video = random_clips()
    out = apply_view(video, make_params(3))
    torch.testing.assert_close(out, video, atol=1e-5, rtol=0)


def test_flip_only_equals_flip_of_last_axis():
    video = random_clips()
    out = apply_view(video, make_params(3, flip=True))
    torch.testing.assert_close(out, video.flip(-1), atol=1e-5, rtol=0)
    # With a crop, the flip mirrors the cropped view.
    box = (0.25, 0.1, 0.5, 0.6)
    cropped = apply_view(video, make_params(3, box=box))
    both = apply_view(video, make_params(3, box=box, flip=True))
    torch.testing.assert_close(both, cropped.flip(-1), atol=1e-5, rtol=0)


def test_quarter_crop_matches_interpolate_and_is_shared_by_frames():
    b, c, t, h, w = 2, 3, 4, 16, 20
    ys = torch.linspace(0, 1, h).view(h, 1)
    xs = torch.linspace(0, 1, w).view(1, w)
    frames = [0.5 * xs + 0.3 * ys + 0.05 * k for k in range(t)]  # smooth, frames differ
    video = torch.stack(frames).expand(b, c, t, h, w).clone()
    video[1] = video[1] * 0.5 + 0.2 * torch.arange(c).view(c, 1, 1, 1)
    out = apply_view(video, make_params(b, box=(0.0, 0.0, 0.5, 0.5)))
    for k in range(t):
        quarter = video[:, :, k, : h // 2, : w // 2]
        want = F.interpolate(quarter, size=(h, w), mode="bilinear", align_corners=False)
        got = out[:, :, k]
        # Inside, exactly the same sampling points; on the last row / column grid_sample also
        # weighs the pixel just outside the box (the continuous crop), a quarter of one step.
        torch.testing.assert_close(got[..., :-1, :-1], want[..., :-1, :-1], atol=1e-5, rtol=0)
        step = 0.5 / (w - 1) + 0.3 / (h - 1)
        assert (got - want).abs().max() <= 0.25 * step + 1e-5
    # Each output frame comes from its own input frame.
    assert not torch.allclose(out[:, :, 0], out[:, :, 1])


def test_draws_are_deterministic_and_split_by_rows():
    video = random_clips((8, 3, 2, 12, 12))
    p1, p2 = draw_view_params(8, gen(7)), draw_view_params(8, gen(7))
    for a, b in [(p1.box, p2.box), (p1.flip, p2.flip), (p1.jitter, p2.jitter)]:
        assert torch.equal(a, b)
    view = apply_view(video, p1)
    assert torch.equal(view, apply_view(video, p2))
    other = draw_view_params(8, gen(8))
    assert not torch.equal(p1.box, other.box)
    assert not torch.allclose(view, apply_view(video, other))
    idx = torch.tensor([5, 0, 3])
    part = apply_view(video[idx], p1.rows(idx))
    torch.testing.assert_close(part, view[idx], atol=1e-6, rtol=0)
    assert len(p1.rows(idx)) == 3 and len(p1.rows(slice(2, 6))) == 4


def test_boxes_respect_scale_ratio_and_frame_and_flip_rate():
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    p = draw_view_params(2000, gen(0), scale=scale, ratio=ratio, flip_prob=0.3)
    top, left, bh, bw = p.box.unbind(1)
    eps = 1e-6
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + bh <= 1 + eps).all() and (left + bw <= 1 + eps).all()
    fallback = (bh == 1) & (bw == 1) & (top == 0) & (left == 0)
    area, aspect = (bh * bw)[~fallback], (bw / bh)[~fallback]
    assert area.numel() > 1900
    assert (area >= scale[0] - eps).all() and (area <= scale[1] + eps).all()
    assert (aspect >= ratio[0] - eps).all() and (aspect <= ratio[1] + eps).all()
    assert area.min() < 0.15 and area.max() > 0.9  # spans the range
    assert abs(p.flip.float().mean().item() - 0.3) < 0.04
    assert p.flip.dtype == torch.bool and p.box.dtype == torch.float32


def test_fallback_is_centred_crop_with_clamped_ratio():
    p = draw_view_params(5, gen(1), scale=(1.0, 1.0), ratio=(2.0, 3.0))  # nothing fits
    want = torch.tensor([0.25, 0.0, 0.5, 1.0]).expand(5, 4)
    torch.testing.assert_close(p.box, want)
    p = draw_view_params(5, gen(1), scale=(1.0, 1.0), ratio=(0.25, 0.5))
    torch.testing.assert_close(p.box, torch.tensor([0.0, 0.25, 1.0, 0.5]).expand(5, 4))


def test_zero_jitter_is_crop_and_flip_only():
    video = random_clips((6, 3, 2, 12, 12))
    p = draw_view_params(6, gen(3), jitter=0.0, jitter_prob=1.0)
    assert (p.jitter[:, :3] == 1).all() and (p.jitter[:, 3] == 1).all()
    plain = ViewParams(p.box, p.flip, torch.zeros_like(p.jitter))
    assert torch.equal(apply_view(video, p), apply_view(video, plain))


def test_jitter_prob_and_factor_range():
    p = draw_view_params(2000, gen(4), jitter=0.4, jitter_prob=0.8)
    f = p.jitter[:, :3]
    assert (f >= 0.6).all() and (f <= 1.4).all() and f.min() < 0.62 and f.max() > 1.38
    assert set(p.jitter[:, 3].unique().tolist()) == {0.0, 1.0}
    assert abs(p.jitter[:, 3].mean().item() - 0.8) < 0.04
    # Clips whose flag is 0 are not jittered.
    video = random_clips((4, 3, 2, 8, 8))
    off = ViewParams(p.box[:4], p.flip[:4], torch.cat([f[:4], torch.zeros(4, 1)], dim=1))
    plain = ViewParams(p.box[:4], p.flip[:4], torch.zeros(4, 4))
    assert torch.equal(apply_view(video, off), apply_view(video, plain))


@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_scales_pixels_and_clamps(channels):
    levels = torch.tensor([0.1, 0.5, 0.9]).view(1, 1, 1, 1, 3).expand(2, channels, 2, 4, 3)
    video = normalize(levels.clone(), channel_dim=1)
    out = apply_view(video, make_params(2, jitter=(1.2, 1.0, 1.0, 1.0)))
    got = denormalize(out, channel_dim=1)
    torch.testing.assert_close(got, (levels * 1.2).clamp(0, 1), atol=1e-5, rtol=0)
    assert got.max() == pytest.approx(1.0)


def test_contrast_and_saturation_zero():
    video = random_clips((2, 3, 2, 8, 8))
    pixels = denormalize(video, channel_dim=1)
    flat = denormalize(apply_view(video, make_params(2, jitter=(1.0, 0.0, 1.0, 1.0))), 1)
    luma = (pixels * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1, 1)).sum(1)
    want = luma.mean(dim=(1, 2, 3)).view(2, 1, 1, 1, 1).expand_as(flat)
    torch.testing.assert_close(flat, want, atol=1e-5, rtol=0)
    gray = denormalize(apply_view(video, make_params(2, jitter=(1.0, 1.0, 0.0, 1.0))), 1)
    torch.testing.assert_close(gray, luma.unsqueeze(1).expand_as(gray), atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_channels_and_dtype(channels, dtype):
    video = random_clips((4, channels, 3, 10, 14)).to(dtype)
    p = draw_view_params(4, gen(5), jitter_prob=1.0)
    out = apply_view(video, p)
    assert out.shape == video.shape and out.dtype == dtype and out.device == video.device
    assert torch.isfinite(out.float()).all()
    pixels = denormalize(out.float(), channel_dim=1)
    assert pixels.min() >= -0.02 and pixels.max() <= 1.02


def test_params_validate_shapes_and_apply_checks_batch():
    with pytest.raises(ValueError, match="ViewParams"):
        ViewParams(torch.zeros(2, 4), torch.zeros(3, dtype=torch.bool), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="rows"):
        apply_view(random_clips((2, 3, 2, 8, 8)), make_params(3))
    with pytest.raises(ValueError, match="video"):
        apply_view(torch.zeros(2, 3, 8, 8), make_params(2))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (0.5, 1.2)}, "scale"),
        ({"scale": (0.8, 0.5)}, "scale"),
        ({"ratio": (-1.0, 2.0)}, "ratio"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"ratio": (1.0, math.inf)}, "ratio"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"flip_prob": -0.1}, "flip_prob"),
        ({"jitter_prob": 2.0}, "jitter_prob"),
        ({"jitter": 1.0}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        draw_view_params(4, gen(0), **kwargs)


def test_bad_batch_raises():
    with pytest.raises(ValueError, match="batch"):
        draw_view_params(-1, gen(0))
    assert len(draw_view_params(0, gen(0))) == 0
