"""The weighted kNN monitor: exact on separated clusters, sklearn's classifier when the votes
are uniform, temperature-weighted votes, k clipped, chunking invisible, options checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from bwssl.analysis.knn import knn_accuracy, knn_predict
from bwssl.analysis.options import options_from_overrides
from bwssl.config import ConfigError


def _clusters(
    n: int, centre: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two tight clusters around +centre and -centre, labels "a" and "b"."""
    y = np.array(["a", "b"] * (n // 2))
    sign = np.where(y == "a", 1.0, -1.0)[:, None]
    return sign * centre + 0.1 * rng.normal(size=(n, len(centre))), y


def test_two_separated_clusters_are_classified_perfectly():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=8)
    xtr, ytr = _clusters(40, centre, rng)
    xte, yte = _clusters(20, centre, rng)
    # k = 200 > 40 training points: clipped, and the near cluster still outvotes the far one
    assert knn_accuracy(xtr, ytr, xte, yte) == 1.0
    assert knn_accuracy(torch.tensor(xtr), ytr, torch.tensor(xte), yte, k=5) == 1.0


def test_uniform_votes_agree_with_sklearn_cosine_knn():
    rng = np.random.default_rng(1)
    xtr, ytr = rng.normal(size=(300, 16)), rng.integers(0, 5, 300)
    xte = rng.normal(size=(120, 16))
    for k in (1, 7, 25):
        ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        want = ref.fit(xtr, ytr).predict(xte)
        got = knn_predict(xtr, ytr, xte, k=k, temperature=1e9)  # exp(s / T) = 1: uniform
        assert np.array_equal(got, want), k
    assert 0.1 < np.mean(got != knn_predict(xtr, ytr, xte, k=25)) < 0.9  # T = 0.07 differs


def test_votes_are_weighted_by_exp_similarity_over_temperature():
    # One neighbour of class 0 close to the query, two of class 1 at 60 and 90 degrees.
    train = np.array([[1.0, 0.1], [0.5, 0.866], [0.0, 1.0]])
    codes = np.array([0, 1, 1])
    query = np.array([[1.0, 0.0]])
    s = train @ query[0] / np.linalg.norm(train, axis=1)
    assert knn_predict(train, codes, query, k=3, temperature=1e9)[0] == 1  # majority
    for t in (0.07, 0.5, 2.0):  # class 0, 0, then 1
        w = np.exp(s / t)
        assert knn_predict(train, codes, query, k=3, temperature=t)[0] == int(w[1:].sum() > w[0])
    assert knn_predict(train, codes, query, k=3, temperature=1e-4)[0] == 0  # no overflow


def test_k_larger_than_the_training_set_is_clipped_and_chunks_change_nothing():
    rng = np.random.default_rng(2)
    xtr, ytr = rng.normal(size=(9, 4)), rng.integers(0, 3, 9)
    xte = rng.normal(size=(31, 4))
    full = knn_predict(xtr, ytr, xte, k=9)
    assert np.array_equal(knn_predict(xtr, ytr, xte, k=200), full)
    assert np.array_equal(knn_predict(xtr, ytr, xte, k=200, chunk_rows=4), full)
    # a test label never seen in training is an error, not a crash
    yte = knn_predict(xtr, ytr, xte, k=1)  # the codes are the labels 0..2
    yte[0] = 99
    assert knn_accuracy(xtr, ytr, xte, yte, k=1) == pytest.approx(30 / 31)


@pytest.mark.parametrize(
    "override,key",
    [("knn_k=0", "knn_k"), ("knn_temperature=0", "knn_temperature")],
)
def test_bad_knn_options_name_their_key(override, key):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        options_from_overrides([override])
