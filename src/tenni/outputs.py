"""What ``tenni predict`` writes: one row per input, as CSV (safe to open in a spreadsheet) or JSONL.

A spreadsheet runs a cell that begins with ``=``, ``+``, ``-`` or ``@`` (also after a tab or carriage return) as a
formula, so a text or label a stranger wrote could run one on the reader's machine. CSV cells and headers that
begin that way get a leading ``'`` (OWASP's rule for CSV injection), which spreadsheets show as text;
``raw=True`` (``--raw-csv``) writes them as they are, for programs that read the file. JSONL is never changed.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value):
    """``value`` with a leading ``'`` when a spreadsheet would read it as a formula; numbers are left alone."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def prediction_rows(model, dataset, kept: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """One row per input: the kept input columns (by source), the text (or file path), the prediction and, for a
    classifier, its confidence and one probability per label; for an anomaly model, the score and threshold."""
    key = "text" if dataset.modality == "text" else "path"
    shown = dataset.inputs if key == "text" else dataset.sources
    rows = []
    if getattr(model, "task", "classify") == "anomaly":
        flags, scores = model.flag(dataset.inputs)
        threshold = round(float(model.estimator.threshold_), 6)
        for item, flag, score in zip(shown, flags, scores):
            rows.append({key: item, "prediction": flag, "score": round(float(score), 6), "threshold": threshold})
    else:
        labels = model.labels
        proba = model.predict_proba(dataset.inputs)
        for item, p in zip(shown, proba):
            best = int(p.argmax())
            row = {key: item, "prediction": labels[best], "confidence": round(float(p[best]), 6)}
            row.update({f"p_{lab}": round(float(v), 6) for lab, v in zip(labels, p)})
            rows.append(row)
    if kept is not None:
        rows = [{**kept.get(source, {}), **row} for source, row in zip(dataset.sources, rows)]
    return rows


def write_predictions(rows: list[dict], path: str | Path | None, fmt: str | None = None, *, raw: bool = False,
                      stream=None) -> None:
    """Write ``rows`` to ``path`` atomically (``None``: to ``stream``, standard output by default).

    ``fmt`` is ``csv`` or ``jsonl``; by default the file's extension says (``.jsonl``/``.ndjson``: JSONL), and CSV
    otherwise. ``raw``: CSV cells as they are, without the spreadsheet escaping.
    """
    if fmt is None:
        fmt = "jsonl" if path is not None and Path(path).suffix.lower() in (".jsonl", ".ndjson") else "csv"
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif fmt == "csv":
        fields = list(rows[0]) if rows else ["text", "prediction"]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        cell = (lambda v: v) if raw else escape_cell
        writer.writerow([cell(f) for f in fields])
        for r in rows:
            writer.writerow([cell(r.get(f, "")) for f in fields])
        text = buffer.getvalue()
    else:
        raise ValueError(f"unknown format {fmt!r}: csv or jsonl")
    if path is None:
        (stream or sys.stdout).write(text)
        return
    from ._paths import atomic_write_bytes

    atomic_write_bytes(Path(path), text.encode("utf-8"))


def looks_like_predictions(head: bytes) -> bool:
    """Whether the start of a file is predict's own output (a CSV header or JSONL row with a ``prediction`` field):
    the only existing file ``predict -o`` replaces."""
    text = head.decode("utf-8", errors="replace")
    first = text.splitlines()[0] if text.splitlines() else ""
    try:
        row = json.loads(first)
        if isinstance(row, dict):
            return "prediction" in row
    except ValueError:
        pass
    try:
        return "prediction" in next(csv.reader([first]))
    except (csv.Error, StopIteration):
        return False
