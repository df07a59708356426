"""A user's own videos: one folder per class, optional split lists.

Layout::

    ROOT/<class>/<video>.{avi,mp4,webm,mkv,...}     the class is the folder's name
    SPLITS/train.txt                                 "<class>/<video>.mp4" per line (optional)
    SPLITS/test.txt

``SPLITS`` is ``data.split_dir``, else ``ROOT/splits`` when it exists. Classes
are the class folders in sorted order (a listed path's label is its folder,
whatever else the line says). Without split lists, the videos of each class
are sorted by name and the last fifth of them (at least one, when a class has
two or more) goes to the test split; give lists to keep related clips (same
scene, same person) on one side.
"""

from __future__ import annotations

import os
from pathlib import Path

from bwssl.config import DataConfig
from bwssl.data.transforms import ClipFormat
from bwssl.data.video_index import CaseInsensitiveTree, SplitName, VideoIndex, VideoRecord
from bwssl.data.video_io import VIDEO_EXTENSIONS
from bwssl.data.video_list import finish_index
from bwssl.errors import DataError

SPLIT_FILES: dict[SplitName, str] = {"train": "train.txt", "test": "test.txt"}
TEST_SHARE = 5
"""Without split lists, one video in this many (the last by name, per class) is a test video."""


def read_list_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file (any newline convention, a BOM dropped)."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def class_videos(root: Path) -> dict[str, list[str]]:
    """Class folder name -> sorted video file names under it (hidden entries skipped)."""
    out: dict[str, list[str]] = {}
    for cls in sorted(os.scandir(root), key=lambda e: e.name):
        if cls.is_dir() and not cls.name.startswith("."):
            names = sorted(
                e.name
                for e in os.scandir(cls.path)
                if e.is_file()
                and not e.name.startswith(".")
                and e.name.lower().endswith(VIDEO_EXTENSIONS)
            )
            if names:
                out[cls.name] = names
    return out


def index_folder(
    cfg: DataConfig, *, progress: bool = True, workers: int | None = None
) -> VideoIndex:
    """Find the class folders (and split lists) under ``data.root`` and probe every video."""
    root = Path(str(cfg.root))
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder; give the folder of class folders")
    videos = class_videos(root)
    split_dir = Path(cfg.split_dir) if cfg.split_dir else root / "splits"
    if not videos:
        raise DataError(
            f"data.root={root} holds no class folder with videos "
            f"({', '.join(VIDEO_EXTENSIONS)}); the folder layout is ROOT/<class>/<video>"
        )
    class_names = sorted(videos)
    label_of = {c: i for i, c in enumerate(class_names)}
    records: list[VideoRecord] = []
    if cfg.split_dir is not None or split_dir.is_dir():
        tree = CaseInsensitiveTree(root)
        by_lower = {c.lower(): c for c in class_names}
        for split, name in SPLIT_FILES.items():
            path = split_dir / name
            if not path.is_file():
                raise DataError(
                    f"split list {path} does not exist; {split_dir} must hold train.txt and "
                    "test.txt (one '<class>/<video>' per line), or remove it to split by name"
                )
            for line in read_list_lines(path):
                listed = line.split()[0].replace("\\", "/").strip("/")
                cls = by_lower.get(listed.split("/")[0].lower()) if "/" in listed else None
                if cls is None or ".." in listed.split("/"):
                    raise DataError(
                        f"{path}: {listed!r} is not '<class>/<video>' of a class folder of {root}"
                    )
                found = tree.find(listed)
                rec = VideoRecord(listed, split, label_of[cls], found or str(root / listed))
                if found is None:
                    rec.status, rec.reason = "missing", "not found"
                records.append(rec)
        lists = split_dir
    else:
        for cls in class_names:
            names = videos[cls]
            n_test = max(1, round(len(names) / TEST_SHARE)) if len(names) >= 2 else 0
            for i, name in enumerate(names):
                split: SplitName = "test" if i >= len(names) - n_test else "train"
                records.append(
                    VideoRecord(f"{cls}/{name}", split, label_of[cls], str(root / cls / name))
                )
        lists = root
    index = VideoIndex(
        "folder", "video", root, lists, None, ClipFormat.from_config(cfg).span, class_names, records
    )
    return finish_index(
        cfg,
        index,
        hint="data.root must be the folder that holds one folder per class",
        progress=progress,
        workers=workers,
    )
