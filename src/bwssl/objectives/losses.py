"""Joint-embedding self-supervised losses: Barlow Twins, VICReg and SimCLR's NT-Xent.

All three take two embeddings ``z1, z2`` of shape (B, D), where row ``i`` of both is the same
sample seen through two views, and return a scalar tensor.

* :func:`barlow_twins_loss` drives the cross-correlation matrix of the batch-normalized
  embeddings towards the identity (facebookresearch/barlowtwins, ``main.py``).
* :func:`vicreg_loss` combines an invariance (MSE) term with a hinge on the per-feature standard
  deviation and a penalty on off-diagonal covariances (facebookresearch/vicreg,
  ``main_vicreg.py``).
* :func:`nt_xent_loss` is the normalized-temperature cross-entropy of SimCLR
  (google-research/simclr), with 2B anchors, one positive and 2B - 2 negatives each.

Why this file exists: no maintained library ships these three with both the exact scalings of
the official code and the distributed semantics wanted here, so the formulas are transcribed
from the official repositories and pinned by tests against separate reference transcriptions.

Distributed semantics. When ``torch.distributed`` is initialized with more than one process,
every process passes its local rows; :func:`gather_batch` concatenates them across processes
with the autograd-aware ``torch.distributed.nn.functional.all_gather`` and every statistic
(batch normalization, means, variances, covariances, negatives) is taken over the global batch.
Every process therefore computes the same global loss value. The gather's backward sums the
gradient of each process's copy into the owning rows, and ``DistributedDataParallel`` averages
parameter gradients over processes, so the resulting gradients equal those of one process
running the whole batch. Local batch sizes must be equal on all processes (a requirement of
``all_gather``). With a single process no collective is issued.

Every loss is computed in ``torch.promote_types(dtype, float32)`` (float32 for bf16/fp16
inputs, float64 stays float64) with autocast disabled, so it is safe to call on bf16 outputs of
an autocast region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bwssl.base.collectives import gather_batch

__all__ = ["barlow_twins_loss", "gather_batch", "nt_xent_loss", "vicreg_loss"]

_BN_EPS = 1e-5  # nn.BatchNorm1d's default eps, used by the Barlow Twins normalization
_VICREG_EPS = 1e-4  # added to the variance before the square root in VICReg


def _prepare(name: str, z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Validate local shapes, cast to the compute dtype and gather to the global batch (B, D)."""
    if z1.dim() != 2 or z2.dim() != 2:
        raise ValueError(
            f"{name}: z1 and z2 must be 2-D (batch, dim) tensors, "
            f"got shapes {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape != z2.shape:
        raise ValueError(
            f"{name}: z1 and z2 must have the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    z1 = gather_batch(z1.to(dtype))
    z2 = gather_batch(z2.to(dtype))
    if z1.shape[0] < 2:
        raise ValueError(
            f"{name}: the loss needs at least 2 samples in the (global) batch to compute batch "
            f"statistics / negatives, got batch size {z1.shape[0]}"
        )
    return z1, z2


def _off_diagonal_sq_sum(m: Tensor) -> Tensor:
    """Sum of the squared off-diagonal entries of a square (D, D) matrix."""
    eye = torch.eye(m.shape[0], dtype=torch.bool, device=m.device)
    return m.masked_fill(eye, 0.0).pow(2).sum()


def _batch_norm(z: Tensor) -> Tensor:
    """``BatchNorm1d(affine=False)`` in training mode on (B, D): batch mean, biased variance."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + _BN_EPS)


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 0.0051, scale: float = 1.0) -> Tensor:
    """Barlow Twins loss of two views ``z1, z2`` of shape (B, D); returns a scalar.

    Each view is normalized per feature over the global batch like ``BatchNorm1d(affine=False)``
    in training mode (eps 1e-5), ``c = bn(z1).T @ bn(z2) / B`` is the (D, D) cross-correlation,
    and the loss is ``sum_i (c_ii - 1)^2 + lambd * sum_{i != j} c_ij^2``, multiplied by
    ``scale``. ``B`` is the global batch size and must be at least 2.
    """
    z1, z2 = _prepare("barlow_twins_loss", z1, z2)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        c = _batch_norm(z1).T @ _batch_norm(z2) / z1.shape[0]
        on_diag = (torch.diagonal(c) - 1.0).pow(2).sum()
        off_diag = _off_diagonal_sq_sum(c)
        return scale * (on_diag + lambd * off_diag)


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> Tensor:
    """VICReg loss of two views ``z1, z2`` of shape (B, D); returns a scalar.

    ``sim_coeff * mse(z1, z2) + std_coeff * std + cov_coeff * cov`` over the global batch, with,
    for each centred view ``x``, ``std_x = sqrt(var(x) + 1e-4)`` (unbiased variance per
    feature), ``std = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2``,
    ``cov_x = x.T @ x / (B - 1)`` (D, D) and ``cov = sum_{i != j} cov_x[i, j]^2 / D`` summed
    over both views. ``B`` is the global batch size and must be at least 2.
    """
    x, y = _prepare("vicreg_loss", z1, z2)
    with torch.autocast(device_type=x.device.type, enabled=False):
        batch, dim = x.shape
        repr_loss = F.mse_loss(x, y)

        x = x - x.mean(dim=0)
        y = y - y.mean(dim=0)

        std_x = torch.sqrt(x.var(dim=0) + _VICREG_EPS)
        std_y = torch.sqrt(y.var(dim=0) + _VICREG_EPS)
        std_loss = F.relu(1.0 - std_x).mean() / 2 + F.relu(1.0 - std_y).mean() / 2

        cov_x = x.T @ x / (batch - 1)
        cov_y = y.T @ y / (batch - 1)
        cov_loss = _off_diagonal_sq_sum(cov_x) / dim + _off_diagonal_sq_sum(cov_y) / dim

        return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> Tensor:
    """SimCLR NT-Xent loss of two views ``z1, z2`` of shape (N, D); returns a scalar.

    The 2N rows of both views (over the global batch) are L2-normalized and their (2N, 2N)
    cosine similarities divided by ``temperature``. Each of the 2N anchors has as positive the
    other view of the same sample and as negatives the other 2N - 2 rows (self-similarity is
    masked out); the loss is the softmax cross-entropy of the positive, averaged over the 2N
    anchors. ``N`` is the global batch size and must be at least 2.
    """
    z1, z2 = _prepare("nt_xent_loss", z1, z2)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        n = z1.shape[0]
        z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
        logits = z @ z.T / temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        idx = torch.arange(n, device=z.device)
        positives = torch.cat([idx + n, idx])
        return F.cross_entropy(logits, positives)
