"""Decoding the containers, codecs, rates, sizes and pixel formats users bring, and files whose
header frame count lies (both ways) or that break mid-way."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest

from bwssl.config import DataConfig
from bwssl.data import build_dataset
from bwssl.data.build import index_dataset
from bwssl.data.video_io import probe_video, read_video

if TYPE_CHECKING:
    from conftest import VideoKit

N = 12  # frames per generated video

# (file name, codec, write_video options)
FORMATS = [
    ("mpeg4.avi", "mpeg4", {}),
    ("msmpeg4.avi", "msmpeg4", {"rate": 10}),
    ("mjpeg.avi", "mjpeg", {"pix_fmt": "yuvj420p"}),
    ("cinepak.avi", "cinepak", {"pix_fmt": "rgb24", "rate": 15}),
    ("h264.mp4", "libx264", {"rate": Fraction(30000, 1001)}),
    ("vp8.webm", "libvpx", {}),
    ("vp9.webm", "libvpx-vp9", {}),
    ("h264.mkv", "libx264", {"rate": 15}),
    ("odd-width.mkv", "libx264", {"pix_fmt": "yuv444p", "width": 41}),
    ("gray.mkv", "ffv1", {"pix_fmt": "gray"}),
    ("10bit.mkv", "libx264", {"pix_fmt": "yuv420p10le"}),
    (
        "vfr.mkv",
        "libx264",
        {"rate": 1000, "pts": [0, 40, 70, 140, 150, 200, 260, 300, 333, 400, 500, 520]},
    ),
]


def _can_encode(codec: str, pix_fmt: str) -> str:
    """Why PyAV cannot encode ``codec`` in ``pix_fmt`` here ("" when it can)."""
    try:
        formats = av.codec.Codec(codec, "w").video_formats or []
    except (av.FFmpegError, ValueError) as e:
        return f"the installed PyAV/FFmpeg has no {codec} encoder ({e})"
    if formats and pix_fmt not in {f.name for f in formats}:
        return f"the installed {codec} encoder cannot write {pix_fmt}"
    return ""


@pytest.fixture(scope="module")
def formats_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("formats")


@pytest.mark.parametrize(("name", "codec", "options"), FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_decodes_to_its_frames(
    formats_dir: Path, videos: VideoKit, name, codec, options
):
    why = _can_encode(codec, options.get("pix_fmt", "yuv420p"))
    if why:
        pytest.skip(why)
    path = formats_dir / name
    videos.write(path, N, codec, **options)
    info = probe_video(path)
    width = options.get("width", videos.width)
    assert (info.frames, info.height, info.width, info.partial) == (N, 32, width, "")
    frames = read_video(path, np.array([0, 5, N - 1]))
    assert frames.shape == (3, 32, width, 3) and frames.dtype == np.uint8
    # frame i has level BASE + STEP * i plus a ramp of one level per column
    left = frames[:, :, :8].mean(axis=(1, 2, 3))
    expected = videos.base + videos.step * np.array([0, 5, N - 1]) + 3.5
    np.testing.assert_allclose(left, expected, atol=3.0)


def _patch_avi_frame_count(path: Path, frames: int) -> None:
    """Write ``frames`` into an AVI's header counts (avih dwTotalFrames, strh dwLength)."""
    data = bytearray(path.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    struct.pack_into("<I", data, avih + 8 + 16, frames)
    struct.pack_into("<I", data, strh + 8 + 32, frames)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("claimed", [444, 10])
def test_a_lying_header_is_not_believed(tmp_path, videos: VideoKit, claimed):
    path = tmp_path / "lies.avi"
    videos.write(path, 30)
    _patch_avi_frame_count(path, claimed)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == claimed  # the lie is in place
    info = probe_video(path)
    assert (info.frames, info.claimed, info.header_disagrees) == (30, claimed, True)
    assert bool(info.partial) == (claimed > 30)  # fewer frames than claimed: maybe cut
    last = read_video(path, np.array([29]))
    assert abs(float(last[0, :, :8].mean()) - (videos.base + videos.step * 29 + 3.5)) < 3.0


def test_a_file_that_breaks_mid_way_keeps_its_decodable_prefix(tmp_path, videos: VideoKit):
    path = tmp_path / "cut.mkv"
    videos.write(path, 30, "libx264")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    info = probe_video(path)
    assert 0 < info.frames < 30
    assert read_video(path, np.array([info.frames - 1])).shape == (1, 32, videos.width, 3)


def test_rotation_metadata_is_applied(tmp_path, videos: VideoKit):
    """A phone video: frames stored landscape, shown portrait (a 90 degree display matrix)."""
    path = tmp_path / "rotated.mp4"
    videos.write(path, N, "libx264")
    data = bytearray(path.read_bytes())
    matrix = data.find(b"tkhd") - 4 + 48  # tkhd version 0: the 3x3 matrix follows 40 bytes
    for k, v in enumerate([0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000]):
        struct.pack_into(">i", data, matrix + 4 * k, v)
    path.write_bytes(bytes(data))
    info = probe_video(path)
    W = videos.width
    assert (info.height, info.width) == (W, 32)
    frame = read_video(path, np.array([0]))[0].mean(axis=2)  # (W, 32)
    rows = frame.mean(axis=1)  # the stored left-to-right ramp now runs top to bottom
    assert np.polyfit(np.arange(W), rows, 1)[0] == pytest.approx(1.0, abs=0.15)


def test_one_lying_file_among_six_does_not_stop_training(tmp_path, videos: VideoKit):
    """The header of one of six files claims far more frames than it holds (as cinepak files
    written by some tools do): it is usable, listed, and the data set builds."""
    root = tmp_path / "own"
    for c in ("a", "b"):
        for i in range(3):
            videos.write(root / c / f"{c}{i}.avi", 20)
    _patch_avi_frame_count(root / "b" / "b1.avi", 444)
    cfg = DataConfig(
        name="folder",
        root=str(root),
        num_frames=4,
        frame_stride=4,
        crop_size=32,
        cache_dir=str(tmp_path / "cache"),
        max_unreadable_fraction=0.05,
    )
    s = index_dataset(cfg, progress=False).summary()
    assert (s["train_videos"] + s["test_videos"], s["unreadable"], s["header_disagrees"]) == (
        6,
        0,
        1,
    )
    assert s["header_disagrees_files"] == ["b/b1.avi: header claims 444 frames, 20 decode"]
    assert len(build_dataset(cfg, "train")) == 4
