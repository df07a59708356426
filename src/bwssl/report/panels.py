"""Building blocks of the report's figures: colours and labels, the grid of panels, the
line panel over blocks, and the facets a figure's rows of panels stand for.

A *facet* is one (model, objective) pair. With a single objective in the
table, facets are the models and titles name the model alone; with several,
titles name the objective too. The untrained encoder is the same for every
objective (``bwssl run`` analyses it once, under the first objective), so
:func:`share_reference` copies its rows to every objective for metrics of the
encoder itself; metrics read through an objective's own heads
(:data:`OBJECTIVE_METRICS`) stay with the objective they were measured for.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from bwssl.analysis.options import HEAD_METRICS
from bwssl.analysis.results import AggregateRow, ResultRow

REGIME_ORDER: tuple[str, ...] = (
    "untrained",
    "e2e",
    "simultaneous",
    "sequential",
    "freeze",
    "layerlock",
    "latent",
)
REGIME_COLORS: dict[str, str] = {
    "untrained": "#a0a0a0",
    "e2e": "#222222",
    "simultaneous": "#1f77b4",
    "sequential": "#d62728",
    "freeze": "#2ca02c",
    "layerlock": "#9467bd",
    "latent": "#8c564b",
}
K_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
TRANSITION_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")

METRIC_LABELS: dict[str, str] = {
    "probe_acc": "linear-probe accuracy",
    "knn_acc": "kNN accuracy",
    "map": "retrieval mAP",
    "mse": "masked MSE",
    "local_loss": "local loss",
    "probe_l1": "probe accuracy",
    "probe_l2": "probe accuracy",
    "cka_next": "linear CKA",
    "occdrop_l1": "OccDrop",
    "occdrop_l2": "OccDrop",
    "cps": "CPS",
    "feature_std": "feature std across clips",
}
RUN_KEYS: tuple[str, ...] = ("regime", "objective", "model", "num_blocks", "block", "metric")
"""Aggregation without the target: multi-target metrics are averaged over targets per run."""

OBJECTIVE_METRICS: frozenset[str] = frozenset({"mse", "local_loss", *HEAD_METRICS.values()})
"""Metrics measured through the run's objective heads, not of the encoder alone."""

UNTRAINED = "untrained"


def regime_key(regime: str) -> tuple[int, str]:
    """Sort key: the regimes of :data:`REGIME_ORDER` first, in that order, then by name."""
    return (REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER), regime)


def color(regime: str) -> str:
    if regime in REGIME_COLORS:
        return REGIME_COLORS[regime]
    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    return to_hex(cycle[sum(map(ord, regime)) % len(cycle)])  # entries may be RGB tuples


def linestyle(k: int, all_k: Sequence[int]) -> str:
    return K_LINESTYLES[sorted(all_k).index(k) % len(K_LINESTYLES)]


def marker(transition: int) -> str:
    return TRANSITION_MARKERS[(transition - 1) % len(TRANSITION_MARKERS)]


def series_label(regime: str, k: int) -> str:
    return f"{regime} (K={k})"


def objectives_of(rows: Iterable[ResultRow]) -> list[str]:
    """The objectives of ``rows`` in order of first appearance (the experiment's order)."""
    return list(dict.fromkeys(r.objective for r in rows))


def groups_where(
    rows: Sequence[ResultRow], keep: Callable[[ResultRow], bool]
) -> list[tuple[str, str, int]]:
    """The (model, objective, K) of the rows ``keep`` accepts, sorted by model, then in the
    results' objective order, then by K: the runs one set of report tables compares."""
    found = {(r.model, r.objective, r.num_blocks) for r in rows if keep(r)}
    rank = {o: i for i, o in enumerate(objectives_of(rows))}
    return sorted(found, key=lambda g: (g[0], rank[g[1]], g[2]))


def share_reference(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """``rows`` plus, for every objective without untrained rows, a copy of the untrained
    encoder's rows (same run) for the metrics not in :data:`OBJECTIVE_METRICS`."""
    objectives = objectives_of(rows)
    have = {r.objective for r in rows if r.regime == UNTRAINED}
    shared = [r for r in rows if r.regime == UNTRAINED and r.metric not in OBJECTIVE_METRICS]
    out = list(rows)
    for objective in objectives:
        if objective not in have:
            out += [dataclasses.replace(r, objective=objective) for r in shared]
    return out


def with_standard_errors(agg: list[AggregateRow], rows: Iterable[ResultRow]) -> list[AggregateRow]:
    """``agg`` with each group's spread raised to its rows' mean ``stderr`` where that is
    larger: the error bar of a metric measured with a standard error (the grating probes and
    OccDrop, over CV folds) is then at least that error, also for a single seed. Groups are
    matched on :data:`RUN_KEYS`."""
    errors: dict[tuple[object, ...], list[float]] = defaultdict(list)
    for r in rows:
        if r.stderr is not None:
            errors[tuple(getattr(r, k) for k in RUN_KEYS)].append(r.stderr)
    out = []
    for a in agg:
        se = errors.get(tuple(getattr(a, k) for k in RUN_KEYS))
        if se:
            a = dataclasses.replace(a, std=max(a.std, sum(se) / len(se)))
        out.append(a)
    return out


@dataclass(frozen=True)
class Facet:
    """One row of panels (or one group of bars): a model trained with one objective."""

    model: str
    objective: str
    several_objectives: bool
    several_models: bool = True

    def holds(self, a: AggregateRow) -> bool:
        return (a.model, a.objective) == (self.model, self.objective)

    @property
    def name(self) -> str:
        """The model, and the objective when there are several."""
        return f"{self.model}, {self.objective}" if self.several_objectives else self.model

    def title(self, title: str) -> str:
        """A panel title on two lines (long titles would run together)."""
        return f"{title}\n{self.name}"

    @property
    def label(self) -> str:
        """An axis tick label."""
        if not self.several_objectives:
            return self.model
        return f"{self.model}\n{self.objective}" if self.several_models else self.objective


def facets(
    agg: Iterable[AggregateRow], order: Sequence[str], extra: Iterable[tuple[str, str]] = ()
) -> list[Facet]:
    """The (model, objective) pairs of ``agg`` (and ``extra``): models sorted, objectives in
    ``order`` within a model."""
    pairs = {(a.model, a.objective) for a in agg} | set(extra)
    rank = {o: i for i, o in enumerate(order)}
    pairs_sorted = sorted(pairs, key=lambda p: (p[0], rank.get(p[1], len(rank)), p[1]))
    several = len({o for _, o in pairs}) > 1
    models = len({m for m, _ in pairs}) > 1
    return [Facet(m, o, several, models) for m, o in pairs_sorted]


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """``name``.png (150 dpi) and ``name``.svg in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def grid(n_rows: int, n_cols: int) -> tuple[Figure, list[list[Axes]]]:
    fig = Figure(figsize=(4.4 * n_cols, 3.4 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, [list(row) for row in axes]


def legend(fig: Figure, axes: Iterable[Axes]) -> None:
    """One legend for the whole figure, below the panels, from every labelled artist."""
    handles: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.tight_layout()
    if handles:  # below the axes, outside the figure: savefig's tight bbox takes it in
        fig.legend(
            list(handles.values()),
            list(handles.keys()),
            loc="upper center",
            ncol=min(len(handles), 5),
            frameon=False,
            bbox_to_anchor=(0.5, 0.0),
        )


def block_panel(
    ax: Axes, agg: list[AggregateRow], metric: str, title: str, transitions: bool = False
) -> None:
    """Mean +- std per block, one line per (regime, K)."""
    series: dict[tuple[str, int], list[AggregateRow]] = defaultdict(list)
    for a in agg:
        series[(a.regime, a.num_blocks)].append(a)
    all_k = sorted({k for _, k in series})
    relative = len(all_k) > 1
    for regime, k in sorted(series, key=lambda s: (regime_key(s[0]), s[1])):
        pts = sorted(series[(regime, k)], key=lambda a: a.block)
        xs = [a.block / k if relative else a.block for a in pts]
        ax.errorbar(
            xs,
            [a.mean for a in pts],
            yerr=[a.std for a in pts],
            marker="o",
            markersize=4,
            capsize=3,
            color=color(regime),
            linestyle=linestyle(k, all_k),
            label=series_label(regime, k),
        )
    if relative:
        ax.set_xlabel("relative depth (block / K)" + (", transition from" if transitions else ""))
    elif transitions:
        ks = sorted({a.block for a in agg})
        ax.set_xticks(ks, [f"{b}\u2192{b + 1}" for b in ks])
        ax.set_xlabel("block transition")
    else:
        ax.set_xticks(sorted({a.block for a in agg}))
        ax.set_xlabel("block")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(title)
    ax.grid(alpha=0.3)
