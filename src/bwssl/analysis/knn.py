"""Weighted k-nearest-neighbour accuracy: the fast monitor of self-supervised features.

The classifier of Wu et al. (2018, instance discrimination), used as the kNN
monitor by solo-learn and the Barlow Twins / VICReg literature: features are
L2-normalized, each test feature takes its k nearest training features by
cosine similarity s, and each neighbour votes for its label with weight
exp(s / T); the class with the largest vote wins. The defaults are that
convention's k = 200 and T = 0.07.

Written here rather than with sklearn's ``KNeighborsClassifier`` because that
has no exp(s / T) weighting and computes the full distance matrix on the
CPU: this one runs on the analysis device in chunks of test rows, so a
50k x 10k comparison never holds more than one chunk's similarities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bwssl.analysis.arrays import Array, as_float_tensor, as_numpy, label_codes

CHUNK_ELEMENTS = 2**25
"""Similarities held at once (test rows per chunk x training rows): 128 MiB of float32."""


def knn_predict(
    train_X: Array,
    train_codes: np.ndarray,
    test_X: Array,
    k: int = 200,
    temperature: float = 0.07,
    device: torch.device | str = "cpu",
    chunk_rows: int | None = None,
) -> np.ndarray:
    """Predicted class codes (M,) of the (M, D) ``test_X`` from the (N, D) ``train_X`` with
    int class codes ``train_codes`` (N,).

    ``k`` is clipped to N. Ties in the vote go to the smallest code. ``chunk_rows`` test
    rows are compared at a time (default: as many as keep a chunk's similarities within
    :data:`CHUNK_ELEMENTS`); the result does not depend on it. Votes are computed as
    exp((s - s_max) / T) with s_max the row's best similarity, which leaves every
    ratio (so the winner) unchanged and cannot overflow for a small T.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    train = F.normalize(as_float_tensor(train_X, torch.float32, device), dim=1)  # (N, D)
    test = F.normalize(as_float_tensor(test_X, torch.float32, device), dim=1)  # (M, D)
    n = train.shape[0]
    if n == 0:
        raise ValueError("kNN needs at least one training feature")
    labels = torch.as_tensor(train_codes, dtype=torch.long, device=train.device)  # (N,)
    num_classes = int(labels.max()) + 1
    k = min(k, n)
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // n)
    out = []
    for start in range(0, test.shape[0], rows):
        sim = test[start : start + rows] @ train.T  # (c, N)
        top, idx = sim.topk(k, dim=1)  # (c, k), best first
        weights = torch.exp((top - top[:, :1]) / temperature)  # (c, k)
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, labels[idx], weights)  # (c, C)
        out.append(votes.argmax(dim=1))
    if not out:
        return np.zeros(0, dtype=np.int64)
    return torch.cat(out).cpu().numpy()


def knn_accuracy(
    train_X: Array,
    train_y: Array | list[object],
    test_X: Array,
    test_y: Array | list[object],
    k: int = 200,
    temperature: float = 0.07,
    device: torch.device | str = "cpu",
    chunk_rows: int | None = None,
) -> float:
    """Top-1 accuracy on (``test_X``, ``test_y``) of the weighted kNN classifier
    (:func:`knn_predict`) over (``train_X``, ``train_y``); labels of any hashable kind.
    Test labels never seen in training count as errors."""
    codes = label_codes(np.concatenate([as_numpy(train_y), as_numpy(test_y)]))
    n = len(train_X)
    if len(codes) != n + len(test_X):
        raise ValueError(f"{len(train_X)} + {len(test_X)} feature rows but {len(codes)} labels")
    pred = knn_predict(train_X, codes[:n], test_X, k, temperature, device, chunk_rows)
    return float(np.mean(pred == codes[n:])) if len(pred) else float("nan")
