"""The clip dataset interface the trainer and the analyses consume, and its batching.

A :class:`ClipDataset` maps a key to ``(video, label)``:

- ``dataset[i]`` (an int): the evaluation view, deterministic: the clip centred
  in time, the central crop, no flip.
- ``dataset[(i, aug_seed)]``: the training view; the temporal start, the crop
  window and the flip are drawn, in that order, from
  ``numpy.random.default_rng(aug_seed)``, so a clip depends only on its key,
  never on the worker that loads it or on a resume.

A sample that cannot be read comes back as ``None`` (logged with its path and
counted); :func:`collate_clips` drops it and counts it in ``ClipBatch.skipped``;
the trainer passes the running totals to :func:`check_unreadable`.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bwssl.data.transforms import (
    ClipFormat,
    center_start,
    clip_tensor,
    crop_window,
    frame_indices,
    random_start,
)
from bwssl.errors import DataError

if TYPE_CHECKING:
    from bwssl.config import DataConfig

logger = logging.getLogger(__name__)

ClipKey = int | tuple[int, int]
Sample = tuple[torch.Tensor, int]

MIN_SEEN_FOR_CHECK = 200
""":func:`check_unreadable` judges the fraction against at least this many clips, so one
bad file among the first few batches does not stop a run."""


class VideoReadError(Exception):
    """A video or frame folder that cannot be opened or decoded (the message says why)."""


class ClipDataset(torch.utils.data.Dataset):
    """Base of every clip dataset: key handling, sampling and the clip transform.

    Subclasses set ``labels`` and ``class_names`` and implement
    :meth:`video_length`, :meth:`read_frames` and :meth:`source`.
    """

    labels: np.ndarray
    """(N,) int64 class index of every item."""
    class_names: list[str]
    """Class name of every class index."""

    def __init__(
        self, fmt: ClipFormat, labels: np.ndarray, class_names: list[str], *, flip: bool = True
    ) -> None:
        self.fmt = fmt
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        self.flip = flip
        """Whether the training view flips horizontally (with probability 1/2)."""
        self.unreadable = 0
        """Samples of this process that could not be read (each worker counts its own)."""

    # --- what a subclass provides ----------------------------------------------------------
    def video_length(self, index: int) -> int:
        """Frames available in video ``index`` (at least ``fmt.span``)."""
        raise NotImplementedError

    def read_frames(self, index: int, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames (T, H, W, 3) of video ``index`` at ``frames`` (T,) indices.

        Raises :class:`VideoReadError` when the video cannot be read.
        """
        raise NotImplementedError

    def source(self, index: int) -> str:
        """Where item ``index`` comes from (a path), for log messages."""
        raise NotImplementedError

    # --- the interface -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of every clip."""
        return self.fmt.shape

    def __getitem__(self, key: ClipKey) -> Sample | None:
        if isinstance(key, tuple):
            index, aug_seed = (int(k) for k in key)
            rng: np.random.Generator | None = np.random.default_rng(aug_seed)
        else:
            index, rng = int(key), None
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        try:
            return self._load(index, rng), int(self.labels[index])
        except VideoReadError as e:
            self.unreadable += 1
            logger.warning("skipping unreadable clip %s: %s", self.source(index), e)
            return None

    def _load(self, index: int, rng: np.random.Generator | None) -> torch.Tensor:
        length = self.video_length(index)
        start = (
            center_start(length, self.fmt) if rng is None else random_start(rng, length, self.fmt)
        )
        frames = self.read_frames(index, frame_indices(start, self.fmt))  # (T, H, W, 3)
        window = crop_window(frames.shape[1], frames.shape[2], self.fmt, rng)
        flip = bool(rng is not None and self.flip and rng.random() < 0.5)
        return clip_tensor(frames, window, flip, self.fmt)  # (C, T, crop, crop)


@dataclass
class ClipBatch:
    """A collated batch; unreadable samples are dropped and counted."""

    video: torch.Tensor
    """(B, C, T, H, W) float32 normalized clips (B may be 0)."""
    label: torch.Tensor
    """(B,) int64 class indices."""
    skipped: int
    """Samples of this batch that could not be read."""

    def pin_memory(self) -> ClipBatch:
        """Called by the DataLoader's pinning thread when ``pin_memory=True``."""
        return ClipBatch(self.video.pin_memory(), self.label.pin_memory(), self.skipped)


def collate_clips(
    items: list[Sample | None], clip_shape: tuple[int, int, int, int] | None = None
) -> ClipBatch:
    """Stack ``(video, label)`` items into a :class:`ClipBatch`, dropping ``None``.

    An all-``None`` batch gives a video of batch size 0, shaped (0, C, T, H, W)
    when ``clip_shape`` is known.
    """
    good = [it for it in items if it is not None]
    skipped = len(items) - len(good)
    if not good:
        shape = clip_shape if clip_shape is not None else (0, 0, 0, 0)
        return ClipBatch(torch.empty((0, *shape)), torch.empty(0, dtype=torch.int64), skipped)
    video = torch.stack([v for v, _ in good])  # (B, C, T, H, W)
    label = torch.tensor([lab for _, lab in good], dtype=torch.int64)
    return ClipBatch(video, label, skipped)


def make_loader(
    dataset: ClipDataset, batch_sampler: Any, num_workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``batch_sampler``'s key batches with :func:`collate_clips`.

    Workers persist across epochs; the sampler is iterated in the main
    process, so changing its epoch between epochs works. Every iteration
    draws the workers' base seed from a generator of the loader's own, never
    from torch's global RNG, so starting an epoch (or resuming in the middle
    of one) leaves the global stream where a checkpoint restored it: training
    draws from it (feature noise), and a resumed run must draw the same.
    """
    workers = num_workers > 0
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=functools.partial(collate_clips, clip_shape=dataset.clip_shape),
        persistent_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )


def check_unreadable(skipped: int, seen: int, cfg: DataConfig) -> None:
    """Stop the run when more than ``cfg.max_unreadable_fraction`` of clips were unreadable.

    ``skipped`` of ``seen`` samples could not be read. The fraction is taken
    over at least :data:`MIN_SEEN_FOR_CHECK` samples, so a bad file early on
    does not stop a run that is fine overall.
    """
    limit = cfg.max_unreadable_fraction
    if skipped > limit * max(seen, MIN_SEEN_FOR_CHECK):
        raise DataError(
            f"{skipped} of {seen} clips could not be read ({skipped / max(seen, 1):.1%}), more "
            f"than data.max_unreadable_fraction={limit}; the log names each file. Fix or remove "
            f"them (`bwssl data summary NAME --root R --json` lists unreadable files), or "
            f"raise data.max_unreadable_fraction"
        )
