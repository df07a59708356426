"""Clip format, sampling and normalization shared by every dataset and the analyses.

Clips are float tensors (C, T, H, W) normalized with the ImageNet statistics,
as in VideoMAE; reconstruction targets undo this to [0, 1] pixels first.
Every dataset goes through the same steps: pick T frame indices
(:func:`frame_indices`), pick a square window (:func:`crop_window`), then
:func:`clip_tensor` crops, resizes, flips, converts channels and normalizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from bwssl.config import DataConfig

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""RGB weights of the one-channel (``channels=1``) conversion (ITU-R BT.601)."""


def _stats(x: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    c = x.shape[channel_dim]
    mean = torch.tensor(IMAGENET_MEAN[:c] if c <= 3 else [0.5] * c, dtype=x.dtype, device=x.device)
    std = torch.tensor(IMAGENET_STD[:c] if c <= 3 else [0.25] * c, dtype=x.dtype, device=x.device)
    return mean.view(shape), std.view(shape)


def normalize(x: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """[0, 1] pixels -> normalized clip (channel axis ``channel_dim``)."""
    mean, std = _stats(x, channel_dim)
    return (x - mean) / std


def denormalize(x: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """Normalized clip -> [0, 1] pixels (channel axis ``channel_dim``)."""
    mean, std = _stats(x, channel_dim)
    return x * std + mean


# --- clip sampling: which frames, which window, which flip -----------------------------------


@dataclass(frozen=True)
class ClipFormat:
    """The clip every dataset produces: T frames at a stride, a square crop, C channels.

    Resize policy (``resize``):

    - ``short_side``: the shorter side of each frame is scaled to ``short_side``
      (``resize_to``, default ``round(crop_size * 8 / 7)``, i.e. 146 for 128),
      then a ``crop_size`` square is cut (random for training, central for
      evaluation). Implemented as crop-then-resize on the original frame (a
      square window of ``crop_size * short / short_side`` pixels scaled to
      ``crop_size``), which is the same view at a fraction of the cost.
    - ``none``: the square is cut at native resolution; frames whose shorter
      side is below ``crop_size`` are scaled up to it first.
    """

    num_frames: int
    frame_stride: int
    crop_size: int
    channels: int = 3
    resize: str = "short_side"
    resize_to: int | None = None

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ClipFormat:
        return cls(
            cfg.num_frames, cfg.frame_stride, cfg.crop_size, cfg.channels, cfg.resize, cfg.resize_to
        )

    @property
    def span(self) -> int:
        """Frames a clip covers, ``num_frames * frame_stride`` (videos shorter are excluded)."""
        return self.num_frames * self.frame_stride

    @property
    def short_side(self) -> int:
        """The short side frames are scaled to under the ``short_side`` policy."""
        return self.resize_to if self.resize_to is not None else round(self.crop_size * 8 / 7)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of a clip."""
        return self.channels, self.num_frames, self.crop_size, self.crop_size


def frame_indices(start: int, fmt: ClipFormat) -> np.ndarray:
    """Indices of the T frames of a clip starting at ``start``: ``start + stride * arange(T)``."""
    return start + fmt.frame_stride * np.arange(fmt.num_frames, dtype=np.int64)


def center_start(length: int, fmt: ClipFormat) -> int:
    """First frame of the clip centred in a video of ``length`` frames (evaluation)."""
    return max(0, (length - fmt.span) // 2)


def random_start(rng: np.random.Generator, length: int, fmt: ClipFormat) -> int:
    """First frame of a uniformly drawn clip that fits in ``length`` frames (training)."""
    return int(rng.integers(0, max(0, length - fmt.span) + 1))


def crop_window(
    height: int, width: int, fmt: ClipFormat, rng: np.random.Generator | None
) -> tuple[int, int, int]:
    """(top, left, side) of the square window, in original pixels, that becomes the crop.

    ``rng`` draws the window position (training); ``None`` centres it (evaluation).
    """
    short = min(height, width)
    if fmt.resize == "short_side":
        side = round(fmt.crop_size * short / fmt.short_side)
    else:
        side = fmt.crop_size
    side = max(1, min(side, short))
    if rng is None:
        return (height - side) // 2, (width - side) // 2, side
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return top, left, side


def clip_tensor(
    frames: np.ndarray, window: tuple[int, int, int], flip: bool, fmt: ClipFormat
) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> normalized float32 clip (C, T, crop, crop).

    Cuts ``window``, scales it to ``crop_size`` (PIL bilinear, which
    antialiases when shrinking), flips horizontally if asked, converts to
    ``fmt.channels`` (1: luma) and normalizes exactly as :func:`normalize`.
    Written with numpy and PIL rather than torch: it runs once per clip in
    data-loader workers, where small torch ops cost more than the work.
    """
    top, left, side = window
    x = frames[:, top : top + side, left : left + side]  # (T, side, side, 3) uint8
    if side != fmt.crop_size:
        size = (fmt.crop_size, fmt.crop_size)
        x = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(f)).resize(size, Image.Resampling.BILINEAR)
                )
                for f in x
            ]
        )
    if flip:
        x = x[:, :, ::-1]
    x = x.astype(np.float32) / np.float32(255)
    if fmt.channels == 1:
        x = x @ np.asarray(LUMA, dtype=np.float32)[:, None]  # (T, crop, crop, 1)
    mean = np.asarray(IMAGENET_MEAN[: fmt.channels], dtype=np.float32)
    std = np.asarray(IMAGENET_STD[: fmt.channels], dtype=np.float32)
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 0, 1, 2)))  # (C, T, crop, crop)
