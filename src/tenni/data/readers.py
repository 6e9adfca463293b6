"""Read user files into a :class:`Dataset`, with errors that point at the file, row and column.

Supported: CSV, TSV, JSONL (also ``.ndjson``), Parquet, a plain ``.txt`` file (one unlabeled text per line, for
prediction), and a folder with one sub-folder of ``.txt`` files per class. Images and audio (see :mod:`.media`):
a folder with one sub-folder per class (optionally under ``train/``), or a table whose path column names the files.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import DataError
from .columns import LABEL_COLUMNS, TEXT_COLUMNS, is_missing, normalise_label, pick_column
from .dataset import Dataset

TABLE_SUFFIXES = {".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet", ".pq", ".txt"}
_ENCODING_HINT = ("pass --encoding (e.g. cp1252 or latin-1 for Western Excel files, cp932 for Japanese) or re-save "
                  "the file as UTF-8")


def read_dataset(path: str | Path, *, text_col: str | None = None, label_col: str | None = None,
                 labeled: bool = True, encoding: str = "auto", skip_bad_files: bool = False) -> Dataset:
    """Read ``path`` into a Dataset; ``labeled=False`` makes the label column optional (for prediction).

    ``skip_bad_files``: leave out corrupt, empty or silent image/audio files (with a warning) instead of stopping.
    """
    from .media import IMAGE_SUFFIXES, MEDIA_SUFFIXES, drop_bad_files, folder_modality, media_table, read_media_folder

    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", path=path, hint="check the path")
    if path.is_dir():
        modality = folder_modality(path)
        if modality is not None:
            return read_media_folder(path, modality, labeled=labeled, skip_bad_files=skip_bad_files)
        return _read_folder(path, encoding=encoding, labeled=labeled)
    suffix = path.suffix.lower()
    if suffix in MEDIA_SUFFIXES:  # one image or audio file (to predict on)
        modality = "image" if suffix in IMAGE_SUFFIXES else "audio"
        inputs, _, sources = drop_bad_files([str(path.resolve())], None, [str(path)], modality,
                                            skip_bad_files=False, where=path)
        return Dataset(inputs=inputs, labels=None, modality=modality, sources=sources, path=str(path))
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"unknown file type '{suffix or '(none)'}'", path=path,
                        hint="use .csv, .tsv, .jsonl, .parquet, .txt, an image or audio file, or a folder of "
                             "class sub-folders")
    if path.stat().st_size == 0:
        raise DataError("the file is empty", path=path, hint="check that the export finished")
    if suffix == ".parquet" or suffix == ".pq":
        rows, columns = _read_parquet(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows, columns = _read_jsonl(path, encoding)
    elif suffix == ".txt":
        text = _decode(path, encoding)
        lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)]
        rows = [(i, {"text": line}) for i, line in lines if line]
        columns = ["text"]
    else:
        rows, columns = _read_delimited(path, encoding, delimiter="\t" if suffix in (".tsv", ".tab") else ",")
    if not rows:
        what = "no non-blank lines" if suffix in (".txt", ".jsonl", ".ndjson") else "a header but no rows"
        raise DataError(f"the file has {what}", path=path, hint="add data")
    if suffix == ".txt" and labeled and label_col is None:
        raise DataError("a .txt file holds unlabeled texts (one per line), but labels are needed here", path=path,
                        hint="use a CSV/TSV/JSONL with a label column, or a folder with one sub-folder per class")
    if text_col is None:
        media = media_table(path, rows, columns, label_col, labeled=labeled, skip_bad_files=skip_bad_files)
        if media is not None:
            return media
    tcol = pick_column(columns, text_col, TEXT_COLUMNS, "text", path, required=True)
    lcol = pick_column(columns, label_col, LABEL_COLUMNS, "label", path, required=labeled)
    if tcol == lcol:
        raise DataError(f"the same column '{tcol}' was picked for text and label", path=path,
                        hint="pass --text-col and --label-col")
    inputs, labels, sources = [], [], []
    for row_no, record in rows:
        value = record.get(tcol)
        for column in (tcol, lcol):
            if isinstance(record.get(column), (dict, list)):
                raise DataError(f"a JSON {type(record[column]).__name__} where a "
                                f"{'text' if column == tcol else 'label'} should be", path=path, row=row_no,
                                column=column, hint="give a string (or a number) in that field")
        text = "" if value is None else str(value).strip()
        if not text:
            raise DataError("empty text", path=path, row=row_no, column=tcol,
                            hint="fill it in or delete the row")
        inputs.append(text)
        sources.append(f"{path}:{row_no}")
        if lcol is not None:
            label = record.get(lcol)
            label = "" if label is None or (isinstance(label, float) and label != label) else str(label).strip()
            if not label:
                if labeled:
                    raise DataError("missing label", path=path, row=row_no, column=lcol,
                                    hint="fill it in or delete the row")
                labels.append(None)
            else:
                labels.append(normalise_label(label))
    has_labels = lcol is not None and all(lab is not None for lab in labels)
    return Dataset(inputs=inputs, labels=labels if has_labels else None, modality="text", sources=sources,
                   path=str(path))


def _cell(value) -> str:
    """A text or label from memory: missing values (``is_missing``) are empty, everything else its string form."""
    if is_missing(value):
        return ""
    return str(value).strip()


AUTO_ENCODINGS = ("utf-8", "cp932")


def _decode(path: Path, encoding: str) -> str:
    """Decoded text of ``path`` (see ``_decode_bytes``); a NUL character is refused with its line and column: it
    means binary data, or UTF-16 without a byte-order mark read as UTF-8, never text someone wrote."""
    text = _decode_bytes(path, encoding)
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        column = nul - (text.rfind("\n", 0, nul) + 1) + 1
        raise DataError(f"a NUL character at line {line}, column {column}: binary data, or UTF-16 without a "
                        "byte-order mark", path=path, hint="save the file as UTF-8 text, or pass --encoding utf-16")
    return text


def _decode_bytes(path: Path, encoding: str) -> str:
    """Decode a file; ``auto`` reads UTF-8 (with or without BOM), UTF-16 with BOM, and Shift_JIS/CP932 (Excel) when
    the result is clearly Japanese (see ``_looks_japanese``): a Western file (cp1252, latin-1) also decodes as CP932,
    into nonsense, so anything less is refused with the encodings tried. What was chosen, when not UTF-8, is said."""
    data = path.read_bytes()
    if encoding.lower() != "auto":
        return _decode_as(path, data, encoding)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        from .._logging import info

        info(f"{path}: read as UTF-16 (it starts with a UTF-16 byte-order mark)")
        return _decode_as(path, data, "utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        first_error = err
    try:
        text = data.decode("cp932")
    except UnicodeDecodeError:
        text = None
    if text is not None and _looks_japanese(text):
        from .._logging import info

        info(f"{path}: not UTF-8; read as Shift_JIS/CP932 (Japanese); pass --encoding if that is wrong")
        return text
    line, col, bad = _locate(data, first_error.start)
    western = ""
    try:
        data.decode("cp1252")
        western = "; it reads as Western (cp1252/latin-1): pass --encoding cp1252"
    except UnicodeDecodeError:
        pass
    raise DataError(f"cannot decode byte 0x{bad} at line {line}, column {col}: not UTF-8, and not clearly Japanese "
                    f"Shift_JIS/CP932 (encodings tried: {', '.join(AUTO_ENCODINGS)}){western}", path=path,
                    hint=_ENCODING_HINT) from None


def _looks_japanese(text: str) -> bool:
    """Strong evidence that CP932 was right: the text holds kana (every Japanese sentence does; Western bytes
    decoded as CP932 come out as stray kanji and half-width katakana), and at least 90% of its non-ASCII
    characters are Japanese. Half-width katakana count only beside full-width kana: "£" (0xA3 in cp1252) decodes
    as "｣"; a file of kanji alone is refused, with ``--encoding cp932`` in the message."""
    non_ascii = [ch for ch in text if ord(ch) > 127]
    if not non_ascii:
        return True
    kana = sum(1 for ch in non_ascii if "\u3041" <= ch <= "\u30ff")
    if kana == 0:
        return False
    japanese = sum(1 for ch in non_ascii if "\u3000" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff"
                   or "\uff01" <= ch <= "\uff5e" or "\uff61" <= ch <= "\uff9f" or ch in "\u00a5\u203e")
    return japanese / len(non_ascii) >= 0.9


def _locate(data: bytes, offset: int) -> tuple[int, int, str]:
    line = data[:offset].count(b"\n") + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col, data[offset: offset + 1].hex()


def _decode_as(path: Path, data: bytes, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line, col, bad = _locate(data, err.start)
        raise DataError(f"cannot decode byte 0x{bad} at line {line}, column {col} as {encoding}", path=path,
                        hint=_ENCODING_HINT) from None
    except LookupError:
        raise DataError(f"unknown encoding '{encoding}'", path=path, hint="use e.g. utf-8, cp932, latin-1") from None
    return text[1:] if text.startswith("\ufeff") else text


_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def _read_delimited(path: Path, encoding: str, delimiter: str):
    text = _decode(path, encoding)
    first = re.sub(r'"[^"]*"', "", text.split("\n", 1)[0])  # separators inside quoted names do not count
    if delimiter == "," and "," not in first:  # a .csv saved with another separator (e.g. Excel in many locales)
        found = max(_OTHER_DELIMITERS, key=first.count)
        if first.count(found):
            from .._logging import info

            info(f"{path}: no commas in the header, so it is read as {_OTHER_DELIMITERS[found]}-separated")
            delimiter = found
    with _field_size_limit(len(text) + 1):  # a long text in one cell is valid CSV, not "malformed"
        return _parse_delimited(path, text, delimiter)


@contextmanager
def _field_size_limit(size: int):
    """csv's field-size limit (131,072 characters) raised to ``size`` inside the block, then restored."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, min(size, sys.maxsize)))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _parse_delimited(path: Path, text: str, delimiter: str):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("the file is empty", path=path) from None
    except csv.Error as err:
        raise DataError(f"malformed header: {err}", path=path, row=1) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError("the first line (header) is empty", path=path, row=1,
                        hint="the first line must name the columns, e.g. text,label")
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        raise DataError(f"the header names column(s) {', '.join(repr(h) for h in twice)} more than once", path=path,
                        row=1, hint="give every column its own name")
    rows = []
    prev_line = last_end = reader.line_num
    try:
        for record in reader:
            start_line = prev_line + 1
            prev_line = reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            last_end = prev_line
            if len(record) > len(header):
                raise DataError(f"{len(record)} fields but the header has {len(header)}", path=path,
                                row=start_line, hint="quote texts that contain the delimiter")
            rows.append((start_line, dict(zip(header, record))))
    except csv.Error as err:
        raise DataError(f"malformed {('TSV' if delimiter == chr(9) else 'CSV')}: {err}", path=path,
                        row=reader.line_num, hint="check the quoting on that line") from None
    last = rows[-1][0] if rows else 0
    if last and last_end > last and _odd_quotes(text, last, last_end) and not text.rstrip().endswith('"'):
        # the last record ran over several lines with a quote left open: it swallowed the rest of the file
        raise DataError(f'a quote (") opened on this line is never closed, so lines {last}-{last_end} '
                        "were read as one record", path=path, row=last,
                        hint='close the quote; a quote inside a quoted text is written twice ("")')
    return rows, header


def _odd_quotes(text: str, first: int, last: int) -> bool:
    """Whether lines ``first``..``last`` (1-based, as the csv reader counts them) hold an odd number of quotes."""
    lines = io.StringIO(text, newline="").readlines()
    return "".join(lines[first - 1:last]).count('"') % 2 == 1


def jsonl_records(lines, first: int = 1):
    """(line number, record, why not) for each non-blank line of a JSONL text: the record is a dict, or None with
    the reason (invalid JSON, not an object) — the readers refuse such a line, streaming jobs reject it."""
    for line_no, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield line_no, None, f"invalid JSON at column {err.colno}: {err.msg}"
            continue
        if not isinstance(record, dict):
            yield line_no, None, "the line is not a JSON object"
            continue
        yield line_no, record, None


def record_columns(records) -> list[str]:
    """Every key of the records, in the order they first appear."""
    return list(dict.fromkeys(key for record in records for key in record))


def _read_jsonl(path: Path, encoding: str):
    rows = []
    for line_no, record, problem in jsonl_records(_decode(path, encoding).splitlines()):
        if record is None:
            hint = ("each line must be one JSON object" if problem.startswith("invalid") else
                    'write {"text": ..., "label": ...} on each line')
            raise DataError(problem, path=path, row=line_no, hint=hint)
        rows.append((line_no, record))
    return rows, record_columns(r for _, r in rows)


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for damaged files
        raise DataError(f"cannot read Parquet: {err}", path=path, hint="check that the file is complete") from None
    columns = list(table.column_names)
    records = table.to_pylist()
    # Parquet has no lines: "row" is the 1-based record number, header excluded
    return [(i, rec) for i, rec in enumerate(records, start=1)], columns


def _read_folder(root: Path, *, encoding: str, labeled: bool) -> Dataset:
    from .media import split_folder

    train, test = split_folder(root)
    if train != root:  # a dataset folder with train/ (and test/) levels: its classes are under train/
        from .._logging import info

        if test is not None:
            info(f"{root}: reading the examples under train/ (test/ is what fit and evaluate measure on)")
        root = train
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    inputs, labels, sources = [], [], []
    if not class_dirs:
        files = sorted(f for f in root.glob("*.txt") if f.is_file())
        if not files and not labeled:
            raise DataError("the folder holds nothing to predict on: no .txt, image or audio files", path=root,
                            hint="pass a folder of .txt, image or audio files, or a table (CSV, JSONL) of texts")
        if not files or labeled:
            raise DataError("the folder has no class sub-folders", path=root,
                            hint="put each class's .txt files in a sub-folder named after the class")
        for f in files:
            inputs.append(read_text_file(f, encoding))
            sources.append(str(f))
        return Dataset(inputs=inputs, labels=None, sources=sources, path=str(root))
    empty = []
    for cls_dir in class_dirs:
        files = sorted(f for f in cls_dir.rglob("*.txt") if f.is_file())
        if not files:
            empty.append(cls_dir.name)
        for f in files:
            inputs.append(read_text_file(f, encoding))
            labels.append(cls_dir.name)
            sources.append(str(f))
    if not inputs:
        raise DataError("no .txt files in the class sub-folders", path=root,
                        hint="each class folder should hold one .txt file per example")
    from .._logging import warn

    if empty:
        warn(f"{root}: class folder(s) without .txt files left out: {', '.join(empty)}")
    others = sum(1 for d in class_dirs for f in d.rglob("*")
                 if f.is_file() and f.suffix.lower() != ".txt" and not f.name.startswith("."))
    if others:
        warn(f"{root}: {others} file(s) that are not .txt left out (a text dataset reads .txt files only)")
    return Dataset(inputs=inputs, labels=labels, sources=sources, path=str(root))


def read_text_file(path: Path, encoding: str = "auto", *, allow_blank: bool = False) -> str:
    """The stripped text of one ``.txt`` file, decoded as the readers decode tables; an empty or blank file is
    refused (or, with ``allow_blank``, read as "")."""
    if path.stat().st_size == 0 and not allow_blank:
        raise DataError("the file is empty", path=path, hint="delete it or add its text")
    text = _decode(path, encoding).strip()
    if not text and not allow_blank:
        raise DataError("the file holds only whitespace", path=path, hint="delete it or add its text")
    return text


def as_dataset(data, *, text_col=None, label_col=None, labeled=True, encoding="auto",
               skip_bad_files: bool = False) -> Dataset:
    """Accept a path, a Dataset, a ``(texts, labels)`` pair, or a pandas DataFrame.

    A pair or list whose items are all paths to image (or audio) files becomes an image (or audio) Dataset.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, Path)):
        return read_dataset(data, text_col=text_col, label_col=label_col, labeled=labeled, encoding=encoding,
                            skip_bad_files=skip_bad_files)
    if isinstance(data, tuple) and len(data) == 2:
        texts, labels = data
        texts = [_cell(t) for t in texts]
        if not texts:
            raise DataError("no data: the list of inputs is empty", hint="pass at least a few labeled examples")
        for i, t in enumerate(texts):
            if not t:
                raise DataError(f"item {i}: empty or missing text", hint="remove empty or NaN inputs")
        if labels is not None:
            labels = [_cell(y) for y in labels]
            for i, y in enumerate(labels):
                if not y:
                    raise DataError(f"item {i}: missing label", hint="remove unlabeled items or fill their label")
            labels = [normalise_label(y) for y in labels]
        from .media import drop_bad_files, infer_modality

        sources = [f"item {i}" for i in range(len(texts))]
        modality = infer_modality(texts)
        if modality != "text":
            texts = [str(Path(t).resolve()) for t in texts]
            texts, labels, sources = drop_bad_files(texts, labels, sources, modality,
                                                    skip_bad_files=skip_bad_files, where="in-memory data")
        return Dataset(inputs=texts, labels=labels, modality=modality, sources=sources)
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        columns = list(data.columns)
        tcol = pick_column(columns, text_col, TEXT_COLUMNS, "text", "DataFrame", required=True)
        lcol = pick_column(columns, label_col, LABEL_COLUMNS, "label", "DataFrame", required=labeled)
        labels = None if lcol is None else list(data[lcol])
        if not labeled and labels is not None and not all(_cell(y) for y in labels):
            labels = None  # an unlabeled table's partly filled label column: not its labels
        return as_dataset((list(data[tcol]), labels), skip_bad_files=skip_bad_files)
    if isinstance(data, (list,)) and all(isinstance(t, (str, Path)) for t in data):
        return as_dataset(([str(t) for t in data], None), skip_bad_files=skip_bad_files)
    raise DataError(f"cannot use data of type {type(data).__name__}",
                    hint="pass a file path, a folder, a (texts, labels) pair, or a DataFrame")


def read_pool(data, read: dict | None = None) -> Dataset:
    """An unlabeled pool read with the labeled data's options, except its label column: a pool need not have
    one (a label column it does have is read, and hidden from training by the caller)."""
    return as_dataset(data, labeled=False, **{k: v for k, v in (read or {}).items() if k != "label_col"})


def as_texts(inputs, *, text_col: str | None = None) -> list[str]:
    """The inputs of ``predict`` as a list of strings: one string, a list/tuple/Series/1-D array of them, or a
    DataFrame (its text column). Missing values and nested objects are refused with their position, never turned
    into the strings "None" or "nan"; numbers are read as their text, as ``fit`` reads them."""
    import numbers

    if isinstance(inputs, (str, Path)):
        return [str(inputs)]
    if hasattr(inputs, "columns") and hasattr(inputs, "to_dict"):  # a DataFrame: its text column, not its names
        columns = list(inputs.columns)
        tcol = columns[0] if len(columns) == 1 and text_col is None else pick_column(
            columns, text_col, TEXT_COLUMNS, "text", "DataFrame", required=True)
        inputs = list(inputs[tcol])
    elif hasattr(inputs, "ndim") and getattr(inputs, "ndim", 1) != 1:
        shape = tuple(inputs.shape)
        if len(shape) == 2 and shape[1] == 1:
            inputs = list(np.asarray(inputs, dtype=object).ravel())
        else:
            raise DataError(f"an array of shape {shape}: expected one text per item",
                            hint="pass a list of strings, or a 1-D array / one column")
    if inputs is None or isinstance(inputs, (numbers.Number, bytes, dict)) or not hasattr(inputs, "__iter__"):
        raise DataError(f"cannot predict on {type(inputs).__name__}", hint="pass a string or a list of strings")
    texts = []
    for i, item in enumerate(inputs):
        if isinstance(item, (str, Path)):
            texts.append(str(item))
        elif isinstance(item, numbers.Number) and not isinstance(item, bool) and not is_missing(item):
            texts.append(str(item))
        else:
            what = "missing (None/NaN)" if is_missing(item) else f"a {type(item).__name__}"
            raise DataError(f"item {i}: {what}, not a text", hint="pass strings; drop or fill missing ones")
    return texts


def read_columns(path: str | Path, names: list[str], *, encoding: str = "auto") -> dict[str, dict[str, str]]:
    """The ``names`` columns of a table, by the source each row gets in its Dataset (``"file.csv:12"``): what
    ``predict --keep`` copies into the output beside each prediction."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in TABLE_SUFFIXES or suffix == ".txt":
        raise DataError("--keep copies columns of a table (CSV, TSV, JSONL, Parquet), and this input has none",
                        path=path, hint="drop --keep, or predict on a table with those columns")
    from .. import _logging

    quiet, _ = _logging._quiet, _logging.set_quiet(True)  # read a second time: its notes were shown the first
    try:
        if suffix in (".parquet", ".pq"):
            rows, columns = _read_parquet(path)
        elif suffix in (".jsonl", ".ndjson"):
            rows, columns = _read_jsonl(path, encoding)
        else:
            rows, columns = _read_delimited(path, encoding, delimiter="\t" if suffix in (".tsv", ".tab") else ",")
    finally:
        _logging.set_quiet(quiet)
    missing = [n for n in names if n not in columns]
    if missing:
        raise DataError(f"no column(s) {', '.join(repr(m) for m in missing)} to keep; columns found: "
                        f"{', '.join(map(str, columns))}", path=path, hint="pass --keep with some of those")
    return {f"{path}:{row_no}": {n: _cell(record.get(n)) for n in names} for row_no, record in rows}
