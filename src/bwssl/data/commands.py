"""``bwssl data``: prepare and check video data before spending GPU hours on it.

- ``bwssl data extract-frames --root R --out F [--workers N]``: decode every
  video of a class-folder tree into JPEG frame folders (F/CLASS/VIDEO/000001.jpg),
  in parallel with a progress bar. Resumable: finished videos are skipped;
  each video's frames are written to a temporary folder renamed when
  complete. A video that cannot be decoded gets F/CLASS/VIDEO.unreadable (the
  reason) instead, so the frame backend counts it as unreadable rather than
  missing (delete the marker to retry). The split folder is copied along.
- ``bwssl data summary NAME --root R [--split N] [--split-dir S] --json``
  (NAME: ucf101, hmdb51, kinetics, ssv2, folder; ucf101 also ``--frames-root
  F``): index a dataset and print its counts (classes, usable train/test
  videos, excluded short, unreadable, missing, partial, header disagreeing
  with the decoded frames) and the files behind them.
- ``bwssl data summary images --root R [--workers N] --json``: list and
  decode every image of an ImageFolder tree; classes, counts per split and
  class, and every bad file (path and reason: unreadable, not an image).
  ``cifar10`` / ``cifar100``: classes and counts per split of the pickles.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bwssl.base.files import atomic_write_text
from bwssl.config import DataConfig
from bwssl.data.build import VIDEO_DATASETS, index_dataset
from bwssl.data.cifar import summarize_cifar
from bwssl.data.clips import VideoReadError
from bwssl.data.images import summarize_image_folder
from bwssl.data.ucf101 import SPLIT_DIR_NAME
from bwssl.data.video_io import UNREADABLE_SUFFIX, VIDEO_EXTENSIONS, extract_frames
from bwssl.errors import DataError


@dataclass
class ExtractReport:
    """What :func:`extract_frame_tree` did."""

    extracted: int = 0
    already_done: int = 0
    unreadable: list[str] = field(default_factory=list)
    """``CLASS/VIDEO: reason`` of each video that could not be decoded (this run)."""


def _extract_one(src: str, dst: str, quality: int, short_side: int | None) -> tuple[int, str]:
    """Worker: extract one video; on failure write the ``.unreadable`` marker. (frames, error)."""
    try:
        return extract_frames(src, dst, quality=quality, short_side=short_side), ""
    except VideoReadError as e:
        atomic_write_text(dst + UNREADABLE_SUFFIX, f"{e}\n")
        return 0, str(e)


def find_videos(root: Path) -> list[Path]:
    """Video files one level below ``root`` (ROOT/CLASS/VIDEO.ext), sorted."""
    out = []
    for cls in sorted(os.scandir(root), key=lambda e: e.name):
        if cls.is_dir() and not cls.name.startswith(".") and cls.name != SPLIT_DIR_NAME:
            out += [
                Path(e.path)
                for e in os.scandir(cls.path)
                if e.is_file() and e.name.lower().endswith(VIDEO_EXTENSIONS)
            ]
    return sorted(out)


def extract_frame_tree(
    root: Path,
    out: Path,
    *,
    workers: int = 1,
    quality: int = 90,
    short_side: int | None = None,
    progress: bool = True,
) -> ExtractReport:
    """Extract every video of ``root`` into frame folders under ``out`` (module doc)."""
    if not root.is_dir():
        raise DataError(
            f"--root {root} is not a folder; give the video folder with one subfolder per class"
        )
    out.mkdir(parents=True, exist_ok=True)
    if (root / SPLIT_DIR_NAME).is_dir() and not (out / SPLIT_DIR_NAME).exists():
        shutil.copytree(root / SPLIT_DIR_NAME, out / SPLIT_DIR_NAME)
    for stale in out.glob("*/.*.tmp-*"):  # left by an interrupted run
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    report = ExtractReport()
    todo: list[tuple[str, str, str]] = []
    for video in find_videos(root):
        dst = out / video.parent.name / video.stem
        if dst.is_dir() or Path(str(dst) + UNREADABLE_SUFFIX).exists():
            report.already_done += 1
        else:
            dst.parent.mkdir(exist_ok=True)
            todo.append((f"{video.parent.name}/{video.name}", str(video), str(dst)))
    bar = tqdm(
        total=len(todo),
        desc="extracting frames",
        unit="video",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )

    def record(rel: str, error: str) -> None:
        if error:
            report.unreadable.append(f"{rel}: {error}")
        else:
            report.extracted += 1
        bar.update(1)

    if workers <= 1:
        for rel, src, dst in todo:
            record(rel, _extract_one(src, dst, quality, short_side)[1])
    else:
        pool = ProcessPoolExecutor(workers)
        try:
            futures: dict[Future[tuple[int, str]], str] = {
                pool.submit(_extract_one, src, dst, quality, short_side): rel
                for rel, src, dst in todo
            }
            for fut in as_completed(futures):
                record(futures[fut], fut.result()[1])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return report


def _cmd_extract(args: argparse.Namespace) -> int:
    report = extract_frame_tree(
        Path(args.root),
        Path(args.out),
        workers=args.workers,
        quality=args.quality,
        short_side=args.short_side,
    )
    print(
        f"{report.extracted} videos extracted, {report.already_done} already done, "
        f"{len(report.unreadable)} unreadable",
        file=sys.stderr,
    )
    for line in report.unreadable:
        print(f"  unreadable: {line}", file=sys.stderr)
    if report.unreadable:
        print(
            f"  (marked as CLASS/VIDEO{UNREADABLE_SUFFIX} in {args.out}; delete a marker "
            f"to retry that video)",
            file=sys.stderr,
        )
    return 0


IMAGE_SUMMARIES = ("images", "cifar10", "cifar100")
"""Image datasets ``bwssl data summary`` reports on (the embedded set has nothing to check)."""


def _cmd_image_summary(args: argparse.Namespace) -> int:
    if args.root is None:
        raise DataError(f"give --root (the {args.dataset} folder)")
    if args.dataset == "images":
        summary = summarize_image_folder(args.root, workers=args.workers)
    else:
        summary = summarize_cifar(args.dataset, args.root)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.dataset} at {summary['root']}: {summary['classes']} classes")
    for split, counts in summary["splits"].items():
        bad = f", {counts['unreadable']} unreadable" if counts.get("unreadable") else ""
        print(f"  {split:6s} {counts['images']} images{bad}")
    for bad_file in summary["bad_files"][:10]:
        print(f"  bad: {bad_file['path']}: {bad_file['reason']}")
    if len(summary["bad_files"]) > 10:
        print(f"  ... {len(summary['bad_files']) - 10} more bad files (see --json)")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    if args.dataset in IMAGE_SUMMARIES:
        return _cmd_image_summary(args)
    if args.root is None and args.frames_root is None:
        raise DataError(f"give --root (the {args.dataset} video folder)")
    cfg = DataConfig(
        name=args.dataset,
        root=args.root,
        frames_root=args.frames_root,
        split_dir=args.split_dir,
        split=args.split,
        num_frames=args.num_frames,
        frame_stride=args.frame_stride,
        cache_dir=args.cache_dir,
    )
    summary = index_dataset(cfg).summary()
    summary["eval_videos"] = (
        max(1, round(cfg.eval_fraction * summary["test_videos"])) if summary["test_videos"] else 0
    )
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    split = f" split {summary['split']}" if summary["split"] is not None else ""
    print(f"{args.dataset}{split} ({summary['backend']} backend, {summary['base']})")
    for key in (
        "classes",
        "train_videos",
        "test_videos",
        "eval_videos",
        "excluded_short",
        "unreadable",
        "missing",
        "partial",
        "header_disagrees",
    ):
        print(f"  {key:16s} {summary[key]}")
    for key in (
        "short_files",
        "unreadable_files",
        "missing_files",
        "partial_files",
        "header_disagrees_files",
    ):
        for line in summary[key][:10]:
            print(f"  {key[:-6]}: {line}")
        if len(summary[key]) > 10:
            print(f"  ... {len(summary[key]) - 10} more {key[:-6]} (see --json)")
    return 0


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bwssl data extract-frames`` and ``bwssl data summary`` to the main parser."""
    p = sub.add_parser(
        "data",
        help="prepare and check video and image data",
        description="Prepare (extract-frames) and check (summary) video and image data.",
    )
    dsub = p.add_subparsers(dest="data_command", required=True)

    e = dsub.add_parser(
        "extract-frames",
        help="decode a video tree into JPEG frame folders",
        description="Decode ROOT/CLASS/VIDEO.avi into OUT/CLASS/VIDEO/000001.jpg ... in parallel. "
        "Resumable: rerun the same command to continue.",
    )
    e.add_argument("--root", required=True, help="video folder with one subfolder per class")
    e.add_argument("--out", required=True, help="frame folder to write (data.frames_root)")
    e.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="parallel decoding processes (default: min(8, CPUs))",
    )
    e.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    e.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="scale frames so their shorter side is this (default: keep the size)",
    )
    e.set_defaults(func=_cmd_extract)

    s = dsub.add_parser(
        "summary",
        help="index a data set and print its counts",
        description="Probe every video of a split (cached) or decode every image, and print "
        "classes, usable items, and the excluded, unreadable and missing files.",
    )
    s.add_argument(
        "dataset", choices=[*VIDEO_DATASETS, *IMAGE_SUMMARIES], help="layout (docs/data.md)"
    )
    s.add_argument(
        "--root",
        help="the dataset's video folder; images: the folder holding train/ and val/; CIFAR: "
        "the unpacked pickles or their parent",
    )
    s.add_argument(
        "--frames-root", help="ucf101: frame folders from extract-frames (used if given)"
    )
    s.add_argument(
        "--split-dir",
        help="split lists or annotations (default: where the official layout puts them)",
    )
    s.add_argument("--split", type=int, default=1, help="ucf101, hmdb51: official split 1, 2, 3")
    s.add_argument("--num-frames", type=int, default=16, help="clip frames T (default 16)")
    s.add_argument("--frame-stride", type=int, default=4, help="clip frame stride (default 4)")
    s.add_argument("--cache-dir", help="where the index cache goes (data.cache_dir)")
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="images: parallel decoding processes (default 1)",
    )
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_cmd_summary)
