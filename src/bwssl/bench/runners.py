"""Benchmark runs: bwssl's own training step and transformers' VideoMAE, built inside a memory
window and timed interleaved.

A bwssl run drives the trainer's public seams on a fixed synthetic batch:
:meth:`Trainer.prepare_stage` sets the model up for a stage and gives its
optimizer units, :meth:`Trainer.step` does one optimizer step. So a run
measures real training minus data loading: the objective's step inputs
(masks, views), forward, per-unit backward, the non-finite check, AdamW.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bwssl.bench.memory import PeakMemory
from bwssl.config import Config

MEMORY_STEPS = 2
"""Optimizer steps inside the memory window (the first one creates AdamW's state)."""

HF_RUN = "transformers-videomae"
"""The run name of the transformers reference."""


@dataclass
class SyntheticBatch:
    """What :meth:`Trainer.step` reads from a data-loader batch."""

    video: torch.Tensor
    """(B, C, T, H, W) normalized clips."""
    label: torch.Tensor
    skipped: int = 0


@dataclass
class RunResult:
    """One run's measurements; ratios are filled in once every run of its size is timed."""

    size: str
    objective: str
    run: str
    batch: int
    step_s: list[float]
    peak_bytes: int
    state_bytes: int
    params_total: int
    params_trained: int
    memory_events: int
    vs_e2e: dict[str, float] = field(default_factory=dict)
    """This run's step time, peak memory and throughput divided by e2e's with the same
    objective."""
    vs_masked_pixels: dict[str, float] = field(default_factory=dict)
    """The same divided by masked_pixels' in the same run (regime, stage, variant)."""
    throughput_vs_hf: float | None = None
    """This run's clips/s divided by transformers' VideoMAE's (masked_pixels runs only)."""

    @property
    def step_median_s(self) -> float:
        return statistics.median(self.step_s)

    @property
    def clips_per_s(self) -> float:
        return self.batch / self.step_median_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "objective": self.objective,
            "run": self.run,
            "batch": self.batch,
            "step_ms_median": 1e3 * self.step_median_s,
            "step_ms_min": 1e3 * min(self.step_s),
            "step_ms": [1e3 * s for s in self.step_s],
            "clips_per_s": self.clips_per_s,
            "peak_bytes": self.peak_bytes,
            "peak_mib": self.peak_bytes / 2**20,
            "state_bytes": self.state_bytes,
            "params_total": self.params_total,
            "params_trained": self.params_trained,
            "memory_events": self.memory_events,
            "vs_e2e": self.vs_e2e,
            "vs_masked_pixels": self.vs_masked_pixels,
            "throughput_vs_hf": self.throughput_vs_hf,
        }


Setup = Callable[[], tuple[Callable[[int], None], int, int]]
"""Builds a run; returns its step function (taking the step number) and its parameter counts
(total, trained)."""


@dataclass
class Runner:
    """A built run: its step function, memory figures and timings so far."""

    result: RunResult
    step: Callable[[int], None] | None
    done: int = 0

    def take_step(self) -> None:
        assert self.step is not None
        self.step(self.done)
        self.done += 1


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(cfg: Config, device: torch.device) -> SyntheticBatch:
    """``train.batch_size`` clips of standard normal noise, seeded by ``cfg.seed``."""
    d = cfg.data
    gen = torch.Generator().manual_seed(cfg.seed)
    video = torch.randn(
        cfg.train.batch_size, d.channels, d.num_frames, d.crop_size, d.crop_size, generator=gen
    )
    return SyntheticBatch(video.to(device), torch.zeros(video.shape[0], dtype=torch.long))


def build_runner(
    size: str,
    objective: str,
    run: str,
    cfg: Config,
    device: torch.device,
    warmup: int,
    setup: Setup,
) -> Runner:
    """Build a run inside a memory window, take MEMORY_STEPS steps there, then ``warmup``
    more outside it."""
    with PeakMemory(device) as mem:
        step, total, trained = setup()
        for i in range(MEMORY_STEPS):
            step(i)
    result = RunResult(
        size,
        objective,
        run,
        cfg.train.batch_size,
        [],
        mem.peak,
        mem.retained,
        total,
        trained,
        mem.events,
    )
    runner = Runner(result, step, MEMORY_STEPS)
    for _ in range(warmup):
        runner.take_step()
    return runner


def time_interleaved(runners: list[Runner], steps: int, device: torch.device) -> None:
    """Time ``steps`` steps of every run, one step of each in turn (rotating who goes first).

    Interleaving spreads slow phases of a shared machine and allocator warm-up over all
    runs alike, so the ratios between runs are not biased by their order.
    """
    sync(device)
    for i in range(steps):
        for j in range(len(runners)):
            r = runners[(i + j) % len(runners)]
            t0 = time.perf_counter()
            r.take_step()
            sync(device)
            r.result.step_s.append(time.perf_counter() - t0)


def bwssl_setup(cfg: Config, stage_index: int, run_dir: Path) -> Setup:
    """A run of stage ``stage_index`` of ``cfg``'s regime, through the trainer's own step."""
    from bwssl.models.blockwise import build_model
    from bwssl.train.trainer import Position, Trainer

    def setup() -> tuple[Callable[[int], None], int, int]:
        trainer = Trainer(cfg, run_dir)
        stage = trainer.stages[stage_index]
        torch.manual_seed(cfg.seed)
        model = build_model(cfg).to(trainer.device)
        units = trainer.prepare_stage(model, stage)
        batch = synthetic_batch(cfg, trainer.device)

        def step(i: int) -> None:
            pos = Position(stage=stage.index, step=i, global_step=i)
            trainer.step(model, stage, units, batch, pos, cfg.train.lr)  # type: ignore[arg-type]

        total = sum(p.numel() for p in model.parameters())
        trained = sum(p.numel() for u in units for p in u.params)
        return step, total, trained

    return setup


def hf_setup(cfg: Config, device: torch.device, autocast: Callable[[], Any]) -> Setup:
    """``cfg`` (a masked-pixel E2E config) in ``transformers.VideoMAEForPreTraining``: same
    token grid, tube mask draws, decoder and normalized-pixel loss, SDPA attention, AdamW, and
    the trainer's ``autocast``."""
    from transformers import VideoMAEForPreTraining

    from bwssl.data.masking import make_mask
    from bwssl.interop.hf import videomae_config
    from bwssl.objectives.base import StepKey
    from bwssl.objectives.masked_pixels import MASK_STREAM
    from bwssl.train.optim import adamw, param_groups

    tc = cfg.train

    def setup() -> tuple[Callable[[int], None], int, int]:
        hf_cfg = videomae_config(cfg, attn_implementation="sdpa")
        torch.manual_seed(cfg.seed)
        model = VideoMAEForPreTraining(hf_cfg).to(device).train()
        params = list(model.parameters())
        # transformers.Trainer's default optimizer is "adamw_torch_fused" (torch >= 2.8).
        opt = adamw(param_groups(model, params, tc.weight_decay), tc.lr, (tc.betas[0], tc.betas[1]))
        video = synthetic_batch(cfg, device).video.transpose(1, 2)  # (B, T, C, H, W)
        grid = cfg.token_grid

        def step(i: int) -> None:
            key = StepKey(cfg.seed, 0, i, video.shape[0])
            mask = make_mask(
                cfg.mask.kind, video.shape[0], grid, cfg.mask.ratio, key.generator(MASK_STREAM)
            )
            with autocast():
                loss = model(video, bool_masked_pos=mask.to(device)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # the bwssl step also reads its losses back

        total = sum(p.numel() for p in params)
        return step, total, total

    return setup


def hf_available() -> bool:
    """Whether transformers can be imported."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True
