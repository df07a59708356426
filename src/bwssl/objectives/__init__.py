"""Local objectives attached to blocks, by name (:data:`OBJECTIVES`), and their losses."""

from bwssl.objectives.base import Objective, StepData, StepKey, with_labels
from bwssl.objectives.losses import barlow_twins_loss, nt_xent_loss, vicreg_loss
from bwssl.objectives.registry import OBJECTIVES, build_objective

__all__ = [
    "OBJECTIVES",
    "Objective",
    "StepData",
    "StepKey",
    "barlow_twins_loss",
    "build_objective",
    "nt_xent_loss",
    "vicreg_loss",
    "with_labels",
]
