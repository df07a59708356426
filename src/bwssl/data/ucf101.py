"""UCF101 from its official layout: encoded videos (PyAV) or pre-extracted frame folders.

Layout::

    ROOT/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi     one folder per class
    ROOT/ucfTrainTestlist/classInd.txt                    "1 ApplyEyeMakeup" (1-based)
    ROOT/ucfTrainTestlist/trainlist01.txt                 "ApplyEyeMakeup/v_..._c01.avi 1"
    ROOT/ucfTrainTestlist/testlist01.txt                  "ApplyEyeMakeup/v_..._c01.avi"
    FRAMES/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01/000001.jpg ...   (extract-frames)

Labels come from classInd and the class folder of each listed path, never from
file names (class HandstandPushups holds files named ``v_HandStandPushups_*``).
Listed paths that differ from the disk only in letter case are found anyway.

Before a dataset is built, every listed video is probed once and cached
(:mod:`bwssl.data.video_index`): videos shorter than the clip span are
excluded and counted; unreadable ones are excluded, logged and counted;
missing ones stop the build, all named at once (unless ``data.allow_missing``).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from bwssl.config import DataConfig
from bwssl.data.transforms import ClipFormat
from bwssl.data.video_index import (
    Backend,
    CaseInsensitiveTree,
    SplitName,
    VideoIndex,
    VideoRecord,
    probe_path,
    probe_records,
)
from bwssl.data.video_io import UNREADABLE_SUFFIX
from bwssl.data.video_list import VideoListDataset, index_cache_file
from bwssl.errors import DataError

logger = logging.getLogger(__name__)

SPLIT_DIR_NAME = "ucfTrainTestlist"


# --- the split files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitLists:
    """The contents of classInd.txt and one split's train and test lists."""

    class_names: list[str]
    """Class index (0-based) -> name, from classInd.txt."""
    train: list[tuple[str, int]]
    """(listed path, 0-based label) of trainlist0N.txt."""
    test: list[tuple[str, int]]
    """(listed path, 0-based label) of testlist0N.txt."""


def split_dir_of(cfg: DataConfig) -> Path:
    """The ucfTrainTestlist folder: ``data.split_dir``, else under root, else under frames_root."""
    if cfg.split_dir is not None:
        return Path(cfg.split_dir)
    for base in (cfg.root, cfg.frames_root):
        if base is not None and (Path(base) / SPLIT_DIR_NAME).is_dir():
            return Path(base) / SPLIT_DIR_NAME
    base = cfg.root if cfg.root is not None else cfg.frames_root
    return Path(str(base)) / SPLIT_DIR_NAME


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(
            f"UCF101 split file {path} does not exist; data.split_dir (default "
            f"ROOT/{SPLIT_DIR_NAME}) must hold classInd.txt, trainlist0N.txt and "
            f"testlist0N.txt from the official UCF101 train/test split archive"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_split_lists(split_dir: Path, split: int) -> SplitLists:
    """Parse classInd.txt, trainlist0{split}.txt and testlist0{split}.txt.

    The label of a listed path is its class folder's index in classInd; a
    train-list label that disagrees with the folder raises :class:`DataError`.
    """
    names: dict[int, str] = {}
    for line in _lines(split_dir / "classInd.txt"):
        idx, _, name = line.partition(" ")
        if not idx.isdigit() or not name.strip():
            raise DataError(
                f"{split_dir / 'classInd.txt'}: cannot parse line {line!r} (expected 'INDEX NAME')"
            )
        names[int(idx)] = name.strip()
    if sorted(names) != list(range(1, len(names) + 1)):
        raise DataError(f"{split_dir / 'classInd.txt'}: class indices must run 1..N")
    class_names = [names[i] for i in range(1, len(names) + 1)]
    by_folder = {n.lower(): i for i, n in enumerate(class_names)}

    def parse(file: str, with_label: bool) -> list[tuple[str, int]]:
        out, unknown, disagree, outside = [], [], [], []
        for line in _lines(split_dir / file):
            parts = line.split()
            raw = parts[0].replace("\\", "/")
            listed = raw.strip("/")
            if raw.startswith("/") or any(p in ("", ".", "..") for p in listed.split("/")):
                outside.append(raw)  # would read a file outside the dataset's class folders
                continue
            folder = listed.split("/")[0].lower()
            if folder not in by_folder:
                unknown.append(listed)
                continue
            label = by_folder[folder]
            if with_label and len(parts) > 1 and int(parts[1]) - 1 != label:
                disagree.append(f"{listed} (label {parts[1]}, folder says {label + 1})")
            out.append((listed, label))
        if outside:
            raise DataError(
                f"{split_dir / file}: {len(outside)} listed paths leave the dataset folder "
                f"(absolute, or with '..' or '.' parts), e.g. {', '.join(outside[:5])}; "
                "refusing them: use the official split files"
            )
        if unknown or disagree:
            bad = unknown[:5] + disagree[:5]
            raise DataError(
                f"{split_dir / file}: {len(unknown)} paths in no class of classInd.txt"
                f" and {len(disagree)} labels that contradict their class folder, "
                f"e.g. {', '.join(bad)}; use the classInd.txt of the same split "
                f"archive"
            )
        return out

    return SplitLists(
        class_names, parse(f"trainlist0{split}.txt", True), parse(f"testlist0{split}.txt", False)
    )


# --- finding the listed files ---------------------------------------------------------------


OFFICIAL_FOLDERS = ("UCF-101", "UCF101")
"""Folders the official video archive unpacks to, looked for under data.root."""


def class_folder_base(root: Path, class_names: list[str]) -> tuple[Path, list[Path]]:
    """The folder that holds the class folders: ``root`` itself, or ``root/UCF-101`` (how the
    official archive unpacks, beside ``ucfTrainTestlist/``); returns it and every folder
    looked at."""
    wanted = {c.lower() for c in class_names}
    searched = []
    for base in (root, *(root / name for name in OFFICIAL_FOLDERS)):
        if not base.is_dir():
            continue
        searched.append(base)
        if any(e.is_dir() and e.name.lower() in wanted for e in os.scandir(base)):
            return base, searched
    return root, searched


def index_ucf101(
    cfg: DataConfig, *, progress: bool = True, workers: int | None = None
) -> VideoIndex:
    """Parse the split files and probe every listed video (cached; see the module doc)."""
    backend: Backend = "frames" if cfg.frames_root is not None else "video"
    base = Path(str(cfg.frames_root if backend == "frames" else cfg.root))
    if not base.is_dir():
        key = "data.frames_root" if backend == "frames" else "data.root"
        raise DataError(
            f"{key}={base} is not a folder; give the UCF101 "
            f"{'frame' if backend == 'frames' else 'video'} folder (one subfolder "
            f"per class)"
        )
    split_dir = split_dir_of(cfg)
    lists = read_split_lists(split_dir, cfg.split)
    fmt = ClipFormat.from_config(cfg)
    searched = [base]
    if backend == "video":
        base, searched = class_folder_base(base, lists.class_names)
    tree = CaseInsensitiveTree(base)
    records: list[VideoRecord] = []
    splits: tuple[tuple[SplitName, list[tuple[str, int]]], ...] = (
        ("train", lists.train),
        ("test", lists.test),
    )
    listed_total = sum(len(items) for _, items in splits)
    found_total = 0
    for split, items in splits:
        for listed, label in items:
            rel = listed if backend == "video" else str(Path(listed).with_suffix(""))
            found = tree.find(rel)
            rec = VideoRecord(listed, split, label, found or str(base / rel))
            found_total += found is not None
            if found is None:
                marker = tree.find(rel + UNREADABLE_SUFFIX) if backend == "frames" else None
                if marker is not None:
                    rec.status = "unreadable"
                    rec.reason = Path(marker).read_text(errors="replace").strip() or "unreadable"
                else:
                    rec.status, rec.reason = "missing", "not found"
            records.append(rec)
    if listed_total and found_total < listed_total / 2:
        where = " and ".join(str(p) for p in searched)
        key = "data.frames_root" if backend == "frames" else "data.root"
        raise DataError(
            f"{listed_total - found_total} of the {listed_total} videos listed in {split_dir} "
            f"(split {cfg.split}) are not in {where}: {key} must be the folder that holds "
            "one subfolder per class (the official archive unpacks to UCF-101/<class>/*.avi, "
            "which is found too when data.root is the folder that holds UCF-101/)"
        )

    probe_records(
        records,
        index_cache_file(cfg, "ucf101", backend, base),
        fmt.span,
        probe=functools.partial(probe_path, backend=backend),
        desc=f"indexing UCF101 ({backend})",
        progress=progress,
        workers=workers,
    )
    return VideoIndex(
        "ucf101", backend, base, split_dir, cfg.split, fmt.span, lists.class_names, records
    )


# --- the dataset -------------------------------------------------------------------------------


class UCF101(VideoListDataset):
    """UCF101 clips of one split (``train`` or the seeded ``eval_fraction`` of ``test``)."""

    def __init__(
        self, cfg: DataConfig, split: SplitName, *, seed: int = 0, index: VideoIndex | None = None
    ) -> None:
        super().__init__(cfg, split, index if index is not None else index_ucf101(cfg), seed=seed)
