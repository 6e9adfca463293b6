"""Hybrid: a frozen-feature probe and the TF-IDF model, blended with a weight chosen by cross-validation.

Transfer and surface statistics fail in different places. Where the backbone knows the language and the task is
about meaning, the probe wins; where it does not (an English encoder on Japanese), or where labels follow surface
cues (a news site's boilerplate, product codes), character/word n-grams win. Out-of-fold predictions on the
training data choose the blend, from all-TF-IDF (weight 0) to all-probe (weight 1), so the hybrid is about as good
as the better of the two without anyone having to know in advance which that is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._deadline import check_deadline
from ..config import POSITIVE, SHARE, option
from ..errors import ConfigError
from ._linear import CLASS_WEIGHTS
from .base import Strategy
from .probe import LinearProbe
from .scratch import TfidfScratch


@dataclass
class HybridConfig:
    weights: tuple = option((0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0), "candidate weights of the probe (1 - weight goes "
                                                                  "to TF-IDF); the best by CV is kept")
    folds: int = option(4, "stratified folds for choosing the weight", **POSITIVE)
    margin: float = option(0.02, "out-of-fold accuracy a blend must gain over the probe alone to be used (or two "
                                 "standard errors of the paired difference, when smaller): with a few dozen examples "
                                 "the folds are noisy, and transfer is the better bet on a tie", **SHARE)
    class_weight: str | None = option("balanced", "'balanced' or None, for both parts", choices=CLASS_WEIGHTS)

    def __post_init__(self):
        import numbers

        if not self.weights or not all(isinstance(w, numbers.Real) and 0 <= w <= 1 for w in self.weights):
            raise ConfigError(f"option weights must be shares between 0 and 1, got {self.weights!r}",
                              hint="--set weights=0,0.5,1")


class Hybrid(Strategy):
    """Probe + TF-IDF soft vote, weight picked on out-of-fold predictions."""

    text_only = True
    name = "hybrid"
    Config = HybridConfig

    def _parts(self, cfg: HybridConfig):
        probe = LinearProbe(backbone=self.backbone, config={"class_weight": cfg.class_weight}, seed=self.seed)
        scratch = TfidfScratch(backbone=None, config={"class_weight": cfg.class_weight}, seed=self.seed)
        return probe, scratch

    def _fit(self, texts, y, cfg: HybridConfig) -> None:
        from sklearn.model_selection import StratifiedKFold

        labels = self.classes_[y]
        folds = int(min(cfg.folds, np.bincount(y).min()))
        self._backbone().encode(texts)  # one pass through the encoder; the folds read the cache
        if folds >= 2 and len(cfg.weights) > 1:
            oof_probe = np.zeros((len(texts), len(self.classes_)))
            oof_tfidf = np.zeros_like(oof_probe)
            splitter = StratifiedKFold(folds, shuffle=True, random_state=self.seed)
            for train_idx, val_idx in splitter.split(texts, y):
                check_deadline()  # auto's budget: stop between folds rather than overrun by a whole CV
                sub_train = [texts[i] for i in train_idx]
                sub_val = [texts[i] for i in val_idx]
                probe, scratch = self._parts(cfg)
                for part, oof in ((probe, oof_probe), (scratch, oof_tfidf)):
                    part.fit(sub_train, labels[train_idx])
                    cols = np.searchsorted(self.classes_, part.classes_)
                    oof[np.ix_(val_idx, cols)] = part.predict_proba(sub_val)
            scores = []
            for w in cfg.weights:
                blend = w * oof_probe + (1 - w) * oof_tfidf
                accuracy = float(np.mean(blend.argmax(1) == y))
                log_loss = float(-np.mean(np.log(blend[np.arange(len(y)), y].clip(1e-9))))
                scores.append((accuracy, -log_loss, -abs(w - 0.5), w))
            best = max(scores)
            probe_only = next((s for s in scores if s[3] == 1.0), None)
            if probe_only is not None and best[3] != 1.0:
                w = best[3]
                blend_right = (w * oof_probe + (1 - w) * oof_tfidf).argmax(1) == y
                paired = blend_right.astype(float) - (oof_probe.argmax(1) == y)
                standard_error = float(paired.std(ddof=1) / np.sqrt(len(y))) if len(y) > 1 else np.inf
                # a gain counts when it beats the fixed margin (few examples: noisy folds) or, with enough
                # examples, two standard errors of the paired difference (thousands of texts: 0.5 points is real)
                if best[0] - probe_only[0] <= 0 or best[0] - probe_only[0] < min(cfg.margin, 2 * standard_error):
                    best = probe_only
            self.weight_ = float(best[3])
            self.cv_ = {str(w): {"accuracy": s[0], "log_loss": -s[1]} for s, w in zip(scores, cfg.weights)}
        else:  # one candidate is a fixed weight; too few labels per class to cross-validate: an even blend
            self.weight_, self.cv_ = (float(cfg.weights[0]) if len(cfg.weights) == 1 else 0.5), {}
        self.probe_, self.scratch_ = self._parts(cfg)
        self.probe_.fit(texts, labels)
        self.scratch_.fit(texts, labels)

    def student_options(self) -> dict:
        """Self-trained, the probe and TF-IDF students vote evenly (co-training's two views): a CV on 16-128 true
        labels cannot tell blends apart (its choice jumps between 0 and 1 from seed to seed), and one over the
        pseudo-labels too scores agreement with the teacher, not accuracy (docs/guides/selftrain.md)."""
        return {"weights": (0.5,)}

    def _predict_proba(self, texts) -> np.ndarray:
        return (self.weight_ * self.probe_.predict_proba(texts)
                + (1 - self.weight_) * self.scratch_.predict_proba(texts))

    def get_state(self):
        tensors, meta = {}, {"weight": self.weight_, "cv": self.cv_}
        for prefix, part in (("probe.", self.probe_), ("scratch.", self.scratch_)):
            part_tensors, part_meta = part.get_state()
            tensors.update({prefix + k: v for k, v in part_tensors.items()})
            meta[prefix.rstrip(".")] = {"meta": part_meta, "config": part.config_dict()}
        return tensors, meta

    def _set_state(self, tensors, meta) -> None:
        self.weight_, self.cv_ = float(meta["weight"]), meta.get("cv", {})
        parts = {}
        for prefix, cls in (("probe", LinearProbe), ("scratch", TfidfScratch)):
            sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            parts[prefix] = cls.from_state(backbone=self.backbone if prefix == "probe" else None,
                                           config=meta[prefix]["config"], seed=self.seed, classes=self.classes_,
                                           tensors=sub, meta=meta[prefix]["meta"])
        self.probe_, self.scratch_ = parts["probe"], parts["scratch"]
