"""The tidy results table: one row per (run, block, metric, target, repeat).

``results.csv`` is the single source of every reported number and figure.
Columns (:data:`COLUMNS`):

- ``run``: the run's name (its directory name); one run is one seed.
- ``regime``, ``model``, ``num_blocks``, ``seed``: what the run is.
- ``block``: 1-based block index. For ``cka_next``, block k is the
  transition k -> k+1.
- ``metric``: ``probe_acc``, ``knn_acc``, ``map``, ``mse``, ``probe_l1``, ``probe_l2``,
  ``cka_next``, ``occdrop_l1``, ``occdrop_l2``, ``cps``, ``feature_std``, ...;
  ``probe_acc_head``, ``knn_acc_head`` and ``map_head`` are the first three on
  the vector a block's head pools before its projector instead of the
  backbone's pooled features.
- ``target``: the label a probe decodes (``action``, ``sf``, ``sf_match``,
  ...); empty when the metric has none.
- ``repeat``: repeat index (probe fits, occlusion locations); 0 when single.
- ``value``: the number.
- ``stderr``: its standard error where the suite measures one (grating
  probes and OccDrop: over the cross-validation folds); empty otherwise.
- ``protocol``: how the number was measured where the suite offers more
  than one way (e.g. ``per_clip,grey`` for OccDrop, ``10800 clips,5 folds``
  for a grating probe); empty otherwise.

Rows of metric ``setup`` (block 0) record what the numbers stand on, one fact
per target: the token grid (``grid_t``, ``grid_h``, ``grid_w``; a ResNet's OccDrop
window ``occlusion_window`` instead), the clip format, the masking count and the
learning-rate recipe (:mod:`bwssl.analysis.run_setup`).

Files are written atomically (a temporary file in the same folder, then
``os.replace``), so an interrupted write never leaves half a table.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from bwssl.base.files import atomic_write_text

COLUMNS: tuple[str, ...] = (
    "run",
    "regime",
    "objective",
    "model",
    "num_blocks",
    "seed",
    "block",
    "metric",
    "target",
    "repeat",
    "value",
    "stderr",
    "protocol",
)
GROUP_KEYS: tuple[str, ...] = (
    "regime",
    "objective",
    "model",
    "num_blocks",
    "block",
    "metric",
    "target",
)
"""What :func:`aggregate` groups by by default: everything but the run, seed and repeat."""


@dataclass(frozen=True)
class ResultRow:
    """One measured number."""

    run: str
    regime: str
    model: str
    num_blocks: int
    seed: int
    block: int
    metric: str
    target: str = ""
    repeat: int = 0
    value: float = math.nan
    objective: str = "masked_pixels"
    """The run's local objective (``objective.name``)."""
    stderr: float | None = None
    """Standard error of ``value`` (None where none is measured)."""
    protocol: str = ""
    """How ``value`` was measured, where the suite offers several ways ("" otherwise)."""

    def key(self) -> tuple[str, int, str, str, int]:
        """What identifies the measurement: (run, block, metric, target, repeat)."""
        return (self.run, self.block, self.metric, self.target, self.repeat)


@dataclass(frozen=True)
class AggregateRow:
    """Mean and spread of one group of measurements across runs (seeds)."""

    regime: str
    model: str
    num_blocks: int
    block: int
    metric: str
    target: str
    mean: float
    std: float
    """Sample standard deviation (ddof=1) across runs; 0.0 when n == 1."""
    n: int
    """Number of runs (seeds) in the group."""
    objective: str = ""
    """The objective of the group ("" when not grouped by it)."""


AGGREGATE_COLUMNS: tuple[str, ...] = (
    "regime",
    "objective",
    *(f.name for f in fields(AggregateRow) if f.name not in ("regime", "objective")),
)


_LATER = ("stderr", "protocol")
"""Columns added after the first tables were written (optional when reading)."""


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, object]]) -> None:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def write_results(path: str | Path, rows: Iterable[ResultRow]) -> None:
    """Write ``rows`` to ``path`` (CSV with :data:`COLUMNS`), atomically."""
    _write_csv(Path(path), COLUMNS, (asdict(r) for r in rows))


def read_results(path: str | Path) -> list[ResultRow]:
    """Read a results CSV written by :func:`write_results`; a missing file is an empty table.
    Tables written before the ``objective`` column existed read as ``masked_pixels``; before
    ``stderr`` and ``protocol``, as None and ""."""
    p = Path(path)
    if not p.exists():
        return []
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ()) - {"objective", *_LATER}
        if missing:
            raise ValueError(f"{p} is not a results table: columns {sorted(missing)} are missing")
        return [
            ResultRow(
                run=r["run"],
                regime=r["regime"],
                model=r["model"],
                num_blocks=int(r["num_blocks"]),
                seed=int(r["seed"]),
                block=int(r["block"]),
                metric=r["metric"],
                target=r["target"],
                repeat=int(r["repeat"]),
                value=float(r["value"]),
                objective=r.get("objective") or "masked_pixels",
                stderr=float(r["stderr"]) if r.get("stderr") else None,
                protocol=r.get("protocol") or "",
            )
            for r in reader
        ]


def merge_rows(old: Iterable[ResultRow], new: Iterable[ResultRow]) -> list[ResultRow]:
    """``old`` followed by ``new``, where a new row replaces an old one with the same key."""
    merged = {r.key(): r for r in old}
    for r in new:
        merged[r.key()] = r
    return list(merged.values())


def append_results(path: str | Path, rows: Iterable[ResultRow]) -> list[ResultRow]:
    """Add ``rows`` to the table at ``path`` (replacing rows with the same key); returns it all."""
    table = merge_rows(read_results(path), rows)
    write_results(path, table)
    return table


def aggregate(rows: Iterable[ResultRow], by: Sequence[str] = GROUP_KEYS) -> list[AggregateRow]:
    """Mean, std and n across runs, per group of the columns ``by``.

    Each run contributes one value per group: the mean of its rows there
    (over repeats, and over targets when ``target`` is not in ``by``). Then
    the group's mean, sample std (ddof=1; 0.0 for a single run) and n (runs)
    are taken over those per-run values. Columns left out of ``by`` read ""
    or -1 in the output. Groups come out sorted.
    """
    unknown = set(by) - set(GROUP_KEYS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}; allowed: {list(GROUP_KEYS)}")
    per_run: dict[tuple[object, ...], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        per_run[tuple(getattr(r, k) for k in by)][r.run].append(r.value)
    out = []
    for group in sorted(per_run):  # type: ignore[type-var]
        values = [sum(v) / len(v) for v in per_run[group].values()]
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        fields_: dict[str, object] = {
            "regime": "",
            "objective": "",
            "model": "",
            "num_blocks": -1,
            "block": -1,
            "metric": "",
            "target": "",
        }
        fields_.update(zip(by, group, strict=True))
        out.append(AggregateRow(mean=mean, std=std, n=n, **fields_))  # type: ignore[arg-type]
    return out


def write_aggregate(path: str | Path, rows: Iterable[AggregateRow]) -> None:
    """Write aggregated rows (:data:`AGGREGATE_COLUMNS`) to ``path``, atomically."""
    _write_csv(Path(path), AGGREGATE_COLUMNS, (asdict(r) for r in rows))
