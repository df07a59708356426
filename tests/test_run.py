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
    assert 'src="http' not in page and "src='http" not in page
    assert "Headline comparisons" in page
    assert "probe accuracy gap e2e - simultaneous" in page
    assert "action probe gained over the untrained encoder" in page
    assert "<table" in page
    # K=2: no late transitions; the setup the numbers stand on is stated
    assert "no late transitions" in page and "Token grid 4x4x4" in page
    assert "Training config (first run)" in page and "paper_model: tiny" in page

    # `bwssl report` on its results.csv gives the very same page
    again = tmp_path / "again.html"
    assert main(["report", str(out / "analysis" / "results.csv"), "--out", str(again)]) == 0
    assert again.read_text() == page

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
    assert [r.name for r in runs] == [
        "untrained-k6-s3",
        "e2e-k6-s3",
        "simultaneous-k6-s3",
        "sequential-k6-s3",
    ]
    assert all(r.config.train.epochs == 2 and r.config.model.num_blocks == 6 for r in runs)


def test_bad_grid_key_names_the_key(capsys):
    assert main(["run", "--dry-run", "regimes=[e2e,backprop]"]) == 2
    err = capsys.readouterr().err
    assert "regimes" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "preset", ["demo", "quick", "objectives-demo", "paper-tiny", "paper-small", "resnet-demo"]
)
def test_presets_validate(preset):
    exp = load_experiment(preset, ["data.root=/nonexistent"] if preset.startswith("paper") else [])
    assert plan(exp, dry_run=True)


def test_wrong_data_root_stops_before_any_training(tmp_path, capsys):
    out = tmp_path / "x"
    code = main(
        ["run", "--preset", "paper-tiny", f"data.root={tmp_path / 'nope'}", "--out", str(out)]
    )
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
    assert main(["run", "--quick", "regimes=[e2e]", "num_blocks=[2,4]", "--out", str(out)]) == 0
    assert "e2e-k4-s0 (re-cut from e2e-k2-s0)" in capsys.readouterr().err
    assert (out / "runs" / "e2e-k4-s0" / "metrics.jsonl").read_text() == (
        out / "runs" / "e2e-k2-s0" / "metrics.jsonl"
    ).read_text()

    train(runs["e2e-k4-s0"].config, tmp_path / "direct")
    derived, direct = (
        torch.load(p / "checkpoints" / "final.pt", weights_only=False)["model"]
        for p in (out / "runs" / "e2e-k4-s0", tmp_path / "direct")
    )
    assert derived.keys() == direct.keys()
    assert all(torch.equal(derived[n], direct[n]) for n in direct)
    with (out / "analysis" / "results.csv").open() as f:
        blocks = {
            r["block"]
            for r in csv.DictReader(f)
            if r["run"] == "e2e-k4-s0" and r["metric"] != "setup"  # setup facts: block 0
        }
    assert blocks == {"1", "2", "3", "4"}


def test_objectives_grid_plans_one_untrained_reference():
    exp = load_experiment(
        "demo",
        ["objectives=[masked_pixels,barlow_twins]", "seeds=[0]", "objective.projector=[16,16]"],
    )
    runs = plan(exp)
    assert [r.name for r in runs] == [
        "untrained-k4-s0",
        "e2e-k4-s0",
        "simultaneous-k4-s0",
        "sequential-k4-s0",
        "barlow_twins-e2e-k4-s0",
        "barlow_twins-simultaneous-k4-s0",
        "barlow_twins-sequential-k4-s0",
    ]
    assert [r.config.objective.name for r in runs] == ["masked_pixels"] * 4 + ["barlow_twins"] * 3
    assert sum(r.config.regime == "untrained" for r in runs) == 1
    # E2E runs of different objectives are different runs: neither is re-cut from the other.
    assert all(r.source is None for r in runs)


def test_objective_overrides_reach_only_their_runs(capsys):
    exp = load_experiment(
        "quick",
        ["objectives=[masked_pixels,simclr]", "objective_overrides.simclr=[train.lr=0.002]"],
    )
    lrs = {r.name: r.config.train.lr for r in plan(exp)}
    assert lrs["simclr-e2e-k2-s0"] == 0.002 and lrs["e2e-k2-s0"] != 0.002
    assert main(["run", "--dry-run", "objective_overrides.backprop=[train.lr=1]"]) == 2
    err = capsys.readouterr().err
    assert "objective_overrides" in err and "Traceback" not in err


def test_objectives_demo_preset_plans_both_objectives():
    runs = plan(load_experiment("objectives-demo", []))
    names = [r.name for r in runs]
    assert sum(r.config.regime == "untrained" for r in runs) == 1
    assert {"e2e-k4-s0", "barlow_twins-sequential-k4-s0"} <= set(names)
    bt = [r.config for r in runs if r.config.objective.name == "barlow_twins"]
    assert len(bt) == 3 and all(max(c.objective.projector) <= 1024 for c in bt)
    # Flipped views would turn translate_right into translate_left: invariance to the class.
    assert all(c.objective.views.flip_prob == 0 for c in bt)


def test_two_objectives_end_to_end(tmp_path, capsys):
    spec = tmp_path / "two.yaml"
    spec.write_text(
        "train: tiny-debug\n"
        "overrides: ['objective.projector=[16,16]', data.synthetic_train=64, "
        "data.synthetic_test=32, train.batch_size=8]\n"
        "objectives: [masked_pixels, barlow_twins]\n"
        "regimes: [untrained, simultaneous]\n"
        "num_blocks: [2]\n"
        "seeds: [0]\n"
        "analysis: [probe_repeats=1, 'metrics=[probe_acc,map,mse,local_loss,cka_next,cps]', "
        "progress=false]\n"
    )
    out = tmp_path / "out"
    assert main(["run", "--preset", str(spec), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "barlow_twins-simultaneous-k2-s0",
        "simultaneous-k2-s0",
        "untrained-k2-s0",
    ]
    with (out / "analysis" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_objective = {
        o: {r["metric"] for r in rows if r["objective"] == o}
        for o in ("masked_pixels", "barlow_twins")
    }
    assert {"probe_acc", "map", "local_loss", "mse"} <= by_objective["masked_pixels"]
    assert {"probe_acc", "map", "local_loss"} <= by_objective["barlow_twins"]
    assert "mse" not in by_objective["barlow_twins"]
    bt_loss = {
        r["block"] for r in rows if r["objective"] == "barlow_twins" and r["metric"] == "local_loss"
    }
    assert bt_loss == {"1", "2"}

    page = (out / "report.html").read_text()
    assert "Objectives x regimes" in page
    assert "<td>barlow_twins</td><td>simultaneous</td>" in page
    assert "masked_pixels runs only (1 of 2 trained runs)" in page
    assert "fig6_local_loss" in page and "first run of barlow_twins" in page


def test_layerlock_demo_plans_its_five_runs(capsys):
    """The layer-wise grid: five regimes, one seed, each a single schedule whose freezing
    events fit in it; the dry run prints it and trains nothing."""
    from bwssl.experiment import describe
    from bwssl.run_sizes import estimated_steps, freezing_steps, run_length

    exp = load_experiment("layerlock-demo", [])
    runs = plan(exp, dry_run=True)
    assert [r.name for r in runs] == [
        "e2e-k4-s0",
        "freeze-k4-s0",
        "layerlock-k4-s0",
        "latent-k4-s0",
        "simultaneous-k4-s0",
    ]
    for r in runs:
        clips = r.config.data.synthetic_train
        # one schedule of train.epochs epochs in all, layer-wise or not
        assert estimated_steps(r.config, clips) == run_length(r.config, clips)
        events = freezing_steps(r.config, clips)
        assert bool(events) == (r.config.regime in ("freeze", "layerlock", "latent"))
        assert all(0 < s < run_length(r.config, clips) for s in events)
    text = describe(runs, ucf101=False)
    assert text.startswith("5 runs:") and "freezing events at steps" in text
    assert main(["run", "--preset", "layerlock-demo", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("5 runs:")


def test_a_freezing_schedule_that_does_not_fit_stops_the_plan():
    from bwssl.config import ConfigError

    exp = load_experiment("layerlock-demo", ["layerlock.start_step=100000"])
    with pytest.raises(ConfigError, match=r"layerlock\.start_step"):
        plan(exp, dry_run=True)


def test_resnet_demo_plans_each_regime_with_and_without_noise(capsys):
    from bwssl.experiment import describe

    runs = plan(load_experiment("resnet-demo", []), dry_run=True)
    names = [r.name for r in runs]
    assert names == [
        "barlow_twins-untrained-k4-s0",
        "barlow_twins-e2e-k4-s0",
        "barlow_twins-e2e-noise-k4-s0",
        "barlow_twins-simultaneous-k4-s0",
        "barlow_twins-simultaneous-noise-k4-s0",
        "barlow_twins-sequential-k4-s0",
        "barlow_twins-sequential-noise-k4-s0",
    ]
    assert [r.config.noise.std for r in runs] == [0.0, 0.0, 0.25, 0.0, 0.25, 0.0, 0.25]
    assert {r.config.data.name for r in runs} == {"synthetic_images"}
    text = describe(runs, False)
    # 2048 embedded images, batch 64, 20 epochs per stage: 640 steps a stage, exact
    assert "barlow_twins-e2e-k4-s0" in text and " 640 steps" in text and " 2560 steps" in text
    assert "~" not in text


ONE_BARLOW_E2E = ["regimes=[e2e]", "objectives=[barlow_twins]", "num_blocks=[4]"]


def test_image_datasets_are_planned_with_their_size():
    from bwssl.experiment import describe

    exp = load_experiment("quick", [*ONE_BARLOW_E2E, "train=resnet18-cifar-barlow"])
    text = describe(plan(replace_root(exp, "/cifar"), dry_run=True), False)
    assert f" {50_000 // 256 * 1000} steps" in text  # CIFAR's 50,000, not synthetic_train
    exp = load_experiment("quick", [*ONE_BARLOW_E2E, "train=resnet50-barlow"])
    text = describe(plan(replace_root(exp, "/imagenet"), dry_run=True), False)
    assert f"~{1_281_167 // 2048 * 300} steps" in text


def replace_root(exp, root):
    from dataclasses import replace

    return replace(exp, overrides=[f"data.root={root}"])


def test_a_bad_variant_name_names_the_key():
    from bwssl.config import ConfigError

    with pytest.raises(ConfigError, match="variants"):
        load_experiment("resnet-demo", ["variants={Noise: [noise.std=0.25]}"])
