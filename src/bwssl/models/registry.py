"""The backbones bwssl can build, by ``model.arch``: adding one is its own file and one line here."""

from __future__ import annotations

from collections.abc import Callable

from bwssl.config import Config
from bwssl.models.backbone import Backbone, ClipShape


def _video_vit(cfg: Config) -> Backbone:
    from bwssl.models.video_vit import VideoViT

    return VideoViT(
        cfg.model, ClipShape(cfg.data.channels, cfg.data.num_frames, cfg.data.crop_size)
    )


BACKBONES: dict[str, Callable[[Config], Backbone]] = {
    "video_vit": _video_vit,
}
"""Backbone builders by name; each takes the whole config (the clip shape comes from data)."""


def build_backbone(cfg: Config) -> Backbone:
    """The backbone of ``cfg``, freshly initialized from the global RNG."""
    return BACKBONES[cfg.model.arch](cfg)
