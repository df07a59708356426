"""``build_dataset``: the one entry point from a :class:`~bwssl.config.DataConfig` to clips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from bwssl.config import DataConfig
from bwssl.data.cifar import CIFAR
from bwssl.data.clips import ClipDataset
from bwssl.data.folder import index_folder
from bwssl.data.hmdb51 import index_hmdb51
from bwssl.data.images import ImageFolder
from bwssl.data.kinetics import index_kinetics
from bwssl.data.shapes import SyntheticShapes
from bwssl.data.ssv2 import index_ssv2
from bwssl.data.synthetic import SyntheticMotion
from bwssl.data.transforms import ClipFormat
from bwssl.data.ucf101 import UCF101, index_ucf101
from bwssl.data.video_index import VideoIndex
from bwssl.data.video_list import VideoListDataset

VideoLayout = Callable[..., VideoIndex]
"""``index(cfg, *, progress=True, workers=None) -> VideoIndex``: a dataset's layout reader."""

VIDEO_DATASETS: dict[str, VideoLayout] = {
    "ucf101": index_ucf101,
    "hmdb51": index_hmdb51,
    "kinetics": index_kinetics,
    "ssv2": index_ssv2,
    "folder": index_folder,
}
"""``data.name`` -> the reader of that video dataset's official layout (docs/data.md)."""


def index_dataset(cfg: DataConfig, *, progress: bool = True) -> VideoIndex:
    """The probed index of the video dataset ``cfg.name`` (a key of :data:`VIDEO_DATASETS`)."""
    if cfg.name not in VIDEO_DATASETS:
        raise ValueError(f"{cfg.name!r} is not a video dataset ({', '.join(VIDEO_DATASETS)})")
    return VIDEO_DATASETS[cfg.name](cfg, progress=progress)


def build_dataset(
    cfg: DataConfig, split: Literal["train", "test"], *, seed: int = 0
) -> ClipDataset:
    """The ``train`` or ``test`` clips of ``cfg.name`` (a name of ``DataConfig.name``).

    ``test`` is what evaluation uses: for a video dataset, image folders and
    CIFAR the seeded (``seed``) ``cfg.eval_fraction`` subsample of its test
    split; for the synthetic data the whole test split (``cfg.synthetic_test``
    clips; its content does not depend on ``seed``). Data problems (missing
    files, too many unreadable videos, a bad image layout or CIFAR batch)
    raise :class:`~bwssl.errors.DataError` here, before any training.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if cfg.name == "synthetic":
        n = cfg.synthetic_train if split == "train" else cfg.synthetic_test
        return SyntheticMotion(
            ClipFormat.from_config(cfg), n, cfg.synthetic_classes, split, cache_dir=cfg.cache_dir
        )
    if cfg.name == "ucf101":
        return UCF101(cfg, split, seed=seed)
    if cfg.name in VIDEO_DATASETS:
        return VideoListDataset(cfg, split, index_dataset(cfg), seed=seed)
    if cfg.name == "synthetic_images":
        n = cfg.synthetic_train if split == "train" else cfg.synthetic_test
        return SyntheticShapes(
            ClipFormat.from_config(cfg), n, cfg.synthetic_classes, split, cache_dir=cfg.cache_dir
        )
    if cfg.name == "images":
        return ImageFolder(cfg, split, seed=seed)
    if cfg.name in ("cifar10", "cifar100"):
        return CIFAR(cfg, split, seed=seed)
    raise ValueError(f"unknown dataset {cfg.name!r}")  # "auto" is resolved by DataConfig
