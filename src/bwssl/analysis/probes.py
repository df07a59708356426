"""Linear probes: standardized features, multinomial logistic regression, top-1 accuracy.

The paper's probe is scikit-learn's ``StandardScaler`` followed by
``LogisticRegression(max_iter=1000)`` with every other default (lbfgs, L2,
C=1.0; multinomial for more than two classes, a single logit for two). On
the CPU that pipeline is used as is.

On a GPU the same objective is solved with torch's full-batch L-BFGS
(:func:`fit_logistic_regression_torch`); the reason for writing it is speed
(a 101-class probe on ~9.5k x 384 features, fitted per block, per repeat, per
run). It minimises exactly sklearn's objective,

    mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C n)

(sklearn's ``sum CE + ||W||^2 / (2C)`` divided by n; the intercept is not
penalised), on features standardized with the training mean and population
standard deviation, from a zero start, with sklearn's stopping rule (max
absolute gradient <= tol) and iteration cap; two classes use one logit and a
binary cross-entropy, as sklearn does. Accuracy agrees with sklearn's to well
within 0.5 points (tests/analysis/test_probes.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bwssl.analysis.arrays import Array, as_float_tensor, label_codes

Solver = Literal["auto", "sklearn", "torch"]


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@dataclass
class TorchLogisticModel:
    """A fitted logistic-regression probe: standardization, then ``x W + b``."""

    mean: torch.Tensor
    """(D,) training feature mean."""
    scale: torch.Tensor
    """(D,) training feature standard deviation (1 where a feature is constant)."""
    weight: torch.Tensor
    """(D, C) coefficients, or (D, 1) for two classes."""
    bias: torch.Tensor
    """(C,) or (1,) intercepts."""
    iterations: int
    """L-BFGS iterations used."""

    def predict(self, X: Array) -> torch.Tensor:
        """Class indices (0..C-1, in the order of the sorted training labels) for (M, D) ``X``."""
        x = as_float_tensor(X, self.weight.dtype, self.weight.device)
        logits = ((x - self.mean) / self.scale) @ self.weight + self.bias
        if self.weight.shape[1] == 1:
            return (logits[:, 0] > 0).long()
        return logits.argmax(dim=1)


def fit_logistic_regression_torch(
    X: Array,
    y: np.ndarray,
    C: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-4,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> TorchLogisticModel:
    """Fit sklearn's L2 logistic regression (lbfgs, ``C``, ``max_iter``, ``tol``) with torch.

    ``X`` is (n, D); ``y`` holds int class codes 0..C-1 (every code present).
    Features are standardized first, as sklearn's ``StandardScaler`` does.
    """
    x = as_float_tensor(X, dtype, device)
    n, d = x.shape
    mean = x.mean(dim=0)
    scale = x.std(dim=0, unbiased=False)
    scale = torch.where(scale < 10 * torch.finfo(dtype).eps, torch.ones_like(scale), scale)
    x = (x - mean) / scale  # (n, D)
    target = torch.as_tensor(y, device=x.device, dtype=torch.long)
    num_classes = int(target.max()) + 1
    out = 1 if num_classes == 2 else num_classes
    weight = torch.zeros(d, out, dtype=dtype, device=x.device, requires_grad=True)
    bias = torch.zeros(out, dtype=dtype, device=x.device, requires_grad=True)
    l2 = 1.0 / (C * n)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ weight + bias  # (n, out)
        if out == 1:
            data = F.binary_cross_entropy_with_logits(logits[:, 0], target.to(dtype))
        else:
            data = F.cross_entropy(logits, target)
        loss = data + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
    return TorchLogisticModel(mean, scale, weight.detach(), bias.detach(), iterations)


def linear_probe_accuracy(
    train_X: Array,
    train_y: Array | list[object],
    test_X: Array,
    test_y: Array | list[object],
    seed: int = 0,
    device: torch.device | str = "cpu",
    solver: Solver = "auto",
    max_iter: int = 1000,
) -> float:
    """Top-1 test accuracy of the paper's probe fitted on (``train_X``, ``train_y``).

    ``solver="auto"`` uses the sklearn pipeline on a CPU ``device`` and the
    torch L-BFGS solver of the same objective elsewhere (a CUDA device);
    ``"sklearn"`` or ``"torch"`` force one. ``seed`` is passed to sklearn's
    ``random_state``; lbfgs does not use randomness, so repeats with
    different seeds return the same accuracy (the paper's three fits, kept
    for the record). Test labels never seen in training count as errors.
    """
    codes = label_codes(np.concatenate([_numpy(train_y), _numpy(test_y)]))
    n_train = len(train_X)
    ytr, yte = codes[:n_train], codes[n_train:]
    if len(np.unique(ytr)) < 2:
        raise ValueError("the probe needs at least 2 classes in the training labels")
    use_torch = solver == "torch" or (solver == "auto" and torch.device(device).type != "cpu")
    if use_torch:
        present, ytr_dense = np.unique(ytr, return_inverse=True)  # codes 0..C'-1 for training
        model = fit_logistic_regression_torch(
            train_X, ytr_dense.reshape(-1), max_iter=max_iter, device=device
        )
        pred = present[model.predict(test_X).cpu().numpy()]
        return float(np.mean(pred == yte))
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed)
    )
    probe.fit(_numpy(train_X), ytr)
    return float(probe.score(_numpy(test_X), yte))


def cv_probe_accuracy(
    X: Array,
    y: Array | list[object],
    folds: int = 5,
    seed: int = 0,
    device: torch.device | str = "cpu",
    solver: Solver = "auto",
    max_iter: int = 1000,
) -> float:
    """Stratified k-fold cross-validated accuracy of the probe: the mean of
    :func:`cv_probe_fold_accuracies`."""
    return float(np.mean(cv_probe_fold_accuracies(X, y, folds, seed, device, solver, max_iter)))


def fold_stderr(scores: np.ndarray) -> float:
    """Standard error of the mean of per-fold scores: ``std(ddof=1) / sqrt(folds)``."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        raise ValueError("a standard error needs at least 2 folds")
    return float(scores.std(ddof=1) / np.sqrt(len(scores)))


def cv_probe_fold_accuracies(
    X: Array,
    y: Array | list[object],
    folds: int = 5,
    seed: int = 0,
    device: torch.device | str = "cpu",
    solver: Solver = "auto",
    max_iter: int = 1000,
) -> np.ndarray:
    """Test accuracy of the probe on each fold of a stratified k-fold split: (n_splits,).

    Folds are shuffled with ``seed``. StratifiedKFold needs every class to
    have at least as many members as folds, so the number of folds is reduced
    to the smallest class size when that is below ``folds``; a class with a
    single member (or a single class) cannot be cross-validated and raises
    ValueError. Subsample the data stratified by label to keep classes whole.
    """
    codes = label_codes(y)
    x = _numpy(X)
    if len(x) != len(codes):
        raise ValueError(f"{len(x)} feature rows but {len(codes)} labels")
    counts = np.bincount(codes)
    if len(counts) < 2:
        raise ValueError("cross-validated probe needs at least 2 classes")
    n_splits = min(folds, int(counts.min()))
    if n_splits < 2:
        raise ValueError(
            f"a class has only {int(counts.min())} member(s); stratified "
            f"cross-validation needs at least 2 per class"
        )
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    accs = [
        linear_probe_accuracy(
            x[tr],
            codes[tr],
            x[te],
            codes[te],
            seed=seed,
            device=device,
            solver=solver,
            max_iter=max_iter,
        )
        for tr, te in splitter.split(x, codes)
    ]
    return np.array(accs)
