"""How a fit is measured: a separate test set, a stratified hold-out, or repeated stratified cross-validation, always
with the scratch baseline on the same split (paired), so the gain from transfer is measured, not claimed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._logging import progress, warn
from ..config import check_seed
from ..data import Dataset, as_dataset
from ..errors import ConfigError
from ..language import detect_languages
from .metrics import classification_metrics, interval, mean_ci_diff
from .results import Protocol


@dataclass
class FitResult:
    """One row of the table ``fit`` ends with."""

    strategy: str
    accuracy: float
    macro_f1: float
    seconds: float
    backbone: str | None = None
    metrics: dict = field(default_factory=dict, repr=False)

    def row(self) -> dict:
        return {"strategy": self.strategy, "backbone": self.backbone, "accuracy": self.accuracy,
                "macro_f1": self.macro_f1, "seconds": self.seconds}


def fit_and_score(estimator, train: Dataset, test: Dataset) -> FitResult:
    """Fit ``estimator`` on ``train``, predict ``test``; the seconds of both."""
    start = time.perf_counter()
    estimator.fit(train.inputs, train.labels)
    predictions = estimator.predict(test.inputs)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(test.labels, predictions, [str(c) for c in estimator.classes_])
    metrics["predictions"] = [str(p) for p in predictions]
    name = estimator.name if not hasattr(estimator, "chosen_") else f"{estimator.name} ({estimator.chosen_.name})"
    return FitResult(name, metrics["accuracy"], metrics["macro_f1"], seconds,
                     estimator.backbone if estimator.uses_backbone else None, metrics)


def holdout_metrics(estimator, train: Dataset, test: Dataset, protocol: Protocol, *, baseline: bool,
                    seed: int) -> dict:
    """The strategy, and the scratch baseline beside it, fitted on ``train`` and measured on ``test``."""
    from ..choose import make_estimator

    results = [fit_and_score(estimator, train, test)]
    if baseline and estimator.name != "scratch":
        results.append(fit_and_score(make_estimator("scratch", seed=seed, modality=train.modality), train, test))
    main = results[0]
    metrics = {"evaluation": protocol.describe(), "protocol": protocol.to_dict(),
               "test": {k: v for k, v in main.metrics.items() if k != "predictions"},
               "results": [r.row() for r in results]}
    if len(results) > 1:
        metrics["transfer_gain"] = {"accuracy": main.accuracy - results[1].accuracy,
                                    "macro_f1": main.macro_f1 - results[1].macro_f1}
    return metrics


def cross_validate(strategy: str, backbone: str, config, seed: int, data: Dataset, baseline: bool,
                   repeats: int = 2) -> dict:
    """Repeated stratified K-fold for the strategy and the scratch baseline on the same folds (paired)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    from ..choose import make_estimator

    labels = np.asarray(data.labels)
    smallest = min(data.class_counts().values())
    data.require_per_class(2, "cross-validated evaluation")
    folds = min(5, smallest)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    names = [strategy] + (["scratch"] if baseline and strategy != "scratch" else [])
    scores = {n: {"accuracy": [], "macro_f1": [], "seconds": []} for n in names}
    oof = np.empty(len(labels), dtype=object)
    with progress("cross-validation", folds * repeats * len(names)) as bar:
        for k, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            train, test = data.subset(train_idx), data.subset(test_idx)
            for name in names:
                est = make_estimator(name, backbone, config if name == strategy else None, seed, data.modality)
                result = fit_and_score(est, train, test)
                for key in ("accuracy", "macro_f1", "seconds"):
                    scores[name][key].append(getattr(result, key))
                if name == strategy and k < folds:  # the first repeat covers every example once
                    oof[test_idx] = result.metrics["predictions"]
                bar.advance(1)
    rows = []
    for name in names:
        mean, low, high = interval(scores[name]["accuracy"])
        rows.append({"strategy": name, "backbone": None if name == "scratch" else backbone, "accuracy": mean,
                     "accuracy_low": low, "accuracy_high": high,
                     "macro_f1": float(np.mean(scores[name]["macro_f1"])),
                     "seconds": float(np.mean(scores[name]["seconds"]))})
    protocol = Protocol("cv", folds=folds, repeats=repeats)
    out = {"evaluation": protocol.describe(), "protocol": protocol.to_dict(), "results": rows,
           "test": classification_metrics(labels, list(oof), data.classes)}
    if len(names) > 1:
        gain, low, high = mean_ci_diff(scores[strategy]["accuracy"], scores["scratch"]["accuracy"])
        f1_gain = float(np.mean(scores[strategy]["macro_f1"]) - np.mean(scores["scratch"]["macro_f1"]))
        out["transfer_gain"] = {"accuracy": gain, "accuracy_low": low, "accuracy_high": high, "macro_f1": f1_gain}
    return out


def split_for_fit(data, test=None, *, test_size: float = 0.2, seed: int = 0, **read_options):
    """(train, test) Datasets: the given test file, or a stratified hold-out of ``data``."""
    check_seed(seed)
    if test is None and not 0 < test_size < 1:
        raise ConfigError(f"the hold-out share must be between 0 and 1, got {test_size}",
                          hint="--test-size 0.2 holds out a fifth; or pass a separate --test file")
    dataset = as_dataset(data, **read_options)
    dataset.require_labels()
    if test is not None:
        test_set = as_dataset(test, **read_options)
        test_set.require_modality(dataset.modality, "the training data")
        test_set.require_labels(min_classes=1)
        train = dataset
        shared = dataset.overlap(test_set)
        if shared:  # `tenni check --test` lists them; a score on seen items is no measure of anything new
            same = dataset.path is not None and test_set.path is not None and \
                Path(dataset.path).resolve() == Path(test_set.path).resolve()
            warn(f"{test_set.path or 'test data'}: " + ("the test data is the training data itself" if same else
                 f"{shared} of {len(test_set)} test item(s) also occur in the training data") +
                 ": the score measures memory, not generalisation (leakage); `tenni check DATA --test TEST` lists them")
        unseen = sorted(set(test_set.labels) - set(dataset.labels))
        if unseen:
            shown = ", ".join(f"'{u}'" for u in unseen[:5])
            warn(f"{test_set.path or 'test data'}: label(s) {shown} never appear in the training data; "
                 "the model cannot predict them, so they count as errors")
    else:
        train, test_set = dataset.train_test_split(test_size=test_size, seed=seed)
    return train, test_set


def data_summary(train: Dataset, **extra) -> dict:
    """What the model card and report say about the training data."""
    summary = dict(extra, class_counts=train.class_counts())
    if train.modality == "text":
        summary["languages"] = detect_languages(train.inputs)
    else:
        summary["modality"] = train.modality
    return summary
