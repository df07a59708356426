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
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bwssl.config import DataConfig
from bwssl.data import build_dataset, make_loader
from bwssl.data.commands import extract_frame_tree
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
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.dir or tmp)
        root, frames = work / "ucf101", work / "ucf101-frames"
        if not (root / "ucfTrainTestlist").exists():
            t = time.perf_counter()
            write_tree(root, 2, args.videos // 2, args.video_frames)
            print(f"generated {args.videos} videos in {time.perf_counter() - t:.1f} s")
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
