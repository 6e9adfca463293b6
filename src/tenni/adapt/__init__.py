"""Bridge a domain gap: continued (domain- or task-adaptive) pretraining on the user's unlabeled texts."""

from .continued import AdaptConfig, adapt, read_corpus

__all__ = ["AdaptConfig", "adapt", "read_corpus"]
