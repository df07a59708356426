"""What every local objective is: heads per block, per-step inputs, and block k's loss.

An objective never runs the backbone: the trainer (or
:meth:`~bwssl.models.BlockwiseModel.local_losses`) feeds every view of
:class:`StepData` through the blocks and hands block k's outputs to
:meth:`Objective.loss`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bwssl.config import Config
from bwssl.models.backbone import Backbone, BlockInput


@dataclass(frozen=True)
class StepKey:
    """Where a step's random draws come from: every one is a pure function of these, made
    for the global batch of ``batch_size`` examples (a process takes its rows), so regimes,
    resumed runs and any number of processes see the same masks and views."""

    seed: int
    epoch: int
    step: int
    batch_size: int

    def generator(self, stream: int) -> torch.Generator:
        """A CPU generator for one kind of draw (``stream`` keeps kinds apart)."""
        return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.step, stream))


def derive_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([abs(int(k)) for k in keys]).generate_state(1)[0])


@dataclass(frozen=True)
class StepData:
    """One micro-batch, prepared by an objective.

    ``views``: what enters block 0, one tensor per view (one view for
    masked objectives, two for joint embedding); ``block_inputs``: block 0's
    extra inputs per view.
    """

    views: list[torch.Tensor]
    block_inputs: list[BlockInput | None] = field(default_factory=list)
    labels: torch.Tensor | None = None
    """(B,) int64 class indices of the micro-batch's clips, for objectives that use labels
    (supervised); set by the caller, who has them (:func:`with_labels`); None: unknown."""


def with_labels(step: StepData, labels: torch.Tensor) -> StepData:
    """``step`` (of any StepData subclass) carrying the clips' ``labels`` (B,)."""
    if labels.shape != (step.views[0].shape[0],):
        raise ValueError(
            f"labels must be one per clip, shape ({step.views[0].shape[0]},), "
            f"got {tuple(labels.shape)}"
        )
    return dataclasses.replace(step, labels=labels)


class Objective(abc.ABC):
    """A local objective: subclass, set the class attributes, implement the abstract methods,
    and register the class in :data:`bwssl.objectives.OBJECTIVES`."""

    head_key: str = "heads"
    """State-dict prefix of the heads (``decoders``, ``projectors``)."""
    shared_head: bool = False
    """One head for every block (under key ``0``) instead of one per block."""
    reconstructs_pixels: bool = False
    """Whether the loss is a pixel reconstruction error (the analyses' ``mse``)."""
    min_batch: int = 1
    """The smallest batch the loss is defined on (batch statistics need 2)."""
    latent_targets: bool = False
    """Whether the objective can predict ``layer:J`` targets (layer-wise regimes)."""
    pooling_heads: bool = False
    """Whether the heads pool their block's output as ``objective.pooling`` says (and have
    :meth:`head_features`)."""
    masks_tokens: bool = False
    """Whether block 0 embeds only the tokens a mask keeps (:attr:`BlockInput.keep`), which
    only a backbone whose input is a token sequence can do."""

    def __init__(self, cfg: Config) -> None:
        from bwssl.regimes import final_targets

        self.cfg = cfg
        self.targets: tuple[str, ...] = final_targets(cfg)
        """What the loss predicts now: the trainer sets each stage's targets
        (:meth:`set_targets`); by default the last stage's, what a finished model predicts."""

    def set_targets(self, targets: tuple[str, ...]) -> None:
        """Predict ``targets`` (``pixels``, ``layer:J``) from now on."""
        if any(t != "pixels" for t in targets) and not self.latent_targets:
            raise ValueError(f"{type(self).__name__} cannot predict latent targets {targets}")
        self.targets = tuple(targets)

    def make_heads(self, backbone: Backbone, blocks: Sequence[int]) -> dict[str, nn.Module]:
        """The heads of ``blocks`` by key, built in block order from the global RNG."""
        if self.shared_head:
            return {"0": self.make_head(backbone, blocks[-1])} if blocks else {}
        return {str(k): self.make_head(backbone, k) for k in blocks}

    def idle_params(self, head: nn.Module, targets: tuple[str, ...]) -> list[nn.Parameter]:
        """Parameters of ``head`` that ``targets`` leave unused (a read-out of another
        target); the trainer keeps them out of training, so they get no gradient and no
        update, and DDP does not wait for their gradients."""
        return []

    @abc.abstractmethod
    def make_head(self, backbone: Backbone, k: int) -> nn.Module:
        """The head that reads block k's output."""

    def head_name(self, k: int) -> str:
        return "0" if self.shared_head else str(k)

    def check_dataset(self, num_classes: int) -> None:
        """Called with the training set's number of classes before the first step; raises
        :class:`~bwssl.config.ConfigError` when the objective cannot train on it."""
        return None  # an objective without labels trains on any dataset

    def head_features(
        self, k: int, h: torch.Tensor, head: nn.Module, backbone: Backbone
    ) -> torch.Tensor | None:
        """The vector block k's head makes of its output ``h`` before its projector or
        classifier, (B, D) (a CbE head's expanded, pooled features); None for heads that do
        not pool (decoders)."""
        return None

    @abc.abstractmethod
    def prepare(
        self, video: torch.Tensor, key: StepKey, rows: torch.Tensor, *, train: bool = True
    ) -> StepData:
        """Step inputs for ``video`` (B, C, T, H, W), the ``rows`` of ``key``'s global batch.
        ``train=False`` gives the evaluation form (analysis). The caller adds the clips'
        labels (:func:`with_labels`)."""

    @abc.abstractmethod
    def loss(
        self, k: int, outs: list[torch.Tensor], head: nn.Module, step: StepData, backbone: Backbone
    ) -> torch.Tensor:
        """Block k's loss from its outputs (one per view) and its head."""
