"""Metrics for a classifier on a labeled set (accuracy, macro-F1, per-class precision/recall, confusion matrix), and
the intervals of scores over cross-validation folds."""

from __future__ import annotations

import math

import numpy as np


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray([str(v) for v in y_true])
    y_pred = np.asarray([str(v) for v in y_pred])
    present = sorted({str(c) for c in labels} | {str(v) for v in y_true})
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=present, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(present, precision, recall, f1, support)},
        "confusion_matrix": {"labels": present,
                             "matrix": confusion_matrix(y_true, y_pred, labels=present).tolist()},
    }


def interval(scores: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): a 95% normal interval of the fold mean (approximate: CV folds are not independent)."""
    arr = np.asarray(scores, dtype=np.float64)
    mean = float(arr.mean())
    half = 1.96 * float(arr.std(ddof=1)) / math.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def mean_ci_diff(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Paired difference of fold scores (same folds): mean and a 95% normal interval."""
    d = np.asarray(a) - np.asarray(b)
    half = 1.96 * float(d.std(ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)
