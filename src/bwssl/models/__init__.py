"""Backbones cut into blocks, and their local heads."""

from bwssl.models.backbone import Backbone, BlockInput, ClipShape
from bwssl.models.blockwise import BlockwiseModel, build_model, load_model
from bwssl.models.registry import BACKBONES, build_backbone

__all__ = [
    "BACKBONES",
    "Backbone",
    "BlockInput",
    "BlockwiseModel",
    "ClipShape",
    "build_backbone",
    "build_model",
    "load_model",
]
