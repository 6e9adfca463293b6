"""The one object data becomes: inputs, labels, and where each item came from."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Labeled (or unlabeled) items of one modality.

    ``inputs`` are texts for text data (file paths for images and audio); ``labels`` are strings or ``None`` for
    unlabeled data; ``sources`` say where each item came from (``"file.csv:12"``) so that errors and reports can
    point at it.
    """

    inputs: list[str]
    labels: list[str] | None = None
    modality: str = "text"
    sources: list[str] = field(default_factory=list)
    path: str | None = None

    def __post_init__(self):
        if self.labels is not None and len(self.labels) != len(self.inputs):
            raise DataError(f"{len(self.inputs)} inputs but {len(self.labels)} labels", path=self.path)
        if not self.sources:
            origin = self.path or "item"
            object.__setattr__(self, "sources", [f"{origin}#{i}" for i in range(len(self.inputs))])

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def classes(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted(set(self.labels or []))

    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels or []).items()))

    def subset(self, indices) -> Dataset:
        idx = [int(i) for i in indices]
        return replace(
            self,
            inputs=[self.inputs[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            sources=[self.sources[i] for i in idx],
        )

    def require_labels(self, min_classes: int = 2) -> None:
        if self.labels is None:
            raise DataError("the data has no labels", path=self.path, hint="add a label column")
        counts = self.class_counts()
        if len(counts) < min_classes:
            only = next(iter(counts), None)
            raise DataError(
                f"only one class ('{only}') in the labels; a classifier needs at least {min_classes}",
                path=self.path, hint="add examples of the other classes, or check --label-col")

    def require_per_class(self, minimum: int, purpose: str) -> None:
        """Raise if any class has fewer than ``minimum`` examples (needed for a split or CV)."""
        small = {c: n for c, n in self.class_counts().items() if n < minimum}
        if small:
            listing = ", ".join(f"'{c}' has {n}" for c, n in list(small.items())[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            raise DataError(
                f"{purpose} needs at least {minimum} examples per class, but {listing}{more}",
                path=self.path, hint="add examples to those classes, pass a separate --test file, or drop them")

    def require_modality(self, modality: str, what: str) -> None:
        """Refuse data of another kind than ``modality`` (texts where images are expected, images for audio…)."""
        if self.modality != modality:
            raise DataError(f"{what} is {modality}, but this data holds {self.modality}", path=self.path,
                            hint=f"pass {modality} data here (same kind as the training data)")

    def overlap(self, other: Dataset) -> int:
        """How many of ``other``'s items also occur, exactly, in this Dataset (same text, or same file content for
        images and audio): test items seen in training make a score meaningless."""
        if self.modality != "text":
            from .._paths import file_key

            def key(item):
                try:
                    return file_key(item)
                except OSError:
                    return item
        else:
            def key(item):
                return item.strip()
        seen = {key(x) for x in self.inputs}
        return sum(1 for x in other.inputs if key(x) in seen)

    def train_test_split(self, test_size: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """A stratified hold-out split; every class keeps at least one example on each side."""
        from sklearn.model_selection import train_test_split

        self.require_labels()
        self.require_per_class(2, "a stratified train/test split")
        n_classes = len(self.classes)
        n_test = max(int(round(test_size * len(self))), n_classes)
        if len(self) - n_test < n_classes:
            raise DataError(f"{len(self)} examples are too few to hold out a test set for {n_classes} classes",
                            path=self.path, hint="add data or pass a separate --test file")
        train_idx, test_idx = train_test_split(
            np.arange(len(self)), test_size=n_test, stratify=self.labels, random_state=seed)
        return self.subset(sorted(train_idx)), self.subset(sorted(test_idx))

    def sample_per_class(self, n: int, seed: int = 0) -> Dataset:
        """At most ``n`` examples of each class, drawn without replacement (few-shot sampling)."""
        rng = np.random.default_rng(seed)
        labels = np.asarray(self.labels)
        chosen: list[int] = []
        for cls in self.classes:
            idx = np.flatnonzero(labels == cls)
            chosen.extend(rng.choice(idx, size=min(n, len(idx)), replace=False).tolist())
        return self.subset(sorted(chosen))
