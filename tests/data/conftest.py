"""A small UCF101 tree of real AVI files (PyAV, mpeg4), in the official layout.

Frame ``i`` of every video is gray with brightness ``BASE + STEP * i`` plus a
left-to-right ramp of one level per column, so tests can read back which
frames a clip holds and whether it was flipped.

Split 1 (train): 9 listed videos: 5 usable, one too short (5 frames), one
corrupt (random bytes), one truncated (header claims 80 frames, about 50 remain),
one missing. Split 1 (test): 4 usable. Class HandstandPushups holds files
named ``v_HandStandPushups_*`` (the UCF101 quirk). Split 2 swaps the roles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from bwssl.config import DataConfig

H, W = 32, 40
BASE, STEP = 30, 6
CLASSES = ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]


def frame_image(i: int, height: int = H, width: int = W) -> np.ndarray:
    """uint8 (height, width, 3): frame ``i`` of every generated video."""
    value = BASE + STEP * i + np.arange(width)[None, :]  # (1, width)
    return np.broadcast_to(value, (height, width)).astype(np.uint8)[..., None].repeat(3, axis=2)


def write_avi(path: Path, num_frames: int) -> None:
    write_video(path, num_frames)


def write_video(
    path: Path,
    num_frames: int,
    codec: str = "mpeg4",
    *,
    rate: Fraction | int = 25,
    pix_fmt: str = "yuv420p",
    width: int = W,
    height: int = H,
    pts: list[int] | None = None,
) -> None:
    """Encode ``num_frames`` frames of :func:`frame_image`'s pattern with PyAV; the container follows the file extension. ``pts``:
    explicit presentation times in units of 1/``rate`` (a variable frame rate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.bit_rate = 4_000_000
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, int(rate))
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, height, width), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, int(rate))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@dataclass(frozen=True)
class Tree:
    root: Path
    lengths: dict[str, int]
    """Listed path -> frame count of every readable video."""
    base: int = BASE
    """Frame i has level ``base + step * i + column``."""
    step: int = STEP
    width: int = W


# (listed path, frames or a fault)
TRAIN_1 = [
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 24),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi", 30),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g10_c01.avi", 5),  # shorter than the clip span
    ("Basketball/v_Basketball_g08_c01.avi", 28),
    ("Basketball/v_Basketball_g09_c01.avi", "corrupt"),
    ("Basketball/v_Basketball_g10_c01.avi", 26),
    ("HandstandPushups/v_HandStandPushups_g08_c01.avi", 24),
    ("HandstandPushups/v_HandStandPushups_g09_c01.avi", "truncated"),
    ("HandstandPushups/v_HandStandPushups_g10_c01.avi", "missing"),
]
TEST_1 = [
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 20),
    ("Basketball/v_Basketball_g01_c01.avi", 22),
    ("HandstandPushups/v_HandStandPushups_g01_c01.avi", 20),
    ("HandstandPushups/v_HandStandPushups_g02_c01.avi", 24),
]


def _label(listed: str) -> int:
    return CLASSES.index(listed.split("/")[0]) + 1


def make_ucf101_tree(root: Path) -> Tree:
    lengths = {}
    for listed, spec in TRAIN_1 + TEST_1:
        path = root / listed
        if spec == "missing":
            continue
        if spec == "corrupt":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(np.random.default_rng(0).bytes(3000))
        elif spec == "truncated":
            write_avi(path, 80)
            data = path.read_bytes()
            path.write_bytes(data[: int(len(data) * 0.75)])
        else:
            write_avi(path, int(spec))
            lengths[listed] = int(spec)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    (lists / "trainlist01.txt").write_text("".join(f"{p} {_label(p)}\n" for p, _ in TRAIN_1))
    (lists / "testlist01.txt").write_text("".join(f"{p}\n" for p, _ in TEST_1))
    (lists / "trainlist02.txt").write_text("".join(f"{p} {_label(p)}\r\n" for p, _ in TEST_1))
    (lists / "testlist02.txt").write_text("".join(f"{p}\r\n" for p, _ in TRAIN_1))
    return Tree(root, lengths)


@pytest.fixture(scope="session")
def ucf_tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return make_ucf101_tree(tmp_path_factory.mktemp("ucf101"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("bwssl-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BWSSL_CACHE_DIR", path)  # what the CLI uses without --cache-dir
        yield path


@pytest.fixture
def ucf_cfg(ucf_tree: Tree, cache_dir: str):
    """``ucf_cfg(key=value, ...)``: a UCF101 DataConfig on the generated tree (T=4, stride 2,
    crop 32), tolerant of its missing and unreadable files unless overridden."""

    def make(**overrides: object) -> DataConfig:
        kwargs: dict[str, object] = dict(
            name="ucf101",
            root=str(ucf_tree.root),
            num_frames=4,
            frame_stride=2,
            crop_size=32,
            cache_dir=cache_dir,
            allow_missing=True,
            max_unreadable_fraction=0.5,
        )
        kwargs.update(overrides)
        return DataConfig(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def avi_writer():
    """``write(path, num_frames)``: write a small real AVI (the tree's frame pattern)."""
    return write_avi


@dataclass(frozen=True)
class VideoKit:
    """:func:`write_video` and the frame pattern it encodes (frame i, column x: level
    ``base + step * i + x``)."""

    write: Callable[..., None]
    base: int = BASE
    step: int = STEP
    height: int = H
    width: int = W


@pytest.fixture(scope="session")
def videos() -> VideoKit:
    """``videos.write(path, num_frames, codec, ...)`` (see :func:`write_video`)."""
    return VideoKit(write_video)
