"""RUN/pipeline.json: what every process of a block-parallel run did, and how well the
pipeline ran."""

from __future__ import annotations

import json
import resource
import statistics
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from bwssl.base.files import atomic_write_text
from bwssl.regimes import Stage
from bwssl.train.trainer import Unit

if TYPE_CHECKING:
    from bwssl.train.pipeline import PipelineTrainer


def write_report(
    trainer: PipelineTrainer,
    stage: Stage,
    units: list[Unit],
    busy: list[float],
    ends: list[float],
) -> None:
    """RUN/pipeline.json: per process its blocks, the median time it computed per step
    (busy: not waiting for its input), the median interval between its steps, and its
    memory; the pipeline's efficiency (slowest stage's busy time / the interval)."""
    skip = trainer.layout.stages + 1  # steps of filling the pipeline
    steady_busy = busy[skip:] or busy
    intervals = [b - a for a, b in zip(ends[skip:], ends[skip + 1 :], strict=False)]
    state_bytes = sum(
        t.numel() * t.element_size()
        for u in units
        for p in u.params
        for t in [p, *u.optimizer.state.get(p, {}).values()]
        if isinstance(t, torch.Tensor)
    )
    if trainer.device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(trainer.device), "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "max_rss"
    me = {
        "rank": trainer.rank,
        "stage": trainer.layout.stage,
        "replica": trainer.replica,
        "blocks": list(trainer.owned(stage)),
        "steps": len(busy),
        "busy_ms_median": 1e3 * statistics.median(steady_busy) if steady_busy else None,
        "interval_ms_median": 1e3 * statistics.median(intervals) if intervals else None,
        "state_bytes": state_bytes,
        "peak_bytes": peak,
        "peak_kind": kind,
    }
    ranks: list[Any] = [me] if trainer.world == 1 else [None] * trainer.world
    if trainer.world > 1:
        dist.gather_object(me, ranks if trainer.rank == 0 else None, 0, group=trainer.control)
    if trainer.rank != 0:
        return
    slowest = max((r["busy_ms_median"] or 0.0) for r in ranks)
    last = [r for r in ranks if r["stage"] == trainer.layout.stages - 1]
    interval = statistics.median(
        [r["interval_ms_median"] for r in last if r["interval_ms_median"]] or [float("nan")]
    )
    record = {
        "stage": stage.index,
        "pipeline_stages": trainer.layout.stages,
        "replicas": trainer.replicas,
        "interval_ms": interval,
        "slowest_busy_ms": slowest,
        "efficiency": slowest / interval if interval == interval and interval else None,
        "ranks": ranks,
    }
    atomic_write_text(trainer.run.root / "pipeline.json", json.dumps(record, indent=2) + "\n")
