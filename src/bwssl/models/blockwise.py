"""A backbone cut into K blocks, with the local heads of an objective.

State-dict keys start with ``blocks.{k}.`` for block k and with the
objective's head key and the block for its head (``decoders.{k}.`` for the
masked-pixel decoders, ``projectors.{k}.`` for joint-embedding projectors),
0-based, so one block can be pulled out of a checkpoint. Where gradients stop
and which losses are active is the regime's business (:mod:`bwssl.regimes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from bwssl.config import Config, ModelConfig
from bwssl.models.backbone import Backbone, BlockInput, ClipShape

if TYPE_CHECKING:
    from bwssl.objectives.base import Objective, StepData


class BlockwiseModel(nn.Module):
    """Backbone blocks plus one local head per block of ``head_blocks``.

    ``backbone`` and ``objective`` are plain attributes, not submodules: the
    backbone's only parameters are its ``blocks`` (registered here), and the
    objective holds no parameters, so every weight has exactly one key.
    """

    def __init__(
        self,
        backbone: Backbone,
        objective: Objective,
        head_blocks: Sequence[int],
        heads: nn.ModuleDict | None = None,
        head_names: dict[int, str] | None = None,
    ) -> None:
        """``heads`` and ``head_names`` (block -> key in ``heads``) reuse another model's
        heads instead of making new ones (:meth:`layer_view`)."""
        super().__init__()
        self.blocks = backbone.blocks
        self.__dict__["backbone"] = backbone
        self.__dict__["objective"] = objective
        self.head_blocks = tuple(sorted(head_blocks))
        self.head_key = objective.head_key
        self._head_names = dict(head_names or {})
        if heads is None:
            heads = nn.ModuleDict(objective.make_heads(backbone, self.head_blocks))
        self.add_module(self.head_key, heads)

    backbone: Backbone
    objective: Objective

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def heads(self) -> nn.ModuleDict:
        """The heads by key (``str(k)``; a shared head has the key ``0``)."""
        return getattr(self, self.head_key)  # type: ignore[no-any-return]

    def head(self, k: int) -> nn.Module:
        """The head that reads block k's output."""
        if k not in self.head_blocks:
            raise KeyError(f"block {k} has no head (heads at {self.head_blocks})")
        return self.heads[self._head_names.get(k) or self.objective.head_name(k)]

    @property
    def shared_head(self) -> nn.Module | None:
        """The one head of every block, when the objective shares it."""
        return self.heads["0"] if self.objective.shared_head else None

    def layer_view(self) -> BlockwiseModel:
        """This model with one block per encoder layer, sharing every parameter: the last
        layer carries the last block's head (what layer-wise regimes train).

        Raises UserError when the backbone has no per-layer cut.
        """
        from bwssl.errors import UserError

        view = self.backbone.layer_view()
        if view is None:
            raise UserError(
                f"the {type(self.backbone).__name__} backbone cannot be cut per layer, which "
                "layer-wise regimes (freeze, layerlock, latent) need"
            )
        if view is self.backbone:
            return self
        last = self.num_blocks - 1
        names = (
            {view.num_blocks - 1: self.objective.head_name(last)}
            if last in self.head_blocks
            else {}
        )
        return BlockwiseModel(view, self.objective, tuple(names), self.heads, names)

    def block_params(self, k: int) -> list[nn.Parameter]:
        """Parameters that block k's local objective trains: the block and its own head."""
        params = list(self.blocks[k].parameters())
        if k in self.head_blocks and not self.objective.shared_head:
            params += list(self.head(k).parameters())
        return params

    def forward_block(self, k: int, x: torch.Tensor, inp: BlockInput | None = None) -> torch.Tensor:
        return self.backbone.forward_block(k, x, inp)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The K block outputs, every token kept (what the analyses read)."""
        return self.backbone.block_outputs(x)

    def pool(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Block k's output pooled to (B, D_k)."""
        return self.backbone.pool(k, h)

    def tokens(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Block k's output as tokens (B, N, D_k)."""
        return self.backbone.tokens(k, h)

    def head_features(self, k: int, h: torch.Tensor) -> torch.Tensor | None:
        """Block k's output ``h`` as its head pools it, (B, D') before the projector or
        classifier (a CbE head: its ``objective.pool_width`` expanded features); None when
        block k has no head or its head does not pool (decoders)."""
        if k not in self.head_blocks:
            return None
        return self.objective.head_features(k, h, self.head(k), self.backbone)

    def redraw(self, blocks: Sequence[int], seed: int) -> None:
        """Re-initialize ``blocks`` and their own heads in place: their weights and buffers
        become those of a model built afresh from the same config with the global RNG seeded
        to ``seed`` (the global RNG itself is left as it was), so the draw is the backbone's
        and objective's own initialization and the same on every call."""
        if self.objective.shared_head:
            raise ValueError("blocks that share one head cannot be re-initialized alone")
        wanted = [k for k in blocks if k in self.head_blocks]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = build_model(self.objective.cfg, wanted)
        for k in blocks:
            self.blocks[k].load_state_dict(fresh.blocks[k].state_dict())
        for k in wanted:
            self.head(k).load_state_dict(fresh.head(k).state_dict())

    def local_losses(self, step: StepData, *, detach: bool = True) -> dict[int, torch.Tensor]:
        """The local loss of every block with a head, by block, on a prepared micro-batch
        (``model.objective.prepare(video, key, rows, train=False)`` draws the evaluation
        form). With ``detach`` a stop-gradient sits at every block boundary."""
        xs, losses = step.views, {}
        for k in range(self.num_blocks):
            xs = [
                self.forward_block(k, x, inp) for x, inp in zip(xs, step.block_inputs, strict=True)
            ]
            if k in self.head_blocks:
                losses[k] = self.objective.loss(k, xs, self.head(k), step, self.backbone)
            if detach:
                xs = [x.detach() for x in xs]
        return losses


def build_model(cfg: Config, head_blocks: Sequence[int] | None = None) -> BlockwiseModel:
    """The model a config describes (weights freshly initialized from the global RNG): the
    backbone first, then the heads in block order, so every regime starts from the same
    encoder. ``head_blocks`` defaults to the regime's."""
    from bwssl.models.registry import build_backbone
    from bwssl.objectives.registry import build_objective
    from bwssl.regimes import head_blocks as regime_heads

    backbone = build_backbone(cfg)
    if head_blocks is None:
        head_blocks = regime_heads(cfg.regime, backbone.num_blocks)
    return BlockwiseModel(backbone, build_objective(cfg), head_blocks)


def clip_shape(cfg: Config) -> ClipShape:
    """The clip shape the data of ``cfg`` produces."""
    return ClipShape(cfg.data.channels, cfg.data.num_frames, cfg.data.crop_size)


def recut_e2e_state(
    state: dict[str, torch.Tensor], src: ModelConfig, dst: ModelConfig, head_key: str = "decoders"
) -> dict[str, torch.Tensor]:
    """An E2E model's state dict re-keyed for the block boundaries of ``dst``.

    E2E training does not depend on where the encoder is cut: it is one
    optimizer unit over all layers with one head after the last, and the
    weights are initialized layer by layer in the same order for every K, so
    an E2E run at K=4 and one at K=6 end bitwise equal (tested). Only the
    names differ: layer i moves to the block that holds it, the final norm and
    the head to the last block. Every other setting must be the same.
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
        elif parts[0] == head_key and src.shared_decoder and dst.shared_decoder:
            new = parts  # one head, always under key 0
        elif parts[0] == head_key and int(parts[1]) == last_src:
            new = [head_key, str(last_dst), *parts[2:]]
        else:
            raise ValueError(f"{key!r} is not a key of an E2E model; only E2E runs can be re-cut")
        out[".".join(new)] = value
    return out


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> BlockwiseModel:
    """A trained model from a run directory (final.pt, else last.pt) or a checkpoint file.

    The model is returned in eval mode on ``map_location``.
    """
    from bwssl.config import from_dict
    from bwssl.errors import UserError
    from bwssl.train.checkpoint import load_checkpoint

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
    ckpt = load_checkpoint(p, map_location=map_location)  # checked; runs no code in the file
    model = build_model(from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval()
