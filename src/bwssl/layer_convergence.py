"""``bwssl layer-convergence``: the layer-convergence experiment of LayerLock, in miniature.

Layers of a video ViT trained end to end converge in order of depth: shallow
layers settle early. The experiment measures this by freezing the first L
layers at step T of an otherwise unchanged run and comparing the run's final
loss with that of the unfrozen baseline. A small deviation means layers
``[0, L)`` had already converged by step T.

Every cell of the grid is an ordinary run directory under ``OUT/runs/``:

- ``e2e``: the baseline, ``regime=e2e`` with everything else as given;
- ``freeze-L{L}-T{T}``: ``regime=freeze`` with a single freezing event at
  step T that freezes layers ``[0, L)`` for the rest of the run, on the same
  learning-rate schedule and data order as the baseline.

Rerunning the command skips finished runs and resumes interrupted ones. The
final loss of a run is the mean logged loss over its last logged steps; the
results go to ``OUT/layer_convergence.csv`` (one row per (L, T)) and
``OUT/layer_convergence.png`` (deviation from the baseline against T, one line
per L).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from bwssl.base.files import atomic_write_text
from bwssl.config import Config, load_config, parse_override
from bwssl.errors import UserError

BASELINE = "e2e"
"""Name of the baseline's run directory under ``OUT/runs``."""
CSV_NAME = "layer_convergence.csv"
FIGURE_NAME = "layer_convergence"
SET_KEYS: frozenset[str] = frozenset(
    {
        "regime",
        "layerlock",
        "layerlock.start_step",
        "layerlock.interval",
        "layerlock.layers_per_event",
        "layerlock.max_frozen",
    }
)
"""Config keys the experiment sets itself; overriding them is refused."""


@dataclass(frozen=True)
class ConvergenceRow:
    """The outcome of one cell of the grid: layers ``[0, layers)`` frozen at ``freeze_step``."""

    layers: int
    """L, the number of frozen layers (the first L of the encoder)."""
    freeze_step: int
    """T, the optimizer step after which the layers stop training."""
    final_loss: float
    """Mean logged loss of the frozen run's last logged steps."""
    baseline_loss: float
    """The same for the unfrozen baseline."""
    deviation: float
    """``final_loss - baseline_loss``."""
    relative_deviation: float
    """``deviation / baseline_loss`` (NaN when the baseline's loss is 0)."""


@dataclass(frozen=True)
class ConvergencePlan:
    """The checked runs of the experiment, before anything is trained."""

    baseline: Config
    """The unfrozen ``regime=e2e`` run."""
    frozen: dict[tuple[int, int], Config]
    """The ``regime=freeze`` run of every (L, T), in grid order."""
    total_steps: int
    """Optimizer steps of every run."""
    logged_steps: int
    """Metric lines every run writes (one per ``train.log_every`` steps and epoch end)."""
    last: int
    """Logged steps averaged into a run's final loss."""

    @staticmethod
    def run_name(layers: int, freeze_step: int) -> str:
        """The run directory name of cell (L, T)."""
        return f"freeze-L{layers}-T{freeze_step}"

    def runs(self) -> list[tuple[str, Config]]:
        """Every run as (directory name, config), the baseline first."""
        return [(BASELINE, self.baseline)] + [
            (self.run_name(lay, t), cfg) for (lay, t), cfg in self.frozen.items()
        ]


def default_last(logged_steps: int) -> int:
    """The default averaging window: the last tenth of the logged steps, at least one."""
    return max(1, logged_steps // 10)


def steps_per_epoch(cfg: Config) -> int:
    """Optimizer steps per epoch of ``cfg``: training clips // ``train.batch_size`` (the
    synthetic data's clip count is in the config; other data is indexed to count them)."""
    if cfg.data.name == "synthetic":
        clips = cfg.data.synthetic_train
    else:
        from bwssl.data import build_dataset

        clips = len(build_dataset(cfg.data, "train", seed=cfg.seed))
    per_epoch = clips // cfg.train.batch_size
    if per_epoch < 1:
        raise UserError(
            f"the training set has {clips} clips, fewer than "
            f"train.batch_size={cfg.train.batch_size}; lower the batch size"
        )
    return per_epoch


def training_steps(cfg: Config, per_epoch: int) -> int:
    """Optimizer steps of a one-stage run of ``cfg`` at ``per_epoch`` steps per epoch: times
    ``train.epochs``, at most ``train.max_steps`` (how the trainer counts a layer-wise run)."""
    total = per_epoch * cfg.train.epochs
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    return total


def logged_steps(cfg: Config, per_epoch: int, total: int) -> int:
    """Metric lines a run of ``total`` steps writes: one every ``train.log_every`` steps and
    one at every epoch's end."""
    every = cfg.train.log_every
    return sum(1 for s in range(1, total + 1) if s % every == 0 or s % per_epoch == 0)


def plan_layer_convergence(
    preset: str,
    overrides: Sequence[str],
    layers: Sequence[int],
    steps: Sequence[int],
    last: int | None = None,
) -> ConvergencePlan:
    """Build and check every config of the experiment; raises :class:`UserError` naming the
    option at fault (``--layers``, ``--steps``, ``--last`` or a config key) before anything
    is trained or written."""
    if not layers:
        raise UserError("--layers: give at least one number of layers to freeze")
    if not steps:
        raise UserError("--steps: give at least one freeze step")
    for text in overrides:
        key, _ = parse_override(text)
        if key in SET_KEYS:
            raise UserError(
                f"override {text!r}: layer-convergence sets {key} itself (the baseline is "
                "regime=e2e, every other run freezes --layers at --steps)"
            )
    base = load_config(preset, [*overrides, "regime=e2e"])  # the baseline
    depth = base.model.depth
    lays, ts = sorted(set(layers)), sorted(set(steps))
    bad = [v for v in lays if not 1 <= v < depth]
    if bad:
        raise UserError(
            f"--layers: {bad} out of range; a run freezes 1 to {depth - 1} layers of the "
            f"{depth}-layer encoder (model.depth={depth}), and at least one must keep training"
        )
    per_epoch = steps_per_epoch(base)
    total = training_steps(base, per_epoch)
    bad = [v for v in ts if not 1 <= v < total]
    if bad:
        raise UserError(
            f"--steps: {bad} out of range; freeze steps must lie in 1..{total - 1}, inside the "
            f"run of {total} steps ({per_epoch} per epoch x train.epochs={base.train.epochs}"
            + (f", train.max_steps={base.train.max_steps}" if base.train.max_steps else "")
            + ")"
        )
    logged = logged_steps(base, per_epoch, total)
    if last is not None and not 1 <= last <= logged:
        raise UserError(
            f"--last: must lie in 1..{logged}, the logged steps of each run "
            f"(train.log_every={base.train.log_every}); got {last}"
        )
    from bwssl.regimes import run_stages

    run_stages(base, total)
    frozen: dict[tuple[int, int], Config] = {}
    for lay in lays:
        for t in ts:
            cfg = load_config(
                preset,
                [
                    *overrides,
                    "regime=freeze",
                    f"layerlock.start_step={t}",
                    "layerlock.interval=1",
                    f"layerlock.layers_per_event={lay}",
                    f"layerlock.max_frozen={lay}",
                ],
            )
            run_stages(cfg, total)
            frozen[(lay, t)] = cfg
    return ConvergencePlan(
        base, frozen, total, logged, last if last is not None else default_last(logged)
    )


def _check_existing(plan: ConvergencePlan, runs_dir: Path) -> None:
    """Refuse up front when a run folder holds a run of another config (e.g. changed
    overrides with the same --out), instead of failing halfway through the grid."""
    from bwssl.base.rundir import RunDir

    for name, cfg in plan.runs():
        run = RunDir(runs_dir / name)
        saved = run.saved_config()
        if saved is not None and saved != cfg:
            raise UserError(
                f"{run.root} holds a run with a different config; use another --out, or "
                "delete the folder to start over"
            )


def final_loss(metrics: Path, last: int) -> float:
    """Mean of the logged loss over the last ``last`` logged steps of ``metrics`` (a run's
    metrics.jsonl); the loss of a step is that of its deepest logged block."""
    if not metrics.exists():
        raise UserError(f"{metrics} is missing: the run logged no metrics")
    values = []
    for line in metrics.read_text().splitlines():
        if not line.strip():
            continue
        loss = json.loads(line).get("loss") or {}
        if loss:
            values.append(float(loss[max(loss, key=int)]))
    if not values:
        raise UserError(f"{metrics} holds no logged loss")
    tail = values[-last:]
    return sum(tail) / len(tail)


def write_csv(rows: Sequence[ConvergenceRow], path: Path) -> None:
    """Write ``rows`` as a tidy CSV, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([f.name for f in fields(ConvergenceRow)])
    for row in rows:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in astuple(row)])
    atomic_write_text(path, buf.getvalue())


def draw_figure(
    rows: Sequence[ConvergenceRow], out_dir: Path, last: int | None = None
) -> list[Path]:
    """The deviation from the baseline (absolute and relative) against the freeze step, one
    line per number of frozen layers; saved as ``layer_convergence.png`` and ``.svg``.
    ``last`` (the averaging window) only goes into the caption."""
    from matplotlib.ticker import MaxNLocator

    from bwssl.report.panels import color, grid, save

    fig, axes = grid(1, 2)
    fig.set_layout_engine("constrained")
    panels = (
        (axes[0][0], "deviation", "final loss − E2E's", "(a) deviation from E2E", 1.0),
        (axes[0][1], "relative_deviation", "deviation / E2E's loss (%)", "(b) relative", 100.0),
    )
    for ax, field, label, title, scale in panels:
        ax.axhline(0.0, color=color("e2e"), linestyle="--", linewidth=1, label="E2E baseline")
        for lay in sorted({r.layers for r in rows}):
            sel = sorted((r for r in rows if r.layers == lay), key=lambda r: r.freeze_step)
            ax.plot(
                [r.freeze_step for r in sel],
                [scale * getattr(r, field) for r in sel],
                marker="o",
                label=f"layers 1–{lay} frozen" if lay > 1 else "layer 1 frozen",
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("freeze step T")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize="small")
    if rows:
        window = f", mean of the last {last} logged steps" if last is not None else ""
        fig.suptitle(
            f"final loss after freezing at step T (E2E: {rows[0].baseline_loss:.4f}{window})"
        )
    return save(fig, out_dir, FIGURE_NAME)


def format_table(rows: Sequence[ConvergenceRow]) -> str:
    """The rows as a small aligned text table."""
    head = ("L", "T", "final loss", "baseline", "deviation", "relative")
    body = [
        (
            str(r.layers),
            str(r.freeze_step),
            f"{r.final_loss:.5f}",
            f"{r.baseline_loss:.5f}",
            f"{r.deviation:+.5f}",
            f"{100 * r.relative_deviation:+.2f}%",
        )
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [head, *body]
    ]
    return "\n".join(lines)


def layer_convergence(
    preset: str,
    overrides: Sequence[str],
    layers: Sequence[int],
    steps: Sequence[int],
    out: Path,
    last: int | None = None,
    say: Callable[[str], None] | None = None,
) -> list[ConvergenceRow]:
    """Run the experiment into ``out``: check every config, train the baseline and every
    (L, T) freeze run that is not finished yet, then write the CSV and the figure.

    ``last`` is the number of final logged steps averaged into a run's loss (default: a
    tenth of them, at least one). Returns one row per (L, T), sorted by L then T.
    """
    from bwssl.train.trainer import train

    def tell(text: str) -> None:
        (say or (lambda s: print(s, file=sys.stderr)))(text)

    out = Path(out)
    plan = plan_layer_convergence(preset, overrides, layers, steps, last)
    runs_dir = out / "runs"
    _check_existing(plan, runs_dir)
    runs = plan.runs()
    for i, (name, cfg) in enumerate(runs, start=1):
        t0 = time.perf_counter()
        tell(f"[{i}/{len(runs)}] {name} ({plan.total_steps} steps)")
        train(cfg, runs_dir / name)
        tell(f"[{i}/{len(runs)}] {name}: {time.perf_counter() - t0:.1f} s")
    base_loss = final_loss(runs_dir / BASELINE / "metrics.jsonl", plan.last)
    rows = []
    for lay, t in plan.frozen:
        loss = final_loss(runs_dir / plan.run_name(lay, t) / "metrics.jsonl", plan.last)
        dev = loss - base_loss
        rel = dev / base_loss if base_loss != 0 else math.nan
        rows.append(ConvergenceRow(lay, t, loss, base_loss, dev, rel))
    write_csv(rows, out / CSV_NAME)
    draw_figure(rows, out, plan.last)
    return rows


def _cmd_layer_convergence(args: argparse.Namespace) -> int:
    out = Path(args.out)
    rows = layer_convergence(args.config, args.overrides, args.layers, args.steps, out, args.last)
    print(format_table(rows))
    print(f"wrote {out / CSV_NAME} and {out / (FIGURE_NAME + '.png')}")
    return 0


def add_layer_convergence_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bwssl layer-convergence`` on the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "layer-convergence",
        help="freeze the first L layers at step T; compare the final loss with E2E's",
        description="Train an E2E baseline and, for every L of --layers and T of --steps, the "
        "same run with layers [0, L) frozen from step T on; write OUT/layer_convergence.csv "
        "(final loss and its deviation from the baseline) and OUT/layer_convergence.png. "
        "Rerunning skips finished runs.",
    )
    p.add_argument("config", help="preset name (e.g. tiny-debug, deit-tiny) or a YAML file")
    p.add_argument(
        "overrides",
        nargs="*",
        help="dotted overrides for every run, e.g. train.epochs=5 (regime and the layerlock "
        "schedule are set by the experiment)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        type=int,
        required=True,
        metavar="L",
        help="numbers of leading layers to freeze (1 to model.depth - 1)",
    )
    p.add_argument(
        "--steps",
        nargs="+",
        type=int,
        required=True,
        metavar="T",
        help="optimizer steps after which to freeze them (1 to the run's length - 1)",
    )
    p.add_argument("--out", required=True, help="output folder (runs go to OUT/runs/)")
    p.add_argument(
        "--last",
        type=int,
        default=None,
        metavar="N",
        help="average the loss of the last N logged steps (default: the last 10%%, at least 1)",
    )
    p.set_defaults(func=_cmd_layer_convergence)
