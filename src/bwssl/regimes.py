"""Training regimes as data: where gradients stop, which losses count, what is frozen.

A regime is a list of stages. Adding a regime means adding one function here;
the trainer runs any list of :class:`Stage`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One phase of training, run for ``train.epochs`` epochs."""

    index: int
    run_blocks: int
    """Forward through blocks [0, run_blocks); later blocks are not computed."""
    loss_blocks: tuple[int, ...]
    """Blocks whose local loss is active."""
    frozen: tuple[int, ...]
    """Blocks run without gradients in eval mode, never updated."""
    detach: bool
    """Stop-gradient at every block boundary (gradient isolation)."""
    units: tuple[tuple[int, ...], ...]
    """Optimizer units: each is a group of blocks (with their decoders) that gets its own
    optimizer, gradient clipping and loss scaler, so nothing couples units."""

    @property
    def trained(self) -> tuple[int, ...]:
        return tuple(k for unit in self.units for k in unit)


def e2e(k: int) -> list[Stage]:
    """One loss at the last block, gradients through the whole encoder."""
    return [Stage(0, k, (k - 1,), (), False, (tuple(range(k)),))]


def simultaneous(k: int) -> list[Stage]:
    """All K local losses at once, stop-gradient at every boundary."""
    return [Stage(0, k, tuple(range(k)), (), True, tuple((i,) for i in range(k)))]


def sequential(k: int) -> list[Stage]:
    """K stages; stage i trains block i alone on top of frozen blocks < i."""
    return [Stage(i, i + 1, (i,), tuple(range(i)), True, ((i,),)) for i in range(k)]


def untrained(k: int) -> list[Stage]:
    """No stage at all: the E2E architecture as initialized, the reference that shows what
    training adds to every analysis (a random encoder's features are far from useless)."""
    return []


REGIMES: dict[str, Callable[[int], list[Stage]]] = {
    "e2e": e2e, "simultaneous": simultaneous, "sequential": sequential, "untrained": untrained}


def stages(regime: str, num_blocks: int) -> list[Stage]:
    """The stages of ``regime`` for a model of ``num_blocks`` blocks."""
    try:
        return REGIMES[regime](num_blocks)
    except KeyError:
        raise ValueError(f"unknown regime {regime!r}; allowed: {', '.join(REGIMES)}") from None
