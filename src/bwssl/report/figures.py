"""The paper's figures, drawn from results.csv rows alone (nothing is recomputed).

Each figure is saved as PNG (Agg renderer) and SVG. Figures are built as
``matplotlib.figure.Figure`` objects without pyplot, so drawing them neither
needs a display nor touches the process-wide backend or pyplot's figure list. Lines and bars show the mean across
runs (seeds) with error bars of one standard deviation (see
:func:`bwssl.analysis.results.aggregate`); rows of panels are models (e.g.
DeiT-Tiny, DeiT-Small), colours are regimes, line styles are K.

- ``fig2_downstream``: probe accuracy, retrieval mAP and reconstruction MSE
  of the last block, by model, regime and K.
- ``fig3_complexity``: probe accuracy by block for Level 1 gratings
  (``probe_l1``), Level 2 gratings (``probe_l2``), both averaged over their
  targets within a run, and Level 3 actions (``probe_acc``).
- ``fig4_similarity``: MSE per block, ``cka_next`` per transition, and CKA
  of transition k -> k+1 against the change in mAP from block k to k+1
  (one point per run and transition).
- ``fig5_patch``: ``occdrop_l1``, ``occdrop_l2`` (averaged over targets) and
  ``cps`` by block.

Panels whose metric is not in the table are left out, and a figure with no
panel left is skipped without error. When the runs of a panel mix several K,
the x axis is relative depth (block / K) so that matched depths line up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bwssl.analysis.results import AggregateRow, ResultRow, aggregate, read_results

REGIME_ORDER: tuple[str, ...] = ("untrained", "e2e", "simultaneous", "sequential", "freeze",
                                 "layerlock")
REGIME_COLORS: dict[str, str] = {
    "untrained": "#a0a0a0",
    "e2e": "#222222",
    "simultaneous": "#1f77b4",
    "sequential": "#d62728",
    "freeze": "#2ca02c",
    "layerlock": "#9467bd",
}
K_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
TRANSITION_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X")

METRIC_LABELS: dict[str, str] = {
    "probe_acc": "linear-probe accuracy",
    "map": "retrieval mAP",
    "mse": "masked MSE",
    "probe_l1": "probe accuracy",
    "probe_l2": "probe accuracy",
    "cka_next": "linear CKA",
    "occdrop_l1": "OccDrop",
    "occdrop_l2": "OccDrop",
    "cps": "CPS",
}
RUN_KEYS: tuple[str, ...] = ("regime", "model", "num_blocks", "block", "metric")
"""Aggregation without the target: multi-target metrics are averaged over targets per run."""


def _regime_key(regime: str) -> tuple[int, str]:
    return (REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER), regime)


def _color(regime: str) -> str:
    if regime in REGIME_COLORS:
        return REGIME_COLORS[regime]
    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    return to_hex(cycle[sum(map(ord, regime)) % len(cycle)])  # entries may be RGB tuples


def _linestyle(k: int, all_k: Sequence[int]) -> str:
    return K_LINESTYLES[sorted(all_k).index(k) % len(K_LINESTYLES)]


def _marker(transition: int) -> str:
    return TRANSITION_MARKERS[(transition - 1) % len(TRANSITION_MARKERS)]


def _series_label(regime: str, k: int) -> str:
    return f"{regime} (K={k})"


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def _grid(n_rows: int, n_cols: int) -> tuple[Figure, list[list[Axes]]]:
    fig = Figure(figsize=(4.4 * n_cols, 3.4 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, [list(row) for row in axes]


def _legend(fig: Figure, axes: Iterable[Axes]) -> None:
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


def _block_panel(
    ax: Axes, agg: list[AggregateRow], metric: str, title: str, transitions: bool = False
) -> None:
    """Mean +- std per block, one line per (regime, K)."""
    series: dict[tuple[str, int], list[AggregateRow]] = defaultdict(list)
    for a in agg:
        series[(a.regime, a.num_blocks)].append(a)
    all_k = sorted({k for _, k in series})
    relative = len(all_k) > 1
    for regime, k in sorted(series, key=lambda s: (_regime_key(s[0]), s[1])):
        pts = sorted(series[(regime, k)], key=lambda a: a.block)
        xs = [a.block / k if relative else a.block for a in pts]
        ax.errorbar(
            xs,
            [a.mean for a in pts],
            yerr=[a.std for a in pts],
            marker="o",
            markersize=4,
            capsize=3,
            color=_color(regime),
            linestyle=_linestyle(k, all_k),
            label=_series_label(regime, k),
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


def _by_model(agg: Iterable[AggregateRow]) -> dict[str, list[AggregateRow]]:
    out: dict[str, list[AggregateRow]] = defaultdict(list)
    for a in agg:
        out[a.model].append(a)
    return dict(sorted(out.items()))


def _block_figure(
    rows: list[ResultRow],
    panels: Sequence[tuple[str, str]],
    out_dir: Path,
    name: str,
    transitions: Sequence[str] = (),
) -> list[Path]:
    """Rows = models, columns = the present ``(metric, title)`` panels, lines over blocks."""
    agg = aggregate(rows, RUN_KEYS)
    present = [(m, t) for m, t in panels if any(a.metric == m for a in agg)]
    if not present:
        return []
    models = sorted({a.model for a in agg if a.metric in {m for m, _ in present}})
    targets = {m: sorted({r.target for r in rows if r.metric == m}) for m, _ in present}
    present = [
        (m, f"{t} (mean of {len(targets[m])} targets)" if len(targets[m]) > 1 else t)
        for m, t in present
    ]
    fig, axes = _grid(len(models), len(present))
    for i, model in enumerate(models):
        for j, (metric, title) in enumerate(present):
            sel = [a for a in agg if a.model == model and a.metric == metric]
            if sel:
                _block_panel(
                    axes[i][j],
                    sel,
                    metric,
                    f"{title}\n{model}",  # two lines: long titles would run together
                    transitions=metric in transitions,
                )
            else:
                axes[i][j].set_axis_off()
    _legend(fig, (ax for row in axes for ax in row))
    return _save(fig, out_dir, name)


def fig2_downstream(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """Last-block probe accuracy, mAP and MSE: grouped bars (model) x (regime, K)."""
    metrics = [m for m in ("probe_acc", "map", "mse") if any(r.metric == m for r in rows)]
    if not metrics:
        return []
    last = [a for a in aggregate(rows, RUN_KEYS) if a.block == a.num_blocks]
    models = sorted({a.model for a in last})
    series = sorted(
        {(a.regime, a.num_blocks) for a in last}, key=lambda s: (_regime_key(s[0]), s[1])
    )
    all_k = sorted({k for _, k in series})
    width = 0.8 / max(len(series), 1)
    fig, axes = _grid(1, len(metrics))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for s, (regime, k) in enumerate(series):
            xs, ys, es = [], [], []
            for m, model in enumerate(models):
                hit = [
                    a
                    for a in last
                    if (a.metric, a.model, a.regime, a.num_blocks) == (metric, model, regime, k)
                ]
                if hit:
                    xs.append(m - 0.4 + width * (s + 0.5))
                    ys.append(hit[0].mean)
                    es.append(hit[0].std)
            if xs:
                ax.bar(
                    xs,
                    ys,
                    width=width * 0.95,
                    yerr=es,
                    capsize=3,
                    color=_color(regime),
                    alpha=0.9 if _linestyle(k, all_k) == "-" else 0.5,
                    edgecolor="black",
                    linewidth=0.5,
                    label=_series_label(regime, k),
                )
        ax.set_xticks(range(len(models)), models)
        ax.set_xlabel("model")
        label = METRIC_LABELS.get(metric, metric)
        ax.set_ylabel(label + (" (last block)" if metric == "mse" else ""))
        ax.set_title(f"{label} (final block)")
        ax.grid(axis="y", alpha=0.3)
    _legend(fig, axes[0])
    return _save(fig, out_dir, "fig2_downstream")


def fig3_complexity(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """Probe accuracy by block for the three complexity levels."""
    return _block_figure(
        rows,
        [
            ("probe_l1", "Level 1: gratings"),
            ("probe_l2", "Level 2: hemifield gratings"),
            ("probe_acc", "Level 3: actions"),
        ],
        out_dir,
        "fig3_complexity",
    )


def _cka_delta_map(rows: list[ResultRow]) -> list[tuple[str, str, int, float, float]]:
    """(model, regime, transition k, CKA(k, k+1), mAP(k+1) - mAP(k)) per run, from the rows."""
    per_run: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    info: dict[str, tuple[str, str]] = {}
    for r in rows:
        if r.metric in ("cka_next", "map"):
            per_run[(r.run, r.metric, r.target, r.block)].append(r.value)
            info[r.run] = (r.model, r.regime)
    mean = {key: sum(v) / len(v) for key, v in per_run.items()}
    points = []
    for (run, metric, target, block), cka in sorted(mean.items()):
        if metric != "cka_next":
            continue
        m0 = [v for (rn, mt, _, b), v in mean.items() if (rn, mt, b) == (run, "map", block)]
        m1 = [v for (rn, mt, _, b), v in mean.items() if (rn, mt, b) == (run, "map", block + 1)]
        if m0 and m1 and target in ("", "linear"):
            points.append((info[run][0], info[run][1], block, cka, m1[0] - m0[0]))
    return points


def fig4_similarity(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """MSE per block, CKA per transition, and CKA versus delta-mAP."""
    panels = [
        (m, t)
        for m, t in (
            ("mse", "(a) reconstruction MSE"),
            ("cka_next", "(b) CKA between successive blocks"),
        )
        if any(r.metric == m for r in rows)
    ]
    points = _cka_delta_map(rows)
    if not panels and not points:
        return []
    cka_rows = [r for r in rows if r.metric != "cka_next" or r.target in ("", "linear")]
    agg = aggregate(cka_rows, RUN_KEYS)
    models = sorted(
        {a.model for a in agg if a.metric in {m for m, _ in panels}} | {p[0] for p in points}
    )
    n_cols = len(panels) + (1 if points else 0)
    fig, axes = _grid(len(models), n_cols)
    for i, model in enumerate(models):
        for j, (metric, title) in enumerate(panels):
            sel = [a for a in agg if a.model == model and a.metric == metric]
            if sel:
                _block_panel(
                    axes[i][j],
                    sel,
                    metric,
                    f"{title}\n{model}",  # two lines: long titles would run together
                    transitions=metric == "cka_next",
                )
            else:
                axes[i][j].set_axis_off()
        if points:
            ax = axes[i][len(panels)]
            mine = [p for p in points if p[0] == model]
            for _, regime, k, cka, dmap in mine:
                ax.scatter(
                    cka,
                    dmap,
                    color=_color(regime),
                    marker=_marker(k),
                    s=30,
                    edgecolors="black",
                    linewidths=0.4,
                )
            ax.axhline(0.0, color="gray", linewidth=0.8)
            ax.set_xlabel("CKA(block k, block k+1)")
            ax.set_ylabel("\u0394mAP (block k+1 \u2212 block k)")
            ax.set_title(f"(c) CKA vs \u0394mAP \u2014 {model}")
            ax.grid(alpha=0.3)
            if not panels:  # no line panel explains the colours
                for regime in sorted({p[1] for p in mine}, key=_regime_key):
                    ax.add_line(
                        Line2D([], [], color=_color(regime), marker="o", linestyle="", label=regime)
                    )
            for k in sorted({p[2] for p in mine}):
                ax.add_line(
                    Line2D(
                        [],
                        [],
                        color="black",
                        markerfacecolor="white",
                        marker=_marker(k),
                        linestyle="",
                        label=f"transition {k}\u2192{k + 1}",
                    )
                )
    _legend(fig, (ax for row in axes for ax in row))
    return _save(fig, out_dir, "fig4_similarity")


def fig5_patch(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """OccDrop (Level 1, Level 2) and CPS by block."""
    return _block_figure(
        rows,
        [
            ("occdrop_l1", "(a) OccDrop, Level 1"),
            ("occdrop_l2", "(b) OccDrop, Level 2"),
            ("cps", "(c) cosine patch similarity"),
        ],
        out_dir,
        "fig5_patch",
    )


FIGURES = (fig2_downstream, fig3_complexity, fig4_similarity, fig5_patch)


def draw_all(results: str | Path | Iterable[ResultRow], out_dir: str | Path) -> list[Path]:
    """Draw every figure whose metrics are in ``results`` (a results.csv path or its rows).

    Returns the written files (PNG and SVG per figure); figures without data
    are skipped.
    """
    rows = read_results(results) if isinstance(results, str | Path) else list(results)
    out = Path(out_dir)
    paths: list[Path] = []
    for draw in FIGURES:
        paths.extend(draw(rows, out))
    return paths
