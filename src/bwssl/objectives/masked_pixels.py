"""Masked pixel reconstruction (VideoMAE): tube masks, a decoder per block, normalized-pixel MSE."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bwssl.config import Config
from bwssl.data.masking import make_mask
from bwssl.data.transforms import denormalize
from bwssl.models.backbone import Backbone, BlockInput
from bwssl.models.decoder import Decoder
from bwssl.objectives.base import Objective, StepData, StepKey

MASK_STREAM, TARGET_STREAM, LATENT_STREAM = 2, 3, 6
"""Generator streams of the step key: the token mask, the decoder's subset of masked tokens,
the subset of those on which latent targets are scored."""


def patch_targets(
    video: torch.Tensor, tubelet: int, patch: int, normalize: bool = True
) -> torch.Tensor:
    """Per-token pixel targets (B, N, t*p*p*C) from a normalized clip (B, C, T, H, W).

    Pixels are first mapped back to [0, 1]. With ``normalize`` each tubelet is
    standardized per channel over its t*p*p pixels (unbiased variance,
    ``(x - mean) / (std + 1e-6)``), as VideoMAE does. Channel is the fastest axis.
    """
    b, c, t, h, w = video.shape
    x = denormalize(video.float(), channel_dim=1)
    x = x.view(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    # -> (B, T', H', W', t, p, p, C) -> (B, N, t*p*p, C)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, tubelet * patch * patch, c)
    if normalize:
        x = (x - x.mean(dim=-2, keepdim=True)) / (
            x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6
        )
    return x.flatten(2)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over batch, reconstructed tokens and target dims (both (B, M, P))."""
    return (pred.float() - target).pow(2).mean()


def split_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) bool mask -> visible and masked token indices, (B, N_vis) and (B, N_mask)."""
    b = mask.shape[0]
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # visible first, in order
    n_vis = int((~mask[0]).sum())
    return order[:, :n_vis].reshape(b, -1), order[:, n_vis:].reshape(b, -1)


def decoder_subset(masked_idx: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Decoder masking: a random subset of the masked tokens for the decoders to rebuild.

    ``masked_idx`` is (B, N_mask); returns (B, M) with M = round(fraction * N_mask), in
    token order.
    """
    if fraction >= 1.0:
        return masked_idx
    b, n = masked_idx.shape
    m = max(1, round(fraction * n))
    pick = torch.rand(b, n, generator=gen).argsort(dim=1)[:, :m].sort(dim=1).values
    return torch.gather(masked_idx, 1, pick.to(masked_idx.device))


@dataclass(frozen=True)
class MaskedStep(StepData):
    """A masked micro-batch: which tokens are seen, which are rebuilt, and their pixels."""

    visible_idx: torch.Tensor | None = None
    """(B, N_vis) indices of the visible tokens."""
    target_idx: torch.Tensor | None = None
    """(B, M) indices of the tokens the decoders rebuild."""
    targets: torch.Tensor | None = None
    """(B, N, P) pixel targets of every token."""
    latent_idx: torch.Tensor | None = None
    """(B, M') positions within ``target_idx`` where latent targets are scored (None: all)."""


class PredictionHead(nn.Module):
    """A decoder with a pixel read-out and one linear read-out per latent target layer, all
    on the decoder's features of the same target tokens."""

    def __init__(self, decoder: Decoder, layers: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.decoder = decoder
        width = decoder.head.in_features
        self.readouts = nn.ModuleDict({str(j): nn.Linear(width, latent_dim) for j in layers})
        for m in self.readouts.values():
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(
        self, visible: torch.Tensor, visible_idx: torch.Tensor, target_idx: torch.Tensor
    ) -> torch.Tensor:
        """Pixel predictions, as a plain decoder."""
        return self.decoder(visible, visible_idx, target_idx)


class TokenReadout(nn.Module):
    """Linear read-outs of the decoding tokens (no decoder): pixels, and one per latent
    target layer."""

    def __init__(self, dim: int, pixels: int, layers: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.pixels = nn.Linear(dim, pixels)
        self.readouts = nn.ModuleDict({str(j): nn.Linear(dim, latent_dim) for j in layers})
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)


class MaskedPixels(Objective):
    """Reconstruct the pixels of masked tubelets from the visible ones (``mask``, ``loss`` and
    the ``model.decoder_*`` keys)."""

    head_key = "decoders"
    reconstructs_pixels = True
    latent_targets = True
    masks_tokens = True

    def __init__(self, cfg: Config) -> None:
        from bwssl.regimes import target_layers

        super().__init__(cfg)
        self.shared_head = cfg.model.shared_decoder
        self.grid = cfg.token_grid
        self.latent_layers = target_layers(cfg)
        """Layers whose outputs some stage predicts: each gets a read-out in the head."""

    def make_heads(self, backbone: Backbone, blocks: Sequence[int]) -> dict[str, nn.Module]:
        if self.shared_head:  # one decoder, always under key 0
            return {"0": self.make_head(backbone, 0)} if blocks else {}
        return super().make_heads(backbone, blocks)

    def idle_params(self, head: nn.Module, targets: tuple[str, ...]) -> list[nn.Parameter]:
        if isinstance(head, PredictionHead):
            pixel_head: nn.Module = head.decoder.head
        elif isinstance(head, TokenReadout):
            pixel_head = head.pixels
        else:
            return []
        idle = [] if "pixels" in targets else list(pixel_head.parameters())
        for j, readout in head.readouts.items():
            if f"layer:{j}" not in targets:
                idle += list(readout.parameters())
        return idle

    def make_head(self, backbone: Backbone, k: int) -> nn.Module:
        m, d = self.cfg.model, self.cfg.data
        out_dim = m.tubelet_size * m.patch_size**2 * d.channels
        if self.cfg.objective.decoding == "tokens":
            width = backbone.feature_dim(k)
            return TokenReadout(width, out_dim, self.latent_layers, width)
        decoder = Decoder(
            backbone.feature_dim(k),
            m.decoder_dim,
            m.decoder_depth,
            m.decoder_heads,
            m.mlp_ratio,
            backbone.num_tokens(0),
            out_dim,
            rope_grid=self.grid if m.rope else None,
        )
        if not self.latent_layers:
            return decoder
        view = backbone.layer_view()
        assert view is not None, "layer-wise regimes are checked for a per-layer cut"
        dim = {view.feature_dim(j) for j in self.latent_layers}
        assert len(dim) == 1, f"target layers of different widths {dim}"
        return PredictionHead(decoder, self.latent_layers, dim.pop())

    def prepare(
        self, video: torch.Tensor, key: StepKey, rows: torch.Tensor, *, train: bool = True
    ) -> MaskedStep:
        mc = self.cfg.mask
        glob = make_mask(
            mc.kind, key.batch_size, self.grid, mc.ratio, key.generator(MASK_STREAM)
        )  # (B_global, N)
        _, masked = split_indices(glob)
        target = decoder_subset(
            masked, mc.decoder_ratio if train else 1.0, key.generator(TARGET_STREAM)
        )
        step = self.step_from_mask(video, glob[rows], target[rows])
        fraction = self.cfg.layerlock.latent_fraction
        if not self.latent_layers or fraction >= 1.0:
            return step
        m = target.shape[1]
        pick = torch.rand(key.batch_size, m, generator=key.generator(LATENT_STREAM)).argsort(1)
        pick = pick[:, : max(1, round(fraction * m))].sort(dim=1).values
        return dataclasses.replace(step, latent_idx=pick[rows].to(video.device))

    def step_from_mask(
        self, video: torch.Tensor, mask: torch.Tensor, target_idx: torch.Tensor | None = None
    ) -> MaskedStep:
        """The micro-batch of ``video`` under a given (B, N) mask (True = hidden); the decoders
        rebuild ``target_idx`` (B, M), by default every masked token."""
        dev = video.device
        mask = mask.to(dev)
        visible, masked = split_indices(mask)
        target = masked if target_idx is None else target_idx.to(dev)
        m = self.cfg.model
        pixels = patch_targets(
            video, m.tubelet_size, m.patch_size, self.cfg.loss.target == "norm_pixels"
        )
        inp = BlockInput(keep=~mask)
        o = self.cfg.objective
        if o.decoding == "tokens":
            at = self.cfg.model.depth - o.decoding_layers
            inp = BlockInput(keep=~mask, decode_idx=target, decode_at=at)
        return MaskedStep([video], [inp], visible_idx=visible, target_idx=target, targets=pixels)

    def loss(
        self, k: int, outs: list[torch.Tensor], head: nn.Module, step: StepData, backbone: Backbone
    ) -> torch.Tensor:
        assert isinstance(step, MaskedStep)
        assert step.target_idx is not None and step.targets is not None
        (h,) = outs
        if isinstance(head, TokenReadout):  # the decoding tokens are the last M tokens
            feats, pixel_head = h[:, -step.target_idx.shape[1] :], head.pixels
        elif isinstance(head, PredictionHead):
            feats = head.decoder.features(h, step.visible_idx, step.target_idx)  # (B, M, Dd)
            pixel_head = head.decoder.head
        else:
            return masked_mse(head(h, step.visible_idx, step.target_idx), self._pixels(step))
        layers = [int(t.split(":")[1]) for t in self.targets if t != "pixels"]
        total = torch.zeros((), device=h.device)
        if "pixels" in self.targets:
            total = total + masked_mse(pixel_head(feats), self._pixels(step))
        if layers:
            latents = latent_targets(
                backbone, step.views[0], layers, self.cfg.layerlock.target_norm
            )
            idx = step.target_idx
            if step.latent_idx is not None:
                feats = torch.gather(
                    feats, 1, step.latent_idx.unsqueeze(-1).expand(-1, -1, feats.shape[-1])
                )
                idx = torch.gather(idx, 1, step.latent_idx)
            for j in layers:
                tgt = latents[j]
                tgt = torch.gather(tgt, 1, idx.unsqueeze(-1).expand(-1, -1, tgt.shape[-1]))
                total = total + masked_mse(head.readouts[str(j)](feats), tgt)
        return total

    @staticmethod
    def _pixels(step: MaskedStep) -> torch.Tensor:
        """The pixel targets of the tokens the decoders rebuild, (B, M, P)."""
        assert step.target_idx is not None and step.targets is not None
        idx = step.target_idx.unsqueeze(-1).expand(-1, -1, step.targets.shape[-1])
        return torch.gather(step.targets, 1, idx)


def latent_targets(
    backbone: Backbone, video: torch.Tensor, layers: Sequence[int], norm: bool = True
) -> dict[int, torch.Tensor]:
    """The outputs (B, N, D) of encoder ``layers`` on the whole unmasked ``video``, without
    gradient, read from the backbone's per-layer cut; with ``norm`` each token is
    standardized over its features (layer norm without affine parameters)."""
    view = backbone.layer_view()
    if view is None:
        raise ValueError(f"{type(backbone).__name__} has no per-layer cut for latent targets")
    out, x = {}, video
    with torch.no_grad():
        for j in range(max(layers) + 1):
            x = view.forward_block(j, x)
            if j in layers:
                out[j] = F.layer_norm(x.float(), x.shape[-1:]) if norm else x.float()
    return out
