"""A video ViT cut into K blocks, each with an optional local decoder.

State-dict keys start with ``blocks.{k}.`` for encoder block k and
``decoders.{k}.`` for its decoder (0-based), so one block can be pulled out.
Where gradients stop and which losses are active is the regime's business
(:mod:`bwssl.regimes`); this module only computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bwssl.config import Config, ModelConfig
from bwssl.models.decoder import Decoder
from bwssl.models.video_vit import LayerStack, TubeletEmbed, init_weights, sinusoid_table
from bwssl.objectives.masked_pixels import masked_mse, patch_targets


@dataclass(frozen=True)
class ClipShape:
    """What the model is built for: (C, T, H=W) clips."""

    channels: int
    frames: int
    size: int


class EncoderBlock(nn.Module):
    """Layers [start, stop) of the encoder; block 0 embeds, the last block normalizes."""

    def __init__(self, cfg: ModelConfig, clip: ClipShape, start: int, stop: int,
                 first: bool, last: bool) -> None:
        super().__init__()
        self.embed: TubeletEmbed | None = None
        if first:
            self.embed = TubeletEmbed(clip.channels, cfg.embed_dim, cfg.tubelet_size,
                                      cfg.patch_size)
            n = (clip.frames // cfg.tubelet_size) * (clip.size // cfg.patch_size) ** 2
            self.register_buffer("pos_embed", sinusoid_table(n, cfg.embed_dim), persistent=False)
        self.layers = LayerStack(stop - start, cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio,
                                 cfg.grad_checkpointing)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6) if last else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block 0 takes the clip (B, C, T, H, W) and drops masked tokens; others take tokens."""
        if self.embed is not None:
            pos = self.pos_embed.to(x.dtype)
            if mask is None:
                x = self.embed(x) + pos  # (B, N, D)
            else:  # only the visible tubelets are embedded: (B, N_vis, D)
                keep = ~mask
                x = self.embed(x, keep) + pos.expand(x.shape[0], -1, -1)[keep].view(
                    x.shape[0], -1, pos.shape[-1])
        x = self.layers(x)
        return self.norm(x) if self.norm is not None else x


class BlockwiseVideoMAE(nn.Module):
    """Encoder blocks plus decoders at ``decoder_blocks`` (all blocks, or the last for E2E)."""

    def __init__(self, cfg: ModelConfig, clip: ClipShape, decoder_blocks: Sequence[int],
                 norm_targets: bool = True) -> None:
        super().__init__()
        self.cfg, self.clip, self.norm_targets = cfg, clip, norm_targets
        ranges = cfg.block_ranges()
        k = len(ranges)
        self.blocks = nn.ModuleList(
            EncoderBlock(cfg, clip, a, b, first=i == 0, last=i == k - 1)
            for i, (a, b) in enumerate(ranges))
        init_weights(self.blocks)  # before the decoders: same encoder init in every regime
        self.grid = (clip.frames // cfg.tubelet_size, clip.size // cfg.patch_size,
                     clip.size // cfg.patch_size)
        n = self.grid[0] * self.grid[1] * self.grid[2]
        out_dim = cfg.tubelet_size * cfg.patch_size ** 2 * clip.channels
        self.decoder_blocks = tuple(sorted(decoder_blocks))
        keys = [0] if cfg.shared_decoder else list(self.decoder_blocks)
        self.decoders = nn.ModuleDict({
            str(i): Decoder(cfg.embed_dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads,
                            cfg.mlp_ratio, n, out_dim) for i in keys})

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def decoder(self, k: int) -> Decoder:
        """The decoder that reads block k's output."""
        if k not in self.decoder_blocks:
            raise KeyError(f"block {k} has no decoder (decoders at {self.decoder_blocks})")
        return self.decoders["0" if self.cfg.shared_decoder else str(k)]  # type: ignore[return-value]

    def block_params(self, k: int) -> list[nn.Parameter]:
        """Parameters that block k's local objective trains: the block and its decoder."""
        params = list(self.blocks[k].parameters())
        if k in self.decoder_blocks and not self.cfg.shared_decoder:
            params += list(self.decoder(k).parameters())
        return params

    def targets(self, video: torch.Tensor) -> torch.Tensor:
        """Pixel targets (B, N, P) for every token."""
        return patch_targets(video, self.cfg.tubelet_size, self.cfg.patch_size, self.norm_targets)

    def local_loss(self, k: int, h: torch.Tensor, visible_idx: torch.Tensor,
                   target_idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss of block k's decoder on the tokens at ``target_idx``."""
        pred = self.decoder(k)(h, visible_idx, target_idx)  # (B, M, P)
        return masked_mse(pred, torch.gather(
            targets, 1, target_idx.unsqueeze(-1).expand(-1, -1, targets.shape[-1])))

    def block_outputs(self, video: torch.Tensor) -> list[torch.Tensor]:
        """The K token tensors (B, N, D) at the block boundaries, masking off."""
        outs, x = [], video
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def block_losses(self, video: torch.Tensor, mask: torch.Tensor,
                     detach: bool = True) -> list[torch.Tensor]:
        """Local losses of the blocks that carry a decoder, in block order.

        With ``detach`` (the default) a stop-gradient sits at every boundary, so
        loss k only reaches block k and its decoder. ``mask`` is (B, N) bool,
        True = hidden; every decoder reconstructs all masked tokens.
        """
        visible_idx, masked_idx = split_indices(mask)
        targets = self.targets(video)
        losses, x = [], video
        for k, block in enumerate(self.blocks):
            x = block(x, mask if k == 0 else None)
            if k in self.decoder_blocks:
                losses.append(self.local_loss(k, x, visible_idx, masked_idx, targets))
            if detach:
                x = x.detach()
        return losses


def split_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool mask -> visible and masked token indices, (B, N_vis) and (B, N_mask)."""
    b = mask.shape[0]
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first, in order
    n_vis = int((~mask[0]).sum())
    return order[:, :n_vis].reshape(b, -1), order[:, n_vis:].reshape(b, -1)


def decoder_blocks_for(regime: str, num_blocks: int) -> list[int]:
    """E2E (and its untrained initialization) carries one decoder at the last block;
    blockwise regimes one per block."""
    return [num_blocks - 1] if regime in ("e2e", "untrained") else list(range(num_blocks))


def build_model(cfg: Config) -> BlockwiseVideoMAE:
    """The model a config describes (weights freshly initialized from the global RNG)."""
    clip = ClipShape(cfg.data.channels, cfg.data.num_frames, cfg.data.crop_size)
    return BlockwiseVideoMAE(cfg.model, clip, decoder_blocks_for(cfg.regime, cfg.model.num_blocks),
                             norm_targets=cfg.loss.target == "norm_pixels")


def recut_e2e_state(state: dict[str, torch.Tensor], src: ModelConfig, dst: ModelConfig
                    ) -> dict[str, torch.Tensor]:
    """An E2E model's state dict re-keyed for the block boundaries of ``dst``.

    E2E training does not depend on where the encoder is cut: it is one
    optimizer unit over all layers with one decoder after the last, and the
    weights are initialized layer by layer in the same order for every K, so
    an E2E run at K=4 and one at K=6 end bitwise equal (tested). Only the
    names differ: layer i moves to the block that holds it, the final norm and
    the decoder to the last block. Every other setting must be the same.
    """
    if src.depth != dst.depth:
        raise ValueError(f"cannot re-cut a depth-{src.depth} encoder into depth {dst.depth}")
    where_dst = [(b, j) for b, (a, z) in enumerate(dst.block_ranges()) for j in range(z - a)]
    src_ranges = src.block_ranges()
    last_src, last_dst = len(src_ranges) - 1, len(dst.block_ranges()) - 1
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks" and parts[2:4] == ["layers", "layers"]:
            i = src_ranges[int(parts[1])][0] + int(parts[4])  # the global layer index
            b, j = where_dst[i]
            new = ["blocks", str(b), "layers", "layers", str(j), *parts[5:]]
        elif parts[0] == "blocks" and parts[2] == "norm" and int(parts[1]) == last_src:
            new = ["blocks", str(last_dst), *parts[2:]]
        elif parts[0] == "blocks" and parts[1] == "0" and parts[2] == "embed":
            new = parts
        elif parts[0] == "decoders" and src.shared_decoder and dst.shared_decoder:
            new = parts  # one decoder, always under key 0
        elif parts[0] == "decoders" and int(parts[1]) == last_src:
            new = ["decoders", str(last_dst), *parts[2:]]
        else:
            raise ValueError(f"{key!r} is not a key of an E2E model; only E2E runs can be re-cut")
        out[".".join(new)] = value
    return out


def load_model(path: str | Path, map_location: str | torch.device = "cpu"
               ) -> BlockwiseVideoMAE:
    """A trained model from a run directory (final.pt, else last.pt) or a checkpoint file.

    The model is returned in eval mode on ``map_location``.
    """
    from bwssl.config import from_dict
    from bwssl.errors import UserError

    p = Path(path)
    if p.is_dir():
        for name in ("final.pt", "last.pt"):
            if (p / "checkpoints" / name).exists():
                p = p / "checkpoints" / name
                break
        else:
            raise UserError(f"{path} holds no checkpoints/final.pt or checkpoints/last.pt")
    if not p.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    ckpt = torch.load(p, map_location=map_location, weights_only=False)
    model = build_model(from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval()
