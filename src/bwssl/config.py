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
    """Backbone, a name of :data:`bwssl.models.BACKBONES`: ``video_vit`` (the keys up to
    ``rope``) or ``resnet`` (the ``resnet_*``, ``cifar_stem`` and ``sync_bn`` keys; images
    as one-frame clips)."""
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
    """K, the number of gradient-isolated blocks; must divide the backbone's cut units
    (``depth`` layers of a ViT, the 4 stages of a ResNet) unless ``boundaries`` is given."""
    boundaries: list[int] | None = None
    """Explicit cut points: the units where blocks 2..K start. ViT: layer indices, e.g.
    [2, 6, 9] for depth 12 and K 4. ResNet: stage indices in 1..3 of its 4 stages (0: stem
    + layer1, 1: layer2, 2: layer3, 3: layer4), e.g. [2, 3] for K 3 merges the first two
    blocks. Overrides the even split."""
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
    boundary_norm: bool = False
    """A LayerNorm (eps 1e-6, affine) at the end of every block, not only the last: each
    block's output, what the next block and block k's head read, is normalized. The paper's
    side ablation (it found no notable difference). Such models cannot be exported to
    Hugging Face VideoMAE."""
    resnet_depth: int = 50
    """ResNet: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks), as torchvision."""
    resnet_width: int = 64
    """ResNet: channels of the stem and of the first stage's blocks (doubled per stage);
    64 is torchvision's, smaller widths make debug models."""
    resnet_stage_blocks: list[int] | None = None
    """ResNet: residual blocks in each of the 4 stages; null: the depth's standard
    ([2, 2, 2, 2] for 18, [3, 4, 6, 3] for 34 and 50, ...)."""
    cifar_stem: bool = False
    """ResNet: a 3x3 stride-1 stem convolution and no max-pool (for 32-pixel images)
    instead of the 7x7 stride-2 convolution and max-pool."""
    sync_bn: bool = False
    """ResNet: under DDP every batch norm of the backbone normalizes over the global batch
    of all processes (the paper's SyncBatchNorm); with one process it changes nothing."""

    def __post_init__(self) -> None:
        # the registry imports this module
        from bwssl.models.registry import BACKBONES, backbone_spec

        _check_name("model.arch", self.arch, BACKBONES)
        spec = backbone_spec(self.arch)
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
        self._check_resnet_keys()
        units = self.cut_units
        if self.boundaries is not None:
            b = list(self.boundaries)
            if len(b) != self.num_blocks - 1:
                _fail(
                    "model.boundaries",
                    f"needs num_blocks-1={self.num_blocks - 1} cut points, got {len(b)}",
                )
            if b != sorted(set(b)) or (b and (b[0] <= 0 or b[-1] >= units)):
                _fail(
                    "model.boundaries",
                    f"must be strictly increasing {spec.unit} indices in 1..{units - 1} "
                    f"({spec.units_are(self)}), got {b}",
                )
        elif units % self.num_blocks:
            divisors = [k for k in range(1, units + 1) if units % k == 0]
            _fail(
                "model.num_blocks",
                f"must divide {spec.units_are(self)} "
                f"(allowed: {divisors}), got {self.num_blocks}; or give model.boundaries",
            )

    def _check_resnet_keys(self) -> None:
        from bwssl.models.resnet import RESNET_LAYOUTS

        if self.resnet_depth not in RESNET_LAYOUTS:
            _fail(
                "model.resnet_depth",
                f"allowed: {', '.join(map(str, RESNET_LAYOUTS))}; got {self.resnet_depth}",
            )
        if self.resnet_width < 1:
            _fail("model.resnet_width", f"must be a positive integer, got {self.resnet_width}")
        n = self.resnet_stage_blocks
        if n is not None and (len(n) != 4 or any(b < 1 for b in n)):
            _fail(
                "model.resnet_stage_blocks",
                f"must be 4 positive block counts (one per stage) or null, got {n}",
            )

    @property
    def cut_units(self) -> int:
        """How many units the encoder is cut between: layers of a ViT, stages of a ResNet."""
        from bwssl.models.registry import backbone_spec

        return backbone_spec(self.arch).cut_units(self)

    def block_ranges(self) -> list[tuple[int, int]]:
        """Unit index ranges [start, stop) of each block (layers of a ViT, stages of a
        ResNet)."""
        units = self.cut_units
        if self.boundaries is not None:
            cuts = [0, *self.boundaries, units]
        else:
            step = units // self.num_blocks
            cuts = list(range(0, units + 1, step))
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
    jitter: float | list[float] = 0.4
    """Colour jitter strengths: one number j scales brightness, contrast and saturation by
    factors in [1-j, 1+j] (no hue); four numbers [brightness, contrast, saturation, hue] set
    each factor's range, the hue shift being uniform in [-hue, hue] turns (Barlow Twins:
    [0.4, 0.4, 0.2, 0.1]). 0 turns colour jitter off."""
    jitter_prob: float = 0.8
    """Probability that a clip is colour-jittered."""
    jitter_order: Literal["fixed", "random"] = "fixed"
    """Order of the jitter's operations: ``fixed`` (brightness, contrast, saturation, hue) or
    ``random`` (a random permutation per clip, as torchvision's ColorJitter)."""
    gray_prob: float = 0.0
    """Probability that a clip is turned to grayscale (luma in every channel), after the
    jitter (Barlow Twins: 0.2)."""
    blur_prob: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """Probability of a Gaussian blur for the first and the second view (Barlow Twins:
    [1.0, 0.1]). The kernel side is 23 pixels at a 224 crop, scaled with the crop and kept
    odd (3 at 32, 7 at 64)."""
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    """Range of the blur's sigma in pixels, drawn uniformly per clip."""
    solarize_prob: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """Probability of solarization (pixels at or above half the range inverted) for the
    first and the second view (Barlow Twins: [0.0, 0.2])."""

    def __post_init__(self) -> None:
        s, r = self.scale, self.ratio
        if len(s) != 2 or not 0 < s[0] <= s[1] <= 1:
            _fail("objective.views.scale", f"must be [lo, hi] with 0 < lo <= hi <= 1, got {s}")
        if len(r) != 2 or not 0 < r[0] <= r[1]:
            _fail("objective.views.ratio", f"must be [lo, hi] with 0 < lo <= hi, got {r}")
        for name in ("flip_prob", "jitter_prob", "gray_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _fail(f"objective.views.{name}", f"must lie in [0, 1], got {getattr(self, name)}")
        j = self.jitter
        if isinstance(j, list):
            if len(j) != 4 or not all(0.0 <= v < 1.0 for v in j[:3]) or not 0.0 <= j[3] <= 0.5:
                _fail(
                    "objective.views.jitter",
                    "must be one strength in [0, 1) or [brightness, contrast, saturation, hue] "
                    f"with the first three in [0, 1) and hue in [0, 0.5], got {j}",
                )
        elif not 0.0 <= j < 1.0:
            _fail("objective.views.jitter", f"must lie in [0, 1), got {j}")
        for name in ("blur_prob", "solarize_prob"):
            p = getattr(self, name)
            if len(p) != 2 or not all(0.0 <= v <= 1.0 for v in p):
                _fail(
                    f"objective.views.{name}",
                    f"must be [view 1, view 2] probabilities in [0, 1], got {p}",
                )
        b = self.blur_sigma
        if len(b) != 2 or not 0 < b[0] <= b[1]:
            _fail("objective.views.blur_sigma", f"must be [lo, hi] with 0 < lo <= hi, got {b}")


@dataclass
class ObjectiveConfig:
    """The local objective every block with a head is trained on."""

    name: str = "masked_pixels"
    """A name of :data:`bwssl.objectives.OBJECTIVES`: ``masked_pixels`` (VideoMAE
    reconstruction; ``mask`` and ``loss`` sections), ``barlow_twins``, ``vicreg``,
    ``simclr`` (joint embedding of two views; ``views`` and the keys below), ``supervised``
    (cross-entropy with the clip's label through each block's head)."""
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
    pooling: Literal["backbone", "gsp", "lsp", "cbe"] = "backbone"
    """Joint embedding and supervised: how each head pools its block's output before the
    projector. ``backbone``: the backbone's own pooled features (token mean of the ViT);
    ``gsp``: global average of the feature map; ``lsp``: averages over a grid of spatial
    bins, concatenated to ``pool_width`` values; ``cbe``: a ``cbe_kernel`` convolution to
    ``pool_width`` channels (no bias), BatchNorm, ReLU, then ``cbe_pool`` pooling. The video
    ViT's feature map is its token grid averaged over time."""
    pool_width: int = 2048
    """``lsp`` and ``cbe``: width of the pooled vector (``lsp``: a multiple of each head's
    block channels, the bins laid out as a near-square grid)."""
    cbe_kernel: int = 1
    """``cbe``: side of the expanding convolution's kernel, odd (padding kernel // 2)."""
    cbe_pool: Literal["avg", "l2", "sqrt"] = "avg"
    """``cbe``: pooling after the expansion: ``avg`` (global average), ``l2`` (root of the
    mean square over positions) or ``sqrt`` (mean of the square roots)."""
    cbe_checkpoint: bool = False
    """``cbe``: in training, recompute each head's expansion (conv, batch norm, ReLU,
    pooling) in backward instead of keeping its pool_width-channel maps; the batch norm's
    running statistics still move once per forward. Less activation memory (block 1's
    expanded map is the largest of a ResNet) for one more conv forward per head."""
    cbe_chunk: int | None = None
    """``cbe`` with ``cbe_checkpoint``: images per chunk of the checkpointed expansion,
    forward and backward (batch statistics still over the whole, global, batch), so that
    its transient pool_width-channel maps scale with the chunk, not the batch; null: the
    whole batch at once. Costs two more conv forwards per head than ``cbe_checkpoint``
    alone."""
    num_classes: int | None = None
    """Supervised: number of classes of the labels; null: what the data config says
    (``synthetic``: ``data.synthetic_classes``; ``ucf101``: 101). Checked against the
    training set before the first step."""
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
        if self.pool_width < 1:
            _fail("objective.pool_width", f"must be >= 1, got {self.pool_width}")
        if self.cbe_kernel < 1 or self.cbe_kernel % 2 == 0:
            _fail(
                "objective.cbe_kernel",
                f"must be a positive odd kernel side (1, 3, ...), got {self.cbe_kernel}",
            )
        if self.cbe_chunk is not None:
            if self.cbe_chunk < 1:
                _fail("objective.cbe_chunk", f"must be >= 1 images or null, got {self.cbe_chunk}")
            if not self.cbe_checkpoint:
                _fail(
                    "objective.cbe_chunk",
                    "chunks the checkpointed expansion, so it needs objective.cbe_checkpoint=true",
                )
        if self.num_classes is not None and self.num_classes < 2:
            _fail("objective.num_classes", f"must be >= 2 or null, got {self.num_classes}")


@dataclass
class NoiseConfig:
    """Gaussian noise added to every block's output in training (the blockwise ResNet paper's
    regularizer): ``h + std * randn_like(h) * s`` with ``s`` the standard deviation of ``h``
    (not detached), before the pooling of the block's head and before the next block, so
    the next block sees the noisy tensor too. Never in evaluation mode."""

    std: float = 0.0
    """Noise scale relative to the activations' standard deviation (0.25 in the paper);
    0 turns the noise off."""
    mode: Literal["all", "channel", "position"] = "all"
    """Over what ``s`` is taken: ``all``, one scalar over the whole (B, C, H, W) output (the
    released code's); ``channel``, one per channel over (B, H, W); ``position``, one per
    spatial position over (B, C)."""

    def __post_init__(self) -> None:
        if self.std < 0:
            _fail("noise.std", f"must be >= 0 (0: no noise), got {self.std}")


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
    optimizer: str = "adamw"
    """A name of :data:`bwssl.train.optim.OPTIMIZERS`: ``adamw`` (``betas``) or ``lars``
    (SGD with momentum and a layer-wise trust ratio: ``momentum``, ``lars_eta``,
    ``lars_clip``; 1-D parameters get no weight decay and no trust ratio; ``betas`` is
    ignored)."""
    lr: float = 1e-4
    """Peak learning rate of the weights: the peak of the schedule, or with ``lr_scale_batch``
    the base rate that the batch size scales (see :attr:`peak_lr`)."""
    lr_biases: float | None = None
    """Peak learning rate of the parameters without weight decay (biases and norm weights;
    with adamw also mask tokens), before batch-size scaling; they follow the weights'
    schedule scaled by lr_biases / lr. null: the same as ``lr``."""
    lr_scale_batch: int | None = None
    """If set, the peak LR is lr * batch_size / lr_scale_batch (linear scaling; VideoMAE
    reads its lr this way with 256); null: ``lr`` is the peak itself."""
    min_lr: float = 1e-6
    """Final learning rate of the cosine schedule (not scaled by the batch size; unless
    ``min_lr_ratio`` is set)."""
    min_lr_ratio: float | None = None
    """If set, the cosine schedule ends at this fraction of the peak learning rate instead
    of the absolute ``min_lr`` (Barlow Twins: 0.001)."""
    warmup_epochs: float = 0.0
    """Linear warmup length, in epochs, at the start of every stage."""
    weight_decay: float = 0.05
    """Decoupled (adamw) or L2 (lars) weight decay of the weights; never on biases and norms."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW's (beta1, beta2); ignored by lars."""
    momentum: float = 0.9
    """LARS: momentum of the update."""
    lars_eta: float = 0.001
    """LARS: trust coefficient eta (the update of a weight is about eta x its norm x lr)."""
    lars_clip: bool = False
    """LARS: solo-learn's clipped rule (its ``clip_lr``) instead of the official Barlow
    Twins one: a weight's local rate eta ||w|| / (||g|| + weight_decay ||w|| + 1e-8) is
    capped at the schedule's lr, so its step is min(that rate, lr) times its decayed
    gradient: at most about eta x its norm, and plain SGD's where the cap binds. Ignored by
    adamw."""
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

    @property
    def peak_lr(self) -> float:
        """The schedule's peak: ``lr``, times ``batch_size / lr_scale_batch`` when that is set."""
        return self.lr * (self.batch_size / self.lr_scale_batch if self.lr_scale_batch else 1.0)

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
        from bwssl.train.optim import OPTIMIZERS  # that module imports this one

        _check_name("train.optimizer", self.optimizer, OPTIMIZERS)
        if self.lr <= 0:
            _fail("train.lr", f"must be > 0, got {self.lr}")
        if self.lr_scale_batch is not None and self.lr_scale_batch < 1:
            _fail("train.lr_scale_batch", f"must be >= 1 or null, got {self.lr_scale_batch}")
        if self.lr_biases is not None and self.lr_biases < 0:
            _fail("train.lr_biases", f"must be >= 0 or null, got {self.lr_biases}")
        if self.min_lr_ratio is not None and not 0 <= self.min_lr_ratio <= 1:
            _fail("train.min_lr_ratio", f"must lie in [0, 1] or be null, got {self.min_lr_ratio}")
        if not 0 <= self.momentum < 1:
            _fail("train.momentum", f"must lie in [0, 1), got {self.momentum}")
        if self.lars_eta <= 0:
            _fail("train.lars_eta", f"must be > 0, got {self.lars_eta}")
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


IMAGE_DATASETS = ("synthetic_images", "images", "cifar10", "cifar100")
"""Names of ``data.name`` whose items are images (one-frame clips)."""


@dataclass
class DataConfig:
    """Where clips come from and their format (shared by training and analysis)."""

    name: Literal[
        "auto",
        "synthetic",
        "ucf101",
        "hmdb51",
        "kinetics",
        "ssv2",
        "folder",
        "synthetic_images",
        "images",
        "cifar10",
        "cifar100",
    ] = "auto"
    """``synthetic``: the embedded procedural video dataset; ``ucf101`` (``root`` or
    ``frames_root``), ``hmdb51``, ``kinetics``, ``ssv2``, ``folder`` (a user's class folders):
    videos under ``root`` in the dataset's official layout (docs/data.md); ``auto``: ucf101
    when a root is given, else synthetic. Images (one-frame clips, ``num_frames`` must be 1):
    ``synthetic_images``, the embedded procedural shapes (sizes ``synthetic_train``,
    ``synthetic_test``, ``synthetic_classes``); ``images``, a folder in ImageFolder layout
    (``root``/train/<class>/*.jpg and ``root``/val/<class>/); ``cifar10`` / ``cifar100``, the
    official python pickles in ``root`` or in its ``cifar-10-batches-py`` /
    ``cifar-100-python`` subfolder."""
    root: str | None = None
    """The video folder of a video dataset (UCF101: one subfolder per class, and
    ucfTrainTestlist). ``images``: the folder holding train/ and val/. CIFAR: the unpacked
    pickles (or their parent)."""
    frames_root: str | None = None
    """UCF101: pre-extracted frame folders (``bwssl data extract-frames``); used instead of
    decoding videos."""
    split_dir: str | None = None
    """The split lists or annotations: UCF101's ucfTrainTestlist (default: under ROOT, else
    FRAMES_ROOT), HMDB51's split files (ROOT/testTrainMulti_7030_splits), Kinetics' CSVs
    (ROOT/annotations, else ROOT), SSv2's labels folder (ROOT/labels), a folder dataset's
    train.txt and test.txt (ROOT/splits; none: split by name)."""
    split: int = 1
    """UCF101 and HMDB51 official split, 1, 2 or 3 (other datasets have one)."""
    num_frames: int = 16
    """T, frames per clip."""
    frame_stride: int = 4
    """Frames between sampled clip frames (clip span = num_frames * frame_stride; shorter
    videos are excluded). The synthetic data is rendered at the clip rate and ignores it, as
do images (one frame)."""
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
    """Video datasets, image folders and CIFAR: seeded subsample of the test (val) split used
    for evaluation (the synthetic test splits are used whole: their size is
    ``synthetic_test``)."""
    max_unreadable_fraction: float = 0.05
    """Stop the run if more than this fraction of clips cannot be read."""
    allow_missing: bool = False
    """Video datasets: go on when files listed in the split files are missing (they are logged
    and counted) instead of stopping before training. Kinetics always goes on."""
    synthetic_train: int = 512
    """Synthetic datasets: training clips (images for ``synthetic_images``)."""
    synthetic_test: int = 256
    """Synthetic datasets: test clips (images for ``synthetic_images``)."""
    synthetic_classes: int = 10
    """Synthetic datasets: number of classes (2 to 16): motions, or shape x texture pairs."""
    cache_dir: str | None = None
    """Folder for the UCF101 video index and for generated clips (synthetic data, gratings).
    Default: the index goes to $BWSSL_CACHE_DIR or ~/.cache/bwssl, generated clips are
    rendered on the fly."""

    def __post_init__(self) -> None:
        if self.name == "auto":
            self.name = "ucf101" if (self.root or self.frames_root) else "synthetic"
        if self.split not in (1, 2, 3):
            _fail("data.split", f"allowed: 1, 2, 3; got {self.split}")
        if self.name in IMAGE_DATASETS:
            if self.num_frames != 1:
                _fail(
                    "data.num_frames",
                    f"data.name={self.name} makes one-frame clips: set data.num_frames=1, "
                    f"got {self.num_frames}",
                )
            if self.name != "synthetic_images" and self.root is None:
                _fail("data.root", f"data.name={self.name} needs data.root (see data.name)")
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
        if self.frames_root is not None and self.name not in ("ucf101", "synthetic"):
            _fail(
                "data.frames_root",
                f"frame folders are read for ucf101 only; data.name={self.name} decodes the "
                "videos under data.root (unset data.frames_root)",
            )
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
    the baselines ``last_only`` (earlier blocks random and frozen) and ``first_e2e`` (block 1
    trained end to end, the rest re-initialized and sequential); ``untrained`` saves the E2E
    model as initialized (no training), the reference for the analyses."""
    seed: int = 0
    """Seeds weights, data order, augmentations and masks."""
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    layerlock: LayerLockConfig = field(default_factory=LayerLockConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        from bwssl.models.registry import backbone_spec
        from bwssl.objectives.registry import build_objective
        from bwssl.regimes import REGIMES

        _check_name("regime", self.regime, REGIMES)
        if self.seed < 0:
            _fail("seed", f"must be >= 0, got {self.seed}")
        self._check_size()
        backbone = backbone_spec(self.model.arch)
        if REGIMES[self.regime].schedule is not None:
            if not backbone.layer_cut:
                _fail(
                    "regime",
                    f"{self.regime} trains layer by layer, but a {self.model.arch} backbone "
                    "cannot be cut per layer; use e2e, simultaneous or sequential",
                )
            self._check_layer_schedule()
        objective = build_objective(self)  # checks the objective's own keys
        if objective.masks_tokens and not backbone.masks_tokens:
            _fail(
                "objective.name",
                f"{self.objective.name} hides tokens from the encoder, which a "
                f"{self.model.arch} backbone cannot; use a joint-embedding objective "
                "(barlow_twins, vicreg, simclr)",
            )
        if self.objective.pooling != "backbone" and not objective.pooling_heads:
            _fail(
                "objective.pooling",
                f"{self.objective.pooling} pools the input of a projector or classifier head, "
                f"which {self.objective.name} has not; use backbone, or a joint-embedding or "
                "supervised objective",
            )
        need = objective.min_batch
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
        if self.objective.decoding == "tokens":
            self._check_decoding_tokens()
        backbone.check(self)
        if self.data.name == "ucf101" and self.data.root is None and self.data.frames_root is None:
            _fail(
                "data.root",
                "data.name=ucf101 needs data.root (the UCF101 video folder) or data.frames_root",
            )
        if (
            self.data.name not in ("synthetic", "synthetic_images", "ucf101")
            and self.data.root is None
        ):
            _fail("data.root", f"data.name={self.data.name} needs data.root (its folder)")

    def _check_size(self) -> None:
        """Refuse models whose weights alone would not fit any machine, before allocating."""
        from bwssl.models.registry import backbone_spec

        spec = backbone_spec(self.model.arch)
        params = spec.approx_params(self.model)
        if params > 1e10:
            _fail(
                "model",
                f"about {params:.2g} parameters ({params * 4 / 2**30:,.0f} GiB of fp32 weights "
                f"alone; {spec.size_keys(self.model)}): too large to build",
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
