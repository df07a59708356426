"""Device and precision resolution, in one place for training, analysis and bench."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from bwssl.errors import UserError

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""Autocast dtype of each ``train.precision`` (None: no autocast)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device {name} was asked for but no CUDA device is available; use cpu or auto"
        )
    return torch.device(name)


def resolve_amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: ``auto`` is bf16 on GPUs, fp32 (no
    autocast) on CPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return AMP_DTYPES[precision]


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def enable_tf32(device: torch.device) -> None:
    """TF32 matmuls and convolutions on CUDA (a no-op elsewhere)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
