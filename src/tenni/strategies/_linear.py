"""Logistic-regression heads shared by the probe, SetFit-style and scratch strategies.

Stored as plain arrays (coef, intercept) so the artifact needs no pickle; probabilities are recomputed in numpy
exactly as scikit-learn's logistic regression defines them (sigmoid for two classes, softmax otherwise).

The solver is Newton-CG: same L2 objective and optimum as scikit-learn's default lbfgs, in 4-10 iterations
instead of 15-25, and several times faster on sparse TF-IDF matrices (measured: 0.06 s vs 7 s on 1,000 SMS texts
with 14k word n-grams on 2 loaded cores), which is what makes a warm `tenni fit` take seconds.
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


def logistic_proba(X, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    z = X @ coef.T
    z = np.asarray(z, dtype=np.float64) + intercept
    if coef.shape[0] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
