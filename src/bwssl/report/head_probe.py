"""The report's per-block table of head-feature probes: for runs whose heads pool a vector of
their own (a CbE head's expansion, LSP bins), the action probe, kNN accuracy and retrieval
mAP on that vector beside the same metric on the backbone's pooled features, block by block.

The section is drawn only when the results hold ``*_head`` rows
(:data:`~bwssl.analysis.options.HEAD_METRICS`). Per (model, objective, K) it shows one
table per metric with a ``backbone`` and a ``head`` line per regime; each cell is the mean
over seeds of each run's mean over repeats (± the standard deviation with several seeds).
The untrained reference counts for every objective on the backbone's features (the same
encoder) but only for its own objective on the head's (heads belong to an objective). Blocks
without a head (all but the last in E2E) have no head cell.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from bwssl.analysis.options import HEAD_METRICS
from bwssl.analysis.results import ResultRow, aggregate
from bwssl.report.panels import UNTRAINED, groups_where, regime_key
from bwssl.report.summary import Cell

HEADINGS: dict[str, str] = {
    "probe_acc": "action probe accuracy",
    "knn_acc": "action kNN accuracy",
    "map": "retrieval mAP",
}
"""The heading of each metric's table (the keys of :data:`HEAD_METRICS`)."""

Group = tuple[str, str, int]
"""(model, objective, K): the runs one set of tables compares."""

Lines = dict[tuple[str, str], dict[int, Cell]]
"""(regime, ``backbone`` | ``head``) -> block -> Cell."""

_HEAD_NAMES = frozenset(HEAD_METRICS.values())


def has_head_rows(rows: Iterable[ResultRow]) -> bool:
    """Whether ``rows`` hold a metric of a head's pooled vector."""
    return any(r.metric in _HEAD_NAMES for r in rows)


def groups(rows: Sequence[ResultRow]) -> list[Group]:
    """The (model, objective, K) with head rows, in the results' objective order."""
    return groups_where(rows, lambda r: r.metric in _HEAD_NAMES)


def lines(rows: Sequence[ResultRow], group: Group, metric: str) -> Lines:
    """``metric`` (a key of :data:`HEAD_METRICS`) on both kinds of features, per regime and
    block, over the runs of ``group``; a regime without head rows has no lines."""
    model, objective, k = group
    head = HEAD_METRICS[metric]
    mine = [
        r
        for r in rows
        if r.metric in (metric, head)
        and (r.model, r.num_blocks) == (model, k)
        and (r.objective == objective or (r.regime == UNTRAINED and r.metric == metric))
    ]
    probed = {r.regime for r in mine if r.metric == head}
    out: Lines = {}
    for a in aggregate(mine, ("regime", "block", "metric")):
        if a.regime in probed:
            kind = "head" if a.metric == head else "backbone"
            out.setdefault((a.regime, kind), {})[a.block] = Cell(a.mean, a.std, a.n)
    return out


def section(rows: Sequence[ResultRow]) -> str:
    """The section as HTML: per group, a per-block table for each metric with head rows."""
    esc = html.escape
    out = [
        "<h2>Probes of the heads' pooled features</h2>",
        "<p>Each block read two ways: <b>backbone</b>, its output pooled by the backbone "
        "(what every other table reads), and <b>head</b>, the vector its local head pools "
        "before the projector (a CbE head's expanded features, the read-out of the blockwise "
        "ResNet paper's released evaluation). Only blocks with a head have head cells (E2E: "
        "the last block). A wide expansion is a random-feature map even untrained, and lifts "
        "a linear probe by itself: read the head lines against the untrained encoder's. "
        "Cells are the mean over seeds (\u00b1 their standard deviation with several).</p>",
    ]
    several = len(groups(rows)) > 1
    for group in groups(rows):
        model, objective, k = group
        if several:
            out.append(f"<h3>{esc(f'{model}, {objective}, K={k}')}</h3>")
        for metric, heading in HEADINGS.items():
            t = lines(rows, group, metric)
            if t:
                out.append(f"<h4>{esc(heading)} by block, backbone vs head features</h4>")
                out.append(_table_html(t, k))
    return "\n".join(out)


def _table_html(t: Lines, k: int) -> str:
    esc = html.escape
    head = "".join(f"<th>block {b}</th>" for b in range(1, k + 1))
    out = [f"<table><tr><th>regime</th><th>features</th>{head}</tr>"]
    for regime, kind in sorted(t, key=lambda rk: (regime_key(rk[0]), rk[1])):
        cells = t[(regime, kind)]
        texts = [cells[b].text() if b in cells else "\u2014" for b in range(1, k + 1)]
        tds = "".join(f"<td>{esc(x)}</td>" for x in texts)
        out.append(f"<tr><td>{esc(regime)}</td><td>{esc(kind)}</td>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)
