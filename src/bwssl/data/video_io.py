"""Reading videos: encoded files through PyAV, and folders of frame images.

Robustness rules (as in V-JEPA's loader): every container is closed
(``with``), every open and read has a timeout, decoding stops at the last
frame a clip needs, and any failure becomes a :class:`VideoReadError` whose
message says what went wrong; callers skip, log and count it.

Header frame counts lie in both directions (a truncated AVI keeps the count
of the complete file; some encoders write a count for a longer or shorter
stream). :func:`probe_video` therefore counts the frames that decode (cheaply:
see there); a file that breaks mid-way keeps its decodable prefix. A read that
decodes fewer frames than the clip needs is unreadable.
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
    """Frames that decode, counted from the start of the file."""
    claimed: int | None
    """Frame count in the header (None when the container does not say)."""
    height: int
    """Frame height as shown (after the rotation metadata is applied)."""
    width: int
    """Frame width as shown."""
    partial: str = ""
    """Why the file holds less than it should ("" when it decodes to its end and to the
    header's count): decoding stops at an error, or fewer frames decode than the header
    claims (a cut file, or a lying header: they look the same). Its first ``frames``
    frames are usable."""

    @property
    def header_disagrees(self) -> bool:
        """Whether the header's frame count differs from the frames that decode."""
        return self.claimed is not None and self.claimed != self.frames


def probe_video(path: str | Path) -> VideoInfo:
    """Count the frames of a video file that decode, cheaply.

    One pass demuxes the file (no decoding but of the first frame): when the
    demuxer reaches the end without error and the header's count agrees with
    the packets (or the container states none), the non-empty packets are the
    frame count. Otherwise (the header claims more or fewer frames, or the
    file breaks mid-way) the video is decoded to its end or its first error,
    and the frames decoded are the count: header counts lie in both
    directions, only decoded frames tell. A file that breaks after some frames
    keeps that prefix (``partial`` says why it stopped).

    Raises :class:`VideoReadError` if the file cannot be opened, has no video
    stream, or holds no decodable frame.
    """
    first = None
    demux_error = ""
    packets = nonempty = 0
    try:
        with av.open(str(path), timeout=IO_TIMEOUT_S) as container:
            stream = container.streams.video[0]
            claimed = int(stream.frames) or None
            try:
                for packet in container.demux(stream):
                    flush = packet.pts is None and packet.dts is None and packet.size == 0
                    if not flush:
                        packets += 1
                        nonempty += packet.size > 0
                    if first is None and (flush or packet.size > 0):
                        first = next(iter(packet.decode()), None)  # the flush packet drains
            except _AV_ERRORS as e:
                demux_error = f"demuxing stopped after {packets} packets: {e}"
    except _AV_ERRORS as e:
        raise VideoReadError(f"cannot open or demux: {e}") from e
    if first is not None and not demux_error and claimed in (None, packets):
        height, width = _shown_size(first)
        return VideoInfo(nonempty, claimed, height, width)
    frames, size, partial = _decode_count(path)
    if frames == 0 or size is None:
        raise VideoReadError(f"no decodable video frame{f' ({partial})' if partial else ''}")
    if not (partial or demux_error) and claimed is not None and frames < claimed:
        partial = f"ends after {frames} of the {claimed} frames its header claims"
    return VideoInfo(frames, claimed, *size, partial=partial or demux_error)


def _decode_count(path: str | Path) -> tuple[int, tuple[int, int] | None, str]:
    """Decode a whole video: (frames decoded, shown (H, W) of the first, why it stopped early)."""
    count, size = 0, None
    try:
        with av.open(str(path), timeout=IO_TIMEOUT_S) as container:
            for frame in container.decode(video=0):
                if size is None:
                    size = _shown_size(frame)
                count += 1
    except _AV_ERRORS as e:
        return count, size, f"decoding stopped after {count} frames: {e}"
    return count, size, ""


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show ``frame`` upright (its display matrix)."""
    return round(frame.rotation / 90) % 4


def _shown_size(frame: av.VideoFrame) -> tuple[int, int]:
    if _quarter_turns(frame) % 2:
        return frame.width, frame.height
    return frame.height, frame.width


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """uint8 RGB (H, W, 3) of ``frame`` as a player shows it: any pixel format (grayscale,
    10-bit) converted by FFmpeg, the rotation metadata applied."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


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
                    got[i] = _upright_rgb(frame)
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
    ``short_side`` scales frames (shorter side) before saving; the rotation
    metadata is applied. A video that breaks mid-way keeps the frames decoded
    before the break, as :func:`probe_video` counts them (header counts are not
    trusted); one with no decodable frame raises :class:`VideoReadError` and
    leaves nothing behind.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count, error = 0, ""
    try:
        try:
            with av.open(str(src), timeout=IO_TIMEOUT_S) as container:
                for frame in container.decode(video=0):
                    img = Image.fromarray(_upright_rgb(frame))
                    if short_side is not None:
                        scale = short_side / min(img.size)
                        img = img.resize(
                            (round(img.width * scale), round(img.height * scale)),
                            Image.Resampling.BILINEAR,
                        )
                    count += 1
                    img.save(tmp / f"{count:06d}.jpg", quality=quality)
        except _AV_ERRORS as e:
            error = f"decoding failed after {count} frames: {e}"
        if count == 0:
            raise VideoReadError(error or "no decodable video frame")
        if dst.exists():  # another process finished it first
            shutil.rmtree(tmp)
        else:
            tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count
