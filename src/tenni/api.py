"""The public Python API: ``fit``, ``load`` and ``TenniClassifier`` — the façade over choosing, fitting and measuring.

    import tenni
    model = tenni.fit("tickets.csv")          # auto strategy, scratch baseline beside it, measured
    model.save("model/")
    tenni.load("model/").predict(["my card was charged twice"])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ._logging import info, warn
from .backbones import DEFAULT_TEXT_BACKBONE
from .choose import (  # noqa: F401  (the choosing helpers, also reachable from the façade)
    AUTO,
    CHEAP_STRATEGIES,
    DEFAULT_STRATEGY,
    MEDIA_DEFAULT_STRATEGY,
    choose_backbone,
    choose_strategy,
    make_estimator,
)
from .data import Dataset, as_dataset, read_pool
from .errors import ConfigError
from .evaluation.protocol import (  # noqa: F401
    FitResult,
    cross_validate,
    data_summary,
    holdout_metrics,
    split_for_fit,
)
from .evaluation.results import Protocol
from .model import Model
from .strategies.base import SearchableOptions, label_array, text_input_tags
from .strategies.registry import get_entry


def _peek_modality(data) -> str | None:
    """The modality of data not yet read, where it shows without decoding anything (folders, Datasets)."""
    if isinstance(data, Dataset):
        return data.modality
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        from .data.media import folder_modality

        return folder_modality(Path(data)) or "text"
    return None


def _folder_test_split(data, test):
    """A folder with ``train/`` and ``test/`` levels supplies its own test set."""
    if test is None and isinstance(data, (str, Path)) and Path(data).is_dir():
        from .data.media import split_folder

        train_dir, test_dir = split_folder(Path(data))
        if test_dir is not None:
            return train_dir, test_dir
    return data, test


def fit(data, *, test=None, strategy: str | None = None, backbone: str = AUTO,
        config: dict | None = None, seed: int = 0, baseline: bool = True, test_size: float = 0.2,
        text_col: str | None = None, label_col: str | None = None, encoding: str = "auto",
        budget: float | str | None = None, evaluation: str = "auto", skip_bad_files: bool = False,
        task: str = "classify", unlabeled=None, rounds: int | None = None, student: str | None = None,
        selftrain: dict | None = None, pool_labeler=None, labels=None, label_descriptions=None,
        label_names: bool = True, checkpoint_dir: str | Path | None = None, resume: bool = False) -> Model:
    """Fit ``strategy`` on ``data`` and measure it, beside the no-transfer baseline, on a held-out set.

    ``data`` is a file (CSV, TSV, JSONL, Parquet), a folder of class sub-folders, a ``(texts, labels)`` pair, a
    DataFrame or a :class:`Dataset`. ``backbone="auto"`` picks one by the data's language (see
    :func:`choose_backbone`); ``strategy=None`` is ``auto``, a race of the strategies within ``budget``
    seconds.

    ``evaluation``: with a ``test`` set, the model is measured on it. Without one, ``"auto"`` uses repeated
    stratified cross-validation (paired with the baseline, with 95% intervals; the saved model is then trained
    on all the data) for the strategies that fit in seconds (probe, hybrid, scratch), and a stratified
    ``test_size`` hold-out for the ones that train the encoder, and for images when the baseline (a CNN that
    trains) is on (``"cv"`` or ``"holdout"`` force either).
    ``model.metrics["results"]`` holds the measurements.

    Images and audio (a folder of class folders, with optional ``train/`` and ``test/`` levels, or a table of
    file paths) work the same way; the modality comes from the data, and ``skip_bad_files`` leaves out (and
    counts) corrupt, empty or silent files instead of stopping. ``task="anomaly"`` fits a defect detector on
    normal images only (see :func:`fit_anomaly`).

    ``unlabeled``: a pool of unlabeled examples of the same kind (a file, a column, a folder) for self-training
    (``rounds`` teacher -> student rounds, see :mod:`tenni.selftrain`); the model is then measured on a hold-out
    beside the same strategy without the pool. ``student`` (``probe``, ``small`` or ``scratch``) distils the result
    into a faster model, measured beside it (``model.student``). ``pool_labeler``: who labels the pool each round
    (in this process, a chunk at a time, by default; ``tenni.distributed.ClusterLabeler()`` runs it as a
    resumable job on a Ray cluster; for a probe or hybrid, one embedding job whose features come back into the
    feature cache, the rounds then labelling here).

    Label names (text): ``labels=["World", "Sports", ...]`` with unlabeled ``data`` fits a zero-shot model (no
    labeled examples; evaluated only on a labeled ``test``). With labeled data, ``auto`` uses the labels as a
    zero-shot prior when they are words (``label_names=False`` turns it off); ``label_descriptions`` (a JSON file
    or a dict, label -> description or list of descriptions) replaces the names for zero-shot.

    ``checkpoint_dir``: the strategies that train a network (finetune, lora) leave a checkpoint there after every
    epoch; with ``resume=True`` a run interrupted earlier continues from them and ends with the same model (the
    folder is cleared first otherwise). ``tenni fit -o DIR`` keeps them in ``DIR.partial``.
    """
    if checkpoint_dir is not None:
        args = dict(locals(), checkpoint_dir=None, resume=False)  # first: only the parameters are local yet
        from ._checkpoints import checkpointing
        from .strategies._parallel import is_main_process

        with checkpointing(checkpoint_dir, resume, main=is_main_process()):
            return fit(**args)
    if resume:
        raise ConfigError("resume continues from checkpoints: it needs checkpoint_dir",
                          hint="pass checkpoint_dir (tenni fit -o DIR keeps them in DIR.partial)")
    if pool_labeler is not None and unlabeled is None:
        raise ConfigError("--pool-engine labels an unlabeled pool", hint="add --unlabeled POOL, or drop --pool-engine")
    from .zeroshot_fit import check_described_labels, label_config, load_descriptions

    descriptions, described_in = load_descriptions(label_descriptions)
    read = {"text_col": text_col, "label_col": label_col, "encoding": encoding, "skip_bad_files": skip_bad_files}
    if task == "classify" and unlabeled is None and (rounds is not None or student is not None or selftrain):
        raise ConfigError("--rounds and --student need an unlabeled pool", hint="add --unlabeled POOL")
    if task == "anomaly":
        ignored = [name for name, given in (("--strategy", strategy not in (None, "patchcore")),
                                            ("--budget", budget is not None),
                                            ("--evaluation", evaluation != "auto"),
                                            ("--unlabeled", unlabeled is not None), ("--rounds", rounds is not None),
                                            ("--student", student is not None)) if given]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)} do(es) not apply to --task anomaly (a PatchCore memory bank of "
                              "the normal images, thresholded on held-out normals)", hint=f"drop {', '.join(ignored)}")
        return fit_anomaly(data, test=test, backbone=backbone, config=config, seed=seed, **read)
    if task != "classify":
        raise ConfigError(f"unknown task '{task}'", hint="use classify or anomaly")
    if strategy == "patchcore":
        raise ConfigError("patchcore is the anomaly detector", hint="use --task anomaly")
    if labels is not None:
        from .zeroshot_fit import fit_without_labels

        if unlabeled is not None:
            raise ConfigError("--labels fits zero-shot on DATA, which is already unlabeled; --unlabeled is for "
                              "self-training a labeled fit", hint="put all the unlabeled texts in DATA")
        data, test = _folder_test_split(data, test)
        return fit_without_labels(data, labels, test=test, strategy=strategy, backbone=backbone, config=config,
                                  seed=seed, descriptions=descriptions, where=described_in, **read)
    config = label_config(strategy, config, label_names, descriptions)
    if unlabeled is not None:
        if budget is not None:
            if (strategy or DEFAULT_STRATEGY) != "auto":
                raise ConfigError("a time budget applies to --strategy auto only", hint="drop --budget")
            config = dict(config or {}, budget=parse_budget(budget))
        return fit_with_pool(data, unlabeled, test=test, strategy=strategy, backbone=backbone, config=config,
                             seed=seed, baseline=baseline, test_size=test_size, read=read, rounds=rounds,
                             student=student, selftrain=selftrain, labeler=pool_labeler)
    data, test = _folder_test_split(data, test)
    if budget is not None:
        if (strategy or DEFAULT_STRATEGY) != "auto":
            raise ConfigError("a time budget applies to --strategy auto only", hint="drop --budget")
        config = dict(config or {}, budget=parse_budget(budget))
    peeked = _peek_modality(data)
    if strategy is not None and (peeked is not None or len(set(get_entry(strategy).targets.values())) == 1):
        # fail fast on a bad strategy or option, before any data is read (when its modality is known, or the
        # strategy's options are the same on every modality)
        make_estimator(strategy, DEFAULT_TEXT_BACKBONE, config, seed, peeked or "text")
    if evaluation not in ("auto", "cv", "holdout"):
        raise ConfigError(f"unknown evaluation '{evaluation}'", hint="use auto, cv or holdout")
    # the strategy that will run decides the protocol (images and audio default to the probe), so the same model is
    # measured the same way whether or not it was named; an image baseline (a CNN that trains) wants a hold-out
    will_run = strategy or (MEDIA_DEFAULT_STRATEGY if peeked in ("image", "audio") else DEFAULT_STRATEGY)
    cheap = will_run in CHEAP_STRATEGIES and not (baseline and peeked == "image")
    if test is None and (evaluation == "cv" or (evaluation == "auto" and cheap)):
        dataset = as_dataset(data, **read)
        dataset.require_labels()
        check_described_labels(descriptions, described_in, dataset.classes)
        strategy = choose_strategy(strategy, dataset.inputs, dataset.modality)
        backbone = choose_backbone(backbone, dataset.inputs, strategy, dataset.modality)
        metrics = cross_validate(strategy, backbone, config, seed, dataset, baseline)
        estimator = make_estimator(strategy, backbone, config, seed, dataset.modality)
        estimator.fit(dataset.inputs, dataset.labels)
        summary = data_summary(dataset, source=str(dataset.path or "in-memory data"), train_size=len(dataset),
                               test_size=len(dataset), test_source=metrics["evaluation"])
        return Model(estimator, modality=dataset.modality, metrics=metrics, data_summary=summary)
    train, test_set = split_for_fit(data, test, test_size=test_size, seed=seed, **read)  # same kind: checked there
    check_described_labels(descriptions, described_in, train.classes)
    strategy = choose_strategy(strategy, train.inputs, train.modality)
    backbone = choose_backbone(backbone, train.inputs, strategy, train.modality)
    estimator = make_estimator(strategy, backbone, config, seed, train.modality)
    protocol = Protocol("test") if test is not None else Protocol("holdout", share=test_size)
    metrics = holdout_metrics(estimator, train, test_set, protocol, baseline=baseline, seed=seed)
    summary = data_summary(train, source=str(getattr(train, "path", None) or "in-memory data"),
                           train_size=len(train), test_size=len(test_set),
                           test_source=str(test_set.path) if test is not None else protocol.describe())
    return Model(estimator, modality=train.modality, metrics=metrics, data_summary=summary)


def parse_budget(budget: float | str) -> float:
    if isinstance(budget, str):
        from ._deadline import parse_duration

        return parse_duration(budget)
    return budget


def _prior_key(auto) -> str:
    """A digest of ``auto``'s label-name prior (its state): what the names or descriptions put into the teacher."""
    import hashlib
    import json

    from .strategies.zeroshot import label_prior_state

    tensors, meta = label_prior_state(auto)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for key in sorted(tensors):
        digest.update(key.encode() + np.ascontiguousarray(tensors[key]).tobytes())
    return f" {digest.hexdigest()[:12]}"


def fit_with_pool(data, unlabeled, *, test=None, strategy=None, backbone: str = AUTO, config=None, seed: int = 0,
                  baseline: bool = True, test_size: float = 0.2, read: dict | None = None, rounds: int | None = None,
                  student: str | None = None, selftrain: dict | None = None, labeler=None) -> Model:
    """Self-training on an unlabeled pool, measured on a hold-out beside the same strategy without the pool."""
    import time

    from .backbones import get_backbone
    from .config import make_config
    from .evaluation.metrics import classification_metrics
    from .evaluation.protocol import fit_and_score
    from .selftrain import SelfTrainConfig, check_student, distill, drop_test_leaks, predictions_per_second, self_train

    read = read or {}
    options = dict(selftrain or {}, **({"rounds": rounds} if rounds is not None else {}))
    cfg = make_config(SelfTrainConfig, options)
    data, test = _folder_test_split(data, test)
    train, test_set = split_for_fit(data, test, test_size=test_size, seed=seed, **read)
    pool = read_pool(unlabeled, read)
    pool.require_modality(train.modality, "the training data")
    strategy = choose_strategy(strategy, train.inputs, train.modality)
    backbone = choose_backbone(backbone, train.inputs, strategy, train.modality)
    if student is not None:  # before the rounds, not after them (small: a backbone it can cut and fine-tune)
        check_student(student, train.modality, backbone)
    entry = get_entry(strategy)
    space = get_backbone(backbone) if entry.uses_backbone else None
    embedded = labeler is not None and hasattr(labeler, "embed") and space is not None and space.cache.persist
    if embedded:  # the pool encoded once, as a job: the leak check, the teachers and the students read it here
        labeler.embed(pool, backbone)
    pool, leaks = drop_test_leaks(pool, test_set, space, cfg.leak_similarity)
    labels_only = make_estimator(strategy, backbone, config, seed, train.modality)
    plain = fit_and_score(labels_only, train, test_set)
    plain.strategy += " (labels only)"
    chosen = getattr(labels_only, "chosen_", labels_only)  # auto: its winner is the students' strategy
    name = chosen.name  # (no race per round)
    options = config if chosen is labels_only else None
    # the first teacher is the labels-only model itself: for auto on word labels, the winner blended with the
    # label-name prior, so the students learn what the names know through the pseudo-labels
    teacher = labels_only if getattr(labels_only, "prior_", None) is not None else chosen
    teaching = name if teacher is chosen else f"{name} + label-name prior (weight {labels_only.prior_weight_:g})"
    prior_key = _prior_key(labels_only) if teacher is not chosen else ""  # other names or descriptions: another run
    if embedded and not get_entry(name).trains_backbone:  # its teachers read the cached features: a head, here
        labeler = None

    def make(**extra):  # extra: what a self-training student is built with (Strategy.student_options)
        given = options  # a config dataclass fixes every option: nothing to add to it
        if extra and (options is None or isinstance(options, dict)):
            given = {**extra, **(options or {})}  # the caller's own options win
        return make_estimator(name, backbone, given, seed, train.modality)

    from ._paths import cache_dir
    from .selftrain import run_key

    weights = f"{backbone}@{getattr(space, 'fingerprint', '')}" if space is not None else None  # its own run
    # the students' whole config, defaults included: a default that changes between versions changes the key
    students = make(**make().student_options()).config_dict()
    checkpoint = cache_dir() / "selftrain" / run_key(teaching + prior_key, students, train, pool, cfg, seed,
                                                     backbone=weights)
    start = time.perf_counter()
    check = None
    if cfg.check_folds >= 2 and cfg.check_alpha > 0 and name in CHEAP_STRATEGIES:
        from .selftrain import SelfTrainResult, cross_check

        check = cross_check(make, train, pool, cfg, seed)
    if check is not None and not check["helps"]:
        student_acc, teacher_acc = np.mean(check["student_accuracy"]), np.mean(check["teacher_accuracy"])
        warn(f"self-training skipped: on {check['folds']} folds of the labeled data the student scored "
             f"{student_acc:.3f} against the labels-only {teacher_acc:.3f} ({check['teacher_only']} labels only the "
             f"labels-only model got right, {check['student_only']} only the student; sign test p = "
             f"{check['p_worse']:.3f}): the pool would hurt here; the model is the labels-only one")
        result = SelfTrainResult(labels_only, pool_size=len(pool))  # the model the labels-only row measured
    else:
        result = self_train(make, train, pool, cfg, teacher=teacher, checkpoint=checkpoint, labeler=labeler)
    result.check = check
    predictions = result.estimator.predict(test_set.inputs)
    seconds = plain.seconds + time.perf_counter() - start
    test_metrics = classification_metrics(test_set.labels, predictions, [str(c) for c in result.estimator.classes_])
    rows = [{"strategy": f"{name} + self-training", "backbone": backbone if entry.uses_backbone else None,
             "accuracy": test_metrics["accuracy"], "macro_f1": test_metrics["macro_f1"], "seconds": seconds},
            plain.row()]
    if baseline and name != "scratch":
        rows.append(fit_and_score(make_estimator("scratch", seed=seed, modality=train.modality), train,
                                  test_set).row())
    protocol = Protocol("test") if test is not None else Protocol("holdout", share=test_size)
    metrics = {"evaluation": protocol.describe(), "protocol": protocol.to_dict(), "test": test_metrics,
               "results": rows, "self_training": {
                   "pool_size": result.pool_size, "dropped_leaks": leaks, "threshold": cfg.threshold,
                   "check": result.check, "skipped": bool(check is not None and not check["helps"]),
                   "teacher": teaching,
                   "rounds": [vars(r) for r in result.rounds],
                   "gain_over_labels_only": test_metrics["accuracy"] - plain.accuracy}}
    if len(rows) > 2:
        metrics["transfer_gain"] = {"accuracy": rows[0]["accuracy"] - rows[2]["accuracy"],
                                    "macro_f1": rows[0]["macro_f1"] - rows[2]["macro_f1"]}
    summary = data_summary(train, source=str(getattr(train, "path", None) or "in-memory data"),
                           train_size=len(train), test_size=len(test_set), unlabeled_pool=len(pool),
                           test_source=str(test_set.path) if test is not None else protocol.describe())
    model = Model(result.estimator, modality=train.modality, metrics=metrics, data_summary=summary)
    if student is not None:
        fast = distill(result.estimator, student, train, pool, backbone=backbone, seed=seed, labeler=labeler,
                       workdir=checkpoint)
        student_pred = fast.predict(test_set.inputs)
        student_metrics = classification_metrics(test_set.labels, student_pred, [str(c) for c in fast.classes_])
        speed = {"teacher": predictions_per_second(result.estimator, test_set.inputs),
                 "student": predictions_per_second(fast, test_set.inputs)}
        metrics["student"] = {"kind": student, "accuracy": student_metrics["accuracy"],
                              "macro_f1": student_metrics["macro_f1"], "predictions_per_second": speed}
        model.student = Model(fast, modality=train.modality, data_summary=summary, metrics={
            "evaluation": protocol.describe(), "protocol": protocol.to_dict(), "test": student_metrics,
            "results": [{"strategy": f"{student} (distilled from {name})",
                         "backbone": backbone if fast.uses_backbone else None,
                         "accuracy": student_metrics["accuracy"], "macro_f1": student_metrics["macro_f1"],
                         "seconds": None}]})
    return model


def fit_anomaly(data, *, test=None, backbone: str = "auto", config=None, seed: int = 0, **read_options):
    """Fit :class:`PatchCore` on the normal images of ``data``; measure it on ``test`` when it has labels."""
    from .backbones import DEFAULT_IMAGE_BACKBONE
    from .data.media import split_folder
    from .evaluation.anomaly import NORMAL, anomaly_metrics, evaluation_normal, normal_label_of
    from .strategies.patchcore import PatchCore

    if test is None and isinstance(data, (str, Path)) and Path(data).is_dir():
        data, test = split_folder(Path(data))
    dataset = as_dataset(data, labeled=False, **read_options)
    if dataset.modality != "image":
        raise ConfigError(f"--task anomaly works on images; the data is {dataset.modality}",
                          hint="give a folder of normal images")
    estimator = PatchCore(backbone=DEFAULT_IMAGE_BACKBONE if backbone == AUTO else backbone, config=config,
                          seed=seed)
    cfg = estimator.config_
    normals = dataset.inputs
    normal = NORMAL
    if dataset.labels is not None:
        normal = normal_label_of(dataset.labels, cfg.normal_label, dataset.path)
        normals = [p for p, y in zip(dataset.inputs, dataset.labels) if y == normal]
        others = len(dataset) - len(normals)
        if others:
            warn(f"fitting on the {len(normals)} '{normal}' images only; {others} images of other classes are left "
                 "out of training (put labelled defects in the test data to measure AUROC)")
    info(f"anomaly detection: memory bank from {len(normals)} normal images")
    estimator.fit(normals)
    metrics = dict(estimator.fit_info_, threshold=estimator.threshold_, evaluation="none (no test data)")
    metrics.pop("calibration_scores", None)
    summary = {"source": str(dataset.path or "in-memory data"), "train_size": len(normals), "modality": "image",
               "normal_label": normal, "class_counts": {normal: len(normals)}}
    if test is not None:
        test_set = as_dataset(test, **read_options)
        test_set.require_modality("image", "the training data")
        test_set.require_labels(min_classes=1)
        scores = estimator.score_samples(test_set.inputs)
        metrics["test"] = anomaly_metrics(test_set.labels, scores, estimator.threshold_,
                                          evaluation_normal(test_set, normal))
        metrics["evaluation"] = "test data"
        metrics["results"] = [{"strategy": "patchcore", "backbone": estimator.backbone,
                               "accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
                               "auroc": metrics["test"]["auroc"], "seconds": None}]
        summary.update(test_source=str(test_set.path), test_size=len(test_set))
    metrics.setdefault("results", [])
    model = Model(estimator, modality="image", metrics=metrics, data_summary=summary, task="anomaly")
    return model


def load(path: str | Path, *, backbone: str | None = None):
    """Load a model directory written by ``Model.save`` or ``tenni fit -o``: a :class:`Model`, or for a text-to-text
    model (``--task generate``) a :class:`tenni.generate.model.Generator`."""
    from .generate.model import is_generate_model

    if is_generate_model(path):
        from .generate.api import load as load_generator

        return load_generator(path, backbone=backbone)
    return Model.load(path, backbone=backbone)


class TenniClassifier(SearchableOptions, ClassifierMixin, BaseEstimator):
    """A scikit-learn estimator over texts: drop it into ``cross_val_score``, ``GridSearchCV`` or a pipeline.

    >>> from sklearn.model_selection import cross_val_score
    >>> cross_val_score(TenniClassifier(strategy="probe"), texts, labels, cv=5)  # doctest: +SKIP
    """

    def __init__(self, strategy: str = "probe", backbone: str = DEFAULT_TEXT_BACKBONE,
                 config: dict | None = None, seed: int = 0):
        self.strategy = strategy
        self.backbone = backbone
        self.config = config
        self.seed = seed

    def _options_class(self):
        from .strategies import get_strategy_class

        return get_strategy_class(self.strategy).Config

    def __sklearn_tags__(self):
        return text_input_tags(super().__sklearn_tags__())

    def fit(self, X, y) -> TenniClassifier:
        # labels keep their type (ints stay ints, so scikit-learn's scorers work); strategies see strings
        from .data import as_texts
        from .data.media import infer_modality

        texts = as_texts(X)
        self.classes_, y_idx = np.unique(label_array(y, len(texts)), return_inverse=True)
        modality = infer_modality(texts[:50]) if self.strategy == "scratch" else "text"
        self.estimator_ = make_estimator(self.strategy, self.backbone, self.config, self.seed, modality)
        self.estimator_.fit(texts, [f"{i:06d}" for i in y_idx])
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Columns in ``self.classes_`` order."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def to_model(self) -> Model:
        """Wrap the fitted estimator as a :class:`Model`, to ``save`` it like one from ``tenni.fit``."""
        from copy import copy

        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "estimator_")
        estimator = copy(self.estimator_)
        estimator.classes_ = np.asarray([str(c) for c in self.classes_])
        return Model(estimator)
