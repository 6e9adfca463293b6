"""Transferability scores on frozen features: how well labels can be read off a backbone's embedding space.

- LogME (You et al., ICML 2021): the log marginal evidence of a Bayesian linear model from features to each
  one-hot label column, per example, averaged over classes. Higher is better; no training, no hyper-parameters.
- H-score (Bao et al., 2019), with a Ledoit-Wolf shrunk feature covariance (Ibrahim et al., 2022) so that it stays
  meaningful when there are fewer examples than dimensions — the few-shot case.
- kNN accuracy and linear-probe accuracy under repeated stratified cross-validation: the direct measurements.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..evaluation.metrics import interval  # noqa: F401  (where assess reads it)


def logme(features: np.ndarray, y: np.ndarray) -> float:
    """LogME, following the reference implementation (thuml/LogME), for integer labels ``y``."""
    f = np.asarray(features, dtype=np.float64)
    fh = f
    f = f.T  # (D, N)
    D, N = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    evidences = []
    for cls in np.unique(y):
        target = (y == cls).astype(np.float64)
        evidences.append(_evidence(target, f, fh, v, s, vh, N, D))
    return float(np.mean(evidences))


def _evidence(y_, f, fh, v, s, vh, N, D) -> float:
    epsilon = 1e-5
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    tmp = vh @ (f @ y_)
    for _ in range(11):  # converges in 2-3 steps, at most 10
        gamma = (s / (s + lam)).sum()
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de = (m * m).sum()
        alpha = gamma / (alpha_de + epsilon)
        beta_de = ((y_ - fh @ m) ** 2).sum()
        beta = (N - gamma) / (beta_de + epsilon)
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    evidence = (D / 2.0 * math.log(alpha) + N / 2.0 * math.log(beta) - 0.5 * np.sum(np.log(alpha + beta * s))
                - beta / 2.0 * (beta_de + epsilon) - alpha / 2.0 * (alpha_de + epsilon)
                - N / 2.0 * math.log(2 * math.pi))
    return evidence / N


def h_score(features: np.ndarray, y: np.ndarray) -> float:
    """tr(cov(f)^-1 cov(E[f|y])) with a shrunk cov(f); higher means classes separate along high-variance axes."""
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0)
    cov_f = LedoitWolf(assume_centered=True).fit(f).covariance_
    class_means = np.zeros_like(f)
    for cls in np.unique(y):
        mask = y == cls
        class_means[mask] = f[mask].mean(axis=0)
    cov_g = class_means.T @ class_means / len(f)
    return float(np.trace(np.linalg.pinv(cov_f, hermitian=True) @ cov_g))  # pinv: constant features (tiny data)


def cv_splits(y: np.ndarray, seed: int = 0, repeats: int = 3, max_folds: int = 5):
    """Repeated stratified K-fold with K = min(5, smallest class); None if a class has a single example."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    folds = min(max_folds, smallest)
    if folds < 2:
        return None
    return list(RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
                .split(np.zeros(len(y)), y))


def probe_cv(features, y, splits, C: float = 1.0) -> list[float]:
    """Fold accuracies of an L2 logistic regression with the ``probe`` strategy's default C (1.0): the score then
    estimates the accuracy of the probe a user would fit, which is what the ranking must foresee."""
    from sklearn.linear_model import LogisticRegression

    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for train, test in splits:
            model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", solver="newton-cg")
            model.fit(features[train], y[train])
            scores.append(float(np.mean(model.predict(features[test]) == y[test])))
    return scores


def knn_cv(features, y, splits, k: int = 5) -> list[float]:
    """Fold accuracies of a cosine k-nearest-neighbour vote (k limited by the fold's training size)."""
    from sklearn.neighbors import KNeighborsClassifier

    scores = []
    for train, test in splits:
        model = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine", weights="distance")
        model.fit(features[train], y[train])
        scores.append(float(np.mean(model.predict(features[test]) == y[test])))
    return scores


def far_share(train_feats: np.ndarray, query_feats: np.ndarray, quantile: float = 0.95) -> float:
    """Share of query points farther from every training point than ``quantile`` of the training points are
    from their own nearest neighbour: ~5% when both come from one distribution, far more under a shift."""
    def normalise(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)

    a, b = normalise(np.asarray(train_feats, np.float64)), normalise(np.asarray(query_feats, np.float64))
    within = 1.0 - a @ a.T
    np.fill_diagonal(within, np.inf)
    threshold = np.quantile(within.min(axis=1), quantile)
    across = (1.0 - b @ a.T).min(axis=1)
    return float(np.mean(across > threshold))
