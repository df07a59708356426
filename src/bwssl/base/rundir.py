"""The files of one training run: config.yaml, env.json, metrics.jsonl, checkpoints/.

metrics.jsonl is appended one whole line per write (flushed and fsynced); a
process killed during a write can still leave a torn last line, which readers
(:func:`read_metrics`) skip and a resumed run drops.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from bwssl.base.files import atomic_write_text, remove_orphans
from bwssl.config import Config, dump_yaml, from_dict
from bwssl.errors import UserError

logger = logging.getLogger(__name__)

RUN_FILES = ("config.yaml", "env.json", "metrics.jsonl")
"""The files of a run folder that bwssl writes atomically (besides its checkpoints)."""

CHECKPOINT_FILES = ("last.pt", "final.pt", "last.pt.sha256", "final.pt.sha256")
"""The files of a run's checkpoints/ folder."""


def _metric_lines(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The lines of a metrics.jsonl file that hold a JSON object, each with its record, and
    how many others (torn or garbled) there were; blank lines are ignored."""
    good, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            good.append((line, record))
        else:
            bad += 1
    return good, bad


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, skipping (with a warning) lines that are not
    JSON objects: a torn last line left by a killed run, or garbage."""
    good, bad = _metric_lines(Path(path))
    if bad:
        logger.warning("%s: skipped %s that is not JSON", path, _plural(bad, "line"))
    return [record for _, record in good]


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
        try:
            data = yaml.safe_load(self.config.read_text())
        except (yaml.YAMLError, UnicodeDecodeError, IsADirectoryError) as e:
            raise UserError(
                f"{self.config} is not a valid bwssl config ({type(e).__name__}); restore it "
                "or delete the run folder to start over"
            ) from None
        return from_dict(data)

    def prepare(self, cfg: Config, env: dict[str, Any], resume_with: Sequence[str] = ()) -> None:
        """Create the run, or check that an existing one was made with the same config.

        ``resume_with``: dotted keys (of :data:`RESUMABLE_KEYS`) in which ``cfg`` may differ
        from the saved config: the run continues under ``cfg``, which replaces config.yaml,
        and the change is appended to ``resumes.jsonl``. Temporary files that killed atomic
        writes left behind are deleted first."""
        self.remove_orphans()
        for path in (self.metrics, self.env, self.last.parent):
            kind_ok = path.is_dir() if path == self.last.parent else path.is_file()
            if path.exists() and not kind_ok:
                raise UserError(
                    f"{path} is a {'file' if path.is_file() else 'folder'} where bwssl keeps "
                    "its own; move it away"
                )
        saved = self.saved_config()
        bad = [k for k in resume_with if k not in RESUMABLE_KEYS]
        if bad:
            raise UserError(
                f"--resume-with: {', '.join(bad)} cannot change in a running run; allowed: "
                f"{', '.join(RESUMABLE_KEYS)}"
            )
        if saved is None and resume_with:
            raise UserError(f"--resume-with: {self.root} holds no run to continue")
        if saved is not None:
            old, new = saved.to_dict(), cfg.to_dict()
            if old != new:
                diff = sorted(_diff_keys(old, new))
                other = [k for k in diff if k not in resume_with and k not in LAYOUT_KEYS]
                if other:
                    hint = (
                        f" (to continue it with another {' or '.join(RESUMABLE_KEYS)}, "
                        "pass --resume-with KEY=VALUE)"
                    )
                    raise UserError(
                        f"{self.root} holds a run with a different config (keys differ: "
                        f"{', '.join(diff)}); use another --out, or delete the folder to start "
                        f"over{hint if set(other) <= set(RESUMABLE_KEYS) else ''}"
                    )
                flat_old, flat_new = _flat(old), _flat(new)
                change = {k: [flat_old[k], flat_new[k]] for k in diff}
                record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": change}
                with open(self.root / "resumes.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                atomic_write_text(self.config, dump_yaml(cfg))
                logger.warning(
                    "%s: continuing with %s",
                    self.root,
                    ", ".join(f"{k}={v[1]} (was {v[0]})" for k, v in change.items()),
                )
            return
        if self.root.exists() and any(p.name != ".lock" for p in self.root.iterdir()):
            raise UserError(
                f"{self.root} exists and is not a bwssl run (no config.yaml); "
                "choose an empty or new --out folder"
            )
        atomic_write_text(self.config, dump_yaml(cfg))
        atomic_write_text(self.env, json.dumps(env, indent=2) + "\n")

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold ``RUN/.lock`` (an advisory ``flock``, with the holder's pid and host in the
        file) while writing this run; a second writer is refused with a message naming the
        holder. The kernel releases the lock when its process dies, so the file a dead
        process left behind is taken over, with a warning. (``flock`` may not hold across
        machines on some network file systems.)"""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
                raise UserError(
                    f"{self.root} is being written by another bwssl process ({holder}); "
                    "wait for it to finish or stop it, or use another --out"
                ) from None
            before = os.pread(fd, 512, 0).decode(errors="replace").strip()
            if before:
                logger.warning(
                    "%s: taking over the lock of a process that ended (%s)", self.root, before
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
            os.fsync(fd)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                if not self.config.exists():  # no run was made: leave nothing behind
                    path.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        self.root.rmdir()
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def remove_orphans(self) -> list[Path]:
        """Delete the temporary files of atomic writes to this run that a killed process left
        behind (``.last.pt.XXXXXXXX.tmp`` and the like); returns their paths."""
        removed = remove_orphans(self.root, RUN_FILES)
        removed += remove_orphans(self.last.parent, CHECKPOINT_FILES)
        if removed:
            logger.warning(
                "%s: removed %s left by an interrupted write",
                self.root,
                _plural(len(removed), "temporary file"),
            )
        return removed

    def truncate_metrics(self, last_step: int) -> None:
        """Keep the metric lines of steps up to ``last_step`` (the global step of the
        checkpoint a run resumes from; 0 for a run that starts afresh), so that the steps
        it redoes are not logged twice; torn or garbled lines are dropped with a warning."""
        if not self.metrics.exists():
            return
        good, bad = _metric_lines(self.metrics)
        if bad:
            logger.warning(
                "%s: dropped %s that is not JSON (torn by a killed run)",
                self.metrics,
                _plural(bad, "line"),
            )
        keep = "".join(line + "\n" for line, record in good if record.get("step", 0) <= last_step)
        if keep != self.metrics.read_text(errors="replace"):
            atomic_write_text(self.metrics, keep)

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl: one write of the whole line, flushed to disk."""
        data = (json.dumps(record) + "\n").encode()
        fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


RESUMABLE_KEYS: tuple[str, ...] = ("train.lr", "train.min_lr", "train.clip_grad")
"""Config keys a run may continue under a new value of (``--resume-with``): how hard the
optimizer steps, not what the run is."""

LAYOUT_KEYS: tuple[str, ...] = (
    "train.parallel",
    "train.pipeline_stages",
    "train.dist_timeout_s",
)
"""Config keys that say how the processes share the work, not what they compute: a run
continues under new values of these without ``--resume-with`` (the change is logged to
``resumes.jsonl``), e.g. a block-parallel run finished in one process."""


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]
