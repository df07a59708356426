"""Checkpoints round-trip exactly, old ones still load, damaged ones are detected, and the
leftovers of killed writes are cleaned up."""

from __future__ import annotations

import logging
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bwssl
from bwssl.base.rundir import RunDir
from bwssl.errors import UserError
from bwssl.train import checkpoint
from bwssl.train.checkpoint import (
    DamagedCheckpoint,
    checksum_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from bwssl.train.trainer import train

from .helpers import assert_same_weights, config, final_model, metric_steps, train_until

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pre_redesign"


def _garble(path: Path) -> None:
    """Invert 64 bytes in the middle of ``path``."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# --- round trips -----------------------------------------------------------------------------


def test_rng_states_round_trip_exactly_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # NumPy now holds a cached Gaussian: part of the state
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "config": {}, "rng": rng_state()})
    expected = (random.random(), np.random.standard_normal(3), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (random.random(), np.random.standard_normal(3), torch.rand(3))
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


@pytest.mark.parametrize("regime", ["simultaneous", "sequential"])
def test_an_interrupted_run_resumes_to_the_same_weights_bit_for_bit(regime, tmp_path, monkeypatch):
    cfg = config(f"regime={regime}", "train.checkpoint_every=3")
    train(cfg, tmp_path / "whole")
    train_until(cfg, tmp_path / "resumed", 5, monkeypatch)  # last.pt holds step 3
    assert (
        load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["position"]["global_step"]
        == 3
    )
    train(cfg, tmp_path / "resumed")
    assert_same_weights(final_model(tmp_path / "whole"), final_model(tmp_path / "resumed"))
    assert metric_steps(tmp_path / "resumed") == metric_steps(tmp_path / "whole")


# --- checkpoints of older bwssl ----------------------------------------------------------------


def test_the_pre_redesign_checkpoint_loads_safely(tmp_path):
    """Its NumPy RNG state is an ndarray, which plain weights-only loading refuses; bwssl
    allows exactly what that state needs."""
    final = FIXTURES / "run-simultaneous" / "checkpoints" / "final.pt"
    assert not checksum_path(final).exists()
    with pytest.raises(Exception, match="numpy"):
        torch.load(final, weights_only=True)
    ckpt = load_checkpoint(final)
    assert isinstance(ckpt["rng"]["numpy"][1], np.ndarray)
    model = bwssl.load_model(FIXTURES / "run-simultaneous")
    assert all(torch.equal(model.state_dict()[n], v) for n, v in ckpt["model"].items())


def test_a_checkpoint_pickled_under_numpy_1_loads(tmp_path):
    """NumPy 1 names its array rebuild function numpy.core.multiarray._reconstruct, NumPy 2
    numpy._core.multiarray._reconstruct: both names are allowed, for the same function."""
    final = FIXTURES / "run-simultaneous" / "checkpoints" / "final.pt"
    renamed = tmp_path / "final.pt"
    with zipfile.ZipFile(final) as zin, zipfile.ZipFile(renamed, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info.filename, data)
    assert "numpy.core.multiarray._reconstruct" in (
        torch.serialization.get_unsafe_globals_in_checkpoint(renamed)
    )
    old, new = load_checkpoint(final), load_checkpoint(renamed)
    assert np.array_equal(old["rng"]["numpy"][1], new["rng"]["numpy"][1])


def _in_old_format(path: Path) -> None:
    """Rewrite checkpoint ``path`` as bwssl wrote it before checkpoints held only plain
    values: NumPy's RNG state as ``np.random.get_state()``'s tuple, no checksum file."""
    ckpt = load_checkpoint(path)
    set_rng_state(ckpt["rng"])
    ckpt["rng"]["numpy"] = np.random.get_state()
    torch.save(ckpt, path)
    checksum_path(path).unlink()


def test_a_last_pt_in_the_old_format_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = config("train.checkpoint_every=3")
    train(cfg, tmp_path / "whole")
    run = tmp_path / "old"
    train_until(cfg, run, 4, monkeypatch)
    last = run / "checkpoints" / "last.pt"
    _in_old_format(last)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last)  # numpy, as before
    train(cfg, run)
    assert_same_weights(final_model(tmp_path / "whole"), final_model(run))
    # the resumed run wrote its checkpoints in the new format, with checksums
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last) == []
    assert checksum_path(last).exists() and checksum_path(run / "checkpoints" / "final.pt").exists()


# --- damage ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    train(config("train.max_steps=4", "train.checkpoint_every=2"), run)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_a_garbled_checkpoint_is_refused_on_load(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    final = run / "checkpoints" / "final.pt"
    _garble(final)
    for load in (load_checkpoint, bwssl.load_model):
        with pytest.raises(DamagedCheckpoint, match=r"final\.pt is damaged: its sha256") as e:
            load(final)
        assert "\n" not in str(e.value) and "delete it" in str(e.value)


def test_a_garbled_last_pt_stops_the_resume_and_is_kept(finished_run, tmp_path):
    """bwssl does not decide to throw away a run's progress: the error says what to do."""
    run = _copy(finished_run, tmp_path)
    (run / "checkpoints" / "final.pt").unlink()
    last = run / "checkpoints" / "last.pt"
    _garble(last)
    garbled = last.read_bytes()
    with pytest.raises(DamagedCheckpoint, match=r"last\.pt is damaged.*delete it"):
        train(config("train.max_steps=4", "train.checkpoint_every=2"), run)
    assert last.read_bytes() == garbled


def test_a_garbled_old_checkpoint_fails_its_zip_crc(tmp_path):
    """Without a checksum file (older bwssl), the CRC-32 of the zip records catches it."""
    run = Path(shutil.copytree(FIXTURES / "run-simultaneous", tmp_path / "run"))
    final = run / "checkpoints" / "final.pt"
    _garble(final)
    with pytest.raises(DamagedCheckpoint, match="CRC-32"):
        bwssl.load_model(run)


@pytest.mark.parametrize("with_checksum", [True, False], ids=["checksum", "old-no-checksum"])
def test_a_truncated_final_pt_is_not_finished(with_checksum, finished_run, tmp_path, caplog):
    """train does not take the run as finished: it writes final.pt again from last.pt,
    exactly as before, and logs nothing twice."""
    run = _copy(finished_run, tmp_path)
    final = run / "checkpoints" / "final.pt"
    if not with_checksum:
        checksum_path(final).unlink()
    _truncate(final)
    before = (run / "metrics.jsonl").read_text()
    with caplog.at_level(logging.WARNING):
        train(config("train.max_steps=4", "train.checkpoint_every=2"), run)
    assert "final.pt is damaged" in caplog.text
    assert_same_weights(final_model(finished_run), final_model(run))
    assert (run / "metrics.jsonl").read_text() == before
    load_checkpoint(final)  # complete, checksum included


def test_a_kill_between_checksum_and_rename_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    """The checksum file is written before the checkpoint takes its name; at every point of
    a save the file at the name verifies."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": {}})

    replace = os.replace

    def killed(src, dst):
        if Path(dst) == path:
            raise KeyboardInterrupt  # the process dies where the checkpoint's rename happens
        replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}})
    assert checksum_path(path).read_text().count("\n") == 2  # the old and the new digest
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(3))

    calls = []
    original = checkpoint.atomic_write_text

    def killed_after_rename(target, text):
        calls.append(target)
        if len(calls) == 2:  # the second checksum write: the new file already has its name
            raise KeyboardInterrupt
        original(target, text)

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "atomic_write_text", killed_after_rename)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}})
    assert checksum_path(path).read_text().count("\n") == 1


def test_a_foreign_file_is_refused_in_one_line(tmp_path):
    for content in (b"", b"not a checkpoint at all"):
        (tmp_path / "x.pt").write_bytes(content)
        with pytest.raises(UserError) as e:
            load_checkpoint(tmp_path / "x.pt")
        assert "\n" not in str(e.value) and str(tmp_path / "x.pt") in str(e.value)
    torch.save({"w": torch.zeros(1)}, tmp_path / "weights.pt")  # safe, but no bwssl payload
    with pytest.raises(UserError, match="not a bwssl checkpoint"):
        load_checkpoint(tmp_path / "weights.pt")


# --- leftovers of killed writes ----------------------------------------------------------------


def test_orphan_temporary_files_are_removed_when_a_run_resumes(tmp_path, monkeypatch):
    cfg = config("train.checkpoint_every=3")
    run = tmp_path / "run"
    train_until(cfg, run, 4, monkeypatch)
    orphans = [
        run / "checkpoints" / ".last.pt.k2j4h5x1.tmp",
        run / "checkpoints" / ".last.pt.sha256.a8s7d6f5.tmp",
        run / ".metrics.jsonl.q1w2e3r4.tmp",
        run / ".env.json.z9x8c7v6.tmp",
    ]
    for p in orphans:
        p.write_bytes(b"half a write")
    mine = run / "notes.tmp"
    mine.write_text("not bwssl's")
    train(cfg, run)
    assert not any(p.exists() for p in orphans)
    assert mine.exists()
    assert metric_steps(run) == list(range(1, 9))


def test_a_folder_holding_only_an_interrupted_first_write_becomes_the_run(tmp_path):
    """A run killed while writing config.yaml leaves only its temporary file: that folder is
    not refused as 'not a bwssl run'."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.yaml.x1y2z3w4.tmp").write_text("regime: sim")
    train(config("train.max_steps=2"), run)
    assert RunDir(run).saved_config() == config("train.max_steps=2")
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
