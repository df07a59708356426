"""Backbones cut into blocks, and their local heads."""

from bwssl.models.blockwise import BlockwiseVideoMAE, build_model, load_model

__all__ = ["BlockwiseVideoMAE", "build_model", "load_model"]
