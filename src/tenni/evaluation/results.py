"""The measurements a fit ends with, read one way and shown four ways.

``metrics`` (what ``fit`` stores in the model's manifest) holds ``results`` (one row per strategy: accuracy,
macro-F1, seconds; an interval under cross-validation), ``protocol`` (how they were measured), ``test`` (per-class
metrics, confusion matrix) and ``transfer_gain``. The terminal table, the HTML report, the model card and
``--json`` all take their words and numbers from the functions here, so they never disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Protocol:
    """How a model was measured: ``kind`` is ``cv`` (repeated stratified cross-validation), ``holdout`` (a stratified
    share held out), ``test`` (a separate test set) or ``none``."""

    kind: str
    folds: int | None = None
    repeats: int | None = None
    share: float | None = None

    def describe(self) -> str:
        if self.kind == "cv":
            return f"repeated stratified CV ({self.folds} folds x {self.repeats})"
        if self.kind == "holdout":
            return f"stratified {self.share:.0%} hold-out"
        if self.kind == "test":
            return "test file"
        return "none (no test data)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, metrics: dict) -> Protocol:
        """The protocol of stored metrics (models saved before it was stored: read from their description)."""
        stored = (metrics or {}).get("protocol")
        if isinstance(stored, dict) and stored.get("kind"):
            return cls(stored["kind"], stored.get("folds"), stored.get("repeats"), stored.get("share"))
        text = str((metrics or {}).get("evaluation", ""))
        if text.startswith("repeated stratified CV"):
            return cls("cv")
        if "hold-out" in text:
            return cls("holdout")
        if text in ("test file", "test data"):
            return cls("test")
        return cls("none")


def scratch_backbone(row: dict) -> str:
    return row.get("backbone") or "(none: from scratch)"


def result_cells(row: dict) -> dict[str, str]:
    """One results row as the words every medium shows (strategy, backbone, accuracy, macro-F1, seconds)."""
    accuracy = f"{row['accuracy']:.3f}"
    if row.get("accuracy_low") is not None:
        accuracy += f" [{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}]"
    strategy = row["strategy"] + (f" (AUROC {row['auroc']:.3f})" if row.get("auroc") is not None else "")
    return {"strategy": strategy, "backbone": scratch_backbone(row), "accuracy": accuracy,
            "macro_f1": f"{row['macro_f1']:.3f}",
            "seconds": "-" if row.get("seconds") is None else f"{row['seconds']:.1f}"}


RESULT_COLUMNS = (("strategy", "strategy"), ("backbone", "backbone"), ("accuracy", "accuracy"),
                  ("macro_f1", "macro-F1"), ("seconds", "seconds"))
"""(key, heading) of the results table, in order."""


def results_title(metrics: dict, summary: dict) -> str:
    """What the results were measured on, in one line."""
    protocol = Protocol.of(metrics)
    source = summary.get("test_source") or protocol.describe()
    if protocol.kind == "cv":
        return f"{summary.get('train_size')} examples, {source}; 95% intervals"
    return f"{summary.get('train_size')} training examples, evaluated on {summary.get('test_size')} ({source})"


def gain_sentence(metrics: dict) -> str | None:
    """Transfer against the scratch baseline, in points (with the paired interval under cross-validation)."""
    gain = (metrics or {}).get("transfer_gain")
    if not gain:
        return None
    word = "gain" if gain["accuracy"] >= 0 else "LOSS"
    interval = (f" [{100 * gain['accuracy_low']:+.1f}, {100 * gain['accuracy_high']:+.1f}], paired over folds"
                if gain.get("accuracy_low") is not None else "")
    return (f"transfer {word} over scratch: {100 * gain['accuracy']:+.1f} accuracy points{interval}, "
            f"{100 * gain['macro_f1']:+.1f} macro-F1 points")
