"""report.html: one self-contained page (figures embedded) from results.csv alone."""

from __future__ import annotations

import base64
import html
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bwssl.analysis.requirements import SKIPPED_FILE, SkippedMetric, read_skipped
from bwssl.analysis.results import ResultRow, read_results
from bwssl.base.files import atomic_write_text
from bwssl.report.figures import PIXEL_OBJECTIVE, draw_all
from bwssl.report.head_probe import has_head_rows
from bwssl.report.head_probe import section as head_probe_section
from bwssl.report.layerwise import has_layerwise
from bwssl.report.layerwise import section as layerwise_section
from bwssl.report.panels import UNTRAINED, objectives_of
from bwssl.report.skipped import section as skipped_section
from bwssl.report.summary import objectives_table

# What the paper reports on UCF101.
PAPER = {
    "tiny": {"probe_gap": 0.02, "map_gap": 0.015},
    "small": {"probe_gap": 0.04, "map_gap": 0.02},
}


@dataclass(frozen=True)
class Comparison:
    claim: str
    paper: str
    ours: str
    agrees: bool | None
    """None when our experiment did not produce what the row needs."""
    sentence: str


def _per_run(rows: Iterable[ResultRow], metric: str, target: str = "") -> dict[tuple, float]:
    """(regime, K, seed, block) -> value averaged over repeats."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r.metric == metric and r.target == target:
            acc[(r.regime, r.num_blocks, r.seed, r.block)].append(r.value)
    return {k: statistics.fmean(v) for k, v in acc.items()}


def _last_block(values: dict[tuple, float], regime: str, k: int) -> list[float]:
    return [v for (reg, kk, _s, b), v in values.items() if reg == regime and kk == k and b == k]


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _gap_row(
    values: dict[tuple, float],
    k: int,
    a: str,
    b: str,
    what: str,
    bound: float,
    absolute: bool = False,
) -> Comparison:
    xa, xb = _last_block(values, a, k), _last_block(values, b, k)
    claim = f"|{a} - {b}| {what}, K={k}" if absolute else f"{what} gap {a} - {b}, K={k}"
    paper = f"{'<' if absolute else '<='} {bound:.3f}"
    if not xa or not xb:
        return Comparison(
            claim, paper, "not run", None, f"This experiment has no {a} or {b} run at K={k}."
        )
    (ma, sa), (mb, sb) = _mean_sd(xa), _mean_sd(xb)
    gap = ma - mb
    value = abs(gap) if absolute else gap
    ok = value < bound if absolute else value <= bound
    noise = max(sa, sb)
    sentence = (
        f"{a} {ma:.3f} (sd {sa:.3f}) vs {b} {mb:.3f} (sd {sb:.3f}) over "
        f"{min(len(xa), len(xb))} seeds: the {'difference' if absolute else 'gap'} "
        f"{value:+.3f} {'agrees with' if ok else 'does not agree with'} the paper's "
        f"{paper}."
    )
    if noise and abs(value) < noise:
        sentence += " It is within one seed standard deviation."
    return Comparison(claim, paper, f"{value:+.3f}", ok, sentence)


def _cka_rows(cka: dict[tuple, float], k: int) -> list[Comparison]:
    out = []
    first = {
        reg: [v for (r, kk, _s, b), v in cka.items() if r == reg and kk == k and b == 1]
        for reg in ("e2e", "simultaneous")
    }
    claim = f"CKA block 1->2, e2e vs simultaneous, K={k}"
    paper = "e2e ~0.90 < BWSSL ~0.98 (Small)"
    if first["e2e"] and first["simultaneous"]:
        me, ms = statistics.fmean(first["e2e"]), statistics.fmean(first["simultaneous"])
        ok = ms > me
        out.append(
            Comparison(
                claim,
                paper,
                f"{me:.3f} vs {ms:.3f}",
                ok,
                f"Blockwise training {'keeps' if ok else 'does not keep'} the "
                f"first transition more geometry-preserving than E2E "
                f"({ms:.3f} vs {me:.3f}).",
            )
        )
    else:
        out.append(Comparison(claim, paper, "not run", None, "Needs e2e and simultaneous runs."))
    late = [
        v
        for (r, kk, _s, b), v in cka.items()
        if r == "simultaneous" and kk == k and b >= max(2, k // 2)
    ]
    claim = f"CKA of late transitions, simultaneous, K={k}"
    if late:
        low = min(late)
        ok = low > 0.98
        out.append(
            Comparison(
                claim,
                "> 0.98",
                f"min {low:.3f}",
                ok,
                f"The lowest late-transition CKA is {low:.3f}; late blocks "
                f"{'barely change' if ok else 'still change'} the representation.",
            )
        )
    else:
        out.append(Comparison(claim, "> 0.98", "not run", None, "Needs simultaneous runs."))
    return out


def _granularity_rows(probe: dict[tuple, float], mAP: dict[tuple, float]) -> list[Comparison]:
    out = []
    for name, values, bound in (("mAP", mAP, 0.01), ("probe accuracy", probe, 0.02)):
        x4, x6 = _last_block(values, "simultaneous", 4), _last_block(values, "simultaneous", 6)
        claim = f"K=6 lowers {name} (simultaneous) by"
        if not x4 or not x6:
            out.append(
                Comparison(
                    claim,
                    f"< {bound}",
                    "not run",
                    None,
                    "This experiment did not train both K=4 and K=6.",
                )
            )
            continue
        drop = statistics.fmean(x4) - statistics.fmean(x6)
        ok = drop < bound
        out.append(
            Comparison(
                claim,
                f"< {bound}",
                f"{drop:+.3f}",
                ok,
                f"K=4 {statistics.fmean(x4):.3f} vs K=6 {statistics.fmean(x6):.3f}: "
                f"{'agrees' if ok else 'does not agree'} with the paper.",
            )
        )
    return out


def _untrained_row(probe: dict[tuple, float], k: int) -> Comparison:
    """How far training lifts the action probe above the same encoder at initialization."""
    claim = f"action probe gained over the untrained encoder, K={k}"
    base = _last_block(probe, "untrained", k)
    trained = {reg: _last_block(probe, reg, k) for reg in ("e2e", "simultaneous", "sequential")}
    trained = {reg: xs for reg, xs in trained.items() if xs}
    if not base or not trained:
        return Comparison(
            claim,
            "not reported",
            "not run",
            None,
            "Needs an untrained run (regime untrained) and trained runs.",
        )
    b = statistics.fmean(base)
    gains = {reg: statistics.fmean(xs) - b for reg, xs in trained.items()}
    ours = ", ".join(f"{reg} {g:+.3f}" for reg, g in gains.items())
    sentence = (
        f"The untrained encoder's last block scores {b:.3f}; training adds "
        + ", ".join(f"{g:+.3f} ({reg})" for reg, g in gains.items())
        + ". The paper does not report this reference; without it, a probe accuracy "
        "cannot be read as what self-supervision learned."
    )
    return Comparison(claim, "not reported", ours, None, sentence)


def pixel_rows(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """The rows the paper's comparisons are about: masked-pixel runs and the untrained encoder
    (the same for every objective)."""
    return [r for r in rows if r.objective == PIXEL_OBJECTIVE or r.regime == UNTRAINED]


def comparisons(rows: list[ResultRow], paper_model: str) -> list[Comparison]:
    """The headline comparisons of the paper, computed from the results rows of masked-pixel
    runs (and the untrained reference); rows of other objectives are left out."""
    rows = pixel_rows(rows)
    probe = _per_run(rows, "probe_acc", "action")
    if not probe:
        probe = _per_run(rows, "probe_acc")
    mAP = _per_run(rows, "map")
    ks = sorted({r.num_blocks for r in rows})
    k = 4 if 4 in ks else (ks[0] if ks else 4)
    bounds = PAPER[paper_model]
    out = [
        _gap_row(probe, k, "e2e", "simultaneous", "probe accuracy", bounds["probe_gap"]),
        _gap_row(mAP, k, "e2e", "simultaneous", "mAP", bounds["map_gap"]),
        _gap_row(probe, k, "sequential", "simultaneous", "probe accuracy", 0.01, absolute=True),
    ]
    out += _cka_rows(_per_run(rows, "cka_next"), k)
    out += _granularity_rows(probe, mAP)
    out.append(_untrained_row(probe, k))
    return out


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f3f3f3}.yes{color:#176f2c}.no{color:#a11}
.na{color:#777}img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;
padding:1em;overflow:auto;font-size:12px}
"""


def render(
    rows: list[ResultRow],
    figures: list[Path],
    experiment: dict[str, Any],
    configs: list[str],
    paper_model: str,
    skipped: list[SkippedMetric] | None = None,
) -> str:
    """The report page as one HTML string (PNG figures inlined as base64); ``skipped``: the
    metrics not computed (too few clips), each marked with its reason."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>bwssl report</title>",
        f"<style>{_STYLE}</style></head><body><h1>bwssl report</h1>",
    ]
    runs = sorted({(r.run, r.regime, r.num_blocks, r.seed) for r in rows})
    parts.append(
        f"<p>{len(runs)} runs analyzed; {len(rows)} result rows. The table compares "
        f"our runs with the values the paper reports for DeiT-{paper_model.title()} on "
        "UCF101. On the embedded synthetic data the absolute numbers differ from "
        "UCF101's; the comparison is about the direction and size of the gaps.</p>"
    )
    objectives = objectives_of(rows)
    others = [o for o in objectives if o != PIXEL_OBJECTIVE]
    parts.append("<h2>Headline comparisons</h2>")
    if others:
        trained = {(r.objective, r.run) for r in rows if r.regime != UNTRAINED}
        pixels = sum(o == PIXEL_OBJECTIVE for o, _ in trained)
        parts.append(
            f"<p>This experiment trains the local objectives {esc(', '.join(objectives))}"
            ". The paper's comparisons are about masked pixel reconstruction: this "
            f"table is computed from the {PIXEL_OBJECTIVE} runs only ({pixels} of "
            f"{len(trained)} trained runs) and the untrained reference. The objectives x "
            "regimes table below compares all objectives.</p>"
        )
    parts.append(
        "<table><tr><th>comparison</th><th>paper</th>"
        "<th>ours</th><th>agrees</th><th>in words</th></tr>"
    )
    for c in comparisons(rows, paper_model):
        cls, word = {True: ("yes", "yes"), False: ("no", "no"), None: ("na", "n/a")}[c.agrees]
        parts.append(
            f"<tr><td>{esc(c.claim)}</td><td>{esc(c.paper)}</td><td>{esc(c.ours)}</td>"
            f"<td class='{cls}'>{word}</td><td>{esc(c.sentence)}</td></tr>"
        )
    parts.append("</table>")
    if others:
        parts.append(objectives_table(rows))
    if has_head_rows(rows):
        parts.append(head_probe_section(rows))
    if has_layerwise(rows):
        parts.append(layerwise_section(rows))
    parts.append(skipped_section(skipped or []))
    parts.append("<h2>Figures</h2>")
    for fig in (f for f in figures if f.suffix == ".png"):
        data = base64.b64encode(fig.read_bytes()).decode()
        parts.append(
            f"<h3>{esc(fig.stem)}</h3><img alt='{esc(fig.stem)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    parts.append("<h2>Experiment</h2><pre>" + esc(_yaml(experiment)) + "</pre>")
    for text in configs:
        heading = "Training config (first run)"
        if len(configs) > 1:
            heading = f"Training config (first run of {_objective_name(text)})"
        parts.append(f"<h3>{esc(heading)}</h3><pre>" + esc(text) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _objective_name(config_yaml: str) -> str:
    import yaml

    cfg = yaml.safe_load(config_yaml) or {}
    return str((cfg.get("objective") or {}).get("name", PIXEL_OBJECTIVE))


def write_report(path: Path, results_csv: Path, experiment: Any, configs: list[str]) -> Path:
    """Draw the figures next to ``results_csv`` and write the self-contained report."""
    rows = read_results(results_csv)
    figures = draw_all(rows, Path(results_csv).parent / "figures")
    exp = vars(experiment) if not isinstance(experiment, dict) else experiment
    skipped = read_skipped(Path(results_csv).parent / SKIPPED_FILE)
    page = render(rows, figures, exp, configs, exp.get("paper_model", "tiny"), skipped)
    atomic_write_text(Path(path), page)
    return Path(path)
