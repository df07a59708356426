"""Photometric operations on batches of [0, 1] pixels (B, C, T, H, W), one parameter per clip.

The colour part of the two-view augmentations (:mod:`bwssl.data.views`):
brightness, contrast, saturation and hue (as torchvision's ``ColorJitter``),
grayscale, Gaussian blur and solarization. Every function takes per-clip
parameters as tensors with B rows and treats all frames of a clip alike.

Written here rather than taken from torchvision: torchvision is not a
dependency of bwssl, and its functional ops take one factor per call, while
these take one factor per clip of the batch, on the batch's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bwssl.data.transforms import LUMA

BLUR_KERNEL_AT_224 = 23
"""Gaussian blur kernel side of the Barlow Twins / BYOL recipes at 224-pixel crops; other crop
sizes use the same fraction of the side (:func:`blur_kernel_size`)."""


def _per_clip(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1, 1)


def luma(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, H, W) ITU-R BT.601 luma of 3-channel pixels; the channel mean otherwise."""
    if pixels.shape[1] == 3:
        weights = torch.tensor(LUMA, dtype=pixels.dtype, device=pixels.device)
        return (pixels * weights.view(1, 3, 1, 1, 1)).sum(dim=1, keepdim=True)
    return pixels.mean(dim=1, keepdim=True)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``x * factor`` clamped to [0, 1]; ``factor`` (B,)."""
    return (x * _per_clip(factor)).clamp(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the clip's mean luma (one mean over all its frames), clamped; ``factor`` (B,)."""
    mean = luma(x).mean(dim=(1, 2, 3, 4), keepdim=True)
    f = _per_clip(factor)
    return (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the pixel's luma, clamped; ``factor`` (B,). Identity unless C == 3."""
    if x.shape[1] != 3:
        return x
    f = _per_clip(factor)
    return (f * x + (1.0 - f) * luma(x)).clamp(0.0, 1.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (B,) turns (in [-0.5, 0.5]); identity unless C == 3.

    Method (torchvision's ``adjust_hue``): RGB to HSV, add the shift to the
    hue modulo 1, HSV back to RGB; saturation and value are kept, so a gray
    pixel stays gray. Exact up to float rounding; a zero shift returns ``x``.
    """
    if x.shape[1] != 3:
        return x
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = ((maxc - c) / safe for c in (r, g, b))
    hue = torch.where(
        maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc)
    )  # in sextants, (-1, 5]
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift.view(-1, 1, 1, 1), 1.0)
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), maxc)
    # HSV -> RGB: each channel is v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6.
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + 6.0 * hue, 6.0)
        out.append(maxc - maxc * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    rotated = torch.stack(out, dim=1)
    return torch.where(_per_clip(shift) == 0, x, rotated)


COLOUR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
"""The four colour-jitter operations, indexed as in a jitter order (0 brightness ... 3 hue)."""


def colour_jitter(
    x: torch.Tensor, factors: torch.Tensor, hue: torch.Tensor, order: torch.Tensor
) -> torch.Tensor:
    """Brightness, contrast, saturation (``factors`` (B, 3)) and hue (``hue`` (B,)) per clip,
    in the order of each clip's row of ``order`` (B, 4), a permutation of the indices of
    :data:`COLOUR_OPS`. ``order`` may live on another device (usually the CPU); the
    order 0 1 2 3 for every clip runs as four plain calls (the hue only if a shift is not 0)."""
    args = (factors[:, 0], factors[:, 1], factors[:, 2], hue)
    if bool((order == torch.arange(4, device=order.device)).all()):
        x = adjust_brightness(x, args[0])
        x = adjust_contrast(x, args[1])
        x = adjust_saturation(x, args[2])
        return adjust_hue(x, hue) if bool((hue != 0).any()) else x
    x = x.clone()
    for slot in range(4):  # at each position of the order, every op on the clips it is due
        for op in range(4):
            rows = (order[:, slot] == op).nonzero().squeeze(1)
            if rows.numel():
                sel = rows.to(x.device)
                x[sel] = COLOUR_OPS[op](x[sel], args[op][sel])
    return x


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma replicated to every channel (torchvision ``Grayscale(num_output_channels=C)``)."""
    return luma(x).expand_as(x)


def solarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``1 - x`` where ``x >= threshold``, else ``x`` (PIL ``ImageOps.solarize`` at 128/255)."""
    return torch.where(x >= threshold, 1.0 - x, x)


def blur_kernel_size(side: int) -> int:
    """Odd Gaussian kernel side for frames of ``side`` pixels: ``23 * side / 224`` rounded to
    the nearest odd number, at least 3 (3 at 32 pixels, 7 at 64, 23 at 224)."""
    k = BLUR_KERNEL_AT_224 * side / 224
    return max(3, 2 * math.floor(k / 2) + 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` (B,) in pixels per clip, every frame alike.

    The kernel side is :func:`blur_kernel_size` of the shorter frame side;
    its taps are ``exp(-d^2 / (2 sigma^2))`` normalized to sum 1 (as
    torchvision's ``gaussian_blur``); borders are reflected. A tiny sigma
    gives a kernel of one tap: the identity.
    """
    b, c, t, h, w = x.shape
    k = min(blur_kernel_size(min(h, w)), 2 * (min(h, w) - 1) + 1)  # reflection needs pad < side
    if b == 0 or k < 3:
        return x
    d = torch.arange(k, dtype=x.dtype, device=x.device) - (k - 1) / 2
    taps = torch.exp(-0.5 * (d.view(1, k) / sigma.to(x.dtype).view(b, 1)) ** 2)
    taps = taps / taps.sum(dim=1, keepdim=True)  # (B, k)
    taps = taps.repeat_interleave(c * t, dim=0)  # (B*C*T, k), one kernel per plane
    planes = x.reshape(1, b * c * t, h, w)
    pad = k // 2
    planes = F.conv2d(
        F.pad(planes, (0, 0, pad, pad), mode="reflect"), taps.view(-1, 1, k, 1), groups=b * c * t
    )
    planes = F.conv2d(
        F.pad(planes, (pad, pad, 0, 0), mode="reflect"), taps.view(-1, 1, 1, k), groups=b * c * t
    )
    return planes.view(b, c, t, h, w)
