"""What each metric needs of its clips, and the record of metrics skipped for lack of it.

A small evaluation set (a user's few videos, a 1-clip subsample) must not
crash the suite: before computing, a metric family asks the function for its
metric; a non-empty answer is the reason it cannot be computed, and the
metric is skipped with that one line (:meth:`RunContext.skip
<bwssl.analysis.context.RunContext.skip>`), the run still writing its other
rows. The suite writes the skipped metrics to ``skipped.csv`` beside
``results.csv``; the report lists them.

=================  ==========================================================
metric             needs
=================  ==========================================================
``probe_acc``,     2+ classes among the readable training clips, 1+ test clip
``knn_acc``
``map``            2+ test clips, and a class with 2+ of them (a query needs a
                   relevant item in its gallery)
``cka_next``       2+ test clips (CKA centres over clips)
``feature_std``    2+ test clips (a spread across clips)
``local_loss``,    a batch of at least the objective's ``min_batch`` test clips
``mse``
grating probes     per target, 2+ classes with at least 2 gratings each
                   (stratified folds); fewer folds than asked when a class is
                   smaller; the ``tf`` target 2+ frames per clip (a one-frame
                   clip is a still grating: its orientation is then read
                   modulo 180 degrees, as the drift direction is not seen)
``occdrop_l1``,    a patch-token backbone (the video ViT: the occluded clips
``occdrop_l2``     keep whole tokens), or a kept pixel window that tiles the
                   crop (a ResNet: ``occlusion_window``, by default a quarter
                   of the crop)
=================  ==========================================================
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from bwssl.base.files import atomic_write_text

SKIPPED_FILE = "skipped.csv"
"""The table of skipped metrics, beside results.csv."""
SKIPPED_COLUMNS = ("run", "metric", "reason")


@dataclass(frozen=True)
class SkippedMetric:
    """A metric of a run that was not computed, and why."""

    run: str
    metric: str
    reason: str


def probe_needs(train_labels: np.ndarray, test_labels: np.ndarray) -> str:
    """Why a classifier read-out (linear probe, kNN) cannot be fitted and scored on these
    labels ("" when it can)."""
    classes = len(np.unique(train_labels))
    if classes < 2:
        return f"a classifier needs 2+ classes among the training clips, they hold {classes}"
    if len(test_labels) < 1:
        return "a classifier needs 1+ test clip, there is none"
    return ""


def retrieval_needs(labels: np.ndarray) -> str:
    """Why retrieval mAP is undefined on these test labels ("" when it is defined)."""
    if len(labels) < 2:
        return f"retrieval needs 2+ test clips, there are {len(labels)}"
    if np.unique(labels, return_counts=True)[1].max() < 2:
        return f"retrieval needs a class with 2+ test clips; the {len(labels)} clips all differ"
    return ""


def clips_needed(metric: str, clips: int, need: int = 2) -> str:
    """Why ``metric`` cannot be computed on ``clips`` test clips when it needs ``need``."""
    if clips < need:
        return f"{metric} needs {need}+ test clips, there are {clips}"
    return ""


def cv_needs(labels: np.ndarray, folds: int) -> str:
    """Why a stratified cross-validated probe cannot run on ``labels`` ("" when it can, maybe
    with fewer folds than ``folds``: as many as the smallest class has members)."""
    counts = np.unique(labels, return_counts=True)[1]
    usable = int((counts >= 2).sum())
    if usable < 2:
        return (
            f"a cross-validated probe needs 2+ classes with 2+ clips each (for {folds} folds), "
            f"{usable} of {len(counts)} classes have them"
        )
    return ""


def frames_needed(target: str, num_frames: int) -> str:
    """Why a grating ``target`` cannot be read from clips of ``num_frames`` frames ("" when it
    can): temporal frequency needs motion, so 2+ frames."""
    if target == "tf" and num_frames < 2:
        return f"grating target tf needs 2+ frames per clip (motion), clips have {num_frames}"
    return ""


def token_grid_needs(backbone: object) -> str:
    """Why ``backbone`` has no (T', H', W') patch-token grid to state ("" when it has one, as
    the video ViT does; a ResNet has none)."""
    if getattr(backbone, "grid", None) is None:
        return f"a {type(backbone).__name__} has no patch-token grid"
    return ""


def occlusion_needs(backbone: object, crop_size: int, window: int | None = None) -> str:
    """Why OccDrop cannot occlude the input of ``backbone`` ("" when it can). A patch-token
    backbone keeps whole token patches, which tile its clips by construction; one without a
    token grid (a ResNet) keeps a square pixel window of side ``window`` (None: a quarter of
    the crop, :func:`~bwssl.analysis.occlusion.window_side`), which must tile the crop."""
    from bwssl.analysis.occlusion import window_side

    if getattr(backbone, "grid", None) is not None:
        return ""
    side = window_side(crop_size, window)
    if crop_size % side:
        return (
            f"OccDrop's {side}-pixel window does not tile the {crop_size}-pixel crop; "
            f"set occlusion_window to a divisor of {crop_size}"
        )
    return ""


def write_skipped(path: Path, skipped: Iterable[SkippedMetric]) -> None:
    """Write ``skipped.csv`` (the header alone when nothing was skipped), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SKIPPED_COLUMNS)
    writer.writerows(astuple(s) for s in sorted(set(skipped), key=astuple))
    atomic_write_text(path, buf.getvalue())


def read_skipped(path: Path) -> list[SkippedMetric]:
    """The rows of a ``skipped.csv`` (none when the file does not exist)."""
    if not Path(path).is_file():
        return []
    with Path(path).open(newline="") as f:
        return [SkippedMetric(r["run"], r["metric"], r["reason"]) for r in csv.DictReader(f)]
