"""Logistic-regression heads shared by the probe, SetFit-style and scratch strategies.

Stored as plain arrays (coef, intercept) so the artifact needs no pickle; probabilities are recomputed in numpy
exactly as scikit-learn's logistic regression defines them (sigmoid for two classes, softmax otherwise).

The solver is Newton-CG: the same L2 objective and optimum as scikit-learn's default lbfgs in fewer iterations,
and much faster on sparse TF-IDF matrices, which is what makes a warm ``tenni fit`` take seconds
(docs/design/feature-cache.md).
"""

from __future__ import annotations

import warnings

import numpy as np

SOLVER = "newton-cg"
CLASS_WEIGHTS = ("balanced", None)
"""The values every ``class_weight`` option takes: inverse-frequency weights, or none."""


def fit_logistic(X, y: np.ndarray, *, seed: int, C: float | None = None, cv_grid=(0.1, 1.0, 10.0, 100.0),
                 class_weight="balanced", max_iter: int = 3000) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit L2 logistic regression; pick C by stratified CV on log-loss when ``C`` is None and data allows."""
    with warnings.catch_warnings():
        # scikit-learn 1.8+ announces changes to LogisticRegressionCV's defaults; they do not affect L2 here
        warnings.simplefilter("ignore", FutureWarning)
        return _fit_logistic(X, y, seed=seed, C=C, cv_grid=cv_grid, class_weight=class_weight, max_iter=max_iter)


def _fit_logistic(X, y, *, seed, C, cv_grid, class_weight, max_iter):
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    counts = counts[counts > 0]
    if C is None and counts.min() >= 3 and len(cv_grid) > 1:
        folds = int(min(5, counts.min()))
        model = LogisticRegressionCV(Cs=list(cv_grid), cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                     scoring="neg_log_loss", class_weight=class_weight, max_iter=max_iter,
                                     solver=SOLVER)
        model.fit(X, y)
        chosen = float(np.atleast_1d(model.C_)[0])
    else:
        chosen = float(C if C is not None else 10.0)
        model = LogisticRegression(C=chosen, class_weight=class_weight, max_iter=max_iter, solver=SOLVER)
        model.fit(X, y)
    return np.asarray(model.coef_, np.float32), np.asarray(model.intercept_, np.float32), chosen


def fit_logistic_soft(X, targets: np.ndarray, *, C: float, class_weight="balanced", max_iter: int = 3000,
                      min_target: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on soft targets (a teacher's probabilities; rows summing to 1): each row is repeated
    once per class it gives weight to, weighted by that probability — the cross-entropy with soft targets, fitted
    by the same solver. ``class_weight="balanced"`` weighs classes by the inverse of their probability mass."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    targets = np.asarray(targets, dtype=np.float64)
    rows, cols = np.nonzero(targets >= min_target)
    weights = targets[rows, cols]
    if class_weight == "balanced":
        mass = np.bincount(cols, weights=weights, minlength=targets.shape[1])
        present = mass > 0
        scale = np.ones_like(mass)
        scale[present] = mass[present].sum() / (present.sum() * mass[present])
        weights = weights * scale[cols]
    X_rep = X[rows] if not sp.issparse(X) else sp.csr_matrix(X)[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegression(C=C, max_iter=max_iter, solver=SOLVER)
        model.fit(X_rep, cols, sample_weight=weights)
    coef, intercept = np.asarray(model.coef_, np.float32), np.asarray(model.intercept_, np.float32)
    if len(model.classes_) != targets.shape[1]:  # a class no row gives weight to: it keeps a large negative bias
        full_coef = np.zeros((targets.shape[1], X.shape[1]), np.float32)
        full_int = np.full(targets.shape[1], -30.0, np.float32)
        if len(model.classes_) == 2:
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        full_coef[model.classes_], full_int[model.classes_] = coef, intercept
        coef, intercept = full_coef, full_int
    return coef, intercept


def logistic_proba(X, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    z = X @ coef.T
    z = np.asarray(z, dtype=np.float64) + intercept
    if coef.shape[0] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
