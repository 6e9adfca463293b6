"""Which columns of a table hold what, and the few rules every reader applies to a cell."""

from __future__ import annotations

import unicodedata

from ..errors import DataError

TEXT_COLUMNS = ("text", "texts", "sentence", "content", "body", "message", "review", "document", "utterance",
                "question", "input", "query", "comment", "description", "title")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target", "intent", "y", "tag", "topic", "sentiment")


def is_missing(value) -> bool:
    """None, NaN (any float type), pandas' NA and NaT."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def normalise_label(label: str) -> str:
    """One spelling per class: NFKC width folding, and "1.0" (a float column) read as "1"."""
    label = unicodedata.normalize("NFKC", label).strip()  # full-width "Ａ１" and "A1" are the same class
    # "1.0" from a float column and "1" mean the same class
    if label.endswith(".0") and label[:-2].lstrip("-").isdigit():
        return label[:-2]
    return label


def pick_column(columns, requested, candidates, what, path, *, required, flag: str | None = None,
                shown: list | None = None):
    """The column ``requested`` (refused when absent), else the first of ``candidates`` present (any case).

    ``flag`` is the option that names the column (default ``--WHAT-col``); ``shown`` the columns an error lists
    (default ``columns``)."""
    flag = flag or f"--{what}-col"
    listing = ", ".join(map(str, shown if shown is not None else columns))
    if requested is not None:
        if requested in columns:
            return requested
        raise DataError(f"no {what} column '{requested}'; columns found: {listing}", path=path,
                        hint=f"pass {flag} with one of those")
    by_lower = {str(c).lower(): c for c in columns}
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    if not required:
        return None
    raise DataError(f"no {what} column found (looked for {', '.join(candidates[:6])}…); columns found: {listing}",
                    path=path, hint=f"pass {flag} NAME, or name the column '{candidates[0]}'")
