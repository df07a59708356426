"""`bwssl run`: the main job end to end (quick preset), its plan, and its resumption."""

from __future__ import annotations

import csv
import re

import pytest

from bwssl.cli import main
from bwssl.experiment import load_experiment, plan


def _checkpoint_times(out):
    return {p.relative_to(out): p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoints/*.pt")}


def test_quick_run_end_to_end_and_rerun_trains_nothing(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["run", "--quick", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "report:" in err

    # Every regime trained to completion and was analysed.
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["e2e-k2-s0", "sequential-k2-s0", "simultaneous-k2-s0", "untrained-k2-s0"]
    assert all((out / "runs" / r / "checkpoints" / "final.pt").is_file() for r in runs)
    with (out / "analysis" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["run"] for r in rows} == set(runs)
    metrics = {r["metric"] for r in rows}
    assert {"probe_acc", "map", "mse", "cka_next", "cps", "probe_l1", "probe_l2"} <= metrics

    # The report: self-contained, with the figures and the headline table.
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 4 and "data:image/png;base64," in page
    assert "src=\"http" not in page and "src='http" not in page
    assert "Headline comparisons" in page
    assert "probe accuracy gap e2e - simultaneous" in page
    assert "action probe gained over the untrained encoder" in page
    assert "<table" in page

    # A rerun trains nothing: every run reports done and no checkpoint is rewritten.
    before = _checkpoint_times(out)
    assert main(["run", "--quick", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert len(re.findall(r"\] \S+ \(done\)", err)) == 4
    assert _checkpoint_times(out) == before


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "plan"
    assert main(["run", "--preset", "paper-tiny", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # paper-tiny: 3 regimes and the untrained reference x K in {4, 6} x 3 seeds, 150 epochs
    assert text.startswith("24 runs:")
    assert "sequential-k6-s2" in text and "epochs/stage=150" in text
    assert not out.exists()


def test_paper_preset_needs_ucf101(tmp_path, capsys):
    assert main(["run", "--preset", "paper-small", "--out", str(tmp_path / "x")]) == 2
    assert "data.root" in capsys.readouterr().err
    assert not (tmp_path / "x" / "runs").exists()


def test_grid_and_run_overrides_are_split():
    exp = load_experiment("demo", ["seeds=[3]", "num_blocks=[6]", "train.epochs=2"])
    runs = plan(exp)
    assert [r.name for r in runs] == ["untrained-k6-s3", "e2e-k6-s3", "simultaneous-k6-s3",
                                      "sequential-k6-s3"]
    assert all(r.config.train.epochs == 2 and r.config.model.num_blocks == 6 for r in runs)


def test_bad_grid_key_names_the_key(capsys):
    assert main(["run", "--dry-run", "regimes=[e2e,backprop]"]) == 2
    err = capsys.readouterr().err
    assert "regimes" in err and "Traceback" not in err


@pytest.mark.parametrize("preset", ["demo", "quick", "paper-tiny", "paper-small"])
def test_presets_validate(preset):
    exp = load_experiment(preset, ["data.root=/nonexistent"] if preset.startswith("paper")
                          else [])
    assert plan(exp, dry_run=True)


def test_wrong_data_root_stops_before_any_training(tmp_path, capsys):
    out = tmp_path / "x"
    code = main(["run", "--preset", "paper-tiny", f"data.root={tmp_path / 'nope'}",
                 "--out", str(out)])
    assert code == 2
    assert "data.root" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_e2e_runs_that_differ_only_in_k_are_trained_once(tmp_path, capsys):
    """The grid's E2E run at K=4 is re-cut from the one at K=2 (same seed), not trained, and
    equals an E2E run trained at K=4 directly."""
    import torch

    from bwssl.train.trainer import train

    exp = load_experiment("quick", ["regimes=[e2e,simultaneous]", "num_blocks=[2,4]"])
    runs = {r.name: r for r in plan(exp)}
    assert runs["e2e-k4-s0"].source == "e2e-k2-s0"
    assert runs["e2e-k2-s0"].source is None and runs["simultaneous-k4-s0"].source is None

    out = tmp_path / "grid"
    assert main(["run", "--quick", "regimes=[e2e]", "num_blocks=[2,4]",
                 "--out", str(out)]) == 0
    assert "e2e-k4-s0 (re-cut from e2e-k2-s0)" in capsys.readouterr().err
    assert (out / "runs" / "e2e-k4-s0" / "metrics.jsonl").read_text() == (
        out / "runs" / "e2e-k2-s0" / "metrics.jsonl").read_text()

    train(runs["e2e-k4-s0"].config, tmp_path / "direct")
    derived, direct = (torch.load(p / "checkpoints" / "final.pt", weights_only=False)["model"]
                       for p in (out / "runs" / "e2e-k4-s0", tmp_path / "direct"))
    assert derived.keys() == direct.keys()
    assert all(torch.equal(derived[n], direct[n]) for n in direct)
    with (out / "analysis" / "results.csv").open() as f:
        blocks = {r["block"] for r in csv.DictReader(f) if r["run"] == "e2e-k4-s0"}
    assert blocks == {"1", "2", "3", "4"}
