"""report.html: one self-contained page (figures embedded) from results.csv alone."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from bwssl.analysis.requirements import SKIPPED_FILE, SkippedMetric, read_skipped
from bwssl.analysis.results import ResultRow, read_results
from bwssl.base.files import atomic_write_text
from bwssl.errors import UserError
from bwssl.report import protocol
from bwssl.report.figures import PIXEL_OBJECTIVE, draw_all
from bwssl.report.head_probe import has_head_rows
from bwssl.report.head_probe import section as head_probe_section
from bwssl.report.layerwise import has_layerwise
from bwssl.report.layerwise import section as layerwise_section
from bwssl.report.panels import UNTRAINED, objectives_of
from bwssl.report.resnet_paper import has_resnet_rows
from bwssl.report.resnet_paper import section as resnet_paper_section
from bwssl.report.skipped import section as skipped_section
from bwssl.report.summary import objectives_table
from bwssl.report.verdicts import Comparison, comparisons, models_judged

__all__ = ["Comparison", "comparisons", "render", "report_from_results", "write_report"]

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
    experiment: dict[str, Any] | None,
    configs: list[str],
    paper_model: str | None,
    skipped: list[SkippedMetric] | None = None,
) -> str:
    """The report page as one HTML string (PNG figures inlined as base64).

    Each model is judged for its own paper size (:mod:`bwssl.report.verdicts`);
    ``paper_model`` (tiny, small) is the size for models that are neither
    DeiT-Tiny nor DeiT-Small. ``experiment`` and ``configs`` are appended for
    the record when given; ``skipped``: the metrics not computed (too few
    clips), each marked with its reason.
    """
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>bwssl report</title>",
        f"<style>{_STYLE}</style></head><body><h1>bwssl report</h1>",
    ]
    measured = [r for r in rows if r.metric != protocol.SETUP]
    runs = sorted({(r.run, r.regime, r.num_blocks, r.seed) for r in measured})
    judged = models_judged(rows, paper_model)
    against = "; ".join(
        f"{m} with DeiT-{(size or '?').title()}" + ("" if m.startswith("deit-") else " (as asked)")
        for m, size in judged.items()
    )
    parts.append(
        f"<p>{len(runs)} runs analyzed; {len(measured)} result rows. The table compares "
        f"each model with the values the paper reports on UCF101 for its size: {esc(against)}. "
        "On the embedded synthetic data the absolute numbers differ from "
        "UCF101's; the comparison is about the direction and size of the gaps.</p>"
    )
    parts.append(protocol.section(rows))
    objectives = objectives_of(measured)
    others = [o for o in objectives if o != PIXEL_OBJECTIVE]
    parts.append("<h2>Headline comparisons</h2>")
    if others:
        trained = {(r.objective, r.run) for r in measured if r.regime != UNTRAINED}
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
        parts.append(objectives_table(measured))
    if has_head_rows(measured):
        parts.append(head_probe_section(measured))
    if has_layerwise(measured):
        parts.append(layerwise_section(measured))
    if has_resnet_rows(measured):
        parts.append(resnet_paper_section(rows))
    parts.append(skipped_section(skipped or []))
    parts.append("<h2>Figures</h2>")
    for fig in (f for f in figures if f.suffix == ".png"):
        data = base64.b64encode(fig.read_bytes()).decode()
        parts.append(
            f"<h3>{esc(fig.stem)}</h3><img alt='{esc(fig.stem)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    if experiment is not None:
        parts.append("<h2>Experiment</h2><pre>" + esc(_yaml(experiment)) + "</pre>")
    for text in configs:
        heading = "Training config (first run)"
        if len(configs) > 1:
            heading = f"Training config (first run of {_objective_name(text)})"
        parts.append(f"<h3>{esc(heading)}</h3><pre>" + esc(text) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _objective_name(config_yaml: str) -> str:
    import yaml

    cfg = yaml.safe_load(config_yaml) or {}
    return str((cfg.get("objective") or {}).get("name", PIXEL_OBJECTIVE))


def _judge(rows: list[ResultRow], paper_model: str | None) -> None:
    """Raise UserError when a model of ``rows`` needs ``paper_model`` and it is missing."""
    unsized = [m for m, size in models_judged(rows, paper_model).items() if size is None]
    if unsized:
        raise UserError(
            f"the results do not say which of the paper's models {', '.join(unsized)} stands "
            "for (neither deit-tiny nor deit-small): give --paper-model tiny or small"
        )


def write_report(
    path: Path,
    results_csv: Path,
    experiment: Any,
    configs: list[str],
    paper_model: str | None = None,
    figures_dir: Path | None = None,
) -> Path:
    """Draw the figures (into ``figures_dir``, default next to ``results_csv``) and write
    the self-contained report; ``paper_model`` defaults to the experiment's (``tiny`` when it
    names none). Without either, rows of a model of neither paper size raise UserError."""
    rows = read_results(results_csv)
    exp = (
        None
        if experiment is None
        else dict(experiment if isinstance(experiment, dict) else vars(experiment))
    )
    if paper_model is None and exp is not None:
        paper_model = exp.get("paper_model", "tiny")  # the experiment's default
    _judge(rows, paper_model)
    figures = draw_all(rows, figures_dir or Path(results_csv).parent / "figures")
    skipped = read_skipped(Path(results_csv).parent / SKIPPED_FILE)
    page = render(rows, figures, exp, configs, paper_model, skipped)
    atomic_write_text(Path(path), page)
    return Path(path)


def report_from_results(
    results_csv: Path,
    out: Path,
    paper_model: str | None = None,
    figures_dir: Path | None = None,
) -> Path:
    """The report of ``results_csv`` (``bwssl report``; ``bwssl run`` writes its own this way).

    Verdicts and figures come from the rows alone. When ``results_csv`` lies in
    a ``bwssl run`` folder (``OUT/analysis/results.csv``), the experiment
    (``OUT/experiment.yaml``, which also gives the paper model unless
    ``paper_model`` is set) and the training config of each objective's first
    run (``OUT/runs/RUN/config.yaml``) are appended as that command does.
    """
    import yaml

    results_csv = Path(results_csv)
    if not results_csv.is_file():
        raise UserError(f"{results_csv} does not exist (give a results.csv)")
    try:
        rows = read_results(results_csv)
    except (ValueError, KeyError) as e:
        raise UserError(f"{results_csv}: {e}") from None
    root = results_csv.parent.parent
    spec = root / "experiment.yaml"
    experiment = yaml.safe_load(spec.read_text()) if spec.is_file() else None
    firsts: dict[str, str] = {}
    for r in rows:
        if r.metric != protocol.SETUP:
            firsts.setdefault(r.objective, r.run)
    configs = []
    for run in firsts.values():
        cfg = root / "runs" / run / "config.yaml"
        if cfg.is_file():
            configs.append(cfg.read_text())
    return write_report(out, results_csv, experiment, configs, paper_model, figures_dir)
