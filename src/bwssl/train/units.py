"""An optimizer unit's forward: the blocks it trains and their local losses."""

from __future__ import annotations

import torch
from torch import nn

from bwssl.models.blockwise import BlockwiseModel
from bwssl.objectives.base import StepData


class UnitForward(nn.Module):
    """Forward of one optimizer unit: its blocks in order on every view, then the active local
    losses. Its submodules are exactly what the unit trains, so DDP and torch.compile wrap
    the unit and nothing else."""

    def __init__(
        self, model: BlockwiseModel, blocks: tuple[int, ...], loss_blocks: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.model_blocks = nn.ModuleList(model.blocks[k] for k in blocks)
        self.heads = nn.ModuleList(model.head(k) for k in blocks if k in loss_blocks)
        self.ids, self.loss_blocks = blocks, loss_blocks
        self._model = [model]  # a plain list: not a submodule, so not wrapped twice

    def forward(
        self, xs: list[torch.Tensor], step: StepData
    ) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """``xs``: the unit's input, one tensor per view; returns its outputs and losses."""
        model, losses = self._model[0], {}
        for k in self.ids:
            xs = [
                model.forward_block(k, x, inp) for x, inp in zip(xs, step.block_inputs, strict=True)
            ]
            if k in self.loss_blocks:
                losses[k] = model.objective.loss(k, xs, model.head(k), step, model.backbone)
        return xs, losses
