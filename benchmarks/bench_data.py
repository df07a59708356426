"""Data-loading throughput: clips/s of each backend through the training DataLoader.

Backends: ``synthetic`` (the embedded procedural data, rendered on the fly;
``synthetic-cached``: from its memory-mapped disk cache), ``ucf101-video`` (AVI files decoded with PyAV) and ``ucf101-frames`` (JPEG
frame folders from ``bwssl data extract-frames``). The UCF101-like tree is
generated first (UCF101's frame size, 320x240, mpeg4 at 25 frames/s), so the
benchmark needs no download::

    python benchmarks/bench_data.py --workers 0 4 --clips 256

Training views (random start, crop, flip) of the default clip format (16
frames at stride 4, 128x128) are loaded in batches; the first batch (worker
start-up) is not timed.

``--index-repeats N`` instead times building the video index from a cold
cache (probing every file, one thread), N times, and prints the median per
video; ``--lying K`` first patches the AVI header of K videos to claim three
times their frames, so their probe takes the decoding path. With
``--baseline-video-io OLD/src/bwssl/data/video_io.py`` it also times that
checkout's ``probe_video`` and ``read_video`` (one clip) against this one's on
every file, interleaved in this one process (so load on the machine hits both
alike), and prints the ratios::

    python benchmarks/bench_data.py --index-repeats 9 --videos 32 --lying 4 \\
        --baseline-video-io /path/to/main/src/bwssl/data/video_io.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from bwssl.config import DataConfig
from bwssl.data import build_dataset, index_ucf101, make_loader
from bwssl.data.commands import extract_frame_tree
from bwssl.data.video_io import VideoReadError, probe_video, read_video
from bwssl.train.sampling import EpochBatchSampler


def write_tree(root: Path, classes: int, per_class: int, frames: int) -> None:
    """A UCF101-layout tree of moving-pattern AVIs (320x240) with split-1 lists."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    names = [f"Class{c:02d}" for c in range(classes)]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    train = []
    yy, xx = np.mgrid[0:240, 0:320]
    for c, name in enumerate(names):
        for g in range(per_class):
            rel = f"{name}/v_{name}_g{g + 8:02d}_c01.avi"
            train.append(f"{rel} {c + 1}\n")
            path = root / rel
            path.parent.mkdir(exist_ok=True)
            with av.open(str(path), "w") as out:
                stream = out.add_stream("mpeg4", rate=25)
                stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
                stream.bit_rate = 1_000_000
                for t in range(frames):
                    phase = 0.15 * t * (c + 1)
                    img = 127 + 100 * np.sin(0.05 * xx + phase)[..., None] * np.cos(
                        0.04 * yy[..., None] - 0.5 * phase + np.arange(3)
                    )  # (240, 320, 3)
                    frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
                    for packet in stream.encode(frame):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text(train[0].split()[0] + "\n")


def patch_header_frames(path: Path, frames: int) -> None:
    """Write ``frames`` into the frame counts of an AVI's headers (avih, strh): a lying header."""
    data = bytearray(path.read_bytes())
    for tag, offset in ((b"avih", 16), (b"strh", 32)):
        struct.pack_into("<I", data, data.find(tag) + 8 + offset, frames)
    path.write_bytes(bytes(data))


def index_ms_per_video(cfg: DataConfig, repeats: int, videos: int) -> float:
    """Median wall time of a cold-cache index build, per video (milliseconds)."""
    times = []
    for r in range(repeats):
        cold = dataclasses.replace(cfg, cache_dir=f"{cfg.cache_dir}-cold-{os.getpid()}-{r}")
        t = time.perf_counter()
        index_ucf101(cold, progress=False, workers=1)
        times.append(time.perf_counter() - t)
        shutil.rmtree(str(cold.cache_dir), ignore_errors=True)
    return 1000 * statistics.median(times) / videos


def load_baseline(path: Path) -> Any:
    """Another checkout's ``video_io.py``, loaded as a module of its own."""
    spec = importlib.util.spec_from_file_location("baseline_video_io", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def compare(
    old: Callable[[Path], object], new: Callable[[Path], object], paths: list[Path], repeats: int
) -> tuple[float, float]:
    """Median seconds per call of ``old(path)`` and ``new(path)``, each file done by both in
    turn, ``repeats`` times (a call that raises VideoReadError counts too)."""
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(repeats):
        for path in paths:
            for name, fn in (("old", old), ("new", new)):
                t = time.perf_counter()
                with contextlib.suppress(VideoReadError):
                    fn(path)
                times[name].append(time.perf_counter() - t)
    return statistics.median(times["old"]), statistics.median(times["new"])


def clips_per_second(cfg: DataConfig, workers: int, batch: int, clips: int) -> float:
    data = build_dataset(cfg, "train")
    sampler = EpochBatchSampler(len(data), batch, seed=0)
    loader = make_loader(data, sampler, workers, pin_memory=False)
    seen, start, epoch = -1, 0.0, 0
    while seen < clips:
        sampler.epoch = epoch
        for b in loader:
            if seen < 0:  # the first batch pays for worker start-up
                seen, start = 0, time.perf_counter()
                continue
            seen += b.video.shape[0]
            if seen >= clips:
                break
        epoch += 1
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, min(4, os.cpu_count() or 1)])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--clips", type=int, default=128, help="clips timed per measurement")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--frame-stride", type=int, default=4)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--videos", type=int, default=16, help="generated videos (2 classes)")
    p.add_argument("--video-frames", type=int, default=120, help="frames per generated video")
    p.add_argument("--dir", help="keep the generated data here (default: a temporary folder)")
    p.add_argument("--index-repeats", type=int, default=0, help="time the index build instead")
    p.add_argument("--lying", type=int, default=0, help="videos whose header claims 3x frames")
    p.add_argument(
        "--baseline-video-io", help="a video_io.py whose probe_video and read_video to compare"
    )
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.dir or tmp)
        root, frames = work / "ucf101", work / "ucf101-frames"
        if not (root / "ucfTrainTestlist").exists():
            t = time.perf_counter()
            write_tree(root, 2, args.videos // 2, args.video_frames)
            print(f"generated {args.videos} videos in {time.perf_counter() - t:.1f} s")
        for path in sorted(root.glob("*/*.avi"))[: args.lying]:
            patch_header_frames(path, 3 * args.video_frames)
        if args.index_repeats:
            cfg = DataConfig(name="ucf101", root=str(root), cache_dir=str(work / "cache-index"))
            ms = index_ms_per_video(cfg, args.index_repeats, args.videos)
            print(f"index build: {ms:.2f} ms per video (median of {args.index_repeats})")
            if args.baseline_video_io:
                base = load_baseline(Path(args.baseline_video_io))
                paths = sorted(root.glob("*/*.avi"))
                clip = np.arange(0, args.num_frames * args.frame_stride, args.frame_stride)
                for what, label, group, old, new in (
                    ("probe", "honest headers", paths[args.lying :], base.probe_video, probe_video),
                    ("probe", "lying headers", paths[: args.lying], base.probe_video, probe_video),
                    (
                        "read a clip",
                        "first 64 frames",
                        paths,
                        lambda p: base.read_video(p, clip),
                        lambda p: read_video(p, clip),
                    ),
                ):
                    if group:
                        t_old, t_new = compare(old, new, group, args.index_repeats)
                        print(
                            f"{what}, {label} ({len(group)} files): baseline "
                            f"{1000 * t_old:.2f} ms, this {1000 * t_new:.2f} ms, "
                            f"ratio {t_new / t_old:.3f}"
                        )
            return
        t = time.perf_counter()
        extract_frame_tree(root, frames, workers=max(args.workers), progress=False)
        print(f"extracted frames in {time.perf_counter() - t:.1f} s")
        fmt = dict(
            num_frames=args.num_frames, frame_stride=args.frame_stride, crop_size=args.crop_size
        )
        cache = str(work / "cache")
        n_syn = max(64, args.clips)
        configs = {
            "synthetic": DataConfig(name="synthetic", synthetic_train=n_syn, **fmt),  # type: ignore[arg-type]
            "synthetic-cached": DataConfig(
                name="synthetic", synthetic_train=n_syn, cache_dir=cache, **fmt
            ),  # type: ignore[arg-type]
            "ucf101-video": DataConfig(name="ucf101", root=str(root), cache_dir=cache, **fmt),  # type: ignore[arg-type]
            "ucf101-frames": DataConfig(
                name="ucf101", frames_root=str(frames), cache_dir=cache, **fmt
            ),  # type: ignore[arg-type]
        }
        print(
            f"\nclips of {args.num_frames}x{args.crop_size}x{args.crop_size} at stride "
            f"{args.frame_stride}, batch {args.batch_size}, {args.clips} clips timed"
        )
        print(f"{'backend':17s} {'workers':>7s} {'clips/s':>9s} {'ms/clip/worker':>15s}")
        for name, cfg in configs.items():
            for w in args.workers:
                rate = clips_per_second(cfg, w, args.batch_size, args.clips)
                print(f"{name:17s} {w:7d} {rate:9.1f} {1000 * max(w, 1) / rate:15.1f}")


if __name__ == "__main__":
    main()
