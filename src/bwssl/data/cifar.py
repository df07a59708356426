"""CIFAR-10 and CIFAR-100 from their official python pickles, as one-frame clips.

The archives unpack to ``cifar-10-batches-py/`` (``data_batch_1`` .. ``5``,
``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``,
``test``, ``meta``); ``data.root`` may be that folder or its parent. Each
batch is a pickled dict (read with ``encoding="bytes"``, so keys are bytes):
``b"data"``, uint8 rows of 3072 values (1024 red, then green, then blue, each
a 32x32 image row by row), and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``
(CIFAR-100, whose 100 classes bwssl uses). Nothing is downloaded.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bwssl.data.images import ImageClips, SplitName
from bwssl.data.transforms import ClipFormat
from bwssl.errors import DataError

if TYPE_CHECKING:
    from bwssl.config import DataConfig

logger = logging.getLogger(__name__)

CifarName = Literal["cifar10", "cifar100"]


LAYOUTS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": b"labels",
        "names": b"label_names",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": b"fine_labels",
        "names": b"fine_label_names",
    },
}
"""File names and pickle keys of each CIFAR variant."""


def cifar_folder(name: CifarName, root: str | Path) -> Path:
    """The folder holding ``name``'s batch files: ``root`` itself or its usual subfolder."""
    layout = LAYOUTS[name]
    root = Path(root)
    for folder in (root, root / layout["folder"]):
        if (folder / layout["meta"]).is_file():
            return folder
    raise DataError(
        f"data.root={root} holds no {name} pickles: expected {layout['meta']} and "
        f"{', '.join(layout['train'] + layout['test'])} in {root} or in "
        f"{root / layout['folder']} (the official python version, unpacked)"
    )


def _unpickle(path: Path) -> dict[bytes, Any]:
    if not path.is_file():
        raise DataError(f"missing CIFAR file {path}")
    try:
        with path.open("rb") as f:
            data = pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"cannot read CIFAR file {path}: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a CIFAR batch (a pickled dict)")
    return data


def read_cifar(
    name: CifarName, root: str | Path, split: SplitName
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,), class names) of one split.

    Raises :class:`DataError` naming the file for a missing or malformed batch.
    """
    layout = LAYOUTS[name]
    folder = cifar_folder(name, root)
    meta = _unpickle(folder / layout["meta"])
    if layout["names"] not in meta:
        raise DataError(f"{folder / layout['meta']} has no {layout['names']!r} entry")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout["names"]]]
    images, labels = [], []
    for file in layout[split]:
        batch = _unpickle(folder / file)
        for key in (b"data", layout["labels"]):
            if key not in batch:
                raise DataError(f"{folder / file} has no {key!r} entry")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        lab = np.asarray(batch[layout["labels"]], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(
                f"{folder / file}: expected uint8 rows of 3072 and one label each; got data "
                f"{data.shape} and {len(lab)} labels"
            )
        if len(lab) and not (lab.min() >= 0 and lab.max() < len(names)):
            raise DataError(f"{folder / file}: labels outside 0..{len(names) - 1}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # CHW rows -> HWC
        labels.append(lab)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names


class CIFAR(ImageClips):
    """One split of CIFAR-10 or CIFAR-100 (``data.name=cifar10`` / ``cifar100``), held in memory.

    ``test`` is the seeded (``seed``) ``cfg.eval_fraction`` subsample of the
    test batch, as for the other real datasets.
    """

    def __init__(self, cfg: DataConfig, split: SplitName, *, seed: int = 0) -> None:
        if cfg.name not in LAYOUTS:
            raise ValueError(f"not a CIFAR dataset: {cfg.name!r}")
        if cfg.root is None:
            raise DataError(f"data.name={cfg.name} needs data.root (the unpacked pickles)")
        name: CifarName = cfg.name  # type: ignore[assignment]
        images, labels, names = read_cifar(name, cfg.root, split)
        if split == "test" and cfg.eval_fraction < 1.0:
            rng = np.random.default_rng(seed)
            keep = np.sort(rng.choice(len(labels), max(1, round(cfg.eval_fraction * len(labels)))))
            images, labels = images[keep], labels[keep]
        logger.info("%s %s: %d images of %d classes", name, split, len(labels), len(names))
        super().__init__(ClipFormat.from_config(cfg), labels, names)
        self.images = images
        """(N, 32, 32, 3) uint8 pixels."""
        self.name = name

    def read_image(self, index: int) -> np.ndarray:
        return self.images[index]

    def source(self, index: int) -> str:
        return f"{self.name} image {index}"


def summarize_cifar(name: CifarName, root: str | Path) -> dict[str, Any]:
    """Classes and per-class counts of both splits, JSON-ready (bad batch files raise)."""
    splits: dict[str, Any] = {}
    names: list[str] = []
    for split in ("train", "test"):
        _, labels, names = read_cifar(name, root, split)  # type: ignore[arg-type]
        counts = np.bincount(labels, minlength=len(names))
        splits[split] = {
            "images": len(labels),
            "per_class": {n: int(c) for n, c in zip(names, counts, strict=True)},
        }
    return {
        "dataset": name,
        "root": str(cifar_folder(name, root)),
        "classes": len(names),
        "class_names": names,
        "splits": splits,
        "bad_files": [],
    }
