"""Judge before training: transferability scores, domain-gap signals and a recommendation."""

from .assess import Assessment, BackboneReport, assess
from .check import LabelCheck, check_labels
from .scores import h_score, logme

__all__ = ["Assessment", "BackboneReport", "LabelCheck", "assess", "check_labels", "h_score", "logme"]
