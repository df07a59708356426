"""An on-disk cache of generated clips: one ``.npy`` file, memory-mapped for reading.

Generated datasets (the synthetic motion clips, the gratings) render clips on
the fly; with a cache folder they are rendered once, in vectorized chunks,
into ``NAME.npy`` (uint8 (N, T, H, W, 3)), written under a temporary name and
renamed when complete, so an interrupted render never leaves a partial cache.
The file name encodes every parameter the content depends on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bwssl.base.files import atomic_write_file

logger = logging.getLogger(__name__)

_CHUNK_PIXELS = 500_000
"""Pixels (frames x height x width) rendered per chunk: about one 16x146x146 clip, so the
render's temporaries stay in the CPU cache (several times faster than big chunks)."""


def cached_clips(
    path: Path,
    shape: tuple[int, ...],
    render: Callable[[int, int], np.ndarray],
    *,
    desc: str = "rendering clips",
    progress: bool = True,
) -> np.ndarray:
    """A read-only memory map of ``path``, rendering it first when absent.

    ``shape`` is (N, T, H, W, 3); ``render(start, stop)`` returns clips
    ``start:stop`` as a uint8 array of shape (stop - start, T, H, W, 3).
    """
    if path.is_file():
        try:
            data = np.load(path, mmap_mode="r")
            if data.shape == tuple(shape) and data.dtype == np.uint8:
                return data
        except (OSError, ValueError):
            pass
        logger.warning("ignoring the unusable clip cache %s; rendering it again", path)
    n = shape[0]
    chunk = max(1, _CHUNK_PIXELS // int(np.prod(shape[1:4])))

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(shape))
        with tqdm(total=n, desc=desc, unit="clip", disable=not progress or n < 2 * chunk) as bar:
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                out[start:stop] = render(start, stop)
                bar.update(stop - start)
        out.flush()
        del out

    atomic_write_file(path, write)
    return np.load(path, mmap_mode="r")
