"""Atomic files and the run directory: config.yaml, env.json, metrics.jsonl, checkpoints/.

Every file is written to a temporary name in the same folder, flushed to disk
and renamed over the old one, so a crash at any moment leaves either the old or
the new version, never a torn file.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml

from bwssl.config import Config, dump_yaml, from_dict
from bwssl.errors import UserError


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temp file, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a torn file cannot exist (atomic writes), a foreign one can
        raise UserError(f"checkpoint {path} cannot be read ({e}); delete it to start over") from e


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (CUDA too when present)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def git_commit() -> str | None:
    """The commit of the bwssl source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device, seed: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "numpy": np.__version__, "git_commit": git_commit(),
        "device": str(device), "seed": seed, "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class RunDir:
    """The files of one training run."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.env = self.root / "env.json"
        self.metrics = self.root / "metrics.jsonl"
        self.last = self.root / "checkpoints" / "last.pt"
        self.final = self.root / "checkpoints" / "final.pt"

    def saved_config(self) -> Config | None:
        if not self.config.exists():
            return None
        return from_dict(yaml.safe_load(self.config.read_text()))

    def prepare(self, cfg: Config, env: dict[str, Any]) -> None:
        """Create the run, or check that an existing one was made with the same config."""
        if self.config.exists():
            old = yaml.safe_load(self.config.read_text())
            new = cfg.to_dict()
            if old != new:
                diff = sorted(_diff_keys(old, new))
                raise UserError(
                    f"{self.root} holds a run with a different config (keys differ: "
                    f"{', '.join(diff)}); use another --out, or delete the folder to start over")
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(f"{self.root} exists and is not a bwssl run (no config.yaml); "
                            "choose an empty or new --out folder")
        atomic_write_text(self.config, dump_yaml(cfg))
        atomic_write_text(self.env, json.dumps(env, indent=2) + "\n")

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metric lines logged after the checkpoint a resumed run starts from."""
        if not self.metrics.exists():
            return
        keep = [line for line in self.metrics.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= last_step]
        atomic_write_text(self.metrics, "".join(line + "\n" for line in keep))

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]
