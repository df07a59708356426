"""Training regimes as data: where gradients stop, which losses count, what is frozen.

A regime turns K (the number of blocks) into a list of checked
:class:`Stage` s; the trainer runs any such list. Adding a regime is one
function here and one line in :data:`REGIMES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

TARGET_PATTERN = re.compile(r"^(pixels|layer:\d+)$")
"""A stage's target: ``pixels``, or ``layer:J``, the output of encoder layer J (0-based)."""


@dataclass(frozen=True)
class Stage:
    """One phase of training, checked on construction.

    Blocks ``[0, frozen)`` run without gradients in eval mode and are never
    updated; the trained blocks follow them contiguously, grouped into
    ``units``; gradients never cross a unit boundary (each unit has its own
    optimizer, clipping and loss scaler), so a unit per block is gradient
    isolation and one unit over several blocks is end-to-end training of
    those blocks. Blocks after the last trained one are not computed.
    """

    index: int
    """Position of the stage in its regime (0-based)."""
    frozen: int
    """Length of the frozen prefix: blocks ``[0, frozen)``."""
    units: tuple[tuple[int, ...], ...]
    """Optimizer units, in block order; each a run of consecutive blocks."""
    loss_blocks: tuple[int, ...]
    """Blocks whose local loss is active; each lies in a unit."""
    steps: int | None = None
    """Stage length in optimizer steps; None: ``train.epochs`` epochs."""
    target: str = "pixels"
    """What the objective predicts in this stage: ``pixels`` or ``layer:J``."""
    carry_optimizer: bool = False
    """Start from the previous stage's optimizer state (per parameter) instead of afresh."""

    def __post_init__(self) -> None:
        where = f"stage {self.index}"
        if self.frozen < 0:
            raise ValueError(f"{where}: frozen prefix must be >= 0, got {self.frozen}")
        if not self.units or any(not u for u in self.units):
            raise ValueError(f"{where}: needs at least one unit, each with a block")
        flat = self.trained
        if flat != tuple(range(self.frozen, self.frozen + len(flat))):
            raise ValueError(
                f"{where}: trained blocks {flat} must follow the frozen prefix "
                f"[0, {self.frozen}) contiguously, in order"
            )
        if not self.loss_blocks or not set(self.loss_blocks) <= set(flat):
            raise ValueError(
                f"{where}: loss blocks {self.loss_blocks} must be trained blocks {flat}"
            )
        if tuple(sorted(set(self.loss_blocks))) != self.loss_blocks:
            raise ValueError(f"{where}: loss blocks must be sorted and distinct")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"{where}: steps must be >= 1 or None, got {self.steps}")
        if not TARGET_PATTERN.match(self.target):
            raise ValueError(f"{where}: target must be 'pixels' or 'layer:J', got {self.target!r}")
        if self.carry_optimizer and self.index == 0:
            raise ValueError(f"{where}: the first stage has no optimizer state to carry over")

    @property
    def trained(self) -> tuple[int, ...]:
        """The trained blocks, in order."""
        return tuple(k for unit in self.units for k in unit)

    @property
    def run_blocks(self) -> int:
        """Blocks computed: [0, run_blocks)."""
        return self.trained[-1] + 1

    @property
    def isolated(self) -> bool:
        """Whether a stop-gradient sits between trained blocks (more than one unit)."""
        return len(self.units) > 1


def e2e(k: int) -> list[Stage]:
    """One loss at the last block, gradients through the whole encoder."""
    return [Stage(0, 0, (tuple(range(k)),), (k - 1,))]


def simultaneous(k: int) -> list[Stage]:
    """All K local losses at once, stop-gradient at every boundary."""
    return [Stage(0, 0, tuple((i,) for i in range(k)), tuple(range(k)))]


def sequential(k: int) -> list[Stage]:
    """K stages; stage i trains block i alone on top of frozen blocks < i."""
    return [Stage(i, i, ((i,),), (i,)) for i in range(k)]


def untrained(k: int) -> list[Stage]:
    """No stage at all: the E2E architecture as initialized, the reference that shows what
    training adds to every analysis (a random encoder's features are far from useless)."""
    return []


@dataclass(frozen=True)
class RegimeSpec:
    """A registered regime: its stages for K blocks, and which blocks carry a local head."""

    build: Callable[[int], list[Stage]]
    heads_like: str | None = None
    """Take the heads of this regime instead (``untrained`` is E2E's initialization)."""


REGIMES: dict[str, RegimeSpec] = {
    "e2e": RegimeSpec(e2e),
    "simultaneous": RegimeSpec(simultaneous),
    "sequential": RegimeSpec(sequential),
    "untrained": RegimeSpec(untrained, heads_like="e2e"),
}
"""Every regime by name: the one list of regime names."""


def _spec(regime: str) -> RegimeSpec:
    try:
        return REGIMES[regime]
    except KeyError:
        raise ValueError(f"unknown regime {regime!r}; allowed: {', '.join(REGIMES)}") from None


def stages(regime: str, num_blocks: int) -> list[Stage]:
    """The stages of ``regime`` for a model of ``num_blocks`` blocks, checked."""
    out = _spec(regime).build(num_blocks)
    for i, s in enumerate(out):
        if s.index != i:
            raise ValueError(f"regime {regime!r}: stage {i} says index {s.index}")
        if s.run_blocks > num_blocks:
            raise ValueError(
                f"regime {regime!r}: stage {i} trains block {s.run_blocks - 1} of a "
                f"{num_blocks}-block model"
            )
    return out


def head_blocks(regime: str, num_blocks: int) -> tuple[int, ...]:
    """Blocks that carry a local head: every block whose loss is active in some stage."""
    spec = _spec(regime)
    source = stages(spec.heads_like, num_blocks) if spec.heads_like else stages(regime, num_blocks)
    return tuple(sorted({k for s in source for k in s.loss_blocks}))
