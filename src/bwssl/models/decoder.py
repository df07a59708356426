"""VideoMAE decoder: predicts pixels of the requested (masked) tokens from the visible ones."""

from __future__ import annotations

import torch
from torch import nn

from bwssl.models.rope import Grid, Rotary3D, index_coords
from bwssl.models.video_vit import LayerStack, init_weights, sinusoid_table


class Decoder(nn.Module):
    """Visible tokens (B, N_vis, D_enc) + target positions -> predictions (B, M, P).

    ``P`` is the number of pixel values in one tubelet (t * p * p * C). Positions
    are the sinusoid table added to the tokens and queries, or, given
    ``rope_grid`` (the (T', H', W') token grid, of ``num_tokens`` tokens), rotary
    positions in every attention and no table (``pos_embed`` is None).
    """

    def __init__(
        self,
        enc_dim: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        num_tokens: int,
        out_dim: int,
        rope_grid: Grid | None = None,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.rope_grid = rope_grid
        self.rotary: Rotary3D | None = None
        table: torch.Tensor | None = sinusoid_table(num_tokens, dim)
        if rope_grid is not None:
            t, h, w = rope_grid
            if t * h * w != num_tokens:
                raise ValueError(f"grid {rope_grid} does not have {num_tokens} tokens")
            self.rotary, table = Rotary3D(dim // heads), None
        self.pos_embed: torch.Tensor | None
        self.register_buffer("pos_embed", table, persistent=False)
        self.layers = LayerStack(depth, dim, heads, mlp_ratio)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def features(
        self, visible: torch.Tensor, visible_idx: torch.Tensor, target_idx: torch.Tensor
    ) -> torch.Tensor:
        """The normalized decoder features of the target tokens (B, M, Dd), before the pixel
        read-out; ``visible_idx`` (B, N_vis) and ``target_idx`` (B, M) index the token grid."""
        b, m = target_idx.shape
        if self.pos_embed is not None:
            x = self.embed(visible) + self.pos_embed[visible_idx]  # (B, N_vis, Dd)
            queries = self.mask_token.expand(b, m, -1) + self.pos_embed[target_idx]  # (B, M, Dd)
            x = self.layers(torch.cat([x, queries], dim=1))
        else:
            assert self.rotary is not None and self.rope_grid is not None
            x = torch.cat([self.embed(visible), self.mask_token.expand(b, m, -1)], dim=1)
            idx = torch.cat([visible_idx, target_idx], dim=1)  # positions of x's tokens
            x = self.layers(x, self.rotary.tables(index_coords(idx, self.rope_grid)))
        return self.norm(x[:, -m:])

    def forward(
        self, visible: torch.Tensor, visible_idx: torch.Tensor, target_idx: torch.Tensor
    ) -> torch.Tensor:
        """Pixel predictions (B, M, P) of the target tokens (see :meth:`features`)."""
        return self.head(self.features(visible, visible_idx, target_idx))
