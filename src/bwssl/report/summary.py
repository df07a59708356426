"""The objectives x regimes table of the report: the last block's action-probe accuracy,
retrieval mAP and local loss per (objective, regime, K), mean +- std over seeds, with the
untrained encoder as the reference."""

from __future__ import annotations

import html
from dataclasses import dataclass

from bwssl.analysis.results import AggregateRow, ResultRow, aggregate
from bwssl.report.panels import UNTRAINED, objectives_of, regime_key

COLUMNS: tuple[tuple[str, str], ...] = (
    ("probe_acc", "probe accuracy"),
    ("map", "mAP"),
    ("local_loss", "local loss"),
)
"""(metric, heading) of the table's value columns, all of the last block."""

_KEYS = ("regime", "objective", "model", "num_blocks", "block", "metric")


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int
    """Runs (seeds)."""

    def text(self) -> str:
        """``mean ± std``; the mean alone for one run (no spread to show)."""
        if self.n < 2:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} \u00b1 {self.std:.3f}"


@dataclass(frozen=True)
class Line:
    """One row of the table: a (model, objective, regime, K) and its cells by metric."""

    model: str
    objective: str
    regime: str
    num_blocks: int
    cells: dict[str, Cell]

    @property
    def seeds(self) -> int:
        return max((c.n for c in self.cells.values()), default=0)


def _probe_rows(rows: list[ResultRow]) -> list[ResultRow]:
    """Action-probe rows when the table has them (else every probe_acc row), and the rest."""
    action = any(r.metric == "probe_acc" and r.target == "action" for r in rows)
    return [r for r in rows if r.metric != "probe_acc" or not action or r.target == "action"]


def objective_lines(rows: list[ResultRow]) -> list[Line]:
    """The table's rows: the untrained reference first, then objectives in the order of the
    results table, regimes in the report's order, K ascending."""
    wanted = {m for m, _ in COLUMNS}
    last = [
        a
        for a in aggregate(_probe_rows([r for r in rows if r.metric in wanted]), _KEYS)
        if a.block == a.num_blocks
    ]
    groups: dict[tuple[str, str, str, int], dict[str, Cell]] = {}
    for a in last:
        groups.setdefault(_group(a), {})[a.metric] = Cell(a.mean, a.std, a.n)
    rank = {o: i for i, o in enumerate(objectives_of(rows))}

    def order(g: tuple[str, str, str, int]) -> tuple[object, ...]:
        model, objective, regime, k = g
        return (model, regime != UNTRAINED, rank[objective], regime_key(regime), k)

    return [Line(*g, cells=groups[g]) for g in sorted(groups, key=order)]


def _group(a: AggregateRow) -> tuple[str, str, str, int]:
    return (a.model, a.objective, a.regime, a.num_blocks)


def objectives_table(rows: list[ResultRow]) -> str:
    """The table as HTML, with a sentence on how to read it."""
    esc = html.escape
    lines = objective_lines(rows)
    several_models = len({ln.model for ln in lines}) > 1
    head = (["model"] if several_models else []) + ["objective", "regime", "K", "seeds"]
    head += [f"{name} (last block)" for _, name in COLUMNS]
    out = [
        "<h2>Objectives x regimes</h2>",
        "<p>The last block of every run, mean \u00b1 standard deviation over seeds (the "
        "mean alone for one seed). The untrained encoder is the same for every objective; "
        "its local loss is that of the objective it was analysed with (untrained heads). "
        "Local losses are on each objective's own scale: compare regimes within an "
        "objective, not objectives with each other.</p>",
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>",
    ]
    for ln in lines:
        reference = ln.regime == UNTRAINED
        cells = [ln.model] if several_models else []
        cells += [
            "any (reference)" if reference else ln.objective,
            ln.regime,
            str(ln.num_blocks),
            str(ln.seeds),
        ]
        for metric, _ in COLUMNS:
            cell = ln.cells.get(metric)
            text = cell.text() if cell else "\u2014"
            if cell and reference and metric == "local_loss":
                text += f" ({ln.objective})"
            cells.append(text)
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)
