"""Before self-training: will an unlabeled pool help? Signals from frozen features, no training beyond a probe.

A probe fitted on the labels is the would-be teacher. Self-training helps when the teacher is confident on much
of the pool and a second, different reader of the same features (cosine kNN) agrees with it there — so
pseudo-labels are mostly right — and when the pool lies near the labeled data (far items are another
distribution: their pseudo-labels are guesses).
"""

from __future__ import annotations

import numpy as np

from .scores import far_share


def pool_signal(features: np.ndarray, y: np.ndarray, pool_features: np.ndarray) -> dict:
    """Teacher confidence, probe-kNN agreement and distance of the pool; a verdict in words."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    probe = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", solver="newton-cg").fit(features, y)
    proba = probe.predict_proba(pool_features)
    knn = KNeighborsClassifier(n_neighbors=min(5, len(y)), metric="cosine", weights="distance").fit(features, y)
    agree = proba.argmax(1) == np.searchsorted(probe.classes_, knn.predict(pool_features))
    chance = 1.0 / len(probe.classes_)
    confident = proba.max(1) >= min(0.9, chance + 0.5 * (1 - chance))
    far = far_share(features, pool_features)
    signal = {"pool_size": int(len(pool_features)), "confident_share": float(confident.mean()),
              "agreement": float(agree.mean()), "agreement_when_confident":
              float(agree[confident].mean()) if confident.any() else None, "far_share": far}
    likely = (signal["agreement_when_confident"] or 0) >= 0.85 and confident.mean() >= 0.2 and far <= 0.3
    signal["verdict"] = ("self-training likely to help: the teacher is confident on "
                         f"{confident.mean():.0%} of the pool and a kNN reader agrees there"
                         if likely else
                         "self-training unlikely to help much: " + (
                             f"{far:.0%} of the pool lies far from the labeled data" if far > 0.3 else
                             f"the teacher is confident on only {confident.mean():.0%} of the pool"
                             if confident.mean() < 0.2 else "the kNN reader often disagrees with the teacher"))
    return signal
