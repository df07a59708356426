"""A diverging run keeps a finite last checkpoint and continues from it with a lower learning
rate, an explicit and logged change of its config."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from bwssl.cli import main
from bwssl.errors import TrainingDiverged
from bwssl.train.trainer import train


def test_weights_that_are_not_finite_are_never_saved(make_cfg, tmp_path):
    # At lr 100 the weights overflow after a few steps while the loss that was computed
    # before the update is still finite: the checkpoint of that step must not be written.
    cfg = make_cfg("train.lr=100", "train.checkpoint_every=1", "train.epochs=4")
    with pytest.raises(TrainingDiverged) as caught:
        train(cfg, tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    message = str(caught.value)
    assert str(last) in message and "--resume-with train.lr=" in message
    ckpt = torch.load(last, weights_only=True)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert not (tmp_path / "checkpoints" / "final.pt").exists()


def test_a_diverged_run_continues_with_a_lower_learning_rate(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "tiny-debug", "train.lr=70", "train.checkpoint_every=4", "train.epochs=8"]
    assert main([*args, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "last good checkpoint is" in err and "Traceback" not in err
    assert "became nan" in err or "became NaN or inf" in err
    # The same folder with another learning rate is refused, and says how to continue.
    assert main([*args[:2], "train.lr=1e-4", *args[3:], "--out", out]) == 2
    assert "--resume-with" in capsys.readouterr().err
    assert main([*args, "--out", out, "--resume-with", "train.lr=1e-4"]) == 0
    final = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in final["model"].values() if t.is_floating_point())
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["lr"] == 1e-4
    (change,) = [
        json.loads(x) for x in (tmp_path / "run" / "resumes.jsonl").read_text().splitlines()
    ]
    assert change["changed"] == {"train.lr": [70.0, 1e-4]}
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps == list(range(1, 33))


def test_resume_with_is_limited_to_the_optimizer_step_size(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "tiny-debug", "--out", out, "--resume-with", "train.lr=1e-4"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert main(["train", "tiny-debug", "train.max_steps=1", "--out", out]) == 0
    assert main(["train", "tiny-debug", "--out", out, "--resume-with", "model.depth=2"]) == 2
    err = capsys.readouterr().err
    assert "model.depth" in err and "train.lr" in err
