"""Trains several tiny-debug runs in one set of torchrun processes (one start-up for all).

``python pipeline_runs.py RUNS.json``: RUNS.json holds a list of ``[out, [overrides]]``;
each is trained with :func:`bwssl.train.trainer.train` in turn, in the same process group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from bwssl.config import load_config
from bwssl.train.trainer import train

if __name__ == "__main__":
    torch.set_num_threads(1)
    for out, overrides in json.loads(Path(sys.argv[1]).read_text()):
        train(load_config("tiny-debug", overrides), Path(out))
