"""Backbones cut into blocks, and their local heads."""

from bwssl.models.backbone import Backbone, BlockInput, ClipShape
from bwssl.models.blockwise import BlockwiseModel, build_model, load_model
from bwssl.models.registry import BACKBONES, BackboneSpec, backbone_spec, build_backbone

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "BlockInput",
    "BlockwiseModel",
    "ClipShape",
    "backbone_spec",
    "build_backbone",
    "build_model",
    "load_model",
]
