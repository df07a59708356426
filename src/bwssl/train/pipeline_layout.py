"""Which process of a block-parallel run trains which blocks, and who talks to whom.

``world = stages x replicas`` processes: process ``rank`` is replica
``rank % replicas`` of pipeline stage ``rank // replicas``. Pipeline stage s
owns a contiguous run of the regime stage's optimizer units; replica j of
every pipeline stage reads the rows j, j + replicas, ... of each global batch
(the rows process j of a data-parallel run of ``replicas`` processes reads), so
its stage s gets its input from replica j of stage s - 1 and sends its output to
replica j of stage s + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from bwssl.errors import UserError
from bwssl.regimes import Stage


@dataclass(frozen=True)
class PipelineLayout:
    """One process's place in a block-parallel run (checked on construction)."""

    stages: int
    """Pipeline stages."""
    replicas: int
    """Processes per pipeline stage (data-parallel replicas)."""
    rank: int
    """This process's rank in the whole run."""

    def __post_init__(self) -> None:
        if self.stages < 1 or self.replicas < 1:
            raise ValueError(f"stages and replicas must be >= 1, got {self}")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world}")

    @classmethod
    def of(cls, world: int, rank: int, stages: int | None) -> PipelineLayout:
        """The layout of ``world`` processes as ``stages`` pipeline stages (None: one per
        process); raises UserError naming ``train.pipeline_stages`` when they do not divide."""
        n = stages if stages is not None else world
        if world % n:
            raise UserError(
                f"train.pipeline_stages={n} must divide the {world} processes (the processes "
                "beyond one per stage are data-parallel replicas)"
            )
        return cls(n, world // n, rank)

    @property
    def world(self) -> int:
        return self.stages * self.replicas

    @property
    def stage(self) -> int:
        """This process's pipeline stage."""
        return self.rank // self.replicas

    @property
    def replica(self) -> int:
        """This process's replica index within its pipeline stage."""
        return self.rank % self.replicas

    def rank_of(self, stage: int, replica: int) -> int:
        return stage * self.replicas + replica

    @property
    def previous(self) -> int | None:
        """The rank this process receives its input from (None: it reads the clips)."""
        return self.rank_of(self.stage - 1, self.replica) if self.stage > 0 else None

    @property
    def next(self) -> int | None:
        """The rank this process sends its output to (None: the last stage)."""
        return self.rank_of(self.stage + 1, self.replica) if self.stage < self.stages - 1 else None

    @property
    def lag(self) -> int:
        """Steps this process runs ahead of the last pipeline stage."""
        return self.stages - 1 - self.stage

    def replica_ranks(self, stage: int) -> list[int]:
        """The ranks of pipeline stage ``stage`` (its data-parallel group)."""
        return [self.rank_of(stage, j) for j in range(self.replicas)]

    def split(self, stage: Stage) -> list[tuple[tuple[int, ...], ...]]:
        """The optimizer units of regime stage ``stage`` per pipeline stage: contiguous runs,
        as even as possible (the first stages take one more when they do not divide).

        Raises UserError when there are fewer units than pipeline stages."""
        units, n = stage.units, self.stages
        if len(units) < n:
            raise UserError(
                f"train.pipeline_stages={n}: stage {stage.index + 1} trains only "
                f"{len(units)} gradient-isolated units; use at most {len(units)} pipeline "
                "stages (or more blocks, model.num_blocks)"
            )
        size, extra = divmod(len(units), n)
        out, start = [], 0
        for s in range(n):
            end = start + size + (1 if s < extra else 0)
            out.append(tuple(units[start:end]))
            start = end
        return out

    def blocks(self, stage: Stage) -> tuple[int, ...]:
        """The blocks this process trains in ``stage``."""
        return tuple(k for unit in self.split(stage)[self.stage] for k in unit)
