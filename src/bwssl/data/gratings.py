"""Drifting gratings: the feature-complexity probes (Level 1 full field, Level 2 hemifields).

Units and conventions (the paper's released evaluation code got these wrong):

- Field: the clip spans [-1, 1] in x (left to right) and y (bottom to top;
  row 0 is the top). Pixel centres: x_j = -1 + (2j + 1) / W,
  y_i = 1 - (2i + 1) / H.
- Spatial frequency ``sf``: cycles over the field width (2 units), i.e. a
  period of W / sf pixels. Every sf must stay below the spatial Nyquist
  limit, sf < W / 2.
- Temporal frequency ``tf``: cycles per clip frame, 0 <= tf < 0.5, so no
  value aliases onto another (or onto a reversed drift). The protocol's Hz
  values at 6.25 frames/s (0.5 to 8 Hz; 4, 6 and 8 Hz alias) are replaced by
  the same ratios scaled to fit below Nyquist: Level 1 tf = Hz * 3/64
  (0.0234 to 0.375 cycles/frame), Level 2 tf = Hz / 32 (0.0625 to 0.25).
- Orientation ``theta``: the drift direction in degrees, counter-clockwise
  from +x with y up: 0 drifts right (vertical bars), 90 drifts up (towards
  row 0), 180 left, 270 down. The luminance is::

      L(x, y, t) = 0.5 + 0.5 * contrast * sin(2 pi (sf / 2 * (x cos theta + y sin theta)
                                                   - tf * t) + phase)

  so the pattern moves by tf * W / sf pixels per frame along theta.
- Colour: the RGB pixel is ``L * colour`` (gray (1, 1, 1), red (1, 0, 0),
  green (0, 1, 0), blue (0, 0, 1), orange (1, 0.55, 0)); one-channel clips
  take its luma.
- Level 2: two gratings drawn over the whole field; columns x < W/2 show the
  left one, the rest the right one. Both share tf, contrast and colour;
  ``orientation_delta`` = theta_right - theta_left and ``sf_delta`` =
  sf_right - sf_left (signed, right minus left).

Labels are integer class indices fixed by the parameter grid (the index of
each value in the grid, or of each derived value among all values the full
grid can produce), computed once when the dataset is built: identical in
every worker, and the same for any ``max_items`` subsample. Clips are
rendered on the fly (deterministic by ``seed``: the seed sets each clip's
starting phases), quantized to 8 bits and normalized by the same
:func:`~bwssl.data.transforms.clip_tensor` as training clips.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bwssl.data.clip_cache import cached_clips
from bwssl.data.transforms import ClipFormat, clip_tensor

if TYPE_CHECKING:
    from bwssl.config import DataConfig

logger = logging.getLogger(__name__)

COLOURS: dict[str, tuple[float, float, float]] = {
    "gray": (1.0, 1.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "orange": (1.0, 0.55, 0.0),
}
"""RGB gain of each colour; a grating's pixel is its luminance times this."""

LEVEL1_TARGETS: tuple[str, ...] = ("sf", "tf", "orientation", "contrast", "colour")
LEVEL2_TARGETS: tuple[str, ...] = (
    "sf_left",
    "sf_right",
    "orientation_left",
    "orientation_right",
    "sf_delta",
    "sf_higher_side",
    "sf_match",
    "orientation_delta",
    "orientation_match",
)


@dataclass(frozen=True)
class GratingGrid:
    """The parameter values of a grating family; every combination is one clip.

    Level 2 uses ``sf`` for both sides and ``orientation`` for the left
    grating; ``orientation_delta`` (Level 2 only) gives the right one.
    """

    sf: tuple[float, ...]
    """Spatial frequencies, cycles over the field width."""
    tf: tuple[float, ...]
    """Temporal frequencies, cycles per frame, in [0, 0.5)."""
    orientation: tuple[float, ...]
    """Drift directions, degrees counter-clockwise from +x (y up), in [0, 360)."""
    contrast: tuple[float, ...]
    """Michelson contrasts in (0, 1]."""
    colour: tuple[str, ...] = ("gray",)
    """Names from :data:`COLOURS`."""
    orientation_delta: tuple[float, ...] = ()
    """Level 2: theta_right - theta_left, degrees."""

    def __post_init__(self) -> None:
        for name in ("sf", "tf", "orientation", "contrast", "colour", "orientation_delta"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"grating grid {name} has repeated values: {values}")
        if not self.sf or min(self.sf) <= 0:
            raise ValueError(f"grating sf must be positive cycles per field, got {self.sf}")
        if not self.tf or not all(0 <= f < 0.5 for f in self.tf):
            raise ValueError(
                f"grating tf must lie in [0, 0.5) cycles per frame (below the "
                f"temporal Nyquist limit, else it aliases), got {self.tf}"
            )
        if not self.orientation or not all(0 <= o < 360 for o in self.orientation):
            raise ValueError(
                f"grating orientation must lie in [0, 360) degrees, got {self.orientation}"
            )
        if not self.contrast or not all(0 < c <= 1 for c in self.contrast):
            raise ValueError(f"grating contrast must lie in (0, 1], got {self.contrast}")
        unknown = [c for c in self.colour if c not in COLOURS]
        if not self.colour or unknown:
            raise ValueError(f"unknown grating colours {unknown}; known: {', '.join(COLOURS)}")

    @classmethod
    def level1(cls) -> GratingGrid:
        """The protocol's Level 1 grid (10,800 clips), tf in cycles per frame (Hz * 3/64)."""
        return cls(
            sf=(4, 8, 12, 16, 20, 24),
            tf=tuple(hz * 3 / 64 for hz in (0.5, 1, 2, 4, 6, 8)),
            orientation=tuple(float(o) for o in range(0, 360, 30)),
            contrast=(0.2, 0.4, 0.6, 0.8, 1.0),
            colour=("gray", "red", "green", "blue", "orange"),
        )

    @classmethod
    def level2(cls) -> GratingGrid:
        """The protocol's Level 2 grid (15,552 clips), tf in cycles per frame (Hz / 32)."""
        return cls(
            sf=(4, 10, 16),
            tf=tuple(hz / 32 for hz in (2, 5, 8)),
            orientation=tuple(float(o) for o in range(0, 360, 30)),
            contrast=(0.33, 0.67, 1.0),
            colour=("gray", "red", "green", "blue"),
            orientation_delta=(0.0, 45.0, 90.0, 135.0),
        )

    @classmethod
    def default(cls, level: int, size: int) -> GratingGrid:
        """The protocol grid of ``level`` without the sf values a ``size`` clip cannot show."""
        grid = cls.level1() if level == 1 else cls.level2()
        keep = tuple(f for f in grid.sf if f < size / 2)
        if len(keep) < len(grid.sf):
            logger.warning(
                "gratings on %d-pixel clips: dropping sf %s (at or above the spatial "
                "Nyquist limit of %g cycles)",
                size,
                [f for f in grid.sf if f not in keep],
                size / 2,
            )
        if not keep:
            raise ValueError(f"{size}-pixel clips are too small for any grating sf in {grid.sf}")
        return replace(grid, sf=keep)

    def check_size(self, size: int) -> None:
        """Raise if some sf aliases on a ``size``-pixel clip."""
        if max(self.sf) >= size / 2:
            raise ValueError(
                f"grating sf {max(self.sf)} is at or above the spatial Nyquist "
                f"limit of a {size}-pixel clip ({size / 2} cycles); use smaller sf "
                f"or GratingGrid.default(level, size)"
            )


def _name(v: float) -> str:
    return f"{v:g}"


def render_grating(
    sf: float,
    tf: float,
    orientation: float,
    contrast: float,
    colour: str,
    phase: float,
    num_frames: int,
    size: int,
) -> np.ndarray:
    """One full-field drifting grating as float64 RGB (T, H, W, 3) in [0, 1] (module doc)."""
    coords = -1 + (2 * np.arange(size) + 1) / size
    x, y = coords[None, None, :], -coords[None, :, None]  # (1, 1, W), (1, H, 1), y up
    theta = math.radians(orientation)
    t = np.arange(num_frames, dtype=np.float64)[:, None, None]
    arg = 2 * np.pi * (sf / 2 * (x * math.cos(theta) + y * math.sin(theta)) - tf * t) + phase
    lum = 0.5 + 0.5 * contrast * np.sin(arg)  # (T, H, W)
    return lum[..., None] * np.asarray(COLOURS[colour])  # (T, H, W, 3)


class GratingDataset(torch.utils.data.Dataset):
    """Level 1 or Level 2 drifting-grating clips with integer targets.

    ``dataset[i]`` is a normalized float32 clip (C, T, size, size);
    ``targets[name][i]`` its class index for each target and
    ``target_classes[name]`` the class names. ``max_items`` takes a seeded
    subsample of the full grid, balanced per grid factor (each value of each
    factor appears equally often, to within one). With ``cache_dir`` the
    clips are rendered once into a memory-mapped file.
    """

    def __init__(
        self,
        level: int,
        num_frames: int,
        size: int,
        channels: int = 3,
        *,
        grid: GratingGrid | None = None,
        max_items: int | None = None,
        seed: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        if level not in (1, 2):
            raise ValueError(f"grating level must be 1 or 2, got {level}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if grid is None:
            grid = GratingGrid.default(level, size)
        else:
            grid.check_size(size)
        if level == 2 and not grid.orientation_delta:
            raise ValueError("a Level 2 grid needs orientation_delta values")
        if channels == 1 and grid.colour != ("gray",):
            raise ValueError(
                f"one-channel gratings cannot show colours {grid.colour}; use colour=('gray',)"
            )
        self.level, self.grid, self.seed = level, grid, seed
        self.fmt = ClipFormat(num_frames, 1, size, channels, resize="none")
        self.factors: dict[str, tuple[Any, ...]] = (
            {
                "sf": grid.sf,
                "tf": grid.tf,
                "orientation": grid.orientation,
                "contrast": grid.contrast,
                "colour": grid.colour,
            }
            if level == 1
            else {
                "sf_left": grid.sf,
                "sf_right": grid.sf,
                "orientation_left": grid.orientation,
                "orientation_delta": grid.orientation_delta,
                "tf": grid.tf,
                "contrast": grid.contrast,
                "colour": grid.colour,
            }
        )
        """Factor name -> its values; clip i uses value ``combos[i, f]`` of factor f."""
        sizes = tuple(len(v) for v in self.factors.values())
        self.combos = _subsample(sizes, max_items, seed)  # (N, F) value indices
        self.flat_index = np.ravel_multi_index(tuple(self.combos.T), sizes)
        """(N,) position of each clip in the full grid (sets its phases with the seed)."""
        self.targets: dict[str, np.ndarray] = {}
        self.target_classes: dict[str, list[str]] = {}
        self._build_targets()
        self.frames: np.ndarray | None = None
        if cache_dir is not None:
            digest = hashlib.sha1(
                repr((level, grid, num_frames, size, seed, max_items)).encode()
            ).hexdigest()[:12]
            self.frames = cached_clips(
                Path(cache_dir) / f"gratings-l{level}-n{len(self)}-t{num_frames}-s{size}-"
                f"{digest}.npy",
                (len(self), num_frames, size, size, 3),
                self.render,
                desc=f"rendering level {level} gratings",
            )

    @classmethod
    def from_config(cls, cfg: DataConfig, level: int, **kwargs: Any) -> GratingDataset:
        """Gratings in the clip format of ``cfg`` (frames, crop size, channels)."""
        return cls(level, cfg.num_frames, cfg.crop_size, cfg.channels, **kwargs)

    def __len__(self) -> int:
        return len(self.combos)

    def _value(self, factor: str) -> np.ndarray:
        """(N,) parameter value of ``factor`` for every clip."""
        col = list(self.factors).index(factor)
        return np.asarray(self.factors[factor])[self.combos[:, col]]

    def _set(
        self, name: str, values: np.ndarray, classes: list[Any], names: list[str] | None = None
    ) -> None:
        lookup = {v: i for i, v in enumerate(classes)}
        if len(classes) < 2:
            return  # a target with one class cannot be probed
        self.targets[name] = np.array([lookup[v] for v in values.tolist()], dtype=np.int64)
        self.target_classes[name] = names if names is not None else [_name(v) for v in classes]

    def _build_targets(self) -> None:
        g = self.grid
        if self.level == 1:
            for f in LEVEL1_TARGETS:
                values = list(self.factors[f])
                self._set(f, self._value(f), values, values if f == "colour" else None)
            return
        sf_l, sf_r = self._value("sf_left"), self._value("sf_right")
        th_l, d_th = self._value("orientation_left"), self._value("orientation_delta")
        self._set("sf_left", sf_l, list(g.sf))
        self._set("sf_right", sf_r, list(g.sf))
        self._set("orientation_left", th_l, list(g.orientation))
        all_right = sorted({(a + d) % 360 for a in g.orientation for d in g.orientation_delta})
        self._set("orientation_right", (th_l + d_th) % 360, all_right)
        deltas = sorted({b - a for a in g.sf for b in g.sf})
        self._set("sf_delta", sf_r - sf_l, deltas, [f"{v:+g}" for v in deltas])
        side = np.where(sf_l > sf_r, "left", np.where(sf_r > sf_l, "right", "equal"))
        self._set("sf_higher_side", side, ["left", "equal", "right"], ["left", "equal", "right"])
        self._set("sf_match", (sf_l == sf_r).astype(int), [0, 1], ["mismatch", "match"])
        self._set("orientation_delta", d_th, list(g.orientation_delta))
        self._set("orientation_match", (d_th % 360 == 0).astype(int), [0, 1], ["mismatch", "match"])

    def params(self, index: int) -> dict[str, Any]:
        """The parameter values of clip ``index`` and its starting phase(s)."""
        out: dict[str, Any] = {
            f: vals[int(self.combos[index, k])] for k, (f, vals) in enumerate(self.factors.items())
        }
        rng = np.random.default_rng([self.seed, self.level, int(self.flat_index[index])])
        phases = rng.uniform(0, 2 * np.pi, 2)
        out["phase"] = float(phases[0])
        if self.level == 2:
            out["phase_right"] = float(phases[1])
        return out

    def render(self, start: int, stop: int) -> np.ndarray:
        """Clips ``start:stop`` as uint8 RGB (N, T, H, W, 3)."""
        t, s = self.fmt.num_frames, self.fmt.crop_size
        out = np.empty((stop - start, t, s, s, 3), dtype=np.uint8)
        for n, i in enumerate(range(start, stop)):
            p = self.params(i)
            if self.level == 1:
                rgb = render_grating(
                    p["sf"], p["tf"], p["orientation"], p["contrast"], p["colour"], p["phase"], t, s
                )
            else:
                common = (p["contrast"], p["colour"])
                left = render_grating(
                    p["sf_left"], p["tf"], p["orientation_left"], *common, p["phase"], t, s
                )
                right = render_grating(
                    p["sf_right"],
                    p["tf"],
                    (p["orientation_left"] + p["orientation_delta"]) % 360,
                    *common,
                    p["phase_right"],
                    t,
                    s,
                )
                rgb = np.concatenate([left[:, :, : s // 2], right[:, :, s // 2 :]], axis=2)
            out[n] = np.rint(rgb * 255)
        return out

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} gratings")
        frames = self.frames[index] if self.frames is not None else self.render(index, index + 1)[0]
        s = self.fmt.crop_size
        return clip_tensor(np.asarray(frames), (0, 0, s), False, self.fmt)  # (C, T, H, W)


def _subsample(sizes: tuple[int, ...], max_items: int | None, seed: int) -> np.ndarray:
    """(N, F) factor-value indices: the full grid, or ``max_items`` combinations balanced per
    factor (each factor's values appear equally often, to within one; no repeats)."""
    total = math.prod(sizes)
    if max_items is None or max_items >= total:
        return np.stack(np.unravel_index(np.arange(total), sizes), axis=1).astype(np.int64)
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    rng = np.random.default_rng([seed, 7919])
    combos = np.stack([rng.permutation(np.resize(np.arange(n), max_items)) for n in sizes], 1)
    flat = np.ravel_multi_index(tuple(combos.T), sizes)
    _, first = np.unique(flat, return_index=True)
    repeats = np.setdiff1d(np.arange(max_items), first)
    if len(repeats):  # rare: replace repeated combinations by unused ones
        unused = np.setdiff1d(np.arange(total), flat)
        flat[repeats] = rng.choice(unused, len(repeats), replace=False)
    flat = np.sort(flat)
    return np.stack(np.unravel_index(flat, sizes), axis=1).astype(np.int64)
