"""Bad values, bad files and a full disk: each refused in one line, before anything is
written where possible, with every earlier file intact."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from bwssl.cli import main
from bwssl.train import checkpoint as checkpoint_module
from bwssl.train.checkpoint import verify_checkpoint

BAD_VALUES = [
    "train.lr=nan",
    "train.lr=inf",
    "train.lr=-1",
    "train.min_lr=-1",
    "train.weight_decay=-1",
    "model.mlp_ratio=inf",
    "model.mlp_ratio=nan",
    "seed=-1",
    f"seed={2**70}",
    f"model.embed_dim={2**20}",
    f"model.depth={2**40}",
    f"train.batch_size={2**40}",
    "data.crop_size=1000000",
    "mask.ratio=nan",
    "train.epochs=0",
    "model.num_heads=0",
    "layerlock.latent_fraction=inf",
    "objective.temperature=nan",
    "train.betas=[0.9, nan]",
    "regime=nope",
    "model.arch=resnet9000",
]


@pytest.mark.parametrize("override", BAD_VALUES)
def test_bad_values_are_refused_in_one_line_leaving_no_run_folder(override, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "tiny-debug", override, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert override.split("=")[0] in err or "config key 'model'" in err
    assert not out.exists()


def test_the_sweep_counts_every_refusal(tmp_path, capsys):
    """All of the values above, as a count: every one is a clean refusal."""
    clean = 0
    for i, override in enumerate(BAD_VALUES):
        out = tmp_path / f"r{i}"
        code = main(["train", "tiny-debug", override, "--out", str(out)])
        err = capsys.readouterr().err
        clean += code == 2 and err.startswith("error: ") and not out.exists()
    assert clean == len(BAD_VALUES)


def test_a_preset_that_inherits_from_itself_is_one_line(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"base: {b}\n")
    b.write_text(f"base: {a}\n")
    assert main(["train", str(a), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "inherits from itself" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "text", ["regime: [unclosed\n", "!!python/object/apply:os.system ['touch x']\n"]
)
def test_a_broken_config_yaml_in_a_run_folder_is_one_line(text, make_cfg, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "config.yaml").write_text(text)
    assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "config.yaml is not a valid bwssl config" in err and err.count("\n") == 1
    assert not Path("x").exists()


def test_metrics_replaced_by_a_folder_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 0
    (out / "checkpoints" / "final.pt").unlink()
    (out / "metrics.jsonl").unlink()
    (out / "metrics.jsonl").mkdir()
    assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 2
    assert "metrics.jsonl is a folder" in capsys.readouterr().err


def test_out_is_a_file_or_a_read_only_folder(tmp_path, capsys):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["train", "tiny-debug", "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1
    # A folder that cannot be created (under a file; a read-only folder fails the same way,
    # but not for root, who runs these tests in containers).
    assert main(["train", "tiny-debug", "--out", str(afile / "run")]) == 2
    err = capsys.readouterr().err
    assert "choose a writable --out" in err and err.count("\n") == 1


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_old_one(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    args = ["train", "tiny-debug", "train.epochs=3", "train.checkpoint_every=4", "--out"]
    writers = {"n": 0}
    init, write = checkpoint_module._HashingWriter.__init__, checkpoint_module._HashingWriter.write

    def counted(self, f, digest):
        writers["n"] += 1
        self.number, self.bytes = writers["n"], 0
        init(self, f, digest)

    def fill_up(self, data):  # the disk fills up in the middle of the second checkpoint
        self.bytes += len(data)
        if self.number == 2 and self.bytes > 4096:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, data)

    monkeypatch.setattr(checkpoint_module._HashingWriter, "__init__", counted)
    monkeypatch.setattr(checkpoint_module._HashingWriter, "write", fill_up)
    assert main([*args, str(out)]) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: cannot write") and "no space left on its device" in line
    assert "Traceback" not in err
    last = out / "checkpoints" / "last.pt"
    verify_checkpoint(last)  # the first checkpoint, intact
    assert torch.load(last, weights_only=True)["position"]["global_step"] == 4
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert main([*args, str(out)]) == 0  # space again: the run goes on from step 4
    assert (out / "checkpoints" / "final.pt").exists()


BAD_CALLS = [
    ["train", "tiny-debug"],  # no --out
    ["train", "no-such-preset", "--out", "{out}"],
    ["train", "tiny-debug", "notakeyvalue", "--out", "{out}"],
    ["train", "tiny-debug", "--out", "{out}", "--resume-with", "model.depth=2"],
    ["analyze", "{out}/missing-run"],
    ["export-hf", "{out}/missing-run", "--out", "{out}/hf"],
    ["bench", "--sizes", "huge"],
    ["layer-convergence", "tiny-debug", "--layers", "9", "--steps", "1", "--out", "{out}"],
]


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda c: " ".join(c[:3]))
def test_bad_command_lines_are_refused_cleanly(call, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in call]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and ("error" in err)
    assert not out.exists() or not any(out.rglob("config.yaml"))
