"""SIGINT and SIGTERM stop a run within seconds with a checkpoint of the current step, and a
rerun resumes to the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ARGS = (
    "tiny-debug",
    "model.num_blocks=2",
    "train.epochs=40",  # 160 steps
    "train.checkpoint_every=1000",  # no periodic checkpoint: only the signal's
    "train.log_every=1",
)


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "bwssl", "train", *ARGS, "--out", str(out)]


def _lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def _final(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]


def _stop_after(proc: subprocess.Popen, run: Path, sig: int, lines: int = 12) -> float:
    """Send ``sig`` once ``lines`` steps are logged; returns seconds until the process ended."""
    deadline = time.time() + 120
    while _lines(run) < lines and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal"
    sent = time.time()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return time.time() - sent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_current_step_and_the_rerun_ends_bitwise_equal(sig, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cmd(tmp_path / "clean"), env=env, check=True, capture_output=True)
    run = tmp_path / "stopped"
    proc = subprocess.Popen(
        _cmd(run), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    took = _stop_after(proc, run, sig)
    err = proc.stderr.read()
    assert proc.returncode == 128 + sig, err
    assert took < 20
    assert "Traceback" not in err
    assert f"stopped: {signal.Signals(sig).name} at global step" in err and "rerun" in err
    assert not (run / "checkpoints" / "final.pt").exists()
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    step = ckpt["position"]["global_step"]
    assert step >= 12  # the step in flight when the signal came, not an earlier checkpoint
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] >= step - 1

    subprocess.run(_cmd(run), env=env, check=True, capture_output=True)
    clean, resumed = _final(tmp_path / "clean"), _final(run)
    for n in clean:
        assert torch.equal(clean[n], resumed[n]), n
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 161))


def test_sigterm_under_torchrun_stops_every_process_together(tmp_path):
    """torchrun passes SIGTERM to its workers; one checkpoint, one step, every process out."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "two"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "bwssl", "train", *ARGS]
    proc = subprocess.Popen(
        [*cmd, "--out", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    took = _stop_after(proc, run, signal.SIGTERM)
    assert proc.returncode != 0
    assert took < 30
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["position"]["global_step"] >= 12
    subprocess.run([*cmd, "--out", str(run)], env=env, check=True, capture_output=True)
    assert (run / "checkpoints" / "final.pt").exists()
