"""Judge before training: transferability scores, domain-gap signals and a recommendation."""

from .assess import Assessment, BackboneReport, assess
from .scores import h_score, logme

__all__ = ["Assessment", "BackboneReport", "assess", "h_score", "logme"]
