"""The analysis suite: every depth-resolved metric, for every block of every run.

:func:`analyze` takes run directories (``bwssl train`` output) or Hugging
Face VideoMAE checkpoint folders and writes, under ``out_dir``:

- ``results.csv``: the tidy table (:mod:`bwssl.analysis.results`), one row
  per (run, block, metric, target, repeat). Blocks are 1-based.
- ``aggregate.csv``: mean, std and n across runs (seeds).
- ``figures/``: the paper's figures (:func:`bwssl.report.figures.draw_all`).
- ``runs/<run>.csv`` (+ ``.json``): each run's rows and the key they were
  computed under (the encoder's content hash and the options). A rerun
  skips runs whose key is unchanged.
- ``features/``: the block-feature cache (:mod:`bwssl.analysis.features`),
  keyed by the encoder's content and the clips, so changing an option that
  does not touch the features (probe repeats, CKA kind) reruns the metrics
  without running the encoder again.

Metrics, per block k (PROTOCOL section 1, Analyses); z_k is block k's
mean-pooled tokens with masking off:

- ``probe_acc`` (target ``action``): linear probe fitted on the train clips'
  z_k, top-1 on the test clips. sklearn's lbfgs is deterministic, so the
  paper's three fits of one network would be three identical numbers;
  here repeat r fits on its own seeded ``probe_fraction`` subsample of the
  training clips (90% by default), so the repeats measure the probe's
  sensitivity to its training set. ``probe_fraction=1`` gives the paper's
  protocol (identical repeats).
- ``map``: retrieval mAP of the test clips' z_k.
- ``mse``: masked reconstruction MSE through block k's decoder (E2E: the last
  block only; models without decoders: none) on ``mse_clips`` test clips,
  with the run's mask config and masks drawn from ``seed``; every masked
  token is reconstructed (no decoder masking), targets as in training.
- ``probe_l1``, ``probe_l2`` (target = grating label): stratified k-fold
  cross-validated probe accuracy on ``grating_clips`` Level 1 / Level 2
  gratings in the run's clip format.
- ``cka_next`` (block k = transition k -> k+1): linear CKA of the test clips'
  z_k and z_{k+1} (target ""); with ``cka=rbf`` or ``both``, RBF CKA rows
  with target ``rbf``.
- ``occdrop_l1``, ``occdrop_l2`` (target = grating label, repeat = location):
  for each of ``occlusion_locations`` patch locations (Level 1: one kept
  patch; Level 2: one kept patch per hemifield), the gratings are occluded
  in pixel space, their features recomputed, the same cross-validated probe
  refitted, and ``(acc_full - acc_occluded) / acc_full`` recorded.
- ``cps``: cosine patch similarity of h_k on ``cps_clips`` test clips.

The model column names the architecture (:func:`model_name`); regime, seed
and K come from the run's config.

Hugging Face folders: the encoder is cut into ``hf_num_blocks`` blocks
(or at ``hf_boundaries``), its clip format (frames, size, channels) comes
from its config.json, regime is ``hf_regime`` and seed 0. *Which* clips are
probed is up to the options: by default the embedded synthetic data in the
checkpoint's clip format; ``data.root=/data/UCF101`` (and any other
``data.*`` key of :class:`DataOverrides`) picks UCF101. ``mse`` needs the
checkpoint's decoder (``VideoMAEForPreTraining``), at the last block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from bwssl.analysis import features as feat
from bwssl.analysis.occlusion import (
    hemifield_pairs,
    keep_one_patch,
    keep_patch_per_hemifield,
    occdrop,
    patch_locations,
)
from bwssl.analysis.probes import cv_probe_accuracy, linear_probe_accuracy
from bwssl.analysis.results import (
    ResultRow,
    aggregate,
    merge_rows,
    read_results,
    write_aggregate,
    write_results,
)
from bwssl.analysis.retrieval import retrieval_map
from bwssl.analysis.similarity import cps, linear_cka, rbf_cka
from bwssl.config import Config, ConfigError, DataConfig, ModelConfig, _build
from bwssl.data import build_dataset
from bwssl.errors import UserError
from bwssl.models.blockwise import BlockwiseVideoMAE

logger = logging.getLogger(__name__)

METRICS: tuple[str, ...] = (
    "probe_acc",
    "map",
    "mse",
    "probe_l1",
    "probe_l2",
    "cka_next",
    "occdrop_l1",
    "occdrop_l2",
    "cps",
)
"""Every metric of the suite, in the order they are computed."""

RESULTS_VERSION = 1
"""Bumped when a metric's definition changes: cached per-run results are recomputed."""


@dataclass
class DataOverrides:
    """Changes to the analysed runs' data config (``data.KEY=VALUE``); unset keys keep the run's.

    The clip format the model was built for (``num_frames``, ``crop_size``,
    ``channels``) cannot be changed. Giving ``root`` or ``frames_root``
    without ``name`` selects UCF101.
    """

    name: Literal["auto", "synthetic", "ucf101"] | None = None
    """Dataset: ``synthetic`` (embedded) or ``ucf101``."""
    root: str | None = None
    """UCF101 video folder."""
    frames_root: str | None = None
    """UCF101 pre-extracted frame folders."""
    split_dir: str | None = None
    """UCF101 ucfTrainTestlist folder."""
    split: int | None = None
    """UCF101 official split (1, 2, 3)."""
    frame_stride: int | None = None
    """Frames between sampled clip frames."""
    resize: Literal["short_side", "none"] | None = None
    """Resize policy before the crop."""
    resize_to: int | None = None
    """Short side before the crop."""
    eval_fraction: float | None = None
    """UCF101: fraction of the test split analysed (seeded by ``seed``)."""
    allow_missing: bool | None = None
    """UCF101: go on when listed files are missing."""
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
        return _build(DataConfig, merged, "data")


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
    grating_clips: int = 240
    """Gratings per level (a seeded subsample of the protocol grid, balanced per factor)."""
    grating_folds: int = 5
    """Folds of the stratified cross-validation of the grating probes."""
    occlusion_locations: int | None = 4
    """Patch locations (Level 1) and hemifield patch pairs (Level 2) per OccDrop, drawn with
    ``seed``; null: every patch (and every mirror-symmetric pair)."""
    cps_clips: int = 32
    """Test clips whose full tokens are kept for CPS."""
    mse_clips: int = 128
    """Test clips of the reconstruction MSE."""
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
    """Draw the figures after the table."""
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
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"config key '{name}': must be >= 1, got {getattr(self, name)}")
        if self.grating_folds < 2:
            raise ConfigError(f"config key 'grating_folds': must be >= 2, got {self.grating_folds}")
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
        out["probe_solver"] = "sklearn" if device.type == "cpu" else "torch"
        return out


def options_from_overrides(overrides: list[str]) -> AnalysisOptions:
    """:class:`AnalysisOptions` from ``key=value`` strings (``grating_clips=96``, ``data.root=R``)."""
    from bwssl.config import apply_overrides

    return _build(AnalysisOptions, apply_overrides({}, overrides))


# --- what is analysed ----------------------------------------------------------------------


def model_name(m: ModelConfig) -> str:
    """A readable architecture name: ``deit-tiny``/``deit-small`` for their shapes, else
    ``vit-d{width}`` (``-l{depth}`` when the depth is not 12)."""
    if m.depth == 12 and m.mlp_ratio == 4.0:
        if (m.embed_dim, m.num_heads) == (192, 3):
            return "deit-tiny"
        if (m.embed_dim, m.num_heads) == (384, 6):
            return "deit-small"
    return f"vit-d{m.embed_dim}" + ("" if m.depth == 12 else f"-l{m.depth}")


@dataclass
class Source:
    """One encoder to analyse: where it is, what it is, and its content hash."""

    name: str
    path: Path
    kind: Literal["run", "hf"]
    config: Config
    """The run's config (for HF folders: :func:`~bwssl.interop.hf_videomae_config`)."""
    digest: str
    """sha256 of the weights (run: the checkpoint file; HF: config and weight files, and K)."""
    checkpoint: Path | None
    regime: str
    seed: int

    def load(self, device: torch.device) -> BlockwiseVideoMAE:
        """The model, in eval mode, on ``device``."""
        if self.kind == "hf":
            from bwssl.interop import from_hf_videomae

            model = from_hf_videomae(
                self.path,
                num_blocks=self.config.model.num_blocks,
                boundaries=self.config.model.boundaries,
            )
            return model.to(device).eval()
        from bwssl.models.blockwise import load_model

        assert self.checkpoint is not None
        return load_model(self.checkpoint, map_location=device)


def _hf_weight_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json"))
    )


def open_source(path: str | Path, options: AnalysisOptions) -> Source:
    """Identify ``path``: a run directory or a Hugging Face VideoMAE folder (UserError else)."""
    p = Path(path)
    if not p.exists():
        raise UserError(
            f"{path} does not exist; give a run directory (bwssl train --out) or a "
            "Hugging Face VideoMAE checkpoint folder"
        )
    if not p.is_dir():
        raise UserError(
            f"{path} is not a folder; give a run directory (bwssl train --out) or a "
            "Hugging Face VideoMAE checkpoint folder"
        )
    name = p.resolve().name
    ckpt_dir = p / "checkpoints"
    if (p / "config.yaml").is_file() or ckpt_dir.is_dir():
        from bwssl.train.checkpoint import RunDir

        run = RunDir(p)
        ckpt = next((c for c in (run.final, run.last) if c.is_file()), None)
        if ckpt is None:
            raise UserError(
                f"{path} holds no checkpoints/final.pt or checkpoints/last.pt; "
                f"train it first (bwssl train CONFIG --out {path})"
            )
        if ckpt == run.last:
            logger.warning("%s has not finished training; analysing checkpoints/last.pt", path)
        cfg = run.saved_config()
        if cfg is None:
            raise UserError(f"{path} has checkpoints but no config.yaml; is it a bwssl run?")
        return Source(name, p, "run", cfg, feat.file_sha256(ckpt), ckpt, cfg.regime, cfg.seed)
    if (p / "config.json").is_file():
        from bwssl.interop import hf_videomae_config

        cfg = hf_videomae_config(
            p, num_blocks=options.hf_num_blocks, boundaries=options.hf_boundaries
        )
        files = [p / "config.json", *_hf_weight_files(p)]
        cut = json.dumps(cfg.model.block_ranges())
        digest = hashlib.sha256((feat.files_sha256(files) + cut).encode()).hexdigest()
        return Source(name, p, "hf", cfg, digest, None, options.hf_regime, 0)
    raise UserError(
        f"{path} is neither a bwssl run directory (config.yaml, checkpoints/) nor a "
        "Hugging Face checkpoint folder (config.json)"
    )


# --- one run -------------------------------------------------------------------------------


def _clips_id(data: DataConfig, split: str, seed: int) -> dict[str, Any]:
    d = asdict(data)
    for name in ("cache_dir", "max_unreadable_fraction"):
        d.pop(name)
    return {"kind": "clips", "split": split, "seed": seed, "data": d}


def _seeded_subset(n: int, size: int, *seed: int) -> np.ndarray:
    """``min(size, n)`` sorted indices of range(n), drawn without replacement."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(list(seed))
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def _cv_rows(y: np.ndarray) -> np.ndarray:
    """Rows whose class has at least 2 members (stratified CV cannot use singletons)."""
    counts = np.bincount(y)
    return np.flatnonzero(counts[y] >= 2)


class _RunAnalysis:
    """The metrics of one source; rows accumulate in ``rows``."""

    def __init__(
        self, src: Source, options: AnalysisOptions, device: torch.device, cache: feat.FeatureCache
    ) -> None:
        self.src, self.opt, self.device, self.cache = src, options, device, cache
        self.data = options.data.apply(src.config.data)
        self.model = src.load(device)
        self.k = self.model.num_blocks
        self.rows: list[ResultRow] = []
        self.want = set(options.metrics)

    def add(self, metric: str, block: int, value: float, target: str = "", repeat: int = 0) -> None:
        s = self.src
        self.rows.append(
            ResultRow(
                s.name,
                s.regime,
                model_name(s.config.model),
                self.k,
                s.seed,
                block,
                metric,
                target,
                repeat,
                float(value),
            )
        )

    def features(
        self, dataset: Any, dataset_id: dict[str, Any], desc: str, **kwargs: Any
    ) -> feat.Features:
        o = self.opt
        return feat.block_features(
            self.model,
            dataset,
            encoder_digest=self.src.digest,
            dataset_id=dataset_id,
            cache=self.cache,
            batch_size=o.batch_size,
            device=self.device,
            num_workers=o.num_workers,
            progress=o.progress,
            desc=f"{self.src.name}: {desc}",
            **kwargs,
        )

    def run(self) -> list[ResultRow]:
        o, want = self.opt, self.want
        if want & {"probe_acc", "map", "cka_next", "cps", "mse"}:
            test = build_dataset(self.data, "test", seed=o.seed)
            if want & {"probe_acc", "map", "cka_next", "cps"}:
                self.clip_metrics(test)
            if "mse" in want:
                self.reconstruction(test)
        for level in (1, 2):
            if want & {f"probe_l{level}", f"occdrop_l{level}"}:
                self.gratings(level)
        return self.rows

    # --- action clips ----------------------------------------------------------------------
    def clip_metrics(self, test: Any) -> None:
        o, want = self.opt, self.want
        # tokens are kept whether or not cps is asked for, so every metric subset shares one
        # cache entry for the test clips
        token_items = _seeded_subset(len(test), o.cps_clips, o.seed, 1)
        ft = self.features(
            test, _clips_id(self.data, "test", o.seed), "test clips", token_items=token_items
        )
        y_test = test.labels[ft.index]
        if "probe_acc" in want:
            train = build_dataset(self.data, "train", seed=o.seed)
            fr = self.features(train, _clips_id(self.data, "train", o.seed), "train clips")
            y_train = train.labels[fr.index]
            n = len(fr.index)
            for r in range(o.probe_repeats):
                rows = _seeded_subset(n, round(o.probe_fraction * n), o.seed, 2, r)
                for k in range(self.k):
                    acc = linear_probe_accuracy(
                        fr.pooled[k][rows],
                        y_train[rows],
                        ft.pooled[k],
                        y_test,
                        seed=o.seed + r,
                        device=self.device,
                        max_iter=o.probe_max_iter,
                    )
                    self.add("probe_acc", k + 1, acc, "action", r)
        if "map" in want:
            if np.bincount(y_test).max() < 2:
                logger.warning("%s: no two test clips share a label; no map rows", self.src.name)
            else:
                for k in range(self.k):
                    self.add("map", k + 1, retrieval_map(ft.pooled[k], y_test, device=self.device))
        if "cka_next" in want:
            for k in range(self.k - 1):
                if o.cka in ("linear", "both"):
                    self.add("cka_next", k + 1, linear_cka(ft.pooled[k], ft.pooled[k + 1]))
                if o.cka in ("rbf", "both"):
                    self.add("cka_next", k + 1, rbf_cka(ft.pooled[k], ft.pooled[k + 1]), "rbf")
        if "cps" in want:
            for k in range(self.k):
                self.add("cps", k + 1, cps(ft.tokens[k].astype(np.float32)))

    def reconstruction(self, test: Any) -> None:
        """Masked MSE per decoder block on ``mse_clips`` seeded test clips, seeded masks."""
        from bwssl.data.masking import make_mask

        model, o, mask_cfg = self.model, self.opt, self.src.config.mask
        if not model.decoder_blocks:
            logger.info("%s has no decoder: no mse rows", self.src.name)
            return
        items = _seeded_subset(len(test), o.mse_clips, o.seed, 3)
        gen = torch.Generator().manual_seed(o.seed)
        masks = make_mask(mask_cfg.kind, len(items), model.grid, mask_cfg.ratio, gen)  # (M, N)
        row_of = {int(i): j for j, i in enumerate(items)}
        sums = np.zeros(len(model.decoder_blocks))
        count = 0
        batches = feat.clip_batches(
            test, items, o.batch_size, o.num_workers, self.device.type == "cuda"
        )
        with torch.inference_mode():
            for idx, video, _ in batches:
                if len(idx) == 0:
                    continue
                mask = masks[[row_of[int(i)] for i in idx]].to(self.device)
                losses = model.block_losses(video.to(self.device), mask)
                sums += np.array([float(loss) for loss in losses]) * len(idx)
                count += len(idx)
        if count == 0:
            raise UserError(f"{self.src.name}: no test clip could be read for the MSE")
        for k, total in zip(model.decoder_blocks, sums, strict=True):
            self.add("mse", k + 1, total / count)

    # --- gratings --------------------------------------------------------------------------
    def gratings(self, level: int) -> None:
        from bwssl.data.gratings import GratingDataset, GratingGrid

        o, d, m = self.opt, self.data, self.src.config.model
        grid = GratingGrid.default(level, d.crop_size)
        if d.channels == 1:
            grid = dataclasses.replace(grid, colour=("gray",))
        ds = GratingDataset(
            level,
            d.num_frames,
            d.crop_size,
            d.channels,
            grid=grid,
            max_items=o.grating_clips,
            seed=o.seed,
            cache_dir=d.cache_dir,
        )
        ident = {
            "kind": "gratings",
            "level": level,
            "num_frames": d.num_frames,
            "size": d.crop_size,
            "channels": d.channels,
            "grid": asdict(grid),
            "max_items": o.grating_clips,
            "seed": o.seed,
        }
        full = self.features(ds, ident, f"level {level} gratings")
        targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, y_all in ds.targets.items():
            y = y_all[full.index]
            rows = _cv_rows(y)
            if len(np.unique(y[rows])) < 2:
                logger.warning(
                    "level %d target %s: fewer than 2 classes with 2+ clips among "
                    "%d gratings; skipped (raise grating_clips)",
                    level,
                    name,
                    len(y),
                )
                continue
            targets[name] = (rows, np.unique(y[rows], return_inverse=True)[1].reshape(-1))

        def accuracy(f: feat.Features, k: int, name: str) -> float:
            rows, y = targets[name]
            return cv_probe_accuracy(
                f.pooled[k][rows],
                y,
                folds=o.grating_folds,
                seed=o.seed,
                device=self.device,
                max_iter=o.probe_max_iter,
            )

        acc_full = {(k, t): accuracy(full, k, t) for k in range(self.k) for t in targets}
        if f"probe_l{level}" in self.want:
            for (k, t), acc in acc_full.items():
                self.add(f"probe_l{level}", k + 1, acc, t)
        if f"occdrop_l{level}" not in self.want:
            return
        gh, gw = self.model.grid[1:]
        tub, patch = m.tubelet_size, m.patch_size
        occluders: list[tuple[Any, Callable[[torch.Tensor], torch.Tensor]]] = []
        if level == 1:
            for loc in patch_locations((gh, gw), o.occlusion_locations, o.seed):
                occluders.append((loc, lambda v, i=loc: keep_one_patch(v, i, tub, patch)))
        elif gw % 2:
            logger.warning(
                "%s: %d patch columns cannot be split into hemifields; no occdrop_l2",
                self.src.name,
                gw,
            )
        else:
            for pair in hemifield_pairs((gh, gw), o.occlusion_locations, o.seed):
                occluders.append(
                    (
                        list(pair),
                        lambda v, p=pair: keep_patch_per_hemifield(v, p[0], p[1], tub, patch),
                    )
                )
        for r, (where, occlude) in enumerate(occluders):
            f = self.features(
                ds,
                {**ident, "keep_patches": where, "tubelet": tub, "patch": patch},
                f"level {level} occluded {r + 1}/{len(occluders)}",
                transform=occlude,
            )
            if not np.array_equal(f.index, full.index):
                raise RuntimeError("occluded and full gratings differ in readable clips")
            for (k, t), acc in acc_full.items():
                if acc == 0:
                    logger.warning(
                        "level %d %s block %d: probe accuracy 0, OccDrop undefined", level, t, k + 1
                    )
                    continue
                self.add(f"occdrop_l{level}", k + 1, occdrop(acc, accuracy(f, k, t)), t, r)


# --- the suite -----------------------------------------------------------------------------


def _resolve_device(name: str) -> torch.device:
    from bwssl.train.trainer import resolve_device

    return resolve_device(name)


def _run_key(src: Source, options: AnalysisOptions, device: torch.device) -> str:
    text = json.dumps(
        {
            "version": RESULTS_VERSION,
            "encoder": src.digest,
            "options": options.result_identity(device),
            "data": asdict(options.data.apply(src.config.data)),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_run(out_dir: Path, name: str, key: str) -> list[ResultRow] | None:
    meta, table = out_dir / "runs" / f"{name}.json", out_dir / "runs" / f"{name}.csv"
    if not (meta.is_file() and table.is_file()):
        return None
    try:
        if json.loads(meta.read_text()).get("key") != key:
            return None
        return read_results(table)
    except (ValueError, OSError):
        return None


def _save_run(out_dir: Path, src: Source, key: str, rows: list[ResultRow]) -> None:
    from bwssl.train.checkpoint import atomic_write_text

    (out_dir / "runs" / f"{src.name}.json").unlink(missing_ok=True)  # the key goes last
    write_results(out_dir / "runs" / f"{src.name}.csv", rows)
    about = {"key": key, "source": str(src.path), "kind": src.kind, "encoder_sha256": src.digest}
    atomic_write_text(out_dir / "runs" / f"{src.name}.json", json.dumps(about, indent=2) + "\n")


@contextlib.contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads and the BLAS libraries' threads set to ``n`` (None: as they are)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n, "blas"):
            yield
    finally:
        torch.set_num_threads(before)


def analyze_source(
    src: Source, options: AnalysisOptions, device: torch.device, cache: feat.FeatureCache
) -> list[ResultRow]:
    """Every selected metric of one encoder (no per-run result cache)."""
    with warnings.catch_warnings(record=True) as caught, _cpu_threads(options.cpu_threads):
        warnings.simplefilter("always", ConvergenceWarning)
        rows = _RunAnalysis(src, options, device, cache).run()
    hits = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    if hits:
        logger.warning(
            "%s: %d probe fits stopped at probe_max_iter=%d before converging",
            src.name,
            hits,
            options.probe_max_iter,
        )
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return rows


def analyze(run_dirs: list[Path], out_dir: Path, options: AnalysisOptions) -> Path:
    """Run the suite on every run (or HF folder) of ``run_dirs``; returns ``out_dir/results.csv``.

    Runs already analysed under the same encoder content and options (their
    ``out_dir/runs/<run>.json`` key) are read back instead of recomputed;
    features are cached under ``options.cache_dir`` (default
    ``out_dir/features``). ``results.csv`` keeps the rows already in it
    except those of the runs and metrics computed here, which are replaced
    (so ``metrics=[cka_next] cka=both`` adds RBF rows to a finished table,
    and fewer probe repeats leave no stale repeat behind).
    """
    if not run_dirs:
        raise UserError("give at least one run directory to analyze")
    sources = [open_source(p, options) for p in run_dirs]
    names: dict[str, Path] = {}
    for s in sources:
        if s.name in names:
            raise UserError(
                f"two runs are named {s.name!r} ({names[s.name]} and {s.path}); "
                "results are keyed by the folder name: analyze them into "
                "different --out folders or rename one"
            )
        names[s.name] = s.path
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = _resolve_device(options.device)
    cache = feat.FeatureCache(options.cache_dir or out_dir / "features")
    new: list[ResultRow] = []
    for i, src in enumerate(sources):
        key = _run_key(src, options, device)
        rows = _cached_run(out_dir, src.name, key)
        if rows is not None:
            print(
                f"[{i + 1}/{len(sources)}] {src.name}: done before, reusing its results",
                file=sys.stderr,
            )
        else:
            t0 = time.perf_counter()
            rows = analyze_source(src, options, device, cache)
            _save_run(out_dir, src, key, rows)
            print(
                f"[{i + 1}/{len(sources)}] {src.name}: {len(rows)} results in "
                f"{time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
        new += rows
    results = out_dir / "results.csv"
    redone = set(options.metrics)
    kept = [r for r in read_results(results) if not (r.run in names and r.metric in redone)]
    table = merge_rows(kept, new)
    write_results(results, table)
    write_aggregate(out_dir / "aggregate.csv", aggregate(table))
    if options.figures:
        from bwssl.report.figures import draw_all

        draw_all(table, out_dir / "figures")
    return results
