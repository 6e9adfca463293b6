"""Measuring an anomaly detector: which class is normal, AUROC, and accuracy at the model's threshold."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from .metrics import classification_metrics

NORMAL_NAMES = ("normal", "good", "ok", "pass", "negative", "no", "clean", "healthy")
DEFECT, NORMAL = "defect", "normal"


def auroc(is_defect, scores) -> float | None:
    """Area under the ROC curve of ``scores`` for ``is_defect``; None when only one kind is present."""
    from sklearn.metrics import roc_auc_score

    is_defect = np.asarray(is_defect, dtype=bool)
    if is_defect.all() or not is_defect.any():
        return None
    return float(roc_auc_score(is_defect, np.asarray(scores, dtype=np.float64)))


def normal_label_of(labels: list[str], requested: str | None, where=None) -> str:
    present = sorted(set(labels))
    if requested is not None:
        if requested not in present:
            raise DataError(f"no class '{requested}' in the data (classes: {', '.join(present)})", path=where)
        return requested
    for name in NORMAL_NAMES:
        for label in present:
            if label.lower() == name:
                return label
    if len(present) == 1:
        return present[0]
    raise ConfigError(f"cannot tell which class is normal among {', '.join(present)}",
                      hint="name the normal class folder 'normal' or 'good', or pass --set normal_label=NAME")


def evaluation_normal(dataset, normal: str) -> str:
    """The normal class to score ``dataset`` against: the model's, when the data has it; when it has not, another
    normal-looking class of the data (e.g. ``good``, for a model trained on a flat folder, whose normal class is the
    placeholder ``normal``) if it holds two or more classes, else the model's, every example then a defect."""
    present = set(dataset.labels)
    if normal in present:
        return normal
    if len(present) >= 2:
        return normal_label_of(dataset.labels, None, dataset.path)
    from .._logging import warn

    warn(f"{dataset.path or 'the evaluation data'}: no example is labelled '{normal}' (the model's normal class), so "
         "every example counts as a defect and AUROC cannot be computed")
    return normal


def anomaly_metrics(labels: list[str], scores: np.ndarray, threshold: float, normal: str) -> dict:
    is_defect = np.asarray([y != normal for y in labels])
    truth = [DEFECT if d else NORMAL for d in is_defect]
    predicted = [DEFECT if s > threshold else NORMAL for s in scores]
    metrics = classification_metrics(truth, predicted, [DEFECT, NORMAL])
    metrics.update(auroc=auroc(is_defect, scores), normal_label=normal, threshold=threshold,
                   defects=int(is_defect.sum()), normals=int((~is_defect).sum()))
    return metrics
