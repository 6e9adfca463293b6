"""Text-to-text data: (input, output) pairs from CSV/TSV/JSONL/Parquet, or chat ``messages`` JSONL.

Every example becomes a conversation (a list of ``{"role", "content"}`` messages ending with a user turn) and the
reference answer, so the same prompt building serves column data, Alpaca-style (instruction + input) rows and
multi-turn chats. Errors name the file, the row and the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.columns import pick_column
from ..errors import DataError

INPUT_COLUMNS = ("input", "prompt", "instruction", "question", "source", "text", "query", "context", "document",
                 "article", "description")
OUTPUT_COLUMNS = ("output", "response", "target", "answer", "completion", "reference", "summary", "headline",
                  "title", "label")
ROLES = ("system", "user", "assistant")


@dataclass
class Pairs:
    """Conversations (each ending with a user turn) and, when known, the reference output of each."""

    conversations: list[list[dict]]
    outputs: list[str] | None
    sources: list[str]
    path: str | None = None
    columns: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.conversations)

    @property
    def inputs(self) -> list[str]:
        """The last user message of each example (what a table shows as the input)."""
        return [conv[-1]["content"] for conv in self.conversations]

    def subset(self, index) -> Pairs:
        index = list(index)
        return Pairs([self.conversations[i] for i in index],
                     None if self.outputs is None else [self.outputs[i] for i in index],
                     [self.sources[i] for i in index], self.path, self.columns)


def with_instruction(pairs: Pairs, instruction: str | None) -> Pairs:
    """Put ``instruction`` before the input of every example's last user turn (works with every chat template,
    including those without a system role)."""
    if not instruction or not instruction.strip():
        return pairs
    text = instruction.strip()
    conversations = [conv[:-1] + [{"role": "user", "content": f"{text}\n\n{conv[-1]['content']}"}]
                     for conv in pairs.conversations]
    return Pairs(conversations, pairs.outputs, pairs.sources, pairs.path, dict(pairs.columns, instruction=text))


def read_pairs(path: str | Path, *, input_col: str | None = None, output_col: str | None = None,
               labeled: bool = True, encoding: str = "auto") -> Pairs:
    """Read a file of text-to-text examples; ``labeled=False`` (prediction) makes the output column optional."""
    from ..data.readers import _decode, _read_delimited, _read_jsonl, _read_parquet

    path = Path(path)
    if not path.exists():
        raise DataError("no such file", path=path, hint="check the path")
    if path.is_dir():
        raise DataError("a folder; text-to-text data is one file", path=path,
                        hint="give a CSV/TSV/JSONL/Parquet file with input and output columns")
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise DataError("the file is empty", path=path, hint="check that the export finished")
    if suffix in (".parquet", ".pq"):
        rows, columns = _read_parquet(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows, columns = _read_jsonl(path, encoding)
    elif suffix in (".csv", ".tsv", ".tab"):
        rows, columns = _read_delimited(path, encoding, delimiter="\t" if suffix in (".tsv", ".tab") else ",")
    elif suffix == ".txt" and not labeled:
        lines = _decode(path, encoding).splitlines()
        rows, columns = [(i, {"input": line.strip()}) for i, line in enumerate(lines, 1) if line.strip()], ["input"]
    else:
        raise DataError(f"cannot read '{suffix or '(none)'}' files as text-to-text data", path=path,
                        hint="use .csv, .tsv, .jsonl or .parquet with input and output columns (or .txt lines to "
                             "predict on)")
    if not rows:
        raise DataError("the file has no examples", path=path, hint="add data")
    if "messages" in columns and input_col is None:
        return _from_messages(path, rows, labeled)
    icol = _pick(columns, input_col, INPUT_COLUMNS, "input", path, required=True)
    rest = [c for c in columns if c != icol]
    ocol = _pick(rest, output_col, OUTPUT_COLUMNS, "output", path, required=labeled, all_columns=columns)
    # Alpaca style: an instruction column and an input column (often empty) together make the prompt
    extra = None
    if input_col is None and str(icol).lower() == "input":
        extra = next((c for c in columns if str(c).lower() == "instruction" and c not in (icol, ocol)), None)
    conversations, outputs, sources = [], [], []
    for row_no, record in rows:
        text = _field(record, icol, path, row_no)
        if extra is not None:
            head = _field(record, extra, path, row_no)
            text = f"{head}\n\n{text}" if head and text else head or text
        if not text:
            raise DataError("empty input", path=path, row=row_no, column=icol, hint="fill it in or delete the row")
        conversations.append([{"role": "user", "content": text}])
        sources.append(f"{path}:{row_no}")
        if ocol is not None:
            value = _field(record, ocol, path, row_no)
            if not value and labeled:
                raise DataError("empty output", path=path, row=row_no, column=ocol,
                                hint="fill in the expected output or delete the row")
            outputs.append(value)
    has_outputs = ocol is not None and all(outputs)
    return Pairs(conversations, outputs if has_outputs else None, sources, str(path),
                 {"input": icol, "output": ocol, **({"instruction": extra} if extra else {})})


def as_pairs(data, *, input_col=None, output_col=None, labeled=True, encoding="auto") -> Pairs:
    """A path, Pairs, a ``(inputs, outputs)`` pair of lists, or a list of input strings (to predict on)."""
    if isinstance(data, Pairs):
        return data
    if isinstance(data, (str, Path)):
        return read_pairs(data, input_col=input_col, output_col=output_col, labeled=labeled, encoding=encoding)
    if isinstance(data, tuple) and len(data) == 2:
        inputs, outputs = list(data[0]), None if data[1] is None else list(data[1])
    elif isinstance(data, list) and all(isinstance(x, str) for x in data):
        inputs, outputs = data, None
    else:
        raise DataError(f"cannot use data of type {type(data).__name__} as text-to-text examples",
                        hint="pass a file path, an (inputs, outputs) pair of lists, or a list of inputs")
    if outputs is not None and len(outputs) != len(inputs):
        raise DataError(f"{len(inputs)} inputs but {len(outputs)} outputs", hint="give one output per input")
    conversations = []
    for i, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"item {i}: empty or missing input", hint="remove empty inputs")
        conversations.append([{"role": "user", "content": text.strip()}])
    if outputs is not None:
        for i, out in enumerate(outputs):
            if not isinstance(out, str) or not out.strip():
                if labeled:
                    raise DataError(f"item {i}: empty or missing output", hint="fill it in or remove the item")
        outputs = [o.strip() if isinstance(o, str) else "" for o in outputs]
        if not all(outputs):
            outputs = None
    elif labeled:
        raise DataError("no outputs given: training needs (input, output) pairs", hint="pass (inputs, outputs)")
    return Pairs(conversations, outputs, [f"item {i}" for i in range(len(inputs))])


def _field(record: dict, column, path, row_no) -> str:
    from ..data.readers import is_missing

    value = record.get(column)
    if isinstance(value, (dict, list)):
        raise DataError(f"a JSON {type(value).__name__} where a text should be", path=path, row=row_no,
                        column=column, hint="give a string in that field")
    return "" if is_missing(value) else str(value).strip()


def _pick(columns, requested, candidates, what, path, *, required, all_columns=None):
    flag = "--text-col" if what == "input" else "--label-col"
    return pick_column(columns, requested, candidates, what, path, required=required, flag=flag, shown=all_columns)


def _from_messages(path: Path, rows, labeled: bool) -> Pairs:
    """Chat JSONL: ``{"messages": [{"role": ..., "content": ...}, ...]}``; the last assistant turn is the output
    (absent when predicting), everything before it the conversation."""
    conversations, outputs, sources = [], [], []
    for row_no, record in rows:
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise DataError("'messages' must be a non-empty list of {role, content} objects", path=path, row=row_no,
                            hint='e.g. {"messages": [{"role": "user", "content": "..."}, '
                                 '{"role": "assistant", "content": "..."}]}')
        clean = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"a message must be {{\"role\": {'/'.join(ROLES)}, \"content\": text}}, got "
                                f"{str(m)[:60]}", path=path, row=row_no, column="messages")
            clean.append({"role": m["role"], "content": m["content"].strip()})
        answer = None
        if clean[-1]["role"] == "assistant":
            answer = clean.pop()["content"]
            if not answer and labeled:
                raise DataError("empty output (the last assistant message is empty)", path=path, row=row_no,
                                column="messages", hint="fill it in or delete the row")
        elif labeled:
            raise DataError("no output: the last message is not from the assistant", path=path, row=row_no,
                            column="messages", hint="end each conversation with the assistant's answer")
        if not clean or clean[-1]["role"] != "user" or not clean[-1]["content"]:
            raise DataError("the conversation must end with a non-empty user message before the answer", path=path,
                            row=row_no, column="messages")
        conversations.append(clean)
        outputs.append(answer)
        sources.append(f"{path}:{row_no}")
    has_outputs = all(o for o in outputs)
    return Pairs(conversations, outputs if has_outputs else None, sources, str(path), {"messages": "messages"})
