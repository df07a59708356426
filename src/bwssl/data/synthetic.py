"""The embedded default dataset: procedurally rendered clips whose class is a motion.

Each clip shows one textured object (a lobed blob: 2 to 5 lobes, a radius of
0.2 to 0.28 of the frame side, stripe or checker texture in two bright shades) over a dim
two-tone "camouflage" background (flat regions with wavy borders, like walls
and sky in real video, so reconstruction has something learnable) that
drifts in a random direction, independent of the class.
The class is how the object moves (:data:`MOTION_CLASSES`; the first
``num_classes`` are used): translations, rotation, expansion and
contraction, circular orbits, oscillations.

No single frame tells the class: positions wrap around the frame (a torus),
so the object's position is uniform at every frame; the initial angle and
orbit phase are uniform; every object's size follows the same distribution
at every frame (expansion and contraction run as a sawtooth in log-size with
a random phase, and the other classes draw a static size from that same
distribution). Only the change between frames is informative.

Screen conventions: x to the right, y down; ``up`` moves towards row 0;
``cw``/``ccw`` are as seen on the screen.

Clip format: videos are rendered at the clip frame rate, exactly
``num_frames`` frames (``data.frame_stride`` does not apply), on a square of
side ``ClipFormat.short_side`` (146 for a 128 crop), so the crop is a real
spatial augmentation (random for training, central for evaluation) and no
resize is needed. Training never flips: a horizontal flip would turn
``translate_right`` into ``translate_left`` and ``rotate_cw`` into
``rotate_ccw``, so flipped clips would carry wrong labels.

Content is fixed by the split, the clip format and the class count (not by
the run seed), so every run sees the same data. Clips are rendered on the fly
(numpy, one process: about 1 ms per 4x37x37 clip, 3 ms at 16x73x73, 6 ms at
16x146x146, so the 4352 8x37x37 clips of the default run take seconds) or, with ``cache_dir``,
once into a memory-mapped ``.npy`` file.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bwssl.data.clip_cache import cached_clips
from bwssl.data.clips import ClipDataset
from bwssl.data.transforms import ClipFormat

MOTION_CLASSES: tuple[str, ...] = (
    "translate_right",
    "translate_left",
    "translate_up",
    "translate_down",
    "rotate_cw",
    "rotate_ccw",
    "expand",
    "contract",
    "orbit_cw",
    "orbit_ccw",
    "oscillate_horizontal",
    "oscillate_vertical",
    "translate_up_right",
    "translate_down_left",
    "translate_up_left",
    "translate_down_right",
)
"""Every motion class, in order; a dataset with K classes uses the first K."""

CONTENT_SEED = 20240531
RENDER_VERSION = 2
"""Bumped when rendering changes (it keys the disk cache). Version 2 doubled the object radius
and sped up every motion about 1.7x: in version 1 the object covered a few percent of the
frame and the demo model's action probe stayed at chance (0.12 to 0.15 for 10 classes)."""
_SPLIT_IDS = {"train": 0, "test": 1}
_DIRECTIONS = {  # unit vectors (x right, y down)
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_right": (0.7071, -0.7071),
    "down_left": (-0.7071, 0.7071),
    "up_left": (-0.7071, -0.7071),
    "down_right": (0.7071, 0.7071),
}
_LOG_SCALE_RANGE = math.log(2.5)
"""Width of the per-frame log-size distribution (and the sawtooth's amplitude)."""
_BG_WAVES = 4
"""Waves summed into the background before it is cut into two tones: two coarse ones (at most
one cycle per frame side) and two finer, weaker ones."""


@dataclass
class MotionParams:
    """Everything needed to render one clip (arrays have a leading clip axis when stacked)."""

    centre: np.ndarray
    """(T, 2) object centre per frame, in pixels (x, y); wrapped onto the frame."""
    angle: np.ndarray
    """(T,) object rotation per frame, radians (increasing = clockwise on screen)."""
    log_scale: np.ndarray
    """(T,) log of the object's size factor per frame."""
    radius: np.ndarray
    """() base radius in pixels."""
    lobes: np.ndarray
    """() number of lobes of the outline, 2..5."""
    lobe_amp: np.ndarray
    lobe_phase: np.ndarray
    tex_freq: np.ndarray
    """() texture cycles per object radius."""
    tex_angle: np.ndarray
    tex_mix: np.ndarray
    """() 1: stripes, 0: checkerboard."""
    colour_a: np.ndarray
    """(3,) first object colour, bright."""
    colour_b: np.ndarray
    """(3,) second object colour: a darker shade of the first."""
    bg_k: np.ndarray
    """(4, 2) integer wave vectors of the background (periodic on the frame)."""
    bg_amp: np.ndarray
    bg_phase: np.ndarray
    bg_velocity: np.ndarray
    """(2,) background drift in pixels per frame."""
    bg_base: np.ndarray
    """(3,) dim background colour."""
    bg_tint: np.ndarray
    """(3,) half the colour difference between the two background tones."""


def sample_params(
    rng: np.random.Generator, motion: str, size: int, num_frames: int
) -> MotionParams:
    """Draw one clip's parameters for class ``motion`` on a ``size`` square of T frames."""
    s, t = float(size), np.arange(num_frames, dtype=np.float64)
    centre = np.broadcast_to(rng.uniform(0, s, 2), (num_frames, 2)).copy()
    angle = np.full(num_frames, rng.uniform(0, 2 * np.pi))
    phase = rng.uniform()
    log_scale = np.full(num_frames, rng.uniform(-0.15, 0.15) + _LOG_SCALE_RANGE * (phase - 0.5))
    if motion.startswith("translate_"):
        direction = np.array(_DIRECTIONS[motion.removeprefix("translate_")])
        centre += direction * rng.uniform(0.05, 0.08) * s * t[:, None]
    elif motion in ("rotate_cw", "rotate_ccw"):
        angle += (1 if motion == "rotate_cw" else -1) * rng.uniform(0.2, 0.35) * t
    elif motion in ("expand", "contract"):
        period = min(num_frames, 12)
        sign = 1 if motion == "expand" else -1
        saw = np.mod(phase + sign * t / period, 1.0) - 0.5
        log_scale = log_scale - _LOG_SCALE_RANGE * (phase - 0.5) + _LOG_SCALE_RANGE * saw
    elif motion in ("orbit_cw", "orbit_ccw"):
        sign = 1 if motion == "orbit_cw" else -1
        a = rng.uniform(0, 2 * np.pi) + sign * rng.uniform(0.35, 0.6) * t
        centre += rng.uniform(0.15, 0.22) * s * np.stack([np.cos(a), np.sin(a)], 1)
    elif motion in ("oscillate_horizontal", "oscillate_vertical"):
        direction = np.array((1.0, 0.0) if motion == "oscillate_horizontal" else (0.0, 1.0))
        a = rng.uniform(0, 2 * np.pi) + rng.uniform(0.5, 0.9) * t
        centre += direction * rng.uniform(0.15, 0.22) * s * np.sin(a)[:, None]
    else:
        raise ValueError(f"unknown motion class {motion!r}; known: {', '.join(MOTION_CLASSES)}")
    k = np.concatenate([rng.integers(-1, 2, size=(2, 2)), rng.integers(-3, 4, size=(2, 2))])
    k[np.all(k == 0, axis=1)] = (1, 0)
    colour_a = rng.uniform(0.55, 1.0, 3)
    bg_dir = rng.uniform(0, 2 * np.pi)
    f = np.asarray
    return MotionParams(
        centre=np.mod(centre, s),
        angle=angle,
        log_scale=log_scale,
        radius=f(rng.uniform(0.2, 0.28) * s),
        lobes=f(rng.integers(2, 6)),
        lobe_amp=f(rng.uniform(0.12, 0.3)),
        lobe_phase=f(rng.uniform(0, 2 * np.pi)),
        tex_freq=f(rng.uniform(0.6, 1.6)),
        tex_angle=f(rng.uniform(0, np.pi)),
        tex_mix=f(float(rng.integers(0, 2))),
        colour_a=colour_a,
        colour_b=colour_a * rng.uniform(0.45, 0.7),
        bg_k=k.astype(np.float64),
        bg_amp=np.concatenate([rng.uniform(0.6, 1.0, 2), rng.uniform(0.15, 0.4, 2)]),
        bg_phase=rng.uniform(0, 2 * np.pi, _BG_WAVES),
        bg_velocity=rng.uniform(0.0, 0.015) * s * np.array([np.cos(bg_dir), np.sin(bg_dir)]),
        bg_base=rng.uniform(0.12, 0.3, 3),
        bg_tint=rng.uniform(0.03, 0.08, 3),
    )


def render_clips(params: list[MotionParams], size: int) -> np.ndarray:
    """Render clips, vectorized over clips, frames and pixels: uint8 (N, T, S, S, 3).

    numpy float32 throughout (single-threaded, so it behaves the same in every
    data-loader worker).
    """
    f32 = np.float32
    p = {
        f.name: np.stack([getattr(q, f.name) for q in params]).astype(f32)
        for f in dataclasses.fields(MotionParams)
    }
    n, t = p["angle"].shape
    b = (n, 1, 1, 1)
    pix = np.arange(size, dtype=f32) + f32(0.5)
    # Object coordinates q: wrap the offset onto the torus, rotate by -angle, divide by size.
    half = f32(size / 2)
    dx = np.mod(pix[None, None, None, :] - p["centre"][..., 0, None, None] + half, f32(size))
    dy = np.mod(pix[None, None, :, None] - p["centre"][..., 1, None, None] + half, f32(size))
    dx, dy = dx - half, dy - half  # (N, T, 1, S), (N, T, S, 1)
    rs = (p["radius"][:, None] * np.exp(p["log_scale"]))[..., None, None]  # (N, T, 1, 1)
    cos, sin = np.cos(p["angle"])[..., None, None], np.sin(p["angle"])[..., None, None]
    qx = (cos * dx + sin * dy) / rs  # (N, T, S, S)
    qy = (cos * dy - sin * dx) / rs
    edge = 1 + p["lobe_amp"].reshape(b) * np.cos(
        p["lobes"].reshape(b) * np.arctan2(qy, qx) + p["lobe_phase"].reshape(b)
    )
    z = (edge - np.sqrt(qx * qx + qy * qy)) * (rs * f32(1.5))
    mask = f32(0.5) + f32(0.5) * np.tanh(f32(0.5) * z)  # sigmoid: soft edge about a pixel wide
    w = f32(2 * math.pi) * p["tex_freq"].reshape(b)
    along = qx * np.cos(p["tex_angle"]).reshape(b) + qy * np.sin(p["tex_angle"]).reshape(b)
    mix = p["tex_mix"].reshape(b)
    tex = f32(0.5) + f32(0.5) * (
        mix * np.cos(w * along) + (1 - mix) * np.cos(w * qx) * np.cos(w * qy)
    )  # in [0, 1]
    del dx, dy, qx, qy, edge, z, along
    # Background: integer wave vectors, so it is periodic on the frame and can drift freely.
    steps = np.arange(t, dtype=f32)
    shift = p["bg_velocity"][:, None, :] * steps[None, :, None]  # (N, T, 2)
    bg = np.zeros((n, t, size, size), dtype=f32)
    two_pi_s = f32(2 * math.pi / size)
    for j in range(_BG_WAVES):
        kx, ky = p["bg_k"][:, j, 0], p["bg_k"][:, j, 1]
        ph = two_pi_s * (kx[:, None, None] * (pix - shift[..., 0, None]))  # (N, T, S) over x
        ph_y = two_pi_s * (ky[:, None, None] * (pix - shift[..., 1, None]))  # over y
        bg += p["bg_amp"][:, j].reshape(b) * np.cos(
            ph[:, :, None, :] + ph_y[:, :, :, None] + p["bg_phase"][:, j].reshape(b)
        )
    bg = np.where(bg > 0, f32(1), f32(-1))  # two tones: flat regions with wavy borders
    out = np.empty((n, t, size, size, 3), dtype=np.uint8)
    for c in range(3):
        lo, hi = p["colour_b"][:, c].reshape(b), p["colour_a"][:, c].reshape(b)
        obj = lo + (hi - lo) * tex
        back = p["bg_base"][:, c].reshape(b) + p["bg_tint"][:, c].reshape(b) * bg
        out[..., c] = np.rint(np.clip(back + mask * (obj - back), 0, 1) * 255)
    return out


class SyntheticMotion(ClipDataset):
    """``num_clips`` rendered clips of the first ``num_classes`` motion classes (balanced)."""

    def __init__(
        self,
        fmt: ClipFormat,
        num_clips: int,
        num_classes: int,
        split: Literal["train", "test"],
        *,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not 2 <= num_classes <= len(MOTION_CLASSES):
            raise ValueError(f"num_classes must lie in 2..{len(MOTION_CLASSES)}, got {num_classes}")
        self.split_id = _SPLIT_IDS[split]
        rng = np.random.default_rng([CONTENT_SEED, self.split_id])
        labels = rng.permutation(np.arange(num_clips) % num_classes)
        super().__init__(
            dataclasses.replace(fmt, frame_stride=1),
            labels,
            list(MOTION_CLASSES[:num_classes]),
            flip=False,
        )
        self.size = fmt.short_side
        self.split = split
        self.frames: np.ndarray | None = None
        """(N, T, S, S, 3) uint8 memory map when cached on disk."""
        if cache_dir is not None:
            key = (
                f"synthetic-v{RENDER_VERSION}-{split}-n{num_clips}-k{num_classes}-"
                f"t{fmt.num_frames}-s{self.size}-seed{CONTENT_SEED}"
            )
            shape = (num_clips, fmt.num_frames, self.size, self.size, 3)
            self.frames = cached_clips(
                Path(cache_dir) / f"{key}.npy",
                shape,
                self.render,
                desc=f"rendering synthetic {split} clips",
            )

    def params(self, index: int) -> MotionParams:
        """The parameters of clip ``index`` (a pure function of split and index)."""
        rng = np.random.default_rng([CONTENT_SEED, self.split_id, index])
        motion = self.class_names[int(self.labels[index])]
        return sample_params(rng, motion, self.size, self.fmt.num_frames)

    def render(self, start: int, stop: int) -> np.ndarray:
        """Clips ``start:stop`` as uint8 (N, T, S, S, 3)."""
        return render_clips([self.params(i) for i in range(start, stop)], self.size)

    def video_length(self, index: int) -> int:
        return self.fmt.num_frames

    def read_frames(self, index: int, frames: np.ndarray) -> np.ndarray:
        video = self.frames[index] if self.frames is not None else self.render(index, index + 1)[0]
        return np.asarray(video[frames])  # (T, S, S, 3)

    def source(self, index: int) -> str:
        return f"synthetic {self.split} clip {index}"
