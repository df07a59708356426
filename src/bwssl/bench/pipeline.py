"""``bwssl bench --parallel blocks``: block-parallel training against one process, on the
same hardware.

Both runs are real ``bwssl train`` runs of simultaneous training on the embedded
synthetic data (data loading included), one after the other: one process with
``P`` CPU threads (on GPU: one device), and a pipeline of ``P`` processes under
torchrun with one thread each (on GPU: one device each). Throughput is the
clips of the steps after the warm-up over their seconds, from the metrics lines. The
pipeline's efficiency is its measured step rate divided by the rate its
slowest stage alone would allow (1 / that stage's median time computing a
step, waits excluded), from the run's ``pipeline.json``, which also gives
every process's blocks and peak memory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bwssl.base.rundir import read_metrics
from bwssl.bench.results import machine
from bwssl.bench.sizes import SIZES
from bwssl.errors import UserError

EFFICIENCY_GOAL = 0.85
"""Measured throughput / the slowest stage's rate that block-parallel training aims at."""
LOG_EVERY = 5
"""Steps per metrics line of the benchmark runs (one clips/s reading each)."""


def _train(
    launcher: list[str], preset: str, overrides: list[str], out: Path, threads: int
) -> list[float]:
    """One ``bwssl train`` run under ``launcher``; its output is shown when it fails. Returns
    the 1-minute load average before and after it (other work on the machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [*launcher, "-m", "bwssl", "train", preset, *overrides, "--out", str(out)]
    before = os.getloadavg()[0]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(
            f"bench run failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}{done.stdout[-1000:]}"
        )
    return [before, os.getloadavg()[0]]


def _clips_per_s(run: Path, warmup: int, batch: int) -> float:
    """Clips over seconds of every metrics line after the line at or past ``warmup`` steps
    (each line's clips/s covers the steps since the line before)."""
    records = read_metrics(run / "metrics.jsonl")
    start = next(i for i, r in enumerate(records) if r["step"] >= warmup)
    clips = seconds = 0.0
    for before, r in zip(records[start:], records[start + 1 :], strict=False):
        n = batch * (r["step"] - before["step"])
        clips, seconds = clips + n, seconds + n / r["clips_per_s"]
    return clips / seconds


def benchmark_pipeline(
    sizes: list[str],
    processes: int = 2,
    steps: int = 30,
    warmup: int = 10,
    device: str = "cpu",
    batch: int | None = None,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per size: one process with ``processes`` threads against a pipeline of ``processes``
    one-thread processes (``device`` cuda: one GPU against one GPU each), ``steps`` timed
    optimizer steps after ``warmup``. Returns the JSON-ready results."""
    if processes < 2:
        raise UserError(f"--processes must be >= 2, got {processes}")
    if steps < 2 * LOG_EVERY or warmup < 0:
        raise UserError(f"--steps must be >= {2 * LOG_EVERY} and --warmup >= 0")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        raise UserError("torchrun (part of torch) was not found next to this Python")
    if device == "cuda" and torch.cuda.device_count() < processes:
        raise UserError(
            f"--parallel blocks on cuda needs {processes} GPUs, found {torch.cuda.device_count()}"
        )
    say = progress or (lambda _text: None)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bwssl-bench-pipeline-") as tmp:
        for name in sizes:
            if name not in SIZES:
                raise UserError(f"unknown size {name}; allowed: {', '.join(SIZES)}")
            size = SIZES[name]
            b = batch or (size.gpu_batch if device == "cuda" else size.cpu_batch)
            common = [
                *size.overrides,
                "regime=simultaneous",
                f"train.batch_size={b}",
                f"train.device={device}",
                f"train.max_steps={warmup + steps}",
                "train.epochs=1000",
                f"train.log_every={LOG_EVERY}",
                "train.checkpoint_every=100000",
                "train.progress=false",
                "train.tensorboard=false",
                "train.num_workers=0",  # loader processes would take the cores being compared
                f"data.synthetic_train={b * (warmup + steps)}",
                *(overrides or []),
            ]
            one, pipe = Path(tmp) / f"{name}-one", Path(tmp) / f"{name}-pipeline"
            threads = 1 if device == "cuda" else processes
            say(f"{name}: one process, {threads} threads, {warmup + steps} steps")
            load = {"one_process": _train([sys.executable], size.preset, common, one, threads)}
            one_thread = Path(tmp) / f"{name}-one-thread"
            if device == "cpu":
                say(f"{name}: one process, 1 thread (reference)")
                load["one_thread"] = _train([sys.executable], size.preset, common, one_thread, 1)
            say(f"{name}: pipeline of {processes} processes, 1 thread each")
            launcher = [torchrun, "--standalone", f"--nproc_per_node={processes}"]
            load["pipeline"] = _train(
                launcher, size.preset, [*common, "train.parallel=blocks"], pipe, 1
            )
            single = _clips_per_s(one, warmup, b)
            piped = _clips_per_s(pipe, warmup, b)
            layout = json.loads((pipe / "pipeline.json").read_text())
            results[name] = {
                "preset": size.preset,
                "overrides": common,
                "batch": b,
                "one_process_clips_per_s": single,
                "one_process_one_thread_clips_per_s": (
                    _clips_per_s(one_thread, warmup, b) if device == "cpu" else None
                ),
                "pipeline_clips_per_s": piped,
                "speedup": piped / single,
                "efficiency": layout["efficiency"],
                "efficiency_goal": EFFICIENCY_GOAL,
                "efficiency_met": bool(
                    layout["efficiency"] and layout["efficiency"] >= EFFICIENCY_GOAL
                ),
                "pipeline_beats_one_process": piped > single,
                "pipeline": layout,
                "load_average": load,
            }
    return {
        "machine": machine(torch.device(device)),
        "settings": {
            "processes": processes,
            "threads_one_process": 1 if device == "cuda" else processes,
            "steps": steps,
            "warmup": warmup,
            "device": device,
        },
        "sizes": results,
    }


def format_pipeline(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`benchmark_pipeline`."""
    s = result["settings"]
    lines = [
        f"block-parallel vs one process ({s['processes']} processes x 1 thread vs 1 process x "
        f"{s['threads_one_process']} threads, {s['device']})"
    ]
    for name, r in result["sizes"].items():
        eff = r["efficiency"]
        lines.append(
            f"{name} (batch {r['batch']}): one process {r['one_process_clips_per_s']:.2f} "
            f"clips/s (with 1 thread: {r['one_process_one_thread_clips_per_s'] or 0:.2f}), pipeline {r['pipeline_clips_per_s']:.2f} clips/s "
            f"(x{r['speedup']:.2f}, {'met' if r['pipeline_beats_one_process'] else 'MISSED'}); "
            f"efficiency {eff if eff is None else round(eff, 3)} (goal >= "
            f"{r['efficiency_goal']}: {'met' if r['efficiency_met'] else 'MISSED'})"
        )
        loads = ", ".join(f"{k} {a:.1f}-{b:.1f}" for k, (a, b) in r["load_average"].items())
        lines.append(f"  1-minute load average before-after each run: {loads}")
        for rank in r["pipeline"]["ranks"]:
            lines.append(
                f"  rank {rank['rank']} (stage {rank['stage'] + 1}, blocks "
                f"{[k + 1 for k in rank['blocks']]}): busy {rank['busy_ms_median']:.1f} ms/step, "
                f"step every {rank['interval_ms_median']:.1f} ms, peak "
                f"{rank['peak_bytes'] / 2**20:.0f} MiB ({rank['peak_kind']}), training state "
                f"{rank['state_bytes'] / 2**20:.1f} MiB"
            )
    return "\n".join(lines)
