"""Kinetics (400, 600, 700) from its official annotations and the usual clip files.

Layout::

    ANNOTATIONS/train.csv       label,youtube_id,time_start,time_end,split
    ANNOTATIONS/validate.csv    (val.csv is accepted too)
    ROOT/train/<youtube_id>_<time_start:06d>_<time_end:06d>.mp4
    ROOT/train/<label>/<youtube_id>_...mp4        per-class subfolders are accepted too
    ROOT/val/...                                  (or ROOT/validate/)

``ANNOTATIONS`` is ``data.split_dir``, else ``ROOT/annotations``, else
``ROOT``. The train split is ``train.csv``, the test split the validation
set (the official test set has no public labels). Classes are the sorted
labels of both files. Clips that are missing (videos taken down on YouTube
are common) are counted and listed, never fatal; only a root holding none of
the listed clips stops the build. A file is found by its name whatever its
extension (.mp4, .webm, .mkv) or folder under the split folder.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from bwssl.config import DataConfig
from bwssl.data.transforms import ClipFormat
from bwssl.data.video_index import SplitName, VideoIndex, VideoRecord
from bwssl.data.video_io import VIDEO_EXTENSIONS
from bwssl.data.video_list import finish_index
from bwssl.errors import DataError

COLUMNS = ("label", "youtube_id", "time_start", "time_end")
"""CSV columns read (the ``split`` column is implied by the file)."""
ANNOTATION_FILES: dict[SplitName, tuple[str, ...]] = {
    "train": ("train.csv",),
    "test": ("validate.csv", "val.csv"),
}
SPLIT_FOLDERS: dict[SplitName, tuple[str, ...]] = {
    "train": ("train",),
    "test": ("val", "validate", "valid", "validation"),
}


def clip_name(youtube_id: str, start: float, end: float) -> str:
    """The file stem of a clip: ``<youtube_id>_<start:06d>_<end:06d>`` (seconds)."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def annotations_dir(cfg: DataConfig) -> Path:
    if cfg.split_dir is not None:
        return Path(cfg.split_dir)
    root = Path(str(cfg.root))
    return root / "annotations" if (root / "annotations").is_dir() else root


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """[(label, clip file stem)] of one annotation CSV."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(
                f"{path}: columns {absent} are missing (has {reader.fieldnames}); the Kinetics "
                f"annotation CSV has {', '.join(COLUMNS)}, split"
            )
        out = []
        for n, row in enumerate(reader, start=2):
            try:
                name = clip_name(
                    row["youtube_id"], float(row["time_start"]), float(row["time_end"])
                )
            except (TypeError, ValueError) as e:
                raise DataError(f"{path} line {n}: cannot read the clip times ({e})") from e
            out.append((row["label"].strip(), name))
    return out


def clip_files(folder: Path) -> dict[str, str]:
    """Clip file stem -> path, for files in ``folder`` and in its subfolders (one level)."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for entry in os.scandir(folder):
        if entry.is_dir() and not entry.name.startswith("."):
            for sub in os.scandir(entry.path):
                if sub.is_file() and sub.name.lower().endswith(VIDEO_EXTENSIONS):
                    out.setdefault(Path(sub.name).stem, sub.path)
        elif entry.is_file() and entry.name.lower().endswith(VIDEO_EXTENSIONS):
            out.setdefault(Path(entry.name).stem, entry.path)
    return out


def index_kinetics(
    cfg: DataConfig, *, progress: bool = True, workers: int | None = None
) -> VideoIndex:
    """Read the train and validation annotations and probe every clip found under ``data.root``."""
    root = Path(str(cfg.root))
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder; give the Kinetics clip folder")
    lists = annotations_dir(cfg)
    listed: dict[SplitName, list[tuple[str, str]]] = {}
    for split, names in ANNOTATION_FILES.items():
        path = next((lists / n for n in names if (lists / n).is_file()), None)
        if path is None:
            raise DataError(
                f"no {' or '.join(names)} in {lists}; data.split_dir (default ROOT/annotations, "
                "else ROOT) must hold the official Kinetics annotation CSVs"
            )
        listed[split] = read_annotations(path)
    class_names = sorted({label for items in listed.values() for label, _ in items})
    label_of = {c: i for i, c in enumerate(class_names)}
    records = []
    for split, items in listed.items():
        folder = next((root / n for n in SPLIT_FOLDERS[split] if (root / n).is_dir()), root / split)
        files = clip_files(folder)
        for label, name in items:
            found = files.get(name)
            rec = VideoRecord(name, split, label_of[label], found or str(folder / f"{name}.mp4"))
            if found is None:
                rec.status, rec.reason = "missing", "not found"
            records.append(rec)
    index = VideoIndex(
        "kinetics",
        "video",
        root,
        lists,
        None,
        ClipFormat.from_config(cfg).span,
        class_names,
        records,
        missing_fatal=False,
    )
    return finish_index(
        cfg,
        index,
        hint="data.root must hold train/ and val/ (or validate/) with the clips named "
        "<youtube_id>_<start:06d>_<end:06d>.mp4",
        min_found=0.0,
        progress=progress,
        workers=workers,
    )
