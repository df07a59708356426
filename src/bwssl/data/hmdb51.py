"""HMDB51 from its official layout: class folders of AVI files and the three official splits.

Layout::

    ROOT/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi       one folder per class
    SPLITS/brush_hair_test_split1.txt     "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1"

``ROOT`` may also be the folder holding ``hmdb51_org/`` (how the archive is
often unpacked). ``SPLITS`` is ``data.split_dir``, else
``ROOT/testTrainMulti_7030_splits`` (the official split archive's folder),
else ``ROOT/splits``. Each split file lists every video of its class with a
mark: 1 train, 2 test, 0 unused (left out). Split ``k`` is ``data.split``.
The class of a video is the split file's class; the 51 classes are sorted by
name.
"""

from __future__ import annotations

from pathlib import Path

from bwssl.config import DataConfig
from bwssl.data.folder import read_list_lines
from bwssl.data.transforms import ClipFormat
from bwssl.data.video_index import CaseInsensitiveTree, SplitName, VideoIndex, VideoRecord
from bwssl.data.video_list import finish_index
from bwssl.errors import DataError

SPLIT_FOLDERS = ("testTrainMulti_7030_splits", "splits")
"""Folders under data.root looked in for the split files (when data.split_dir is not set)."""
VIDEO_FOLDERS = ("hmdb51_org", "hmdb51")
"""Folders under data.root looked in for the class folders (when the root has none)."""
MARKS: dict[str, SplitName | None] = {"1": "train", "2": "test", "0": None}


def split_dir_of(cfg: DataConfig) -> Path:
    """``data.split_dir``, else the first of :data:`SPLIT_FOLDERS` under the root that exists."""
    if cfg.split_dir is not None:
        return Path(cfg.split_dir)
    root = Path(str(cfg.root))
    for name in SPLIT_FOLDERS:
        if (root / name).is_dir():
            return root / name
    return root / SPLIT_FOLDERS[0]


def read_splits(split_dir: Path, split: int) -> dict[str, list[tuple[str, SplitName]]]:
    """Class name -> [(video file name, split)] from the ``*_test_split{split}.txt`` files."""
    suffix = f"_test_split{split}.txt"
    files = sorted(split_dir.glob(f"*{suffix}")) if split_dir.is_dir() else []
    if not files:
        raise DataError(
            f"no HMDB51 split file *{suffix} in {split_dir}; data.split_dir (default "
            f"ROOT/{SPLIT_FOLDERS[0]}) must hold the official <class>_test_split<k>.txt files"
        )
    out: dict[str, list[tuple[str, SplitName]]] = {}
    for f in files:
        entries = []
        for line in read_list_lines(f):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in MARKS or "/" in parts[0] or "\\" in parts[0]:
                raise DataError(f"{f}: cannot parse line {line!r} (expected '<video>.avi 0|1|2')")
            mark = MARKS[parts[1]]
            if mark is not None:
                entries.append((parts[0], mark))
        out[f.name[: -len(suffix)]] = entries
    return out


def index_hmdb51(
    cfg: DataConfig, *, progress: bool = True, workers: int | None = None
) -> VideoIndex:
    """Parse split ``data.split`` and probe every train and test video under ``data.root``."""
    root = Path(str(cfg.root))
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder; give the HMDB51 video folder")
    split_dir = split_dir_of(cfg)
    splits = read_splits(split_dir, cfg.split)
    class_names = sorted(splits)
    base = root
    if not any((root / c).is_dir() for c in class_names):
        base = next(
            (root / v for v in VIDEO_FOLDERS if any((root / v / c).is_dir() for c in class_names)),
            root,
        )
    tree = CaseInsensitiveTree(base)
    records = []
    for label, cls in enumerate(class_names):
        for name, split in splits[cls]:
            listed = f"{cls}/{name}"
            found = tree.find(listed)
            rec = VideoRecord(listed, split, label, found or str(base / listed))
            if found is None:
                rec.status, rec.reason = "missing", "not found"
            records.append(rec)
    index = VideoIndex(
        "hmdb51",
        "video",
        base,
        split_dir,
        cfg.split,
        ClipFormat.from_config(cfg).span,
        class_names,
        records,
    )
    return finish_index(
        cfg,
        index,
        hint="data.root must hold one folder per class (<class>/<video>.avi)",
        progress=progress,
        workers=workers,
    )
