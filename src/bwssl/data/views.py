"""Augmented views of a clip batch for joint-embedding objectives (Barlow Twins, VICReg, SimCLR).

A view is a random resized crop (one box per clip, shared by all its frames),
an optional horizontal flip and an optional colour jitter, applied to a
normalized batch (B, C, T, H, W) on whatever device it lives on.

Two steps, so that every random draw is a pure function of a seeded generator
and independent of how the batch is split over processes:

1. :func:`draw_view_params` draws the parameters of the GLOBAL batch from a
   ``torch.Generator`` (the caller seeds it from seed, epoch and step); each
   process takes its rows with :meth:`ViewParams.rows`.
2. :func:`apply_view` applies them: one batched ``F.affine_grid`` +
   ``F.grid_sample`` call for crop, resize and flip, then the jitter as a few
   elementwise ops.

Why not torchvision's ``RandomResizedCrop`` / ``ColorJitter``: torchvision is
not a dependency of bwssl; its transforms draw from the global RNG one clip at
a time, while here the whole batch is one op on its device and the per-clip
parameters come from an explicit seeded generator, so a view can be
reproduced (and split by rows) without replaying the transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bwssl.data.transforms import LUMA, denormalize, normalize

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
    """

    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor

    def __post_init__(self) -> None:
        n = self.box.shape[0]
        if self.box.shape != (n, 4) or self.flip.shape != (n,) or self.jitter.shape != (n, 4):
            raise ValueError(
                f"ViewParams needs box (B, 4), flip (B,), jitter (B, 4); got "
                f"{tuple(self.box.shape)}, {tuple(self.flip.shape)}, {tuple(self.jitter.shape)}"
            )

    def __len__(self) -> int:
        return self.box.shape[0]

    def rows(self, index: torch.Tensor | Sequence[int] | slice) -> ViewParams:
        """The params of these rows (an index or bool tensor, a sequence of ints or a slice)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, device=self.box.device)
            if index.dim() == 0:
                index = index.unsqueeze(0)
        return ViewParams(self.box[index], self.flip[index], self.jitter[index])

    def to(self, device: torch.device | str) -> ViewParams:
        """The same params on ``device``."""
        return ViewParams(self.box.to(device), self.flip.to(device), self.jitter.to(device))


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
    jitter: float = 0.4,
    jitter_prob: float = 0.8,
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
    ``jitter_prob``, with brightness, contrast and saturation factors uniform
    in ``[1 - jitter, 1 + jitter]`` (``jitter=0``: exactly 1, no change).

    The number and order of draws depend only on ``batch``, so the same seed
    gives the same params whatever the arguments' outcomes.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch must be a non-negative int; got {batch!r}")
    _check_range("scale", scale, 0.0, 1.0)
    _check_range("ratio", ratio, 0.0, None)
    _check_prob("flip_prob", flip_prob)
    _check_prob("jitter_prob", jitter_prob)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must lie in [0, 1); got {jitter}")

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

    factors = 1.0 + jitter * (2.0 * uniform(batch, 3) - 1.0)
    apply = (uniform(batch) < jitter_prob).to(factors.dtype)
    return ViewParams(box, flip, torch.cat([factors, apply[:, None]], dim=1))


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


def _gray(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) luma of 3-channel pixels; the mean channel otherwise."""
    if pixels.shape[1] == 3:
        weights = torch.tensor(LUMA, dtype=pixels.dtype, device=pixels.device)
        return (pixels * weights.view(1, 3, 1, 1, 1)).sum(dim=1, keepdim=True)
    return pixels.mean(dim=1, keepdim=True)


def _color_jitter(video: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation (fixed order) on [0, 1] pixels, clamped after each."""
    shape = (-1, 1, 1, 1, 1)
    bright, contrast, sat = (f.view(shape) for f in factors.unbind(1))
    x = denormalize(video, channel_dim=1)
    x = (x * bright).clamp(0.0, 1.0)
    mean = _gray(x).mean(dim=(1, 2, 3, 4), keepdim=True)  # one mean per clip, all frames
    x = (contrast * x + (1.0 - contrast) * mean).clamp(0.0, 1.0)
    if x.shape[1] == 3:
        x = (sat * x + (1.0 - sat) * _gray(x)).clamp(0.0, 1.0)
    return normalize(x, channel_dim=1)


def apply_view(video: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """The view ``params`` of a normalized batch ``video`` (B, C, T, H, W); same shape and dtype.

    Crop + resize + flip is one ``grid_sample`` over the batch reshaped to
    (B, C*T, H, W), so every frame of a clip uses the clip's box. Jitter works
    in [0, 1] pixel space (:func:`~bwssl.data.transforms.denormalize`, clamp
    after each step, :func:`~bwssl.data.transforms.normalize`); the contrast
    mean is taken over the whole clip, so all frames get the same colour map.
    Clips whose flag is 0 or whose factors are all 1 are left exactly as
    cropped. Half-precision input is processed in float32 and cast back.
    """
    if video.dim() != 5:
        raise ValueError(f"video must be (B, C, T, H, W); got shape {tuple(video.shape)}")
    if not video.is_floating_point():
        raise ValueError(f"video must be a floating-point tensor; got {video.dtype}")
    if len(params) != video.shape[0]:
        raise ValueError(f"params has {len(params)} rows for a batch of {video.shape[0]} clips")
    work = video.dtype if video.dtype in (torch.float32, torch.float64) else torch.float32
    # Decide on the params' own device (usually CPU) whether any clip is jittered: no device sync.
    active = (params.jitter[:, 3] != 0) & (params.jitter[:, :3] != 1).any(dim=1)
    any_active = bool(active.any())

    device = video.device
    x = video.to(work)
    out = _crop_flip(x, params.box.to(device, work), params.flip.to(device))
    if any_active:
        jittered = _color_jitter(out, params.jitter[:, :3].to(device, work))
        out = torch.where(active.to(device).view(-1, 1, 1, 1, 1), jittered, out)
    return out.to(video.dtype)
