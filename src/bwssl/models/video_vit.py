"""The VideoMAE-style video ViT backbone: tubelet embedding, sinusoid positions, pre-norm
layers, cut into K blocks of consecutive layers.

Matches VideoMAE's block: LayerNorm eps 1e-6, exact GELU, a bias-free qkv
projection with separate q and v biases (k has none), attention through
``scaled_dot_product_attention``, xavier-uniform Linear weights with zero bias.
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
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3D)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LayerStack(nn.Module):
    """A sequence of layers, optionally recomputed in backward (activation checkpointing)."""

    def __init__(
        self, depth: int, dim: int, heads: int, mlp_ratio: float, grad_checkpointing: bool = False
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(dim, heads, mlp_ratio) for _ in range(depth))
        self.grad_checkpointing = grad_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
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
    """Layers [start, stop) of the encoder; block 0 embeds, the last block normalizes."""

    def __init__(
        self, cfg: ModelConfig, clip: ClipShape, start: int, stop: int, first: bool, last: bool
    ) -> None:
        super().__init__()
        self.embed: TubeletEmbed | None = None
        if first:
            self.embed = TubeletEmbed(
                clip.channels, cfg.embed_dim, cfg.tubelet_size, cfg.patch_size
            )
            n = (clip.frames // cfg.tubelet_size) * (clip.size // cfg.patch_size) ** 2
            self.register_buffer("pos_embed", sinusoid_table(n, cfg.embed_dim), persistent=False)
        self.layers = LayerStack(
            stop - start, cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.grad_checkpointing
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6) if last else None

    def forward(self, x: torch.Tensor, inp: BlockInput | None = None) -> torch.Tensor:
        """Block 0 takes the clip (B, C, T, H, W) and embeds the tokens ``inp.keep`` says (all
        by default); the others take tokens (B, N, D)."""
        if self.embed is not None:
            pos = self.pos_embed.to(x.dtype)
            keep = inp.keep if inp is not None else None
            if keep is None:
                x = self.embed(x) + pos  # (B, N, D)
            else:  # only the kept tubelets are embedded: (B, N_keep, D)
                x = self.embed(x, keep) + pos.expand(x.shape[0], -1, -1)[keep].view(
                    x.shape[0], -1, pos.shape[-1]
                )
        x = self.layers(x)
        return self.norm(x) if self.norm is not None else x


class VideoViT(Backbone):
    """A video ViT whose layers are cut into blocks at ``cfg.block_ranges()``."""

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
        first = self.blocks[0]
        if view is None or view.blocks[0].pos_embed.device != first.pos_embed.device:
            view = layer_cut(self)
            self.__dict__["_layer_view"] = view  # a plain attribute: not a submodule
        return view


def layer_cut(vit: VideoViT) -> VideoViT:
    """A :class:`VideoViT` with one block per layer whose modules are ``vit``'s own.

    Its blocks are built anew (under a forked RNG, so that the global random
    state is untouched) and then given ``vit``'s layers, embedding and final
    norm; their own fresh weights are dropped.
    """
    cfg = dataclasses.replace(vit.cfg, num_blocks=vit.cfg.depth, boundaries=None)
    with torch.random.fork_rng(devices=[]):
        view = VideoViT(cfg, vit.clip)
    layers = [layer for block in vit.blocks for layer in block.layers.layers]
    for block, layer in zip(view.blocks, layers, strict=True):
        block.layers.layers[0] = layer
    view.blocks[0].embed = vit.blocks[0].embed
    view.blocks[-1].norm = vit.blocks[-1].norm
    return view.to(vit.blocks[0].pos_embed.device)
