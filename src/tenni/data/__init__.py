"""Reading user data: files and folders become a :class:`Dataset`."""

from .dataset import Dataset
from .readers import as_dataset, as_texts, is_missing, read_dataset, read_pool

__all__ = ["Dataset", "as_dataset", "as_texts", "is_missing", "read_dataset", "read_pool"]
