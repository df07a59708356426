"""Linear probes: the sklearn pipeline, the torch solver of the same objective, CV."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bwssl.analysis.probes import (
    cv_probe_accuracy,
    fit_logistic_regression_torch,
    linear_probe_accuracy,
)


def _problem(seed: int, n: int, d: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    centers = rng.normal(size=(classes, d))
    x = centers[y] + 1.5 * rng.normal(size=(n, d))
    return x * rng.uniform(0.1, 10.0, size=d) + 5.0, y  # unscaled features: the scaler matters


def _sklearn(train_x, train_y, test_x, test_y) -> float:
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(probe.fit(train_x, train_y).score(test_x, test_y))


def test_probe_is_the_sklearn_pipeline() -> None:
    x, y = _problem(0, 600, 24, 6)
    got = linear_probe_accuracy(x[:400], y[:400], x[400:], y[400:], seed=0)
    assert got == _sklearn(x[:400], y[:400], x[400:], y[400:])
    labels = np.array(list("abcdef"))[y]  # any label kind
    assert linear_probe_accuracy(x[:400], labels[:400], x[400:], labels[400:]) == got


@pytest.mark.parametrize(("classes", "d"), [(2, 16), (8, 32)])
def test_torch_solver_matches_sklearn(classes, d) -> None:
    x, y = _problem(1, 900, d, classes)
    ref = _sklearn(x[:600], y[:600], x[600:], y[600:])
    got = linear_probe_accuracy(x[:600], y[:600], x[600:], y[600:], solver="torch")
    assert abs(got - ref) <= 0.005
    # same objective, same optimum: the coefficients agree too
    z = StandardScaler().fit_transform(x[:600])
    coef = LogisticRegression(max_iter=1000).fit(z, y[:600]).coef_
    model = fit_logistic_regression_torch(x[:600], y[:600])
    np.testing.assert_allclose(model.weight.numpy().T, coef, atol=2e-2)


def test_cv_probe_matches_sklearn_cross_val_score() -> None:
    x, y = _problem(2, 300, 12, 4)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=3)
    expected = float(np.mean(cross_val_score(probe, x, y, cv=folds)))
    assert cv_probe_accuracy(x, y, folds=5, seed=3) == pytest.approx(expected)


def test_cv_probe_reduces_folds_for_small_classes() -> None:
    x, y = _problem(3, 60, 6, 3)
    y[:3] = 3  # class 3 has 3 members: 3 folds instead of 5
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    expected = float(np.mean(cross_val_score(probe, x, y, cv=folds)))
    assert cv_probe_accuracy(x, y, folds=5, seed=0) == pytest.approx(expected)
    y[0] = 9  # a singleton class cannot be cross-validated
    with pytest.raises(ValueError, match="only 1 member"):
        cv_probe_accuracy(x, y)
