"""The strategy contract: a scikit-learn estimator over (backbone, texts, labels).

Following ``sklearn/base.py``: ``__init__`` only stores hyper-parameters (``backbone``, ``config``, ``seed``), ``fit``
returns ``self``, fitted state ends in ``_``. So ``clone``, ``cross_val_score`` and pipelines work unchanged, and the
options are searchable as ``config__NAME`` (``GridSearchCV(..., {"config__C": [0.1, 1]})``). Each strategy has a
config dataclass of :func:`tenni.config.option` fields and a name in :mod:`.registry`, whose entry also says what
the class's ``uses_backbone`` / ``needs_trainable_backbone`` / ``text_only`` are. ``get_state`` / ``from_state``
turn a fitted strategy into tensors + JSON for the artifact and back, never pickle.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..backbones import DEFAULT_TEXT_BACKBONE, get_backbone
from ..config import config_dict, make_config
from ..errors import ConfigError
from . import registry


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


def balanced_class_weight(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * count_c): the weighting scikit-learn calls 'balanced', for imbalanced data."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    return (len(y) / (n_classes * counts)).astype(np.float32)


class SearchableOptions:
    """``get_params``/``set_params`` that show the options as ``config__NAME``, so that ``GridSearchCV`` and
    ``clone`` work over them; ``config`` itself stays what the user gave (None, a dict, or the dataclass), and a
    searched option is merged into it as a dict entry."""

    def _options_class(self):
        raise NotImplementedError

    def get_params(self, deep: bool = True) -> dict:
        params = super().get_params(deep=False)
        if deep:
            options = make_config(self._options_class(), self.config)
            params.update({f"config__{k}": v for k, v in config_dict(options).items()})
        return params

    def set_params(self, **params):
        options = {k[len("config__"):]: params.pop(k) for k in list(params) if k.startswith("config__")}
        super().set_params(**params)
        if options:
            current = self.config
            if current is not None and not isinstance(current, dict):
                current = config_dict(current)
            self.config = {**(current or {}), **options}
        return self


class Strategy(SearchableOptions, ClassifierMixin, BaseEstimator):
    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    uses_backbone: ClassVar[bool] = True
    needs_trainable_backbone: ClassVar[bool] = False
    text_only: ClassVar[bool] = False  # reads the inputs as text (TF-IDF, tokenizers): refuses image/audio paths
    legacy_options: ClassVar[frozenset] = frozenset()
    """Options that models saved by earlier versions may carry and this class no longer takes (dropped at load)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        entry = registry._ENTRIES.get(cls.name)
        if entry is None or not entry.builtin:  # not a built-in: the class says it itself
            return
        here = f"{cls.__module__}:{cls.__qualname__}"
        if here not in entry.targets.values():  # a subclass of a built-in keeps the facts it inherits
            return
        cls.uses_backbone = entry.uses_backbone
        cls.needs_trainable_backbone = entry.trains_backbone
        cls.text_only = [m for m, target in entry.targets.items() if target == here] == ["text"]

    def __init__(self, backbone: str = DEFAULT_TEXT_BACKBONE, config=None, seed: int = 0):
        self.backbone = backbone
        self.config = config
        self.seed = seed

    def _options_class(self):
        return self.Config

    # --- helpers for subclasses ----------------------------------------------------------------------------
    @property
    def config_(self):
        """The validated options (checked once per value of ``config``, not at every access)."""
        key = repr(self.config)
        cached = self.__dict__.get("_validated")
        if cached is None or cached[0] != key:
            cached = (key, make_config(self.Config, self.config))
            self.__dict__["_validated"] = cached
        return cached[1]

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
        if isinstance(config, dict) and cls.legacy_options:
            config = {k: v for k, v in config.items() if k not in cls.legacy_options}
        est = cls(backbone=backbone, config=config, seed=seed)
        est.classes_ = np.asarray(classes)
        est._set_state(tensors, meta)
        return est

    def config_dict(self) -> dict:
        return config_dict(self.config_)

    def student_options(self) -> dict:
        """Options a self-training student of this strategy is built with (it learns from true labels followed by
        pseudo-labels, so a choice validated on them would score agreement with the teacher). None by default."""
        return {}
