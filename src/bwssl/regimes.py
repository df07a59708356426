"""Training regimes as data: where gradients stop, which losses count, what is frozen.

A regime turns K (the number of blocks) into a list of checked
:class:`Stage` s; the trainer runs any such list. Adding a regime is one
function here and one line in :data:`REGIMES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bwssl.config import Config

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
    targets: tuple[str, ...] = ("pixels",)
    """What the objective predicts in this stage, summed: ``pixels`` and/or ``layer:J``."""
    carry_optimizer: bool = False
    """Start from the previous stage's optimizer state (per parameter) instead of afresh."""
    lr_offset: int | None = None
    """None: the stage runs its own warmup and cosine schedule from its own step 0 (and its
    own epochs of data). An int: the stage continues one schedule (learning rate and data
    order) over the whole run, starting at this step of it; with ``steps`` None it runs to
    the run's end."""
    rewarm_steps: int = 0
    """Scale the learning rate linearly from 0 over this many steps at the stage's start."""
    reset: tuple[int, ...] = ()
    """Blocks re-initialized, with their heads, when the stage starts (a fresh draw seeded
    by the run's seed and the stage's index, so a resumed run draws the same weights); none
    of them frozen in this stage."""

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
        if not self.targets or any(not TARGET_PATTERN.match(t) for t in self.targets):
            raise ValueError(
                f"{where}: targets must be 'pixels' or 'layer:J' (J a layer), got {self.targets}"
            )
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"{where}: targets {self.targets} repeat one")
        if self.lr_offset is not None and self.lr_offset < 0:
            raise ValueError(f"{where}: lr_offset must be >= 0 or None, got {self.lr_offset}")
        if self.rewarm_steps < 0:
            raise ValueError(f"{where}: rewarm_steps must be >= 0, got {self.rewarm_steps}")
        if self.carry_optimizer and self.index == 0:
            raise ValueError(f"{where}: the first stage has no optimizer state to carry over")
        if tuple(sorted(set(self.reset))) != self.reset:
            raise ValueError(f"{where}: reset blocks {self.reset} must be sorted and distinct")
        if self.reset and self.reset[0] < self.frozen:
            raise ValueError(
                f"{where}: reset blocks {self.reset} must not be frozen (prefix [0, {self.frozen}))"
            )
        if self.reset and self.carry_optimizer:
            raise ValueError(f"{where}: re-initialized blocks cannot carry optimizer state over")

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

    @property
    def latent_layers(self) -> tuple[int, ...]:
        """The layers whose outputs are targets in this stage (``layer:J``), in order."""
        return tuple(sorted(int(t.split(":")[1]) for t in self.targets if t != "pixels"))


def e2e(k: int) -> list[Stage]:
    """One loss at the last block, gradients through the whole encoder."""
    return [Stage(0, 0, (tuple(range(k)),), (k - 1,))]


def simultaneous(k: int) -> list[Stage]:
    """All K local losses at once, stop-gradient at every boundary."""
    return [Stage(0, 0, tuple((i,) for i in range(k)), tuple(range(k)))]


def sequential(k: int) -> list[Stage]:
    """K stages; stage i trains block i alone on top of frozen blocks < i."""
    return [Stage(i, i, ((i,),), (i,)) for i in range(k)]


def last_only(k: int) -> list[Stage]:
    """The random-features baseline: blocks < K-1 stay as initialized, frozen (eval mode, no
    gradient); only the last block and its head train."""
    return [Stage(0, k - 1, ((k - 1,),), (k - 1,))]


def first_e2e(k: int) -> list[Stage]:
    """Block 0 trained end to end, then the rest blockwise: stage 0 trains the whole encoder
    with the loss at the last block; stage 1 keeps block 0, re-initializes blocks 1..K-1 with
    their heads and trains block 1 on frozen block 0; stage i trains block i on frozen blocks
    < i, as in sequential."""
    first = Stage(0, 0, (tuple(range(k)),), (k - 1,))
    rest = [
        Stage(i, i, ((i,),), (i,), reset=tuple(range(1, k)) if i == 1 else ()) for i in range(1, k)
    ]
    return [first, *rest]


def untrained(k: int) -> list[Stage]:
    """No stage at all: the E2E architecture as initialized, the reference that shows what
    training adds to every analysis (a random encoder's features are far from useless)."""
    return []


def freezing_events(cfg: Config, total_steps: int) -> list[tuple[int, int]]:
    """The freezing schedule of ``cfg.layerlock`` over a run of ``total_steps`` steps: per
    event, (the step it happens at, the layers frozen from then on).

    Raises :class:`~bwssl.config.ConfigError` naming the key when an event would fall at
    or past the run's end.
    """
    from bwssl.config import ConfigError

    ll, depth = cfg.layerlock, cfg.model.depth
    frozen = ll.frozen_layers(depth)
    n = -(-frozen // ll.layers_per_event)
    start = ll.start_step if ll.start_step is not None else total_steps // 2
    if ll.interval is not None:
        interval = ll.interval
    else:  # spread the events from the start to three quarters of the run
        interval = max(1, (3 * total_steps // 4 - start) // n)
    where = "layerlock.start_step" if ll.start_step is not None else "train.epochs"
    if start >= total_steps:
        raise ConfigError(
            f"config key '{where}': the first freezing event (step {start}) lies at or past "
            f"the end of training ({total_steps} steps)"
        )
    last = start + (n - 1) * interval
    if last >= total_steps:
        raise ConfigError(
            f"config key 'layerlock.interval': the last of {n} freezing events (step {last}) "
            f"lies at or past the end of training ({total_steps} steps); lower "
            "layerlock.interval or layerlock.start_step, or train longer"
        )
    return [(start + i * interval, min(frozen, (i + 1) * ll.layers_per_event)) for i in range(n)]


def _layer_stages(cfg: Config, total_steps: int, freeze: bool, latent: bool) -> list[Stage]:
    """Stages over single layers: pixel targets, then at every freezing event a new stage
    (frozen prefix and/or a new target), all on one learning-rate schedule."""
    depth = cfg.model.depth
    events = freezing_events(cfg, total_steps)
    bounds = [0] + [s for s, _ in events] + [total_steps]
    out = [Stage(0, 0, (tuple(range(depth)),), (depth - 1,), steps=bounds[1], lr_offset=0)]
    seen: list[str] = ["pixels"]
    for i, (step, frozen) in enumerate(events, start=1):
        prefix = frozen if freeze else 0
        if latent:
            seen.append(f"layer:{frozen - 1}")
        targets = tuple(seen) if cfg.layerlock.targets == "all" else (seen[-1],)
        out.append(
            Stage(
                i,
                prefix,
                (tuple(range(prefix, depth)),),
                (depth - 1,),
                steps=bounds[i + 1] - step if i < len(events) else None,
                targets=targets,
                carry_optimizer=True,
                lr_offset=step,
                rewarm_steps=cfg.layerlock.switch_warmup_steps if latent else 0,
            )
        )
    return out


def freeze(cfg: Config, total_steps: int) -> list[Stage]:
    """Progressive freezing alone: pixel targets throughout, the frozen prefix grows."""
    return _layer_stages(cfg, total_steps, freeze=True, latent=False)


def layerlock(cfg: Config, total_steps: int) -> list[Stage]:
    """LayerLock: at every freezing event the target moves to the deepest frozen layer."""
    return _layer_stages(cfg, total_steps, freeze=True, latent=True)


def latent(cfg: Config, total_steps: int) -> list[Stage]:
    """LayerLock's target schedule without freezing (the ablation that collapses)."""
    return _layer_stages(cfg, total_steps, freeze=False, latent=True)


@dataclass(frozen=True)
class RegimeSpec:
    """A registered regime: its stages for K blocks, and which blocks carry a local head.

    A *layer-wise* regime gives ``schedule`` instead of ``build``: its stages
    count single layers as blocks (the trainer runs them on the backbone's
    per-layer cut, :meth:`~bwssl.models.Backbone.layer_view`), come from the
    config and the run's length, and the stored model keeps the heads of
    ``heads_like``.
    """

    build: Callable[[int], list[Stage]] | None = None
    heads_like: str | None = None
    """Take the heads of this regime instead (``untrained`` is E2E's initialization)."""
    schedule: Callable[[Config, int], list[Stage]] | None = None
    """Layer-wise regimes: stages from the config and the run's total steps."""


REGIMES: dict[str, RegimeSpec] = {
    "e2e": RegimeSpec(e2e),
    "simultaneous": RegimeSpec(simultaneous),
    "sequential": RegimeSpec(sequential),
    "last_only": RegimeSpec(last_only),
    "first_e2e": RegimeSpec(first_e2e),
    "untrained": RegimeSpec(untrained, heads_like="e2e"),
    "freeze": RegimeSpec(heads_like="e2e", schedule=freeze),
    "layerlock": RegimeSpec(heads_like="e2e", schedule=layerlock),
    "latent": RegimeSpec(heads_like="e2e", schedule=latent),
}
"""Every regime by name: the one list of regime names."""


def _spec(regime: str) -> RegimeSpec:
    try:
        return REGIMES[regime]
    except KeyError:
        raise ValueError(f"unknown regime {regime!r}; allowed: {', '.join(REGIMES)}") from None


def is_layerwise(regime: str) -> bool:
    """Whether ``regime``'s stages count single layers (see :class:`RegimeSpec`)."""
    return _spec(regime).schedule is not None


def stages(regime: str, num_blocks: int) -> list[Stage]:
    """The stages of ``regime`` for a model of ``num_blocks`` blocks, checked (layer-wise
    regimes: :func:`run_stages`)."""
    build = _spec(regime).build
    if build is None:
        raise ValueError(f"regime {regime!r} is layer-wise: its stages come from run_stages()")
    return _checked(regime, build(num_blocks), num_blocks)


def run_stages(cfg: Config, total_steps: int) -> list[Stage]:
    """The stages a run of ``cfg`` trains, ``total_steps`` its length in optimizer steps (the
    length of one stage of ``train.epochs`` epochs). A layer-wise regime's stages count
    layers (``cfg.model.depth`` of them), every other's blocks."""
    spec = _spec(cfg.regime)
    if spec.schedule is None:
        return stages(cfg.regime, cfg.model.num_blocks)
    return _checked(cfg.regime, spec.schedule(cfg, total_steps), cfg.model.depth)


def _checked(regime: str, out: list[Stage], num_blocks: int) -> list[Stage]:
    for i, s in enumerate(out):
        if s.index != i:
            raise ValueError(f"regime {regime!r}: stage {i} says index {s.index}")
        if s.run_blocks > num_blocks:
            raise ValueError(
                f"regime {regime!r}: stage {i} trains block {s.run_blocks - 1} of a "
                f"{num_blocks}-block model"
            )
        if s.reset and s.reset[-1] >= num_blocks:
            raise ValueError(
                f"regime {regime!r}: stage {i} re-initializes block {s.reset[-1]} of a "
                f"{num_blocks}-block model"
            )
    return out


def head_blocks(regime: str, num_blocks: int) -> tuple[int, ...]:
    """Blocks that carry a local head: every block whose loss is active in some stage
    (layer-wise regimes store the heads of their ``heads_like``)."""
    spec = _spec(regime)
    source = stages(spec.heads_like or regime, num_blocks)
    return tuple(sorted({k for s in source for k in s.loss_blocks}))


def _any_length(cfg: Config) -> int:
    """A run length that every explicit freezing step of ``cfg`` fits in (the targets of a
    schedule do not depend on the run's length, only their steps do)."""
    ll = cfg.layerlock
    n = -(-ll.frozen_layers(cfg.model.depth) // ll.layers_per_event)
    return 4 * ((ll.start_step or 1) + n * (ll.interval or 1)) + 4


def target_layers(cfg: Config) -> tuple[int, ...]:
    """Every layer whose output is a target in some stage of ``cfg``'s regime (the latent
    read-out heads the model needs)."""
    if not is_layerwise(cfg.regime):
        return ()
    found = {j for s in run_stages(cfg, _any_length(cfg)) for j in s.latent_layers}
    return tuple(sorted(found))


def final_targets(cfg: Config) -> tuple[str, ...]:
    """The targets of the last stage of ``cfg``'s regime (what a finished model predicts)."""
    if not is_layerwise(cfg.regime):
        return ("pixels",)
    return run_stages(cfg, _any_length(cfg))[-1].targets
