"""The analysis suite: every depth-resolved metric, for every block of every run.

:func:`analyze` takes run directories (``bwssl train`` output) or Hugging
Face VideoMAE checkpoint folders (:mod:`bwssl.analysis.sources`) and writes, under
``out_dir``:

- ``results.csv``: the tidy table (:mod:`bwssl.analysis.results`), one row
  per (run, block, metric, target, repeat). Blocks are 1-based.
- ``aggregate.csv``: mean, std and n across runs (seeds).
- ``skipped.csv``: (run, metric, reason) of every wanted metric that the
  clips are too few for (:mod:`bwssl.analysis.requirements`); the others
  are still computed.
- ``runs/<run>.csv`` (+ ``.json``): each run's rows and the key they were
  computed under (the encoder's content hash and the options). A rerun
  skips runs whose key is unchanged.
- ``features/``: the block-feature cache (:mod:`bwssl.analysis.features`),
  keyed by the encoder's content and the clips, so changing an option that
  does not touch the features (probe repeats, CKA kind) reruns the metrics
  without running the encoder again.

The suite draws no figures: ``bwssl analyze`` (:mod:`bwssl.analysis.commands`)
draws them into ``out_dir/figures/`` afterwards when ``options.figures``, and
the experiment's report draws them next to ``results.csv``.

Metrics, by family; each family is a module
with ``METRICS_HANDLED`` and ``run(ctx)`` on the run's
:class:`~bwssl.analysis.context.RunContext`, and is called when one of its
metrics is wanted:

- :mod:`bwssl.analysis.clip_metrics`: ``probe_acc``, ``knn_acc`` (the kNN monitor of
  :mod:`bwssl.analysis.knn`), ``map`` (each also on the heads' pooled vectors:
  ``probe_acc_head``, ``knn_acc_head``, ``map_head``), ``cka_next``, ``cps``,
  ``feature_std`` (the collapse measure) (action clips);
- :mod:`bwssl.analysis.local_losses`: ``local_loss``, ``mse``;
- :mod:`bwssl.analysis.gratings`: ``probe_l1``, ``probe_l2``, ``occdrop_l1``,
  ``occdrop_l2``.
- :mod:`bwssl.analysis.run_setup`: ``setup`` (no measurement: the token grid,
  masking count and learning-rate recipe the numbers stand on).

What each option does: :class:`~bwssl.analysis.options.AnalysisOptions`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from bwssl.analysis import clip_metrics, gratings, local_losses, run_setup
from bwssl.analysis import features as feat
from bwssl.analysis.context import MetricFamily, RunContext
from bwssl.analysis.options import RESULTS_VERSION, AnalysisOptions
from bwssl.analysis.requirements import SKIPPED_FILE, SkippedMetric, read_skipped, write_skipped
from bwssl.analysis.results import (
    ResultRow,
    aggregate,
    merge_rows,
    read_results,
    write_aggregate,
    write_results,
)
from bwssl.analysis.sources import Source, open_source
from bwssl.base.files import atomic_write_text
from bwssl.base.hardware import resolve_device
from bwssl.errors import UserError

logger = logging.getLogger(__name__)

FAMILIES: tuple[MetricFamily, ...] = (clip_metrics, local_losses, gratings, run_setup)
"""The metric families, in the order they run; together they handle every metric."""


def _run_key(src: Source, options: AnalysisOptions, device: torch.device) -> str:
    text = json.dumps(
        {
            "version": RESULTS_VERSION,
            "encoder": src.digest,
            "options": options.result_identity(device),
            "data": asdict(options.data.apply(src.config.data)),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_run(
    out_dir: Path, name: str, key: str
) -> tuple[list[ResultRow], list[SkippedMetric]] | None:
    meta, table = out_dir / "runs" / f"{name}.json", out_dir / "runs" / f"{name}.csv"
    if not (meta.is_file() and table.is_file()):
        return None
    try:
        about = json.loads(meta.read_text())
        if about.get("key") != key:
            return None
        skipped = [SkippedMetric(name, m, why) for m, why in about.get("skipped", [])]
        return read_results(table), skipped
    except (ValueError, OSError, TypeError):
        return None


def _save_run(
    out_dir: Path, src: Source, key: str, rows: list[ResultRow], skipped: list[SkippedMetric]
) -> None:
    (out_dir / "runs" / f"{src.name}.json").unlink(missing_ok=True)  # the key goes last
    write_results(out_dir / "runs" / f"{src.name}.csv", rows)
    about = {
        "key": key,
        "source": str(src.path),
        "kind": src.kind,
        "encoder_sha256": src.digest,
        "skipped": [[s.metric, s.reason] for s in skipped],
    }
    atomic_write_text(out_dir / "runs" / f"{src.name}.json", json.dumps(about, indent=2) + "\n")


@contextlib.contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads and the BLAS libraries' threads set to ``n`` (None: as they are)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n, "blas"):
            yield
    finally:
        torch.set_num_threads(before)


def analyze_source(
    src: Source,
    options: AnalysisOptions,
    device: torch.device,
    cache: feat.FeatureCache,
    skipped: list[SkippedMetric] | None = None,
) -> list[ResultRow]:
    """Every selected metric of one encoder (no per-run result cache); the metrics its clips
    are too few for are appended to ``skipped`` (when given)."""
    with warnings.catch_warnings(record=True) as caught, _cpu_threads(options.cpu_threads):
        warnings.simplefilter("always", ConvergenceWarning)
        ctx = RunContext(src, options, device, cache)
        for family in FAMILIES:
            if ctx.want.intersection(family.METRICS_HANDLED):
                family.run(ctx)
        rows = ctx.rows
        if skipped is not None:
            skipped += ctx.skipped
    hits = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    if hits:
        logger.warning(
            "%s: %d probe fits stopped at probe_max_iter=%d before converging",
            src.name,
            hits,
            options.probe_max_iter,
        )
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return rows


def analyze(run_dirs: list[Path], out_dir: Path, options: AnalysisOptions) -> Path:
    """Run the suite on every run (or HF folder) of ``run_dirs``; returns ``out_dir/results.csv``.

    Runs already analysed under the same encoder content and options (their
    ``out_dir/runs/<run>.json`` key) are read back instead of recomputed;
    features are cached under ``options.cache_dir`` (default
    ``out_dir/features``). ``results.csv`` keeps the rows already in it
    except those of the runs and metrics computed here, which are replaced
    (so ``metrics=[cka_next] cka=both`` adds RBF rows to a finished table,
    and fewer probe repeats leave no stale repeat behind).
    """
    if not run_dirs:
        raise UserError("give at least one run directory to analyze")
    sources = [open_source(p, options) for p in run_dirs]
    names: dict[str, Path] = {}
    for s in sources:
        if s.name in names:
            raise UserError(
                f"two runs are named {s.name!r} ({names[s.name]} and {s.path}); "
                "results are keyed by the folder name: analyze them into "
                "different --out folders or rename one"
            )
        names[s.name] = s.path
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    cache = feat.FeatureCache(options.cache_dir or out_dir / "features")
    new: list[ResultRow] = []
    new_skipped: list[SkippedMetric] = []
    for i, src in enumerate(sources):
        key = _run_key(src, options, device)
        cached = _cached_run(out_dir, src.name, key)
        if cached is not None:
            rows, skipped = cached
            print(
                f"[{i + 1}/{len(sources)}] {src.name}: done before, reusing its results",
                file=sys.stderr,
            )
        else:
            t0 = time.perf_counter()
            skipped = []
            rows = analyze_source(src, options, device, cache, skipped)
            _save_run(out_dir, src, key, rows, skipped)
            print(
                f"[{i + 1}/{len(sources)}] {src.name}: {len(rows)} results in "
                f"{time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
        new += rows
        new_skipped += skipped
    results = out_dir / "results.csv"
    redone = options.produced_metrics()
    kept = [r for r in read_results(results) if not (r.run in names and r.metric in redone)]
    table = merge_rows(kept, new)
    write_results(results, table)
    old_skipped = read_skipped(out_dir / SKIPPED_FILE)
    kept_skipped = [s for s in old_skipped if not (s.run in names and s.metric in redone)]
    write_skipped(out_dir / SKIPPED_FILE, kept_skipped + new_skipped)
    write_aggregate(out_dir / "aggregate.csv", aggregate(table))
    return results
