"""Evaluation: metrics now; repeated CV, learning curves and reports build on it."""

from .metrics import classification_metrics

__all__ = ["classification_metrics"]
