from __future__ import annotations

import colorsys
import math

import pytest
import torch
import torch.nn.functional as F

from bwssl.config import ConfigError, ViewsConfig, from_dict
from bwssl.data.photometric import COLOUR_OPS, adjust_hue, blur_kernel_size
from bwssl.data.transforms import LUMA, denormalize, normalize
from bwssl.data.views import ViewParams, apply_view, draw_configured_view, draw_view_params


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


# --- the Barlow Twins photometric steps ---------------------------------------------------


def full_params(batch: int, **fields) -> ViewParams:
    """Identity crop, no flip, no jitter, plus the given photometric fields."""
    p = make_params(batch, jitter=(1.0, 1.0, 1.0, 0.0))
    return ViewParams(p.box, p.flip, p.jitter, **fields)


def pixels_of(video: torch.Tensor) -> torch.Tensor:
    return denormalize(video, channel_dim=1)


def test_grayscale_gives_equal_channels_of_luma():
    video = random_clips((3, 3, 2, 8, 8))
    gray = torch.tensor([True, False, True])
    out = pixels_of(apply_view(video, full_params(3, gray=gray)))
    luma = (pixels_of(video) * torch.tensor(LUMA).view(1, 3, 1, 1, 1)).sum(1)
    for c in range(3):
        torch.testing.assert_close(out[[0, 2], c], luma[[0, 2]], atol=1e-5, rtol=0)
    assert torch.equal(apply_view(video, full_params(3, gray=gray))[1], video[1])


def test_solarize_inverts_exactly_at_and_above_half():
    levels = torch.tensor([0.0, 0.2, 0.49, 0.5, 0.51, 0.8, 1.0])
    pix = levels.view(1, 1, 1, 1, -1).expand(2, 3, 1, 2, 7).clone()
    out = pixels_of(
        apply_view(normalize(pix, 1), full_params(2, solarize=torch.tensor([True, False])))
    )
    want = torch.where(levels >= 0.5, 1 - levels, levels).expand_as(out[0])
    torch.testing.assert_close(out[0], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], pix[1], atol=1e-5, rtol=0)


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    spec = torch.fft.rfft2(x).abs() ** 2  # (..., H, W//2+1)
    h = x.shape[-2]
    return spec[..., h // 4 : h - h // 4, spec.shape[-1] // 2 :].sum()


def test_blur_lowers_high_frequencies_and_tiny_sigma_is_identity():
    assert [blur_kernel_size(s) for s in (32, 64, 224)] == [3, 7, 23]
    video = random_clips((2, 3, 2, 32, 32))
    blurred = apply_view(video, full_params(2, blur=torch.tensor([2.0, 0.0])))
    assert torch.equal(blurred[1], video[1])  # sigma 0: not blurred
    assert high_frequency_energy(pixels_of(blurred[:1])) < 0.3 * high_frequency_energy(
        pixels_of(video[:1])
    )
    # Blur keeps the mean, and a tiny sigma is the identity.
    torch.testing.assert_close(blurred[0].mean(), video[0].mean(), atol=2e-2, rtol=0)
    tiny = apply_view(video, full_params(2, blur=torch.tensor([1e-3, 1e-3])))
    torch.testing.assert_close(tiny, video, atol=1e-5, rtol=0)


def test_hue_zero_is_identity_and_a_third_turns_red_into_green():
    video = random_clips((2, 3, 1, 6, 6))
    still = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "flip_prob": 0.0, "jitter_prob": 1.0}
    p = draw_view_params(2, gen(0), jitter=(0.0, 0.0, 0.0, 0.0), **still)
    assert torch.equal(apply_view(video, p), apply_view(video, make_params(2)))
    torch.testing.assert_close(adjust_hue(pixels_of(video), torch.zeros(2)), pixels_of(video))
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.6, 0.4], [0.5, 0.5, 0.5]])
    pix = colours.T.reshape(1, 3, 1, 1, 3).expand(3, 3, 1, 1, 3).clone()
    shift = torch.tensor([1 / 3, 0.5, -0.25])
    out = adjust_hue(pix, shift)
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.tensor([0.0, 1.0, 0.0]))  # red -> green
    torch.testing.assert_close(out[2, :, 0, 0, 2], torch.tensor([0.5, 0.5, 0.5]))  # gray stays
    # A rotation keeps each pixel's max and min (HSV value and saturation).
    torch.testing.assert_close(out.amax(1), pix.amax(1))
    torch.testing.assert_close(out.amin(1), pix.amin(1))
    # (0.2, 0.6, 0.4) rotated half a turn: (0.6, 0.2, 0.4).
    torch.testing.assert_close(out[1, :, 0, 0, 1], torch.tensor([0.6, 0.2, 0.4]))
    # Random pixels against the standard library's HSV conversion.
    rgb = torch.rand(5, 3, 1, 1, 4, generator=gen(9), dtype=torch.float64)
    shift = torch.tensor([0.1, -0.1, 0.3, -0.45, 0.5], dtype=torch.float64)
    got = adjust_hue(rgb, shift)
    for i in range(5):
        for j in range(4):
            h, sat, v = colorsys.rgb_to_hsv(*rgb[i, :, 0, 0, j].tolist())
            want = colorsys.hsv_to_rgb((h + shift[i].item()) % 1.0, sat, v)
            torch.testing.assert_close(got[i, :, 0, 0, j], torch.tensor(want, dtype=torch.float64))


def test_random_jitter_order_applies_each_clips_permutation():
    video = random_clips((6, 3, 1, 8, 8))
    p = draw_view_params(
        6, gen(2), jitter=(0.4, 0.4, 0.2, 0.1), jitter_prob=1.0, jitter_order="random"
    )
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(6, 4))
    assert len({tuple(r) for r in p.order.tolist()}) > 1
    out = pixels_of(apply_view(video, p))
    args = [p.jitter[:, 0], p.jitter[:, 1], p.jitter[:, 2], p.hue]
    for i in range(6):
        crop = make_params(1, box=tuple(p.box[i].tolist()), flip=bool(p.flip[i]))
        x = pixels_of(apply_view(video[i : i + 1], crop))
        for op in p.order[i].tolist():
            x = COLOUR_OPS[op](x, args[op][i : i + 1])
        torch.testing.assert_close(out[i : i + 1], x, atol=1e-5, rtol=0)
    fixed = draw_view_params(6, gen(2), jitter=(0.4, 0.4, 0.2, 0.1), jitter_prob=1.0)
    assert torch.equal(fixed.order, torch.arange(4).expand(6, 4))
    assert torch.equal(fixed.box, p.box) and torch.equal(fixed.jitter, p.jitter)


BARLOW = {
    "scale": [0.08, 1.0],
    "jitter": [0.4, 0.4, 0.2, 0.1],
    "jitter_order": "random",
    "gray_prob": 0.2,
    "blur_prob": [1.0, 0.1],
    "solarize_prob": [0.0, 0.2],
}


def test_barlow_recipe_rates_per_view_and_row_splits():
    cfg = ViewsConfig(**BARLOW)
    v1, v2 = (draw_configured_view(cfg, view, 4000, gen(view)) for view in (0, 1))
    assert (v1.blur > 0).all() and not v1.solarize.any()
    assert abs((v2.blur > 0).float().mean().item() - 0.1) < 0.02
    assert abs(v2.solarize.float().mean().item() - 0.2) < 0.02
    assert abs(v1.gray.float().mean().item() - 0.2) < 0.02
    sigma = v1.blur
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and sigma.min() < 0.2 and sigma.max() > 1.9
    hue = v1.hue
    assert hue.abs().max() <= 0.1 and hue.min() < -0.09 and hue.max() > 0.09
    sat = v1.jitter[:, 2]
    assert sat.min() >= 0.8 and sat.max() <= 1.2
    # Every draw is a function of the generator: two halves of the rows give the whole view.
    video = random_clips((8, 3, 2, 16, 16))
    for view in (0, 1):
        p = draw_configured_view(cfg, view, 8, gen(11))
        whole = apply_view(video, p)
        assert torch.equal(whole, apply_view(video, draw_configured_view(cfg, view, 8, gen(11))))
        halves = [apply_view(video[rows], p.rows(rows)) for rows in (slice(0, 4), slice(4, 8))]
        torch.testing.assert_close(torch.cat(halves), whole, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="view"):
        draw_configured_view(cfg, 2, 4, gen(0))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("jitter", [0.4, 0.4, 0.2]),
        ("jitter", [0.4, 0.4, 0.2, 0.6]),
        ("blur_prob", [1.0]),
        ("solarize_prob", [0.0, 1.5]),
        ("blur_sigma", [2.0, 0.1]),
        ("gray_prob", -0.1),
    ],
)
def test_views_config_rejects_bad_values_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"objective\.views\.{key}"):
        from_dict({"objective": {"views": {key: value}}})
