"""What a layer-wise schedule (progressive freezing, LayerLock) costs over a whole run, against
the unfrozen E2E baseline of the same config.

Each distinct stage of the schedule is set up through the trainer's own seams
(:meth:`Trainer.training_model`, :meth:`Trainer.prepare_stage`,
:meth:`Trainer.step`) on a fixed synthetic batch, and measured twice:

- **FLOPs per optimizer step**, counted by ``torch.utils.flop_counter`` (forward
  and backward matrix products, convolutions and attention; elementwise work
  and AdamW are not counted). Attention runs through SDPA's math kernel while
  counting, because the counter does not know the fused CPU kernel; it does
  the same products. LayerLock's latent targets (a no-grad forward of the
  frozen layers on the whole clip) are counted.
- **Peak memory of a step** (:class:`~bwssl.bench.memory.PeakMemory`, above
  the model's weights): activations kept for backward, gradients, AdamW state
  of the trained parameters, all of which shrink as layers freeze.

The whole schedule's FLOPs are the sum over stages of FLOPs per step times the
stage's steps. Its memory is given twice: the highest stage's peak (with
freezing starting mid-run this is the unfrozen first stage's, the baseline's
own), and the mean over all steps of each step's peak, which is what freezing
lowers (the device time spent at each memory level). Each is divided by the
baseline's, measured the same way in the same process, and progressive freezing
(the ``freeze`` regime) is checked against :data:`SCHEDULE_TARGETS`.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bwssl.bench.memory import PeakMemory
from bwssl.bench.results import check_target
from bwssl.bench.runners import MEMORY_STEPS, synthetic_batch
from bwssl.config import Config
from bwssl.regimes import run_stages

SCHEDULE_TARGETS = {
    "freeze_vs_e2e_flops": ("<=", 0.91),
    "freeze_vs_e2e_mean_step_peak_memory": ("<=", 0.84),
}
"""What progressive freezing should save over its whole schedule against E2E: at least 9% of
the FLOPs and 16% of the peak memory, the savings LayerLock reports for freezing alone. The
paper plots the peak memory of every step; its saving is read here as the mean over the
schedule's steps of each step's peak. The schedule's highest peak is reported too but is no
target: while the first event comes after unfrozen steps, that peak is E2E's own."""


@dataclass
class StageCost:
    """One stage of a schedule: its length and what one of its steps costs."""

    stage: int
    frozen: int
    """Frozen prefix (layers for a layer-wise regime, blocks otherwise)."""
    targets: list[str]
    steps: int
    flops_per_step: int
    peak_bytes: int


@dataclass
class ScheduleCost:
    """A regime's whole schedule of ``total_steps`` steps."""

    regime: str
    total_steps: int
    stages: list[StageCost]

    @property
    def flops(self) -> int:
        return sum(s.flops_per_step * s.steps for s in self.stages)

    @property
    def peak_bytes(self) -> int:
        """The highest stage's peak."""
        return max(s.peak_bytes for s in self.stages)

    @property
    def mean_peak_bytes(self) -> float:
        """Each step's peak, averaged over the schedule's steps."""
        return sum(s.peak_bytes * s.steps for s in self.stages) / self.total_steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "regime": self.regime,
            "total_steps": self.total_steps,
            "flops": self.flops,
            "peak_bytes": self.peak_bytes,
            "mean_peak_bytes": self.mean_peak_bytes,
            "stages": [asdict(s) for s in self.stages],
        }


def schedule_cost(cfg: Config, total_steps: int, run_dir: Path) -> ScheduleCost:
    """Measure every stage of ``cfg``'s regime over a run of ``total_steps`` steps."""
    from bwssl.models.blockwise import build_model
    from bwssl.train.trainer import Position, Trainer

    trainer = Trainer(cfg, run_dir)
    trainer.stages = run_stages(cfg, total_steps)
    torch.manual_seed(cfg.seed)
    model = trainer.training_model(build_model(cfg).to(trainer.device))
    batch = synthetic_batch(cfg, trainer.device)
    out = []
    for stage in trainer.stages:
        steps = stage.steps if stage.steps is not None else total_steps - (stage.lr_offset or 0)
        with PeakMemory(trainer.device) as mem:
            units = trainer.prepare_stage(model, stage)
            for i in range(MEMORY_STEPS):  # the first step creates AdamW's state
                pos = Position(stage=stage.index, step=i, global_step=i)
                trainer.step(model, stage, units, batch, pos, cfg.train.lr)  # type: ignore[arg-type]
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            pos = Position(stage=stage.index, step=MEMORY_STEPS, global_step=MEMORY_STEPS)
            trainer.step(model, stage, units, batch, pos, cfg.train.lr)  # type: ignore[arg-type]
        out.append(
            StageCost(
                stage.index,
                stage.frozen,
                list(stage.targets),
                steps,
                int(counter.get_total_flops()),
                mem.peak,
            )
        )
        del units
        gc.collect()
    return ScheduleCost(cfg.regime, total_steps, out)


def compare_schedules(
    configs: dict[str, Config], baseline: Config, total_steps: int, run_dir: Path
) -> dict[str, Any]:
    """The baseline's and each regime's :class:`ScheduleCost` (by name), with each regime's
    FLOPs and peak memory divided by the baseline's."""
    base = schedule_cost(baseline, total_steps, run_dir)
    result: dict[str, Any] = {"baseline": base.to_dict(), "schedules": {}}
    for name, cfg in configs.items():
        cost = schedule_cost(cfg, total_steps, run_dir)
        result["schedules"][name] = {
            **cost.to_dict(),
            "flops_vs_baseline": cost.flops / base.flops,
            "peak_vs_baseline": cost.peak_bytes / base.peak_bytes,
            "mean_peak_vs_baseline": cost.mean_peak_bytes / base.mean_peak_bytes,
        }
    freeze = result["schedules"].get("freeze")
    if freeze is not None:
        result["targets"] = {
            name: check_target(name, freeze[key], SCHEDULE_TARGETS)
            for name, key in (
                ("freeze_vs_e2e_flops", "flops_vs_baseline"),
                ("freeze_vs_e2e_mean_step_peak_memory", "mean_peak_vs_baseline"),
            )
        }
    return result


def format_schedules(result: dict[str, Any]) -> str:
    """A plain-text report of :func:`compare_schedules`' result: the whole schedules, every
    stage's step, and the targets of progressive freezing."""
    base = result["baseline"]
    lines = [
        f"whole schedule of {base['total_steps']} steps vs {base['regime']} "
        "(FLOPs counted, peak memory measured)",
        f"{'regime':<12} {'stages':>6} {'TFLOPs':>10} {'vs base':>8} {'max peak MiB':>13} "
        f"{'vs base':>8} {'mean peak MiB':>14} {'vs base':>8}",
        f"{base['regime']:<12} {len(base['stages']):>6} {base['flops'] / 1e12:>10.3f} "
        f"{1.0:>8.3f} {base['peak_bytes'] / 2**20:>13.1f} {1.0:>8.3f} "
        f"{base['mean_peak_bytes'] / 2**20:>14.1f} {1.0:>8.3f}",
    ]
    for name, s in result["schedules"].items():
        lines.append(
            f"{name:<12} {len(s['stages']):>6} {s['flops'] / 1e12:>10.3f} "
            f"{s['flops_vs_baseline']:>8.3f} {s['peak_bytes'] / 2**20:>13.1f} "
            f"{s['peak_vs_baseline']:>8.3f} {s['mean_peak_bytes'] / 2**20:>14.1f} "
            f"{s['mean_peak_vs_baseline']:>8.3f}"
        )
    ref = base["stages"][0]
    lines += [
        "",
        "one optimizer step per stage (vs base: the baseline's step)",
        f"{'regime':<12} {'stage':>5} {'frozen':>6} {'targets':<18} {'steps':>6} "
        f"{'GFLOPs':>9} {'vs base':>8} {'peak MiB':>9} {'vs base':>8}",
    ]
    for name, s in [(base["regime"], base), *result["schedules"].items()]:
        for st in s["stages"]:
            lines.append(
                f"{name:<12} {st['stage']:>5} {st['frozen']:>6} {','.join(st['targets']):<18} "
                f"{st['steps']:>6} {st['flops_per_step'] / 1e9:>9.3f} "
                f"{st['flops_per_step'] / ref['flops_per_step']:>8.3f} "
                f"{st['peak_bytes'] / 2**20:>9.1f} {st['peak_bytes'] / ref['peak_bytes']:>8.3f}"
            )
    checks = result.get("targets", {})
    if checks:
        lines.append("")
    for name, c in checks.items():
        mark = "met" if c["met"] else "MISSED"
        lines.append(f"{name:<40}{c['value']:>8.3f}  target {c['target']:<8}{mark}")
    return "\n".join(lines)
