"""Atomic file writes: a crash at any moment leaves the old file or the new one, never a torn one.

Every writer goes to a temporary name in the target's folder, is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX and
Windows within one file system). A process killed mid-write leaves its
temporary file (``.NAME.XXXXXXXX.tmp``) behind; :func:`remove_orphans` deletes
those of known names.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], None],
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Write ``path`` through ``write(file)`` into a temp file, fsync, then rename.

    ``before_replace()``, if given, runs once the new bytes are on disk and
    before they take the name ``path`` (to publish a checksum of them first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_file(path: str | Path, write_to: Callable[[Path], None]) -> None:
    """Atomically create ``path`` with a writer that needs a file *name* (``write_to(tmp)``),
    for libraries that open the file themselves (safetensors, numpy memmaps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write_to(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_orphans(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that killed atomic writes of ``names`` left in ``folder``;
    returns the paths removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for name in names:
        for tmp in folder.glob(f".{name}.*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
