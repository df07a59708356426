"""Checkpoints: written atomically with a checksum, loaded without running code.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python
values (dicts, lists, tuples, str, int, float, bool, None), so it loads with
``torch.load(weights_only=True)``: unpickling can build nothing else, and a
pickle that names any other function or class (a planted ``os.system`` call, a
foreign object) is refused before anything runs. Checkpoints written before
this rule kept NumPy's RNG state as an ``ndarray``; they load with exactly the
NumPy globals that state needs allowed, and nothing more.

Next to ``NAME.pt`` lies ``NAME.pt.sha256`` (``sha256sum`` format: ``sha256sum
-c`` checks it), written before the checkpoint takes its name and listing the
digests of both the old and the new file until the rename is done, then the new
one alone; so whenever a process is killed, the file called ``NAME.pt`` has its
digest listed. Every load checks it, and a checkpoint that does not match is
refused as damaged. A checkpoint without a checksum file (written by an older
bwssl) is checked against the CRC-32 of every record of its zip container.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import pickle
import random
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from bwssl.base.files import atomic_write, atomic_write_text, file_sha256
from bwssl.errors import UserError

logger = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".sha256"
"""The checksum file of ``NAME.pt`` is ``NAME.pt.sha256``."""


class CheckpointError(UserError):
    """A checkpoint file that bwssl will not load."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose bytes are not the ones bwssl wrote (truncated, garbled).

    The message names the file, what is wrong (``problem``) and what to do."""

    def __init__(self, path: Path, problem: str, remedy: str | None = None) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"checkpoint {path} {problem}; {remedy or _WHAT_TO_DO}")


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint whose unpickling would build objects other than tensors and plain values."""


def _legacy_numpy_globals() -> list[Any]:
    """What unpickling the NumPy RNG state of an old checkpoint needs: an ``ndarray`` of
    ``uint32`` (its rebuild function, under the module names of NumPy 1 and 2, the class,
    ``dtype`` and the ``uint32`` dtype's class). None of them runs user code."""
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, whatever its module
    return [
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]


_WHAT_TO_DO = (
    "restore it from a copy, or delete it (with its .sha256 file, if any): bwssl train then "
    "redoes the steps it held"
)


def checksum_path(path: str | Path) -> Path:
    """The checksum file of checkpoint ``path``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _listed_digests(path: Path) -> list[str]:
    """The sha256 digests listed in checksum file ``path``; ValueError when it is garbled."""
    digests = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        digest = line.split()[0].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{line!r} is not a sha256 line")
        digests.append(digest)
    if not digests:
        raise ValueError("no digest")
    return digests


def _checksum_text(digests: list[str], name: str) -> str:
    return "".join(f"{d}  {name}\n" for d in dict.fromkeys(digests))


class _HashingWriter:
    """A write-only file that passes its bytes on to ``f`` and hashes them."""

    def __init__(self, f: IO[bytes], digest: Any) -> None:
        self.f, self.digest = f, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically, with its sha256 in ``path.sha256``."""
    path, side = Path(path), checksum_path(path)
    before: list[str] = []
    if side.exists():
        try:
            before = _listed_digests(side)
        except (OSError, ValueError):
            before = []  # the old file cannot be vouched for anyway
    elif path.exists():
        before = [file_sha256(path)]  # written by an older bwssl, without a checksum
    digest = hashlib.sha256()

    def publish() -> None:  # the new bytes are on disk; the old ones still hold the name
        atomic_write_text(side, _checksum_text([digest.hexdigest(), *before], path.name))

    try:
        atomic_write(path, lambda f: torch.save(payload, _HashingWriter(f, digest)), publish)
        atomic_write_text(side, _checksum_text([digest.hexdigest()], path.name))
    except OSError as e:
        raise UserError(disk_error(path, e)) from None
    except RuntimeError as e:  # torch.save wraps the writer's OSError in its zip writer
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OSError):
            raise UserError(disk_error(path, cause)) from None
        if "No space left" in str(e) or "file write failed" in str(e):
            raise UserError(disk_error(path, OSError(errno.ENOSPC, str(e)))) from None
        raise


def disk_error(path: Path, e: OSError) -> str:
    """One line for a failed write of ``path``: what happened, and that the old file holds."""
    what = {
        errno.ENOSPC: "no space left on its device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
    }.get(e.errno or 0, e.strerror or str(e))
    return (
        f"cannot write {path}: {what}; the previous {path.name} (if any) is intact. Free "
        "space or fix the folder, then rerun the same command to continue"
    )


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`DamagedCheckpoint` unless ``path`` holds the bytes bwssl wrote: its
    digest is listed in its checksum file, or, without one, every zip record's CRC-32 holds."""
    path = Path(path)
    side = checksum_path(path)
    if side.exists():
        try:
            listed = _listed_digests(side)
        except (OSError, ValueError) as e:
            raise DamagedCheckpoint(
                path,
                f"has an unreadable checksum file {side.name} ({e})",
                f"delete {side.name} to load the checkpoint unchecked",
            ) from e
        if file_sha256(path) not in listed:
            raise DamagedCheckpoint(
                path,
                f"is damaged: its sha256 does not match {side.name} "
                "(truncated or corrupted on disk)",
            )
        return
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as e:
        raise DamagedCheckpoint(
            path, f"is damaged or not a torch checkpoint (not a complete zip file: {e})"
        ) from e
    if bad is not None:
        raise DamagedCheckpoint(path, f"is damaged: its record {bad} fails its CRC-32 check")


@contextmanager
def _allow_legacy_numpy() -> Iterator[None]:
    with torch.serialization.safe_globals(_legacy_numpy_globals()):
        yield


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _unsafe_reason(path: Path, error: Exception) -> str:
    """What in ``path`` ``weights_only`` refused: the globals it names, else torch's reason."""
    try:
        with _allow_legacy_numpy():
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the static scan itself failed; fall back to torch's message
        names = []
    if names:
        return f"it refers to {', '.join(sorted(names))}"
    text = str(error)
    found = re.search(r"WeightsUnpickler error:(.*?)(Check the documentation|$)", text, re.S)
    return _one_line(found.group(1) if found else text)[:300]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The payload of bwssl checkpoint ``path``, checked (:func:`verify_checkpoint`) and
    unpickled with ``weights_only=True``: no code in the file runs.

    Raises :class:`DamagedCheckpoint` for a file that is not what bwssl wrote and
    :class:`UnsafeCheckpoint` for one that needs more than tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    verify_checkpoint(path)
    try:
        with _allow_legacy_numpy():
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(
            f"refusing to load {path}: {_unsafe_reason(path, e)}, which no bwssl checkpoint "
            "needs (bwssl unpickles only tensors and plain values, so that no code in a file "
            "runs); delete it, or load it yourself only if you trust its source"
        ) from None
    except Exception as e:
        raise DamagedCheckpoint(path, f"cannot be read ({_one_line(str(e))[:300]})") from e
    if not isinstance(payload, dict) or not {"model", "config"} <= payload.keys():
        raise CheckpointError(f"{path} is not a bwssl checkpoint (no 'model' and 'config' entries)")
    return payload


def is_complete(path: Path) -> bool:
    """Whether checkpoint ``path`` exists and loads. A damaged one counts as missing (with a
    warning), so a run whose final.pt was truncated is not taken as finished; an unsafe one
    raises :class:`UnsafeCheckpoint`."""
    if not Path(path).exists():
        return False
    try:
        load_checkpoint(path)
    except DamagedCheckpoint as e:
        logger.warning(
            "checkpoint %s %s: the run is not finished; writing it again", path, e.problem
        )
        return False
    return True


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (CUDA too when present), as plain values and tensors.

    NumPy's state is stored as a dict of its parts (the key as a list of ints), not as the
    ``ndarray`` tuple ``np.random.get_state()`` returns, so that checkpoints hold no NumPy
    objects.
    """
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(name),
            "key": [int(v) for v in key],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states; also the NumPy tuple of older checkpoints."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (
            numpy_state["bit_generator"],
            np.asarray(numpy_state["key"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
