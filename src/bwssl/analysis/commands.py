"""``bwssl analyze RUN_DIR [RUN_DIR ...] --out DIR [KEY=VALUE ...]``: the analysis suite.

Arguments of the form ``key=value`` (a dotted name, ``=``, a YAML value) set
:class:`~bwssl.analysis.options.AnalysisOptions`; everything else is a run
directory or a Hugging Face VideoMAE checkpoint folder. The suite is
imported only when the command runs, so ``bwssl --help`` stays fast.

The suite computes the tables; this command layer draws the figures
(:func:`analyze_and_draw`), since the report draws figures and the analysis does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bwssl.analysis.options import AnalysisOptions

_OPTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def split_arguments(args: list[str]) -> tuple[list[Path], list[str]]:
    """Run folders and ``key=value`` options from the positional arguments.

    An argument that names an existing path is a folder even if it contains ``=``.
    """
    runs: list[Path] = []
    options: list[str] = []
    for a in args:
        if _OPTION.match(a) and not Path(a).exists():
            options.append(a)
        else:
            runs.append(Path(a))
    return runs, options


def analyze_and_draw(run_dirs: list[Path], out_dir: Path, options: AnalysisOptions) -> Path:
    """What ``bwssl analyze`` does with its parsed arguments: the suite
    (:func:`~bwssl.analysis.suite.analyze`), then, when ``options.figures``, the figures of
    the whole ``results.csv`` into ``out_dir/figures``. Returns ``out_dir/results.csv``."""
    from bwssl.analysis.suite import analyze

    results = analyze(run_dirs, out_dir, options)
    if options.figures:
        from bwssl.report.figures import draw_all

        draw_all(results, Path(out_dir) / "figures")
    return results


def _cmd_analyze(args: argparse.Namespace) -> int:
    from bwssl.analysis.options import options_from_overrides
    from bwssl.errors import UserError

    # `bwssl.cli.main` appends key=value arguments given after --out to `overrides`
    runs, overrides = split_arguments([*args.args, *args.overrides])
    options = options_from_overrides(overrides)  # bad keys fail before any path is touched
    if not runs:
        raise UserError("give at least one run directory (or Hugging Face checkpoint folder)")
    missing = [str(p) for p in runs if not p.is_dir()]
    if missing:
        what = "does not exist" if not Path(missing[0]).exists() else "is not a folder"
        raise UserError(
            f"{missing[0]} {what}; give run directories (bwssl train --out) or "
            "Hugging Face VideoMAE checkpoint folders"
            + (f" ({len(missing) - 1} more bad paths)" if len(missing) > 1 else "")
        )
    if args.out is None:
        if len(runs) > 1:
            raise UserError("several runs need --out DIR (one folder for all their results)")
        out = runs[0] / "analysis"
    else:
        out = Path(args.out)
    results = analyze_and_draw(runs, out, options)
    print(f"results: {results}")
    return 0


def _option_list() -> str:
    from bwssl.analysis.options import AnalysisOptions, DataOverrides

    def fmt(v: object) -> str:
        if isinstance(v, list):
            return "[" + ",".join(map(str, v)) + "]"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    opts = AnalysisOptions()
    items = [
        f"{f.name}={fmt(getattr(opts, f.name))}"
        for f in dataclasses.fields(opts)
        if f.name != "data"
    ]
    data = ", ".join(f.name for f in dataclasses.fields(DataOverrides))
    return (
        "options (KEY=VALUE): "
        + ", ".join(items)
        + f". data.KEY=VALUE changes the clips analysed ({data}); see "
        "bwssl.analysis.options.AnalysisOptions for what each does."
    )


def add_analyze_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``analyze`` on the ``bwssl`` subcommand parser."""
    p = sub.add_parser(
        "analyze",
        help="the depth-resolved analysis suite on trained runs",
        description="Run every analysis (probes, retrieval mAP, reconstruction MSE, grating "
        "probes, CKA, OccDrop, CPS) on every block of each run, and write "
        "DIR/results.csv, DIR/aggregate.csv and DIR/figures/. Features and "
        "finished runs are cached: rerunning skips done work.",
        epilog=_option_list(),
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="RUN_DIR | KEY=VALUE",
        help="run directories or Hugging Face VideoMAE folders, and analysis "
        "options such as grating_clips=96 or data.root=/data/UCF101",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default RUN_DIR/analysis for a single run)"
    )
    p.set_defaults(func=_cmd_analyze, overrides=[])
