"""The report's section on layer-wise regimes: E2E, progressive freezing (``freeze``),
LayerLock (``layerlock``), its target schedule without freezing (``latent``) and blockwise
``simultaneous`` training, block by block, and LayerLock's claims judged from our numbers.

The section is drawn only when the results hold a layer-wise regime. Per
(model, objective, K) of those runs it shows per-block tables (action probe,
action kNN accuracy, retrieval mAP, the collapse measure ``feature_std`` of
L2-normalized features, see :mod:`bwssl.analysis.collapse`; a metric without
rows has no table), each cell the mean over seeds
(± their standard deviation with several seeds), and a table of claims. A
claim is judged on the last block; a difference smaller than
:data:`NOISE` is called a tie, not a win: a probe on a few hundred test
clips moves by about that much between fits.
"""

from __future__ import annotations

import html
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from bwssl.analysis.results import ResultRow
from bwssl.report.panels import UNTRAINED, groups_where
from bwssl.report.summary import Cell

LAYERWISE: tuple[str, ...] = ("freeze", "layerlock", "latent")
"""The layer-wise regimes the section is about."""
COMPARED: tuple[str, ...] = ("e2e", "freeze", "layerlock", "latent", "simultaneous")
"""The regimes the claims compare (others present, e.g. the untrained reference, are shown
in the tables only)."""

NOISE = 0.03
"""Differences of probe accuracy or mAP within this are ties: about one binomial standard
error of an accuracy near 0.7 on 256 test clips."""
COLLAPSE_RATIO = 0.5
"""A regime's last-block feature spread below this fraction of E2E's counts as collapsed."""

TABLES: tuple[tuple[str, str, str], ...] = (
    ("probe_acc", "action", "action probe accuracy"),
    ("knn_acc", "action", "action kNN accuracy (cosine, temperature-weighted votes)"),
    ("map", "", "retrieval mAP"),
    ("feature_std", "", "feature std across clips (L2-normalized; 0 = collapsed)"),
)
"""(metric, target, heading) of the per-block tables."""


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims beside what our runs say."""

    claim: str
    paper: str
    ours: str
    verdict: str
    """``yes`` (our numbers reproduce it), ``no`` (they contradict it), ``tie`` (the
    difference is within :data:`NOISE`: neither) or ``n/a`` (not measured here)."""
    sentence: str


DASH = "\u2014"

Group = tuple[str, str, int]
"""(model, objective, K): the runs one set of tables compares."""

Table = dict[str, dict[int, Cell]]
"""regime -> block -> Cell."""


def has_layerwise(rows: Iterable[ResultRow]) -> bool:
    """Whether ``rows`` hold a run of a layer-wise regime."""
    return any(r.regime in LAYERWISE for r in rows)


def groups(rows: Sequence[ResultRow]) -> list[Group]:
    """The (model, objective, K) with a layer-wise run, in the results' objective order."""
    return groups_where(rows, lambda r: r.regime in LAYERWISE)


def _target(rows: Sequence[ResultRow], metric: str, target: str) -> str | None:
    """``target`` when ``metric`` has rows with it, else the metric's only target, else None
    (a table without action labels names its probe target differently)."""
    have = {r.target for r in rows if r.metric == metric}
    if target in have:
        return target
    return have.pop() if len(have) == 1 else None


def table(rows: Sequence[ResultRow], group: Group, metric: str, target: str) -> Table:
    """Per regime and block, ``metric`` (``target``) over the runs of ``group``: each run's
    mean over repeats, then mean and standard deviation over runs. The untrained encoder is
    analysed under the first objective only and counts for every objective."""
    model, objective, k = group
    chosen = _target(rows, metric, target)
    per_run: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (
            r.metric == metric
            and r.target == chosen
            and (r.model, r.num_blocks) == (model, k)
            and (r.objective == objective or r.regime == UNTRAINED)
        ):
            per_run[(r.regime, r.block)][r.run].append(r.value)
    out: Table = defaultdict(dict)
    for (regime, block), runs in per_run.items():
        values = [statistics.fmean(v) for v in runs.values()]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[regime][block] = Cell(statistics.fmean(values), std, len(values))
    return dict(out)


def _last(t: Table, regime: str, k: int) -> Cell | None:
    return t.get(regime, {}).get(k)


def _difference_claim(
    t: Table, k: int, a: str, b: str, claim: str, paper: str, kept: bool, what: str
) -> Claim:
    """``a`` against ``b`` at the last block. ``kept``: the claim is that ``a`` loses nothing
    (agrees unless ``a`` falls more than NOISE below ``b``); otherwise that ``a`` is better
    (agrees when ``a`` is more than NOISE above ``b``, a tie within NOISE)."""
    sa, sb = _last(t, a, k), _last(t, b, k)
    if sa is None or sb is None:
        missing = " and ".join(x for x, s in ((a, sa), (b, sb)) if s is None)
        return Claim(claim, paper, "not run", "n/a", f"This experiment has no {missing} run.")
    diff = sa.mean - sb.mean
    ours = f"{sa.mean:.3f} vs {sb.mean:.3f} ({diff:+.3f})"
    base = f"Last-block {what}: {a} {sa.mean:.3f}, {b} {sb.mean:.3f}, a difference of {diff:+.3f}"
    if kept:
        verdict = "yes" if diff >= -NOISE else "no"
        if diff > NOISE:
            how = f"{a} is even above {b}"
        elif diff >= -NOISE:
            how = f"{a} keeps {b}'s {what} within {NOISE:.2f} (the probe's noise)"
        else:
            how = f"{a} loses more than the noise ({NOISE:.2f}): not reproduced here"
    elif diff > NOISE:
        verdict, how = "yes", f"{a} beats {b} by more than the noise ({NOISE:.2f})"
    elif diff >= -NOISE:
        verdict = "tie"
        how = (
            f"within the noise ({NOISE:.2f}): this run neither reproduces nor contradicts the claim"
        )
    else:
        verdict, how = "no", f"{a} falls below {b} by more than the noise: not reproduced here"
    return Claim(claim, paper, ours, verdict, f"{base}; {how}.")


def _collapse_claim(std: Table, probe: Table, k: int, regime: str, collapses: bool) -> Claim:
    """Whether ``regime`` collapsed at the last block (``collapses``: the claim is that it
    does; otherwise that it does not). Collapsed means both signals at once: a feature
    spread below COLLAPSE_RATIO of E2E's and an action probe more than twice NOISE below
    E2E's. A low spread alone is not collapse: mean-pooled features share a large common
    direction, and a representation whose clips differ along small directions can still
    be read out well (blockwise training shows such spreads with a good probe)."""
    if collapses:
        claim = f"{regime} targets without freezing collapse"
        paper = "collapse (SSv2 top-1 50.1 \u2192 3.7)"
    else:
        claim = f"{regime}'s latent targets do not collapse"
        paper = "no collapse (frozen layers give fixed targets)"
    s, e = _last(std, regime, k), _last(std, "e2e", k)
    p, pe = _last(probe, regime, k), _last(probe, "e2e", k)
    if s is None or e is None or p is None or pe is None or e.mean <= 0:
        return Claim(claim, paper, "not run", "n/a", f"Needs {regime} and e2e runs.")
    ratio, drop = s.mean / e.mean, pe.mean - p.mean
    low, lost = ratio < COLLAPSE_RATIO, drop > 2 * NOISE
    collapsed = low and lost
    verdict = "yes" if collapsed == collapses else "no"
    sentence = (
        f"Last block: feature std {regime} {s.mean:.3f} vs e2e {e.mean:.3f} ({ratio:.2f}x), "
        f"action probe {p.mean:.3f} vs {pe.mean:.3f} ({-drop:+.3f}). Collapse needs a spread "
        f"below {COLLAPSE_RATIO:g}x e2e's and a probe more than {2 * NOISE:.2f} below it; "
    )
    if collapsed:
        sentence += "both hold: the clips' features pile up and lose what e2e's carry"
    elif low:
        sentence += "the spread is low but the probe holds: not collapsed"
    elif lost:
        sentence += "the probe falls but the features still spread: worse, not collapsed"
    else:
        sentence += "neither holds"
    if collapses and not collapsed:
        sentence += (
            ". Not reproduced here: a short run of a small model on synthetic clips may end "
            "before the collapse the paper sees over a long schedule"
        )
    return Claim(claim, paper, f"std {ratio:.2f}x, probe {-drop:+.3f}", verdict, sentence + ".")


def claims(rows: Sequence[ResultRow], group: Group) -> list[Claim]:
    """LayerLock's claims, each judged from ``group``'s last block."""
    k = group[2]
    probe = table(rows, group, "probe_acc", "action")
    mAP = table(rows, group, "map", "")
    std = table(rows, group, "feature_std", "")
    kept = _difference_claim(
        probe,
        k,
        "freeze",
        "e2e",
        "progressive freezing keeps e2e's accuracy",
        "kept, with fewer FLOPs and less memory",
        kept=True,
        what="action probe",
    )
    fm, em = _last(mAP, "freeze", k), _last(mAP, "e2e", k)
    if kept.verdict != "n/a" and fm is not None and em is not None:
        kept = replace(
            kept,
            sentence=f"{kept.sentence} Retrieval mAP: freeze {fm.mean:.3f}, e2e {em.mean:.3f}.",
        )
    out = [
        kept,
        _difference_claim(
            probe,
            k,
            "layerlock",
            "freeze",
            "layerlock >= freeze (latent targets vs pixels, same freezing)",
            "latent targets beat pixel-only training",
            kept=False,
            what="action probe",
        ),
        _difference_claim(
            probe,
            k,
            "layerlock",
            "e2e",
            "layerlock >= e2e (pixel-only MAE)",
            "beats pixel-only 4DS-G (SSv2, Kinetics top-1)",
            kept=False,
            what="action probe",
        ),
        _collapse_claim(std, probe, k, "latent", collapses=True),
        _collapse_claim(std, probe, k, "layerlock", collapses=False),
        _difference_claim(
            probe,
            k,
            "layerlock",
            "latent",
            "freezing is what keeps latent targets useful: layerlock > latent",
            "LayerLock works where latent without freezing collapses",
            kept=False,
            what="action probe",
        ),
        Claim(
            "latest target alone as good as the sum of all",
            "as good",
            "not run",
            "n/a",
            "Not measured: a run predicts either the latest target or all of them "
            "(layerlock.targets); compare two experiments to test it.",
        ),
    ]
    return out


def section(rows: Sequence[ResultRow]) -> str:
    """The section as HTML: per group the per-block tables and the claims."""
    esc = html.escape
    out = [
        "<h2>Layer-wise regimes: freezing and LayerLock</h2>",
        "<p>E2E trains every layer on pixels throughout; <b>freeze</b> freezes the first "
        "layers one after the other in the second half of the run, still on pixels; "
        "<b>layerlock</b> also switches the target at every freezing event to the output of "
        "the deepest frozen layer; <b>latent</b> switches targets the same way without "
        "freezing anything (the ablation that collapses in the LayerLock paper); "
        "<b>simultaneous</b> is blockwise training with a local loss per block. Cells are "
        "the mean over seeds (\u00b1 their standard deviation with several). The feature "
        "std is the spread of the test clips' pooled, L2-normalized features across clips "
        "(0: every clip maps to the same vector). Claims are judged on the last block; "
        f"differences within {NOISE:.2f} are ties. The paper's numbers come from large "
        "models trained long on real video; a short run of a small model on synthetic "
        "clips may not reproduce a claim, and the verdicts say so when it does not. Cost "
        "(FLOPs, memory) is not measured in this report.</p>",
    ]
    several = len(groups(rows)) > 1
    for group in groups(rows):
        model, objective, k = group
        if several:
            out.append(f"<h3>{esc(f'{model}, {objective}, K={k}')}</h3>")
        for metric, target, heading in TABLES:
            t = table(rows, group, metric, target)
            if not t:
                continue
            out.append(f"<h4>{esc(heading)} by block</h4>")
            out.append(_table_html(t, k))
        out.append("<h4>LayerLock's claims, our numbers</h4>")
        out.append(
            "<table><tr><th>claim</th><th>paper</th><th>ours (last block)</th>"
            "<th>reproduced</th><th>in words</th></tr>"
        )
        for c in claims(rows, group):
            cls = {"yes": "yes", "no": "no"}.get(c.verdict, "na")
            out.append(
                f"<tr><td>{esc(c.claim)}</td><td>{esc(c.paper)}</td><td>{esc(c.ours)}</td>"
                f"<td class='{cls}'>{esc(c.verdict)}</td><td>{esc(c.sentence)}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def _table_html(t: Table, k: int) -> str:
    esc = html.escape
    shown = (UNTRAINED, *COMPARED)
    order = sorted(t, key=lambda reg: (shown.index(reg), "") if reg in shown else (len(shown), reg))
    head = "".join(f"<th>block {b}</th>" for b in range(1, k + 1))
    lines = [f"<table><tr><th>regime</th>{head}</tr>"]
    for regime in order:
        texts = [t[regime][b].text() if b in t[regime] else DASH for b in range(1, k + 1)]
        cells = "".join(f"<td>{esc(x)}</td>" for x in texts)
        lines.append(f"<tr><td>{esc(regime)}</td>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)
