"""``tenni check``: likely mislabeled examples, exact and near duplicates, and train/test leakage.

Uses the same cached features as ``assess``. Mislabel candidates are examples whose out-of-fold prediction
(a linear probe that never saw them) confidently disagrees with their label — the idea behind confident learning
(Northcutt et al., 2021), kept simple: flagged when the probe gives the given label little probability and
another label most of it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data import as_dataset


@dataclass
class LabelCheck:
    suspected_mislabels: list[dict] = field(default_factory=list)
    duplicate_groups: list[dict] = field(default_factory=list)
    near_duplicates: list[dict] = field(default_factory=list)
    leakage: list[dict] = field(default_factory=list)
    backbone: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        conflicts = sum(1 for g in self.duplicate_groups if len(set(g["labels"])) > 1)
        return (f"{len(self.suspected_mislabels)} likely mislabeled, {len(self.duplicate_groups)} groups of exact "
                f"duplicates ({conflicts} with conflicting labels), {len(self.near_duplicates)} near-duplicate pairs"
                + (f", {len(self.leakage)} test items also in training" if self.leakage else ""))


_SENTENCE_MARKS = re.compile(r"[.,!?;:\"'\u3001\u3002\uff01\uff1f\u2026]+")


def _normal_form(text: str) -> str:
    """Case, width, spacing and sentence punctuation ignored ("WASTE of money." = "waste of money"); signs that
    carry meaning (emoji, brackets of emoticons, + - # $ %) are kept, so "not bad :)" and "not bad :(" differ."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\s+", " ", _SENTENCE_MARKS.sub(" ", folded)).strip() or folded.strip()


def _exact_form(modality: str):
    """What makes two items the same: a text's normal form (case, width, spacing), a file's bytes (copies under
    other names or classes are duplicates; their paths always differ)."""
    if modality == "text":
        return _normal_form
    from ..data.media import file_key

    return file_key


BLOCK = 1024
"""Rows compared at a time: memory grows with BLOCK x N, not N x N (20k items: 80 MB, not 1.6 GB)."""


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def near_pairs(feats: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i < j) whose cosine similarity is at least ``threshold``, found block by block."""
    x = _unit(feats)
    pairs = []
    for start in range(0, len(x), BLOCK):
        sims = x[start:start + BLOCK] @ x.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows, cols):
            i = start + int(r)
            if int(c) > i:
                pairs.append((i, int(c), float(sims[r, c])))
    return sorted(pairs)


def nearest(query: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: the index of its most similar row of ``feats`` (cosine) and that similarity."""
    q, x = _unit(query), _unit(feats)
    best = np.zeros(len(q), dtype=np.int64)
    score = np.full(len(q), -np.inf, dtype=np.float32)
    for start in range(0, len(q), BLOCK):
        sims = q[start:start + BLOCK] @ x.T
        best[start:start + BLOCK] = sims.argmax(1)
        score[start:start + BLOCK] = sims.max(1)
    return best, score


def out_of_fold_proba(features: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = int(min(5, np.bincount(y)[np.bincount(y) > 0].min()))
    if folds < 2:
        return None
    model = LogisticRegression(C=10.0, max_iter=2000, class_weight="balanced", solver="newton-cg")
    return cross_val_predict(model, features, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                             method="predict_proba")


def check_labels(data, *, test=None, backbone: str = "auto", seed: int = 0, max_given: float = 0.2,
                 min_other: float = 0.6, near: float = 0.97, **read_options) -> LabelCheck:
    from ..backbones import get_backbone
    from ..choose import choose_backbone

    dataset = as_dataset(data, **read_options)
    dataset.require_labels()
    name = choose_backbone(backbone, dataset.inputs, modality=dataset.modality)
    bb = get_backbone(name)
    feats = bb.encode(dataset.inputs)
    classes = dataset.classes
    y = np.searchsorted(classes, dataset.labels)
    result = LabelCheck(backbone=name)

    proba = out_of_fold_proba(feats, y, seed)
    if proba is not None:
        given = proba[np.arange(len(y)), y]
        best = proba.argmax(1)
        flagged = np.flatnonzero((best != y) & (given <= max_given) & (proba.max(1) >= min_other))
        for i in flagged[np.argsort(given[flagged])]:
            result.suspected_mislabels.append({
                "source": dataset.sources[i], "text": dataset.inputs[i], "label": dataset.labels[i],
                "suggested": classes[best[i]], "p_label": round(float(given[i]), 4),
                "p_suggested": round(float(proba[i, best[i]]), 4)})

    form = _exact_form(dataset.modality)
    groups: dict = {}
    for i, text in enumerate(dataset.inputs):
        groups.setdefault(form(text), []).append(i)
    for members in groups.values():
        if len(members) > 1:
            result.duplicate_groups.append({"sources": [dataset.sources[i] for i in members],
                                            "labels": [dataset.labels[i] for i in members],
                                            "text": dataset.inputs[members[0]]})
    exact_of = {i: members[0] for members in groups.values() for i in members}
    for i, j, similarity in near_pairs(feats, near):
        if exact_of[i] != exact_of[j]:
            result.near_duplicates.append({"a": dataset.sources[i], "b": dataset.sources[j],
                                           "similarity": round(similarity, 4),
                                           "labels": [dataset.labels[i], dataset.labels[j]]})
    if test is not None:
        test_set = as_dataset(test, labeled=False, **read_options)
        test_set.require_modality(dataset.modality, "the training data")
        train_forms = {form(t): i for i, t in enumerate(dataset.inputs)}
        test_feats = bb.encode(test_set.inputs)
        best, score = nearest(test_feats, feats)
        unit_test, unit_train = _unit(test_feats), _unit(feats)
        for k, text in enumerate(test_set.inputs):
            j = train_forms.get(form(text))
            kind, similarity = "exact", None
            if j is None:
                j, similarity, kind = int(best[k]), float(score[k]), "near"
                if similarity < near:
                    continue
            if similarity is None:
                similarity = float(unit_test[k] @ unit_train[j])
            result.leakage.append({"test": test_set.sources[k], "train": dataset.sources[j], "kind": kind,
                                   "similarity": round(similarity, 4)})
    return result
