"""Supervised blockwise training: every block's head classifies the clip, cross-entropy with
its label (the supervised baseline of blockwise self-supervised learning at scale)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bwssl.config import Config, ConfigError
from bwssl.models.backbone import Backbone
from bwssl.models.pooling import head_input
from bwssl.objectives.base import StepData, StepKey
from bwssl.objectives.joint_embedding import PooledHeadObjective, augmented_view, pooled_head

DATA_CLASSES: dict[str, int] = {
    "ucf101": 101,
    "hmdb51": 51,
    "ssv2": 174,
    "cifar10": 10,
    "cifar100": 100,
}
"""Class counts of datasets that have a fixed one (others: their config, or
``objective.num_classes``)."""


def class_count(cfg: Config) -> int:
    """The number of classes a supervised head predicts: ``objective.num_classes``, else what
    the data config says. Raises :class:`~bwssl.config.ConfigError` naming
    ``objective.num_classes`` when neither says."""
    if cfg.objective.num_classes is not None:
        return cfg.objective.num_classes
    if cfg.data.name in ("synthetic", "synthetic_images"):
        return cfg.data.synthetic_classes
    if cfg.data.name in DATA_CLASSES:
        return DATA_CLASSES[cfg.data.name]
    raise ConfigError(
        f"config key 'objective.num_classes': objective.name=supervised needs the number of "
        f"classes of data.name={cfg.data.name}, which its config does not give; set it"
    )


class Supervised(PooledHeadObjective):
    """Block k's output, pooled (``objective.pooling``), through the projector's hidden layers
    (``objective.projector`` less its last width) and a last Linear (no bias) to the classes:
    the paper's full projection head with its output cut to the classes; with a one-width
    ``objective.projector`` the head is the pooling and one Linear. Training sees one view
    augmented as the joint-embedding views are (the first view's draws); evaluation the clip
    itself. The loss is the cross-entropy with ``StepData.labels``."""

    head_key = "projectors"
    min_batch = 2  # the projector's batch norm
    pooling_heads = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.num_classes = class_count(cfg)

    def make_head(self, backbone: Backbone, k: int) -> nn.Module:
        hidden = list(self.cfg.objective.projector[:-1])
        return pooled_head(self.cfg, backbone, k, [*hidden, self.num_classes])

    def check_dataset(self, num_classes: int) -> None:
        if num_classes != self.num_classes:
            raise ConfigError(
                f"config key 'objective.num_classes': the heads predict {self.num_classes} "
                f"classes but the training set has {num_classes}; set "
                f"objective.num_classes={num_classes}"
            )

    def prepare(
        self, video: torch.Tensor, key: StepKey, rows: torch.Tensor, *, train: bool = True
    ) -> StepData:
        view = augmented_view(self.cfg, video, key, rows, 0) if train else video
        return StepData([view], [None])

    def logits(self, k: int, h: torch.Tensor, head: nn.Module, backbone: Backbone) -> torch.Tensor:
        """Block k's class scores (B, num_classes) from its output ``h``."""
        return head(head_input(self.cfg.objective.pooling, backbone, k, h))  # type: ignore[no-any-return]

    def loss(
        self, k: int, outs: list[torch.Tensor], head: nn.Module, step: StepData, backbone: Backbone
    ) -> torch.Tensor:
        if step.labels is None:
            raise ValueError(
                "the supervised objective needs the clips' labels: add them to the prepared "
                "step with bwssl.objectives.with_labels"
            )
        (h,) = outs
        return F.cross_entropy(self.logits(k, h, head, backbone), step.labels.to(h.device))
