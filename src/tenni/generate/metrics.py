"""Scores for text outputs, as fractions in [0, 1]: ROUGE-L F1 (rouge-score, Porter stemming), exact match
(after trimming, collapsing whitespace and ignoring case) and chrF (sacrebleu, corpus level)."""

from __future__ import annotations

import re

from ..errors import ConfigError


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ConfigError("ROUGE-L needs the rouge-score package", hint="pip install rouge-score") from None
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]


def chrf(predictions: list[str], references: list[str]) -> float:
    try:
        from sacrebleu.metrics import CHRF
    except ImportError:
        raise ConfigError("chrF needs the sacrebleu package", hint="pip install sacrebleu") from None
    return CHRF().corpus_score(predictions, [references]).score / 100.0


def text_metrics(predictions: list[str], references: list[str]) -> dict:
    """``rougeL``, ``exact_match``, ``chrf`` (fractions) and ``n``, plus the per-example ROUGE-L list."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if not references:
        return {"rougeL": None, "exact_match": None, "chrf": None, "n": 0, "per_example": []}
    rouge = rouge_l(predictions, references)
    exact = [float(normalise(p) == normalise(r)) for p, r in zip(predictions, references)]
    return {"rougeL": sum(rouge) / len(rouge), "exact_match": sum(exact) / len(exact),
            "chrf": chrf(predictions, references), "n": len(references), "per_example": rouge}
