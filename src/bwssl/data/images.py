"""Image datasets as one-frame clips, and folders of images in ImageFolder layout.

An image is a clip of one frame: every image dataset yields what the video
datasets do, a normalized clip (C, 1, H, W) and its label, through the same
:class:`~bwssl.data.clips.ClipDataset` sampling (training: a random
``crop_size`` square after the short-side resize and a flip; evaluation: the
central square), so the trainer, the views and the analyses need nothing new.

Folder layout (ImageNet as usually extracted)::

    ROOT/train/<class>/*.jpg|jpeg|png|...
    ROOT/val/<class>/*            (``test/`` is used when there is no ``val/``)

The classes are the sorted folder names of ``train``; ``val`` must have the
same folders (a missing or an extra one is a :class:`~bwssl.errors.DataError`
naming them). Files whose extension is not an image's are skipped and
counted when the folders are listed; a file that Pillow cannot decode is
skipped, logged and counted when it is read (the sample comes back as
``None``), and the trainer stops the run past ``data.max_unreadable_fraction``
(:func:`~bwssl.data.clips.check_unreadable`), as for videos.
``bwssl data summary images --root R`` decodes every file ahead of a run.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from bwssl.data.clips import ClipDataset, VideoReadError
from bwssl.data.transforms import ClipFormat
from bwssl.errors import DataError

if TYPE_CHECKING:
    from bwssl.config import DataConfig

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
"""File name endings (any case) listed as images; every other file is skipped and counted."""

SplitName = Literal["train", "test"]


class ImageReadError(VideoReadError):
    """An image file that cannot be opened or decoded (a one-frame clip that cannot be read)."""


def decode_image(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """uint8 RGB pixels (H, W, 3) of the image at ``path``.

    With ``min_side``, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale when
    both sides stay at least ``min_side`` (Pillow's ``draft``; the DCT
    scaling makes large photos several times cheaper to decode). Grayscale,
    palette and alpha images are converted to RGB. Raises
    :class:`ImageReadError` when Pillow cannot read the whole file.
    """
    try:
        with Image.open(path) as img:
            if min_side is not None and img.format == "JPEG":
                img.draft("RGB", (min_side, min_side))
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"cannot decode image: {e}") from e


def check_image(path: str) -> str:
    """Decode ``path`` fully (at a reduced scale for JPEGs); "" if it reads, else the reason."""
    try:
        decode_image(path, min_side=1)
    except ImageReadError as e:
        return str(e)
    return ""


class ImageClips(ClipDataset):
    """Base of the image datasets: every item is a clip of one frame (``T == 1``).

    Subclasses implement :meth:`read_image` (uint8 (H, W, 3)) and
    :meth:`source`; the format's frame count must be 1.
    """

    def __init__(
        self, fmt: ClipFormat, labels: np.ndarray, class_names: list[str], *, flip: bool = True
    ) -> None:
        if fmt.num_frames != 1:
            raise ValueError(
                f"image datasets make one-frame clips; got num_frames={fmt.num_frames}"
            )
        super().__init__(
            ClipFormat(1, 1, fmt.crop_size, fmt.channels, fmt.resize, fmt.resize_to),
            labels,
            class_names,
            flip=flip,
        )

    def read_image(self, index: int) -> np.ndarray:
        """uint8 RGB pixels (H, W, 3) of item ``index``; raises :class:`ImageReadError`."""
        raise NotImplementedError

    def video_length(self, index: int) -> int:
        return 1

    def read_frames(self, index: int, frames: np.ndarray) -> np.ndarray:
        return self.read_image(index)[None]  # (1, H, W, 3)


@dataclass
class ImageFolderIndex:
    """The files of an ImageFolder tree (module doc), listed but not decoded."""

    root: Path
    class_names: list[str]
    items: dict[str, list[tuple[str, int]]]
    """Per split folder name (``train``, ``val`` or ``test``): (path, label) of each image."""
    not_images: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of every skipped file that is not an image."""

    @property
    def test_folder(self) -> str:
        """The folder of the evaluation split: ``val``, or ``test`` when there is no ``val``."""
        return "val" if "val" in self.items or "test" not in self.items else "test"

    def split(self, split: SplitName) -> list[tuple[str, int]]:
        """(path, label) of the images of ``train`` or ``test`` (the ``val`` folder)."""
        name = "train" if split == "train" else self.test_folder
        if name not in self.items:
            raise DataError(
                f"{self.root} has no {name}/ folder; the image layout is "
                f"ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg"
            )
        return self.items[name]


def _list_class(folder: Path, label: int, index: ImageFolderIndex, out: list) -> None:
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_file():
            index.not_images.append((entry.path, "not a file"))
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            out.append((entry.path, label))
        else:
            index.not_images.append((entry.path, "not an image file name"))


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(
        e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
    )


def index_image_folder(root: str | Path) -> ImageFolderIndex:
    """List ``root``'s images (module doc); raises :class:`DataError` for a bad layout.

    Errors: no ``train/`` folder, no class folder in it, or an evaluation
    folder whose class folders differ from ``train``'s (both differences named).
    """
    root = Path(root)
    train = root / "train"
    if not train.is_dir():
        raise DataError(
            f"data.root={root} has no train/ folder; give the folder holding train/<class>/ and "
            f"val/<class>/ (ImageNet's layout)"
        )
    class_names = _class_folders(train)
    if not class_names:
        raise DataError(f"{train} has no class folder; the layout is ROOT/train/<class>/*.jpg")
    index = ImageFolderIndex(root, class_names, {})
    for name in ("train", "val", "test"):
        split_dir = root / name
        if not split_dir.is_dir() or (name == "test" and "val" in index.items):
            continue
        if name != "train":
            found = _class_folders(split_dir)
            missing = sorted(set(class_names) - set(found))
            extra = sorted(set(found) - set(class_names))
            if missing or extra:
                raise DataError(
                    f"{split_dir} must have the class folders of {train}: "
                    + "; ".join(
                        f"{what} {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}"
                        for what, names in (("missing", missing), ("extra", extra))
                        if names
                    )
                )
        items: list[tuple[str, int]] = []
        for label, cls in enumerate(class_names):
            _list_class(split_dir / cls, label, index, items)
        index.items[name] = items
    if index.not_images:
        shown = ", ".join(f"{p} ({r})" for p, r in index.not_images[:5])
        more = f" and {len(index.not_images) - 5} more" if len(index.not_images) > 5 else ""
        logger.warning(
            "skipping %d files of %s that are not images: %s%s (`bwssl data summary images` "
            "lists them all)",
            len(index.not_images),
            root,
            shown,
            more,
        )
    return index


class ImageFolder(ImageClips):
    """The images of one split of an ImageFolder tree (``data.name=images``).

    ``test`` is the seeded (``seed``) ``cfg.eval_fraction`` subsample of the
    ``val`` folder, as for UCF101.
    """

    def __init__(
        self,
        cfg: DataConfig,
        split: SplitName,
        *,
        seed: int = 0,
        index: ImageFolderIndex | None = None,
    ) -> None:
        if cfg.root is None:
            raise DataError("data.name=images needs data.root (the folder holding train/ and val/)")
        index = index if index is not None else index_image_folder(cfg.root)
        items = index.split(split)
        if not items:
            raise DataError(f"no image in the {split} split of {index.root}")
        if split == "test" and cfg.eval_fraction < 1.0:
            rng = np.random.default_rng(seed)
            keep = max(1, round(cfg.eval_fraction * len(items)))
            items = [items[i] for i in np.sort(rng.choice(len(items), keep, replace=False))]
        logger.info(
            "images %s %s: %d images of %d classes; %d files skipped as not images",
            index.root,
            split,
            len(items),
            len(index.class_names),
            len(index.not_images),
        )
        super().__init__(
            ClipFormat.from_config(cfg), np.array([lab for _, lab in items]), index.class_names
        )
        self.paths = [p for p, _ in items]
        self.not_images = list(index.not_images)
        """(path, reason) of the files of the tree skipped because they are not images."""

    def read_image(self, index: int) -> np.ndarray:
        fmt = self.fmt
        return decode_image(
            self.paths[index], fmt.short_side if fmt.resize == "short_side" else None
        )

    def source(self, index: int) -> str:
        return self.paths[index]


def summarize_image_folder(root: str | Path, *, workers: int = 1) -> dict[str, Any]:
    """Index and decode every image of ``root``: a JSON-ready dict of classes, counts per split
    and class, and every bad file (``{"path", "reason"}``: unreadable or not an image)."""
    index = index_image_folder(root)
    paths = [p for items in index.items.values() for p, _ in items]
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(workers) as pool:
            reasons = list(pool.map(check_image, paths, chunksize=64))
    else:
        reasons = [check_image(p) for p in paths]
    bad = dict(zip(paths, reasons, strict=True))
    splits: dict[str, Any] = {}
    for name, items in index.items.items():
        per_class = [0] * len(index.class_names)
        unreadable = 0
        for path, label in items:
            if bad[path]:
                unreadable += 1
            else:
                per_class[label] += 1
        splits[name] = {
            "images": sum(per_class),
            "unreadable": unreadable,
            "per_class": dict(zip(index.class_names, per_class, strict=True)),
        }
    bad_files = [{"path": p, "reason": r} for p, r in bad.items() if r]
    bad_files += [{"path": p, "reason": r} for p, r in index.not_images]
    return {
        "dataset": "images",
        "root": str(index.root),
        "classes": len(index.class_names),
        "class_names": index.class_names,
        "test_folder": index.test_folder if index.test_folder in index.items else None,
        "splits": splits,
        "unreadable": sum(1 for r in reasons if r),
        "not_images": len(index.not_images),
        "bad_files": bad_files,
    }
