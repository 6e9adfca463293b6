"""The strategy contract: a scikit-learn estimator over (backbone, texts, labels).

Following ``sklearn/base.py``: ``__init__`` only stores hyper-parameters (``backbone``, ``config``, ``seed``), ``fit``
returns ``self``, fitted state ends in ``_``. So ``clone``, ``cross_val_score`` and pipelines work unchanged.
Each strategy has a config dataclass whose fields carry ``metadata={"help": ...}`` (as in PEFT), and a name it is
registered under. ``get_state`` / ``from_state`` turn a fitted strategy into tensors + JSON for the artifact and
back, never pickle.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..backbones import DEFAULT_TEXT_BACKBONE, get_backbone
from ..errors import ConfigError

_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    _STRATEGIES[cls.name] = cls
    return cls


def strategy_names() -> list[str]:
    _import_all()
    return list(_STRATEGIES)


def get_strategy_class(name: str) -> type[Strategy]:
    _import_all()
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"unknown strategy '{name}'", hint=f"choose one of: {', '.join(_STRATEGIES)}") from None


def _import_all() -> None:
    from . import auto, finetune, hybrid, lora, probe, scratch, setfit  # noqa: F401  (registration side effect)


def config_help(config_cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}


def make_config(config_cls, config: Any):
    """Accept None, a dict, or the dataclass; reject unknown keys with the list of known ones."""
    if config is None:
        return config_cls()
    if isinstance(config, dict):
        known = {f.name: f for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(repr(u) for u in unknown)} for this strategy",
                              hint=f"known: {', '.join(known)}")
        values = {}
        for key, value in config.items():
            values[key] = _coerce(key, value, known[key].default, str(known[key].type))
        config = config_cls(**values)
    if not isinstance(config, config_cls):
        raise ConfigError(f"config must be a dict or {config_cls.__name__}, not {type(config).__name__}")
    for f in dataclasses.fields(config_cls):
        check_range(f.name, getattr(config, f.name), f.default)
    return config


def label_array(y, n_inputs: int) -> np.ndarray:
    """One label per input (a column vector is flattened; a missing one is refused with its position), as an array
    that keeps their type when they share one (str, bool, int or float: scikit-learn's scorers compare predictions
    with them), else their text (``[True, 2]`` would otherwise merge True with 1)."""
    import numbers

    from ..data import is_missing
    from ..errors import DataError

    y = np.asarray(y, dtype=object)
    y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n_inputs:
        raise DataError(f"{n_inputs} inputs but labels of shape {y.shape}", hint="pass one label per input")
    missing = [i for i, v in enumerate(y) if is_missing(v)]
    if missing:
        raise DataError(f"item {missing[0]}: missing label (None/NaN)", hint="drop unlabeled items or fill them")
    values = [v.item() if isinstance(v, np.generic) else v for v in y]
    for kind in (str, bool):
        if all(isinstance(v, kind) for v in values):
            return np.asarray(values)
    if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        return np.asarray(values)
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.float64)
    return np.asarray([str(v) for v in values])


def text_input_tags(tags):
    """scikit-learn's tags for an estimator whose X is a 1-D sequence of texts (or file paths), not a matrix."""
    tags.input_tags.one_d_array = True
    tags.input_tags.two_d_array = False
    tags.input_tags.string = True
    return tags


def check_seed(seed) -> None:
    """A seed numpy and torch accept: a whole number from 0 to 2**32 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}", hint="--seed 0, 1, 2 …")


_SHARES = {"ratio", "fraction", "dropout", "probability", "quantile", "margin", "merge", "crop_min", "layer_decay"}
_MAY_BE_ZERO = {"min_steps", "head_warmup_epochs", "patience", "weight_decay", "seed"}


def check_range(key: str, value, default=None) -> None:
    """Numeric options in their range, else a ConfigError naming the option: shares (ratios, fractions, dropout,
    probabilities) within [0, 1], counts/sizes/rates/strengths above 0 (a few may be 0)."""
    import math

    if key == "class_weight" and value not in (None, "balanced"):
        raise ConfigError(f"option class_weight must be 'balanced' or none, got {value!r}", hint="--set "
                          "class_weight=balanced weighs classes by their inverse frequency; none weighs all alike")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return
    if not math.isfinite(value):
        raise ConfigError(f"option {key} must be a finite number, got {value}", hint=f"the default is {default}")
    if key in _SHARES or _SHARES & set(key.split("_")):
        ok, want = 0 <= value <= 1, "between 0 and 1"
    elif key in _MAY_BE_ZERO or default == 0:
        ok, want = value >= 0, "0 or more"
    else:
        ok, want = value > 0, "above 0"
    if not ok:
        raise ConfigError(f"option {key} must be {want}, got {value}", hint=f"the default is {default}")


def _coerce(key, value, default, annotation: str = ""):
    """Values from the CLI arrive as strings; give them the field's type ('none' means None)."""
    if isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    if value is None:
        return None
    if not isinstance(value, str):
        return _typed(key, value, default, annotation)
    if isinstance(default, str) or annotation.startswith("str"):
        return value
    default = _typed_default(default, annotation)
    if default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (tuple, list)):
            items = tuple(v.strip() for v in value.split(",") if v.strip())
            if default and all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in default):
                return tuple(float(v) for v in items)
            return items
    except ValueError:
        raise ConfigError(f"option {key} needs a {type(default).__name__}, got '{value}'") from None
    return value


def _typed_default(default, annotation: str):
    """An Optional field's default is None: its annotation says what its values are (a float or an int example)."""
    if default is None:
        return 0.0 if "float" in annotation else 0 if "int" in annotation else None
    return default


def _typed(key, value, default, annotation: str):
    """A value given from Python (not a CLI string) must already have the option's type; whole floats pass as ints."""
    import numbers

    default = _typed_default(default, annotation)
    if default is None or isinstance(default, str) and not annotation.startswith("str"):
        return value  # a free-form option (e.g. float | str): the strategy reads it
    if "int" in annotation and "float" in annotation:  # a count or a share (min_df)
        ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "number"
    elif isinstance(default, bool):
        ok, want = isinstance(value, (bool, np.bool_)) or value in (0, 1), "true or false"
        value = bool(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, numbers.Integral) or isinstance(value, float) and value.is_integer()
        ok, want, value = ok and not isinstance(value, bool), "whole number", int(value) if ok else value
    elif isinstance(default, float):
        ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "string"
    elif isinstance(default, (tuple, list)):
        ok = hasattr(value, "__iter__") and not isinstance(value, (dict, str, bytes))
        want = "list"
        value = tuple(v.item() if isinstance(v, np.generic) else v for v in value) if ok else value
    else:
        return value
    if not ok:
        raise ConfigError(f"option {key} needs a {want}, got {value!r}", hint=f"the default is {default!r}")
    return value


def balanced_class_weight(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * count_c): the weighting scikit-learn calls 'balanced', for imbalanced data."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    return (len(y) / (n_classes * counts)).astype(np.float32)


class Strategy(ClassifierMixin, BaseEstimator):
    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    uses_backbone: ClassVar[bool] = True
    needs_trainable_backbone: ClassVar[bool] = False
    text_only: ClassVar[bool] = False  # reads the inputs as text (TF-IDF, tokenizers): refuses image/audio paths

    def __init__(self, backbone: str = DEFAULT_TEXT_BACKBONE, config: Any = None, seed: int = 0):
        self.backbone = backbone
        self.config = config
        self.seed = seed

    # --- helpers for subclasses ----------------------------------------------------------------------------
    @property
    def config_(self):
        return make_config(self.Config, self.config)

    def _backbone(self):
        backbone = get_backbone(self.backbone)
        if self.needs_trainable_backbone and not backbone.trainable:
            raise ConfigError(f"strategy '{self.name}' trains the backbone, but '{backbone.name}' is frozen",
                              hint="use --strategy probe, or a trainable backbone")
        return backbone

    # --- the estimator API ---------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        return text_input_tags(super().__sklearn_tags__())

    def fit(self, X, y) -> Strategy:
        from ..data import as_texts

        texts = as_texts(X)
        self.classes_, y_idx = np.unique(label_array(y, len(texts)), return_inverse=True)
        y_idx = y_idx.ravel()
        if len(self.classes_) < 2:
            raise ConfigError("fit needs at least two classes", hint="check the labels")
        if self.text_only or (self.uses_backbone and get_backbone(self.backbone).modality == "text"):
            from ..data.media import infer_modality

            modality = infer_modality(texts[:50])
            if modality != "text":  # a text model of file paths reads the class from the folder name
                what = f"strategy '{self.name}'" if self.text_only else f"backbone '{self.backbone}'"
                raise ConfigError(f"{what} works on text, and these inputs are {modality} files",
                                  hint="use probe or finetune with an image/audio backbone (`tenni models`)")
        cfg = self.config_
        self._fit(texts, y_idx, cfg)
        return self

    def predict_proba(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        from ..data import as_texts

        check_is_fitted(self, "classes_")
        texts = as_texts(X)
        if not texts:
            return np.zeros((0, len(self.classes_)))
        return self._predict_proba(texts)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # --- to implement ----------------------------------------------------------------------------------------
    def _fit(self, texts: list[str], y: np.ndarray, cfg) -> None:
        raise NotImplementedError

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Fitted state as (tensors, JSON-able metadata)."""
        raise NotImplementedError

    def _set_state(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        raise NotImplementedError

    @classmethod
    def from_state(cls, *, backbone, config, seed, classes, tensors, meta) -> Strategy:
        est = cls(backbone=backbone, config=config, seed=seed)
        est.classes_ = np.asarray(classes)
        est._set_state(tensors, meta)
        return est

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config_)
