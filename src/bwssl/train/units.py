"""An optimizer unit's forward: the blocks it trains and their local losses."""

from __future__ import annotations

import torch
from torch import nn

from bwssl.models.blockwise import BlockwiseVideoMAE


class UnitForward(nn.Module):
    """Forward of one optimizer unit: its blocks in order, then the active local losses."""

    def __init__(self, model: BlockwiseVideoMAE, blocks: tuple[int, ...],
                 loss_blocks: tuple[int, ...]) -> None:
        super().__init__()
        self.model_blocks = nn.ModuleList(model.blocks[k] for k in blocks)
        self.decoders = nn.ModuleList(model.decoder(k) for k in blocks if k in loss_blocks)
        self.ids, self.loss_blocks = blocks, loss_blocks
        self._model = [model]  # a plain list: not a submodule, so not wrapped twice

    def forward(self, x: torch.Tensor, mask: torch.Tensor, visible_idx: torch.Tensor,
                target_idx: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        model, losses = self._model[0], {}
        for k, block in zip(self.ids, self.model_blocks, strict=True):
            x = block(x, mask if k == 0 else None)
            if k in self.loss_blocks:
                losses[k] = model.local_loss(k, x, visible_idx, target_idx, targets)
        return x, losses
