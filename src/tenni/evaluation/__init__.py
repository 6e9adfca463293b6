"""Measuring models: metrics, the evaluation protocol (hold-out, test file, repeated CV), learning curves, and the
results as the terminal, the HTML report and the model card show them."""

from .metrics import classification_metrics

__all__ = ["classification_metrics"]
