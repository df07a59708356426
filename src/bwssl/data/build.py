"""``build_dataset``: the one entry point from a :class:`~bwssl.config.DataConfig` to clips."""

from __future__ import annotations

from typing import Literal

from bwssl.config import DataConfig
from bwssl.data.cifar import CIFAR
from bwssl.data.clips import ClipDataset
from bwssl.data.images import ImageFolder
from bwssl.data.shapes import SyntheticShapes
from bwssl.data.synthetic import SyntheticMotion
from bwssl.data.transforms import ClipFormat
from bwssl.data.ucf101 import UCF101


def build_dataset(
    cfg: DataConfig, split: Literal["train", "test"], *, seed: int = 0
) -> ClipDataset:
    """The ``train`` or ``test`` clips of ``cfg.name`` (a name of ``DataConfig.name``).

    ``test`` is what evaluation uses: for UCF101, image folders and CIFAR the
    seeded (``seed``) ``cfg.eval_fraction`` subsample of the test split; for
    the synthetic data the whole test split (``cfg.synthetic_test`` clips; its
    content does not depend on ``seed``). Data problems (missing files, too
    many unreadable videos, a bad image layout or CIFAR batch) raise
    :class:`~bwssl.errors.DataError` here, before any training.
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
