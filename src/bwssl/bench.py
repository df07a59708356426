"""``bwssl bench``: training-step throughput and peak memory of every regime, side by side.

Every run drives the trainer's own step (:meth:`Trainer.units` builds the
optimizer units, :meth:`Trainer.step` does one optimizer step) on a synthetic
batch, so the numbers are those of real training minus data loading. All runs
of one invocation share one process, one device and one set of settings:

- e2e, simultaneous, and chosen stages of sequential (by default the first,
  which trains block 1 alone, and the last, which runs blocks 1..K-1 frozen
  under ``no_grad`` and trains block K);
- when transformers is installed, the same configuration in
  ``transformers.VideoMAEForPreTraining`` (same token grid, tube mask, decoder
  and normalized-pixel loss, SDPA attention, AdamW, same autocast) as the
  reference.

Timing: ``--warmup`` untimed steps, then the median wall time of ``--steps``
steps (synchronized on GPU). Throughput is clips per second of that median.

Peak memory (:class:`PeakMemory`) covers building the model and optimizer,
the batch and two optimizer steps (the first creates AdamW's state), counted
from what was live before, so a run's peak is params + grads + optimizer state
+ batch + the largest activation footprint. On GPU it is CUDA's
``max_memory_allocated``. On CPU it is the running sum of the CPU allocator's
own allocation and free events as ``torch.profiler`` reports them
(``profile_memory=True``): every tensor, kernel workspace and autograd buffer
that goes through c10's CPU allocator is seen, and nothing else. The process
RSS is not used: it also counts the Python heap, libraries and freed memory
that malloc keeps. A ``TorchDispatchMode`` that tracks op outputs was not used
either: it misses buffers that kernels allocate internally and needs weak
references to learn when a storage dies. The profiler slows the steps it
watches, so they are never among the timed steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from bwssl.config import Config, ConfigError, load_config
from bwssl.errors import UserError

MEMORY_STEPS = 2
"""Optimizer steps inside the memory window (the first one creates AdamW's state)."""

TARGETS = {
    "e2e_vs_hf_throughput": (">=", 1.25),
    "simultaneous_vs_e2e_peak_memory": ("<=", 1.1),
    "simultaneous_vs_e2e_step_time": ("<=", 1.8),
}
"""Issue 6's targets: E2E at least 1.25x transformers' VideoMAE; simultaneous K=4 at most
1.1x E2E's peak memory and 1.8x its step time."""


@dataclass(frozen=True)
class Size:
    """A benchmark configuration: a preset plus overrides, and its default batch per device."""

    preset: str
    overrides: tuple[str, ...] = ()
    cpu_batch: int = 2
    gpu_batch: int = 32
    note: str = ""


SIZES: dict[str, Size] = {
    "tiny-debug": Size("tiny-debug", (), 2, 8, "the test preset: width 32, depth 4, K=2"),
    "reduced": Size("deit-tiny", ("data.num_frames=8", "data.crop_size=64",
                                  "model.tubelet_size=2", "model.patch_size=8"), 4, 64,
                    "DeiT-Tiny (width 192, depth 12, K=4) on 8x64x64 clips, tubelet 2x8x8"),
    "deit-tiny": Size("deit-tiny", (), 2, 32, "paper text grid: 16x128x128, tubelet 8x16x16"),
    "deit-tiny-t2p8": Size("deit-tiny-t2p8", (), 1, 32,
                           "released-code grid: 16x128x128, tubelet 2x8x8"),
    "deit-small": Size("deit-small", (), 2, 32, "DeiT-Small, tubelet 8x16x16"),
    "deit-small-t2p8": Size("deit-small-t2p8", (), 1, 32, "DeiT-Small, tubelet 2x8x8"),
}
DEFAULT_SIZES = {"cpu": ["reduced", "deit-tiny", "deit-tiny-t2p8"],
                 "cuda": ["reduced", "deit-tiny", "deit-tiny-t2p8", "deit-small",
                          "deit-small-t2p8"]}
HF_RUN = "transformers-videomae"


# --- peak memory ---------------------------------------------------------------------------

class PeakMemory:
    """Peak bytes torch allocates on ``device`` inside the ``with`` block, above the entry level.

    After the block, ``peak`` is the highest live total reached and ``retained``
    what is still live at exit, both relative to entry. See the module docstring
    for how each device is measured.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self.retained = 0
        self.events = 0
        self._floor = 0
        self._prof: torch.profiler.profile | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._floor = torch.cuda.memory_allocated(self.device)
        else:
            self._prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
            self._prof.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._floor
            self.retained = torch.cuda.memory_allocated(self.device) - self._floor
            return
        assert self._prof is not None
        self._prof.__exit__(kind, exc, tb)
        if kind is not None:
            return
        # Allocation events carry +bytes, frees -bytes; their running sum is the live total.
        cpu = torch.autograd.DeviceType.CPU
        deltas = sorted((e.start_ns(), e.nbytes())
                        for e in self._prof.profiler.kineto_results.events()
                        if e.name() == "[memory]" and e.device_type() == cpu)
        live = peak = 0
        for _, nbytes in deltas:
            live += nbytes
            peak = max(peak, live)
        self.peak, self.retained, self.events = peak, live, len(deltas)
        self._prof = None


# --- one run -------------------------------------------------------------------------------

@dataclass
class SyntheticBatch:
    """What :meth:`Trainer.step` reads from a data-loader batch."""

    video: torch.Tensor
    """(B, C, T, H, W) normalized clips."""
    label: torch.Tensor
    skipped: int = 0


@dataclass
class RunResult:
    size: str
    run: str
    batch: int
    step_s: list[float]
    peak_bytes: int
    state_bytes: int
    params_total: int
    params_trained: int
    memory_events: int
    vs_e2e: dict[str, float] = field(default_factory=dict)
    """This run's step time, peak memory and throughput divided by plain e2e's."""
    throughput_vs_hf: float | None = None
    """This run's clips/s divided by transformers' VideoMAE's."""

    @property
    def step_median_s(self) -> float:
        return statistics.median(self.step_s)

    @property
    def clips_per_s(self) -> float:
        return self.batch / self.step_median_s

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "run": self.run, "batch": self.batch,
                "step_ms_median": 1e3 * self.step_median_s,
                "step_ms_min": 1e3 * min(self.step_s),
                "step_ms": [1e3 * s for s in self.step_s],
                "clips_per_s": self.clips_per_s, "peak_bytes": self.peak_bytes,
                "peak_mib": self.peak_bytes / 2**20, "state_bytes": self.state_bytes,
                "params_total": self.params_total, "params_trained": self.params_trained,
                "memory_events": self.memory_events, "vs_e2e": self.vs_e2e,
                "throughput_vs_hf": self.throughput_vs_hf}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic_batch(cfg: Config, device: torch.device) -> SyntheticBatch:
    d = cfg.data
    gen = torch.Generator().manual_seed(cfg.seed)
    video = torch.randn(cfg.train.batch_size, d.channels, d.num_frames, d.crop_size,
                        d.crop_size, generator=gen)
    return SyntheticBatch(video.to(device), torch.zeros(video.shape[0], dtype=torch.long))


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


def _prepare(size: str, run: str, cfg: Config, device: torch.device, warmup: int,
             setup: Setup) -> Runner:
    """Build inside a memory window, take MEMORY_STEPS steps there, then ``warmup`` more."""
    with PeakMemory(device) as mem:
        step, total, trained = setup()
        for i in range(MEMORY_STEPS):
            step(i)
    runner = Runner(RunResult(size, run, cfg.train.batch_size, [], mem.peak, mem.retained,
                              total, trained, mem.events), step, MEMORY_STEPS)
    for _ in range(warmup):
        runner.take_step()
    return runner


def _time_interleaved(runners: list[Runner], steps: int, device: torch.device) -> None:
    """Time ``steps`` steps of every run, one step of each in turn (rotating who goes first).

    Interleaving spreads slow phases of a shared machine and allocator warm-up over all
    runs alike, so the ratios between runs are not biased by their order.
    """
    _sync(device)
    for i in range(steps):
        for j in range(len(runners)):
            r = runners[(i + j) % len(runners)]
            t0 = time.perf_counter()
            r.take_step()
            _sync(device)
            r.result.step_s.append(time.perf_counter() - t0)


def _bwssl_setup(cfg: Config, stage_index: int, run_dir: Path) -> Setup:
    from bwssl.models.blockwise import build_model
    from bwssl.train.trainer import Position, Trainer

    def setup() -> tuple[Callable[[int], None], int, int]:
        trainer = Trainer(cfg, run_dir)
        stage = trainer.stages[stage_index]
        torch.manual_seed(cfg.seed)
        model = build_model(cfg).to(trainer.device)
        units = trainer.prepare_stage(model, stage)
        batch = _synthetic_batch(cfg, trainer.device)

        def step(i: int) -> None:
            pos = Position(stage=stage.index, step=i, global_step=i)
            trainer.step(model, stage, units, batch, pos, cfg.train.lr)  # type: ignore[arg-type]

        total = sum(p.numel() for p in model.parameters())
        trained = sum(p.numel() for u in units for p in u.params)
        return step, total, trained

    return setup


def _hf_setup(cfg: Config, device: torch.device, autocast: Callable[[], Any]) -> Setup:
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from bwssl.base.hardware import adamw
    from bwssl.data.masking import make_mask
    from bwssl.objectives.base import StepKey
    from bwssl.objectives.masked_pixels import MASK_STREAM
    from bwssl.train.trainer import param_groups

    m, d, tc = cfg.model, cfg.data, cfg.train

    def setup() -> tuple[Callable[[int], None], int, int]:
        hf_cfg = VideoMAEConfig(
            image_size=d.crop_size, patch_size=m.patch_size, num_channels=d.channels,
            num_frames=d.num_frames, tubelet_size=m.tubelet_size, hidden_size=m.embed_dim,
            num_hidden_layers=m.depth, num_attention_heads=m.num_heads,
            intermediate_size=int(m.embed_dim * m.mlp_ratio), hidden_act="gelu",
            layer_norm_eps=1e-6, use_mean_pooling=False, decoder_hidden_size=m.decoder_dim,
            decoder_num_hidden_layers=m.decoder_depth, decoder_num_attention_heads=m.decoder_heads,
            decoder_intermediate_size=int(m.decoder_dim * m.mlp_ratio),
            norm_pix_loss=cfg.loss.target == "norm_pixels", attn_implementation="sdpa")
        torch.manual_seed(cfg.seed)
        model = VideoMAEForPreTraining(hf_cfg).to(device).train()
        params = list(model.parameters())
        # transformers.Trainer's default optimizer is "adamw_torch_fused" (torch >= 2.8).
        opt = adamw(param_groups(model, params, tc.weight_decay), tc.lr,
                    (tc.betas[0], tc.betas[1]))
        video = _synthetic_batch(cfg, device).video.transpose(1, 2)  # (B, T, C, H, W)
        grid = cfg.token_grid

        def step(i: int) -> None:
            key = StepKey(cfg.seed, 0, i, video.shape[0])
            mask = make_mask(cfg.mask.kind, video.shape[0], grid, cfg.mask.ratio,
                             key.generator(MASK_STREAM))
            with autocast():
                loss = model(video, bool_masked_pos=mask.to(device)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # the bwssl step also reads its losses back

        total = sum(p.numel() for p in params)
        return step, total, total

    return setup


# --- the whole benchmark -------------------------------------------------------------------

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
            raise UserError(f"--sequential-stages: {s!r} is not first, last, all or a stage "
                            f"number in 1..{k}")
        out += [i for i in idx if i not in out]
    return out


def _parse_regime(spec: str) -> tuple[str, list[str]]:
    """``simultaneous:mask.decoder_ratio=0.25,model.shared_decoder=true`` -> name, overrides."""
    name, _, rest = spec.partition(":")
    return name, [o for o in rest.split(",") if o]


def _hf_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


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
        "device": str(device), "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "git_commit": git_commit()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    with contextlib.suppress(ImportError):
        import transformers
        info["transformers"] = transformers.__version__
    return info


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _check(name: str, value: float) -> dict[str, Any]:
    op, target = TARGETS[name]
    met = value >= target if op == ">=" else value <= target
    return {"value": value, "target": f"{op} {target}", "met": bool(met)}


def benchmark(sizes: list[str], device: str = "auto", steps: int = 10, warmup: int = 2,
              batch: int | None = None, regimes: list[str] | None = None,
              sequential_stages: list[str] | None = None, overrides: list[str] | None = None,
              hf: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every (size, regime) pair and return the JSON-ready results.

    ``regimes`` are ``REGIME[:KEY=VALUE,...]`` specs; ``sequential`` expands to
    the stages in ``sequential_stages`` (``first``, ``last``, ``all`` or 1-based numbers).
    """
    if steps < 1 or warmup < 0:
        raise UserError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("bwssl bench measures one process; run it without torchrun")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device cpu")
    dev = torch.device(device)
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise UserError(f"unknown size(s) {', '.join(unknown)}; allowed: {', '.join(SIZES)}")
    regimes = regimes or ["e2e", "simultaneous", "sequential"]
    sequential_stages = sequential_stages or ["first", "last"]
    hf = hf and _hf_available()
    say = progress or (lambda _text: None)

    rows: list[RunResult] = []
    configs: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bwssl-bench-") as tmp:
        for size_name in sizes:
            torch._dynamo.reset()  # compiled graphs of one size must not count against the next
            size = SIZES[size_name]
            b = batch or (size.gpu_batch if dev.type == "cuda" else size.cpu_batch)
            common = [*size.overrides, f"train.batch_size={b}", "train.accum_steps=1",
                      f"train.device={device}", "train.progress=false", *(overrides or [])]
            runners: list[Runner] = []
            base: Config | None = None
            for spec in regimes:
                regime, extra = _parse_regime(spec)
                try:
                    cfg = load_config(size.preset, [*common, f"regime={regime}", *extra])
                except ConfigError as e:
                    raise UserError(f"size {size_name}, run {spec!r}: {e}") from e
                if base is None:
                    base = load_config(size.preset, [*common, "regime=e2e"])
                k = cfg.model.num_blocks
                picks = (_stage_indices(sequential_stages, k) if regime == "sequential"
                         else [0])
                for s in picks:
                    label = f"{spec} [stage {s + 1}/{k}]" if regime == "sequential" else spec
                    say(f"{size_name}: building {label} (batch {b})")
                    runners.append(_prepare(size_name, label, cfg, dev, warmup,
                                            _bwssl_setup(cfg, s, Path(tmp))))
            assert base is not None
            if hf:
                from bwssl.train.trainer import Trainer
                autocast = Trainer(base, Path(tmp)).autocast
                say(f"{size_name}: building {HF_RUN} (batch {b})")
                runners.append(_prepare(size_name, HF_RUN, base, dev, warmup,
                                        _hf_setup(base, dev, autocast)))
            say(f"{size_name}: timing {steps} steps of {len(runners)} runs, interleaved")
            _time_interleaved(runners, steps, dev)
            size_rows = [r.result for r in runners]
            rows += size_rows
            for r in runners:
                r.step = None  # frees the model before the next size is built
            del runners
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            configs[size_name] = {
                "preset": size.preset, "overrides": list(size.overrides), "note": size.note,
                "batch": b, "token_grid": list(base.token_grid), "tokens": base.num_tokens,
                "visible_tokens": _visible(base), "model": dataclasses.asdict(base.model),
                "precision": _precision(base, dev)}
            ratios[size_name] = _size_ratios(size_rows)
    return {"machine": machine(dev),
            "settings": {"device": device, "steps": steps, "warmup": warmup,
                         "memory_steps": MEMORY_STEPS, "regimes": regimes,
                         "sequential_stages": sequential_stages, "overrides": overrides or [],
                         "memory_method": ("torch.cuda.max_memory_allocated" if dev.type == "cuda"
                                           else "torch.profiler CPU allocator events")},
            "sizes": configs, "runs": [r.to_dict() for r in rows], "ratios": ratios}


def _visible(cfg: Config) -> int:
    from bwssl.data.masking import make_mask

    gen = torch.Generator().manual_seed(0)
    return int((~make_mask(cfg.mask.kind, 1, cfg.token_grid, cfg.mask.ratio, gen)).sum())


def _precision(cfg: Config, device: torch.device) -> str:
    p = cfg.train.precision
    return ("bf16" if device.type == "cuda" else "fp32") if p == "auto" else p


def _size_ratios(rows: list[RunResult]) -> dict[str, Any]:
    """Fill each run's ratios to E2E and compute the issue's three targets."""
    by_run = {r.run: r for r in rows}
    e2e, hf = by_run.get("e2e"), by_run.get(HF_RUN)
    out: dict[str, Any] = {}
    if hf is not None:
        for r in rows:
            r.throughput_vs_hf = _ratio(r.clips_per_s, hf.clips_per_s)
    if e2e is None:
        return out
    for r in rows:
        r.vs_e2e = {"step_time": _ratio(r.step_median_s, e2e.step_median_s),
                    "peak_memory": _ratio(r.peak_bytes, e2e.peak_bytes),
                    "throughput": _ratio(r.clips_per_s, e2e.clips_per_s)}
    if hf is not None:
        out["e2e_vs_hf_throughput"] = _check(
            "e2e_vs_hf_throughput", _ratio(e2e.clips_per_s, hf.clips_per_s))
    sim = by_run.get("simultaneous")
    if sim is not None:
        out["simultaneous_vs_e2e_peak_memory"] = _check(
            "simultaneous_vs_e2e_peak_memory", sim.vs_e2e["peak_memory"])
        out["simultaneous_vs_e2e_step_time"] = _check(
            "simultaneous_vs_e2e_step_time", sim.vs_e2e["step_time"])
    return out


# --- output --------------------------------------------------------------------------------

def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`benchmark`'s result."""
    mc, st = result["machine"], result["settings"]
    where = mc.get("gpu") or f"{mc['cpu']}, {mc['torch_threads']} threads"
    lines = [f"bwssl bench on {st['device']} ({where}), torch {mc['torch']}; median of "
             f"{st['steps']} steps after {st['warmup']} warmup; peak memory: "
             f"{st['memory_method']}", ""]
    head = (f"{'size':<16}{'run':<40}{'batch':>6}{'step ms':>10}{'clips/s':>10}"
            f"{'peak MiB':>10}{'state MiB':>10}{'x e2e time':>11}{'x e2e mem':>10}"
            f"{'x HF clips/s':>13}")
    lines += [head, "-" * len(head)]
    last = None
    for r in result["runs"]:
        size = r["size"] if r["size"] != last else ""
        last = r["size"]
        vs = r["vs_e2e"]
        lines.append(f"{size:<16}{r['run']:<40}{r['batch']:>6}{r['step_ms_median']:>10.1f}"
                     f"{r['clips_per_s']:>10.2f}{r['peak_mib']:>10.1f}"
                     f"{r['state_bytes'] / 2**20:>10.1f}{_num(vs.get('step_time')):>11}"
                     f"{_num(vs.get('peak_memory')):>10}{_num(r['throughput_vs_hf']):>13}")
    lines.append("")
    for size, checks in result["ratios"].items():
        for name, c in checks.items():
            mark = "met" if c["met"] else "MISSED"
            lines.append(f"{size:<16}{name:<40}{c['value']:>8.2f}  target {c['target']:<8}"
                         f"{mark}")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cmd_bench(args: argparse.Namespace) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = args.sizes or DEFAULT_SIZES["cuda" if device == "cuda" else "cpu"]
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    result = benchmark(sizes, device, args.steps, args.warmup, args.batch, args.regimes,
                       args.sequential_stages, args.overrides, hf=not args.no_hf,
                       progress=lambda text: print(f"bench: {text}", file=sys.stderr,
                                                   flush=True))
    print(format_table(result))
    if args.json is not None:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="training-step throughput and peak memory of every regime",
        description="Measure, in one process, clips/s and peak memory of e2e, simultaneous "
                    "and sequential training steps (and transformers' VideoMAEForPreTraining "
                    "when installed) at the paper configurations and reduced sizes.")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--sizes", nargs="+", metavar="SIZE",
                   help=f"configurations to run (default on cpu: {' '.join(DEFAULT_SIZES['cpu'])};"
                        f" on cuda: {' '.join(DEFAULT_SIZES['cuda'])}); allowed: "
                        f"{', '.join(SIZES)}")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (median reported)")
    p.add_argument("--warmup", type=int, default=2,
                   help=f"untimed steps before timing (after the {MEMORY_STEPS} memory steps)")
    p.add_argument("--batch", type=int, help="clips per step for every size (default: per size "
                   "and device)")
    p.add_argument("--regimes", nargs="+", metavar="REGIME[:KEY=VALUE,...]",
                   help="runs to measure (default: e2e simultaneous sequential); overrides "
                        "after a colon make variants, e.g. simultaneous:mask.decoder_ratio=0.25")
    p.add_argument("--sequential-stages", nargs="+", metavar="STAGE",
                   help="sequential stages to measure: first, last, all or numbers from 1 "
                        "(default: first last)")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides applied to every run, e.g. train.precision=fp32")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: torch's choice, usually one per core)")
    p.add_argument("--no-hf", action="store_true",
                   help="skip the transformers VideoMAEForPreTraining reference")
    p.set_defaults(func=_cmd_bench)
