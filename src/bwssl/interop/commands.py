"""``bwssl export-hf RUN_DIR OUT``: a trained run as a Hugging Face VideoMAE checkpoint.

transformers is imported only when the command runs, so ``bwssl --help`` works
without the ``hf`` extra.
"""

from __future__ import annotations

import argparse
import json


def _cmd_export(args: argparse.Namespace) -> int:
    from bwssl.interop.hf import export_hf

    out = export_hf(args.run_dir, args.out, decoder=not args.encoder_only)
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    print(
        f"wrote {arch} checkpoint to {out} (load with transformers "
        f"VideoMAEModel.from_pretrained or {arch}.from_pretrained)"
    )
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export-hf`` on the ``bwssl`` subcommand parser."""
    p = sub.add_parser(
        "export-hf",
        help="write a run's encoder as a Hugging Face VideoMAE checkpoint",
        description="Write a trained run's encoder (and its last-block decoder, if any) as a "
        "Hugging Face VideoMAE checkpoint folder: config.json + model.safetensors, "
        "loadable with transformers.VideoMAEModel.from_pretrained(OUT). "
        "Needs the hf extra: pip install 'bwssl[hf]'.",
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="run directory (checkpoints/final.pt, else last.pt) or a checkpoint file",
    )
    p.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    p.add_argument(
        "--encoder-only",
        action="store_true",
        help="leave out the last block's decoder (writes a VideoMAEModel checkpoint)",
    )
    p.set_defaults(func=_cmd_export)
