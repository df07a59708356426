"""The clips of a probed list of labelled videos: the dataset every video layout builds on.

A layout reader (UCF101, HMDB51, Kinetics, Something-Something v2, class
folders) turns its official files into a :class:`~bwssl.data.video_index.VideoIndex`;
:class:`VideoListDataset` takes its usable train or test records (the test
split: a seeded ``data.eval_fraction`` subsample) and serves clips from the
video files (PyAV) or frame folders.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np

from bwssl.config import DataConfig
from bwssl.data.clips import ClipDataset
from bwssl.data.transforms import ClipFormat
from bwssl.data.video_index import SplitName, VideoIndex, cache_root, probe_path, probe_records
from bwssl.data.video_io import read_frame_folder, read_video
from bwssl.errors import DataError

logger = logging.getLogger(__name__)


def finish_index(
    cfg: DataConfig,
    index: VideoIndex,
    *,
    hint: str,
    min_found: float = 0.5,
    progress: bool = True,
    workers: int | None = None,
) -> VideoIndex:
    """Probe ``index``'s present records (cached) and return it.

    Raises :class:`DataError` before probing when fewer than ``min_found`` of
    the listed files (and always when none) are found: the root is likely
    wrong; ``hint`` says what it must hold.
    """
    listed = len(index.records)
    found = sum(r.status != "missing" for r in index.records)
    if listed and (found == 0 or found < min_found * listed):
        raise DataError(
            f"{listed - found} of the {listed} videos listed in {index.lists} are not in "
            f"{index.base}: {hint}"
        )
    probe_records(
        index.records,
        index_cache_file(cfg, index.dataset, index.backend, index.base),
        index.span,
        probe=functools.partial(probe_path, backend=index.backend),
        desc=f"indexing {index.dataset} ({index.backend})",
        progress=progress,
        workers=workers,
    )
    return index


def index_cache_file(cfg: DataConfig, dataset: str, backend: str, base: Path) -> Path:
    """The probe cache of ``dataset``'s files under ``base``: one JSON file per folder."""
    digest = hashlib.sha1(str(base.resolve()).encode()).hexdigest()[:12]
    return cache_root(cfg.cache_dir) / f"{dataset}-{backend}-{digest}.json"


class VideoListDataset(ClipDataset):
    """Clips of the usable ``split`` videos of ``index`` (``test``: the seeded
    ``cfg.eval_fraction`` subsample, at least one video)."""

    def __init__(self, cfg: DataConfig, split: SplitName, index: VideoIndex, *, seed: int = 0):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        index.check(cfg.allow_missing, cfg.max_unreadable_fraction)
        records = index.select(split)
        where = f"{index.base}{f' (split {index.split})' if index.split is not None else ''}"
        if not records:
            raise DataError(
                f"no usable {split} video in {where}: "
                f"{index.count('short', split)} shorter than the clip span of "
                f"{index.span} frames, {index.count('unreadable', split)} unreadable, "
                f"{index.count('missing', split)} missing"
            )
        if split == "test" and cfg.eval_fraction < 1.0:
            rng = np.random.default_rng(seed)
            keep = max(1, round(cfg.eval_fraction * len(records)))
            records = [records[i] for i in np.sort(rng.choice(len(records), keep, replace=False))]
        logger.info(
            "%s %s %s: %d videos (%s backend); excluded: %d shorter than %d frames, "
            "%d unreadable, %d missing",
            index.dataset,
            where,
            split,
            len(records),
            index.backend,
            index.count("short", split),
            index.span,
            index.count("unreadable", split),
            index.count("missing", split),
        )
        super().__init__(
            ClipFormat.from_config(cfg), np.array([r.label for r in records]), index.class_names
        )
        self.backend = index.backend
        self.paths = [r.path for r in records]
        self.lengths = np.array([r.frames for r in records], dtype=np.int64)

    def video_length(self, index: int) -> int:
        return int(self.lengths[index])

    def read_frames(self, index: int, frames: np.ndarray) -> np.ndarray:
        if self.backend == "video":
            return read_video(self.paths[index], frames)
        return read_frame_folder(self.paths[index], frames)

    def source(self, index: int) -> str:
        return self.paths[index]
