"""Augmented views of a clip batch for joint-embedding objectives (Barlow Twins, VICReg, SimCLR).

A view is, in this order (the Barlow Twins pipeline): a random resized crop
(one box per clip, shared by all its frames), a horizontal flip, a colour
jitter (brightness, contrast, saturation, hue, in a fixed or a random
order), grayscale, a Gaussian blur and solarization, applied to a normalized
batch (B, C, T, H, W) on whatever device it lives on. Each step happens to a
clip with its own probability; the photometric steps are those of
:mod:`bwssl.data.photometric`, in [0, 1] pixel space.

Two steps, so that every random draw is a pure function of a seeded generator
and independent of how the batch is split over processes:

1. :func:`draw_view_params` draws the parameters of the GLOBAL batch from a
   ``torch.Generator`` (the caller seeds it from seed, epoch and step); each
   process takes its rows with :meth:`ViewParams.rows`.
   :func:`draw_configured_view` does this from a ``ViewsConfig`` and the
   view's index (0 or 1), which picks the per-view probabilities.
2. :func:`apply_view` applies them: one batched ``F.affine_grid`` +
   ``F.grid_sample`` call for crop, resize and flip, then the photometric
   steps as a few batched ops.

Why not torchvision's ``RandomResizedCrop`` / ``ColorJitter``: torchvision is
not a dependency of bwssl; its transforms draw from the global RNG one clip at
a time, while here the whole batch is one op on its device and the per-clip
parameters come from an explicit seeded generator, so a view can be
reproduced (and split by rows) without replaying the transform.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bwssl.data.photometric import colour_jitter, gaussian_blur, grayscale, solarize
from bwssl.data.transforms import denormalize, normalize

if TYPE_CHECKING:
    from bwssl.config import ViewsConfig

CROP_TRIES = 10
"""Candidate boxes drawn per clip; the first valid one is kept (torchvision tries 10 too)."""


@dataclass(frozen=True)
class ViewParams:
    """Per-clip augmentation parameters of one view; every field has B rows.

    - ``box``: (B, 4) float, the crop as (top, left, height, width) in
      fractions of the frame (continuous, not rounded to pixels, so the same
      params fit any resolution). The box is resized to the full frame.
    - ``flip``: (B,) bool, horizontal flip (after the crop).
    - ``jitter``: (B, 4) float, columns (brightness, contrast, saturation,
      apply): three multiplicative factors (1 = unchanged) and a 0/1 flag;
      a clip is jittered only when its flag is 1. Saturation is ignored for
      clips that do not have 3 channels.
    - ``hue``: (B,) float hue shift in turns, part of the jitter (0 = unchanged;
      3-channel clips only).
    - ``order``: (B, 4) int64, the order of the jitter's operations, a
      permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue.
    - ``gray``: (B,) bool, convert to grayscale (after the jitter).
    - ``blur``: (B,) float Gaussian blur sigma in pixels; 0 = no blur.
    - ``solarize``: (B,) bool, invert pixels at or above half the range (last).

    The fields after ``jitter`` default to "off" (no hue shift, the fixed
    order 0 1 2 3, no grayscale, blur or solarization).
    """

    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    hue: torch.Tensor | None = None
    order: torch.Tensor | None = None
    gray: torch.Tensor | None = None
    blur: torch.Tensor | None = None
    solarize: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.box.shape[0]
        if self.box.shape != (n, 4) or self.flip.shape != (n,) or self.jitter.shape != (n, 4):
            raise ValueError(
                f"ViewParams needs box (B, 4), flip (B,), jitter (B, 4); got "
                f"{tuple(self.box.shape)}, {tuple(self.flip.shape)}, {tuple(self.jitter.shape)}"
            )
        device = self.box.device
        defaults = {
            "hue": torch.zeros(n, device=device),
            "order": torch.arange(4, device=device).expand(n, 4),
            "gray": torch.zeros(n, dtype=torch.bool, device=device),
            "blur": torch.zeros(n, device=device),
            "solarize": torch.zeros(n, dtype=torch.bool, device=device),
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, default)
            elif value.shape != default.shape:
                raise ValueError(
                    f"ViewParams needs {name} of shape {tuple(default.shape)}; "
                    f"got {tuple(value.shape)}"
                )

    def __len__(self) -> int:
        return self.box.shape[0]

    def _fields(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def rows(self, index: torch.Tensor | Sequence[int] | slice) -> ViewParams:
        """The params of these rows (an index or bool tensor, a sequence of ints or a slice)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.box.device)
            if index.dim() == 0:
                index = index.unsqueeze(0)
        return ViewParams(*(f[index] for f in self._fields()))

    def to(self, device: torch.device | str) -> ViewParams:
        """The same params on ``device``."""
        return ViewParams(*(f.to(device) for f in self._fields()))


def _check_range(name: str, value: tuple[float, float], low: float, high: float | None) -> None:
    lo, hi = value
    ok = all(math.isfinite(v) for v in value) and low < lo <= hi
    if high is not None:
        ok = ok and hi <= high
    if not ok:
        bound = f"{low} < {name}[0] <= {name}[1]" + (f" <= {high}" if high is not None else "")
        raise ValueError(f"{name} must satisfy {bound}; got {tuple(value)}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got {value}")


def draw_view_params(
    batch: int,
    gen: torch.Generator,
    *,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
    jitter: float | Sequence[float] = 0.4,
    jitter_prob: float = 0.8,
    jitter_order: str = "fixed",
    gray_prob: float = 0.0,
    blur_prob: float = 0.0,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    solarize_prob: float = 0.0,
) -> ViewParams:
    """Draw the view parameters of ``batch`` clips from ``gen`` (on the generator's device).

    Crop, as torchvision's ``RandomResizedCrop``: the area fraction is uniform
    in ``scale``, the aspect ratio (width / height) log-uniform in ``ratio``;
    of ``CROP_TRIES`` candidates per clip the first that fits in the frame is
    kept and placed uniformly; when none fits, the box is the centred crop of
    the whole frame with its aspect ratio clamped into ``ratio``. Fractions
    are of the frame's sides, so ``ratio`` is the pixel ratio for square
    clips (bwssl's) and relative to the frame's aspect otherwise.

    Flip with probability ``flip_prob``. Colour jitter with probability
    ``jitter_prob``: ``jitter`` is one strength j for brightness, contrast and
    saturation (no hue), or four strengths (brightness, contrast, saturation,
    hue); each factor is uniform in ``[1 - j, 1 + j]`` (j = 0: exactly 1, no
    change) and the hue shift uniform in ``[-h, h]`` turns (h <= 0.5), as
    torchvision's ``ColorJitter``. ``jitter_order``: ``fixed`` applies them
    in that order, ``random`` in a uniformly random order per clip (as
    torchvision). Grayscale with probability ``gray_prob``; Gaussian blur with
    probability ``blur_prob``, sigma uniform in ``blur_sigma`` pixels;
    solarization with probability ``solarize_prob``.

    The number and order of draws depend only on ``batch``, so the same seed
    gives the same params whatever the arguments' outcomes; the draws for the
    hue, order, grayscale, blur and solarization come after those of crop,
    flip and jitter, so adding them leaves those unchanged.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative int; got {batch!r}")
    _check_range("scale", scale, 0.0, 1.0)
    _check_range("ratio", ratio, 0.0, None)
    for name, p in (
        ("flip_prob", flip_prob),
        ("jitter_prob", jitter_prob),
        ("gray_prob", gray_prob),
        ("blur_prob", blur_prob),
        ("solarize_prob", solarize_prob),
    ):
        _check_prob(name, p)
    _check_range("blur_sigma", blur_sigma, 0.0, None)
    strengths = jitter_strengths(jitter)
    if jitter_order not in ("fixed", "random"):
        raise ValueError(f"jitter_order must be 'fixed' or 'random'; got {jitter_order!r}")

    device = gen.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=device)

    # Crop: CROP_TRIES candidates per clip, first valid one wins.
    area = scale[0] + (scale[1] - scale[0]) * uniform(batch, CROP_TRIES)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * uniform(batch, CROP_TRIES))
    width = torch.sqrt(area * aspect)
    height = torch.sqrt(area / aspect)
    valid = (width <= 1.0) & (height <= 1.0)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # 0 where none is valid
    found = valid.any(dim=1)
    width = width.gather(1, first).squeeze(1)
    height = height.gather(1, first).squeeze(1)
    # Fallback: the whole frame, trimmed to the nearest allowed aspect ratio, centred.
    if ratio[0] > 1.0:
        fb_h, fb_w = 1.0 / ratio[0], 1.0
    elif ratio[1] < 1.0:
        fb_h, fb_w = 1.0, ratio[1]
    else:
        fb_h, fb_w = 1.0, 1.0
    height = torch.where(found, height, torch.full_like(height, fb_h))
    width = torch.where(found, width, torch.full_like(width, fb_w))
    pos = uniform(batch, 2)
    top = torch.where(found, pos[:, 0] * (1.0 - height), (1.0 - height) / 2)
    left = torch.where(found, pos[:, 1] * (1.0 - width), (1.0 - width) / 2)
    box = torch.stack([top, left, height, width], dim=1)

    flip = uniform(batch) < flip_prob

    if len(set(strengths[:3])) == 1:  # one strength: the same arithmetic as a scalar
        factors = 1.0 + strengths[0] * (2.0 * uniform(batch, 3) - 1.0)
    else:
        j = torch.tensor(strengths[:3], device=device)
        factors = 1.0 + j * (2.0 * uniform(batch, 3) - 1.0)
    apply = (uniform(batch) < jitter_prob).to(factors.dtype)

    hue = strengths[3] * (2.0 * uniform(batch) - 1.0)
    order = uniform(batch, 4).argsort(dim=1)
    if jitter_order == "fixed":
        order = torch.arange(4, device=device).expand(batch, 4)
    gray = uniform(batch) < gray_prob
    blurred = uniform(batch) < blur_prob
    sigma = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * uniform(batch)
    sigma = torch.where(blurred, sigma, torch.zeros_like(sigma))
    solarized = uniform(batch) < solarize_prob
    return ViewParams(
        box,
        flip,
        torch.cat([factors, apply[:, None]], dim=1),
        hue=hue,
        order=order,
        gray=gray,
        blur=sigma,
        solarize=solarized,
    )


def jitter_strengths(jitter: float | Sequence[float]) -> tuple[float, float, float, float]:
    """(brightness, contrast, saturation, hue) strengths of ``jitter``: one number j means
    (j, j, j, 0); four numbers are taken as they are. Raises ValueError when out of range:
    the first three in [0, 1), the hue in [0, 0.5]."""
    if isinstance(jitter, (int, float)):
        values = (float(jitter),) * 3 + (0.0,)
    else:
        values = tuple(float(v) for v in jitter)
        if len(values) != 4:
            raise ValueError(
                f"jitter must be one strength or four (brightness, contrast, saturation, hue); "
                f"got {list(jitter)}"
            )
    if not all(0.0 <= v < 1.0 for v in values[:3]) or not 0.0 <= values[3] <= 0.5:
        raise ValueError(
            f"jitter strengths must lie in [0, 1) (hue in [0, 0.5]); got {list(values)}"
        )
    return values  # type: ignore[return-value]


def draw_configured_view(
    cfg: ViewsConfig, view: int, batch: int, gen: torch.Generator
) -> ViewParams:
    """:func:`draw_view_params` with the settings of ``cfg`` for view ``view`` (0 or 1), which
    selects the per-view blur and solarization probabilities."""
    if view not in (0, 1):
        raise ValueError(f"view must be 0 or 1; got {view!r}")
    return draw_view_params(
        batch,
        gen,
        scale=(cfg.scale[0], cfg.scale[1]),
        ratio=(cfg.ratio[0], cfg.ratio[1]),
        flip_prob=cfg.flip_prob,
        jitter=cfg.jitter,
        jitter_prob=cfg.jitter_prob,
        jitter_order=cfg.jitter_order,
        gray_prob=cfg.gray_prob,
        blur_prob=cfg.blur_prob[view],
        blur_sigma=(cfg.blur_sigma[0], cfg.blur_sigma[1]),
        solarize_prob=cfg.solarize_prob[view],
    )


def _crop_flip(video: torch.Tensor, box: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop ``box`` of every clip, resize to (H, W) bilinearly, flip; all frames share the grid."""
    b, c, t, h, w = video.shape
    top, left, bh, bw = box.unbind(1)
    # Output coordinates (x, y) in [-1, 1] map to input x' = bw * x * sign + 2 left + bw - 1
    # (align_corners=False: -1 and 1 are the frame's outer edges, so fractions map exactly).
    sign = 1.0 - 2.0 * flip.to(box.dtype)
    zero = torch.zeros_like(top)
    theta = torch.stack(
        [
            torch.stack([bw * sign, zero, 2.0 * left + bw - 1.0], dim=1),
            torch.stack([zero, bh, 2.0 * top + bh - 1.0], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, c * t, h, w], align_corners=False)
    out = F.grid_sample(
        video.reshape(b, c * t, h, w),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return out.view(b, c, t, h, w)


def apply_view(video: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """The view ``params`` of a normalized batch ``video`` (B, C, T, H, W); same shape and dtype.

    Crop + resize + flip is one ``grid_sample`` over the batch reshaped to
    (B, C*T, H, W), so every frame of a clip uses the clip's box. The
    photometric steps work in [0, 1] pixel space
    (:func:`~bwssl.data.transforms.denormalize`, clamp after each jitter
    step, :func:`~bwssl.data.transforms.normalize`): jitter (the contrast
    mean is taken over the whole clip, so all frames get the same colour
    map), grayscale, blur, solarization. Clips that no photometric step
    touches (flag 0 or all factors 1 and hue 0, and no grayscale, blur or
    solarization) are left exactly as cropped. Half-precision input is
    processed in float32 and cast back.
    """
    if video.dim() != 5:
        raise ValueError(f"video must be (B, C, T, H, W); got shape {tuple(video.shape)}")
    if not video.is_floating_point():
        raise ValueError(f"video must be a floating-point tensor; got {video.dtype}")
    if len(params) != video.shape[0]:
        raise ValueError(f"params has {len(params)} rows for a batch of {video.shape[0]} clips")
    work = video.dtype if video.dtype in (torch.float32, torch.float64) else torch.float32
    # Decide on the params' own device (usually CPU) which clips change colour: no device sync.
    jittered = (params.jitter[:, 3] != 0) & (
        (params.jitter[:, :3] != 1).any(dim=1) | (params.hue != 0)
    )
    blurred = params.blur > 0
    touched = jittered | params.gray | blurred | params.solarize

    device = video.device
    x = video.to(work)
    out = _crop_flip(x, params.box.to(device, work), params.flip.to(device))
    if not bool(touched.any()):
        return out.to(video.dtype)

    def where(rows: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(rows.to(device).view(-1, 1, 1, 1, 1), new, old)

    pixels = denormalize(out, channel_dim=1)
    if bool(jittered.any()):
        factors = params.jitter[:, :3].to(device, work)
        shifted = colour_jitter(pixels, factors, params.hue.to(device, work), params.order)
        pixels = where(jittered, shifted, pixels)
    if bool(params.gray.any()):
        pixels = where(params.gray, grayscale(pixels), pixels)
    if bool(blurred.any()):
        rows = blurred.nonzero().squeeze(1)
        pixels = pixels.clone()
        sel = rows.to(device)
        pixels[sel] = gaussian_blur(pixels[sel], params.blur[rows].to(device, work))
    if bool(params.solarize.any()):
        pixels = where(params.solarize, solarize(pixels), pixels)
    return where(touched, normalize(pixels, channel_dim=1), out).to(video.dtype)
