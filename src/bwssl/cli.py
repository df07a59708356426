"""The ``bwssl`` command: train, analyze, run, report, bench, data, export-hf,
layer-convergence.

User errors (bad config, missing files) print one ``error:`` line and exit
with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from bwssl.errors import RunStopped, UserError

Handler = Callable[[argparse.Namespace], int]


def _cmd_train(args: argparse.Namespace) -> int:
    from bwssl.config import load_config, parse_override
    from bwssl.train.trainer import train

    changed = [parse_override(o)[0] for o in args.resume_with]
    cfg = load_config(args.config, [*args.overrides, *args.resume_with])
    train(cfg, Path(args.out), resume_with=changed)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one run (any regime)",
        description="Train one run. Rerunning on an existing RUN_DIR resumes it.",
    )
    p.add_argument("config", help="preset name (e.g. tiny-debug, deit-tiny) or a YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. regime=e2e train.epochs=5")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument(
        "--resume-with",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="continue the run in --out with a new train.lr, train.min_lr or train.clip_grad "
        "(after a divergence); the change is logged in RUN_DIR/resumes.jsonl",
    )
    p.set_defaults(func=_cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bwssl",
        description="Blockwise self-supervised learning for video ViTs, with depth-resolved analyses.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    from bwssl.analysis.commands import add_analyze_parser
    from bwssl.bench import add_bench_parser
    from bwssl.data.commands import add_data_parser
    from bwssl.experiment import add_run_parser
    from bwssl.interop.commands import add_export_parser
    from bwssl.layer_convergence import add_layer_convergence_parser
    from bwssl.report.commands import add_report_parser

    for add in (
        add_data_parser,
        add_analyze_parser,
        add_run_parser,
        add_report_parser,
        add_export_parser,
        add_bench_parser,
        add_layer_convergence_parser,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come after options (`train tiny-debug --out R regime=e2e`): argparse
    # leaves those as extras, which count as overrides for commands that take them.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
