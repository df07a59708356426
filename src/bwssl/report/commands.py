"""``bwssl report RESULTS_CSV --out report.html``: the report re-rendered from results rows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_report(args: argparse.Namespace) -> int:
    from bwssl.report.html import report_from_results

    out = report_from_results(
        Path(args.results),
        Path(args.out),
        args.paper_model,
        Path(args.figures) if args.figures else None,
    )
    print(f"report: {out}", file=sys.stderr)
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="the report (figures and verdicts) from a results.csv alone",
        description="Render report.html from the tidy rows of a results.csv: the figures and "
        "the verdicts on the paper's claims, nothing recomputed. Inside a `bwssl run` folder "
        "(OUT/analysis/results.csv) the page is the one `bwssl run` writes.",
    )
    p.add_argument("results", help="a results.csv (bwssl analyze or bwssl run output)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument(
        "--paper-model",
        choices=("tiny", "small"),
        default=None,
        help="the paper's model size to judge against when the rows do not say (models "
        "other than deit-tiny and deit-small); default: the run folder's experiment.yaml",
    )
    p.add_argument(
        "--figures", default=None, help="folder for the figures (default: next to RESULTS)"
    )
    p.set_defaults(func=_cmd_report)
