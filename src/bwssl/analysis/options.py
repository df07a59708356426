"""What the analysis suite computes and how: :class:`AnalysisOptions` (``bwssl analyze ...
KEY=VALUE``), the clips it analyses (:class:`DataOverrides`) and the metric names."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bwssl.config import ConfigError, DataConfig, coerce

if TYPE_CHECKING:
    import torch

METRICS: tuple[str, ...] = (
    "probe_acc",
    "knn_acc",
    "map",
    "mse",
    "local_loss",
    "probe_l1",
    "probe_l2",
    "cka_next",
    "occdrop_l1",
    "occdrop_l2",
    "cps",
    "feature_std",
    "setup",
)
"""Every metric of the suite, in the order they are computed (``setup``: the facts the
numbers stand on, no measurement)."""

HEAD_METRICS: dict[str, str] = {
    "probe_acc": "probe_acc_head",
    "knn_acc": "knn_acc_head",
    "map": "map_head",
}
"""The metrics also computed on the heads' pooled vectors (``features`` includes ``head``),
and the metric name of those rows: one name per kind of features keeps one value per row of
the tidy table, and every reader of ``probe_acc`` reads the backbone's features as before."""

FEATURE_KINDS: tuple[str, ...] = ("backbone", "head")
"""What the probes can read: ``backbone``, each block's output pooled by the backbone (the
token mean of the ViT, the global average of a ResNet); ``head``, the vector its head pools
before the projector (a CbE head's expansion), where the run's heads have one of their own."""

RESULTS_VERSION = 5
"""Bumped when a metric's definition changes: cached per-run results are recomputed (2: masks
of ``mse`` drawn from the step key; ``local_loss``; the ``objective`` column; 3: VideoMAE's
mask count, per-clip OccDrop with a grey fill, the ``stderr`` and ``protocol`` columns and
the ``setup`` rows; 4: OccDrop on ResNets over pixel windows, which version 3 skipped, and
their ``occlusion_window`` setup row; a ViT's numbers are unchanged; 5: the ``test_clips``
and ``train_steps`` setup rows, no number changed)."""


@dataclass
class DataOverrides:
    """Changes to the analysed runs' data config (``data.KEY=VALUE``); unset keys keep the run's.

    The clip format the model was built for (``num_frames``, ``crop_size``,
    ``channels``) cannot be changed. Giving ``root`` or ``frames_root``
    without ``name`` selects UCF101.
    """

    name: Literal["auto", "synthetic", "ucf101", "hmdb51", "kinetics", "ssv2", "folder"] | None = (
        None
    )
    """Dataset: ``synthetic`` (embedded) or a video dataset (see ``DataConfig.name``)."""
    root: str | None = None
    """The video dataset's folder."""
    frames_root: str | None = None
    """UCF101 pre-extracted frame folders."""
    split_dir: str | None = None
    """The split lists or annotations (see ``DataConfig.split_dir``)."""
    split: int | None = None
    """UCF101 or HMDB51 official split (1, 2, 3)."""
    frame_stride: int | None = None
    """Frames between sampled clip frames."""
    resize: Literal["short_side", "none"] | None = None
    """Resize policy before the crop."""
    resize_to: int | None = None
    """Short side before the crop."""
    eval_fraction: float | None = None
    """Video datasets: fraction of the test split analysed (seeded by ``seed``)."""
    allow_missing: bool | None = None
    """Video datasets: go on when listed files are missing."""
    max_unreadable_fraction: float | None = None
    """Stop when more than this fraction of clips cannot be read."""
    synthetic_train: int | None = None
    """Synthetic data: training clips (the probes' training set)."""
    synthetic_test: int | None = None
    """Synthetic data: test clips."""
    synthetic_classes: int | None = None
    """Synthetic data: motion classes."""
    cache_dir: str | None = None
    """Folder for the UCF101 index and rendered clips."""

    def apply(self, data: DataConfig) -> DataConfig:
        """``data`` with these overrides, validated."""
        changes = {k: v for k, v in asdict(self).items() if v is not None}
        if not changes:
            return data
        merged = {**asdict(data), **changes}
        if ("root" in changes or "frames_root" in changes) and "name" not in changes:
            merged["name"] = "ucf101"
        return coerce(DataConfig, merged, "data")


@dataclass
class AnalysisOptions:
    """What the analysis suite computes and how (``bwssl analyze ... KEY=VALUE``).

    The defaults run the whole suite on one run of the ``demo`` model in
    about a minute on two CPU cores.
    """

    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    """Metrics to compute (any of :data:`METRICS`)."""
    probe_repeats: int = 3
    """Fits of the action probe per block; repeat r trains on its own seeded subsample."""
    probe_fraction: float = 0.9
    """Fraction of the training clips each action-probe repeat fits on (1.0: all of them,
    the paper's protocol, where lbfgs makes the repeats identical)."""
    probe_max_iter: int = 1000
    """Iteration cap of every probe (sklearn's ``max_iter``)."""
    knn_k: int = 200
    """``knn_acc``: neighbours per test clip (clipped to the training clips); drop
    ``knn_acc`` from ``metrics`` to skip the kNN monitor."""
    knn_temperature: float = 0.07
    """``knn_acc``: T of the neighbours' votes exp(cosine similarity / T)."""
    features: list[str] = field(default_factory=lambda: list(FEATURE_KINDS))
    """Features ``probe_acc``, ``knn_acc`` and ``map`` read (any of :data:`FEATURE_KINDS`):
    ``head`` rows are named as :data:`HEAD_METRICS` says and exist only for runs whose heads
    pool a vector other than the backbone's (none for decoders, ``pooling=backbone``, or
    ``gsp`` where the backbone's own pooling is a global average too)."""
    grating_clips: int | None = 240
    """Gratings per level: a seeded subsample of the protocol grid, balanced per factor; null:
    the full grids (10,800 Level-1 and 15,552 Level-2 clips in RGB), as the paper probes."""
    grating_folds: int = 5
    """Folds of the stratified cross-validation of the grating probes."""
    occlusion: Literal["per_clip", "fixed"] = "per_clip"
    """Where OccDrop keeps its patch: ``per_clip``, one random location per clip (Level 2: one
    per hemifield) and one probe over the mixed locations (the paper's protocol); ``fixed``,
    ``occlusion_locations`` locations shared by all clips, one probe each, averaged."""
    occlusion_fill: Literal["grey", "black"] = "grey"
    """What occluded pixels become: ``grey``, 0 in the model's (normalized) input space, the
    mean pixel (the paper's protocol); ``black``, pixel value 0."""
    occlusion_locations: int | None = 4
    """``occlusion=fixed``: patch locations (Level 1) and hemifield patch pairs (Level 2) per
    OccDrop, drawn with ``seed``; null: every patch (and every mirror-symmetric pair)."""
    occlusion_window: int | None = None
    """OccDrop on a backbone without a patch-token grid (a ResNet): the side in pixels of the
    kept square window, which must divide the crop size (the windows tile the frame as the
    ViT's patches do); null: a quarter of the crop (8 pixels on 32-pixel images), a 4x4 grid.
    A ViT keeps one token patch and ignores it."""
    cps_clips: int = 32
    """Test clips whose full tokens are kept for CPS."""
    mse_clips: int | None = 128
    """Test clips of the local losses (and the reconstruction MSE); null: every test clip (the
    whole evaluation subset, as the paper)."""
    cka: Literal["linear", "rbf", "both"] = "linear"
    """CKA between successive blocks: linear (target ""), RBF (target ``rbf``), or both."""
    seed: int = 0
    """Seeds every subsample, fold split, mask and occlusion location."""
    batch_size: int = 32
    """Clips per forward pass."""
    num_workers: int = 0
    """Data-loader worker processes."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``; probes run there too."""
    cpu_threads: int | None = 1
    """torch and BLAS threads while a run is analysed (restored afterwards); null keeps the
    current settings. One by default: the suite is many small operations (a second thread
    saves a quarter of the demo's feature extraction on an idle machine), and threads that
    busy-wait for a core held by another process made it 20x slower on a shared 2-core one."""
    progress: bool = True
    """Show progress bars."""
    figures: bool = True
    """``bwssl analyze`` draws the figures after the table (the suite itself draws none)."""
    cache_dir: str | None = None
    """Feature cache folder (default: OUT/features)."""
    data: DataOverrides = field(default_factory=DataOverrides)
    """Which clips to analyse, as changes to each run's data config (``data.root=...``)."""
    hf_num_blocks: int = 4
    """Hugging Face checkpoints: K, the number of blocks the encoder is cut into."""
    hf_boundaries: list[int] | None = None
    """Hugging Face checkpoints: explicit cut points (see ``model.boundaries``)."""
    hf_regime: str = "hf"
    """Hugging Face checkpoints: the regime column of their rows."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ConfigError(
                f"config key 'metrics': unknown {unknown} (allowed: {', '.join(METRICS)})"
                if unknown
                else "config key 'metrics': give at least one metric"
            )
        positive = (
            "probe_repeats",
            "probe_max_iter",
            "grating_clips",
            "cps_clips",
            "mse_clips",
            "batch_size",
            "hf_num_blocks",
            "knn_k",
        )
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"config key '{name}': must be >= 1, got {getattr(self, name)}")
        bad = [f for f in self.features if f not in FEATURE_KINDS]
        if bad or not self.features:
            raise ConfigError(
                f"config key 'features': allowed: {', '.join(FEATURE_KINDS)} (one or both), "
                f"got {self.features}"
            )
        if not self.knn_temperature > 0 or not math.isfinite(self.knn_temperature):
            raise ConfigError(
                f"config key 'knn_temperature': must be a finite number > 0, got "
                f"{self.knn_temperature}"
            )
        choices = {"occlusion": ("per_clip", "fixed"), "occlusion_fill": ("grey", "black")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"config key '{name}': allowed: {', '.join(allowed)}; "
                    f"got {getattr(self, name)!r}"
                )
        if self.grating_folds < 2:
            raise ConfigError(f"config key 'grating_folds': must be >= 2, got {self.grating_folds}")
        if self.occlusion_window is not None and self.occlusion_window < 1:
            raise ConfigError(
                f"config key 'occlusion_window': must be >= 1 or null, got {self.occlusion_window}"
            )
        if self.occlusion_locations is not None and self.occlusion_locations < 1:
            raise ConfigError(
                f"config key 'occlusion_locations': must be >= 1 or null, got "
                f"{self.occlusion_locations}"
            )
        if not 0.0 < self.probe_fraction <= 1.0:
            raise ConfigError(
                f"config key 'probe_fraction': must lie in (0, 1], got {self.probe_fraction}"
            )
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(
                f"config key 'cpu_threads': must be >= 1 or null, got {self.cpu_threads}"
            )
        if self.num_workers < 0:
            raise ConfigError(f"config key 'num_workers': must be >= 0, got {self.num_workers}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(
                f"config key 'device': allowed: auto, cpu, cuda, cuda:N; got {self.device!r}"
            )

    def produced_metrics(self) -> set[str]:
        """The metric names of the rows these options compute (``metrics``, their backbone
        rows when ``backbone`` is in ``features``, their head rows when ``head`` is)."""
        out = {m for m in self.metrics if m not in HEAD_METRICS or "backbone" in self.features}
        if "head" in self.features:
            out |= {HEAD_METRICS[m] for m in self.metrics if m in HEAD_METRICS}
        return out

    def result_identity(self, device: torch.device) -> dict[str, Any]:
        """The options that decide the numbers (not batch size, workers, progress, paths)."""
        out = asdict(self)
        for name in (
            "batch_size",
            "num_workers",
            "progress",
            "figures",
            "cache_dir",
            "device",
            "cpu_threads",
        ):
            out.pop(name)
        out["metrics"] = sorted(set(self.metrics))
        out["features"] = sorted(set(self.features))
        out["probe_solver"] = "sklearn" if device.type == "cpu" else "torch"
        return out


def options_from_overrides(overrides: list[str]) -> AnalysisOptions:
    """:class:`AnalysisOptions` from ``key=value`` strings (``grating_clips=96``, ``data.root=R``)."""
    from bwssl.config import apply_overrides

    return coerce(AnalysisOptions, apply_overrides({}, overrides))
