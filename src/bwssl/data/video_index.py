"""Probing a list of videos once, caching what was found, and counting what is usable.

Every dataset of labelled video files (UCF101, HMDB51, Kinetics,
Something-Something v2, a user's class folders) is a list of
:class:`VideoRecord` (listed name, split, label, path on disk). Its reader
resolves the list from the dataset's official layout; :func:`probe_records`
then probes every present file once, in parallel, and keeps the result in a
JSON cache (``<name>-<backend>-<hash of the folder>.json`` in
``data.cache_dir``, else ``$BWSSL_CACHE_DIR``, else ``~/.cache/bwssl``) keyed
by path, size and modification time, so later runs start at once.

A record ends as one of: ``ok`` (usable: at least the clip span decodes),
``short`` (fewer decodable frames than the clip span), ``unreadable`` (no
decodable frame) or ``missing`` (listed, not on disk). Usable files may be
*partial* (decoding stops at an error, or fewer frames decode than the header
claims; the decodable prefix is used) and may have a header whose frame count
disagrees with what decodes, in either direction; both are counted and listed
by ``bwssl data summary``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from bwssl.base.files import atomic_write_text
from bwssl.data.clips import VideoReadError
from bwssl.data.video_io import VideoInfo, list_frames, probe_video
from bwssl.errors import DataError

logger = logging.getLogger(__name__)

INDEX_VERSION = 2
"""Version of the cache files (2: frame counts from decoding, header count, partial files)."""
Backend = Literal["video", "frames"]
Status = Literal["ok", "short", "unreadable", "missing"]
SplitName = Literal["train", "test"]


@dataclass
class VideoRecord:
    """One listed video and what probing found."""

    listed: str
    """The video's name as its dataset lists it (a path in a split file, a YouTube id)."""
    split: SplitName
    label: int
    path: str
    """The video file (video backend) or frame folder (frames backend) on disk."""
    status: Status = "ok"
    frames: int = 0
    """Frames that decode (a partial file: its decodable prefix)."""
    reason: str = ""
    """Why the record is not ``ok`` (empty when it is)."""
    claimed: int | None = None
    """The header's frame count (None: the container states none, or a frame folder)."""
    partial: str = ""
    """Why the file holds less than it should (see :attr:`VideoInfo.partial`), else ""."""


@dataclass(frozen=True)
class ProbeResult:
    """What probing one file found; ``error`` is set when it cannot be used at all."""

    frames: int = 0
    claimed: int | None = None
    partial: str = ""
    error: str = ""


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

    def get(self, path: str, stamp: list[int]) -> ProbeResult | None:
        """The result cached for ``path`` at ``stamp``, else None."""
        hit = self.entries.get(path)
        if hit is None or hit[0] != stamp:
            return None
        return ProbeResult(int(hit[1]), hit[2], str(hit[3]), str(hit[4]))

    def put(self, path: str, stamp: list[int], result: ProbeResult) -> None:
        self.entries[path] = [stamp, result.frames, result.claimed, result.partial, result.error]
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
            logger.warning("cannot write the video index cache %s: %s", self.path, e)


def stamp_of(path: str) -> list[int]:
    """[size (0 for a folder), mtime in ns]: a cache entry is valid while these are unchanged."""
    st = os.stat(path)
    return [st.st_size if not os.path.isdir(path) else 0, st.st_mtime_ns]


def probe_path(path: str, backend: Backend) -> ProbeResult:
    """Probe a video file (:func:`~bwssl.data.video_io.probe_video`) or a frame folder."""
    try:
        if backend == "video":
            info: VideoInfo = probe_video(path)
            return ProbeResult(info.frames, info.claimed, info.partial)
        count = len(list_frames(path))
        if count == 0:
            raise VideoReadError("empty frame folder")
        return ProbeResult(count)
    except VideoReadError as e:
        return ProbeResult(error=str(e) or type(e).__name__)


def probe_records(
    records: list[VideoRecord],
    cache_file: Path,
    span: int,
    *,
    probe: Callable[[str], ProbeResult],
    desc: str,
    progress: bool = True,
    workers: int | None = None,
) -> None:
    """Probe every ``ok`` record (through the cache) and settle its status, in place.

    ``span`` is the clip span in frames: a record with fewer decodable frames
    becomes ``short``; one that cannot be decoded at all, ``unreadable``.
    """
    cache = ProbeCache(cache_file)
    todo: list[tuple[int, list[int]]] = []
    results: dict[int, ProbeResult] = {}
    for i, rec in enumerate(records):
        if rec.status != "ok":
            continue
        stamp = stamp_of(rec.path)
        hit = cache.get(rec.path, stamp)
        if hit is None:
            todo.append((i, stamp))
        else:
            results[i] = hit
    if todo:
        n_workers = workers or min(16, 2 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(n_workers) as pool:
            found = pool.map(probe, [records[i].path for i, _ in todo])
            bar = tqdm(
                found,
                total=len(todo),
                desc=desc,
                unit="video",
                disable=not progress or len(todo) < 100,
            )
            for (i, stamp), result in zip(todo, bar, strict=True):
                cache.put(records[i].path, stamp, result)
                results[i] = result
        cache.save()
    for i, r in results.items():
        rec = records[i]
        rec.frames, rec.claimed, rec.partial = r.frames, r.claimed, r.partial
        if r.error:
            rec.status, rec.reason = "unreadable", r.error
            logger.warning("unreadable video %s: %s", rec.path, r.error)
        elif rec.frames < span:
            rec.status, rec.reason = "short", f"{rec.frames} frames < clip span {span}"
        elif rec.partial:
            logger.info("partial video %s: %d frames used (%s)", rec.path, rec.frames, rec.partial)


class CaseInsensitiveTree:
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


@dataclass
class VideoIndex:
    """Every listed video of one dataset's train and test lists, probed."""

    dataset: str
    """The dataset's name (``data.name``)."""
    backend: Backend
    base: Path
    """The folder the videos (or frame folders) were looked for in."""
    lists: Path
    """The split lists or annotation files the records come from."""
    split: int | None
    """The official split number, for datasets that have several (else None)."""
    span: int
    """Clip span in frames: shorter videos are excluded."""
    class_names: list[str]
    records: list[VideoRecord] = field(default_factory=list)
    missing_fatal: bool = True
    """Whether missing files stop the build (unless ``data.allow_missing``); False for
    datasets where missing files are the rule (Kinetics: videos taken down)."""

    def select(self, split: SplitName, status: Status | None = "ok") -> list[VideoRecord]:
        return [
            r for r in self.records if r.split == split and (status is None or r.status == status)
        ]

    def count(self, status: Status, split: SplitName | None = None) -> int:
        return sum(r.status == status and (split is None or r.split == split) for r in self.records)

    def partial(self) -> list[VideoRecord]:
        """Probed records that hold less than they should (:attr:`VideoRecord.partial`)."""
        return [r for r in self.records if r.status in ("ok", "short") and r.partial]

    def header_disagrees(self) -> list[VideoRecord]:
        """Probed records whose header frame count differs from the frames that decode."""
        return [
            r
            for r in self.records
            if r.status in ("ok", "short") and r.claimed is not None and r.claimed != r.frames
        ]

    def summary(self) -> dict[str, Any]:
        """The JSON object of ``bwssl data summary NAME``."""

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
            "dataset": self.dataset,
            "backend": self.backend,
            "base": str(self.base),
            "split_dir": str(self.lists),
            "split": self.split,
            "clip_span_frames": self.span,
            "classes": len(self.class_names),
            "train_videos": per_split["train"]["videos"],
            "test_videos": per_split["test"]["videos"],
            "excluded_short": self.count("short"),
            "unreadable": self.count("unreadable"),
            "missing": self.count("missing"),
            "partial": len(self.partial()),
            "header_disagrees": len(self.header_disagrees()),
            "per_split": per_split,
            "class_names": self.class_names,
            "short_files": [f"{r.listed} ({r.frames} frames)" for r in of("short")],
            "unreadable_files": [f"{r.listed}: {r.reason}" for r in of("unreadable")],
            "missing_files": [r.listed for r in of("missing")],
            "partial_files": [
                f"{r.listed}: {r.frames} frames ({r.partial})" for r in self.partial()
            ],
            "header_disagrees_files": [
                f"{r.listed}: header claims {r.claimed} frames, {r.frames} decode"
                for r in self.header_disagrees()
            ],
        }

    def check(self, allow_missing: bool, max_unreadable_fraction: float) -> None:
        """Raise :class:`DataError` for missing files (all named) or too many unreadable ones."""
        missing = [r for r in self.records if r.status == "missing"]
        if missing:
            names = [f"{r.listed} ({r.split})" for r in missing]
            more = ""
            if len(names) > 20:
                logger.warning("all %d missing files:\n  %s", len(names), "\n  ".join(names))
                more = f" and {len(names) - 20} more (all listed in the log above)"
            where = (
                "data.frames_root (the output of `bwssl data extract-frames`)"
                if self.backend == "frames"
                else "data.root"
            )
            text = (
                f"{len(missing)} of {len(self.records)} videos listed in {self.lists}"
                f"{f' (split {self.split})' if self.split is not None else ''} are missing "
                f"under {self.base}: {', '.join(names[:20])}{more}. Check {where}; `bwssl data "
                f"summary {self.dataset} --json` lists them too; or set data.allow_missing=true "
                f"to go on without them"
            )
            if not allow_missing and self.missing_fatal:
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
