"""The tidy results table: round trip, replacement by key, aggregation over seeds."""

from __future__ import annotations

import math
import os

import pytest

from bwssl.analysis.results import (
    COLUMNS,
    ResultRow,
    aggregate,
    append_results,
    read_results,
    write_aggregate,
    write_results,
)


def _row(run: str, seed: int, value: float, repeat: int = 0, target: str = "action") -> ResultRow:
    return ResultRow(run, "e2e", "tiny", 4, seed, 4, "probe_acc", target, repeat, value)


def test_round_trip_is_exact_and_atomic(tmp_path) -> None:
    rows = [_row("a", 0, 0.1 + 0.2), _row("b", 1, 1 / 3, repeat=2)]
    path = tmp_path / "sub" / "results.csv"
    write_results(path, rows)
    assert read_results(path) == rows
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert os.listdir(path.parent) == ["results.csv"]  # no temporary file left
    assert read_results(tmp_path / "missing.csv") == []


def test_append_replaces_rows_with_the_same_key(tmp_path) -> None:
    path = tmp_path / "results.csv"
    append_results(path, [_row("a", 0, 0.5), _row("a", 0, 0.6, repeat=1)])
    table = append_results(path, [_row("a", 0, 0.7), _row("b", 1, 0.2)])
    assert sorted(r.value for r in table) == [0.2, 0.6, 0.7]
    assert read_results(path) == table


def test_aggregate_means_repeats_then_seeds(tmp_path) -> None:
    rows = [_row("a", 0, 0.2, 0), _row("a", 0, 0.4, 1), _row("b", 1, 0.5), _row("c", 2, 0.6)]
    (agg,) = aggregate(rows)
    assert agg.n == 3
    per_run = [0.3, 0.5, 0.6]  # run a: mean of its two repeats
    mean = sum(per_run) / 3
    assert agg.mean == pytest.approx(mean)
    assert agg.std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in per_run) / 2))
    (single,) = aggregate(rows[:2])
    assert (single.n, single.std) == (1, 0.0)
    two_targets = [_row("a", 0, 0.2, target="sf"), _row("a", 0, 0.6, target="tf")]
    assert len(aggregate(two_targets)) == 2
    (pooled,) = aggregate(two_targets, by=("regime", "model", "num_blocks", "block", "metric"))
    assert (pooled.mean, pooled.target, pooled.n) == (pytest.approx(0.4), "", 1)
    write_aggregate(tmp_path / "agg.csv", aggregate(rows))
    assert (
        (tmp_path / "agg.csv")
        .read_text()
        .startswith("regime,objective,model,num_blocks,block,metric")
    )
