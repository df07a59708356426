"""Vectorized retrieval mAP against sklearn's per-query average_precision_score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bwssl.analysis import retrieval_map
from bwssl.analysis.retrieval import cosine_similarity_matrix, retrieval_map_reference


def _map_ignoring_ties(emb: np.ndarray, labels: np.ndarray) -> float:
    """AP with every rank its own threshold (what sklearn does *not* do)."""
    sims = cosine_similarity_matrix(torch.from_numpy(emb.astype(np.float64))).numpy()
    aps = []
    for i in range(len(emb)):
        others = np.arange(len(emb)) != i
        rel = (labels[others] == labels[i])[np.argsort(-sims[i, others], kind="stable")]
        if rel.any():
            hits = np.cumsum(rel)
            aps.append(float(np.sum(rel * hits / np.arange(1, len(rel) + 1)) / rel.sum()))
    return float(np.mean(aps))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_sklearn_with_ties_and_skipped_queries(seed) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.integers(-1, 2, size=(150, 3))  # few distinct directions: many exact ties
    labels = rng.integers(0, 40, size=150)
    labels[:5] = 1000 + np.arange(5)  # singletons: queries with no relevant item, skipped
    expected = retrieval_map_reference(emb, labels)
    assert retrieval_map(emb, labels, chunk_size=17) == pytest.approx(expected, abs=1e-12)
    # the ties matter: ranking them arbitrarily gives a different number
    assert abs(_map_ignoring_ties(emb, labels) - expected) > 1e-4


def test_map_equals_sklearn_on_continuous_embeddings() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 12, size=300)
    emb = rng.normal(size=(300, 16)) + 0.5 * np.eye(16)[labels % 16]
    expected = retrieval_map_reference(emb, labels)
    got = retrieval_map(torch.from_numpy(emb).float(), torch.from_numpy(labels))
    assert got == pytest.approx(expected, abs=1e-6)


def test_map_string_labels_perfect_and_zero_vectors() -> None:
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 0.0]])
    labels = ["a", "a", "b", "b", "c"]
    assert retrieval_map(emb, labels) == 1.0
    assert retrieval_map_reference(emb, labels) == 1.0


def test_map_without_any_relevant_pair_raises() -> None:
    with pytest.raises(ValueError, match="undefined"):
        retrieval_map(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        retrieval_map(np.eye(3), [0, 1])
