"""The no-transfer baseline: TF-IDF + logistic regression, trained only on the user's labels.

It is here so the gain from transfer is always measured, never claimed. Texts in scripts without spaces
(Japanese, Chinese) get character n-grams, since a word analyzer would treat a whole sentence as one token.
Images get a small CNN trained on the pixels, audio MFCC statistics + logistic regression
(:mod:`._scratch_media`); the modality is told from the inputs (paths to image or audio files).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..language import main_language, normalise_width
from ._linear import fit_logistic, logistic_proba
from .base import Strategy, register_strategy

UNSPACED_LANGUAGES = ("ja", "zh", "th", "ko")  # character n-grams beat words (Korean: agglutinative)


def wants_characters(texts) -> bool:
    """Whether TF-IDF with ``analyzer='auto'`` reads these texts as character n-grams (unspaced scripts)."""
    return main_language(texts) in UNSPACED_LANGUAGES


@dataclass
class ScratchConfig:
    analyzer: str = field(default="auto", metadata={
        "help": "'word', 'char_wb', or 'auto' (character n-grams for Japanese/Chinese/Korean, words otherwise)"})
    ngram_max: int = field(default=2, metadata={"help": "longest n-gram (words) ; characters use ngram_max + 2"})
    min_df: int | float = field(default=1, metadata={
        "help": "ignore terms in fewer documents than this (a share of the documents when below 1)"})
    C: float = field(default=10.0, metadata={"help": "inverse L2 strength of the logistic regression"})
    class_weight: str | None = field(default="balanced", metadata={"help": "'balanced' or None"})
    image_size: int = field(default=64, metadata={"help": "images: side of the square the CNN sees, in pixels"})
    width: int = field(default=16, metadata={"help": "images: channels of the CNN's first block (x2, x4 after)"})
    epochs: int = field(default=20, metadata={"help": "images: epochs of CNN training (raised to min_steps)"})
    min_steps: int = field(default=100, metadata={"help": "images: at least this many optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "images: examples per optimizer step"})
    learning_rate: float = field(default=3e-3, metadata={"help": "images: peak (one-cycle) learning rate"})
    n_mfcc: int = field(default=20, metadata={"help": "audio: MFCCs per frame (features: their mean and std)"})

    def __post_init__(self):
        if self.analyzer not in ("auto", "word", "char_wb", "char"):
            raise ConfigError(f"option analyzer must be auto, word, char_wb or char, got {self.analyzer!r}",
                              hint="--set analyzer=auto")


@register_strategy
class TfidfScratch(Strategy):
    """TF-IDF features learned from the labeled texts alone + logistic regression."""

    name = "scratch"
    Config = ScratchConfig
    uses_backbone = False

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
        from ..data.media import infer_modality

        self.modality_ = infer_modality(texts)
        if self.modality_ == "image":
            from ._scratch_media import fit_cnn

            self.media_tensors_, self.media_meta_ = fit_cnn(texts, y, len(self.classes_), cfg, self.seed)
            return
        if self.modality_ == "audio":
            from ._scratch_media import mfcc_stats

            X = mfcc_stats(texts, cfg.n_mfcc)
            self.mfcc_mean_, self.mfcc_std_ = X.mean(0), np.maximum(X.std(0), 1e-6)
            self.coef_, self.intercept_, _ = fit_logistic((X - self.mfcc_mean_) / self.mfcc_std_, y, seed=self.seed,
                                                          C=1.0, class_weight=cfg.class_weight)
            return
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

    def _predict_proba(self, texts) -> np.ndarray:
        modality = getattr(self, "modality_", "text")
        if modality == "image":
            from ._scratch_media import cnn_proba

            return cnn_proba(texts, self.media_tensors_, self.media_meta_, len(self.classes_))
        if modality == "audio":
            from ._scratch_media import mfcc_stats

            X = (mfcc_stats(texts, self.config_.n_mfcc) - self.mfcc_mean_) / self.mfcc_std_
            return logistic_proba(X, self.coef_, self.intercept_)
        return logistic_proba(self._tfidf(texts), self.coef_, self.intercept_)

    def get_state(self):
        modality = getattr(self, "modality_", "text")
        if modality == "image":
            return dict(self.media_tensors_), dict(self.media_meta_)
        if modality == "audio":
            return ({"mfcc.mean": self.mfcc_mean_, "mfcc.std": self.mfcc_std_, "head.coef": self.coef_,
                     "head.intercept": self.intercept_}, {"modality": "audio"})
        return ({"idf": self.idf_, "head.coef": self.coef_, "head.intercept": self.intercept_},
                {"vectorizer": self.vectorizer_, "vocabulary": self.vocabulary_})

    def _set_state(self, tensors, meta) -> None:
        self.modality_ = meta.get("modality", "text")
        if self.modality_ == "image":
            self.media_tensors_, self.media_meta_ = dict(tensors), dict(meta)
            return
        if self.modality_ == "audio":
            self.mfcc_mean_, self.mfcc_std_ = tensors["mfcc.mean"], tensors["mfcc.std"]
            self.coef_, self.intercept_ = tensors["head.coef"], tensors["head.intercept"]
            return
        self.idf_, self.coef_, self.intercept_ = tensors["idf"], tensors["head.coef"], tensors["head.intercept"]
        self.vectorizer_ = meta["vectorizer"]
        self.vocabulary_ = meta["vocabulary"]
