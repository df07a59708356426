"""Rotary position embeddings (RoPE) over a (time, height, width) token grid.

The per-head feature vector is cut into four consecutive parts: about 10% of
its dims rotated by the token's time index t, 25% by its row h, 25% by its
column w, the rest left as they are. Each rotated part is ordinary 1-D RoPE
with maximum wavelength 10,000: its dims form pairs ``(2i, 2i + 1)``, and pair
i turns by the angle ``pos * 10000^(-2i / d_part)``. Queries and keys are
rotated, values are not, so that an attention logit depends on the two
tokens' contents and on their offset ``(dt, dh, dw)`` only.

Why it is written here: the RoPE of torchtune, HF transformers and the like
turns every token by one 1-D position. Here a token has three coordinates,
the head dim is split into parts of fixed shares, and the tokens present are
any subset of the grid in token order (a masked encoder sees only its kept
tokens, a decoder its visible tokens followed by its queries), so the few lines
of math are kept in this module, with no extra dependency.

Tensors: coordinates are integer (..., 3) tensors of (t, h, w); the grid
flattens with w fastest, then h, then t, as the tubelet embedding does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

SHARES_PERCENT = (10, 25, 25)
"""Shares of the head dim rotated by t, h and w (percent); the rest is not rotated."""

MAX_WAVELENGTH = 10_000.0
"""The slowest frequency of each rotated part is ``1 / MAX_WAVELENGTH`` radians per step."""

Grid = tuple[int, int, int]
"""(T', H', W'): tokens along time, height and width."""


def split_head_dim(head_dim: int) -> tuple[int, int, int, int]:
    """The sizes (d_t, d_h, d_w, d_rest) of the four parts of a head's feature vector.

    Each rotated part is its share of ``head_dim`` rounded down to an even number,
    but at least 2 dims (one frequency), so that small heads still see all three
    axes: at 64 dims the parts are (6, 16, 16, 26), at 16 dims (2, 4, 4, 6) where
    plain rounding would leave time out. The unrotated part takes what remains.
    Raises ``ValueError`` when ``head_dim`` is below 6 (no room for three pairs).
    """
    if head_dim < 6:
        raise ValueError(f"rotary positions need a head dim of at least 6, got {head_dim}")
    rotated = [max(2, head_dim * share // 100 // 2 * 2) for share in SHARES_PERCENT]
    d_t, d_h, d_w = rotated
    return d_t, d_h, d_w, head_dim - sum(rotated)


def grid_coords(grid: Grid, device: torch.device | str | None = None) -> torch.Tensor:
    """The (t, h, w) coordinates of every token of the grid, (T'H'W', 3) long, w fastest."""
    t, h, w = grid
    axes = [torch.arange(n, device=device) for n in (t, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def index_coords(idx: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Flat token indices (...) into the grid -> their (t, h, w) coordinates (..., 3)."""
    _, h, w = grid
    return torch.stack([idx // (h * w), (idx // w) % h, idx % w], dim=-1)


def kept_indices(keep: torch.Tensor, num_kept: int) -> torch.Tensor:
    """The flat indices (B, num_kept) of the kept tokens of a (B, N) bool mask, in token order.

    Every row must keep ``num_kept`` tokens (the caller knows the count from its
    token tensor, so no host synchronization is needed).
    """
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept first, in order
    return order[:, :num_kept]


def token_coords(
    keep: torch.Tensor | None, grid: Grid, batch: int, num_tokens: int, device: torch.device
) -> torch.Tensor:
    """The coordinates (B, N, 3) of a block's tokens: the kept ones of ``keep`` ((B, N_grid)
    bool), in token order, or the whole grid when ``keep`` is None."""
    if keep is None:
        coords = grid_coords(grid, device)
        if coords.shape[0] != num_tokens:
            raise ValueError(
                f"{num_tokens} tokens without a keep mask, but the grid {grid} has "
                f"{coords.shape[0]}"
            )
        return coords.expand(batch, -1, -1)
    return index_coords(kept_indices(keep.to(device), num_tokens), grid)


class RotaryTables(NamedTuple):
    """The cos and sin of each token's rotation angles, both (B, 1, N, R/2) float32, where R
    is the number of rotated dims; they broadcast over the heads of (B, heads, N, head_dim)."""

    cos: torch.Tensor
    sin: torch.Tensor


def rotate(x: torch.Tensor, tables: RotaryTables) -> torch.Tensor:
    """Rotate the first R dims of ``x`` (B, heads, N, head_dim) pair by pair; the rest is
    returned as it is. Computed in float32 at least, returned in ``x``'s dtype."""
    r = 2 * tables.cos.shape[-1]
    pairs = x[..., :r].to(torch.promote_types(x.dtype, torch.float32)).unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    cos, sin = tables.cos, tables.sin
    turned = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    return torch.cat([turned.to(x.dtype), x[..., r:]], dim=-1)


@dataclass(frozen=True)
class Rotary3D:
    """3-D rotary positions for heads of ``head_dim`` dims (see the module docstring).

    It holds no tensors: the frequencies are made on the device of the
    coordinates, so it needs no moving between devices and adds nothing to a
    state dict.
    """

    head_dim: int
    max_wavelength: float = MAX_WAVELENGTH

    def __post_init__(self) -> None:
        split_head_dim(self.head_dim)  # fails early on a head too small

    @property
    def parts(self) -> tuple[int, int, int, int]:
        """(d_t, d_h, d_w, d_rest), see :func:`split_head_dim`."""
        return split_head_dim(self.head_dim)

    def frequencies(self, device: torch.device | str | None = None) -> list[torch.Tensor]:
        """Per axis (t, h, w) the angular frequencies (d_part / 2,) of its part, float32:
        ``max_wavelength^(-2i / d_part)``."""
        out = []
        for d in self.parts[:3]:
            i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
            out.append(torch.pow(self.max_wavelength, -i / d))
        return out

    def angles(self, coords: torch.Tensor) -> torch.Tensor:
        """Rotation angles (..., R/2) of tokens at integer ``coords`` (..., 3)."""
        pos = coords.float()
        freqs = self.frequencies(coords.device)
        return torch.cat([pos[..., a, None] * f for a, f in enumerate(freqs)], dim=-1)

    def tables(self, coords: torch.Tensor) -> RotaryTables:
        """The cos/sin tables of tokens at ``coords`` (B, N, 3), ready for :func:`rotate`."""
        theta = self.angles(coords).unsqueeze(1)  # (B, 1, N, R/2)
        return RotaryTables(theta.cos(), theta.sin())

    def apply(self, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """``x`` (B, heads, N, head_dim) rotated by the positions ``coords`` (B, N, 3) of its
        N tokens (any subset of the grid, in any order)."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"expected head dim {self.head_dim}, got {x.shape[-1]}")
        return rotate(x, self.tables(coords))
