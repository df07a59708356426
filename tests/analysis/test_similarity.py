"""CKA and CPS: exact values, invariances, input kinds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bwssl.analysis import cps, linear_cka
from bwssl.analysis.similarity import rbf_cka


def _direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The protocol's formula in the feature (D x D) form, float64."""
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    num = np.linalg.norm(x.T @ y, "fro") ** 2
    return float(num / (np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize(("n", "dx", "dy"), [(40, 8, 12), (10, 64, 32), (200, 16, 16)])
def test_linear_cka_matches_direct_formula_in_both_forms(rng, n, dx, dy) -> None:
    x = rng.normal(size=(n, dx))
    y = x[:, : min(dx, dy)] @ rng.normal(size=(min(dx, dy), dy)) + rng.normal(size=(n, dy))
    assert linear_cka(x, y) == pytest.approx(_direct_cka(x, y), rel=1e-10)


def test_linear_cka_identity_orthogonal_and_scale_invariance(rng) -> None:
    x = rng.normal(size=(50, 20)) + 3.0
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    y = rng.normal(size=(50, 7))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 2.5 * x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ q, y) == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert linear_cka(0.1 * x, 7.0 * y) == pytest.approx(linear_cka(x, y), rel=1e-10)
    assert 0.0 <= linear_cka(x, y) < 1.0


def test_linear_cka_accepts_tensors_and_flattens_tokens(rng) -> None:
    x = rng.normal(size=(4, 9, 6)).astype(np.float32)
    y = rng.normal(size=(4, 9, 5))
    flat = _direct_cka(x.reshape(-1, 6).astype(np.float64), y.reshape(-1, 5))
    assert linear_cka(torch.from_numpy(x), y) == pytest.approx(flat, rel=1e-6)


def test_linear_cka_errors_and_constant_input(rng) -> None:
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(rng.normal(size=(5, 3)), rng.normal(size=(6, 3)))
    assert math.isnan(linear_cka(np.ones((5, 3)), rng.normal(size=(5, 3))))


def test_rbf_cka_identity_and_invariance(rng) -> None:
    x = rng.normal(size=(60, 10))
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert rbf_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-10)
    assert 0.0 < rbf_cka(x, rng.normal(size=(60, 4))) < 0.9


def test_cps_identical_tokens_is_one(rng) -> None:
    token = rng.normal(size=(16,))
    tokens = np.broadcast_to(token, (3, 8, 16)).copy()
    assert cps(tokens) == pytest.approx(1.0, abs=1e-10)
    assert cps(torch.from_numpy(tokens[0])) == pytest.approx(1.0, abs=1e-10)


def test_cps_matches_pairwise_definition_and_subsamples(rng) -> None:
    tokens = rng.normal(size=(5, 7, 12)) + rng.normal(size=(1, 1, 12))
    t = torch.from_numpy(tokens)
    z = torch.nn.functional.normalize(torch.nn.functional.layer_norm(t, (12,)), dim=-1)
    sims = z @ z.transpose(1, 2)  # (B, N, N)
    off = ~torch.eye(7, dtype=torch.bool)
    expected = float(torch.stack([s[off].mean() for s in sims]).mean())
    assert cps(tokens) == pytest.approx(expected, rel=1e-10)
    sub = cps(tokens, max_clips=2, seed=3)
    assert sub == cps(tokens, max_clips=2, seed=3)
    per_clip = [cps(tokens[i]) for i in range(5)]
    assert any(sub == pytest.approx((a + b) / 2) for a in per_clip for b in per_clip)
