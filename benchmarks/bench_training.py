"""Training-step throughput and peak memory of every regime: the code of ``bwssl bench``.

    python benchmarks/bench_training.py --device cpu --json benchmarks/results/cpu.json

takes the same options as ``bwssl bench`` (see benchmarks/README.md).
"""

from __future__ import annotations

import sys

from bwssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
