"""Linear probe: frozen backbone embeddings (cached on disk) + logistic regression.

The cheapest transfer there is, and on few labels often the best: nothing in the backbone moves, so nothing
overfits, and a second fit on the same texts never runs the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backbones.length import LengthOptions
from ..config import POSITIVE, option
from ._linear import CLASS_WEIGHTS, fit_logistic, fit_logistic_soft, logistic_proba
from .base import Strategy

MANY_CLASSES = 4


def head_strength(C: float | None, n_classes: int) -> float:
    """The head's C: as given, else 1.0 up to ``MANY_CLASSES`` classes and 10.0 above. Measured on five sets at 8
    and 64 per class (docs/design/feature-cache.md): the many-class sets (banking77, livedoor_news) gain 2-3.6
    points at 10, the two- and four-class sets lose up to 1.6 there; a sixth, checked after (fsdd_spoken_digits,
    10 classes), gains 3.3 at 8 per class."""
    if C is not None:
        return float(C)
    return 1.0 if n_classes <= MANY_CLASSES else 10.0


@dataclass
class ProbeConfig(LengthOptions):
    C: float | None = option(None, "inverse L2 strength of the logistic regression; None: by the number of "
                                   "classes, 1.0 up to 4 and 10.0 above (docs/design/feature-cache.md)", **POSITIVE)
    search_C: bool = option(False, "pick C by stratified CV on log-loss instead (20x slower; no better on the "
                                   "benchmark sets)")
    class_weight: str | None = option("balanced", "'balanced' re-weights classes by inverse frequency (imbalanced "
                                                  "data); None for equal weights", choices=CLASS_WEIGHTS)
    batch_size: int = option(64, "texts per encoder batch", **POSITIVE)
    max_length: int | None = option(None, "tokens per text; None: the backbone's most (frozen features are cached, "
                                          "so reading more costs once); the training texts' 95th percentile is "
                                          "reported", **POSITIVE)


class LinearProbe(Strategy):
    """Frozen embeddings + logistic regression."""

    name = "probe"
    Config = ProbeConfig

    def _fit(self, texts, y, cfg: ProbeConfig) -> None:
        self.length_ = self._choose_length(texts, cfg)
        feats = self._encode(texts)
        C = None if cfg.search_C else head_strength(cfg.C, len(self.classes_))
        self.coef_, self.intercept_, self.C_ = fit_logistic(feats, y, seed=self.seed, C=C,
                                                            class_weight=cfg.class_weight)

    def fit_soft(self, inputs, targets: np.ndarray, classes) -> LinearProbe:
        """Fit on soft targets (one probability per class in ``classes`` order): distillation of a teacher."""
        cfg = self.config_
        self.classes_ = np.asarray(classes)
        self.length_ = self._choose_length(list(inputs), cfg)
        feats = self._encode(list(inputs))
        self.C_ = head_strength(cfg.C, len(self.classes_))
        self.coef_, self.intercept_ = fit_logistic_soft(feats, targets, C=self.C_, class_weight=cfg.class_weight)
        return self

    def _predict_proba(self, texts) -> np.ndarray:
        feats = self._encode(texts)
        return logistic_proba(feats, self.coef_, self.intercept_)

    def _choose_length(self, texts, cfg: ProbeConfig) -> dict | None:
        """The length policy where the backbone reads tokens (transformers folders); None for engines that cut
        texts their own way (the e5 C engine's character windows)."""
        from ..backbones.length import choose_length, folder_position_limit, light_token_counts, say

        backbone = self._backbone()
        if not hasattr(backbone, "token_cap"):
            if cfg.max_length is not None or cfg.truncation != "head":
                from ..errors import ConfigError

                raise ConfigError(f"backbone '{backbone.name}' cuts texts its own way: max_length and truncation "
                                  "do not apply", hint="leave them unset, or use a transformers text backbone")
            return None
        counts = light_token_counts(backbone.transformer_dir(), texts)
        choice = choose_length(counts if counts is not None else [], backbone.token_cap,
                               max_length=cfg.max_length, truncation=cfg.truncation, use_cap=True,
                               limit=folder_position_limit(backbone.transformer_dir()))
        if counts is not None:
            say(choice, "probe")
        return choice.as_dict()

    def _encode(self, texts):
        length = getattr(self, "length_", None)
        kwargs = {"max_length": length["max_length"], "truncation": length["truncation"]} if length else {}
        return self._backbone().encode(texts, batch_size=self.config_.batch_size, **kwargs)

    def get_state(self):
        return {"head.coef": self.coef_, "head.intercept": self.intercept_}, {"C": self.C_, "length": self.length_}

    def _set_state(self, tensors, meta) -> None:
        self.coef_, self.intercept_ = tensors["head.coef"], tensors["head.intercept"]
        self.C_ = meta.get("C")
        self.length_ = meta.get("length")
