"""Input conversion shared by the metrics: numpy arrays or torch tensors in, tensors out.

Every public metric of :mod:`bwssl.analysis` accepts either kind of array, so
the conversion lives here once instead of in each metric.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import torch

Array: TypeAlias = "np.ndarray | torch.Tensor"
"""What the metrics accept: a numpy array or a torch tensor (any device)."""


def as_float_tensor(
    x: Array, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> torch.Tensor:
    """``x`` as a detached floating tensor of ``dtype`` on ``device`` (default: where it is)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype)


def as_numpy(x: Array | list[object]) -> np.ndarray:
    """``x`` as a numpy array (a tensor is detached and moved to the CPU)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def label_codes(labels: Array | list[object]) -> np.ndarray:
    """Labels of any hashable kind (ints, strings) as int64 codes 0..C-1, order-preserving."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64).reshape(-1)
