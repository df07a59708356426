"""The one training loop: any regime, resumable, optionally distributed.

A regime is a list of :class:`~bwssl.regimes.Stage`. Each stage's trained
blocks are grouped into *units* (one per block when gradients are isolated,
one for the whole encoder in E2E); a unit has its own optimizer, gradient
clipping, loss scaler and DDP wrapper, and its backward runs as soon as its
loss exists, so its graph is freed before the next unit runs.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from bwssl.base.files import atomic_write_text
from bwssl.base.hardware import (
    autocast,
    enable_tf32,
    resolve_amp_dtype,
    resolve_device,
)
from bwssl.base.rundir import RunDir, environment
from bwssl.config import Config
from bwssl.data import ClipBatch, build_dataset, check_unreadable, make_loader
from bwssl.errors import RunStopped, TrainingDiverged, UserError
from bwssl.models.blockwise import BlockwiseModel, build_model, recut_e2e_state
from bwssl.objectives.base import StepKey, derive_seed, with_labels
from bwssl.objectives.registry import build_objective
from bwssl.regimes import Stage, is_layerwise, run_stages, stages
from bwssl.train.checkpoint import (
    is_complete,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from bwssl.train.optim import build_optimizer, final_lr, set_lr
from bwssl.train.sampling import EpochBatchSampler
from bwssl.train.units import UnitForward

REDRAW_KEY = 101
"""Keeps the seeds of stage re-initializations (seed, this, stage) apart from other draws."""


@dataclass
class Position:
    """Where a run stands; saved in every checkpoint."""

    stage: int = 0
    epoch: int = 0
    step: int = 0
    """Optimizer steps done in the current epoch."""
    global_step: int = 0
    seen: int = 0
    skipped: int = 0


@dataclass
class Unit:
    blocks: tuple[int, ...]
    forward: nn.Module | None
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine down to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


class Trainer:
    """Runs all stages of one config into one run directory."""

    def __init__(self, cfg: Config, run_dir: Path, resume_with: Sequence[str] = ()) -> None:
        """``resume_with``: config keys in which ``cfg`` may differ from the run already in
        ``run_dir`` (see :meth:`RunDir.prepare`), e.g. a lower ``train.lr`` after a
        divergence."""
        self.cfg = cfg
        self.resume_with = tuple(resume_with)
        self.run = RunDir(run_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.replica, self.replicas = self.data_parallel()
        if self.world > 1:
            if cfg.model.shared_decoder:
                raise UserError("model.shared_decoder is not supported with several processes")
            if cfg.train.batch_size % (self.replicas * cfg.train.accum_steps):
                raise UserError(
                    f"train.batch_size={cfg.train.batch_size} must be divisible by "
                    f"the processes splitting a batch x train.accum_steps = "
                    f"{self.replicas * cfg.train.accum_steps}"
                )
            per_process = cfg.train.batch_size // (self.replicas * cfg.train.accum_steps)
            need = build_objective(cfg).min_batch
            if per_process < need:
                raise UserError(
                    f"objective {cfg.objective.name} needs micro-batches of at least "
                    f"{need} clips per process; train.batch_size="
                    f"{cfg.train.batch_size} over {self.replicas} processes and "
                    f"{cfg.train.accum_steps} accumulation steps gives "
                    f"{per_process}: raise train.batch_size"
                )
            local = int(os.environ.get("LOCAL_RANK", "0"))
            self.device = (
                torch.device("cuda", local)
                if torch.cuda.is_available() and cfg.train.device != "cpu"
                else torch.device("cpu")
            )
            if not dist.is_initialized():
                dist.init_process_group(
                    "nccl" if self.device.type == "cuda" else "gloo",
                    timeout=datetime.timedelta(seconds=cfg.train.dist_timeout_s),
                )
        else:
            self.device = resolve_device(cfg.train.device)
        enable_tf32(self.device)
        self.amp_dtype = resolve_amp_dtype(cfg.train.precision, self.device)
        if self.amp_dtype == torch.float16 and cfg.model.shared_decoder:
            raise UserError(
                "train.precision=fp16 needs a loss scaler per block, which a shared "
                "decoder (model.shared_decoder=true) cannot have; use bf16 or fp32"
            )
        self.layerwise = is_layerwise(cfg.regime)
        self.stages: list[Stage] = (
            [] if self.layerwise else stages(cfg.regime, cfg.model.num_blocks)
        )
        """The run's stages; a layer-wise regime's are known once the run's length is
        (:meth:`plan`)."""
        self._tb: Any = None
        self._signal: int | None = None
        """The first SIGINT or SIGTERM received during :meth:`fit`, if any."""

    # --- setup -------------------------------------------------------------------------------
    def data_parallel(self) -> tuple[int, int]:
        """(this process's index, how many processes) among those that split one global
        batch: every process here; this process's rows of a batch are index, index + how
        many, ..."""
        return self.rank, self.world

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of this run's precision on its device."""
        return autocast(self.device, self.amp_dtype)

    def run_length(self, steps_per_epoch: int) -> int:
        """Optimizer steps of one stage of ``train.epochs`` epochs (at most
        ``train.max_steps``); a layer-wise regime's whole run is this long."""
        total = steps_per_epoch * self.cfg.train.epochs
        if self.cfg.train.max_steps is not None:
            total = min(total, self.cfg.train.max_steps)
        return total

    def plan(self, steps_per_epoch: int) -> list[Stage]:
        """The run's stages at ``steps_per_epoch`` (a layer-wise schedule is checked against
        the run's length here: a bad one raises ConfigError before anything is written)."""
        self.stages = run_stages(self.cfg, self.run_length(steps_per_epoch))
        return self.stages

    def training_model(self, model: BlockwiseModel) -> BlockwiseModel:
        """What the stages train: ``model`` itself, or for a layer-wise regime its per-layer
        view (the same parameters, one block per layer)."""
        return model.layer_view() if self.layerwise else model

    def prepare_stage(self, model: BlockwiseModel, stage: Stage) -> list[Unit]:
        """Set up ``model`` (the :meth:`training_model`) for ``stage``: frozen blocks without
        gradients and in eval mode, trained blocks in train mode, the objective on the
        stage's targets; returns the stage's units (:meth:`units`). Frozen blocks are in no
        optimizer, so nothing (weight decay, momentum) moves them."""
        for k, block in enumerate(model.blocks):
            block.requires_grad_(k in stage.trained)
            block.train(k >= stage.frozen)
        model.objective.set_targets(stage.targets)
        for head in model.heads.values():
            head.requires_grad_(True)
            for p in model.objective.idle_params(head, stage.targets):
                p.requires_grad_(False)
        return self.units(model, stage)

    def units(self, model: BlockwiseModel, stage: Stage, wrap: bool = True) -> list[Unit]:
        """The optimizer units of ``stage``: per unit its blocks' forward (wrapped in DDP and
        compiled as configured; ``wrap=False``: neither), parameters (less the read-outs the
        stage's targets leave idle), optimizer (``train.optimizer``) and loss scaler."""
        tc = self.cfg.train
        units = []
        idle = {
            id(p)
            for h in model.heads.values()
            for p in model.objective.idle_params(h, stage.targets)
        }
        head = model.shared_head
        shared = list(head.parameters()) if head is not None else []
        groups: list[tuple[tuple[int, ...], bool]] = [(u, True) for u in stage.units]
        if shared and len(stage.units) > 1:
            groups.append(((), False))  # the shared decoder is a unit of its own
        for blocks, has_forward in groups:
            params = [p for k in blocks for p in model.block_params(k)]
            if shared and (not has_forward or len(stage.units) == 1):
                params += shared
            params = [p for p in params if id(p) not in idle]
            fwd: nn.Module | None = None
            if has_forward:
                fwd = UnitForward(model, blocks, stage.loss_blocks)
                if self.world > 1 and wrap:
                    ids = [self.device.index] if self.device.type == "cuda" else None
                    # Positions are fixed buffers: nothing to broadcast at every forward.
                    fwd = nn.parallel.DistributedDataParallel(
                        fwd, device_ids=ids, broadcast_buffers=False
                    )
                if tc.compile and wrap:
                    # Static shapes: each unit sees fixed shapes (block 1 the clip, the others
                    # tokens), and inductor's dynamic-shape graphs, which recompiles of the
                    # shared forward code switch on, crashed in backward on an H100.
                    fwd = torch.compile(fwd, backend=tc.compile_backend, dynamic=False)
            opt = build_optimizer(tc, model, params)
            scaler = (
                torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
            )
            units.append(Unit(blocks, fwd, params, opt, scaler))
        return units

    # --- the loop ----------------------------------------------------------------------------
    def fit(self) -> Path:
        """Train (or resume) every stage; returns checkpoints/final.pt.

        SIGINT and SIGTERM (a cluster's preemption) stop the run after the step in
        flight: a checkpoint of that step is written atomically and :class:`RunStopped`
        is raised (under torchrun every process stops at the same step). A second signal
        of the same kind stops at once (the checkpoints on disk stay whole).
        """
        with self._signals_stop_the_run(), contextlib.ExitStack() as held:
            self._held = held
            return self._fit()

    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        """The run folder's writer lock, held by rank 0 (the only process that writes)."""
        if self.rank != 0:
            yield
            return
        with self.run.writer_lock():
            yield

    @contextlib.contextmanager
    def _signals_stop_the_run(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # handlers can only be set from the main thread
            return

        def note(signum: int, frame: Any) -> None:
            if self._signal == signum:  # asked twice: stop now
                raise KeyboardInterrupt
            self._signal = signum

        old = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def _stop_requested(self) -> bool:
        """Whether any process got a signal (all processes agree, so they stop together)."""
        flag = 1.0 if self._signal is not None else 0.0
        if self.world > 1:
            t = torch.tensor([flag], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = float(t.item())
        return flag > 0

    def _fit(self) -> Path:
        cfg, run = self.cfg, self.run
        if run.final.exists() and run.saved_config() == cfg and is_complete(run.final):
            self._say(f"{run.root}: already finished ({run.final})")
            return run.final
        # The data first: a wrong data.root must not leave a run folder behind whose config
        # would refuse the corrected command.
        data = build_dataset(cfg.data, "train", seed=cfg.seed)
        steps_per_epoch = len(data) // cfg.train.batch_size
        if steps_per_epoch < 1:
            raise UserError(
                f"the training set has {len(data)} clips, fewer than "
                f"train.batch_size={cfg.train.batch_size}; lower the batch size"
            )
        build_objective(cfg).check_dataset(data.num_classes)
        self.plan(steps_per_epoch)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg).to(self.device)
        self.model = model
        train_model = self.training_model(model)
        try:
            if run.root.exists() and not run.root.is_dir():
                raise UserError(f"--out {run.root} is a file, not a folder; choose a folder")
            self._held.enter_context(self._writer())
            if self.rank == 0:
                run.prepare(cfg, environment(self.device, cfg.seed), self.resume_with)
        except OSError as e:
            raise UserError(
                f"cannot write the run folder {run.root}: {e.strerror or e}; choose a "
                "writable --out"
            ) from None
        if self.world > 1:
            dist.barrier()
            if run.saved_config() != cfg:
                raise UserError(f"{run.root} holds a run with a different config")

        pos, ckpt = Position(), None
        if run.last.exists():
            ckpt = load_checkpoint(run.last)
            model.load_state_dict(ckpt["model"])
            pos = Position(**ckpt["position"])
            set_rng_state(ckpt["rng"])
            if self.rank == 0:
                run.truncate_metrics(pos.global_step)
            self._say(
                f"resuming {run.root} at stage {pos.stage + 1}, epoch {pos.epoch + 1}, "
                f"step {pos.step} (global step {pos.global_step})"
            )
        elif self.rank == 0:
            run.truncate_metrics(0)  # lines of an earlier attempt killed before any checkpoint

        sampler = EpochBatchSampler(
            len(data), cfg.train.batch_size, cfg.seed, rank=self.replica, world=self.replicas
        )
        loader = make_loader(
            data, sampler, cfg.train.num_workers, pin_memory=self.device.type == "cuda"
        )
        peak = cfg.train.peak_lr
        warmup = round(cfg.train.warmup_epochs * steps_per_epoch)
        run_total = self.run_length(steps_per_epoch)

        prev: list[Unit] = []
        for stage in self.stages[pos.stage :]:
            if stage.reset and self.stage_position(pos, steps_per_epoch) == (stage.lr_offset or 0):
                self.redraw(model, stage)  # the stage starts now (a resumed one holds its draw)
            units = self.prepare_stage(train_model, stage)
            saved = ckpt["units"] if ckpt is not None else []
            saved_stage = (
                ckpt.get("units_stage", ckpt["position"]["stage"]) if ckpt is not None else None
            )
            if saved and saved_stage == stage.index:
                load_unit_states(units, saved)
            elif stage.carry_optimizer:
                if not prev and saved and saved_stage == stage.index - 1:
                    prev = self.units(train_model, self.stages[stage.index - 1], wrap=False)
                    load_unit_states(prev, saved)
                carry_optimizer_state(prev, units)
            end = self.stage_steps(stage, steps_per_epoch)
            self._run_stage(
                train_model,
                stage,
                units,
                sampler,
                loader,
                pos,
                steps_per_epoch,
                end,
                lambda s, stage=stage, end=end: self.lr(stage, s, end, run_total, peak, warmup),
            )
            following = self.stages[stage.index + 1] if stage.index + 1 < len(self.stages) else None
            # A stage on the run's one schedule starts where the schedule (and the data) is.
            offset = following.lr_offset if following is not None else None
            pos.stage = stage.index + 1
            pos.epoch, pos.step = divmod(offset, steps_per_epoch) if offset else (0, 0)
            carry = following is not None and following.carry_optimizer
            self._checkpoint(model, units if carry else [], pos, run.last, stage.index)
            prev = units

        self._check_finite(model, pos)
        if self.rank == 0:
            save_checkpoint(run.final, self._payload(model, [], pos, None))
            if self._tb:
                self._tb.close()
        if self.world > 1:
            dist.barrier()
        self._say(f"done: {run.final}")
        return run.final

    @staticmethod
    def stage_position(pos: Position, steps_per_epoch: int) -> int:
        """Where ``pos`` stands in its stage, counted like :meth:`stage_steps`."""
        return pos.epoch * steps_per_epoch + pos.step

    def redraw(self, model: BlockwiseModel, stage: Stage) -> None:
        """Re-initialize ``stage.reset`` (blocks of the stored ``model``) and their heads, from
        a seed of the run's seed and the stage's index, before the stage's first step."""
        if self.layerwise:
            raise ValueError(
                f"stage {stage.index}: a layer-wise schedule cannot re-initialize blocks"
            )
        model.redraw(stage.reset, derive_seed(self.cfg.seed, REDRAW_KEY, stage.index))

    def stage_steps(self, stage: Stage, steps_per_epoch: int) -> int:
        """Where ``stage`` ends, counted like its steps: a stage on its own schedule ends
        after its own length, else ``train.epochs`` epochs, at most ``train.max_steps``; a
        stage on the run's schedule (``lr_offset``) ends at ``lr_offset`` + its length, or at
        the run's end."""
        if stage.lr_offset is not None:
            end = self.run_length(steps_per_epoch)
            return end if stage.steps is None else min(end, stage.lr_offset + stage.steps)
        total = stage.steps if stage.steps is not None else steps_per_epoch * self.cfg.train.epochs
        if self.cfg.train.max_steps is not None:
            total = min(total, self.cfg.train.max_steps)
        return total

    def lr(
        self, stage: Stage, step: int, end: int, run_total: int, peak: float, warmup: int
    ) -> float:
        """The learning rate at ``step`` of ``stage`` (counted like :meth:`stage_steps`, which
        gives ``end``): warmup and cosine over the stage, or over the run (``run_total``
        steps) for a stage on the run's schedule, times the stage's re-warmup ramp. The
        cosine ends at :func:`~bwssl.train.optim.final_lr`."""
        floor = final_lr(self.cfg.train)
        if stage.lr_offset is None:
            return lr_at(step, end, warmup, peak, floor)
        lr = lr_at(step, run_total, warmup, peak, floor)
        if stage.rewarm_steps:
            lr *= min(1.0, (step - stage.lr_offset + 1) / stage.rewarm_steps)
        return lr

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
        cfg = self.cfg
        label = f"{cfg.regime} stage {stage.index + 1}/{len(self.stages)}"
        bar = tqdm(
            total=total,
            initial=min(total, pos.epoch * steps_per_epoch + pos.step),
            desc=label,
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not cfg.train.progress or self.rank != 0,
        )
        window: dict[int, list[float]] = {}
        epoch_losses: dict[int, list[float]] = {}
        t_log, clips_log = time.perf_counter(), 0
        t_epoch, clips_epoch = time.perf_counter(), 0
        while pos.epoch * steps_per_epoch + pos.step < total:
            sampler.epoch, sampler.start = pos.epoch, pos.step
            for batch in loader:
                stage_step = pos.epoch * steps_per_epoch + pos.step
                if stage_step >= total:
                    break
                lr = lr_of(stage_step)
                losses = self.step(model, stage, units, batch, pos, lr)
                if self.layerwise and losses:  # the last layer's loss is the last block's
                    (value,) = losses.values()
                    losses = {self.model.num_blocks - 1: value}
                pos.seen += batch.video.shape[0] + batch.skipped
                pos.skipped += batch.skipped
                check_unreadable(pos.skipped, pos.seen, cfg.data)
                for k, v in losses.items():
                    window.setdefault(k, []).append(v)
                    epoch_losses.setdefault(k, []).append(v)
                clips_log += batch.video.shape[0] * self.world
                clips_epoch += batch.video.shape[0] * self.world
                pos.step += 1
                pos.global_step += 1
                bar.update(1)
                if losses:
                    bar.set_postfix(loss=f"{sum(losses.values()) / len(losses):.4f}")
                epoch_done = pos.step == steps_per_epoch
                if pos.global_step % cfg.train.log_every == 0 or epoch_done:
                    now = time.perf_counter()
                    self._log(
                        {
                            "step": pos.global_step,
                            "stage": stage.index,
                            "frozen": stage.frozen,
                            "targets": list(stage.targets),
                            "epoch": pos.epoch,
                            "loss": {str(k): sum(v) / len(v) for k, v in window.items()},
                            "lr": lr,
                            "clips_per_s": clips_log / max(now - t_log, 1e-9),
                            "skipped": pos.skipped,
                        }
                    )
                    window, t_log, clips_log = {}, now, 0
                if epoch_done:
                    now = time.perf_counter()
                    text = " ".join(
                        f"L{k + 1}={sum(v) / len(v):.4f}" for k, v in sorted(epoch_losses.items())
                    )
                    bar.write(
                        f"{label} epoch {pos.epoch + 1}/{cfg.train.epochs}: {text} "
                        f"({clips_epoch / max(now - t_epoch, 1e-9):.1f} clips/s)"
                    )
                    epoch_losses, t_epoch, clips_epoch = {}, now, 0
                    pos.epoch, pos.step = pos.epoch + 1, 0
                saved = pos.global_step % cfg.train.checkpoint_every == 0
                if saved:
                    self._checkpoint(self.model, units, pos, self.run.last, stage.index)
                if self._stop_requested():
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
                if epoch_done:
                    break
        bar.close()

    def step(
        self,
        model: BlockwiseModel,
        stage: Stage,
        units: list[Unit],
        batch: ClipBatch,
        pos: Position,
        lr: float,
    ) -> dict[int, float]:
        """One optimizer step of every unit on ``batch`` at ``pos``; returns the mean loss
        per block. Raises TrainingDiverged on a non-finite loss (in any process)."""
        cfg, dev = self.cfg, self.device
        for unit in units:
            set_lr(unit.optimizer, lr)
        if batch.video.shape[0] == 0:
            return {}
        # The objective draws masks and views for the whole global batch; this process's
        # clips are its rows rank, rank + world, ...
        key = StepKey(cfg.seed, pos.epoch, pos.step, cfg.train.batch_size)
        rows = torch.arange(self.replica, cfg.train.batch_size, self.replicas)
        rows = rows[: batch.video.shape[0]]
        video = batch.video.to(dev, non_blocking=True)
        labels = batch.label.to(dev, non_blocking=True)
        accum = cfg.train.accum_steps
        sums: dict[int, torch.Tensor] = {}
        chunks = zip(video.chunk(accum), rows.chunk(accum), labels.chunk(accum), strict=True)
        for i, (v, r, lab) in enumerate(chunks):
            prepared = with_labels(model.objective.prepare(v, key, r, train=True), lab)
            xs = prepared.views
            with torch.no_grad(), self.autocast():
                for k in range(stage.frozen):
                    xs = [
                        model.forward_block(k, x, inp)
                        for x, inp in zip(xs, prepared.block_inputs, strict=True)
                    ]
            for unit in units:
                if unit.forward is None:
                    continue
                sync = (
                    unit.forward.no_sync()
                    if self.world > 1 and i < accum - 1 and hasattr(unit.forward, "no_sync")
                    else contextlib.nullcontext()
                )
                with sync:
                    with self.autocast():
                        xs, losses = unit.forward(xs, prepared)
                    loss = sum(losses.values()) / accum
                    if unit.scaler is not None:
                        loss = unit.scaler.scale(loss)
                    loss.backward()  # frees this unit's graph before the next unit runs
                xs = [x.detach() for x in xs]
                for k, val in losses.items():
                    sums[k] = sums.get(k, 0) + val.detach() / accum
                if i == accum - 1:
                    # This unit's gradients are complete: step now and free them, so that no
                    # two units' gradients are alive at once. A non-finite loss found below
                    # stops the run before any checkpoint holds this step.
                    self._apply(unit)
        for unit in units:
            if unit.forward is None:  # a shared head: its gradient came from every block
                self._apply(unit)
        keys = sorted(sums)
        values = torch.stack([sums[k] for k in keys]).float()
        finite = torch.isfinite(values).all().float()
        if self.world > 1:  # every process stops together, never one alone
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        local = values.cpu()
        if self.world > 1 and finite.item() == 1:
            # The logged loss is the global batch's: the mean of the processes' (equal-sized)
            # local means.
            dist.all_reduce(values)
            values = values / self.world
        values = values.cpu() if finite.item() == 1 else local
        if finite.item() < 1:
            if torch.isfinite(values).all():
                raise TrainingDiverged(
                    f"a loss became NaN or inf in another process at global "
                    f"step {pos.global_step + 1}. {self._advice()}"
                )
            bad = keys[int((~torch.isfinite(values)).nonzero()[0, 0])]
            raise TrainingDiverged(
                f"the loss of block {bad + 1} became {values[keys.index(bad)].item()} at global "
                f"step {pos.global_step + 1} (stage {stage.index + 1}). {self._advice()}"
            )
        return dict(zip(keys, values.tolist(), strict=True))

    def _apply(self, unit: Unit) -> None:
        """One optimizer step of ``unit`` (its own clipping and loss scale), then free its
        gradients."""
        if unit.scaler is not None:
            unit.scaler.unscale_(unit.optimizer)
        if self.cfg.train.clip_grad is not None:
            nn.utils.clip_grad_norm_(unit.params, self.cfg.train.clip_grad)
        if unit.scaler is not None:
            unit.scaler.step(unit.optimizer)
            unit.scaler.update()
        else:
            unit.optimizer.step()
        unit.optimizer.zero_grad(set_to_none=True)

    # --- state -------------------------------------------------------------------------------
    def _payload(
        self, model: BlockwiseModel, units: list[Unit], pos: Position, units_stage: int | None
    ) -> dict[str, Any]:
        """The checkpoint of ``model`` (the stored model, never a per-layer view) at ``pos``,
        with the optimizer ``units`` of stage ``units_stage``."""
        return {
            "model": model.state_dict(),
            "units": [
                {
                    "blocks": u.blocks,
                    "optimizer": u.optimizer.state_dict(),
                    "scaler": u.scaler.state_dict() if u.scaler is not None else None,
                }
                for u in units
            ],
            "units_stage": units_stage,
            "position": asdict(pos),
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "config_digest": self.cfg.digest(),
        }

    def _checkpoint(
        self,
        model: BlockwiseModel,
        units: list[Unit],
        pos: Position,
        path: Path,
        units_stage: int,
    ) -> None:
        self._check_finite(model, pos)
        if self.rank == 0:
            save_checkpoint(path, self._payload(model, units, pos, units_stage))

    def _check_finite(self, model: BlockwiseModel, pos: Position) -> None:
        """Refuse to save weights that hold NaN or inf: the last finite checkpoint stays."""
        bad = [
            n
            for n, t in model.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())
        ]
        if bad:
            raise TrainingDiverged(
                f"{len(bad)} weight tensors (e.g. {bad[0]}) became NaN or inf by global step "
                f"{pos.global_step}; nothing was saved at that step. {self._advice()}"
            )

    def _advice(self) -> str:
        """Where a diverged run stands and how to continue it."""
        if self.run.last.exists():
            where = f"The last good checkpoint is {self.run.last}"
        else:
            where = "No checkpoint was written yet (the run starts over)"
        return (
            f"{where}; continue it with a lower learning rate or gradient clipping: "
            f"bwssl train ... --out {self.run.root} --resume-with "
            f"train.lr={self.cfg.train.lr / 10:g} (or train.clip_grad=1.0)"
        )

    def _log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl line; also TensorBoard scalars when tensorboard is installed."""
        if self.rank != 0:
            return
        self.run.log(record)
        if self._tb is None and self.cfg.train.tensorboard:
            self._tb = tensorboard_writer(self.run.root / "tensorboard")
        if self._tb:
            step = record["step"]
            for k, v in record["loss"].items():
                self._tb.add_scalar(f"loss/block{int(k) + 1}", v, step)
            self._tb.add_scalar("lr", record["lr"], step)
            self._tb.add_scalar("clips_per_s", record["clips_per_s"], step)

    def _say(self, text: str) -> None:
        if self.rank == 0:
            print(text, file=sys.stderr)


def load_unit_states(units: list[Unit], saved: list[dict[str, Any]]) -> None:
    """Optimizer and loss-scaler states of a checkpoint into ``units``, each the saved unit
    of the same blocks (a process of a block-parallel run takes its own units only)."""
    by_blocks = {tuple(state["blocks"]): state for state in saved}
    for unit in units:
        state = by_blocks.get(tuple(unit.blocks))
        if state is None:
            raise ValueError(f"the checkpoint has no optimizer unit of blocks {unit.blocks}")
        unit.optimizer.load_state_dict(state["optimizer"])
        if unit.scaler is not None and state.get("scaler"):
            unit.scaler.load_state_dict(state["scaler"])


def carry_optimizer_state(old: list[Unit], new: list[Unit]) -> None:
    """Give every parameter of ``new`` the optimizer state it had in ``old`` (moments and
    step count), whatever units either was grouped into; parameters new to training start
    afresh, and parameters no longer trained leave theirs behind."""
    states = {id(p): s for u in old for p, s in u.optimizer.state.items()}
    for unit in new:
        for group in unit.optimizer.param_groups:
            for p in group["params"]:
                if id(p) in states:
                    unit.optimizer.state[p] = states[id(p)]


def tensorboard_writer(log_dir: Path) -> Any:
    """A TensorBoard SummaryWriter, or False when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra bwssl[tensorboard] is not installed
        return False
    return SummaryWriter(log_dir=str(log_dir))


def same_but_blocks(a: Config, b: Config) -> bool:
    """Whether two configs differ at most in where the encoder is cut (K, boundaries)."""
    da, db = a.to_dict(), b.to_dict()
    for d in (da, db):
        d["model"].pop("num_blocks")
        d["model"].pop("boundaries")
    return da == db


def derive_e2e_run(source: Path, cfg: Config, run_dir: Path) -> Path:
    """Write ``run_dir`` as the E2E run of ``cfg`` from the finished E2E run in ``source``
    that differs only in K: its weights re-keyed for ``cfg``'s blocks (see
    :func:`~bwssl.models.blockwise.recut_e2e_state`), its metrics copied.

    Training it again would give bitwise the same weights. Returns the path of
    the new checkpoints/final.pt; a finished ``run_dir`` of the same config is left as is.
    """
    src, run = RunDir(Path(source)), RunDir(Path(run_dir))
    src_cfg = src.saved_config()
    if src_cfg is None or not src.final.exists():
        raise UserError(f"{src.root} is not a finished run (no config.yaml or final.pt)")
    if cfg.regime != "e2e" or src_cfg.regime != "e2e" or not same_but_blocks(src_cfg, cfg):
        raise UserError(
            f"{run.root} cannot be derived from {src.root}: both must be E2E runs "
            "whose configs differ only in model.num_blocks / model.boundaries"
        )
    if run.final.exists() and run.saved_config() == cfg and is_complete(run.final):
        return run.final
    env = {**json.loads(src.env.read_text()), "derived_from": str(src.root.resolve())}
    run.prepare(cfg, env)
    if src.metrics.exists():
        atomic_write_text(run.metrics, src.metrics.read_text())
    payload = load_checkpoint(src.final)
    payload["model"] = recut_e2e_state(
        payload["model"], src_cfg.model, cfg.model, build_model(cfg).head_key
    )
    payload["config"], payload["config_digest"] = cfg.to_dict(), cfg.digest()
    save_checkpoint(run.final, payload)
    return run.final


def train(cfg: Config, run_dir: Path, resume_with: Sequence[str] = ()) -> Path:
    """Train (or resume) ``cfg`` in ``run_dir``; returns the path of checkpoints/final.pt.
    ``resume_with``: keys in which ``cfg`` may differ from the run in ``run_dir``."""
    if cfg.train.parallel == "blocks":
        from bwssl.train.pipeline import PipelineTrainer

        return PipelineTrainer(cfg, Path(run_dir), resume_with).fit()
    return Trainer(cfg, Path(run_dir), resume_with).fit()
