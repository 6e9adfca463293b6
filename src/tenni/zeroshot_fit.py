"""``fit`` with label names: a zero-shot model from unlabeled texts, and the label options of a labeled fit.

``tenni fit unlabeled.csv --labels "World,Sports,Business,Sci/Tech" -o model/`` needs no labeled example: the
texts are read unlabeled (they set the zero-shot model's centre and self-training, see
:mod:`tenni.strategies.zeroshot`) and the model is saved unevaluated, unless a labeled ``--test`` file is given.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def load_descriptions(label_descriptions) -> tuple[dict | None, str]:
    """(label -> descriptions, where they came from) from a JSON file path or a dict."""
    from .strategies.zeroshot import check_descriptions, read_label_descriptions

    if label_descriptions is None:
        return None, ""
    if isinstance(label_descriptions, (str, Path)):
        return read_label_descriptions(label_descriptions), str(label_descriptions)
    return check_descriptions(label_descriptions), "label descriptions"


def label_config(strategy: str | None, config, label_names: bool, descriptions: dict | None):
    """The strategy config with the label options: auto's prior switch and descriptions, zeroshot's descriptions."""
    name = strategy or "auto"
    if descriptions is not None and name not in ("auto", "zeroshot"):
        raise ConfigError(f"--label-descriptions is read by the zeroshot strategy and auto's label-name prior, "
                          f"not by {name}", hint="drop --label-descriptions, or use --strategy auto or zeroshot")
    if name not in ("auto", "zeroshot") or (label_names and descriptions is None):
        return config
    if config is not None and not isinstance(config, dict):
        raise ConfigError("label options need the strategy config as a dict", hint="pass config={...} or None")
    config = dict(config or {})
    if descriptions is not None:
        config["label_descriptions"] = descriptions
    if name == "auto" and not label_names:
        config["label_names"] = False
    return config


def check_described_labels(descriptions: dict | None, where: str, classes) -> None:
    from .strategies.zeroshot import check_descriptions

    if descriptions:
        check_descriptions(descriptions, classes, where=where)


def fit_without_labels(data, labels, *, test=None, strategy=None, backbone="auto", config=None, seed=0,
                       descriptions=None, where="", **read):
    """A zero-shot model from label names and unlabeled ``data``; evaluated only on a labeled ``test``."""
    import time

    from .choose import choose_backbone, make_estimator
    from .data import as_dataset
    from .evaluation.metrics import classification_metrics
    from .evaluation.protocol import FitResult
    from .evaluation.results import Protocol
    from .model import Model
    from .strategies.zeroshot import parse_labels

    if strategy not in (None, "auto", "zeroshot"):
        raise ConfigError(f"--labels without labeled data fits the zeroshot strategy only, not {strategy}",
                          hint="drop --strategy, or give labeled data (without --labels)")
    names = parse_labels(labels)
    check_described_labels(descriptions, where, names)
    dataset = as_dataset(data, labeled=False, **read)
    if dataset.labels is not None:
        raise ConfigError(f"{dataset.path or 'the data'}: it has a label column, and --labels is for unlabeled data",
                          hint="drop --labels to train on its labels (label names are used as a prior), or "
                               "--strategy zeroshot to use the names only")
    dataset.require_modality("text", "zero-shot from label names")
    backbone = choose_backbone(backbone, dataset.inputs, "zeroshot", dataset.modality)
    config = dict(config or {}, labels=tuple(names))
    if descriptions is not None:
        config["label_descriptions"] = descriptions
    estimator = make_estimator("zeroshot", backbone, config, seed)
    start = time.perf_counter()
    estimator.fit(dataset.inputs)
    summary = {"source": str(dataset.path or "in-memory data"), "train_size": len(dataset), "labeled": 0,
               "test_size": 0, "test_source": "none: no labeled data (zero-shot from label names)"}
    metrics: dict = {"evaluation": Protocol("none").describe(), "protocol": Protocol("none").to_dict(), "results": []}
    if test is not None:
        test_set = as_dataset(test, **read)
        test_set.require_modality("text", "the training data")
        test_set.require_labels(min_classes=1)
        predictions = estimator.predict(test_set.inputs)
        seconds = time.perf_counter() - start
        result = classification_metrics(test_set.labels, predictions, [str(c) for c in estimator.classes_])
        row = FitResult("zeroshot", result["accuracy"], result["macro_f1"], seconds, backbone)
        metrics = {"evaluation": Protocol("test").describe(), "protocol": Protocol("test").to_dict(), "test": result,
                   "results": [row.row()]}
        summary.update(test_size=len(test_set), test_source=str(test_set.path or "test data"))
    return Model(estimator, modality="text", metrics=metrics, data_summary=summary)
