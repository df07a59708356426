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

Before a dataset is built, every listed video is probed once (frame count,
readability) in parallel; the result is cached in a JSON index
(``ucf101-<backend>-<hash of the folder>.json`` in ``data.cache_dir``, else
``$BWSSL_CACHE_DIR``, else ``~/.cache/bwssl``), keyed by path, size and
modification time, so later runs start at once. Videos shorter than the clip
span are excluded and counted; unreadable ones are excluded, logged and
counted; missing ones stop the build, all named at once (unless
``data.allow_missing``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from bwssl.base.files import atomic_write_text
from bwssl.config import DataConfig
from bwssl.data.clips import ClipDataset, VideoReadError
from bwssl.data.transforms import ClipFormat
from bwssl.data.video_io import (
    UNREADABLE_SUFFIX,
    list_frames,
    probe_video,
    read_frame_folder,
    read_video,
)
from bwssl.errors import DataError

logger = logging.getLogger(__name__)

SPLIT_DIR_NAME = "ucfTrainTestlist"
INDEX_VERSION = 1
Backend = Literal["video", "frames"]
Status = Literal["ok", "short", "unreadable", "missing"]
SplitName = Literal["train", "test"]


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


# --- probing and the cached index --------------------------------------------------------------


@dataclass
class VideoRecord:
    """One listed video and what probing found."""

    listed: str
    """Path as listed in the split file, e.g. ``HandstandPushups/v_HandStandPushups_g01_c01.avi``."""
    split: SplitName
    label: int
    path: str
    """The video file (video backend) or frame folder (frames backend) on disk."""
    status: Status = "ok"
    frames: int = 0
    reason: str = ""


def cache_root(cache_dir: str | None) -> Path:
    """Where indexes go: ``cache_dir``, $BWSSL_CACHE_DIR, $XDG_CACHE_HOME/bwssl or ~/.cache/bwssl."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("BWSSL_CACHE_DIR"):
        return Path(os.environ["BWSSL_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bwssl"


class ProbeCache:
    """A JSON file of probe results keyed by absolute path and (size, mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[Any]] = {}
        self.dirty = False
        try:
            data = json.loads(path.read_text())
            if data.get("version") == INDEX_VERSION:
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass

    def get(self, path: str, stamp: list[int]) -> tuple[int, str] | None:
        """(frames, error) cached for ``path`` at ``stamp``, else None."""
        hit = self.entries.get(path)
        if hit is None or hit[0] != stamp:
            return None
        return int(hit[1]), str(hit[2])

    def put(self, path: str, stamp: list[int], frames: int, error: str) -> None:
        self.entries[path] = [stamp, frames, error]
        self.dirty = True

    def save(self) -> None:
        """Write atomically; a read-only cache folder only costs a rescan next time."""
        if not self.dirty:
            return
        try:
            atomic_write_text(
                self.path, json.dumps({"version": INDEX_VERSION, "entries": self.entries})
            )
            self.dirty = False
        except OSError as e:
            logger.warning("cannot write the UCF101 index cache %s: %s", self.path, e)


def _stamp(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size if not os.path.isdir(path) else 0, st.st_mtime_ns]


def _probe_frames_folder(path: str) -> int:
    count = len(list_frames(path))
    if count == 0:
        raise VideoReadError("empty frame folder")
    return count


def _probe(path: str, backend: Backend) -> tuple[int, str]:
    try:
        if backend == "video":
            return probe_video(path).frames, ""
        return _probe_frames_folder(path), ""
    except VideoReadError as e:
        return 0, str(e) or type(e).__name__


class _CaseInsensitiveTree:
    """Two-level listing of a folder (CLASS/ENTRY), to find listed paths whatever their case."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.lower: dict[str, str] = {}
        if not base.is_dir():
            return
        for cls in os.scandir(base):
            if cls.is_dir() and not cls.name.startswith("."):
                for entry in os.scandir(cls.path):
                    rel = f"{cls.name}/{entry.name}"
                    self.lower.setdefault(rel.lower(), rel)

    def find(self, rel: str) -> str | None:
        """The path on disk of ``rel`` (exact, else by case-insensitive match), or None."""
        exact = self.base / rel
        if exact.exists():
            return str(exact)
        hit = self.lower.get(rel.lower())
        return str(self.base / hit) if hit is not None else None


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


@dataclass
class UCF101Index:
    """Every video listed in one split's train and test lists, probed."""

    backend: Backend
    base: Path
    split_dir: Path
    split: int
    span: int
    class_names: list[str]
    records: list[VideoRecord] = field(default_factory=list)

    def select(self, split: SplitName, status: Status | None = "ok") -> list[VideoRecord]:
        return [
            r for r in self.records if r.split == split and (status is None or r.status == status)
        ]

    def count(self, status: Status, split: SplitName | None = None) -> int:
        return sum(r.status == status and (split is None or r.split == split) for r in self.records)

    def summary(self) -> dict[str, Any]:
        """The JSON object of ``bwssl data summary ucf101``."""

        def of(status: Status) -> list[VideoRecord]:
            return [r for r in self.records if r.status == status]

        per_split = {
            s: {
                "listed": len(self.select(s, None)),
                "videos": len(self.select(s)),
                "excluded_short": self.count("short", s),
                "unreadable": self.count("unreadable", s),
                "missing": self.count("missing", s),
            }
            for s in ("train", "test")
        }
        return {
            "dataset": "ucf101",
            "backend": self.backend,
            "base": str(self.base),
            "split_dir": str(self.split_dir),
            "split": self.split,
            "clip_span_frames": self.span,
            "classes": len(self.class_names),
            "train_videos": per_split["train"]["videos"],
            "test_videos": per_split["test"]["videos"],
            "excluded_short": self.count("short"),
            "unreadable": self.count("unreadable"),
            "missing": self.count("missing"),
            "per_split": per_split,
            "class_names": self.class_names,
            "short_files": [f"{r.listed} ({r.frames} frames)" for r in of("short")],
            "unreadable_files": [f"{r.listed}: {r.reason}" for r in of("unreadable")],
            "missing_files": [r.listed for r in of("missing")],
        }

    def check(self, allow_missing: bool, max_unreadable_fraction: float) -> None:
        """Raise :class:`DataError` for missing files (all named) or too many unreadable ones."""
        missing = [r for r in self.records if r.status == "missing"]
        if missing:
            where = (
                "data.frames_root (the output of `bwssl data extract-frames`)"
                if self.backend == "frames"
                else "data.root (one folder per class)"
            )
            names = [f"{r.listed} ({r.split})" for r in missing]
            more = ""
            if len(names) > 20:
                logger.warning("all %d missing files:\n  %s", len(names), "\n  ".join(names))
                more = f" and {len(names) - 20} more (all listed in the log above)"
            text = (
                f"{len(missing)} of {len(self.records)} videos listed in {self.split_dir} "
                f"(split {self.split}) are missing under {self.base}: "
                f"{', '.join(names[:20])}{more}. Check {where}; `bwssl data summary ucf101 "
                f"--json` lists them too; or set data.allow_missing=true to go on without "
                f"them"
            )
            if not allow_missing:
                raise DataError(text)
            logger.warning("%s", text)
        present = [r for r in self.records if r.status != "missing"]
        bad = [r for r in present if r.status == "unreadable"]
        if present and len(bad) > max_unreadable_fraction * len(present):
            shown = "; ".join(f"{r.listed}: {r.reason}" for r in bad[:10])
            raise DataError(
                f"{len(bad)} of {len(present)} listed videos under {self.base} cannot be read "
                f"({len(bad) / len(present):.1%}, more than data.max_unreadable_fraction="
                f"{max_unreadable_fraction}): {shown}{' ...' if len(bad) > 10 else ''}. "
                f"Replace those files, or raise data.max_unreadable_fraction"
            )


def index_ucf101(
    cfg: DataConfig, *, progress: bool = True, workers: int | None = None
) -> UCF101Index:
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
    tree = _CaseInsensitiveTree(base)
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

    digest = hashlib.sha1(str(base.resolve()).encode()).hexdigest()[:12]
    cache = ProbeCache(cache_root(cfg.cache_dir) / f"ucf101-{backend}-{digest}.json")
    todo: list[tuple[VideoRecord, list[int]]] = []
    for rec in records:
        if rec.status != "ok":
            continue
        stamp = _stamp(rec.path)
        hit = cache.get(rec.path, stamp)
        if hit is None:
            todo.append((rec, stamp))
        else:
            rec.frames, rec.reason = hit
    if todo:
        n_workers = workers or min(16, 2 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(n_workers) as pool:
            results = pool.map(
                functools.partial(_probe, backend=backend), [rec.path for rec, _ in todo]
            )
            bar = tqdm(
                results,
                total=len(todo),
                desc=f"indexing UCF101 ({backend})",
                unit="video",
                disable=not progress or len(todo) < 100,
            )
            for (rec, stamp), (frames, error) in zip(todo, bar, strict=True):
                rec.frames, rec.reason = frames, error
                cache.put(rec.path, stamp, frames, error)
        cache.save()
    for rec in records:
        if rec.status != "ok":
            continue
        if rec.reason:
            rec.status = "unreadable"
            logger.warning("unreadable video %s: %s", rec.path, rec.reason)
        elif rec.frames < fmt.span:
            rec.status, rec.reason = "short", f"{rec.frames} frames < clip span {fmt.span}"
    return UCF101Index(backend, base, split_dir, cfg.split, fmt.span, lists.class_names, records)


# --- the dataset -------------------------------------------------------------------------------


class UCF101(ClipDataset):
    """UCF101 clips of one split (``train`` or the seeded ``eval_fraction`` of ``test``)."""

    def __init__(
        self, cfg: DataConfig, split: SplitName, *, seed: int = 0, index: UCF101Index | None = None
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        index = index if index is not None else index_ucf101(cfg)
        index.check(cfg.allow_missing, cfg.max_unreadable_fraction)
        records = index.select(split)
        if not records:
            raise DataError(
                f"no usable {split} video in {index.base} (split {index.split}): "
                f"{index.count('short', split)} shorter than the clip span of "
                f"{index.span} frames, {index.count('unreadable', split)} unreadable, "
                f"{index.count('missing', split)} missing"
            )
        if split == "test" and cfg.eval_fraction < 1.0:
            rng = np.random.default_rng(seed)
            keep = max(1, round(cfg.eval_fraction * len(records)))
            records = [records[i] for i in np.sort(rng.choice(len(records), keep, replace=False))]
        logger.info(
            "UCF101 split %d %s: %d videos (%s backend); excluded: %d shorter than %d "
            "frames, %d unreadable, %d missing",
            index.split,
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
