"""``bwssl bench``: training-step throughput and peak memory of every objective and regime,
side by side.

Every run drives the trainer's own step on a synthetic batch, so the numbers
are those of real training minus data loading (:mod:`bwssl.bench.runners`).
All runs of one invocation share one process, one device and one set of
settings; for each size:

- every objective of ``--objectives`` (default masked_pixels) in e2e,
  simultaneous, and chosen stages of sequential (by default the first, which
  trains block 1 alone, and the last, which runs blocks 1..K-1 frozen under
  ``no_grad`` and trains block K), on the same backbone;
- when transformers is installed and masked_pixels is measured, the same
  configuration in ``transformers.VideoMAEForPreTraining`` (same token grid,
  tube mask, decoder and normalized-pixel loss, SDPA attention, AdamW, same
  autocast) as the reference.

Timing: ``--warmup`` untimed steps, then the median wall time of ``--steps``
steps, one step of every run in turn (synchronized on GPU). Throughput is
clips per second of that median.

Peak memory (:class:`PeakMemory`) covers building the model and optimizer,
the batch and two optimizer steps (the first creates AdamW's state), counted
from what was live before, so a run's peak is params + grads + optimizer state
+ batch + the largest activation footprint.

Modules: :mod:`~bwssl.bench.memory` (peak memory), :mod:`~bwssl.bench.runners`
(building and timing runs), :mod:`~bwssl.bench.results` (ratios, targets,
table, machine), :mod:`~bwssl.bench.sizes`, :mod:`~bwssl.bench.command` (the
whole benchmark and its command line).
"""

from bwssl.bench.command import add_bench_parser, benchmark
from bwssl.bench.memory import PeakMemory
from bwssl.bench.results import TARGETS, format_table, machine
from bwssl.bench.runners import HF_RUN, MEMORY_STEPS, RunResult
from bwssl.bench.sizes import DEFAULT_SIZES, SIZES, Size

__all__ = [
    "DEFAULT_SIZES",
    "HF_RUN",
    "MEMORY_STEPS",
    "SIZES",
    "TARGETS",
    "PeakMemory",
    "RunResult",
    "Size",
    "add_bench_parser",
    "benchmark",
    "format_table",
    "machine",
]
