"""The report's section for ResNet runs: the blockwise-SSL-at-scale paper's ImageNet table
beside our last-block probe accuracy, and which of its orderings our runs reproduce.

Drawn when a row's ``model`` starts with ``resnet``. Everything comes from the rows: the
regime column, and the ``+noise<std>`` suffix that the model column carries for runs trained
with feature noise. Our number for a (regime, noise) line is ``probe_acc`` (the linear
probe on the backbone's globally pooled features) of the last block, the mean over seeds of
each run's mean over repeats. Orderings are judged on those means:

- E2E > simultaneous: E2E without noise against simultaneous with noise (the paper's best
  blockwise model), or without noise when no noise run exists;
- simultaneous > sequential: at the same noise setting (without noise when both exist);
- noise > no noise: simultaneous with noise against simultaneous without.

Each ordering also says whether its difference stands out of the probe's sampling error:
a probe accuracy p measured on n test images (the ``test_clips`` setup row) has a binomial
standard error sqrt(p (1 - p) / n), the mean of s seeds that over s; a difference is called
clear when it exceeds two standard errors of the difference. That error counts the test
images only, not the spread between training seeds, so with one seed "clear" is a lower bar
than it looks. The table adds the untrained encoder (the floor every trained line should
clear) and each line's optimizer steps (the ``train_steps`` setup row): with
``train.epochs`` per stage a sequential run takes K times the steps of the others.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bwssl.analysis.results import ResultRow

METRIC = "probe_acc"
"""The metric our column shows (last block)."""

NOISE_MARK = "+noise"
"""How the model column marks a run trained with feature noise."""

Line = tuple[str, bool]
"""(regime, trained with noise)."""

PAPER_TOP1: tuple[tuple[str, float, Line | None], ...] = (
    ("end to end", 71.57, ("e2e", False)),
    ("simultaneous, CbE + GSP + noise", 70.48, ("simultaneous", True)),
    ("simultaneous, without noise", 70.15, ("simultaneous", False)),
    ("simultaneous, LSP", 68.84, None),
    ("sequential", 67.12, ("sequential", False)),
    ("block 1 end to end, then blockwise", 70.07, ("first_e2e", False)),
    ("blocks 1 and 2 merged", 70.14, None),
)
"""The paper's ImageNet linear-probe top-1 (%) per model, and the (regime, noise) line of
ours that stands for it (None: a variant our rows cannot tell apart, e.g. a pooling head)."""


@dataclass(frozen=True)
class Ordering:
    """One of the paper's orderings, judged on our rows."""

    claim: str
    holds: bool | None
    """True / False on our numbers; None when a side was not run."""
    sentence: str
    clear: bool | None = None
    """Whether the difference exceeds two standard errors of the probe's sampling (module
    docstring); None when a side was not run or no ``test_clips`` row tells the count."""


def has_resnet_rows(rows: Iterable[ResultRow]) -> bool:
    """Whether ``rows`` hold results of a ResNet."""
    return any(r.model.startswith("resnet") for r in rows)


def last_block_probe(rows: Sequence[ResultRow]) -> dict[Line, float]:
    """Per (regime, noise): the last block's ``probe_acc`` over the ResNet runs, the mean
    over seeds of each run's mean over repeats."""
    per_run: dict[tuple[Line, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.model.startswith("resnet") and r.metric == METRIC and r.block == r.num_blocks:
            per_run[((r.regime, NOISE_MARK in r.model), r.run)].append(r.value)
    per_line: dict[Line, list[float]] = defaultdict(list)
    for (line, _), values in per_run.items():
        per_line[line].append(sum(values) / len(values))
    return {line: sum(v) / len(v) for line, v in per_line.items()}


def _name(line: Line) -> str:
    return f"{line[0]} {'with' if line[1] else 'without'} noise"


def _setup(rows: Sequence[ResultRow], fact: str) -> dict[str, float]:
    """Per ResNet run: the value of its ``setup`` row ``fact``."""
    return {
        r.run: r.value
        for r in rows
        if r.model.startswith("resnet") and r.metric == "setup" and r.target == fact
    }


def line_errors(rows: Sequence[ResultRow]) -> dict[Line, float]:
    """Per (regime, noise): the binomial standard error of :func:`last_block_probe`'s value
    (module docstring), for lines whose every run has a ``test_clips`` row."""
    n_test = _setup(rows, "test_clips")
    per_run: dict[tuple[Line, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.model.startswith("resnet") and r.metric == METRIC and r.block == r.num_blocks:
            per_run[((r.regime, NOISE_MARK in r.model), r.run)].append(r.value)
    variances: dict[Line, list[float | None]] = defaultdict(list)
    for (line, run), values in per_run.items():
        p, n = sum(values) / len(values), n_test.get(run)
        variances[line].append(None if not n else p * (1.0 - p) / n)
    return {
        line: math.sqrt(sum(v)) / len(v)  # type: ignore[arg-type]
        for line, v in variances.items()
        if None not in v
    }


def line_steps(rows: Sequence[ResultRow]) -> dict[Line, float]:
    """Per (regime, noise): the mean ``train_steps`` setup row of its ResNet runs."""
    steps = _setup(rows, "train_steps")
    runs: dict[Line, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.model.startswith("resnet") and r.run in steps:
            runs[(r.regime, NOISE_MARK in r.model)][r.run] = steps[r.run]
    return {line: sum(v.values()) / len(v) for line, v in runs.items()}


def _ordering(
    claim: str,
    ours: dict[Line, float],
    errors: dict[Line, float],
    high: Line,
    low: Line,
    paper: str,
) -> Ordering:
    if high not in ours or low not in ours:
        missing = [_name(x) for x in (high, low) if x not in ours]
        return Ordering(claim, None, f"{claim}: not judged, no run of {' or '.join(missing)}.")
    a, b = ours[high], ours[low]
    holds = a > b
    clear: bool | None = None
    tail = ""
    if high in errors and low in errors:
        band = 2.0 * math.hypot(errors[high], errors[low])
        clear = abs(a - b) > band
        tail = (
            f" The difference, {a - b:+.3f}, is {'outside' if clear else 'within'} "
            f"+-{band:.3f} (two standard errors of the probes' test-set sampling)"
            + ("." if clear else ", so our run cannot tell the two apart.")
        )
    verb = "reproduces" if holds else "does not reproduce"
    if clear is False:
        verb = f"leans {'towards' if holds else 'against'} but does not settle"
    return Ordering(
        claim,
        holds,
        f"Our run {verb} {claim}: {_name(high)} {a:.3f} against {_name(low)} {b:.3f} "
        f"(paper {paper}).{tail}",
        clear,
    )


def orderings(rows: Sequence[ResultRow]) -> list[Ordering]:
    """The paper's three orderings (module docstring), judged on the last-block probe."""
    ours, errors = last_block_probe(rows), line_errors(rows)
    simultaneous = ("simultaneous", ("simultaneous", True) in ours)
    # the same noise setting on both sides: without noise when both were run that way
    without = ("simultaneous", False) in ours and ("sequential", False) in ours
    noise = not without and ("simultaneous", True) in ours and ("sequential", True) in ours
    return [
        _ordering(
            "E2E > simultaneous",
            ours,
            errors,
            ("e2e", False),
            simultaneous,
            "71.57 vs 70.48" if simultaneous[1] else "71.57 vs 70.15",
        ),
        _ordering(
            "simultaneous > sequential",
            ours,
            errors,
            ("simultaneous", noise),
            ("sequential", noise),
            "70.48 vs 67.12" if noise else "70.15 vs 67.12",
        ),
        _ordering(
            "noise > no noise",
            ours,
            errors,
            ("simultaneous", True),
            ("simultaneous", False),
            "70.48 vs 70.15",
        ),
    ]


def section(rows: Sequence[ResultRow]) -> str:
    """The HTML section: the paper's table beside ours, then one sentence per ordering."""
    esc = html.escape
    ours, errors, steps = last_block_probe(rows), line_errors(rows), line_steps(rows)

    def value(line: Line | None) -> str:
        if line is None or line not in ours:
            return "not run"
        err = f" +- {errors[line]:.3f}" if line in errors else ""
        return f"{ours[line]:.3f}{err}"

    def step_count(line: Line | None) -> str:
        return f"{steps[line]:,.0f}" if line is not None and line in steps else "-"

    parts = [
        "<h2>ResNet: the paper's ImageNet table beside ours</h2>",
        "<p>Paper: ImageNet linear probe top-1 (%) of a ResNet-50. Ours: the linear probe "
        f"accuracy ({METRIC}, a fraction) on the last block's pooled features, on our data, "
        "+- one standard error of its test-set sampling; compare the orderings, not the "
        "values. Steps: the optimizer steps of our run, every stage counted.</p>",
        "<table><tr><th>model</th><th>paper top-1</th><th>our run</th><th>ours</th>"
        "<th>steps</th></tr>",
    ]
    for label, top1, line in PAPER_TOP1:
        run = "-" if line is None else _name(line)
        parts.append(
            f"<tr><td>{esc(label)}</td><td>{top1:.2f}</td><td>{esc(run)}</td>"
            f"<td>{value(line)}</td><td>{step_count(line)}</td></tr>"
        )
    floor: Line = ("untrained", False)
    if floor in ours:
        parts.append(
            f"<tr><td>untrained encoder (our floor)</td><td>-</td><td>untrained</td>"
            f"<td>{value(floor)}</td><td>0</td></tr>"
        )
    parts.append("</table><ul>")
    parts += [f"<li>{esc(o.sentence)}</li>" for o in orderings(rows)]
    parts.append("</ul>")
    return "\n".join(parts)
