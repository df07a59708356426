"""``bwssl layer-convergence``: freeze the first L layers at step T, compare with E2E.

The tiny-debug model has 4 layers; 16 training clips in batches of 4 give 4
steps per epoch, so ``train.epochs=3`` makes runs of 12 steps, each logged.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bwssl.cli import main
from bwssl.errors import UserError
from bwssl.layer_convergence import (
    default_last,
    final_loss,
    layer_convergence,
    plan_layer_convergence,
)

ARGS = [
    "layer-convergence",
    "tiny-debug",
    "train.epochs=3",
    "--layers",
    "1",
    "2",
    "--steps",
    "3",
    "6",
]
GRID = [(1, 3), (1, 6), (2, 3), (2, 6)]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _mean_tail(run: Path, n: int) -> float:
    """The mean logged loss of the last ``n`` logged steps, recomputed from metrics.jsonl."""
    losses = [r["loss"]["1"] for r in _metrics(run)]  # tiny-debug: 2 blocks, the last is "1"
    return sum(losses[-n:]) / n


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "layer_convergence.csv").open() as f:
        return list(csv.DictReader(f))


def _mtimes(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoints/*.pt")
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """One finished experiment, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("lc") / "exp"
    assert main([*ARGS, "--out", str(out)]) == 0
    return out


def test_csv_holds_every_cell_against_the_baseline(done):
    rows = _rows(done)
    assert list(rows[0]) == [
        "layers",
        "freeze_step",
        "final_loss",
        "baseline_loss",
        "deviation",
        "relative_deviation",
    ]
    assert [(int(r["layers"]), int(r["freeze_step"])) for r in rows] == GRID
    runs = done / "runs"
    n = default_last(len(_metrics(runs / "e2e")))
    assert n == 1  # a tenth of 12 logged steps, at least one
    base = _mean_tail(runs / "e2e", n)
    for r in rows:
        mine = _mean_tail(runs / f"freeze-L{r['layers']}-T{r['freeze_step']}", n)
        assert float(r["baseline_loss"]) == pytest.approx(base, rel=1e-12)
        assert float(r["final_loss"]) == pytest.approx(mine, rel=1e-12)
        assert float(r["deviation"]) == pytest.approx(mine - base, rel=1e-9, abs=1e-12)
        assert float(r["relative_deviation"]) == pytest.approx((mine - base) / base, abs=1e-12)


def test_figure_is_a_png(done):
    png = done / "layer_convergence.png"
    assert not list(done.glob(".*.tmp"))  # the CSV went through an atomic rename
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_follow_the_one_event_schedule(done):
    runs = done / "runs"
    base = _metrics(runs / "e2e")
    assert [r["step"] for r in base] == list(range(1, 13))
    assert {r["frozen"] for r in base} == {0}
    for layers, t in GRID:
        recs = _metrics(runs / f"freeze-L{layers}-T{t}")
        assert [r["step"] for r in recs] == list(range(1, 13))
        assert [r["frozen"] for r in recs] == [0 if r["step"] <= t else layers for r in recs]
        assert {tuple(r["targets"]) for r in recs} == {("pixels",)}
        # Before the event the run is the baseline: same data, masks, schedule and updates.
        before = [r for r in recs if r["step"] <= t]
        assert [r["lr"] for r in recs] == pytest.approx([r["lr"] for r in base])
        assert [r["loss"]["1"] for r in before] == pytest.approx(
            [r["loss"]["1"] for r in base[:t]], rel=1e-5
        )


def test_rerun_trains_nothing(done, capsys):
    before = _mtimes(done)
    assert len(before) == 5 * 2  # final.pt and last.pt of the baseline and 4 cells
    capsys.readouterr()
    assert main([*ARGS, "--out", str(done)]) == 0
    captured = capsys.readouterr()
    assert _mtimes(done) == before
    assert captured.err.count("already finished") == 5
    table = captured.out.splitlines()
    assert table[0].split() == ["L", "T", "final", "loss", "baseline", "deviation", "relative"]
    assert len(table) == 1 + len(GRID) + 1  # header, one line per cell, "wrote ..."


def test_last_sets_the_averaging_window(done):
    rows = layer_convergence(
        "tiny-debug", ["train.epochs=3"], [2, 1], [6, 3, 3], done, last=4, say=lambda _: None
    )
    assert [(r.layers, r.freeze_step) for r in rows] == GRID  # sorted, duplicates dropped
    base = _mean_tail(done / "runs" / "e2e", 4)
    for r in rows:
        assert r.baseline_loss == pytest.approx(base, rel=1e-12)
        mine = _mean_tail(done / "runs" / f"freeze-L{r.layers}-T{r.freeze_step}", 4)
        assert r.deviation == pytest.approx(mine - base, abs=1e-12)
    assert [float(r["final_loss"]) for r in _rows(done)] == [r.final_loss for r in rows]


def test_another_config_in_the_same_folder_is_refused_up_front(done):
    before = _mtimes(done)
    with pytest.raises(UserError, match="different config"):
        layer_convergence("tiny-debug", ["train.epochs=4"], [1], [3], done, say=lambda _: None)
    assert _mtimes(done) == before


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--layers", "1", "4", "--steps", "3"], "--layers"),  # L must leave a layer to train
        (["--layers", "0", "--steps", "3"], "--layers"),
        (["--layers", "1", "--steps", "3", "12"], "--steps"),  # at the run's end
        (["--layers", "1", "--steps", "0"], "--steps"),
        (["train.max_steps=8", "--layers", "1", "--steps", "8"], "--steps"),
        (["--layers", "1", "--steps", "3", "--last", "13"], "--last"),
        (["--layers", "1", "--steps", "3", "--last", "0"], "--last"),
        (["regime=sequential", "--layers", "1", "--steps", "3"], "regime"),
        (["layerlock.start_step=2", "--layers", "1", "--steps", "3"], "layerlock.start_step"),
        (["train.epochs=zero", "--layers", "1", "--steps", "3"], "train.epochs"),
    ],
)
def test_bad_options_are_refused_before_any_run(tmp_path, capsys, args, option):
    out = tmp_path / "exp"
    assert (
        main(["layer-convergence", "tiny-debug", "train.epochs=3", *args, "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and option in err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("layers", "steps", "option"), [([], [3], "--layers"), ([1], [], "--steps")]
)
def test_empty_lists_are_refused(tmp_path, layers, steps, option):
    with pytest.raises(UserError, match=option):
        layer_convergence("tiny-debug", ["train.epochs=3"], layers, steps, tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


def test_cli_refuses_missing_values(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            ["layer-convergence", "tiny-debug", "--layers", "--steps", "3", "--out", str(tmp_path)]
        )
    assert "--layers" in capsys.readouterr().err


def test_plan_counts_steps_and_logged_lines():
    plan = plan_layer_convergence("tiny-debug", ["train.epochs=3"], [1, 3], [11])
    assert plan.total_steps == 12 and plan.logged_steps == 12 and plan.last == 1
    assert plan.baseline.regime == "e2e"
    assert [name for name, _ in plan.runs()] == ["e2e", "freeze-L1-T11", "freeze-L3-T11"]
    cfg = plan.frozen[(3, 11)]
    assert cfg.regime == "freeze"
    assert (cfg.layerlock.start_step, cfg.layerlock.layers_per_event) == (11, 3)
    assert cfg.layerlock.frozen_layers(4) == 3
    # Logged: every 5th step and every epoch's end (4, 5, 8, 10, 12, 15, 16, 20 of 20).
    sparse = plan_layer_convergence("tiny-debug", ["train.epochs=5", "train.log_every=5"], [1], [3])
    assert (sparse.total_steps, sparse.logged_steps, sparse.last) == (20, 8, 1)
    capped = plan_layer_convergence("tiny-debug", ["train.epochs=5", "train.max_steps=7"], [1], [6])
    assert capped.total_steps == 7


def test_final_loss_averages_the_deepest_block(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss": {"0": 9.0, "1": float(s)}} for s in range(1, 6)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert final_loss(path, 2) == pytest.approx(4.5)
    assert final_loss(path, 10) == pytest.approx(3.0)  # fewer lines than asked: all of them
    with pytest.raises(UserError, match="missing"):
        final_loss(tmp_path / "none.jsonl", 1)
