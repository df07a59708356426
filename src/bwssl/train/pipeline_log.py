"""What the processes of a block-parallel run agree on after every step, and its log.

Each process packs its step into one vector (:meth:`StepLog.vector`): its
blocks' losses, which of them are not finite, its compute time, whether it got
a stop signal. The sum of the vectors over all processes (one all-reduce per
step) is the step's whole story: every block's loss (times the replicas), any
non-finite loss, every pipeline stage's compute time, any stop request.
:meth:`StepLog.add` reads it the same way in every process (so all raise
together on a non-finite loss) and rank 0 writes the metrics lines a
single-process run writes.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from bwssl.errors import TrainingDiverged
from bwssl.regimes import Stage

if TYPE_CHECKING:
    from bwssl.train.pipeline import PipelineTrainer


class StepLog:
    """Packs and reads the per-step vectors of one regime stage of ``trainer``."""

    def __init__(
        self, trainer: PipelineTrainer, stage: Stage, stages: int, num_blocks: int
    ) -> None:
        self.trainer, self.stage = trainer, stage
        self.stages, self.k = stages, num_blocks
        self.window: dict[int, list[float]] = {}
        self.epoch_losses: dict[int, list[float]] = {}
        self.busy: list[list[float]] = []
        self.t_log = self.t_epoch = time.perf_counter()
        self.steps_log = self.steps_epoch = 0

    def vector(self, losses: dict[int, torch.Tensor], stop: bool, busy_s: float) -> torch.Tensor:
        """This process's step: losses (K), non-finite flags (K), busy seconds per pipeline
        stage (this one's, divided among its replicas), stop flag."""
        k, s = self.k, self.stages
        v = torch.zeros(2 * k + s + 1, dtype=torch.float64)
        for block, loss in losses.items():
            value = float(loss)
            finite = value == value and abs(value) != float("inf")
            v[block] = value if finite else 0.0
            v[k + block] = 0.0 if finite else 1.0
        v[2 * k + self.trainer.layout.stage] = busy_s / self.trainer.replicas
        v[-1] = 1.0 if stop else 0.0
        return v

    def add(self, info: dict[str, Any], v: torch.Tensor, replicas: int) -> None:
        """Read the all-reduced vector ``v`` of the step ``info`` describes; raises
        TrainingDiverged (in every process) when a loss was not finite."""
        k, t = self.k, self.trainer
        bad = [b for b in range(k) if v[k + b] > 0]
        if bad:
            raise TrainingDiverged(
                f"the loss of block {bad[0] + 1} became NaN or inf at global step "
                f"{info['global_step']} (stage {self.stage.index + 1}). {t._advice()}"
            )
        if t.rank != 0:
            return
        losses = {b: float(v[b]) / replicas for b in self.stage.loss_blocks}
        for b, value in losses.items():
            self.window.setdefault(b, []).append(value)
            self.epoch_losses.setdefault(b, []).append(value)
        self.busy.append([float(x) for x in v[2 * k : 2 * k + self.stages]])
        self.steps_log += 1
        self.steps_epoch += 1
        cfg = t.cfg
        clips = cfg.train.batch_size
        if info["global_step"] % cfg.train.log_every == 0 or info["epoch_done"]:
            now = info["time"]  # when rank 0 finished the step: the pipeline's pace
            t._log(
                {
                    "step": info["global_step"],
                    "stage": self.stage.index,
                    "frozen": self.stage.frozen,
                    "targets": list(self.stage.targets),
                    "epoch": info["epoch"],
                    "loss": {str(b): sum(x) / len(x) for b, x in self.window.items()},
                    "lr": info["lr"],
                    "clips_per_s": clips * self.steps_log / max(now - self.t_log, 1e-9),
                    "skipped": info["skipped"],
                    "pipeline_busy_ms": [
                        1e3 * sum(col) / len(col) for col in zip(*self.busy, strict=True)
                    ],
                }
            )
            self.window, self.busy, self.t_log, self.steps_log = {}, [], now, 0
        if info["epoch_done"]:
            now = info["time"]
            text = " ".join(
                f"L{b + 1}={sum(x) / len(x):.4f}" for b, x in sorted(self.epoch_losses.items())
            )
            rate = clips * self.steps_epoch / max(now - self.t_epoch, 1e-9)
            print(
                f"{cfg.regime} epoch {info['epoch'] + 1}/{cfg.train.epochs}: {text} "
                f"({rate:.1f} clips/s)",
                file=sys.stderr,
            )
            self.epoch_losses, self.t_epoch, self.steps_epoch = {}, now, 0
