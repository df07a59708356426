"""Representational similarity: CKA between two representations, CPS within one.

All arithmetic is float64 so that values near 1 (successive BWSSL blocks reach
CKA > 0.98) keep their digits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bwssl.analysis.arrays import Array, as_float_tensor


def _rows(x: Array, name: str) -> torch.Tensor:
    t = as_float_tensor(x)
    if t.dim() < 2:
        raise ValueError(f"{name} must have shape (N, D) (or (..., D)), got {tuple(t.shape)}")
    return t.reshape(-1, t.shape[-1])


def _paired_rows(X: Array, Y: Array) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _rows(X, "X"), _rows(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y need the same number of rows (examples), got {x.shape[0]} and {y.shape[0]}"
        )
    if x.shape[0] < 2:
        raise ValueError("CKA needs at least 2 examples")
    return x, y.to(x.device)


def linear_cka(X: Array, Y: Array) -> float:
    """Linear centered kernel alignment of two representations of the same N examples.

    ``X`` is (N, Dx) and ``Y`` is (N, Dy); leading dimensions beyond the last
    are flattened into rows, so (B, N, D) token tensors compare token by
    token. Columns are centred (the per-feature mean over examples is
    subtracted), then

        CKA = ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F).

    When it is cheaper (few examples, wide features) the same value is
    computed from the N x N Gram matrices: ``<XX^T, YY^T>_F / (||XX^T||_F
    ||YY^T||_F)``. The result lies in [0, 1] and is invariant to orthogonal
    transforms and isotropic scaling of either input. A representation
    without any variance gives ``nan`` (similarity is undefined).

    Accepts numpy arrays or torch tensors (any device).
    """
    x, y = _paired_rows(X, Y)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    n, dx = x.shape
    dy = y.shape[1]
    if n * (dx + dy) < dx * dy + dx * dx + dy * dy:  # Gram form is cheaper
        k, l_ = x @ x.T, y @ y.T  # (N, N)
        cross = (k * l_).sum()
        norm_x, norm_y = torch.linalg.norm(k), torch.linalg.norm(l_)
    else:
        cross = (x.T @ y).square().sum()
        norm_x, norm_y = torch.linalg.norm(x.T @ x), torch.linalg.norm(y.T @ y)
    denom = float(norm_x * norm_y)
    return float(cross) / denom if denom > 0 else math.nan


def _centered_rbf_gram(x: torch.Tensor, sigma_frac: float) -> torch.Tensor:
    sq = x.square().sum(dim=1)
    sq_dist = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)  # (N, N)
    median = torch.median(sq_dist.flatten()).item()
    if median <= 0:
        raise ValueError(
            "RBF CKA: the median squared distance is 0 (too many identical rows); "
            "the bandwidth is undefined"
        )
    gram = torch.exp(-sq_dist / (2.0 * sigma_frac**2 * median))
    gram = gram - gram.mean(dim=0, keepdim=True)
    return gram - gram.mean(dim=1, keepdim=True)


def rbf_cka(X: Array, Y: Array, sigma_frac: float = 0.5) -> float:
    """CKA with Gaussian (RBF) kernels, as in Kornblith et al. (2019).

    The kernel is ``exp(-d^2 / (2 sigma^2))`` with ``sigma = sigma_frac *
    sqrt(median d^2)``, the median taken over all entries of the squared
    distance matrix, diagonal included (their reference code). The Gram
    matrices are double-centred and CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).
    Memory is O(N^2): use it on pooled clip embeddings, not on every token.
    """
    if sigma_frac <= 0:
        raise ValueError(f"sigma_frac must be > 0, got {sigma_frac}")
    x, y = _paired_rows(X, Y)
    k, l_ = _centered_rbf_gram(x, sigma_frac), _centered_rbf_gram(y, sigma_frac)
    denom = float(torch.linalg.norm(k) * torch.linalg.norm(l_))
    return float((k * l_).sum()) / denom if denom > 0 else math.nan


def cps(tokens: Array, max_clips: int | None = None, seed: int = 0, eps: float = 1e-5) -> float:
    """Cosine patch similarity: how alike the patch tokens of one clip are.

    ``tokens`` is (B, N, D) (B clips of N patch tokens) or (N, D) (one clip).
    Each token goes through a LayerNorm without affine parameters (``eps``,
    torch's default) and L2 normalization; CPS of a clip is the mean cosine
    over the N (N - 1) ordered pairs of distinct tokens, and the result is the
    mean over clips. With ``max_clips`` set, that many clips are drawn without
    replacement by a generator seeded with ``seed``.

    The pair mean uses ``sum_{i != j} <z_i, z_j> = ||sum_i z_i||^2 -
    sum_i ||z_i||^2``, which is O(N D) per clip instead of O(N^2 D).
    Accepts numpy arrays or torch tensors (any device).
    """
    t = as_float_tensor(tokens)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"tokens must be (B, N, D) or (N, D), got {tuple(t.shape)}")
    b, n, d = t.shape
    if n < 2:
        raise ValueError(f"CPS needs at least 2 tokens per clip, got {n}")
    if max_clips is not None and max_clips < b:
        if max_clips < 1:
            raise ValueError(f"max_clips must be >= 1, got {max_clips}")
        gen = torch.Generator().manual_seed(seed)
        t = t[torch.randperm(b, generator=gen)[:max_clips].to(t.device)]
    z = F.normalize(F.layer_norm(t, (d,), eps=eps), dim=-1)  # (B, N, D)
    pair_sum = z.sum(dim=1).square().sum(dim=-1) - z.square().sum(dim=(1, 2))  # (B,)
    return float((pair_sum / (n * (n - 1))).mean())
