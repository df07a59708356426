"""One writer per run folder: a second training of the same folder is refused, naming the
holder; a lock left by a dead process is taken over."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from bwssl.base.rundir import RunDir
from bwssl.cli import main


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bwssl", "train", "tiny-debug", "train.epochs=200"]
    first = subprocess.Popen([*cmd, "--out", str(out)], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None
        assert main(["train", "tiny-debug", "train.epochs=200", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"being written by another bwssl process (pid {first.pid} on" in err
        assert first.poll() is None, "the refused second writer must not disturb the first"
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_live_holder_refuses_and_a_dead_ones_is_taken_over(
    make_cfg, tmp_path, caplog, capsys
):
    out = tmp_path / "run"
    with RunDir(out).writer_lock():  # another holder (its own open file description)
        assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 2
        assert f"pid {os.getpid()}" in capsys.readouterr().err
    out.mkdir(exist_ok=True)
    (out / ".lock").write_text("pid 4194304 on elsewhere")  # left by a process that died
    with caplog.at_level(logging.WARNING):
        assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 0
    assert "taking over the lock of a process that ended (pid 4194304 on elsewhere)" in (
        caplog.text
    )
    assert (out / "checkpoints" / "final.pt").exists()


def test_a_refused_folder_keeps_no_lock_file(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    assert main(["train", "tiny-debug", "train.max_steps=1", "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
