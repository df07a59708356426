"""What every backbone is: an encoder cut into K blocks, and nothing about heads or losses.

The analysis needs only :meth:`Backbone.block_outputs`, :meth:`Backbone.pool`
and :meth:`Backbone.tokens` (pooling heads :meth:`Backbone.feature_map`); the trainer runs blocks one by one through
:meth:`Backbone.forward_block` so that regimes can stop gradients, freeze a
prefix or skip blocks between any two of them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ClipShape:
    """What a model is built for: (C, T, H=W) clips."""

    channels: int
    frames: int
    size: int


@dataclass(frozen=True)
class BlockInput:
    """Per-step inputs of the blocks besides their input tensor (from the objective); every
    block of a step gets the same one.

    ``keep`` (B, N) bool, the same count per clip: block 0 embeds only these
    tokens (masked objectives) and every later block's tokens are these, in
    token order; None: every token.
    """

    keep: torch.Tensor | None = None
    decode_idx: torch.Tensor | None = None
    """(B, M) grid positions of decoding tokens: position-only tokens that join the
    sequence before encoder layer ``decode_at`` and leave the last block as its final M
    tokens, where a per-token read-out predicts them (None: no decoding tokens)."""
    decode_at: int | None = None
    """The global encoder layer before which the decoding tokens join."""


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """An encoder whose only parameters are ``blocks``; block 0 takes the input clip.

    A subclass builds ``blocks`` and implements the abstract methods."""

    blocks: nn.ModuleList

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward_block(self, k: int, x: torch.Tensor, inp: BlockInput | None = None) -> torch.Tensor:
        """Block k's output from its input (block 0: the clip). Every block gets the step's
        ``inp``: block 0 embeds the tokens it keeps, later blocks learn from it which
        positions their tokens hold (rotary positions need them)."""
        return self.blocks[k](x, inp)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The K block outputs on the input ``x``, every token kept."""
        outs = []
        for k in range(self.num_blocks):
            x = self.forward_block(k, x)
            outs.append(x)
        return outs

    def layer_view(self) -> Backbone | None:
        """The same encoder cut into one block per layer, sharing these parameters (what
        layer-wise regimes train and what latent targets are read from); None when the
        backbone has no such cut. A view of a view is itself."""
        return None

    @abc.abstractmethod
    def pool(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Block k's output ``h`` pooled to one vector per example, (B, D_k)."""

    def feature_map(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Block k's output ``h`` as a spatial map (B, C, H, W), C = D_k, what pooling heads
        read. The default takes a 4-D output as it is (convolutional backbones); a backbone
        with other outputs overrides it."""
        if h.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} block {k} gives a {h.ndim}-D output, not a (B, C, H, W) "
                "map; the backbone must define feature_map for pooling heads"
            )
        return h

    @abc.abstractmethod
    def tokens(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Block k's output ``h`` as a set of tokens, (B, N, D_k)."""

    @abc.abstractmethod
    def feature_dim(self, k: int) -> int:
        """D_k, the width of block k's pooled features and tokens."""

    @abc.abstractmethod
    def num_tokens(self, k: int) -> int:
        """N_k, the number of tokens of block k's output (all tokens kept)."""
