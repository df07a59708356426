"""torchvision ResNet state dicts in and out of the bwssl ResNet backbone.

torchvision names a ResNet's tensors ``conv1.weight``, ``bn1.running_mean``,
``layer3.2.bn2.running_var``, ..., ``fc.weight``; the backbone keeps the very
same names under the block that holds each stage: the stem and ``layer1`` in
block 0, and ``layerN`` in the block whose stage range holds stage N-1
(``blocks.1.layer2.0.downsample.0.weight`` with the paper's 4 blocks). The
classifier ``fc`` has no place in the backbone and is dropped on import.
torchvision itself is not needed: the state dict is plain tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from bwssl.models.resnet import ResNet

STEM_NAMES = ("conv1.", "bn1.")
"""Prefixes of the stem's tensors in a torchvision state dict."""


def _stage_block(backbone: ResNet) -> dict[int, int]:
    """Stage index (0-based) -> the block holding it."""
    return {s: k for k, (a, b) in enumerate(backbone.ranges) for s in range(a, b)}


def from_torchvision_keys(
    state: Mapping[str, torch.Tensor], backbone: ResNet
) -> dict[str, torch.Tensor]:
    """``state`` (torchvision keys) re-keyed for ``backbone``'s cut; ``fc.*`` dropped.

    Raises ValueError on a key that is neither the stem's, a ``layerN`` stage's nor ``fc``'s.
    """
    where = _stage_block(backbone)
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        if key.startswith(STEM_NAMES):
            out[f"blocks.0.{key}"] = value
        elif key.startswith("layer") and key[5:6].isdigit() and 1 <= int(key[5]) <= 4:
            out[f"blocks.{where[int(key[5]) - 1]}.{key}"] = value
        else:
            raise ValueError(f"{key!r} is not a torchvision ResNet key")
    return out


def to_torchvision_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ResNet backbone's (or its model's) ``blocks.{k}.*`` tensors under torchvision's names;
    other keys (heads) are left out."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            out[".".join(parts[2:])] = value
    return out


def load_torchvision_resnet(backbone: ResNet, state: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision ResNet state dict (e.g. ``torchvision.models.resnet50().state_dict()``)
    into ``backbone``, in place.

    Raises ValueError naming the missing or unexpected keys, or a shape mismatch, when the
    state dict is not of the backbone's depth, width and stem.
    """
    mine = backbone.state_dict()
    theirs = from_torchvision_keys(state, backbone)
    missing = sorted(set(mine) - set(theirs))
    unexpected = sorted(set(theirs) - set(mine))
    if missing or unexpected:
        raise ValueError(
            f"the state dict does not fit this resnet: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} ({len(missing)} and {len(unexpected)} in all)"
        )
    for key, value in theirs.items():
        if value.shape != mine[key].shape:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} in the state dict, "
                f"{tuple(mine[key].shape)} in the backbone (another width or stem?)"
            )
    backbone.load_state_dict(theirs, strict=True)


def export_torchvision_resnet(backbone: ResNet) -> dict[str, torch.Tensor]:
    """``backbone``'s weights and batch-norm statistics as a torchvision ResNet state dict
    without ``fc`` (load it with ``strict=False`` or add a classifier)."""
    return {k: v.detach().clone() for k, v in to_torchvision_keys(backbone.state_dict()).items()}
