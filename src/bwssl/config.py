"""Typed experiment configuration: dataclasses, presets, YAML, dotted overrides.

Every field is checked before any compute starts. A bad value raises
:class:`ConfigError` with the dotted key, what was given and what is allowed;
the command line prints that message without a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from bwssl.errors import UserError


class ConfigError(UserError, ValueError):
    """An invalid configuration value, named by its dotted key."""


def _fail(key: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"config key '{key}': {message}")


def _check_name(key: str, name: str, registry: dict[str, Any]) -> None:
    if name not in registry:
        _fail(key, f"allowed: {', '.join(registry)}; got {name!r}")


def _pipelines(regime: str, cfg: Config) -> bool:
    """Whether every stage of ``regime`` at ``cfg``'s K trains several blocks at once."""
    from bwssl.regimes import is_layerwise, stages

    if is_layerwise(regime):
        return False
    found = stages(regime, cfg.model.num_blocks)
    return bool(found) and all(s.isolated for s in found)


@dataclass
class ModelConfig:
    """The backbone, its cut into blocks, and the per-block decoders of masked objectives.

    The clip shape (frames, crop size, channels) is taken from ``data``: the
    model is built for the clips the data produces.
    """

    arch: str = "video_vit"
    """Backbone, a name of :data:`bwssl.models.BACKBONES` (``video_vit``)."""
    tubelet_size: int = 2
    """Frames per token (temporal patch size)."""
    patch_size: int = 16
    """Pixels per token side (spatial patch size)."""
    embed_dim: int = 192
    """Encoder width (DeiT-Tiny 192, DeiT-Small 384)."""
    depth: int = 12
    """Number of transformer layers in the encoder."""
    num_heads: int = 3
    """Encoder attention heads."""
    mlp_ratio: float = 4.0
    """Hidden width of each MLP relative to the embedding width."""
    num_blocks: int = 4
    """K, the number of gradient-isolated blocks; must divide ``depth`` unless
    ``boundaries`` is given."""
    boundaries: list[int] | None = None
    """Explicit cut points: layer indices where blocks 2..K start, e.g. [2, 6, 9]
    for depth 12 and K 4. Overrides the even split."""
    decoder_depth: int = 4
    """Layers of each block's decoder."""
    decoder_dim: int = 192
    """Width of each decoder."""
    decoder_heads: int = 3
    """Attention heads of each decoder."""
    shared_decoder: bool = False
    """One decoder shared by all blocks instead of one per block."""
    grad_checkpointing: bool = False
    """Recompute encoder layer activations in backward to save memory."""
    rope: bool = False
    """3-D rotary position embeddings: every attention of the encoder and of the decoders
    rotates queries and keys by the tokens' (t, h, w) grid positions (10%, 25%, 25% of each
    head's dims, the rest unrotated), and no sinusoid position table is added to the tokens.
    Such models cannot be exported to Hugging Face VideoMAE."""

    def __post_init__(self) -> None:
        from bwssl.models.registry import BACKBONES  # the registry imports this module

        _check_name("model.arch", self.arch, BACKBONES)
        for name in (
            "tubelet_size",
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "num_blocks",
            "decoder_depth",
            "decoder_dim",
            "decoder_heads",
        ):
            if getattr(self, name) < 1:
                _fail(f"model.{name}", f"must be a positive integer, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads:
            _fail(
                "model.num_heads",
                f"must divide model.embed_dim={self.embed_dim}, got {self.num_heads}",
            )
        if self.decoder_dim % self.decoder_heads:
            _fail(
                "model.decoder_heads",
                f"must divide model.decoder_dim={self.decoder_dim}, got {self.decoder_heads}",
            )
        if self.rope and self.embed_dim // self.num_heads < 6:
            _fail(
                "model.rope",
                f"needs attention heads of at least 6 dims (2 per rotated axis), got "
                f"{self.embed_dim // self.num_heads} (model.embed_dim / model.num_heads)",
            )
        if self.mlp_ratio <= 0:
            _fail("model.mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        if self.boundaries is not None:
            b = list(self.boundaries)
            if len(b) != self.num_blocks - 1:
                _fail(
                    "model.boundaries",
                    f"needs num_blocks-1={self.num_blocks - 1} cut points, got {len(b)}",
                )
            if b != sorted(set(b)) or (b and (b[0] <= 0 or b[-1] >= self.depth)):
                _fail(
                    "model.boundaries",
                    f"must be strictly increasing layer indices in 1..{self.depth - 1}, got {b}",
                )
        elif self.depth % self.num_blocks:
            divisors = [k for k in range(1, self.depth + 1) if self.depth % k == 0]
            _fail(
                "model.num_blocks",
                f"must divide model.depth={self.depth} "
                f"(allowed: {divisors}), got {self.num_blocks}; or give model.boundaries",
            )

    def block_ranges(self) -> list[tuple[int, int]]:
        """Layer index ranges [start, stop) of each block."""
        if self.boundaries is not None:
            cuts = [0, *self.boundaries, self.depth]
        else:
            step = self.depth // self.num_blocks
            cuts = list(range(0, self.depth + 1, step))
        return list(itertools.pairwise(cuts))


@dataclass
class MaskConfig:
    """Which tokens are hidden from the encoder."""

    kind: Literal["tube", "random"] = "tube"
    """``tube``: one spatial mask repeated over time (VideoMAE); ``random``: per token."""
    ratio: float = 0.9
    """Fraction of tokens masked, in (0, 1)."""
    decoder_ratio: float = 1.0
    """Fraction of the masked tokens each decoder reconstructs (1.0: all).
    Lower values cut decoder cost (decoder masking)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            _fail("mask.ratio", f"must lie in (0, 1), got {self.ratio}")
        if not 0.0 < self.decoder_ratio <= 1.0:
            _fail("mask.decoder_ratio", f"must lie in (0, 1], got {self.decoder_ratio}")


@dataclass
class LossConfig:
    """The masked reconstruction objective."""

    target: Literal["norm_pixels", "pixels"] = "norm_pixels"
    """``norm_pixels``: per-patch normalized pixels (VideoMAE default); ``pixels``: raw [0, 1]."""


@dataclass
class ViewsConfig:
    """The two augmented views of a clip that joint-embedding objectives compare; every draw
    comes from the step key (seed, epoch, step), so every regime sees the same views."""

    scale: list[float] = field(default_factory=lambda: [0.3, 1.0])
    """Random resized crop: range of the crop's area as a fraction of the frame (one box per
    clip, the same for all its frames)."""
    ratio: list[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])
    """Random resized crop: range of the crop's aspect ratio (width / height)."""
    flip_prob: float = 0.5
    """Probability of a horizontal flip."""
    jitter: float = 0.4
    """Colour jitter strength: brightness, contrast and saturation factors in [1-j, 1+j];
    0 turns colour jitter off."""
    jitter_prob: float = 0.8
    """Probability that a clip is colour-jittered."""

    def __post_init__(self) -> None:
        s, r = self.scale, self.ratio
        if len(s) != 2 or not 0 < s[0] <= s[1] <= 1:
            _fail("objective.views.scale", f"must be [lo, hi] with 0 < lo <= hi <= 1, got {s}")
        if len(r) != 2 or not 0 < r[0] <= r[1]:
            _fail("objective.views.ratio", f"must be [lo, hi] with 0 < lo <= hi, got {r}")
        for name in ("flip_prob", "jitter_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail(f"objective.views.{name}", f"must lie in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.jitter < 1.0:
            _fail("objective.views.jitter", f"must lie in [0, 1), got {self.jitter}")


@dataclass
class ObjectiveConfig:
    """The local objective every block with a head is trained on."""

    name: str = "masked_pixels"
    """A name of :data:`bwssl.objectives.OBJECTIVES`: ``masked_pixels`` (VideoMAE
    reconstruction; ``mask`` and ``loss`` sections), ``barlow_twins``, ``vicreg``,
    ``simclr`` (joint embedding of two views; ``views`` and the keys below)."""
    projector: list[int] = field(default_factory=lambda: [8192, 8192, 8192])
    """Joint embedding: widths of the projector after each block's pooled features; every
    layer but the last is Linear (no bias), BatchNorm, ReLU; the last is a plain Linear."""
    barlow_lambda: float = 0.0051
    """Barlow Twins: weight of the off-diagonal (redundancy) term."""
    barlow_scale: float = 1.0
    """Barlow Twins: factor on the whole loss."""
    vicreg_sim: float = 25.0
    """VICReg: invariance (MSE) coefficient."""
    vicreg_std: float = 25.0
    """VICReg: variance coefficient."""
    vicreg_cov: float = 1.0
    """VICReg: covariance coefficient."""
    temperature: float = 0.1
    """SimCLR: NT-Xent temperature."""
    decoding: Literal["decoder", "tokens"] = "decoder"
    """Masked pixels: ``decoder``, a separate decoder per head (VideoMAE); ``tokens``,
    position-only decoding tokens join the encoder before its last ``decoding_layers``
    layers and a linear read-out per token predicts them (LayerLock's design; only for
    regimes whose one loss is at the last block)."""
    decoding_layers: int = 4
    """Masked pixels with ``decoding: tokens``: encoder layers the decoding tokens pass."""
    views: ViewsConfig = field(default_factory=ViewsConfig)

    def __post_init__(self) -> None:
        from bwssl.objectives.registry import OBJECTIVES  # the registry imports this module

        _check_name("objective.name", self.name, OBJECTIVES)
        if not self.projector or any(w < 1 for w in self.projector):
            _fail(
                "objective.projector",
                f"must be a non-empty list of positive widths, got {self.projector}",
            )
        for name in ("barlow_lambda", "barlow_scale", "vicreg_sim", "vicreg_std", "vicreg_cov"):
            if getattr(self, name) < 0:
                _fail(f"objective.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            _fail("objective.temperature", f"must be > 0, got {self.temperature}")
        if self.decoding_layers < 1:
            _fail("objective.decoding_layers", f"must be >= 1, got {self.decoding_layers}")


@dataclass
class LayerLockConfig:
    """Progressive layer freezing and the pixel-to-latent target schedule of the ``freeze``,
    ``layerlock`` and ``latent`` regimes (steps count over the whole run).

    Pixel targets for ``start_step`` steps; then every ``interval`` steps the
    next ``layers_per_event`` layers freeze, until ``max_frozen`` layers are
    frozen. Under ``layerlock`` each freezing event also switches the target to
    the output of the deepest frozen layer, predicted by a new linear head.
    """

    start_step: int | None = None
    """Steps on pixel targets before the first freezing event; null: half of the run."""
    interval: int | None = None
    """Steps between freezing events; null: the events spread evenly from ``start_step``
    to three quarters of the run."""
    layers_per_event: int = 1
    """Layers frozen at each event."""
    max_frozen: float = 0.75
    """Layers frozen at the end: a count (>= 1) or a fraction of the depth (< 1)."""
    targets: Literal["latest", "all"] = "latest"
    """``latest``: the loss on the newest target alone; ``all``: the sum over pixels and
    every latent target so far."""
    switch_warmup_steps: int = 0
    """Linear learning-rate warmup over this many steps after every target switch."""
    latent_fraction: float = 1.0
    """Fraction of the predicted patches (random, per step) on which the latent loss is
    computed."""
    target_norm: bool = True
    """Standardize each latent target token over its features (layer norm without affine
    parameters), so that every target layer has the scale of normalized pixels."""

    def __post_init__(self) -> None:
        for name in ("start_step", "interval"):
            v = getattr(self, name)
            if v is not None and v < 1:
                _fail(f"layerlock.{name}", f"must be >= 1 (or null for the default), got {v}")
        if self.layers_per_event < 1:
            _fail("layerlock.layers_per_event", f"must be >= 1, got {self.layers_per_event}")
        if not math.isfinite(self.max_frozen) or self.max_frozen <= 0:
            _fail(
                "layerlock.max_frozen",
                f"must be a layer count >= 1 or a fraction in (0, 1), got {self.max_frozen}",
            )
        if self.max_frozen >= 1 and self.max_frozen != int(self.max_frozen):
            _fail("layerlock.max_frozen", f"a count must be whole, got {self.max_frozen}")
        if self.switch_warmup_steps < 0:
            _fail("layerlock.switch_warmup_steps", f"must be >= 0, got {self.switch_warmup_steps}")
        if not 0.0 < self.latent_fraction <= 1.0:
            _fail("layerlock.latent_fraction", f"must lie in (0, 1], got {self.latent_fraction}")

    def frozen_layers(self, depth: int) -> int:
        """``max_frozen`` as a number of layers of a ``depth``-layer encoder."""
        if self.max_frozen < 1:
            return int(self.max_frozen * depth)
        return int(self.max_frozen)


@dataclass
class TrainConfig:
    """Optimization, schedule, checkpointing and hardware."""

    epochs: int = 1
    """Epochs per stage (sequential runs K stages of this many)."""
    batch_size: int = 8
    """Clips per optimizer step (split into ``accum_steps`` micro-batches)."""
    accum_steps: int = 1
    """Gradient accumulation: micro-batches per optimizer step."""
    lr: float = 1e-4
    """Peak learning rate (before batch-size scaling)."""
    lr_scale_batch: int | None = None
    """If set, the peak LR is lr * batch_size / lr_scale_batch (linear scaling)."""
    min_lr: float = 1e-6
    """Final learning rate of the cosine schedule."""
    warmup_epochs: float = 0.0
    """Linear warmup length, in epochs, at the start of every stage."""
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    clip_grad: float | None = None
    """Max gradient norm, applied per block (never across blocks)."""
    checkpoint_every: int = 100
    """Write checkpoints/last.pt every this many optimizer steps (and at the end)."""
    log_every: int = 10
    """Write a metrics.jsonl line every this many steps."""
    num_workers: int = 0
    """Data-loader worker processes."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``auto``: bf16 autocast on GPUs, fp32 on CPU."""
    compile: bool = False
    """torch.compile each optimizer unit (its blocks and decoders)."""
    compile_backend: str = "inductor"
    """torch.compile backend (``eager`` traces without generating code: for tests)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also log to RUN_DIR/tensorboard when tensorboard is installed (bwssl[tensorboard])."""
    max_steps: int | None = None
    """Stop each stage after this many steps (for smoke tests)."""
    parallel: Literal["none", "blocks"] = "none"
    """``blocks`` (under torchrun): block-parallel training. The processes form a pipeline
    of ``pipeline_stages`` stages, each owning a contiguous group of the blocks with their
    heads and optimizers; a stage gets its input from the previous one, trains its blocks and
    sends its output on, and no gradient travels back. Needs a regime whose every stage
    trains at least two gradient-isolated blocks at once (simultaneous). ``none``: every
    process trains every block (data parallel when there are several)."""
    pipeline_stages: int | None = None
    """Pipeline stages of ``parallel=blocks``; null: one per process. It must divide the
    number of processes; the processes beyond one per stage are data-parallel replicas."""
    dist_timeout_s: float = 600.0
    """Seconds a process waits for another (a collective, a send or receive) before it gives
    up with an error: how long a run under torchrun outlives a process that died."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accum_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                _fail(f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            _fail("train.num_workers", f"must be >= 0, got {self.num_workers}")
        if self.batch_size % self.accum_steps:
            _fail(
                "train.accum_steps",
                f"must divide train.batch_size={self.batch_size}, got {self.accum_steps}",
            )
        if self.lr <= 0:
            _fail("train.lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            _fail("train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.min_lr < 0:
            _fail("train.min_lr", f"must be >= 0, got {self.min_lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _fail("train.betas", f"must be two numbers in [0, 1), got {self.betas}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            _fail("train.clip_grad", f"must be > 0 or null, got {self.clip_grad}")
        if self.warmup_epochs < 0:
            _fail("train.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            _fail("train.device", f"allowed: auto, cpu, cuda, cuda:N; got {self.device!r}")
        if self.pipeline_stages is not None and self.pipeline_stages < 1:
            _fail("train.pipeline_stages", f"must be >= 1 or null, got {self.pipeline_stages}")
        if self.pipeline_stages is not None and self.parallel != "blocks":
            _fail("train.pipeline_stages", "needs train.parallel=blocks")
        if not (self.dist_timeout_s > 0 and math.isfinite(self.dist_timeout_s)):
            _fail(
                "train.dist_timeout_s",
                f"must be a number of seconds > 0, got {self.dist_timeout_s}",
            )


@dataclass
class DataConfig:
    """Where clips come from and their format (shared by training and analysis)."""

    name: Literal["auto", "synthetic", "ucf101"] = "auto"
    """``synthetic``: the embedded procedural dataset; ``ucf101``: needs ``root`` or
    ``frames_root``; ``auto``: ucf101 when a root is given, else synthetic."""
    root: str | None = None
    """UCF101: folder with one subfolder per class (and ucfTrainTestlist)."""
    frames_root: str | None = None
    """UCF101: pre-extracted frame folders (``bwssl data extract-frames``); used instead of
    decoding videos."""
    split_dir: str | None = None
    """UCF101: the ucfTrainTestlist folder (default: ROOT/ucfTrainTestlist, else
    FRAMES_ROOT/ucfTrainTestlist)."""
    split: int = 1
    """UCF101 official split, 1, 2 or 3."""
    num_frames: int = 16
    """T, frames per clip."""
    frame_stride: int = 4
    """Frames between sampled clip frames (clip span = num_frames * frame_stride; shorter
    videos are excluded). The synthetic data is rendered at the clip rate and ignores it."""
    crop_size: int = 128
    """Spatial size of the square clip."""
    channels: int = 3
    """Colour channels: 3 (RGB) or 1 (luma)."""
    resize: Literal["short_side", "none"] = "short_side"
    """``short_side``: scale the shorter side to ``resize_to`` before cropping; ``none``:
    crop at native resolution (frames smaller than the crop are scaled up to it)."""
    resize_to: int | None = None
    """Target short side (default: crop_size * 8 / 7, rounded); at least crop_size."""
    eval_fraction: float = 0.3
    """UCF101: seeded subsample of the test split used for evaluation (the synthetic test
    split is used whole: its size is ``synthetic_test``)."""
    max_unreadable_fraction: float = 0.05
    """Stop the run if more than this fraction of clips cannot be read."""
    allow_missing: bool = False
    """UCF101: go on when files listed in the split files are missing (they are logged and
    counted) instead of stopping before training."""
    synthetic_train: int = 512
    """Synthetic dataset: training clips."""
    synthetic_test: int = 256
    """Synthetic dataset: test clips."""
    synthetic_classes: int = 10
    """Synthetic dataset: number of motion classes (2 to 16)."""
    cache_dir: str | None = None
    """Folder for the UCF101 video index and for generated clips (synthetic data, gratings).
    Default: the index goes to $BWSSL_CACHE_DIR or ~/.cache/bwssl, generated clips are
    rendered on the fly."""

    def __post_init__(self) -> None:
        if self.name == "auto":
            self.name = "ucf101" if (self.root or self.frames_root) else "synthetic"
        if self.split not in (1, 2, 3):
            _fail("data.split", f"allowed: 1, 2, 3; got {self.split}")
        for name in (
            "num_frames",
            "frame_stride",
            "crop_size",
            "channels",
            "synthetic_train",
            "synthetic_test",
        ):
            if getattr(self, name) < 1:
                _fail(f"data.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.channels not in (1, 3):
            _fail("data.channels", f"allowed: 1 (luma) or 3 (RGB); got {self.channels}")
        if self.resize_to is not None and self.resize_to < self.crop_size:
            _fail(
                "data.resize_to",
                f"must be >= data.crop_size={self.crop_size} (or null), got {self.resize_to}",
            )
        # 16 = len(bwssl.data.synthetic.MOTION_CLASSES), checked by tests/data.
        if not 2 <= self.synthetic_classes <= 16:
            _fail("data.synthetic_classes", f"must lie in 2..16, got {self.synthetic_classes}")
        if not 0.0 < self.eval_fraction <= 1.0:
            _fail("data.eval_fraction", f"must lie in (0, 1], got {self.eval_fraction}")
        if not 0.0 <= self.max_unreadable_fraction <= 1.0:
            _fail(
                "data.max_unreadable_fraction",
                f"must lie in [0, 1], got {self.max_unreadable_fraction}",
            )


@dataclass
class Config:
    """One training run: a regime applied to a model on a dataset."""

    regime: str = "simultaneous"
    """A name of :data:`bwssl.regimes.REGIMES`: ``e2e``, ``simultaneous`` or ``sequential``;
    ``untrained`` saves the E2E model as initialized (no training), the reference for the
    analyses."""
    seed: int = 0
    """Seeds weights, data order, augmentations and masks."""
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    layerlock: LayerLockConfig = field(default_factory=LayerLockConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        from bwssl.objectives.registry import build_objective
        from bwssl.regimes import REGIMES

        _check_name("regime", self.regime, REGIMES)
        if self.seed < 0:
            _fail("seed", f"must be >= 0, got {self.seed}")
        self._check_size()
        if REGIMES[self.regime].schedule is not None:
            self._check_layer_schedule()
        need = build_objective(self).min_batch
        if self.train.batch_size // self.train.accum_steps < need:
            _fail(
                "train.batch_size",
                f"objective {self.objective.name} needs micro-batches of "
                f"at least {need} clips (batch statistics), but train.batch_size="
                f"{self.train.batch_size} / train.accum_steps={self.train.accum_steps} gives "
                f"{self.train.batch_size // self.train.accum_steps}",
            )
        if self.train.parallel == "blocks":
            self._check_pipeline()
        m, d = self.model, self.data
        if self.objective.decoding == "tokens":
            self._check_decoding_tokens()
        if d.crop_size % m.patch_size:
            _fail(
                "model.patch_size", f"must divide data.crop_size={d.crop_size}, got {m.patch_size}"
            )
        if d.num_frames % m.tubelet_size:
            _fail(
                "model.tubelet_size",
                f"must divide data.num_frames={d.num_frames}, got {m.tubelet_size}",
            )
        n_tokens = self.num_tokens
        if round(n_tokens * (1 - self.mask.ratio)) < 1:
            _fail("mask.ratio", f"leaves no visible token out of {n_tokens}; lower it")
        if self.data.name == "ucf101" and self.data.root is None and self.data.frames_root is None:
            _fail(
                "data.root",
                "data.name=ucf101 needs data.root (the UCF101 video folder) or data.frames_root",
            )

    def _check_size(self) -> None:
        """Refuse models whose weights alone would not fit any machine, before allocating."""
        m = self.model
        per_layer = 4 * m.embed_dim**2 + 2 * m.mlp_ratio * m.embed_dim**2
        per_decoder_layer = 4 * m.decoder_dim**2 + 2 * m.mlp_ratio * m.decoder_dim**2
        params = m.depth * per_layer + m.num_blocks * m.decoder_depth * per_decoder_layer
        if params > 1e10:
            _fail(
                "model",
                f"about {params:.2g} parameters ({params * 4 / 2**30:,.0f} GiB of fp32 weights "
                f"alone; model.embed_dim={m.embed_dim}, model.depth={m.depth}, "
                f"model.decoder_dim={m.decoder_dim}): too large to build",
            )
        n = self.data.num_frames * self.data.crop_size**2 * self.data.channels
        if n * self.train.batch_size > 2**34:
            _fail(
                "data.crop_size",
                f"a batch of {self.train.batch_size} clips of {self.data.num_frames}x"
                f"{self.data.crop_size}x{self.data.crop_size} is {n * self.train.batch_size:.2g} "
                "values: too large to load",
            )

    def _check_decoding_tokens(self) -> None:
        from bwssl.regimes import head_blocks

        o, k = self.objective, self.model.num_blocks
        if o.name != "masked_pixels":
            _fail("objective.decoding", f"tokens is a masked_pixels design, not {o.name}'s")
        if o.decoding_layers > self.model.depth:
            _fail(
                "objective.decoding_layers",
                f"must be <= model.depth={self.model.depth}, got {o.decoding_layers}",
            )
        if self.model.shared_decoder:
            _fail("objective.decoding", "tokens has no decoder to share (model.shared_decoder)")
        if head_blocks(self.regime, k) != (k - 1,):
            _fail(
                "objective.decoding",
                f"tokens passes the decoding tokens through the last encoder layers, so the "
                f"one loss must be at the last block; regime {self.regime} has losses at "
                f"blocks {[b + 1 for b in head_blocks(self.regime, k)]}",
            )

    def _check_pipeline(self) -> None:
        """What block-parallel training needs: every stage trains several gradient-isolated
        blocks at once (a pipeline stage owns whole optimizer units), and no head is shared
        by several blocks (its gradient would come from every pipeline stage)."""
        from bwssl.regimes import REGIMES, is_layerwise, stages

        if is_layerwise(self.regime):
            _fail(
                "train.parallel",
                f"blocks cannot pipeline regime {self.regime}: it trains the encoder as one "
                "unit, end to end; allowed with regimes whose blocks train at once "
                "(simultaneous)",
            )
        for stage in stages(self.regime, self.model.num_blocks):
            if not stage.isolated:
                why = (
                    "one block at a time"
                    if len(stage.trained) == 1
                    else "its blocks end to end, as one unit"
                )
                _fail(
                    "train.parallel",
                    f"blocks cannot pipeline regime {self.regime}: its stage "
                    f"{stage.index + 1} trains {why}; allowed with regimes whose blocks "
                    f"train at once ({', '.join(r for r in REGIMES if _pipelines(r, self))})",
                )
        if self.train.pipeline_stages is not None and self.train.pipeline_stages > min(
            len(s.units) for s in stages(self.regime, self.model.num_blocks)
        ):
            _fail(
                "train.pipeline_stages",
                f"must be <= the {self.model.num_blocks} blocks trained at once, got "
                f"{self.train.pipeline_stages}",
            )
        if self.model.shared_decoder:
            _fail(
                "train.parallel",
                "blocks needs a head per block; model.shared_decoder=true shares one",
            )

    def _check_layer_schedule(self) -> None:
        """What a layer-wise regime needs from the model and objective (the steps are checked
        against the run's length when it is known)."""
        from bwssl.objectives.registry import build_objective
        from bwssl.regimes import target_layers

        depth, ll = self.model.depth, self.layerlock
        frozen = ll.frozen_layers(depth)
        if frozen < 1:
            _fail(
                "layerlock.max_frozen",
                f"freezes no layer of a {depth}-layer encoder ({ll.max_frozen} x {depth} < 1)",
            )
        if frozen >= depth:
            _fail(
                "layerlock.max_frozen",
                f"must leave a layer to train: {frozen} frozen of {depth} layers (at most "
                f"{depth - 1})",
            )
        if ll.layers_per_event > frozen:
            _fail(
                "layerlock.layers_per_event",
                f"must be <= the {frozen} layers frozen in all (layerlock.max_frozen)",
            )
        if target_layers(self) and not build_objective(self).latent_targets:
            _fail(
                "objective.name",
                f"regime {self.regime} predicts latent targets, which {self.objective.name} "
                "cannot; use masked_pixels (or regime=freeze)",
            )

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """(T', H', W') tokens along time, height and width."""
        d, m = self.data, self.model
        s = d.crop_size // m.patch_size
        return d.num_frames // m.tubelet_size, s, s

    @property
    def num_tokens(self) -> int:
        t, h, w = self.token_grid
        return t * h * w

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short content hash of the resolved config."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- building from dicts, with type checks -------------------------------------------------

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        allowed = " or ".join(_type_name(a) for a in args)
        _fail(key, f"expected {allowed}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            _fail(key, f"allowed: {', '.join(str(a) for a in get_args(tp))}; got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            _fail(key, f"expected a list, got {value!r}")
        (inner,) = get_args(tp)
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            _fail(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"expected an integer, got {value!r}")
        if abs(value) >= 2**31:
            _fail(key, f"must lie in (-2**31, 2**31), got {value}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
            try:
                number = float(value)
            except ValueError:
                _fail(key, f"expected a number, got {value!r}")
            if not math.isfinite(number):
                _fail(key, f"must be a finite number, got {value!r}")
            return number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(key, f"expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            _fail(key, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(key, f"expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            _fail(key, f"expected a mapping of {tp.__name__} fields, got {value!r}")
        return coerce(tp, value, key)
    raise TypeError(f"unsupported config type {tp} at {key}")


def coerce(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from plain data, checking every key and type; errors
    name the dotted key (``prefix`` is the section's own key, e.g. ``data``)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k in data:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            _fail(where, f"unknown key; allowed keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(f"{prefix}.{k}" if prefix else k, v, hints[k]) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - all fields have defaults
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    return coerce(Config, data)


def parse_override(text: str) -> tuple[str, Any]:
    """``model.depth=6`` -> ("model.depth", 6); values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); unknown keys are caught by :func:`from_dict`."""
    out = json.loads(json.dumps(data))
    for text in overrides:
        key, value = parse_override(text)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key '{key}': '{p}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_names() -> list[str]:
    """Names of the presets shipped with bwssl."""
    files = resources.files("bwssl").joinpath("configs").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        if str(base) in chain:
            raise ConfigError(
                f"{source}: 'base: {base}' inherits from itself ({' -> '.join([*chain, str(base)])})"
            )
        data = _merge(load_raw(str(base), chain), data)
    return data


def load_raw(preset_or_path: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """Nested dict of a preset name or a YAML file (``base:`` inherits another; ``chain``:
    the files that inherit this one, to refuse a loop)."""
    path = Path(preset_or_path)
    chain = (*chain, preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {preset_or_path!r} does not exist")
        return _read_yaml(path.read_text(), str(path), chain)
    res = resources.files("bwssl").joinpath("configs", f"{preset_or_path}.yaml")
    if not res.is_file():
        raise ConfigError(
            f"unknown preset {preset_or_path!r}; presets: "
            f"{', '.join(preset_names())}; or give a path to a YAML file"
        )
    return _read_yaml(res.read_text(), f"preset {preset_or_path}", chain)


def load_config(preset_or_path: str, overrides: list[str] | None = None) -> Config:
    """Resolve a preset or YAML file plus ``key=value`` overrides into a validated Config."""
    return from_dict(apply_overrides(load_raw(preset_or_path), overrides or []))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
