"""The backbones bwssl can build, by ``model.arch``: adding one is its own file and one entry
here.

An entry is a :class:`BackboneSpec`: it builds the backbone and answers what the
config needs to know before anything is built (how many units ``model.boundaries``
index, which settings it refuses, its rough size), so that the config never asks
which architecture it holds. A plain builder (a callable taking the config) is an
entry too: it is cut between ``model.depth`` units and refuses nothing up front.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from bwssl.config import Config, ConfigError, ModelConfig
from bwssl.models.backbone import Backbone, ClipShape


def _refuse(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key '{key}': {message}")


class BackboneSpec(abc.ABC):
    """One ``model.arch``: a builder (call it with the config) and its config rules."""

    unit: str
    """What ``model.boundaries`` index: ``layer``, ``stage``."""
    debug_preset: str | None
    """A shipped preset of a tiny model of this backbone that trains a few steps in seconds
    on a CPU (tests and smoke runs)."""
    layer_cut: bool
    """Whether the backbone has a per-layer cut (:meth:`Backbone.layer_view`), which the
    layer-wise regimes train."""
    masks_tokens: bool
    """Whether block 0 can embed only the tokens of a keep mask (masked objectives)."""

    @abc.abstractmethod
    def __call__(self, cfg: Config) -> Backbone:
        """The backbone of ``cfg``, freshly initialized from the global RNG."""

    @abc.abstractmethod
    def cut_units(self, m: ModelConfig) -> int:
        """How many units the encoder is cut between (``model.num_blocks`` must divide it)."""

    @abc.abstractmethod
    def units_are(self, m: ModelConfig) -> str:
        """The units, in words, for error messages."""

    @abc.abstractmethod
    def check(self, cfg: Config) -> None:
        """Raise ConfigError (naming the key) for settings of the whole run this backbone
        cannot serve: its input shape, its options."""

    @abc.abstractmethod
    def approx_params(self, m: ModelConfig) -> float:
        """Roughly how many parameters the model (with its heads) has, before building."""

    @abc.abstractmethod
    def size_keys(self, m: ModelConfig) -> str:
        """The keys that set the size, with their values, for the too-large message."""

    def describe(self, m: ModelConfig) -> str:
        """A short readable name of the architecture ``m`` describes (tables, figures)."""
        return m.arch


class VideoViTSpec(BackboneSpec):
    """``video_vit``: cut between its ``model.depth`` transformer layers."""

    unit = "layer"
    debug_preset = "tiny-debug"
    layer_cut = True
    masks_tokens = True

    def __call__(self, cfg: Config) -> Backbone:
        from bwssl.models.video_vit import VideoViT

        return VideoViT(
            cfg.model, ClipShape(cfg.data.channels, cfg.data.num_frames, cfg.data.crop_size)
        )

    def cut_units(self, m: ModelConfig) -> int:
        return m.depth

    def units_are(self, m: ModelConfig) -> str:
        return f"model.depth={m.depth}"

    def check(self, cfg: Config) -> None:
        m, d = cfg.model, cfg.data
        if d.crop_size % m.patch_size:
            raise _refuse(
                "model.patch_size", f"must divide data.crop_size={d.crop_size}, got {m.patch_size}"
            )
        if d.num_frames % m.tubelet_size:
            raise _refuse(
                "model.tubelet_size",
                f"must divide data.num_frames={d.num_frames}, got {m.tubelet_size}",
            )
        from bwssl.data.masking import num_masked

        t, h, w = cfg.token_grid
        masked_over = h * w if cfg.mask.kind == "tube" else t * h * w
        if num_masked(masked_over, cfg.mask.ratio) < 1:
            raise _refuse(
                "mask.ratio",
                f"masks no token: int({cfg.mask.ratio} x {masked_over}) = 0 "
                f"({'spatial positions' if cfg.mask.kind == 'tube' else 'tokens'}); raise it",
            )
        if cfg.noise.std > 0:
            raise _refuse("noise.std", "feature noise is a resnet option; set it to 0")

    def approx_params(self, m: ModelConfig) -> float:
        per_layer = 4 * m.embed_dim**2 + 2 * m.mlp_ratio * m.embed_dim**2
        per_decoder_layer = 4 * m.decoder_dim**2 + 2 * m.mlp_ratio * m.decoder_dim**2
        return m.depth * per_layer + m.num_blocks * m.decoder_depth * per_decoder_layer

    def size_keys(self, m: ModelConfig) -> str:
        return (
            f"model.embed_dim={m.embed_dim}, model.depth={m.depth}, "
            f"model.decoder_dim={m.decoder_dim}"
        )

    def describe(self, m: ModelConfig) -> str:
        """``deit-tiny``/``deit-small`` for their shapes, else ``vit-d{width}`` (``-l{depth}``
        when the depth is not 12)."""
        if m.depth == 12 and m.mlp_ratio == 4.0:
            if (m.embed_dim, m.num_heads) == (192, 3):
                return "deit-tiny"
            if (m.embed_dim, m.num_heads) == (384, 6):
                return "deit-small"
        return f"vit-d{m.embed_dim}" + ("" if m.depth == 12 else f"-l{m.depth}")


class ResNetSpec(BackboneSpec):
    """``resnet``: cut between its 4 stages (the stem goes with the first)."""

    unit = "stage"
    debug_preset = "resnet-debug"
    layer_cut = False
    masks_tokens = False

    def __call__(self, cfg: Config) -> Backbone:
        from bwssl.models.resnet import ResNet

        return ResNet(
            cfg.model,
            ClipShape(cfg.data.channels, cfg.data.num_frames, cfg.data.crop_size),
            cfg.noise,
        )

    def cut_units(self, m: ModelConfig) -> int:
        return 4

    def units_are(self, m: ModelConfig) -> str:
        return "the 4 stages of a resnet (0: stem + layer1, 1: layer2, 2: layer3, 3: layer4)"

    def check(self, cfg: Config) -> None:
        if cfg.data.num_frames != 1:
            raise _refuse(
                "data.num_frames",
                f"a resnet reads images, one-frame clips: set it to 1, got {cfg.data.num_frames}",
            )
        for key in ("rope", "boundary_norm"):
            if getattr(cfg.model, key):
                raise _refuse(f"model.{key}", "is a video_vit option; set it to false")

    def approx_params(self, m: ModelConfig) -> float:
        from bwssl.models.resnet import resnet_layout

        kind, blocks = resnet_layout(m)
        w, total = m.resnet_width, 49.0 * 3 * m.resnet_width
        for i, n in enumerate(blocks):
            c = w * 2**i
            per = 18 * c * c if kind == "basic" else 4 * c * c + 9 * c * c + 4 * c * c
            total += n * per
        return total

    def size_keys(self, m: ModelConfig) -> str:
        return (
            f"model.resnet_width={m.resnet_width}, model.resnet_depth={m.resnet_depth}, "
            f"model.resnet_stage_blocks={m.resnet_stage_blocks}"
        )

    def describe(self, m: ModelConfig) -> str:
        """``resnet{depth}``, with ``-w{width}`` off width 64, ``-b{blocks per stage}`` off the
        depth's standard, ``-cifar`` with the CIFAR stem."""
        from bwssl.models.resnet import RESNET_LAYOUTS

        name = f"resnet{m.resnet_depth}"
        if m.resnet_width != 64:
            name += f"-w{m.resnet_width}"
        blocks = m.resnet_stage_blocks
        if blocks is not None and tuple(blocks) != RESNET_LAYOUTS[m.resnet_depth][1]:
            name += "-b" + "".join(map(str, blocks))
        return name + ("-cifar" if m.cifar_stem else "")


class PlainBuilder(BackboneSpec):
    """A backbone registered as a plain builder: cut between ``model.depth`` units, no
    checks before building (what it cannot serve fails when it runs)."""

    unit = "unit"
    debug_preset = None
    layer_cut = True
    masks_tokens = True

    def __init__(self, build: Callable[[Config], Backbone]) -> None:
        self.build = build

    def __call__(self, cfg: Config) -> Backbone:
        return self.build(cfg)

    def cut_units(self, m: ModelConfig) -> int:
        return m.depth

    def units_are(self, m: ModelConfig) -> str:
        return f"model.depth={m.depth}"

    def check(self, cfg: Config) -> None:
        pass

    def approx_params(self, m: ModelConfig) -> float:
        return 0.0

    def size_keys(self, m: ModelConfig) -> str:
        return ""


BACKBONES: dict[str, BackboneSpec | Callable[[Config], Backbone]] = {
    "video_vit": VideoViTSpec(),
    "resnet": ResNetSpec(),
}
"""Backbones by name: a :class:`BackboneSpec`, or a plain builder; calling either with the
whole config builds the backbone (the clip shape comes from data)."""


def backbone_spec(arch: str) -> BackboneSpec:
    """The entry of ``arch`` in :data:`BACKBONES` as a :class:`BackboneSpec`."""
    entry = BACKBONES[arch]
    return entry if isinstance(entry, BackboneSpec) else PlainBuilder(entry)


def build_backbone(cfg: Config) -> Backbone:
    """The backbone of ``cfg``, freshly initialized from the global RNG."""
    return BACKBONES[cfg.model.arch](cfg)
