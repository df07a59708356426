"""The embedded default image set: procedurally rendered shapes whose class is shape x texture.

Each image shows one object over a background. The class is the pair of
the object's outline (:data:`SHAPES`: disk, square, triangle, cross, ring,
star, bar, crescent) and its texture (stripes or a checkerboard), so telling
classes apart needs shape and texture; no colour carries the class. The
16 classes of :data:`IMAGE_CLASSES` are ordered shape by shape, so the first
10 (the default ``data.synthetic_classes``) are 5 shapes in both textures.

Nuisance, drawn per image and independent of the class: the object's
position (its centre anywhere in the middle 60% of each side), size (radius
0.24 to 0.38 of the side), rotation, texture period and angle, its two
colours (any hue; the second a darker shade of the first), and a background
of two tones of a random colour, cut along wavy low-frequency borders, that
may be brighter or darker than the object. A linear read-out of raw pixels
therefore does poorly, while features that see outline and texture wherever
they are separate the classes.

Content is a pure function of the split, the index and the image side (the
run seed does not change it): item ``i`` of a split is drawn from
``numpy.random.default_rng([CONTENT_SEED, split, i])`` and rendered on a
square of side ``ClipFormat.short_side`` (37 for a 32 crop, 73 for 64), so
the crop is a real augmentation. Images are rendered on the fly (numpy, one
thread: under 1 ms per image at 37 or 73 pixels, so a few thousand take
seconds) or once into a memory-mapped ``.npy`` file with ``cache_dir``. Horizontal flips keep every class, so training flips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bwssl.data.clip_cache import cached_clips
from bwssl.data.images import ImageClips
from bwssl.data.transforms import ClipFormat

SHAPES: tuple[str, ...] = (
    "disk",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "bar",
    "crescent",
)
"""Object outlines, in class order."""
TEXTURES: tuple[str, ...] = ("stripes", "checker")
"""Object textures, in class order."""
IMAGE_CLASSES: tuple[str, ...] = tuple(f"{s}_{t}" for s in SHAPES for t in TEXTURES)
"""Every class, ``SHAPE_TEXTURE``; a dataset with K classes uses the first K."""

CONTENT_SEED = 20261201
RENDER_VERSION = 1
"""Bumped when rendering changes (it keys the disk cache)."""
_SPLIT_IDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class ShapeParams:
    """Everything needed to render one image; lengths are in pixels, angles in radians."""

    shape: str
    texture: str
    centre: tuple[float, float]
    """(x, y) of the object's centre (x to the right, y down)."""
    radius: float
    angle: float
    tex_period: float
    """Texture period in pixels."""
    tex_angle: float
    colour_a: np.ndarray
    """(3,) the object's first colour in [0, 1]."""
    colour_b: np.ndarray
    """(3,) the object's second colour: a darker shade of the first."""
    bg_colour: np.ndarray
    """(3,) background base colour."""
    bg_tint: np.ndarray
    """(3,) half the colour difference between the background's two tones."""
    bg_k: np.ndarray
    """(2, 2) integer wave vectors of the background's borders."""
    bg_phase: np.ndarray
    """(2,) phases of the background waves."""


def sample_shape_params(rng: np.random.Generator, cls: str, size: int) -> ShapeParams:
    """Draw one image's parameters for class ``cls`` (``SHAPE_TEXTURE``) on a ``size`` square."""
    if cls not in IMAGE_CLASSES:
        raise ValueError(f"unknown image class {cls!r}; known: {', '.join(IMAGE_CLASSES)}")
    shape, texture = cls.split("_")
    s = float(size)
    radius = rng.uniform(0.24, 0.38) * s
    colour_a = rng.uniform(0.35, 1.0, 3)
    k = rng.integers(-2, 3, size=(2, 2))
    k[np.all(k == 0, axis=1)] = (1, 0)
    return ShapeParams(
        shape=shape,
        texture=texture,
        centre=(rng.uniform(0.2, 0.8) * s, rng.uniform(0.2, 0.8) * s),
        radius=radius,
        angle=rng.uniform(0, 2 * math.pi),
        tex_period=radius * rng.uniform(0.55, 0.8),
        tex_angle=rng.uniform(0, math.pi),
        colour_a=colour_a,
        colour_b=colour_a * rng.uniform(0.25, 0.55),
        bg_colour=rng.uniform(0.05, 0.9, 3),
        bg_tint=rng.uniform(0.02, 0.07, 3),
        bg_k=k.astype(np.float64),
        bg_phase=rng.uniform(0, 2 * math.pi, 2),
    )


def _outline(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance-like field of ``shape`` in units of the radius: > 0 inside."""
    r = np.sqrt(x * x + y * y)
    if shape == "disk":
        return 1.0 - r
    if shape == "square":
        return 0.85 - np.maximum(np.abs(x), np.abs(y))
    if shape == "triangle":  # equilateral, circumradius 1, inradius 1/2
        normals = [
            (math.cos(a), math.sin(a))
            for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))
        ]
        return np.min([0.5 - (nx * x + ny * y) for nx, ny in normals], axis=0) * 1.5
    if shape == "cross":
        ax, ay = np.abs(x), np.abs(y)
        return np.maximum(np.minimum(0.33 - ax, 1.0 - ay), np.minimum(0.33 - ay, 1.0 - ax))
    if shape == "ring":
        return np.minimum(1.0 - r, r - 0.55)
    if shape == "star":
        return 0.62 + 0.38 * np.cos(5 * np.arctan2(y, x)) - r
    if shape == "bar":
        return np.minimum(0.32 - np.abs(y), 1.0 - np.abs(x))
    if shape == "crescent":
        return np.minimum(1.0 - r, np.sqrt((x - 0.5) ** 2 + y * y) - 0.75)
    raise ValueError(f"unknown shape {shape!r}")


def render_shape(p: ShapeParams, size: int) -> np.ndarray:
    """uint8 RGB image (size, size, 3) of ``p`` (float32 numpy, one thread)."""
    f32 = np.float32
    pix = np.arange(size, dtype=f32) + f32(0.5)
    dx = pix[None, :] - f32(p.centre[0])  # (1, S)
    dy = pix[:, None] - f32(p.centre[1])  # (S, 1)
    cos, sin = f32(math.cos(p.angle)), f32(math.sin(p.angle))
    qx = (cos * dx + sin * dy) / f32(p.radius)  # (S, S), object frame, radius 1
    qy = (cos * dy - sin * dx) / f32(p.radius)
    z = _outline(p.shape, qx, qy).astype(f32) * f32(p.radius)  # about pixels from the edge
    mask = f32(0.5) + f32(0.5) * np.tanh(f32(0.75) * z)  # soft edge about a pixel wide
    w = f32(2 * math.pi / p.tex_period)
    ca, sa = f32(math.cos(p.tex_angle)), f32(math.sin(p.tex_angle))
    u, v = ca * dx + sa * dy, ca * dy - sa * dx
    wave = np.cos(w * u) if p.texture == "stripes" else np.cos(w * u) * np.cos(w * v)
    tex = f32(0.5) + f32(0.5) * np.tanh(f32(3.0) * wave)  # crisp two-shade pattern in [0, 1]
    two_pi_s = f32(2 * math.pi / size)
    waves = sum(
        np.cos(two_pi_s * (f32(kx) * pix[None, :] + f32(ky) * pix[:, None]) + f32(ph))
        for (kx, ky), ph in zip(p.bg_k, p.bg_phase, strict=True)
    )
    tone = np.where(waves > 0, f32(1), f32(-1))
    out = np.empty((size, size, 3), dtype=f32)
    for c in range(3):
        obj = f32(p.colour_b[c]) + f32(p.colour_a[c] - p.colour_b[c]) * tex
        back = f32(p.bg_colour[c]) + f32(p.bg_tint[c]) * tone
        out[..., c] = back + mask * (obj - back)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


class SyntheticShapes(ImageClips):
    """``num_images`` rendered images of the first ``num_classes`` classes (balanced),
    ``data.name=synthetic_images``."""

    def __init__(
        self,
        fmt: ClipFormat,
        num_images: int,
        num_classes: int,
        split: Literal["train", "test"],
        *,
        cache_dir: str | Path | None = None,
    ) -> None:
        if not 2 <= num_classes <= len(IMAGE_CLASSES):
            raise ValueError(f"num_classes must lie in 2..{len(IMAGE_CLASSES)}, got {num_classes}")
        self.split_id = _SPLIT_IDS[split]
        rng = np.random.default_rng([CONTENT_SEED, self.split_id])
        labels = rng.permutation(np.arange(num_images) % num_classes)
        super().__init__(fmt, labels, list(IMAGE_CLASSES[:num_classes]))
        self.size = fmt.short_side
        self.split = split
        self.pixels: np.ndarray | None = None
        """(N, 1, S, S, 3) uint8 memory map when cached on disk."""
        if cache_dir is not None:
            key = (
                f"shapes-v{RENDER_VERSION}-{split}-n{num_images}-k{num_classes}-"
                f"s{self.size}-seed{CONTENT_SEED}"
            )
            self.pixels = cached_clips(
                Path(cache_dir) / f"{key}.npy",
                (num_images, 1, self.size, self.size, 3),
                lambda a, b: self.render(a, b)[:, None],
                desc=f"rendering synthetic {split} images",
            )

    def params(self, index: int) -> ShapeParams:
        """The parameters of image ``index`` (a pure function of split and index)."""
        rng = np.random.default_rng([CONTENT_SEED, self.split_id, index])
        return sample_shape_params(rng, self.class_names[int(self.labels[index])], self.size)

    def render(self, start: int, stop: int) -> np.ndarray:
        """Images ``start:stop`` as uint8 (N, S, S, 3)."""
        return np.stack([render_shape(self.params(i), self.size) for i in range(start, stop)])

    def read_image(self, index: int) -> np.ndarray:
        if self.pixels is not None:
            return np.asarray(self.pixels[index, 0])
        return render_shape(self.params(index), self.size)

    def source(self, index: int) -> str:
        return f"synthetic {self.split} image {index}"
