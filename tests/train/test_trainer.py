from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bwssl.cli import main
from bwssl.errors import TrainingDiverged, UserError
from bwssl.objectives.masked_pixels import MaskedPixels
from bwssl.train.trainer import Trainer, train


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _final_model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=False)["model"]


@pytest.mark.parametrize("regime", ["e2e", "simultaneous", "sequential"])
def test_loss_falls_in_every_regime(regime, make_cfg, tmp_path):
    cfg = make_cfg(f"regime={regime}", "train.epochs=6", "train.lr=3e-3", "model.num_blocks=2")
    train(cfg, tmp_path)
    rows = _metrics(tmp_path)
    for block in ["1"] if regime == "e2e" else ["0", "1"]:
        series = [r["loss"][block] for r in rows if block in r["loss"]]
        assert len(series) >= 12
        first, last = sum(series[:3]) / 3, sum(series[-3:]) / 3
        assert last < 0.9 * first, (regime, block, first, last)
    run_files = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "env.json", "metrics.jsonl", "checkpoints"} <= run_files
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["seed"] == 0 and env["torch"] == torch.__version__


def test_regimes_see_matched_data(make_cfg, tmp_path):
    """Sequential stage 1 replays the simultaneous stream: block-1 losses agree step by step."""
    base = ["train.epochs=2", "model.num_blocks=2"]
    train(make_cfg("regime=simultaneous", *base), tmp_path / "sim")
    train(make_cfg("regime=sequential", *base), tmp_path / "seq")
    sim = [r["loss"]["0"] for r in _metrics(tmp_path / "sim")]
    seq = [r["loss"]["0"] for r in _metrics(tmp_path / "seq") if r["stage"] == 0]
    assert seq == pytest.approx(sim, rel=1e-6)


def test_sequential_freezes_finished_blocks_bitwise(make_cfg, tmp_path, monkeypatch):
    snapshots = []
    original = Trainer._run_stage

    def spy(self, model, stage, *args, **kwargs):
        if stage.index == 0:
            snapshots.append(copy.deepcopy(model.state_dict()))
        original(self, model, stage, *args, **kwargs)
        snapshots.append(copy.deepcopy(model.state_dict()))

    monkeypatch.setattr(Trainer, "_run_stage", spy)
    train(make_cfg("regime=sequential", "model.num_blocks=4", "train.epochs=2"), tmp_path)
    init, *after = snapshots  # after[k]: state at the end of stage k
    assert len(after) == 4
    for k in range(4):
        mine = [n for n in init if n.startswith(f"blocks.{k}.")]
        assert any(not torch.equal(init[n], after[k][n]) for n in mine), f"block {k} not trained"
        for later in after[k + 1 :]:
            for n in mine:
                assert torch.equal(after[k][n], later[n]), f"{n} changed after its stage"
            for n in (n for n in init if n.startswith(f"decoders.{k}.")):
                assert torch.equal(after[k][n], later[n])


def test_gradient_accumulation_matches_full_batch(make_cfg, tmp_path):
    train(make_cfg("train.epochs=1", "train.accum_steps=1"), tmp_path / "a")
    train(make_cfg("train.epochs=1", "train.accum_steps=2"), tmp_path / "b")
    a, b = _final_model(tmp_path / "a"), _final_model(tmp_path / "b")
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-5)


def test_per_block_clipping_keeps_blocks_independent(make_cfg, tmp_path, monkeypatch):
    """With clipping on, block 1 trains identically however large block 2's gradients are."""
    cfg = make_cfg("model.num_blocks=2", "train.clip_grad=0.01")
    train(cfg, tmp_path / "a")
    original = MaskedPixels.loss
    monkeypatch.setattr(
        MaskedPixels,
        "loss",
        lambda self, k, *a: original(self, k, *a) * (1000.0 if k == 1 else 1.0),
    )
    train(cfg, tmp_path / "b")
    a, b = _final_model(tmp_path / "a"), _final_model(tmp_path / "b")
    for n in (n for n in a if n.startswith(("blocks.0.", "decoders.0."))):
        assert torch.equal(a[n], b[n]), n
    assert any(not torch.equal(a[n], b[n]) for n in a if n.startswith("blocks.1."))


def test_nan_loss_stops_with_block_and_step(make_cfg, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = MaskedPixels.loss

    def poisoned(self, k, *args):
        loss = original(self, k, *args)
        calls["n"] += 1
        return loss * float("nan") if k == 1 and calls["n"] > 6 else loss

    monkeypatch.setattr(MaskedPixels, "loss", poisoned)
    cfg = make_cfg("model.num_blocks=2", "train.epochs=3", "train.checkpoint_every=1")
    with pytest.raises(TrainingDiverged, match=r"block 2 became nan at global step 4"):
        train(cfg, tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert last["position"]["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_refuses_run_dir_with_other_config(make_cfg, tmp_path):
    train(make_cfg(), tmp_path)
    with pytest.raises(UserError, match=r"different config.*model.embed_dim"):
        train(make_cfg("model.embed_dim=16"), tmp_path)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a bwssl run"):
        train(make_cfg(), stray)


def test_rerun_of_finished_run_trains_nothing(make_cfg, tmp_path):
    train(make_cfg(), tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    stamp = (tmp_path / "checkpoints" / "final.pt").stat().st_mtime_ns
    train(make_cfg(), tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert (tmp_path / "checkpoints" / "final.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.num_blocks=3", "model.num_blocks"),
        ("model.patch_size=7", "model.patch_size"),
        ("model.tubelet_size=3", "model.tubelet_size"),
        ("mask.ratio=1.5", "mask.ratio"),
        ("model.colour=3", "model.colour"),
        ("train.epochs=many", "train.epochs"),
        ("regime=backprop", "regime"),
    ],
)
def test_invalid_config_fails_before_compute(override, key, tmp_path, capsys):
    code = main(["train", "tiny-debug", override, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error:") and key in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bwssl",
        "train",
        "tiny-debug",
        "--out",
        str(out),
        "train.epochs=12",
        "train.checkpoint_every=1",
        "model.num_blocks=2",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra",
    [
        ("regime=sequential",),
        ("objective.name=barlow_twins", "regime=simultaneous"),
        ("objective.name=vicreg", "regime=e2e"),
        ("objective.name=simclr", "regime=sequential"),
        # Killed between the second and third freezing events (steps 28 and 36 of 48).
        (
            "regime=layerlock",
            "layerlock.start_step=20",
            "layerlock.interval=8",
            "layerlock.max_frozen=3",
            "layerlock.switch_warmup_steps=3",
            "layerlock.latent_fraction=0.5",
        ),
    ],
    ids=["masked_pixels", "barlow_twins", "vicreg", "simclr", "layerlock"],
)
def test_resume_after_sigkill_gives_identical_weights(tmp_path, extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_cmd(tmp_path / "clean", *extra), env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(killed, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # kill mid-run, once a few steps are checkpointed
        lines = (
            (killed / "metrics.jsonl").read_text().count("\n")
            if (killed / "metrics.jsonl").exists()
            else 0
        )
        if lines >= 30:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "final.pt").exists(), "run finished before the kill"
    subprocess.run(_train_cmd(killed, *extra), env=env, check=True, capture_output=True)

    clean, resumed = _final_model(tmp_path / "clean"), _final_model(killed)
    for n in clean:
        assert torch.equal(clean[n], resumed[n]), n
    steps = [r["step"] for r in _metrics(killed)]
    assert steps == sorted(set(steps)) == [r["step"] for r in _metrics(tmp_path / "clean")]


def test_logs_to_tensorboard_when_available(make_cfg, tmp_path, monkeypatch):
    import bwssl.train.trainer as trainer_module

    scalars: list[tuple[str, float, int]] = []

    class Writer:
        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            scalars.append(("closed", 0.0, 0))

    monkeypatch.setattr(trainer_module, "tensorboard_writer", lambda log_dir: Writer())
    train(make_cfg("model.num_blocks=2"), tmp_path)
    tags = {t for t, _, _ in scalars}
    assert {"loss/block1", "loss/block2", "lr", "clips_per_s", "closed"} <= tags
    lines = _metrics(tmp_path)
    assert [s for t, _, s in scalars if t == "lr"] == [r["step"] for r in lines]

    scalars.clear()
    train(make_cfg("model.num_blocks=2", "train.tensorboard=false"), tmp_path / "off")
    assert scalars == []


def test_each_unit_steps_and_frees_its_gradients_before_the_next_block_runs(
    make_cfg, tmp_path, monkeypatch
):
    """Simultaneous training applies block k's update as soon as its backward is done, so no
    two blocks' gradients are alive at once (a lower peak than stepping all blocks at the
    end); with accumulation, only after the last micro-batch."""
    from bwssl.train.units import UnitForward

    alive: list[tuple[int, bool]] = []
    forward = UnitForward.forward

    def spy(self, x, *args):
        model = self._model[0]
        earlier = [p for k in range(self.ids[0]) for p in model.block_params(k)]
        alive.append((self.ids[0], any(p.grad is not None for p in earlier)))
        return forward(self, x, *args)

    monkeypatch.setattr(UnitForward, "forward", spy)
    train(
        make_cfg("regime=simultaneous", "model.num_blocks=4", "train.max_steps=2"),
        tmp_path / "plain",
    )
    assert [k for k, _ in alive] == [0, 1, 2, 3] * 2
    assert not any(grad for _, grad in alive)

    alive.clear()
    train(
        make_cfg(
            "regime=simultaneous", "model.num_blocks=2", "train.max_steps=1", "train.accum_steps=2"
        ),
        tmp_path / "accum",
    )
    # micro-batch 1: block 0's gradient waits for micro-batch 2; then it is stepped and freed
    assert alive == [(0, False), (1, True), (0, False), (1, False)]


def test_bad_data_root_leaves_no_run_behind(tmp_path, capsys):
    """A wrong data.root fails before the run folder is written, so the corrected command
    is not refused as 'a run with a different config'."""
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "tiny-debug",
                "data.name=ucf101",
                f"data.root={tmp_path / 'nope'}",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "data.root" in capsys.readouterr().err
    assert not (out / "config.yaml").exists()
    assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 0
    assert (out / "checkpoints" / "final.pt").is_file()


def test_untrained_regime_saves_the_initialization_e2e_starts_from(make_cfg, tmp_path):
    """regime=untrained trains nothing and saves the E2E model exactly as the E2E run of
    the same seed initializes it: the reference of the analyses."""
    from bwssl.models.blockwise import build_model

    cfg = make_cfg("regime=untrained", "seed=3")
    train(cfg, tmp_path / "u")
    saved = _final_model(tmp_path / "u")
    assert not (tmp_path / "u" / "metrics.jsonl").exists() or not _metrics(tmp_path / "u")
    torch.manual_seed(3)
    fresh = build_model(make_cfg("regime=e2e", "seed=3")).state_dict()
    assert saved.keys() == fresh.keys()
    assert all(torch.equal(saved[n], fresh[n]) for n in fresh)
