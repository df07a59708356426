"""What a benchmark reports: ratios between runs measured side by side, the targets, the
machine, and the human-readable table."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bwssl.bench.runners import HF_RUN, RunResult

REFERENCE_OBJECTIVE = "masked_pixels"
"""The objective every other one is compared with, run by run."""

TARGETS = {
    "e2e_vs_hf_throughput": (">=", 1.25),
    "simultaneous_vs_e2e_peak_memory": ("<=", 1.1),
    "simultaneous_vs_e2e_step_time": ("<=", 1.8),
}
"""The targets: E2E at least 1.25x transformers' VideoMAE's clips/s (masked pixels only);
simultaneous K=4 at most 1.1x E2E's peak memory and 1.8x its step time (checked on the
size's objective: masked pixels for the ViT sizes, Barlow Twins for the ResNet ones)."""


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _ratios(r: RunResult, ref: RunResult) -> dict[str, float]:
    return {
        "step_time": _ratio(r.step_median_s, ref.step_median_s),
        "peak_memory": _ratio(r.peak_bytes, ref.peak_bytes),
        "throughput": _ratio(r.clips_per_s, ref.clips_per_s),
    }


def check_target(
    name: str, value: float, targets: Mapping[str, tuple[str, float]] = TARGETS
) -> dict[str, Any]:
    """``value`` against the target ``targets[name]`` (an operator and a bound): the value,
    the target as text and whether it is met."""
    op, target = targets[name]
    met = value >= target if op == ">=" else value <= target
    return {"value": value, "target": f"{op} {target}", "met": bool(met)}


def size_ratios(rows: list[RunResult], checked: str = REFERENCE_OBJECTIVE) -> dict[str, Any]:
    """Fill the ratios of one size's runs (``vs_e2e`` within each objective,
    ``throughput_vs_hf`` for masked-pixel runs) and return the targets, checked on the runs
    of objective ``checked`` (the transformers one only when that is masked pixels)."""
    hf = next((r for r in rows if r.run == HF_RUN), None)
    for objective in dict.fromkeys(r.objective for r in rows):
        own = [r for r in rows if r.objective == objective and r.run != HF_RUN]
        e2e = next((r for r in own if r.run == "e2e"), None)
        if e2e is not None:
            for r in own:
                r.vs_e2e = _ratios(r, e2e)
    if hf is not None:
        for r in rows:
            if r.objective == REFERENCE_OBJECTIVE:
                r.throughput_vs_hf = _ratio(r.clips_per_s, hf.clips_per_s)
    by_run = {r.run: r for r in rows if r.objective == checked and r.run != HF_RUN}
    e2e = by_run.get("e2e")
    out: dict[str, Any] = {}
    if e2e is None:
        return out
    if hf is not None and checked == REFERENCE_OBJECTIVE:
        hf.vs_e2e = _ratios(hf, e2e)
        out["e2e_vs_hf_throughput"] = check_target(
            "e2e_vs_hf_throughput", _ratio(e2e.clips_per_s, hf.clips_per_s)
        )
    sim = by_run.get("simultaneous")
    if sim is not None:
        out["simultaneous_vs_e2e_peak_memory"] = check_target(
            "simultaneous_vs_e2e_peak_memory", sim.vs_e2e["peak_memory"]
        )
        out["simultaneous_vs_e2e_step_time"] = check_target(
            "simultaneous_vs_e2e_step_time", sim.vs_e2e["step_time"]
        )
    return out


def objective_ratios(rows: list[RunResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Fill every bwssl run's ``vs_masked_pixels`` (against the masked-pixel run of the same
    name) and return them as ``{objective: {run: ratios}}`` for the other objectives."""
    ref = {r.run: r for r in rows if r.objective == REFERENCE_OBJECTIVE and r.run != HF_RUN}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        if r.run == HF_RUN or r.run not in ref:
            continue
        r.vs_masked_pixels = _ratios(r, ref[r.run])
        if r.objective != REFERENCE_OBJECTIVE:
            out.setdefault(r.objective, {})[r.run] = r.vs_masked_pixels
    return out


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    from bwssl.base.rundir import git_commit

    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
    return info


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`bwssl.bench.benchmark`'s result. The ``x mp``
    columns (ratios to masked_pixels in the same run) appear when several objectives ran."""
    mc, st = result["machine"], result["settings"]
    where = mc.get("gpu") or f"{mc['cpu']}, {mc['torch_threads']} threads"
    lines = [
        f"bwssl bench on {st['device']} ({where}), torch {mc['torch']}; median of "
        f"{st['steps']} steps after {st['warmup']} warmup; peak memory: "
        f"{st['memory_method']}",
        "",
    ]
    several = len(st.get("objectives", [REFERENCE_OBJECTIVE])) > 1
    head = (
        f"{'size':<16}{'objective':<15}{'run':<40}{'batch':>6}{'step ms':>10}{'clips/s':>10}"
        f"{'peak MiB':>10}{'state MiB':>10}{'x e2e time':>11}{'x e2e mem':>10}"
        + (f"{'x mp time':>10}{'x mp mem':>9}" if several else "")
        + f"{'x HF clips/s':>13}"
    )
    lines += [head, "-" * len(head)]
    last = None
    for r in result["runs"]:
        size = r["size"] if r["size"] != last else ""
        last = r["size"]
        vs, mp = r["vs_e2e"], r.get("vs_masked_pixels", {})
        lines.append(
            f"{size:<16}{r.get('objective', ''):<15}{r['run']:<40}{r['batch']:>6}"
            f"{r['step_ms_median']:>10.1f}{r['clips_per_s']:>10.2f}{r['peak_mib']:>10.1f}"
            f"{r['state_bytes'] / 2**20:>10.1f}{_num(vs.get('step_time')):>11}"
            f"{_num(vs.get('peak_memory')):>10}"
            + (
                f"{_num(mp.get('step_time')):>10}{_num(mp.get('peak_memory')):>9}"
                if several
                else ""
            )
            + f"{_num(r['throughput_vs_hf']):>13}"
        )
    lines.append("")
    for size, checks in result["ratios"].items():
        for name, c in checks.items():
            mark = "met" if c["met"] else "MISSED"
            lines.append(f"{size:<16}{name:<40}{c['value']:>8.2f}  target {c['target']:<8}{mark}")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
