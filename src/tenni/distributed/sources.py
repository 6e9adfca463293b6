"""Big inputs cut into shards of work, and one shard read back as rows: no Ray here, so the local engine, the Ray
actors and the tests share it.

An input is a table file (CSV/TSV, JSONL/NDJSON, .txt lines, Parquet), a folder of such files (shards), or a
folder of images or audio files. The driver only plans: it lists the files and finds cut points (Parquet row
groups' row counts; the byte offsets of line or CSV-record starts), and each shard of work is read by the worker
that runs it, so the data never passes through the driver. A shard's name follows from its file's relative path
and its position in that file, so the same input gives the same shards on a re-run (finished ones are skipped),
and adding files to a folder only adds shards.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

TABLE_KINDS = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".jsonl": "lines", ".ndjson": "lines", ".txt": "lines",
               ".parquet": "parquet", ".pq": "parquet"}
_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class Shard:
    """One unit of work: rows ``start``..``stop`` of ``path`` (records for Parquet and CSV, lines for JSONL/.txt,
    byte range ``offset``..``end``), or the media files in ``files``."""

    name: str
    kind: str  # parquet | csv | lines | media
    path: str = ""
    start: int = 0
    stop: int = 0
    offset: int = 0
    end: int = 0
    first_row: int = 1
    header: list[str] = field(default_factory=list)
    delimiter: str = ","
    files: list[str] = field(default_factory=list)
    modality: str = "text"

    @property
    def rows(self) -> int:
        return len(self.files) if self.kind == "media" else self.stop - self.start

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Shard:
        return cls(**{k: (list(v) if isinstance(v, (list, tuple, np.ndarray)) else v) for k, v in d.items()})


def _shard_name(root: Path, path: Path, k: int) -> str:
    rel = str(path.relative_to(root)) if path != root else path.name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40]
    digest = hashlib.blake2b(rel.encode("utf-8"), digest_size=4).hexdigest()
    return f"{stem}-{digest}-{k:05d}"


def plan_shards(data: str | Path, rows_per_shard: int) -> tuple[list[Shard], str]:
    """(shards, modality) for a file or folder; raises a DataError naming the path when nothing can be read."""
    from ..data.media import MEDIA_SUFFIXES, media_files, modality_of_suffix

    data = Path(data)
    if not data.exists():
        raise DataError("no such file or folder", path=data, hint="check the path")
    if rows_per_shard < 1:
        raise DataError(f"rows per shard must be at least 1, not {rows_per_shard}")
    if data.is_dir():
        tables = sorted(p for p in data.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_KINDS
                        and not any(part.startswith((".", "_")) for part in p.relative_to(data).parts))
        if tables:
            shards = [s for t in tables for s in _plan_table(data, t, rows_per_shard)]
            return shards, "text"
        files = media_files(data)
        if not files:
            raise DataError("the folder holds no CSV/TSV/JSONL/Parquet/.txt files and no images or audio", path=data,
                            hint="point at a table, a folder of table shards, or a folder of media files")
        kinds = {modality_of_suffix(f.suffix) for f in files}
        if len(kinds) > 1:
            raise DataError("the folder mixes image and audio files", path=data, hint="keep one modality per folder")
        modality = kinds.pop()
        paths = [str(f.resolve()) for f in files]
        return [Shard(name=f"{data.name[:40] or 'media'}-{k // rows_per_shard:05d}", kind="media",
                      files=paths[k:k + rows_per_shard], modality=modality)
                for k in range(0, len(paths), rows_per_shard)], modality
    suffix = data.suffix.lower()
    if suffix in MEDIA_SUFFIXES:
        modality = modality_of_suffix(suffix)
        return [Shard(name=f"{data.stem[:40]}-00000", kind="media", files=[str(data.resolve())],
                      modality=modality)], modality
    if suffix not in TABLE_KINDS:
        raise DataError(f"unknown file type '{suffix or '(none)'}'", path=data,
                        hint="use .csv, .tsv, .jsonl, .parquet, .txt, or a folder of them or of media files")
    return _plan_table(data.parent, data, rows_per_shard), "text"


def _plan_table(root: Path, path: Path, rows_per_shard: int) -> list[Shard]:
    kind = TABLE_KINDS[path.suffix.lower()]
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            n = pq.ParquetFile(path).metadata.num_rows
        except Exception as err:
            raise DataError(f"cannot read Parquet: {err}", path=path, hint="check that the file is complete") from None
        return [Shard(name=_shard_name(root, path, k), kind="parquet", path=str(path), start=s,
                      stop=min(s + rows_per_shard, n), first_row=s + 1)
                for k, s in enumerate(range(0, n, rows_per_shard))]
    starts = _line_starts(path)  # byte offset of every line's start, and the file's size last
    if kind == "lines":
        n_lines = len(starts) - 1
        return [Shard(name=_shard_name(root, path, k), kind="lines", path=str(path), start=s,
                      stop=min(s + rows_per_shard, n_lines), offset=int(starts[s]),
                      end=int(starts[min(s + rows_per_shard, n_lines)]), first_row=s + 1)
                for k, s in enumerate(range(0, n_lines, rows_per_shard))]
    return _plan_csv(root, path, starts, rows_per_shard)


def _line_starts(path: Path, chunk: int = 1 << 24) -> np.ndarray:
    """Byte offsets at which lines start (0 first), then the file size: newlines found in big chunks by numpy."""
    found = [np.zeros(1, np.int64)]
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            nl = np.flatnonzero(np.frombuffer(block, np.uint8) == 10).astype(np.int64) + size + 1
            found.append(nl)
            size += len(block)
    starts = np.concatenate(found)
    if starts[-1] != size:
        starts = np.append(starts, size)
    return starts


def decode(data: bytes) -> str:
    """UTF-8 (a BOM dropped); bytes that are not UTF-8 stay as surrogates, so the rows holding them are rejected
    with their row number instead of failing the whole shard."""
    text = data.decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def _plan_csv(root: Path, path: Path, starts: np.ndarray, rows_per_shard: int) -> list[Shard]:
    """Cut points at record starts (a quoted text may span lines): the file is parsed once here."""
    text = decode(path.read_bytes())
    first_line = re.sub(r'"[^"]*"', "", text.split("\n", 1)[0])
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    if delimiter == "," and "," not in first_line:  # a .csv saved with another separator, as tenni's reader allows
        delimiter = max(_DELIMITERS, key=first_line.count) if any(d in first_line for d in _DELIMITERS) else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError("the file is empty", path=path) from None
    except csv.Error as err:
        raise DataError(f"malformed header: {err}", path=path, row=1) from None
    record_lines = []  # 1-based line on which each record starts
    prev = reader.line_num
    try:
        for record in reader:
            start_line = prev + 1
            prev = reader.line_num
            if record and any(cell.strip() for cell in record):
                record_lines.append(start_line)
    except csv.Error as err:
        raise DataError(f"malformed CSV: {err}", path=path, row=reader.line_num,
                        hint="check the quoting on that line") from None
    shards = []
    size = int(starts[-1])
    for k, s in enumerate(range(0, len(record_lines), rows_per_shard)):
        stop = min(s + rows_per_shard, len(record_lines))
        offset = int(starts[record_lines[s] - 1])
        end = int(starts[record_lines[stop] - 1]) if stop < len(record_lines) else size
        shards.append(Shard(name=_shard_name(root, path, k), kind="csv", path=str(path), start=s, stop=stop,
                            offset=offset, end=end, first_row=record_lines[s], header=header, delimiter=delimiter))
    return shards


# --- reading one shard ------------------------------------------------------------------------------------------

@dataclass
class Rows:
    """What a worker reads from one shard: the input's columns as they came (an Arrow table), one input per row
    (text or file path), where each row came from, and the rows left out with the reason."""

    table: object  # pyarrow.Table
    inputs: list[str]
    sources: list[str]
    rejects: list[dict]
    modality: str = "text"


def read_shard(shard: Shard, text_col: str | None = None) -> Rows:
    import pyarrow as pa

    if shard.kind == "media":
        return _media_rows(shard)
    if shard.kind == "parquet":
        table = _parquet_slice(shard)
        columns = table.column_names
        tcol = text_column(columns, text_col, shard.path)
        if tcol is None:
            return _media_table_rows(shard, [(shard.first_row + i, r) for i, r in enumerate(table.to_pylist())],
                                     columns)
        # only the text column leaves Arrow; the others go to the output as they are
        rows = [(shard.first_row + i, {tcol: v}) for i, v in enumerate(table.column(tcol).to_pylist())]
    else:
        with open(shard.path, "rb") as fh:
            fh.seek(shard.offset)
            text = decode(fh.read(shard.end - shard.offset))
        rows, columns = (_csv_records(shard, text) if shard.kind == "csv" else _line_records(shard, text))
        table = None
        tcol = text_column(columns, text_col, shard.path)
        if tcol is None:  # a table of media paths
            return _media_table_rows(shard, rows, columns)
    keep, inputs, sources, rejects = [], [], [], []
    for i, (row_no, record) in enumerate(rows):
        where = f"{shard.path}:{row_no}"
        if "__error__" in record:
            rejects.append({"source": where, "reason": record["__error__"], "value": record.get("__line__", "")})
            continue
        text, reason = clean_text(record.get(tcol))
        if reason is not None:
            rejects.append({"source": where, "reason": reason, "value": _preview(record.get(tcol))})
            continue
        keep.append(i)
        inputs.append(text)
        sources.append(where)
    if table is not None:
        table = table.take(pa.array(keep, pa.int64()))
    else:
        table = _table([rows[i][1] for i in keep], columns)
    return Rows(table=table, inputs=inputs, sources=sources, rejects=rejects)


def _parquet_slice(shard: Shard):
    """Rows ``start``..``stop`` of a Parquet file, reading only the row groups that hold them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(shard.path)
    groups, first, offset = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > shard.start and offset < shard.stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return pf.schema_arrow.empty_table()
    table = pf.read_row_groups(groups)
    table = table.slice(shard.start - first, shard.stop - shard.start)
    return pa.Table.from_batches(table.to_batches(), schema=table.schema)


def _csv_records(shard: Shard, text: str):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=shard.delimiter)
    rows, line = [], shard.first_row
    prev = 0
    try:
        for record in reader:
            start = line + prev
            prev = reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) > len(shard.header):
                rows.append((start, {"__error__": f"{len(record)} fields but the header has {len(shard.header)}",
                                     "__line__": shard.delimiter.join(record)[:200]}))
                continue
            rows.append((start, dict(zip(shard.header, record))))
    except csv.Error as err:
        rows.append((line + reader.line_num, {"__error__": f"malformed CSV: {err}"}))
    return rows, list(shard.header)


def _line_records(shard: Shard, text: str):
    from ..data.readers import jsonl_records, record_columns

    lines = text.split("\n")[: shard.stop - shard.start]
    if shard.path.lower().endswith(".txt"):
        rows = [(shard.first_row + i, {"text": line.rstrip("\r")}) for i, line in enumerate(lines) if line.strip()]
        return rows, ["text"]
    rows = []
    for row_no, record, problem in jsonl_records(lines, first=shard.first_row):
        if record is None:  # a rejected line, with its reason and a preview
            record = {"__error__": problem, "__line__": lines[row_no - shard.first_row][:200]}
        rows.append((row_no, record))
    return rows, record_columns(r for _, r in rows if "__error__" not in r)


def _table(records: list[dict], columns: list[str]):
    """An Arrow table of the rows as they came; a column whose values Arrow cannot type together (1 and "x", or
    objects of different shapes) is kept as JSON text."""
    import pyarrow as pa

    arrays = {}
    for col in columns:
        values = [r.get(col) for r in records]
        try:
            arrays[col] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[col] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values],
                                   pa.string())
    return pa.table(arrays) if arrays else pa.table({"_": pa.array([None] * len(records))}).drop(["_"])


def text_column(columns: list[str], requested: str | None, path: str) -> str | None:
    """The text column (``requested``, else tenni's usual names, else the only column); None for a table of media
    paths."""
    from ..data.columns import TEXT_COLUMNS
    from ..data.media import PATH_COLUMNS

    if requested is not None:
        if requested in columns:
            return requested
        raise DataError(f"no text column '{requested}'; columns found: {', '.join(map(str, columns))}", path=path,
                        hint="pass --text-col with one of those")
    by_lower = {str(c).lower(): c for c in columns}
    for name in TEXT_COLUMNS:
        if name in by_lower:
            return by_lower[name]
    if any(name in by_lower for name in PATH_COLUMNS):
        return None
    if len(columns) == 1:
        return columns[0]
    raise DataError(f"cannot tell which column holds the text; columns found: {', '.join(map(str, columns))}",
                    path=path, hint="pass --text-col NAME")


def clean_text(value) -> tuple[str, str | None]:
    """(text, None) for a usable text, as tenni's readers take it (stripped; numbers as their text), else
    ("", why not)."""
    import numbers

    from ..data.columns import is_missing

    if isinstance(value, (dict, list)):
        return "", f"a JSON {type(value).__name__}, not a text"
    if isinstance(value, bytes):
        return "", "binary data, not a text"
    if is_missing(value):
        return "", "missing text"
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        value = str(value)
    text = str(value).strip()
    if not text:
        return "", "empty text"
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        return "", "bytes that are not UTF-8"
    return text, None


def _preview(value) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text.encode("utf-8", errors="replace").decode("utf-8")[:200]


def _media_rows(shard: Shard) -> Rows:
    import pyarrow as pa

    from ..data.media import check_file

    keep, rejects = [], []
    for p in shard.files:
        reason = check_file(p, shard.modality)
        if reason is None:
            keep.append(p)
        else:
            rejects.append({"source": p, "reason": reason, "value": p})
    return Rows(table=pa.table({"path": pa.array(keep, pa.string())}), inputs=keep, sources=list(keep),
                rejects=rejects, modality=shard.modality)


def _media_table_rows(shard: Shard, rows, columns) -> Rows:
    """A table whose path column names image/audio files (relative to the table's folder)."""
    from ..data.media import PATH_COLUMNS, check_file, modality_of_suffix

    by_lower = {str(c).lower(): c for c in columns}
    pcol = next(by_lower[c] for c in PATH_COLUMNS if c in by_lower)
    keep, inputs, sources, rejects, kinds = [], [], [], [], set()
    base = Path(shard.path).parent
    for i, (row_no, record) in enumerate(rows):
        where = f"{shard.path}:{row_no}"
        value = str(record.get(pcol) or "").strip()
        modality = modality_of_suffix(Path(value).suffix) if value else None
        if "__error__" in record or not value or modality is None:
            reason = record.get("__error__") or ("empty path" if not value else "not an image or audio file")
            rejects.append({"source": where, "reason": reason, "value": value})
            continue
        file = Path(value).expanduser()
        file = str((file if file.is_absolute() else base / file).resolve())
        reason = check_file(file, modality)
        if reason is not None:
            rejects.append({"source": where, "reason": reason, "value": value})
            continue
        keep.append(i)
        inputs.append(file)
        sources.append(where)
        kinds.add(modality)
    if len(kinds) > 1:
        raise DataError("the table mixes image and audio files", path=shard.path, hint="one modality per table")
    return Rows(table=_table([rows[i][1] for i in keep], columns), inputs=inputs, sources=sources, rejects=rejects,
                modality=kinds.pop() if kinds else "image")
