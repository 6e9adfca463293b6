"""Linear probe: frozen backbone embeddings (cached on disk) + logistic regression.

The cheapest transfer there is, and on few labels often the best: nothing in the backbone moves, so nothing
overfits, and a second fit on the same texts never runs the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import POSITIVE, option
from ._linear import CLASS_WEIGHTS, fit_logistic, fit_logistic_soft, logistic_proba
from .base import Strategy


@dataclass
class ProbeConfig:
    C: float | None = option(1.0, "inverse L2 strength of the logistic regression; None picks it by stratified "
                                  "CV on log-loss (no better than 1.0 on few-shot sets, and 20x slower)", **POSITIVE)
    class_weight: str | None = option("balanced", "'balanced' re-weights classes by inverse frequency (imbalanced "
                                                  "data); None for equal weights", choices=CLASS_WEIGHTS)
    batch_size: int = option(64, "texts per encoder batch", **POSITIVE)


class LinearProbe(Strategy):
    """Frozen embeddings + logistic regression."""

    name = "probe"
    Config = ProbeConfig

    def _fit(self, texts, y, cfg: ProbeConfig) -> None:
        feats = self._backbone().encode(texts, batch_size=cfg.batch_size)
        self.coef_, self.intercept_, self.C_ = fit_logistic(feats, y, seed=self.seed, C=cfg.C,
                                                            class_weight=cfg.class_weight)

    def fit_soft(self, inputs, targets: np.ndarray, classes) -> LinearProbe:
        """Fit on soft targets (one probability per class in ``classes`` order): distillation of a teacher."""
        cfg = self.config_
        self.classes_ = np.asarray(classes)
        feats = self._backbone().encode(list(inputs), batch_size=cfg.batch_size)
        self.C_ = cfg.C if cfg.C is not None else 1.0
        self.coef_, self.intercept_ = fit_logistic_soft(feats, targets, C=self.C_, class_weight=cfg.class_weight)
        return self

    def _predict_proba(self, texts) -> np.ndarray:
        feats = self._backbone().encode(texts, batch_size=self.config_.batch_size)
        return logistic_proba(feats, self.coef_, self.intercept_)

    def get_state(self):
        return {"head.coef": self.coef_, "head.intercept": self.intercept_}, {"C": self.C_}

    def _set_state(self, tensors, meta) -> None:
        self.coef_, self.intercept_ = tensors["head.coef"], tensors["head.intercept"]
        self.C_ = meta.get("C")
