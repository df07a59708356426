"""The main job, ``bwssl run``: train every regime, analyze every run, write a report.

An experiment is a grid (objectives x regimes x variants x K x seeds) over one training
config. Each
cell is an ordinary run directory under ``OUT/runs/``, trained by the one
training loop, so rerunning the command skips finished runs and resumes an
interrupted one; the analysis caches per run as well.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import yaml

from bwssl.config import (
    Config,
    ConfigError,
    apply_overrides,
    coerce,
    from_dict,
    load_raw,
)
from bwssl.run_sizes import estimated_steps, exact_size, freezing_steps, train_clips


@dataclass
class ExperimentConfig:
    """A grid of runs over one training config, and how to analyze them."""

    train: str = "demo"
    """Training preset or YAML file every run starts from."""
    overrides: list[str] = field(default_factory=list)
    """Dotted overrides applied to every run (e.g. data.root=/data/UCF101)."""
    regimes: list[str] = field(default_factory=lambda: ["e2e", "simultaneous", "sequential"])
    """Regimes of the grid (names of bwssl.regimes.REGIMES)."""
    objectives: list[str] = field(default_factory=lambda: ["masked_pixels"])
    """Local objectives of the grid (names of bwssl.objectives.OBJECTIVES); runs of any
    objective but masked_pixels are named OBJECTIVE-REGIME-kK-sSEED. The untrained reference
    is the same encoder for every objective: it is analysed once, with the first."""
    objective_overrides: dict[str, list[str]] = field(default_factory=dict)
    """Dotted overrides for the runs of one objective, applied after ``overrides``, e.g.
    ``{barlow_twins: [train.lr=1.0e-3]}``: objectives differ in what a step costs and in the
    learning rate they train well at."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Named run-level variants: each name adds, beside the plain runs, the trained runs of
    the grid with these dotted overrides (applied last), named
    ``OBJECTIVE-REGIME-NAME-kK-sSEED``, e.g. ``{noise: [noise.std=0.25]}`` gives
    ``simultaneous-noise-k4-s0``. The untrained reference has no variants. Names are lower
    case letters, digits and underscores."""
    num_blocks: list[int] = field(default_factory=lambda: [4])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    analysis: list[str] = field(default_factory=list)
    """Dotted overrides of the analysis options (see bwssl.analysis.suite)."""
    paper_model: str = "tiny"
    """Which of the paper's models (tiny, small) the report compares against."""
    requires_data_root: bool = False
    """Refuse to start without data.root (the paper presets need UCF101)."""

    def __post_init__(self) -> None:
        from bwssl.objectives.registry import OBJECTIVES
        from bwssl.regimes import REGIMES

        for key, names, registry in (
            ("regimes", self.regimes, REGIMES),
            ("objectives", self.objectives, OBJECTIVES),
        ):
            if not names:
                raise ConfigError(f"config key '{key}': give at least one")
            unknown = [n for n in names if n not in registry]
            if unknown:
                raise ConfigError(
                    f"config key '{key}': unknown {unknown}; allowed: {', '.join(registry)}"
                )
        unknown = [n for n in self.objective_overrides if n not in OBJECTIVES]
        if unknown:
            raise ConfigError(
                f"config key 'objective_overrides': unknown objectives {unknown}; allowed: "
                f"{', '.join(OBJECTIVES)}"
            )
        bad = [n for n in self.variants if not re.fullmatch(r"[a-z0-9_]+", n)]
        if bad:
            raise ConfigError(
                f"config key 'variants': names {bad} must be lower case letters, digits and "
                "underscores (they become part of run names)"
            )
        if not self.seeds or not self.num_blocks:
            raise ConfigError("config keys 'seeds' and 'num_blocks' must not be empty")
        if self.paper_model not in ("tiny", "small"):
            raise ConfigError(
                f"config key 'paper_model': allowed: tiny, small; got {self.paper_model!r}"
            )


@dataclass(frozen=True)
class PlannedRun:
    name: str
    config: Config
    source: str | None = None
    """An E2E run of the grid that differs only in K: this run is re-cut from it, not trained
    (E2E training does not depend on K; see :func:`bwssl.train.trainer.derive_e2e_run`)."""


def experiment_names() -> list[str]:
    files = resources.files("bwssl").joinpath("configs", "experiments").iterdir()
    return sorted(p.name[:-5] for p in files if p.name.endswith(".yaml"))


def load_experiment(name_or_path: str, overrides: list[str]) -> ExperimentConfig:
    """An experiment preset (or YAML file) with ``key=value`` overrides.

    Keys of the experiment itself (``seeds=[0]``, ``num_blocks=[4,6]``,
    ``objective_overrides.barlow_twins=[train.lr=1e-3]``) set the grid; any other
    dotted key (``train.epochs=3``, ``data.root=...``) is passed to every run.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"experiment file {name_or_path!r} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
    else:
        res = resources.files("bwssl").joinpath("configs", "experiments", f"{name_or_path}.yaml")
        if not res.is_file():
            raise ConfigError(
                f"unknown experiment preset {name_or_path!r}; presets: "
                f"{', '.join(experiment_names())}"
            )
        raw = yaml.safe_load(res.read_text()) or {}
    own = {f for f in ExperimentConfig.__dataclass_fields__}
    grid_overrides = [
        o
        for o in overrides
        if (key := o.split("=", 1)[0]) in own
        or key.startswith(("objective_overrides.", "variants."))
    ]
    run_overrides = [o for o in overrides if o not in grid_overrides]
    raw = apply_overrides(raw, grid_overrides)
    raw["overrides"] = list(raw.get("overrides", [])) + run_overrides
    per_objective = _override_lists(
        "objective_overrides", raw.pop("objective_overrides", None), "barlow_twins: [train.lr=1e-3]"
    )
    variants = _override_lists("variants", raw.pop("variants", None), "noise: [noise.std=0.25]")
    return replace(
        coerce(ExperimentConfig, raw), objective_overrides=per_objective, variants=variants
    )


def _override_lists(key: str, value: object, example: str) -> dict[str, list[str]]:
    """A mapping from names to lists of overrides (``objective_overrides``, ``variants``),
    checked (the generic coercion has no mappings)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(o, str) for o in v) for v in value.values()
    ):
        raise ConfigError(
            f"config key '{key}': expected a mapping from a name to a list of KEY=VALUE "
            f"strings, e.g. {{{example}}}; got {value!r}"
        )
    return {str(k): list(v) for k, v in value.items()}


def plan(exp: ExperimentConfig, dry_run: bool = False) -> list[PlannedRun]:
    """Every run of the grid, validated before anything trains."""
    from bwssl.train.trainer import same_but_blocks

    base = load_raw(exp.train)
    runs = []
    variants = {"": [], **exp.variants}
    cells = [
        (objective, k, regime, variant)
        for objective in exp.objectives
        for k in exp.num_blocks
        for regime in exp.regimes
        for variant in variants
        if not (regime == "untrained" and (objective != exp.objectives[0] or variant))
    ]
    for objective, k, regime, variant in cells:
        prefix = "" if objective == "masked_pixels" else f"{objective}-"
        infix = f"{variant}-" if variant else ""
        for seed in exp.seeds:
            overrides = [
                *exp.overrides,
                *exp.objective_overrides.get(objective, []),
                f"regime={regime}",
                f"seed={seed}",
                f"model.num_blocks={k}",
                f"objective.name={objective}",
                *variants[variant],
            ]
            cfg = from_dict(apply_overrides(base, overrides))
            source = None
            if regime == "e2e":
                source = next(
                    (
                        r.name
                        for r in runs
                        if r.source is None
                        and r.config.regime == "e2e"
                        and same_but_blocks(r.config, cfg)
                    ),
                    None,
                )
            runs.append(PlannedRun(f"{prefix}{regime}-{infix}k{k}-s{seed}", cfg, source))
    for r in runs:
        # A layer-wise schedule that does not fit in its run would stop the grid only when
        # that run starts; the synthetic set's length is exact, so check it now (UCF101's
        # is known once its files are indexed: the trainer checks it then).
        clips = train_clips(r.config)
        if clips is not None and exact_size(r.config, False):
            try:
                freezing_steps(r.config, clips)
            except ConfigError as e:
                raise ConfigError(f"run {r.name}: {e}") from None
    if exp.requires_data_root and all(r.config.data.name != "ucf101" for r in runs):
        if dry_run:
            print("note: this experiment needs data.root=PATH (UCF101) to train", file=sys.stderr)
            return runs
        raise ConfigError(
            "this experiment reproduces the paper on UCF101: give data.root=PATH "
            "(the UCF101 video folder) or data.frames_root=PATH"
        )
    return runs


def describe(runs: list[PlannedRun], ucf101: bool) -> str:
    """The plan as text: one line per run with its estimated optimizer steps (a layer-wise
    run: its epochs in all and the steps of its freezing events)."""
    from bwssl.regimes import is_layerwise

    lines = [f"{len(runs)} runs:"]
    width = max(28, *(len(r.name) for r in runs))
    for r in runs:
        approx = "" if exact_size(r.config, ucf101) else "~"
        clips = train_clips(r.config, ucf101)
        steps = "? steps" if clips is None else f"{approx}{estimated_steps(r.config, clips)} steps"
        if r.source is not None:
            steps = f"0 steps (re-cut from {r.source})"
        epochs = f"epochs/stage={r.config.train.epochs}"
        if is_layerwise(r.config.regime) and clips is not None:
            epochs = f"epochs={r.config.train.epochs}"
            try:
                events = freezing_steps(r.config, clips)
            except ConfigError:  # UCF101's estimated length; the trainer checks the real one
                events = []
                steps += ", freezing schedule does not fit"
            if events:
                steps += f", {len(events)} freezing events at steps {events[0]}..{events[-1]}"
        lines.append(
            f"  {r.name:<{width}} regime={r.config.regime:<12} K={r.config.model.num_blocks} "
            f"{epochs} {steps}"
        )
    return "\n".join(lines)


def run_experiment(exp: ExperimentConfig, out: Path, dry_run: bool = False) -> Path | None:
    """Train, analyze and report; returns the report path (None for a dry run)."""
    runs = plan(exp, dry_run)
    if dry_run:
        print(describe(runs, exp.requires_data_root))
        return None
    from bwssl.analysis import AnalysisOptions, analyze
    from bwssl.report.html import report_from_results
    from bwssl.train.trainer import derive_e2e_run, train

    options = coerce(AnalysisOptions, apply_overrides({}, exp.analysis))
    _check_data(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.yaml").write_text(yaml.safe_dump(vars(exp), sort_keys=False))
    # The ETA: per objective (their steps differ in cost), seconds per estimated optimizer
    # step of its runs trained in this call, times its steps left (a sequential run counts
    # its K stages); objectives not trained yet are assumed as fast as the rest.
    steps = [
        0 if r.source or (n := train_clips(r.config)) is None else estimated_steps(r.config, n)
        for r in runs
    ]
    finished = [(out / "runs" / r.name / "checkpoints" / "final.pt").exists() for r in runs]
    spent: dict[str, tuple[float, int]] = {}
    for i, r in enumerate(runs):
        done = finished[i]
        eta = "" if done else _eta(runs[i:], steps[i:], finished[i:], spent)
        how = " (done)" if done else f" (re-cut from {r.source})" if r.source else ""
        print(f"[{i + 1}/{len(runs)}] {r.name}{how}{eta}", file=sys.stderr)
        if r.source is not None:
            derive_e2e_run(out / "runs" / r.source, r.config, out / "runs" / r.name)
            continue
        t0 = time.perf_counter()
        # A finished run returns at once, after checking that its config is still this one.
        train(r.config, out / "runs" / r.name)
        if not done and steps[i]:
            seconds, n = spent.get(r.config.objective.name, (0.0, 0))
            spent[r.config.objective.name] = (seconds + time.perf_counter() - t0, n + steps[i])
    results = analyze([out / "runs" / r.name for r in runs], out / "analysis", options)
    # the same page as `bwssl report OUT/analysis/results.csv` (experiment.yaml and the first
    # run's config of every objective are read back from OUT)
    report = report_from_results(results, out / "report.html", exp.paper_model)
    print(f"report: {report}", file=sys.stderr)
    return report


def _eta(
    runs: list[PlannedRun],
    steps: list[int],
    finished: list[bool],
    spent: dict[str, tuple[float, int]],
) -> str:
    """``", ETA x min"`` for the unfinished ``runs`` from the seconds and steps ``spent`` per
    objective so far; empty before any run has trained."""
    if not spent:
        return ""
    overall = sum(t for t, _ in spent.values()) / sum(n for _, n in spent.values())
    rate = {o: t / n for o, (t, n) in spent.items()}
    left = sum(
        n * rate.get(r.config.objective.name, overall)
        for r, n, f in zip(runs, steps, finished, strict=True)
        if not f
    )
    return f", ETA {left / 60:.1f} min"


def _check_data(runs: list[PlannedRun]) -> None:
    """Open the train and test splits of every distinct data config before anything trains,
    so that a wrong path or missing files stop the command now, not after hours of training
    (the test split is otherwise first read by the analysis)."""
    from bwssl.data.build import build_dataset

    seen: list[object] = []
    for r in runs:
        if r.config.data in seen:
            continue
        seen.append(r.config.data)
        for split in ("train", "test"):
            build_dataset(r.config.data, split)


def _cmd_run(args: argparse.Namespace) -> int:
    preset = "quick" if args.quick else args.preset
    exp = load_experiment(preset, args.overrides)
    run_experiment(exp, Path(args.out or f"runs/{preset}"), dry_run=args.dry_run)
    return 0


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: every regime, the analysis suite, report.html",
        description="Train every regime of an experiment grid, analyze every run and write "
        "OUT/report.html. Rerunning skips finished work.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="grid keys (seeds=[0,1], num_blocks=[4,6], regimes=[e2e]) or run keys "
        "(train.epochs=3, data.root=/data/UCF101)",
    )
    p.add_argument(
        "--preset",
        default="demo",
        help="experiment preset: demo (default), quick, objectives-demo, layerlock-demo, "
        "resnet-demo, paper-tiny, paper-small; or a YAML file",
    )
    p.add_argument("--out", default=None, help="output folder (default runs/PRESET)")
    p.add_argument("--quick", action="store_true", help="a smoke version (about 3 minutes)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    p.set_defaults(func=_cmd_run)
