"""Block-parallel training: every process trains its own blocks, and only activations move.

Under ``train.parallel=blocks`` the processes form a pipeline
(:class:`~bwssl.train.pipeline_layout.PipelineLayout`). At step t a process
receives its input for batch t from the previous stage, runs its blocks,
sends their output on as soon as it exists, then computes its local losses,
backpropagates them and steps its own optimizers; meanwhile the next stage
works on batch t and the previous one on batch t + 1. Block k at step t thus
sees block k - 1's output for batch t computed with k - 1's weights before
their step-t update, exactly what single-process simultaneous training feeds
it, so both end with the same weights. Every process draws the step's masks
and views itself (they are pure functions of the step key), so only block
outputs travel, forward, and nothing ever travels back.

What must be agreed (the losses to log, a non-finite loss, a stop signal) is
all-reduced over every process once per ``train.log_every`` steps (a chunk
ending at a logged step), staggered: the process ``lag`` steps ahead of the
last stage reduces the chunk ending at step t after its own step t + lag, so
all of them reach that reduction together and nobody waits for the pipeline
to drain. At checkpoints, the stage's end and a stop they drain
(the pending reductions are done), and rank 0 gathers every stage's weights
and optimizer states into one checkpoint of the whole model, the same as a
single process writes.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from bwssl.base.collectives import data_parallel_group
from bwssl.config import Config
from bwssl.data import ClipBatch, check_unreadable
from bwssl.errors import RunStopped, TrainingDiverged
from bwssl.models.blockwise import BlockwiseModel
from bwssl.objectives.base import StepKey, with_labels
from bwssl.regimes import Stage
from bwssl.train.activation_link import ActivationLink
from bwssl.train.checkpoint import save_checkpoint
from bwssl.train.optim import set_lr
from bwssl.train.pipeline_layout import PipelineLayout
from bwssl.train.pipeline_log import StepLog
from bwssl.train.pipeline_report import write_report
from bwssl.train.sampling import EpochBatchSampler
from bwssl.train.trainer import Position, Trainer, Unit


def on_cpu(obj: Any) -> Any:
    """``obj`` (optimizer states: dicts, lists, tuples of tensors and plain values) with every
    tensor copied to the CPU, to travel between processes and into a checkpoint."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


class PipelineTrainer(Trainer):
    """The trainer of ``train.parallel=blocks``: this process's share of every stage."""

    def __init__(self, cfg: Config, run_dir: Path, resume_with: Sequence[str] = ()) -> None:
        super().__init__(cfg, run_dir, resume_with)
        lay = self.layout
        self.model_stage = 0
        """The regime stage whose units the last gather took."""
        self.replica_group: dist.ProcessGroup | None = None
        self.control: dist.ProcessGroup | None = None
        if self.world > 1:
            # Every process creates every group, in the same order.
            for s in range(lay.stages):
                group = dist.new_group(lay.replica_ranks(s))
                if s == lay.stage:
                    self.replica_group = group
            self.control = dist.new_group(list(range(self.world)), backend="gloo")
        self.link = ActivationLink(lay.previous, lay.next, self.device)

    def data_parallel(self) -> tuple[int, int]:
        self.layout = PipelineLayout.of(self.world, self.rank, self.cfg.train.pipeline_stages)
        return self.layout.replica, self.layout.replicas

    # --- what this process holds -----------------------------------------------------------
    def owned(self, stage: Stage) -> tuple[int, ...]:
        """The blocks this process trains in ``stage``."""
        return self.layout.blocks(stage)

    def _owned_keys(self, model: BlockwiseModel, blocks: tuple[int, ...]) -> list[str]:
        prefixes = tuple(f"blocks.{k}." for k in blocks) + tuple(
            f"{model.head_key}.{model.objective.head_name(k)}."
            for k in blocks
            if k in model.head_blocks
        )
        return [n for n in model.state_dict() if n.startswith(prefixes)]

    def prepare_stage(self, model: BlockwiseModel, stage: Stage) -> list[Unit]:
        """As :meth:`Trainer.prepare_stage` for this process's blocks; the weights of every
        other block and head are released (they live in other processes)."""
        units = super().prepare_stage(model, stage)
        mine = set(self.owned(stage))
        for k in range(model.num_blocks):
            if k not in mine:
                for p in model.block_params(k):
                    p.data = torch.empty(0, dtype=p.dtype, device=p.device)
                    p.requires_grad_(False)
        return units

    def units(self, model: BlockwiseModel, stage: Stage, wrap: bool = True) -> list[Unit]:
        """This process's optimizer units of ``stage``, DDP over its stage's replicas."""
        mine = set(self.owned(stage))
        units = [u for u in super().units(model, stage, wrap=False) if set(u.blocks) <= mine]
        for u in units:
            if wrap and self.layout.replicas > 1 and u.forward is not None:
                ids = [self.device.index] if self.device.type == "cuda" else None
                u.forward = nn.parallel.DistributedDataParallel(
                    u.forward,
                    device_ids=ids,
                    broadcast_buffers=False,
                    process_group=self.replica_group,
                )
            if wrap and self.cfg.train.compile and u.forward is not None:
                u.forward = torch.compile(
                    u.forward, backend=self.cfg.train.compile_backend, dynamic=False
                )
        return units

    # --- one step of this process ----------------------------------------------------------
    def stage_step(
        self,
        model: BlockwiseModel,
        stage: Stage,
        units: list[Unit],
        batch: ClipBatch,
        pos: Position,
        lr: float,
        clock: dict[str, float],
    ) -> dict[int, torch.Tensor]:
        """One optimizer step of this process's units on ``batch``: its input received from
        the previous stage (the first stage: the step's views), its output sent on before
        its backward. Returns the mean loss per owned block (maybe non-finite: the caller
        checks, with every process). ``clock['wait']`` grows by the seconds spent waiting
        for the input."""
        cfg, dev = self.cfg, self.device
        for unit in units:
            set_lr(unit.optimizer, lr)
        key = StepKey(cfg.seed, pos.epoch, pos.step, cfg.train.batch_size)
        rows = torch.arange(self.replica, cfg.train.batch_size, self.replicas)
        rows = rows[: batch.video.shape[0]]
        video = batch.video.to(dev, non_blocking=True)
        labels = batch.label.to(dev, non_blocking=True)
        accum, last = cfg.train.accum_steps, len(units) - 1
        sums: dict[int, torch.Tensor] = {}
        chunks = zip(video.chunk(accum), rows.chunk(accum), labels.chunk(accum), strict=True)
        for i, (v, r, lab) in enumerate(chunks):
            prepared = with_labels(model.objective.prepare(v, key, r, train=True), lab)
            if self.link.source is None:
                xs = prepared.views
                with torch.no_grad(), self.autocast():
                    for k in range(stage.frozen):
                        xs = [
                            model.forward_block(k, x, inp)
                            for x, inp in zip(xs, prepared.block_inputs, strict=True)
                        ]
            else:
                t0 = time.perf_counter()
                xs = self.link.recv(len(prepared.views))
                clock["wait"] += time.perf_counter() - t0
            for u, unit in enumerate(units):
                assert unit.forward is not None
                sync = (
                    unit.forward.no_sync()
                    if i < accum - 1 and hasattr(unit.forward, "no_sync")
                    else contextlib.nullcontext()
                )
                with sync:
                    with self.autocast():
                        xs, losses = unit.forward(xs, prepared)
                    if u == last and self.link.to is not None:
                        t0 = time.perf_counter()
                        self.link.send(xs)  # the next stage starts before this backward
                        clock["wait"] += time.perf_counter() - t0
                    loss = sum(losses.values()) / accum
                    if unit.scaler is not None:
                        loss = unit.scaler.scale(loss)
                    loss.backward()
                xs = [x.detach() for x in xs]
                for k, val in losses.items():
                    sums[k] = sums.get(k, 0) + val.detach() / accum
                if i == accum - 1:
                    self._apply(unit)
        return sums

    # --- the loop --------------------------------------------------------------------------
    def _run_stage(
        self,
        model: BlockwiseModel,
        stage: Stage,
        units: list[Unit],
        sampler: EpochBatchSampler,
        loader: Any,
        pos: Position,
        steps_per_epoch: int,
        total: int,
        lr_of: Callable[[int], float],
    ) -> None:
        with data_parallel_group(self.replica_group):
            self._pipeline_stage(
                model, stage, units, sampler, loader, pos, steps_per_epoch, total, lr_of
            )

    def _pipeline_stage(
        self,
        model: BlockwiseModel,
        stage: Stage,
        units: list[Unit],
        sampler: EpochBatchSampler,
        loader: Any,
        pos: Position,
        steps_per_epoch: int,
        total: int,
        lr_of: Callable[[int], float],
    ) -> None:
        cfg, lay = self.cfg, self.layout
        label = f"{cfg.regime} stage {stage.index + 1}/{len(self.stages)} (pipeline)"
        bar = tqdm(
            total=total,
            initial=min(total, pos.epoch * steps_per_epoch + pos.step),
            desc=label,
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not cfg.train.progress or self.rank != 0,
        )
        log = StepLog(self, stage, lay.stages, model.num_blocks)
        pending: deque[tuple[dict[str, Any], torch.Tensor]] = deque()
        stop_at: list[int | None] = [None]
        busy, ends = [], []

        chunk = cfg.train.log_every

        def reduce_first(n: int) -> None:
            """One all-reduce of the ``n`` oldest pending steps."""
            done = [pending.popleft() for _ in range(n)]
            vectors = torch.stack([v for _, v in done])
            if self.control is not None:
                dist.all_reduce(vectors, group=self.control)
            for (info, _), v in zip(done, vectors, strict=True):
                log.add(info, v, self.replicas)  # raises TrainingDiverged on a bad loss
            if bool((vectors[:, -1] > 0).any()) and stop_at[0] is None:
                last = done[-1][0]["stage_step"]  # no process is past this + lag
                stop_at[0] = min(last + lay.stages - 1, total - 1)

        def reduce_through(upto: float) -> None:
            """Reduce every whole chunk of pending steps (a chunk ends at a logged step)
            that ends at or before stage step ``upto``, one all-reduce per chunk."""
            while True:
                ends = [
                    i
                    for i, (info, _) in enumerate(pending)
                    if info["global_step"] % chunk == 0 and info["stage_step"] <= upto
                ]
                if not ends:
                    return
                reduce_first(ends[0] + 1)

        def drain() -> None:
            reduce_through(float("inf"))
            if pending:
                reduce_first(len(pending))
            self.link.wait()

        while pos.epoch * steps_per_epoch + pos.step < total:
            sampler.epoch, sampler.start = pos.epoch, pos.step
            t0 = time.perf_counter()  # busy from here: loading the batch counts
            for batch in loader:
                stage_step = pos.epoch * steps_per_epoch + pos.step
                if stage_step >= total:
                    break
                lr = lr_of(stage_step)
                clock = {"wait": 0.0}
                losses = self.stage_step(model, stage, units, batch, pos, lr, clock)
                ends.append(time.perf_counter())
                busy.append(ends[-1] - t0 - clock["wait"])
                pos.seen += batch.video.shape[0] + batch.skipped
                pos.skipped += batch.skipped
                check_unreadable(pos.skipped, pos.seen, cfg.data)
                pos.step += 1
                pos.global_step += 1
                bar.update(1)
                epoch_done = pos.step == steps_per_epoch
                info = {
                    "stage_step": stage_step,
                    "global_step": pos.global_step,
                    "epoch": pos.epoch,
                    "lr": lr,
                    "skipped": pos.skipped,
                    "epoch_done": epoch_done,
                    "time": ends[-1],
                }
                pending.append((info, log.vector(losses, self._signal is not None, busy[-1])))
                if epoch_done:
                    pos.epoch, pos.step = pos.epoch + 1, 0
                reduce_through(stage_step - lay.lag)
                saved = pos.global_step % cfg.train.checkpoint_every == 0
                if saved:
                    drain()
                    self._checkpoint(self.model, units, pos, self.run.last, stage.index)
                if stop_at[0] is not None and stage_step >= stop_at[0]:
                    drain()
                    self._stop(units, pos, stage, saved, bar)
                if epoch_done:
                    break
                t0 = time.perf_counter()
        drain()
        if stop_at[0] is not None:
            self._stop(units, pos, stage, False, bar)
        bar.close()
        write_report(self, stage, units, busy, ends)
        if stage.index == len(self.stages) - 1:
            self._assemble(self.model)

    def _stop(self, units: list[Unit], pos: Position, stage: Stage, saved: bool, bar: Any) -> None:
        """Every process stopped at the same step (a signal): checkpoint it and raise."""
        if not saved:
            self._checkpoint(self.model, units, pos, self.run.last, stage.index)
        if self.world > 1:
            dist.barrier()
        bar.close()
        name = signal.Signals(self._signal).name if self._signal else "a signal"
        raise RunStopped(
            f"{name} at global step {pos.global_step}: checkpoint written to "
            f"{self.run.last}; rerun the same command to continue",
            128 + int(self._signal or signal.SIGTERM),
        )

    # --- state -----------------------------------------------------------------------------
    def _gather_state(
        self, model: BlockwiseModel, units: list[Unit]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]] | None:
        """Rank 0: the whole model's state dict and every unit's optimizer state, from the
        first replica of every stage; other ranks: None."""
        stage = self.stages[min(self.model_stage, len(self.stages) - 1)]
        blocks = self.owned(stage)
        mine = None
        if self.replica == 0:
            state = model.state_dict()
            own = {n: state[n].detach().cpu() for n in self._owned_keys(model, blocks)}
            unit_states = [
                {
                    "blocks": u.blocks,
                    "optimizer": u.optimizer.state_dict(),
                    "scaler": u.scaler.state_dict() if u.scaler is not None else None,
                }
                for u in units
            ]
            mine = (own, on_cpu(unit_states))
        parts: list[Any] = [mine] if self.world == 1 else [None] * self.world
        if self.world > 1:
            dist.gather_object(mine, parts if self.rank == 0 else None, 0, group=self.control)
        if self.rank != 0:
            return None
        full = {n: t.detach().cpu() for n, t in model.state_dict().items()}
        all_units: list[dict[str, Any]] = []
        for part in parts:
            if part is not None:
                full.update(part[0])
                all_units += part[1]
        all_units.sort(key=lambda u: tuple(u["blocks"]))
        return full, all_units

    def _checkpoint(
        self,
        model: BlockwiseModel,
        units: list[Unit],
        pos: Position,
        path: Path,
        units_stage: int,
    ) -> None:
        """One checkpoint of the whole model at ``pos``, gathered to rank 0 (every process
        calls this at the same step); non-finite weights in any process refuse it."""
        self.model_stage = units_stage
        bad: TrainingDiverged | None = None
        try:
            self._check_finite(model, pos)  # this process's blocks (the others are released)
        except TrainingDiverged as e:
            bad = e
        if self.control is not None:  # every process refuses together
            flag = torch.tensor([0.0 if bad is None else 1.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
            if flag.item() > 0 and bad is None:
                bad = TrainingDiverged(
                    f"weights became NaN or inf in another process by global step "
                    f"{pos.global_step}; nothing was saved at that step. {self._advice()}"
                )
        if bad is not None:
            raise bad
        gathered = self._gather_state(model, units)
        if gathered is not None:
            state, unit_states = gathered
            payload = self._payload(model, [], pos, units_stage)
            payload["model"], payload["units"] = state, unit_states
            save_checkpoint(path, payload)

    def _assemble(self, model: BlockwiseModel) -> None:
        """Give rank 0's model every block's trained weights (for the final checkpoint)."""
        self.model_stage = len(self.stages) - 1
        gathered = self._gather_state(model, [])
        if gathered is not None:
            state, _ = gathered
            for name, p in model.named_parameters():
                p.data = torch.empty_like(state[name], device=p.device)
            model.load_state_dict(state)  # parameters and buffers (batch-norm statistics)
