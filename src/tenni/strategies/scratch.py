"""The no-transfer baseline for text: TF-IDF + logistic regression, trained only on the user's labels.

It is here so the gain from transfer is always measured, never claimed. Texts in scripts without spaces
(Japanese, Chinese) get character n-grams, since a word analyzer would treat a whole sentence as one token.
Images and audio have their own baselines under the same name (:mod:`.scratch_image`, :mod:`.scratch_audio`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import POSITIVE, option
from ..errors import ConfigError
from ..language import main_language, normalise_width
from ._linear import CLASS_WEIGHTS, fit_logistic, fit_logistic_soft, logistic_proba
from .base import Strategy

UNSPACED_LANGUAGES = ("ja", "zh", "th", "ko")  # character n-grams beat words (Korean: agglutinative)


def wants_characters(texts) -> bool:
    """Whether TF-IDF with ``analyzer='auto'`` reads these texts as character n-grams (unspaced scripts)."""
    return main_language(texts) in UNSPACED_LANGUAGES


@dataclass
class ScratchConfig:
    analyzer: str = option("auto", "'word', 'char_wb', or 'auto' (character n-grams for Japanese/Chinese/Korean, "
                                   "words otherwise)", choices=("auto", "word", "char_wb", "char"))
    ngram_max: int = option(2, "longest n-gram (words); characters use ngram_max + 2", **POSITIVE)
    min_df: int | float = option(1, "ignore terms in fewer documents than this (a share of the documents when "
                                    "below 1)", **POSITIVE)
    C: float = option(10.0, "inverse L2 strength of the logistic regression", **POSITIVE)
    class_weight: str | None = option("balanced", "'balanced' or None", choices=CLASS_WEIGHTS)


LEGACY_SCRATCH_OPTIONS = frozenset({"analyzer", "ngram_max", "min_df", "C", "class_weight", "image_size", "width",
                                    "epochs", "min_steps", "batch_size", "learning_rate", "n_mfcc"})
"""The options of the one scratch config of earlier versions (text, image and audio mixed): each modality's
baseline drops the others' when it loads a model saved then."""


class TfidfScratch(Strategy):
    """TF-IDF features learned from the labeled texts alone + logistic regression."""

    name = "scratch"
    Config = ScratchConfig
    legacy_options = LEGACY_SCRATCH_OPTIONS - {"analyzer", "ngram_max", "min_df", "C", "class_weight"}

    def _vectorizer_params(self, cfg: ScratchConfig, texts) -> dict:
        analyzer = cfg.analyzer
        if analyzer == "auto":
            analyzer = "char_wb" if wants_characters(texts) else "word"
        ngram = (1, cfg.ngram_max) if analyzer == "word" else (1, cfg.ngram_max + 2)
        return {"analyzer": analyzer, "ngram_range": list(ngram), "lowercase": True, "nfkc": True}

    def _counts(self, texts):
        from sklearn.feature_extraction.text import CountVectorizer

        params = {k: v for k, v in self.vectorizer_.items() if k != "nfkc"}
        params["ngram_range"] = tuple(params["ngram_range"])
        return CountVectorizer(vocabulary=self.vocabulary_, **params).transform(self._prepare(texts))

    def tfidf_matrix(self, texts):
        """The TF-IDF features of ``texts`` with a vocabulary learned from them: the baseline's own view of the
        data (``assess`` compares backbones against it)."""
        return self.learn_vocabulary(texts, self.config_).transform(self._prepare(texts))

    def _prepare(self, texts):
        """NFKC: full-width letters and digits (common in Japanese text) count as their ASCII forms."""
        if self.vectorizer_.get("nfkc"):
            return [normalise_width(t) for t in texts]
        return texts

    def _tfidf(self, texts):
        from sklearn.preprocessing import normalize

        X = self._counts(texts).astype(np.float64)
        X.data = 1.0 + np.log(X.data)  # sublinear tf
        X = X.multiply(self.idf_.astype(np.float64)).tocsr()
        return normalize(X)

    def _fit(self, texts, y, cfg: ScratchConfig) -> None:
        if cfg.min_df >= 1 and cfg.min_df > len(texts):
            raise ConfigError(f"option min_df ({cfg.min_df}) is more than the {len(texts)} training texts",
                              hint="--set min_df=1")
        vec = self.learn_vocabulary(texts, cfg)
        self.vocabulary_ = {term: int(i) for term, i in vec.vocabulary_.items()}
        self.idf_ = np.asarray(vec.idf_, np.float32)
        X = self._tfidf(texts)
        self.coef_, self.intercept_, _ = fit_logistic(X, y, seed=self.seed, C=cfg.C,
                                                      class_weight=cfg.class_weight)

    def learn_vocabulary(self, texts, cfg: ScratchConfig):
        """A fitted TfidfVectorizer (and ``vectorizer_``); texts with no word of two letters or more (emoji,
        single characters) are read as character n-grams instead of failing on an empty vocabulary."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer_ = self._vectorizer_params(cfg, texts)
        for attempt in ("as configured", "characters"):
            vec = TfidfVectorizer(sublinear_tf=True, min_df=cfg.min_df, analyzer=self.vectorizer_["analyzer"],
                                  ngram_range=tuple(self.vectorizer_["ngram_range"]), lowercase=True)
            try:
                return vec.fit(self._prepare(texts))
            except ValueError:
                if attempt == "characters" or self.vectorizer_["analyzer"] != "word":
                    raise
                self.vectorizer_ = dict(self.vectorizer_, analyzer="char_wb", ngram_range=[1, cfg.ngram_max + 2])

    def fit_soft(self, texts, targets: np.ndarray, classes) -> TfidfScratch:
        """Fit on soft targets (one probability per class in ``classes`` order): distillation of a teacher into
        the fastest model there is (no encoder at prediction time)."""
        from ..data import as_texts

        cfg = self.config_
        texts = as_texts(texts)
        self.classes_ = np.asarray(classes)
        vec = self.learn_vocabulary(texts, cfg)
        self.vocabulary_ = {term: int(i) for term, i in vec.vocabulary_.items()}
        self.idf_ = np.asarray(vec.idf_, np.float32)
        self.coef_, self.intercept_ = fit_logistic_soft(self._tfidf(texts), targets, C=cfg.C,
                                                        class_weight=cfg.class_weight)
        return self

    def _predict_proba(self, texts) -> np.ndarray:
        return logistic_proba(self._tfidf(texts), self.coef_, self.intercept_)

    def get_state(self):
        return ({"idf": self.idf_, "head.coef": self.coef_, "head.intercept": self.intercept_},
                {"vectorizer": self.vectorizer_, "vocabulary": self.vocabulary_})

    def _set_state(self, tensors, meta) -> None:
        self.idf_, self.coef_, self.intercept_ = tensors["idf"], tensors["head.coef"], tensors["head.intercept"]
        self.vectorizer_ = meta["vectorizer"]
        self.vocabulary_ = meta["vocabulary"]
