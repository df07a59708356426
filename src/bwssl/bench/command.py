"""``bwssl bench``: every (size, objective, regime) run of one invocation, and its command
line."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bwssl.base.files import atomic_write_text
from bwssl.base.hardware import AMP_DTYPES, resolve_amp_dtype, resolve_device
from bwssl.bench.results import (
    REFERENCE_OBJECTIVE,
    format_table,
    machine,
    objective_ratios,
    size_ratios,
)
from bwssl.bench.runners import (
    HF_RUN,
    MEMORY_STEPS,
    Runner,
    RunResult,
    build_runner,
    bwssl_setup,
    hf_available,
    hf_setup,
    time_interleaved,
)
from bwssl.bench.sizes import DEFAULT_SIZES, SIZES, Size
from bwssl.config import Config, ConfigError, load_config
from bwssl.errors import UserError
from bwssl.objectives import OBJECTIVES
from bwssl.regimes import REGIMES


def benchmark(
    sizes: list[str],
    device: str = "auto",
    steps: int = 10,
    warmup: int = 2,
    batch: int | None = None,
    regimes: list[str] | None = None,
    sequential_stages: list[str] | None = None,
    overrides: list[str] | None = None,
    hf: bool = True,
    progress: Callable[[str], None] | None = None,
    objectives: list[str] | None = None,
) -> dict[str, Any]:
    """Run every (size, objective, regime) triple and return the JSON-ready results.

    ``regimes`` are ``REGIME[:KEY=VALUE,...]`` specs; ``sequential`` expands to
    the stages in ``sequential_stages`` (``first``, ``last``, ``all`` or 1-based
    numbers). Each regime runs once per name of ``objectives`` (default: each
    size's own, :attr:`Size.objective`), with ``objective.name`` set; all runs
    of a size are alive at once and timed interleaved. The targets are checked
    on the runs of the size's objective (or the first measured one). The
    transformers reference runs when masked_pixels does on a video ViT.
    """
    if steps < 1 or warmup < 0:
        raise UserError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("bwssl bench measures one process; run it without torchrun")
    dev = resolve_device(device)
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise UserError(f"unknown size(s) {', '.join(unknown)}; allowed: {', '.join(SIZES)}")
    named = list(dict.fromkeys(objectives or []))
    objectives = named or list(dict.fromkeys(SIZES[s].objective for s in sizes))
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise UserError(
            f"--objectives: unknown objective(s) {', '.join(bad)}; allowed: {', '.join(OBJECTIVES)}"
        )
    regimes = regimes or ["e2e", "simultaneous", "sequential"]
    sequential_stages = sequential_stages or ["first", "last"]
    overrides = overrides or []
    for o in [*overrides, *(x for spec in regimes for x in _parse_regime(spec)[1])]:
        if o.partition("=")[0].strip() == "objective.name":
            raise UserError(f"override {o!r}: choose objectives with --objectives instead")
    from bwssl.regimes import is_layerwise

    for spec in regimes:
        name = _parse_regime(spec)[0]
        if name in REGIMES and is_layerwise(name):
            raise UserError(
                f"--regimes: {name} is layer-wise (its stages depend on the run's length); "
                f"measure it with --schedules {name}"
            )
    hf = hf and hf_available()
    say = progress or (lambda _text: None)

    rows: list[RunResult] = []
    configs: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    by_objective: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bwssl-bench-") as tmp:
        for size_name in sizes:
            torch._dynamo.reset()  # compiled graphs of one size must not count against the next
            size = SIZES[size_name]
            b, common = _common(size, dev, batch, overrides)
            measured = named or [size.objective]
            base = _load(  # the size's own objective in E2E: the reference and the figures
                size,
                size_name,
                "e2e",
                [*common, f"objective.name={size.objective}", "regime=e2e"],
            )
            video = base.model.arch == "video_vit"
            runners: list[Runner] = []
            for spec in regimes:
                regime, extra = _parse_regime(spec)
                cfgs = {
                    o: _load(
                        size,
                        size_name,
                        f"{o} {spec}",
                        [*common, f"objective.name={o}", f"regime={regime}", *extra],
                    )
                    for o in measured
                }
                k = cfgs[measured[0]].model.num_blocks
                picks = _stage_indices(sequential_stages, k) if regime == "sequential" else [0]
                for s in picks:
                    label = f"{spec} [stage {s + 1}/{k}]" if regime == "sequential" else spec
                    for o, cfg in cfgs.items():
                        say(f"{size_name}: building {o} {label} (batch {b})")
                        setup = bwssl_setup(cfg, s, Path(tmp))
                        runners.append(build_runner(size_name, o, label, cfg, dev, warmup, setup))
            if hf and video and base.objective.name == REFERENCE_OBJECTIVE in measured:
                from bwssl.train.trainer import Trainer

                autocast = Trainer(base, Path(tmp)).autocast
                say(f"{size_name}: building {HF_RUN} (batch {b})")
                setup = hf_setup(base, dev, autocast)
                runners.append(
                    build_runner(size_name, REFERENCE_OBJECTIVE, HF_RUN, base, dev, warmup, setup)
                )
            say(f"{size_name}: timing {steps} steps of {len(runners)} runs, interleaved")
            time_interleaved(runners, steps, dev)
            size_rows = [r.result for r in runners]
            rows += size_rows
            for r in runners:
                r.step = None  # frees the model before the next size is built
            del runners
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            configs[size_name] = {
                "preset": size.preset,
                "overrides": list(size.overrides),
                "note": size.note,
                "batch": b,
                "objective": base.objective.name,
                **(
                    {
                        "token_grid": list(base.token_grid),
                        "tokens": base.num_tokens,
                        "visible_tokens": _visible(base),
                    }
                    if video
                    else {"image_size": base.data.crop_size}
                ),
                "model": dataclasses.asdict(base.model),
                "precision": _precision(base, dev),
                "projector": list(base.objective.projector),
                "pooling": base.objective.pooling,
            }
            checked = size.objective if size.objective in measured else measured[0]
            ratios[size_name] = size_ratios(size_rows, checked)
            by_objective[size_name] = objective_ratios(size_rows)
    return {
        "machine": machine(dev),
        "settings": {
            "device": str(dev),
            "steps": steps,
            "warmup": warmup,
            "memory_steps": MEMORY_STEPS,
            "objectives": objectives,
            "regimes": regimes,
            "sequential_stages": sequential_stages,
            "overrides": overrides,
            "memory_method": (
                "torch.cuda.max_memory_allocated"
                if dev.type == "cuda"
                else "torch.profiler CPU allocator events"
            ),
        },
        "sizes": configs,
        "runs": [r.to_dict() for r in rows],
        "ratios": ratios,
        "objective_ratios": by_objective,
    }


def _common(
    size: Size, dev: torch.device, batch: int | None, overrides: list[str] | None
) -> tuple[int, list[str]]:
    """A size's batch on ``dev`` and the overrides every run of that size shares."""
    b = batch or (size.gpu_batch if dev.type == "cuda" else size.cpu_batch)
    common = [
        *size.overrides,
        f"train.batch_size={b}",
        "train.accum_steps=1",
        f"train.device={dev}",
        "train.progress=false",
        *(overrides or []),
    ]
    return b, common


def _load(size: Size, size_name: str, what: str, overrides: list[str]) -> Config:
    try:
        return load_config(size.preset, overrides)
    except ConfigError as e:
        raise UserError(f"size {size_name}, run {what!r}: {e}") from e


def _stage_indices(specs: list[str], k: int) -> list[int]:
    out: list[int] = []
    for s in specs:
        if s == "all":
            idx = list(range(k))
        elif s == "first":
            idx = [0]
        elif s == "last":
            idx = [k - 1]
        elif s.isdigit() and 1 <= int(s) <= k:
            idx = [int(s) - 1]
        else:
            raise UserError(
                f"--sequential-stages: {s!r} is not first, last, all or a stage number in 1..{k}"
            )
        out += [i for i in idx if i not in out]
    return out


def _parse_regime(spec: str) -> tuple[str, list[str]]:
    """``simultaneous:mask.decoder_ratio=0.25,model.shared_decoder=true`` -> name, overrides."""
    name, _, rest = spec.partition(":")
    return name, [o for o in rest.split(",") if o]


def _visible(cfg: Config) -> int:
    """Tokens a masked-pixel encoder sees per clip under ``cfg``'s mask."""
    from bwssl.data.masking import make_mask

    gen = torch.Generator().manual_seed(0)
    return int((~make_mask(cfg.mask.kind, 1, cfg.token_grid, cfg.mask.ratio, gen)).sum())


def _precision(cfg: Config, device: torch.device) -> str:
    dtype = resolve_amp_dtype(cfg.train.precision, device)
    return next(name for name, d in AMP_DTYPES.items() if d == dtype)


def benchmark_schedules(
    sizes: list[str],
    schedules: list[str],
    total_steps: int,
    device: str = "auto",
    batch: int | None = None,
    overrides: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per size, the FLOPs and memory of each layer-wise regime's whole schedule of
    ``total_steps`` steps against E2E (:func:`~bwssl.bench.schedule.compare_schedules`)."""
    from bwssl.bench.schedule import compare_schedules
    from bwssl.regimes import REGIMES, is_layerwise

    if total_steps < 2:
        raise UserError(f"--schedule-steps must be >= 2, got {total_steps}")
    bad = [r for r in schedules if r not in REGIMES or not is_layerwise(r)]
    if bad:
        layerwise = [r for r in REGIMES if is_layerwise(r)]
        raise UserError(
            f"--schedules: {', '.join(bad)} is not a layer-wise regime; allowed: "
            f"{', '.join(layerwise)}"
        )
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise UserError(f"unknown size(s) {', '.join(unknown)}; allowed: {', '.join(SIZES)}")
    dev = resolve_device(device)
    say = progress or (lambda _text: None)
    out: dict[str, Any] = {
        "machine": machine(dev),
        "settings": {
            "device": str(dev),
            "schedules": schedules,
            "schedule_steps": total_steps,
            "overrides": overrides or [],
            "flops_method": "torch.utils.flop_counter.FlopCounterMode around one trainer step "
            "(SDPA math kernel)",
            "memory_method": (
                "torch.cuda.max_memory_allocated"
                if dev.type == "cuda"
                else "torch.profiler CPU allocator events"
            ),
        },
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="bwssl-bench-") as tmp:
        for size_name in sizes:
            size = SIZES[size_name]
            b, common = _common(size, dev, batch, overrides)
            base = _load(size, size_name, "e2e", [*common, "regime=e2e"])
            cfgs = {r: _load(size, size_name, r, [*common, f"regime={r}"]) for r in schedules}
            say(f"{size_name}: measuring e2e and {', '.join(schedules)} (batch {b})")
            out["sizes"][size_name] = {
                "preset": size.preset,
                "overrides": list(size.overrides),
                "batch": b,
                "depth": base.model.depth,
                "tokens": base.num_tokens,
                "objective": base.objective.name,
                # only masked pixels hides tokens from the encoder
                "visible_tokens": (
                    _visible(base)
                    if base.objective.name == REFERENCE_OBJECTIVE
                    else base.num_tokens
                ),
                "precision": _precision(base, dev),
                **compare_schedules(cfgs, base, total_steps, Path(tmp)),
            }
    return out


def _cmd_bench(args: argparse.Namespace) -> int:
    dev = resolve_device(args.device)
    sizes = args.sizes or DEFAULT_SIZES["cuda" if dev.type == "cuda" else "cpu"]
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.parallel == "blocks":
        from bwssl.bench.pipeline import benchmark_pipeline, format_pipeline

        result = benchmark_pipeline(
            args.sizes or ["reduced"],
            args.processes,
            args.steps if args.steps is not None else 30,
            args.warmup if args.warmup is not None else 10,
            "cuda" if dev.type == "cuda" else "cpu",
            args.batch,
            args.overrides,
            progress=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True),
        )
        print(format_pipeline(result))
        _write_json(args.json, result)
        return 0
    if args.schedules:
        from bwssl.bench.schedule import format_schedules

        result = benchmark_schedules(
            sizes,
            args.schedules,
            args.schedule_steps,
            str(dev),
            args.batch,
            args.overrides,
            progress=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True),
        )
        for name, r in result["sizes"].items():
            print(f"{name} (batch {r['batch']}):")
            print(format_schedules(r))
        _write_json(args.json, result)
        return 0
    result = benchmark(
        sizes,
        str(dev),
        args.steps if args.steps is not None else 10,
        args.warmup if args.warmup is not None else 2,
        args.batch,
        args.regimes,
        args.sequential_stages,
        args.overrides,
        hf=not args.no_hf,
        progress=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True),
        objectives=args.objectives,
    )
    print(format_table(result))
    _write_json(args.json, result)
    return 0


def _write_json(where: str | None, result: dict[str, Any]) -> None:
    if where is None:
        return
    path = Path(where)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="training-step throughput and peak memory of every objective and regime",
        description="Measure, in one process, clips/s and peak memory of e2e, simultaneous "
        "and sequential training steps of each local objective (and transformers' "
        "VideoMAEForPreTraining when installed) at the paper configurations and reduced "
        "sizes.",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--sizes",
        nargs="+",
        metavar="SIZE",
        help=f"configurations to run (default on cpu: {' '.join(DEFAULT_SIZES['cpu'])}; on "
        f"cuda: {' '.join(DEFAULT_SIZES['cuda'])}); allowed: {', '.join(SIZES)}",
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        metavar="OBJECTIVE",
        help="local objectives, each run in every regime on the same model (default: each "
        "size's own: masked_pixels for the ViT sizes, barlow_twins for the ResNet ones); "
        f"allowed: {', '.join(OBJECTIVES)}",
    )
    p.add_argument("--steps", type=int, help="timed steps per run (median reported; default 10)")
    p.add_argument(
        "--warmup",
        type=int,
        help=f"untimed steps before timing (after the {MEMORY_STEPS} memory steps; default 2)",
    )
    p.add_argument(
        "--batch", type=int, help="clips per step for every size (default: per size and device)"
    )
    p.add_argument(
        "--regimes",
        nargs="+",
        metavar="REGIME[:KEY=VALUE,...]",
        help="runs to measure (default: e2e simultaneous sequential); overrides after a colon "
        "make variants, e.g. simultaneous:mask.decoder_ratio=0.25",
    )
    p.add_argument(
        "--sequential-stages",
        nargs="+",
        metavar="STAGE",
        help="sequential stages to measure: first, last, all or numbers from 1 "
        "(default: first last)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides applied to every run, e.g. train.precision=fp32 or "
        "objective.projector=[2048,2048,2048]",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice, usually one per core)",
    )
    p.add_argument(
        "--schedules",
        nargs="+",
        metavar="REGIME",
        help="instead of step timings: FLOPs and memory of these layer-wise regimes' whole "
        "schedules (freeze, layerlock, latent) against e2e",
    )
    p.add_argument(
        "--schedule-steps",
        type=int,
        default=1000,
        help="length of the schedules of --schedules, in steps (default 1000; FLOPs per "
        "step are measured per stage and multiplied)",
    )
    p.add_argument(
        "--parallel",
        choices=["blocks"],
        help="instead of step timings: block-parallel training (train.parallel=blocks, a "
        "pipeline of --processes torchrun processes, 1 thread or 1 GPU each) against one "
        "process on the same hardware; --sizes default to reduced, --steps to 30, --warmup "
        "to 10",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=2,
        help="pipeline processes of --parallel blocks (default 2)",
    )
    p.add_argument(
        "--no-hf",
        action="store_true",
        help="skip the transformers VideoMAEForPreTraining reference",
    )
    p.set_defaults(func=_cmd_bench)
