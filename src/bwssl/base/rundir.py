"""The files of one training run: config.yaml, env.json, metrics.jsonl, checkpoints/."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bwssl.base.files import atomic_write_text
from bwssl.config import Config, dump_yaml, from_dict
from bwssl.errors import UserError


def git_commit() -> str | None:
    """The commit of the bwssl source tree, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device, seed: int) -> dict[str, Any]:
    """Versions, git commit, device and seed of a run (its env.json)."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "git_commit": git_commit(),
        "device": str(device),
        "seed": seed,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class RunDir:
    """The files of one training run."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.env = self.root / "env.json"
        self.metrics = self.root / "metrics.jsonl"
        self.last = self.root / "checkpoints" / "last.pt"
        self.final = self.root / "checkpoints" / "final.pt"

    def saved_config(self) -> Config | None:
        """The run's config (keys added to bwssl since it was written take their defaults)."""
        if not self.config.exists():
            return None
        return from_dict(yaml.safe_load(self.config.read_text()))

    def prepare(self, cfg: Config, env: dict[str, Any]) -> None:
        """Create the run, or check that an existing one was made with the same config."""
        saved = self.saved_config()
        if saved is not None:
            old, new = saved.to_dict(), cfg.to_dict()
            if old != new:
                diff = sorted(_diff_keys(old, new))
                raise UserError(
                    f"{self.root} holds a run with a different config (keys differ: "
                    f"{', '.join(diff)}); use another --out, or delete the folder to start over"
                )
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(
                f"{self.root} exists and is not a bwssl run (no config.yaml); "
                "choose an empty or new --out folder"
            )
        atomic_write_text(self.config, dump_yaml(cfg))
        atomic_write_text(self.env, json.dumps(env, indent=2) + "\n")

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metric lines logged after the checkpoint a resumed run starts from."""
        if not self.metrics.exists():
            return
        keep = [
            line
            for line in self.metrics.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step
        ]
        atomic_write_text(self.metrics, "".join(line + "\n" for line in keep))

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl."""
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]
