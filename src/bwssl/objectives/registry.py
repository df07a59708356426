"""The local objectives bwssl can train, by ``objective.name``: adding one is its own file and
one line here."""

from __future__ import annotations

from collections.abc import Callable

from bwssl.config import Config
from bwssl.objectives.base import Objective


def _masked_pixels(cfg: Config) -> Objective:
    from bwssl.objectives.masked_pixels import MaskedPixels

    return MaskedPixels(cfg)


def _joint(name: str) -> Callable[[Config], Objective]:
    def build(cfg: Config) -> Objective:
        from bwssl.objectives import joint_embedding

        return getattr(joint_embedding, name)(cfg)  # type: ignore[no-any-return]

    return build


def _supervised(cfg: Config) -> Objective:
    from bwssl.objectives.supervised import Supervised

    return Supervised(cfg)


OBJECTIVES: dict[str, Callable[[Config], Objective]] = {
    "masked_pixels": _masked_pixels,
    "barlow_twins": _joint("barlow_twins"),
    "vicreg": _joint("vicreg"),
    "simclr": _joint("simclr"),
    "supervised": _supervised,
}
"""Objective builders by name; each takes the whole config."""


def build_objective(cfg: Config) -> Objective:
    """The objective of ``cfg``."""
    return OBJECTIVES[cfg.objective.name](cfg)
