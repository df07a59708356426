"""The VideoMAE-style video ViT backbone: tubelet embedding, sinusoid positions, pre-norm
layers, cut into K blocks of consecutive layers.

Matches VideoMAE's block: LayerNorm eps 1e-6, exact GELU, a bias-free qkv
projection with separate q and v biases (k has none), attention through
``scaled_dot_product_attention``, xavier-uniform Linear weights with zero bias.

With ``model.rope`` the tokens get no sinusoid table: every attention rotates
its queries and keys by the tokens' (t, h, w) positions instead
(:mod:`bwssl.models.rope`); each block works out those positions from the
step's keep mask.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bwssl.config import ModelConfig
from bwssl.models.backbone import Backbone, BlockInput, ClipShape
from bwssl.models.rope import Rotary3D, RotaryTables, index_coords, rotate, token_coords


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sinusoid table (num_positions, dim) as in "Attention is all you need".

    Even feature indices hold sines, odd ones cosines, of ``pos / 10000^(2(i//2)/dim)``.
    """
    pos = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    i = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / dim)  # (P, D)
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


class TubeletEmbed(nn.Module):
    """Cut a clip (B, C, T, H, W) into tubelets of (t, p, p) and project each to D."""

    def __init__(self, in_chans: int, dim: int, tubelet: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(
            in_chans, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch)
        )

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, N, D), w fastest; with ``keep`` ((B, N) bool, the same count per clip)
        only the kept tokens (B, N_keep, D), in token order.

        With ``keep`` the masked tubelets are never embedded: the kept ones are
        gathered and projected with the convolution's kernel as one matrix
        product. With 90% masking this does a tenth of the work of running the
        convolution over the whole clip and dropping most of its output.
        """
        if keep is None:
            return self.proj(video).flatten(2).transpose(1, 2)
        b, c, t, h, w = video.shape
        kt, kp, _ = self.proj.kernel_size
        x = video.view(b, c, t // kt, kt, h // kp, kp, w // kp, kp)
        # (B, T', H', W', C, t, p, p): each tubelet flattened in the kernel's (C, t, p, p) order
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, -1, c * kt * kp * kp)
        x = x[keep].view(b, -1, x.shape[-1])
        return F.linear(x, self.proj.weight.flatten(1), self.proj.bias)


class Attention(nn.Module):
    """Multi-head self-attention; with rotary tables the queries and keys are rotated."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RotaryTables | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); ``rope`` holds the cos/sin tables of the N tokens."""
        b, n, d = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3D)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rotate(q, rope), rotate(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D/H)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Layer(nn.Module):
    """One pre-norm transformer layer."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, rope: RotaryTables | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class LayerStack(nn.Module):
    """A sequence of layers, optionally recomputed in backward (activation checkpointing)."""

    def __init__(
        self, depth: int, dim: int, heads: int, mlp_ratio: float, grad_checkpointing: bool = False
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(dim, heads, mlp_ratio) for _ in range(depth))
        self.grad_checkpointing = grad_checkpointing

    def forward(
        self,
        x: torch.Tensor,
        rope: RotaryTables | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> torch.Tensor:
        """Run layers [start, stop) (all by default) on ``x`` (B, N, D); ``rope``: rotary
        tables of its N tokens, shared by every layer."""
        for layer in self.layers[start:stop]:
            if self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(layer, x, rope, use_reentrant=False)
            else:
                x = layer(x, rope)
        return x


def init_weights(module: nn.Module) -> None:
    """VideoMAE init: xavier-uniform Linear weights, zero biases, unit LayerNorm.

    The tubelet projection is initialized like a Linear layer over its flattened kernel.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv3d):
            w = m.weight.view(m.weight.shape[0], -1)
            bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class EncoderBlock(nn.Module):
    """Layers [start, stop) of the encoder; block 0 embeds, the last block normalizes (every
    block does with ``cfg.boundary_norm``).

    Positions: block 0 adds the sinusoid table (``pos_embed``) to its tokens,
    or, with ``cfg.rope``, no table is made (``pos_embed`` is None) and every
    block rotates queries and keys by its tokens' grid positions (``rotary``).
    """

    def __init__(
        self, cfg: ModelConfig, clip: ClipShape, start: int, stop: int, first: bool, last: bool
    ) -> None:
        super().__init__()
        self.grid = (
            clip.frames // cfg.tubelet_size,
            clip.size // cfg.patch_size,
            clip.size // cfg.patch_size,
        )
        self.rotary = Rotary3D(cfg.embed_dim // cfg.num_heads) if cfg.rope else None
        self.embed: TubeletEmbed | None = None
        self.pos_embed: torch.Tensor | None
        if first:
            self.embed = TubeletEmbed(
                clip.channels, cfg.embed_dim, cfg.tubelet_size, cfg.patch_size
            )
            n = self.grid[0] * self.grid[1] * self.grid[2]
            table = None if cfg.rope else sinusoid_table(n, cfg.embed_dim)
            self.register_buffer("pos_embed", table, persistent=False)
        self.layers = LayerStack(
            stop - start, cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.grad_checkpointing
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6) if last or cfg.boundary_norm else None
        self.start = start
        """The global index of this block's first layer."""

    def forward(self, x: torch.Tensor, inp: BlockInput | None = None) -> torch.Tensor:
        """Block 0 takes the clip (B, C, T, H, W) and embeds the tokens ``inp.keep`` says (all
        by default); the others take tokens (B, N, D), the tokens ``inp.keep`` keeps (all
        by default), in token order."""
        keep = inp.keep if inp is not None else None
        if self.embed is not None:
            if self.pos_embed is None:  # rotary positions instead of a table
                x = self.embed(x, keep)
            else:
                pos = self.pos_embed.to(x.dtype)
                if keep is None:
                    x = self.embed(x) + pos  # (B, N, D)
                else:  # only the kept tubelets are embedded: (B, N_keep, D)
                    x = self.embed(x, keep) + pos.expand(x.shape[0], -1, -1)[keep].view(
                        x.shape[0], -1, pos.shape[-1]
                    )
        at = inp.decode_at if inp is not None else None
        split = len(self.layers.layers)
        if at is not None and self.start <= at < self.start + split:
            split = at - self.start  # decoding tokens join inside this block
        dec = inp.decode_idx if inp is not None and at is not None else None
        joined = dec is not None and at is not None and at < self.start
        x = self.layers(x, self._rope(keep, x, dec if joined else None), 0, split)
        if split < len(self.layers.layers):
            assert dec is not None
            x = torch.cat([x, self._decoding_tokens(dec, x)], dim=1)
            x = self.layers(x, self._rope(keep, x, dec), split)
        return self.norm(x) if self.norm is not None else x

    def _rope(
        self, keep: torch.Tensor | None, x: torch.Tensor, dec: torch.Tensor | None
    ) -> RotaryTables | None:
        """Rotary tables of ``x``'s tokens: the kept ones, then decoding tokens at ``dec``."""
        if self.rotary is None:
            return None
        n_dec = 0 if dec is None else dec.shape[1]
        coords = token_coords(keep, self.grid, x.shape[0], x.shape[1] - n_dec, x.device)
        if dec is not None:
            coords = torch.cat([coords, index_coords(dec.to(x.device), self.grid)], dim=1)
        return self.rotary.tables(coords)

    def _decoding_tokens(self, dec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Position-only tokens (B, M, D) at grid positions ``dec``: the sinusoid position
        of each (no learned content), or zeros with rotary positions."""
        b, m = dec.shape
        if self.rotary is not None:
            return x.new_zeros(b, m, x.shape[-1])
        n = self.grid[0] * self.grid[1] * self.grid[2]
        table = sinusoid_table(n, x.shape[-1]).to(device=x.device, dtype=x.dtype)
        return table[dec.to(x.device)]


class VideoViT(Backbone):
    """A video ViT whose layers are cut into blocks at ``cfg.block_ranges()``; ``cfg.rope``
    switches from the added sinusoid table to rotary positions in every block."""

    def __init__(self, cfg: ModelConfig, clip: ClipShape) -> None:
        super().__init__()
        self.cfg, self.clip = cfg, clip
        ranges = cfg.block_ranges()
        k = len(ranges)
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg, clip, a, b, first=i == 0, last=i == k - 1)
            for i, (a, b) in enumerate(ranges)
        )
        init_weights(self.blocks)
        self.grid = (
            clip.frames // cfg.tubelet_size,
            clip.size // cfg.patch_size,
            clip.size // cfg.patch_size,
        )

    def pool(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """The mean of the tokens (the model has no class token): (B, N, D) -> (B, D)."""
        return h.mean(dim=1)

    def tokens(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return h

    def feature_map(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """The token grid averaged over time, as a map: (B, N, D) -> (B, D, H', W'); every
        token must be there (no masking)."""
        t, gh, gw = self.grid
        if h.shape[1] != t * gh * gw:
            raise ValueError(
                f"a feature map needs all {t * gh * gw} tokens of the grid, got {h.shape[1]} "
                "(pooling heads cannot read masked blocks)"
            )
        grid = h.reshape(h.shape[0], t, gh, gw, h.shape[2])  # (B, T', H', W', D), w fastest
        return grid.mean(dim=1).permute(0, 3, 1, 2)  # (B, D, H', W')

    def feature_dim(self, k: int) -> int:
        return self.cfg.embed_dim

    def num_tokens(self, k: int) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def layer_view(self) -> VideoViT:
        """One block per layer over these very modules (embedding in block 0, final norm in
        the last); built once per device and kept."""
        if self.cfg.boundaries is None and self.cfg.num_blocks == self.cfg.depth:
            return self
        view: VideoViT | None = self.__dict__.get("_layer_view")
        if view is None or _table_device(view) != _table_device(self):
            view = layer_cut(self)
            self.__dict__["_layer_view"] = view  # a plain attribute: not a submodule
        return view


def _table_device(vit: VideoViT) -> torch.device | None:
    """Where block 0's position table lies (None with rotary positions, which keep no tensors):
    the only tensor of a layer view that is not the model's own."""
    table = vit.blocks[0].pos_embed
    return None if table is None else table.device


def layer_cut(vit: VideoViT) -> VideoViT:
    """A :class:`VideoViT` with one block per layer whose modules are ``vit``'s own.

    Its blocks are built anew (under a forked RNG, so that the global random
    state is untouched) and then given ``vit``'s layers, embedding and norms
    (each after the layer that ends its block); their own fresh weights are dropped.
    """
    cfg = dataclasses.replace(vit.cfg, num_blocks=vit.cfg.depth, boundaries=None)
    with torch.random.fork_rng(devices=[]):
        view = VideoViT(cfg, vit.clip)
    layers = [layer for block in vit.blocks for layer in block.layers.layers]
    for block, layer in zip(view.blocks, layers, strict=True):
        block.layers.layers[0] = layer
        block.norm = None
    view.blocks[0].embed = vit.blocks[0].embed
    for block in vit.blocks:  # a block's norm (the last, or every one) ends its last layer
        view.blocks[block.start + len(block.layers.layers) - 1].norm = block.norm
    return view.to(next(vit.blocks[0].parameters()).device)
