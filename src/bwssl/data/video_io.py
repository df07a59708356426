"""Reading videos: encoded files through PyAV, and folders of frame images.

Robustness rules (as in V-JEPA's loader): every container is closed
(``with``), every open and read has a timeout, decoding stops at the last
frame a clip needs, and any failure becomes a :class:`VideoReadError` whose
message says what went wrong; callers skip, log and count it.

Header frame counts can lie (a truncated AVI keeps the count of the complete
file). :func:`probe_video` therefore demuxes the whole file (no decoding) and
calls it unreadable when it holds fewer packets than its header claims; a
read that decodes fewer frames than the clip needs is unreadable as well.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from bwssl.data.clips import VideoReadError

VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg")
FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
UNREADABLE_SUFFIX = ".unreadable"
"""``extract-frames`` writes ``CLASS/VIDEO.unreadable`` (the reason, as text) instead of a frame
folder for a video it cannot decode, so the frame backend counts it as unreadable, not missing."""
IO_TIMEOUT_S = 30.0
"""Seconds PyAV waits on an open or a read before giving up (never hang on a bad mount)."""

_AV_ERRORS: tuple[type[BaseException], ...] = (
    av.FFmpegError,
    OSError,
    ValueError,
    IndexError,
    RuntimeError,
    EOFError,
)


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns from a video file."""

    frames: int
    """Frames that can be decoded (non-empty packets of the video stream)."""
    claimed: int | None
    """Frame count in the header (None when the container does not say)."""
    height: int
    width: int


def probe_video(path: str | Path) -> VideoInfo:
    """Count the frames of a video file in one pass, demuxing it and decoding only the first.

    Raises :class:`VideoReadError` if the file cannot be opened, has no video
    stream, holds no decodable frame, or holds fewer packets than its header
    claims (truncated).
    """
    first = None
    try:
        with av.open(str(path), timeout=IO_TIMEOUT_S) as container:
            stream = container.streams.video[0]
            claimed = int(stream.frames) or None
            packets = nonempty = 0
            for packet in container.demux(stream):
                flush = packet.pts is None and packet.dts is None and packet.size == 0
                if not flush:
                    packets += 1
                    nonempty += packet.size > 0
                if first is None and (flush or packet.size > 0):
                    first = next(iter(packet.decode()), None)  # the flush packet drains
    except _AV_ERRORS as e:
        raise VideoReadError(f"cannot open or demux: {e}") from e
    if claimed is not None and packets < claimed:
        raise VideoReadError(f"truncated: holds {packets} frames, its header claims {claimed}")
    if nonempty == 0 or first is None:
        raise VideoReadError("no decodable video frame")
    return VideoInfo(frames=nonempty, claimed=claimed, height=first.height, width=first.width)


def read_video(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """Decode the frames at ``indices`` (T,) of a video: uint8 RGB (T, H, W, 3).

    Frames are counted in presentation order from the start of the file and
    decoding stops at the last index needed. Fewer decoded frames than needed
    raises :class:`VideoReadError`.
    """
    wanted = set(int(i) for i in indices)
    last = max(wanted)
    got: dict[int, np.ndarray] = {}
    count = 0
    try:
        with av.open(str(path), timeout=IO_TIMEOUT_S) as container:
            for count, frame in enumerate(container.decode(video=0), start=1):
                i = count - 1
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except _AV_ERRORS as e:
        raise VideoReadError(f"decoding failed after {count} frames: {e}") from e
    if len(got) < len(wanted):
        raise VideoReadError(f"decoded only {count} frames, the clip needs frame {last + 1}")
    return _stack([got[int(i)] for i in indices])


def list_frames(folder: str | Path) -> list[str]:
    """Sorted names of the frame images of a frame folder."""
    try:
        names = [
            e.name
            for e in os.scandir(folder)
            if e.name.lower().endswith(FRAME_EXTENSIONS) and not e.name.startswith(".")
        ]
    except OSError as e:
        raise VideoReadError(f"cannot list frame folder: {e}") from e
    return sorted(names)


def read_frame_folder(folder: str | Path, indices: np.ndarray) -> np.ndarray:
    """Load the frames at ``indices`` (T,) of a frame folder: uint8 RGB (T, H, W, 3)."""
    names = list_frames(folder)
    if int(indices.max()) >= len(names):
        raise VideoReadError(
            f"holds {len(names)} frames, the clip needs frame {int(indices.max()) + 1}"
        )
    frames = []
    for i in indices:
        try:
            with Image.open(os.path.join(folder, names[int(i)])) as img:
                frames.append(np.asarray(img.convert("RGB")))
        except Exception as e:  # any failure of the image decoder on a bad file
            raise VideoReadError(f"cannot decode {names[int(i)]}: {e}") from e
    return _stack(frames)


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    if len({f.shape for f in frames}) != 1:
        raise VideoReadError(f"frames differ in size: {sorted({f.shape for f in frames})}")
    return np.stack(frames)  # (T, H, W, 3)


def extract_frames(
    src: str | Path, dst: str | Path, *, quality: int = 90, short_side: int | None = None
) -> int:
    """Decode every frame of ``src`` into ``dst/000001.jpg, ...``; returns the frame count.

    Atomic: frames go to a hidden temporary folder next to ``dst`` that is
    renamed to ``dst`` once complete, so ``dst`` exists only when finished.
    ``short_side`` scales frames (shorter side) before saving. A video that
    cannot be decoded, or decodes to fewer frames than its header claims,
    raises :class:`VideoReadError` and leaves nothing behind.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = 0
    try:
        with av.open(str(src), timeout=IO_TIMEOUT_S) as container:
            claimed = int(container.streams.video[0].frames) or None
            for count, frame in enumerate(container.decode(video=0), start=1):
                img = frame.to_image()
                if short_side is not None:
                    scale = short_side / min(img.size)
                    img = img.resize(
                        (round(img.width * scale), round(img.height * scale)),
                        Image.Resampling.BILINEAR,
                    )
                img.save(tmp / f"{count:06d}.jpg", quality=quality)
        if count == 0:
            raise VideoReadError("no decodable video frame")
        if claimed is not None and count < claimed:
            raise VideoReadError(f"truncated: decoded {count} frames, its header claims {claimed}")
        if dst.exists():  # another process finished it first
            shutil.rmtree(tmp)
        else:
            tmp.rename(dst)
    except _AV_ERRORS as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise VideoReadError(f"decoding failed after {count} frames: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count
