"""Helpers of the reliability tests: runs stopped after a given step, planted pickles."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bwssl.config import Config, load_config
from bwssl.train.trainer import Trainer, train

BASE = ["train.epochs=2", "train.progress=false", "model.num_blocks=2"]
"""tiny-debug, 8 optimizer steps of 4 clips, a metrics line per step."""


def config(*overrides: str) -> Config:
    return load_config("tiny-debug", [*BASE, *overrides])


class Interrupted(Exception):
    """Raised in place of the optimizer step after which a test 'kills' a run."""


def train_until(cfg: Config, run: Path, steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``cfg`` in ``run`` and stop it (as a kill would: no cleanup code of bwssl runs
    after the exception) before optimizer step ``steps + 1``."""
    original, done = Trainer.step, []

    def step(self: Trainer, *args: Any, **kwargs: Any) -> dict[int, float]:
        if len(done) == steps:
            raise Interrupted
        done.append(1)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "step", step)
        with pytest.raises(Interrupted):
            train(cfg, run)


def final_model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- planted pickles -------------------------------------------------------------------------


class ShellCommand:
    """Unpickles into ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (self.command,))


class PythonCode:
    """Unpickles into ``exec(code)``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (builtins.exec, (self.code,))


def payload(kind: str, sentinel: Path) -> Any:
    """An object whose unpickling creates ``sentinel``, of one of :data:`PAYLOADS`."""
    if kind == "os.system":
        return ShellCommand(f"touch '{sentinel}'")
    if kind == "exec":
        return PythonCode(f"open({str(sentinel)!r}, 'w').close()")
    if kind == "numpy-object-array":  # hidden where an old checkpoint's ndarray would be
        return np.array([ShellCommand(f"touch '{sentinel}'")], dtype=object)
    raise ValueError(kind)


PAYLOADS = ("os.system", "exec", "numpy-object-array")


def plant(path: Path, kind: str, sentinel: Path, forge_checksum: bool) -> None:
    """Write a checkpoint-looking file at ``path`` (model and config entries, the NumPy RNG
    state of an old checkpoint) with a payload in it; with ``forge_checksum`` a matching
    ``.sha256`` file too, as an attacker with write access could."""
    cfg = config()
    state = {
        "model": {"w": torch.zeros(2)},
        "config": cfg.to_dict(),
        "position": {"stage": 0, "epoch": 0, "step": 1, "global_step": 1},
        "rng": {"numpy": np.random.get_state()},
        "extra": payload(kind, sentinel),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    side = path.with_name(path.name + ".sha256")
    side.unlink(missing_ok=True)
    if forge_checksum:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        side.write_text(f"{digest}  {path.name}\n")
