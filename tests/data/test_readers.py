"""Reading every supported format, and a clear error (file, row, fix) for every kind of bad input."""

from __future__ import annotations

import json

import pytest

from tenni.api import split_for_fit
from tenni.data import Dataset, as_dataset, read_dataset
from tenni.errors import DataError

from ..conftest import write_csv

TEXTS = ["good film", "bad film", "great plot", "awful plot"]
LABELS = ["pos", "neg", "pos", "neg"]


def test_csv_with_detected_columns(tmp_path):
    ds = read_dataset(write_csv(tmp_path / "a.csv", TEXTS, LABELS, header=("Sentence", "Category")))
    assert ds.inputs == TEXTS and ds.labels == LABELS
    assert ds.sources[0].endswith("a.csv:2")


def test_tsv_and_column_override(tmp_path):
    path = write_csv(tmp_path / "a.tsv", TEXTS, LABELS, header=("words", "answer"), delimiter="\t")
    ds = read_dataset(path, text_col="words", label_col="answer")
    assert ds.labels == LABELS


def test_jsonl(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in zip(TEXTS, LABELS)) + "\n")
    assert read_dataset(path).labels == LABELS


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": TEXTS, "target": [1, 0, 1, 0]}), path)
    ds = read_dataset(path)
    assert ds.inputs == TEXTS and ds.labels == ["1", "0", "1", "0"]


def test_folder_of_class_folders(tmp_path):
    for i, (text, label) in enumerate(zip(TEXTS, LABELS)):
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i}.txt").write_text(text)
    ds = read_dataset(tmp_path)
    assert sorted(zip(ds.inputs, ds.labels)) == sorted(zip(TEXTS, LABELS))


def test_windows_line_endings_bom_and_quoted_newlines(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes('\ufefftext,label\r\n"line one\r\nline two",x\r\nsecond,y\r\n'.encode())
    ds = read_dataset(path)
    assert ds.labels == ["x", "y"] and ds.inputs[0].startswith("line one")
    assert ds.sources[1].endswith(":4")  # physical line of the second record


def test_txt_lines_for_prediction(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text("first text\n\nsecond text\n")
    ds = read_dataset(path, labeled=False)
    assert ds.inputs == ["first text", "second text"] and ds.labels is None


def test_in_memory_pairs_and_dataframe():
    import pandas as pd

    assert as_dataset((TEXTS, LABELS)).labels == LABELS
    assert as_dataset(pd.DataFrame({"review": TEXTS, "sentiment": LABELS})).inputs == TEXTS


# --- errors: each names the file, the row or column, and a fix -----------------------------------------------

def _error(tmp_path, content: str | bytes, name="bad.csv", **kw) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as info:
        read_dataset(path, **kw)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "nope.csv")


def test_empty_file(tmp_path):
    assert "empty" in _error(tmp_path, "")


def test_header_only(tmp_path):
    assert "no rows" in _error(tmp_path, "text,label\n")


def test_missing_columns_lists_what_was_found(tmp_path):
    msg = _error(tmp_path, "foo,bar\na,b\n")
    assert "columns found: foo, bar" in msg and "--text-col" in msg


def test_requested_column_absent(tmp_path):
    msg = _error(tmp_path, "text,label\na,b\n", label_col="klass")
    assert "'klass'" in msg and "text, label" in msg


def test_empty_text_names_the_row(tmp_path):
    msg = _error(tmp_path, "text,label\nfine,a\n  ,b\n")
    assert "bad.csv:3" in msg and "empty text" in msg


def test_missing_label_names_the_row(tmp_path):
    msg = _error(tmp_path, "text,label\nfine,a\nno label here,\n")
    assert "bad.csv:3" in msg and "missing label" in msg


def test_undecodable_bytes_name_the_line_and_suggest_encoding(tmp_path):
    msg = _error(tmp_path, b"text,label\nok,a\n\x93quoted\x94,b\n")
    assert "line 3" in msg and "--encoding" in msg


def test_explicit_encoding_reads_cp932(tmp_path):
    path = tmp_path / "ja.csv"
    path.write_bytes("text,label\n請求が二重です,billing\n".encode("cp932"))
    assert read_dataset(path, encoding="cp932").inputs == ["請求が二重です"]


def test_too_many_fields(tmp_path):
    assert "bad.csv:3" in _error(tmp_path, "text,label\na,b\nc,d,e\n")


def test_a_json_object_or_list_as_a_label_names_the_line(tmp_path):
    msg = _error(tmp_path, '{"text": "a", "label": "x"}\n{"text": "b", "label": {"name": "y"}}\n', name="bad.jsonl")
    assert "bad.jsonl:2" in msg and "JSON dict where a label should be" in msg


def test_utf16_without_a_bom_or_binary_bytes_are_not_read_as_text(tmp_path):
    msg = _error(tmp_path, "text,label\ngood film,pos\n".encode("utf-16-le"))
    assert "NUL character at line 1, column 2" in msg and "--encoding utf-16" in msg
    assert "line 2, column 3" in _error(tmp_path, b"text,label\nab\x00c,x\n")


def test_a_column_named_twice_is_refused(tmp_path):
    msg = _error(tmp_path, "text,label,label\ngood,pos,neg\n")
    assert "bad.csv:1" in msg and "'label' more than once" in msg


def test_an_unclosed_quote_names_the_line_it_opens_on(tmp_path):
    msg = _error(tmp_path, 'text,label\nhello there,a\n"an unclosed quote,b\nmore text,a\nagain,b\n')
    assert "bad.csv:3" in msg and "never closed" in msg and "lines 3-5" in msg


def test_quotes_that_close_or_sit_inside_unquoted_texts_are_fine(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('text,label\n5" screen,a\nsecond,b\n"third\nline ""quoted""",a\n\n\n')
    ds = read_dataset(path)
    assert ds.inputs == ['5" screen', "second", 'third\nline "quoted"'] and ds.labels == ["a", "b", "a"]
    path.write_text('text,label\nhello world,pos\nbought a 5" screen,"neg\nmulti"\n')  # odd quotes, all closed
    assert read_dataset(path, label_col="label").labels == ["pos", "neg\nmulti"]
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('"text, body";label\ngood film;pos\nbad film;neg\n')  # the only comma is inside quotes
    assert read_dataset(quoted, text_col="text, body").labels == ["pos", "neg"]


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_a_csv_saved_with_another_separator_is_read(tmp_path, separator):
    path = tmp_path / "excel.csv"
    path.write_text("".join(f"{t}{separator}{y}\n" for t, y in [("text", "label"), *zip(TEXTS, LABELS)]))
    ds = read_dataset(path)
    assert ds.inputs == TEXTS and ds.labels == LABELS


def test_folder_leaves_out_what_is_not_a_text_file_and_says_so(tmp_path, capsys):
    for i, (text, label) in enumerate(zip(TEXTS, LABELS)):
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i}.txt").write_text(text)
    (tmp_path / "pos" / "odd.txt").mkdir()  # a folder named like a text file
    (tmp_path / "pos" / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "empty_class").mkdir()
    ds = read_dataset(tmp_path)
    assert sorted(ds.inputs) == sorted(TEXTS) and set(ds.labels) == {"pos", "neg"}
    err = capsys.readouterr().err
    assert "empty_class" in err and "1 file(s) that are not .txt" in err


def test_invalid_json_line(tmp_path):
    msg = _error(tmp_path, '{"text": "a", "label": "x"}\n{"text": \n', name="bad.jsonl")
    assert "bad.jsonl:2" in msg


def test_unknown_suffix(tmp_path):
    assert "unknown file type" in _error(tmp_path, "x", name="data.xlsx")


def test_single_class(tmp_path):
    path = write_csv(tmp_path / "one.csv", ["a", "b", "c"], ["x", "x", "x"])
    with pytest.raises(DataError, match="only one class"):
        split_for_fit(path)


def test_class_too_small_for_split(tmp_path):
    path = write_csv(tmp_path / "small.csv", ["a", "b", "c", "d"], ["x", "x", "x", "y"])
    with pytest.raises(DataError, match="'y' has 1"):
        split_for_fit(path)


def test_unseen_test_labels_warn(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", TEXTS, LABELS)
    test = write_csv(tmp_path / "test.csv", ["meh film"], ["neutral"])
    split_for_fit(train, test)
    assert "'neutral'" in capsys.readouterr().err


def test_split_is_stratified_and_disjoint():
    texts = [f"text {i}" for i in range(40)]
    labels = ["a"] * 30 + ["b"] * 10
    train, test = Dataset(texts, labels).train_test_split(0.25, seed=3)
    assert set(train.inputs).isdisjoint(test.inputs) and len(train) + len(test) == 40
    assert test.class_counts() == {"a": 8, "b": 2}


def test_sample_per_class():
    ds = Dataset([f"t{i}" for i in range(30)], ["a"] * 20 + ["b"] * 10)
    few = ds.sample_per_class(4, seed=0)
    assert few.class_counts() == {"a": 4, "b": 4}
    assert few.inputs == ds.sample_per_class(4, seed=0).inputs
