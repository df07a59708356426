"""The paper's figures, drawn from results.csv rows alone (nothing is recomputed).

Each figure is saved as PNG (Agg renderer) and SVG. Figures are built as
``matplotlib.figure.Figure`` objects without pyplot, so drawing them neither
needs a display nor touches the process-wide backend or pyplot's figure list.
Lines and bars show the mean across runs (seeds) with error bars of one
standard deviation (see :func:`bwssl.analysis.results.aggregate`); for the
grating probes and OccDrop, whose rows carry a standard error over CV folds,
the bar is at least the mean of those errors (for a multi-target panel, the
typical error of one target's accuracy), so a single seed shows its error too; rows of
panels are models (e.g. DeiT-Tiny, DeiT-Small), colours are regimes, line
styles are K. When the table holds several local objectives, every row of
panels (and every group of bars) is one (model, objective) pair, and the
untrained encoder is drawn with every objective (see
:mod:`bwssl.report.panels`).

- ``fig2_downstream``: probe accuracy, retrieval mAP and reconstruction MSE
  of the last block, by model (and objective), regime and K.
- ``fig3_complexity``: probe accuracy by block for Level 1 gratings
  (``probe_l1``), Level 2 gratings (``probe_l2``), both averaged over their
  targets within a run, and Level 3 actions (``probe_acc``).
- ``fig3_stimuli``: example frames of each grating kind in the runs' clip
  format (:mod:`bwssl.report.stimuli`), drawn under ``fig3_complexity``.
- ``fig4_similarity``: MSE per block, ``cka_next`` per transition, and CKA
  of transition k -> k+1 against the change in mAP from block k to k+1
  (one point per run and transition).
- ``fig5_patch``: ``occdrop_l1``, ``occdrop_l2`` (averaged over targets) and
  ``cps`` by block.
- ``fig6_local_loss``: each objective's own local loss by block (one panel
  per model and objective: the losses have different scales); drawn only when
  an objective other than masked pixels is present (otherwise it repeats
  fig4's MSE).
- ``fig7_layerwise``: the action probe, retrieval mAP and the collapse measure
  ``feature_std`` (L2-normalized, target "") by block; drawn only when the
  table holds a layer-wise regime (freeze, layerlock, latent).

Panels whose metric is not in the table are left out, and a figure with no
panel left is skipped without error. When the runs of a panel mix several K,
the x axis is relative depth (block / K) so that matched depths line up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from bwssl.analysis.results import ResultRow, aggregate, read_results
from bwssl.report.panels import (
    METRIC_LABELS,
    RUN_KEYS,
    block_panel,
    color,
    facets,
    grid,
    legend,
    linestyle,
    marker,
    objectives_of,
    regime_key,
    save,
    series_label,
    share_reference,
    with_standard_errors,
)
from bwssl.report.stimuli import fig3_stimuli

PIXEL_OBJECTIVE = "masked_pixels"


def _block_figure(
    rows: list[ResultRow],
    panels: Sequence[tuple[str, str]],
    out_dir: Path,
    name: str,
    transitions: Sequence[str] = (),
) -> list[Path]:
    """Rows = facets, columns = the present ``(metric, title)`` panels, lines over blocks."""
    shared = share_reference(rows)
    agg = with_standard_errors(aggregate(shared, RUN_KEYS), shared)
    present = [(m, t) for m, t in panels if any(a.metric == m for a in agg)]
    if not present:
        return []
    targets = {m: sorted({r.target for r in rows if r.metric == m}) for m, _ in present}
    present = [
        (m, f"{t} (mean of {len(targets[m])} targets)" if len(targets[m]) > 1 else t)
        for m, t in present
    ]
    wanted = {m for m, _ in present}
    rows_of = facets([a for a in agg if a.metric in wanted], objectives_of(rows))
    fig, axes = grid(len(rows_of), len(present))
    for i, facet in enumerate(rows_of):
        for j, (metric, title) in enumerate(present):
            sel = [a for a in agg if facet.holds(a) and a.metric == metric]
            if sel:
                block_panel(
                    axes[i][j], sel, metric, facet.title(title), transitions=metric in transitions
                )
            else:
                axes[i][j].set_axis_off()
    legend(fig, (ax for row in axes for ax in row))
    return save(fig, out_dir, name)


def fig2_downstream(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """Last-block probe accuracy, mAP and MSE: grouped bars (model, objective) x (regime, K)."""
    metrics = [m for m in ("probe_acc", "map", "mse") if any(r.metric == m for r in rows)]
    if not metrics:
        return []
    last = [
        a
        for a in aggregate(share_reference(rows), RUN_KEYS)
        if a.block == a.num_blocks and a.metric in metrics
    ]
    groups = facets(last, objectives_of(rows))
    series = sorted(
        {(a.regime, a.num_blocks) for a in last}, key=lambda s: (regime_key(s[0]), s[1])
    )
    all_k = sorted({k for _, k in series})
    width = 0.8 / max(len(series), 1)
    fig, axes = grid(1, len(metrics))
    for ax, metric in zip(axes[0], metrics, strict=True):
        shown = groups
        if groups and groups[0].several_objectives:  # e.g. no MSE group for Barlow Twins
            shown = [g for g in groups if any(g.holds(a) and a.metric == metric for a in last)]
        for s, (regime, k) in enumerate(series):
            xs, ys, es = [], [], []
            for g, group in enumerate(shown):
                hit = [
                    a
                    for a in last
                    if group.holds(a) and (a.metric, a.regime, a.num_blocks) == (metric, regime, k)
                ]
                if hit:
                    xs.append(g - 0.4 + width * (s + 0.5))
                    ys.append(hit[0].mean)
                    es.append(hit[0].std)
            if xs:
                ax.bar(
                    xs,
                    ys,
                    width=width * 0.95,
                    yerr=es,
                    capsize=3,
                    color=color(regime),
                    alpha=0.9 if linestyle(k, all_k) == "-" else 0.5,
                    edgecolor="black",
                    linewidth=0.5,
                    label=series_label(regime, k),
                )
        ax.set_xticks(range(len(shown)), [g.label for g in shown])
        several_models = len({g.model for g in groups}) > 1
        if groups and groups[0].several_objectives:
            ax.set_xlabel("model, objective" if several_models else "objective")
        else:
            ax.set_xlabel("model")
        label = METRIC_LABELS.get(metric, metric)
        ax.set_ylabel(label + (" (last block)" if metric == "mse" else ""))
        ax.set_title(f"{label} (final block)")
        ax.grid(axis="y", alpha=0.3)
    legend(fig, axes[0])
    return save(fig, out_dir, "fig2_downstream")


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


def _cka_delta_map(rows: list[ResultRow]) -> list[tuple[str, str, str, int, float, float]]:
    """(model, objective, regime, transition k, CKA(k, k+1), mAP(k+1) - mAP(k)) per run."""
    per_run: dict[tuple[str, str, str, str, int], list[float]] = defaultdict(list)
    info: dict[tuple[str, str], tuple[str, str]] = {}
    for r in rows:
        if r.metric in ("cka_next", "map"):
            per_run[(r.objective, r.run, r.metric, r.target, r.block)].append(r.value)
            info[(r.objective, r.run)] = (r.model, r.regime)
    mean = {key: sum(v) / len(v) for key, v in per_run.items()}
    maps = {(o, rn, b): v for (o, rn, mt, _, b), v in mean.items() if mt == "map"}
    points = []
    for (objective, run, metric, target, block), cka in sorted(mean.items()):
        if metric != "cka_next" or target not in ("", "linear"):
            continue
        m0, m1 = maps.get((objective, run, block)), maps.get((objective, run, block + 1))
        if m0 is not None and m1 is not None:
            model, regime = info[(objective, run)]
            points.append((model, objective, regime, block, cka, m1 - m0))
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
    shared = share_reference(rows)
    points = _cka_delta_map(shared)
    if not panels and not points:
        return []
    cka_rows = [r for r in shared if r.metric != "cka_next" or r.target in ("", "linear")]
    agg = aggregate(cka_rows, RUN_KEYS)
    wanted = {m for m, _ in panels}
    rows_of = facets(
        [a for a in agg if a.metric in wanted],
        objectives_of(rows),
        extra={(p[0], p[1]) for p in points},
    )
    n_cols = len(panels) + (1 if points else 0)
    fig, axes = grid(len(rows_of), n_cols)
    for i, facet in enumerate(rows_of):
        for j, (metric, title) in enumerate(panels):
            sel = [a for a in agg if facet.holds(a) and a.metric == metric]
            if sel:
                block_panel(
                    axes[i][j], sel, metric, facet.title(title), transitions=metric == "cka_next"
                )
            else:
                axes[i][j].set_axis_off()
        if points:
            mine = [p for p in points if (p[0], p[1]) == (facet.model, facet.objective)]
            _cka_scatter(
                axes[i][len(panels)],
                mine,
                f"(c) CKA vs \u0394mAP \u2014 {facet.name}",
                explain_colours=not panels,
            )
    legend(fig, (ax for row in axes for ax in row))
    return save(fig, out_dir, "fig4_similarity")


def _cka_scatter(
    ax: Axes,
    points: list[tuple[str, str, str, int, float, float]],
    title: str,
    explain_colours: bool,
) -> None:
    """One point per run and transition: colour = regime, marker = transition."""
    for _, _, regime, k, cka, dmap in points:
        ax.scatter(
            cka,
            dmap,
            color=color(regime),
            marker=marker(k),
            s=30,
            edgecolors="black",
            linewidths=0.4,
        )
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xlabel("CKA(block k, block k+1)")
    ax.set_ylabel("\u0394mAP (block k+1 \u2212 block k)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if explain_colours:  # no line panel explains the colours
        for regime in sorted({p[2] for p in points}, key=regime_key):
            ax.add_line(Line2D([], [], color=color(regime), marker="o", linestyle="", label=regime))
    for k in sorted({p[3] for p in points}):
        ax.add_line(
            Line2D(
                [],
                [],
                color="black",
                markerfacecolor="white",
                marker=marker(k),
                linestyle="",
                label=f"transition {k}\u2192{k + 1}",
            )
        )


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


def fig6_local_loss(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """Every objective's own local loss by block: rows = models, columns = objectives."""
    losses = [r for r in rows if r.metric == "local_loss"]
    if all(r.objective == PIXEL_OBJECTIVE for r in losses):
        return []
    agg = aggregate(losses, RUN_KEYS)
    order = objectives_of(losses)
    models = sorted({a.model for a in agg})
    fig, axes = grid(len(models), len(order))
    for i, model in enumerate(models):
        for j, objective in enumerate(order):
            sel = [a for a in agg if (a.model, a.objective) == (model, objective)]
            if sel:
                block_panel(axes[i][j], sel, "local_loss", f"local loss: {objective}\n{model}")
            else:
                axes[i][j].set_axis_off()
    legend(fig, (ax for row in axes for ax in row))
    return save(fig, out_dir, "fig6_local_loss")


def fig7_layerwise(rows: list[ResultRow], out_dir: Path) -> list[Path]:
    """Probe, mAP and feature spread by block, when a layer-wise regime is in the table."""
    from bwssl.report.layerwise import has_layerwise

    if not has_layerwise(rows):
        return []
    probe_targets = {r.target for r in rows if r.metric == "probe_acc"}
    probe = "action" if "action" in probe_targets else None
    wanted = [
        r
        for r in rows
        if (r.metric == "probe_acc" and (probe is None or r.target == probe))
        or r.metric == "map"
        or (r.metric == "feature_std" and r.target == "")
    ]
    return _block_figure(
        wanted,
        [
            ("probe_acc", "(a) action probe"),
            ("map", "(b) retrieval mAP"),
            ("feature_std", "(c) feature std (L2-normalized)"),
        ],
        out_dir,
        "fig7_layerwise",
    )


FIGURES = (
    fig2_downstream,
    fig3_complexity,
    fig3_stimuli,
    fig4_similarity,
    fig5_patch,
    fig6_local_loss,
    fig7_layerwise,
)


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
