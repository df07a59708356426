"""Example stimuli of the feature-complexity probes, drawn under the Level-1 / Level-2 figure
(as the paper's Fig. 3 shows them): a few frames of each kind of grating, rendered in the
runs' clip format (their ``setup`` rows; 16 frames of 128x128 when the rows have none) by
the very renderer the analysis probes with (:mod:`bwssl.data.gratings`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bwssl.analysis.results import ResultRow
from bwssl.data.gratings import GratingGrid, render_grating
from bwssl.report.panels import save

FRAMES_SHOWN = 3
"""Frames per example: the first, the middle and the last of the clip."""


def clip_format(rows: Sequence[ResultRow]) -> tuple[int, int, int]:
    """(frames, crop size, channels) of most runs of ``rows``, from their ``setup`` rows."""
    facts: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.metric == "setup" and r.target in ("num_frames", "crop_size", "channels"):
            facts.setdefault(r.run, {})[r.target] = r.value
    formats = Counter(
        (int(f["num_frames"]), int(f["crop_size"]), int(f.get("channels", 3)))
        for f in facts.values()
        if {"num_frames", "crop_size"} <= f.keys()
    )
    return formats.most_common(1)[0][0] if formats else (16, 128, 3)


def examples(frames: int, size: int) -> list[tuple[str, np.ndarray]]:
    """(title, clip (T, H, W, 3) in [0, 1]) of each grating kind: Level 1 across sf,
    orientation, contrast and colour; Level 2 with matching and mismatching hemifields."""
    g1, g2 = GratingGrid.default(1, size), GratingGrid.default(2, size)
    tf1, tf2 = g1.tf[len(g1.tf) // 2], g2.tf[len(g2.tf) // 2]
    sf_lo, sf_mid, sf_hi = g1.sf[0], g1.sf[len(g1.sf) // 2], g1.sf[-1]
    out = []
    for sf, theta, contrast, colour in (
        (sf_lo, 0.0, 1.0, "gray"),
        (sf_mid, 60.0, 0.6, "red"),
        (sf_hi, 270.0, 1.0, "blue"),
        (sf_mid, 150.0, 0.2, "orange"),
    ):
        clip = render_grating(sf, tf1, theta, contrast, colour, 0.0, frames, size)
        out.append((f"L1: sf {sf:g}, {theta:g}\u00b0\n{colour}, contrast {contrast:g}", clip))
    lo, hi = g2.sf[0], g2.sf[-1]
    for sf_l, sf_r, theta, delta, what in (
        (lo, hi, 0.0, 0.0, "sf mismatch"),
        (hi, hi, 30.0, 90.0, "sf match, \u0394\u03b8 90\u00b0"),
        (lo, lo, 120.0, 0.0, "both match"),
    ):
        left = render_grating(sf_l, tf2, theta, 1.0, "gray", 0.0, frames, size)
        right = render_grating(sf_r, tf2, (theta + delta) % 360, 1.0, "gray", 1.0, frames, size)
        clip = np.concatenate([left[:, :, : size // 2], right[:, :, size // 2 :]], axis=2)
        out.append((f"L2: sf {sf_l:g} | {sf_r:g}\n{what}", clip))
    return out


def fig3_stimuli(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """Columns = example gratings, rows = frames; drawn only with grating probe rows."""
    if not any(r.metric in ("probe_l1", "probe_l2") for r in rows):
        return []
    frames, size, channels = clip_format(rows)
    shown = sorted({0, (frames - 1) // 2, frames - 1})[:FRAMES_SHOWN]
    items = examples(frames, size)
    fig = Figure(figsize=(1.6 * len(items), 1.6 * len(shown) + 0.6))
    axes = fig.subplots(len(shown), len(items), squeeze=False)
    for j, (title, clip) in enumerate(items):
        if channels == 1:  # what a one-channel model sees: the luma
            luma = clip @ np.array([0.299, 0.587, 0.114])
            clip = np.repeat(luma[..., None], 3, axis=-1)
        for i, t in enumerate(shown):
            ax = axes[i][j]
            ax.imshow(np.clip(clip[t], 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"frame {t + 1}/{frames}", fontsize=8)
    fig.suptitle(f"Example stimuli ({frames} frames, {size}x{size} pixels)", fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, "fig3_stimuli")
