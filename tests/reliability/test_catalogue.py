"""The bad-input catalogue (docs/reliability.md): what careless and hostile users do, one case each.

Every case writes its own files into an empty folder, runs the CLI in-process, and asserts the exit code, a single
error line that names the file (for failures), and that every file that was there before is byte-identical after
(hidden files included) with nothing created except the outputs the case expects.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from ..conftest import make_texts, write_csv
from .conftest import copy_model, error_line, names_file, run_cli, snapshot, write_labeled

CASES: dict[str, object] = {}


def case(fn):
    CASES[fn.__name__.removeprefix("c_")] = fn
    return fn


FIT = ["-s", "scratch", "--no-baseline", "--evaluation", "holdout"]


def spec(args, code=2, message=None, names=None, changes=(), check=None):
    return {"args": [str(a) for a in args], "code": code, "message": message, "names": names,
            "changes": changes, "check": check}


def _table(t: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = t / name
    path.write_bytes(text.encode(encoding))
    return path


def _rows(n_per_class: int = 8, prefix: str = "") -> str:
    texts, labels = make_texts(n_per_class, 3)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    writer.writerows((prefix + x, y) for x, y in zip(texts, labels))
    return buffer.getvalue()


# --- data files: reading ---------------------------------------------------------------------------------------

@case
def c_missing_file(t, m):
    return spec(["fit", t / "nope.csv"], message="no such file", names="nope.csv")


@case
def c_empty_file(t, m):
    return spec(["fit", _table(t, "d.csv", "")], message="empty", names="d.csv")


@case
def c_unknown_suffix(t, m):
    return spec(["fit", _table(t, "d.xlsx", "x")], message="unknown file type", names="d.xlsx")


@case
def c_header_only(t, m):
    return spec(["fit", _table(t, "d.csv", "text,label\n")], message="no rows", names="d.csv")


@case
def c_missing_label(t, m):
    return spec(["fit", _table(t, "d.csv", "text,label\nhello,a\nworld,\n")], message="missing label",
                names="d.csv")


@case
def c_empty_text(t, m):
    return spec(["fit", _table(t, "d.csv", 'text,label\n"",a\nworld,b\n')], message="empty text", names="d.csv")


@case
def c_too_many_fields(t, m):
    return spec(["fit", _table(t, "d.csv", "text,label\nhello, world,a\n")], message="fields but the header",
                names="d.csv")


@case
def c_unclosed_quote(t, m):
    return spec(["fit", _table(t, "d.csv", 'text,label\n"hello,a\nworld,b\nmore,c\n')], message="never closed",
                names="d.csv")


@case
def c_duplicate_header(t, m):
    return spec(["fit", _table(t, "d.csv", "text,text,label\na,b,c\n")], message="more than once", names="d.csv")


@case
def c_utf16_without_bom(t, m):
    return spec(["fit", _table(t, "d.csv", _rows(), "utf-16-le")], message="NUL character", names="d.csv")


@case
def c_binary_as_csv(t, m):
    path = t / "d.csv"
    path.write_bytes(bytes(range(256)) * 8)
    return spec(["fit", path], names="d.csv")


@case
def c_cp1252_pound_is_not_japanese(t, m):
    text = "text,label\n" + "".join(f"invoice {i} is wrong,billing £\nlovely day {i},other\n" for i in range(8))
    return spec(["fit", _table(t, "d.csv", text, "cp1252"), *FIT], message=r"encodings tried.*--encoding",
                names="d.csv")


@case
def c_latin1_accents_are_not_japanese(t, m):
    text = "text,label\n" + "".join(f"Facture erronée {i},facture\nBonjour {i},autre\n" for i in range(8))
    return spec(["fit", _table(t, "d.csv", text, "latin-1"), *FIT], message=r"cp1252.*--encoding", names="d.csv")


@case
def c_cp1252_with_encoding_option(t, m):
    text = "text,label\n" + "".join(f"invoice {i} is wrong,billing £\nlovely day {i},other\n" for i in range(8))
    path = _table(t, "d.csv", text, "cp1252")

    def check(t, out, err):
        assert "billing £" in out or "not saved" in out

    return spec(["fit", path, *FIT, "--encoding", "cp1252"], code=0, check=check)


@case
def c_shift_jis_is_read_and_said(t, m):
    text = "text,label\n" + "".join(f"今日は晴れです{i},天気\n夕食にカレーを作りました{i},料理\n" for i in range(8))
    path = _table(t, "d.csv", text, "cp932")

    def check(t, out, err):
        assert "Shift_JIS" in err

    return spec(["fit", path, *FIT], code=0, check=check)


@case
def c_kanji_only_cp932_needs_the_option(t, m):
    text = "text,label\n" + "".join(f"経済成長{i},経済\n政治改革{i},政治\n" for i in range(8))
    return spec(["fit", _table(t, "d.csv", text, "cp932"), *FIT], message="cp932", names="d.csv")


@case
def c_utf16_with_bom_is_said(t, m):
    path = t / "d.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + _rows().encode("utf-16-le"))

    def check(t, out, err):
        assert "UTF-16" in err

    return spec(["fit", path, *FIT], code=0, check=check)


@case
def c_utf8_bom(t, m):
    path = t / "d.csv"
    path.write_bytes(codecs.BOM_UTF8 + _rows().encode())
    return spec(["fit", path, *FIT], code=0)


@case
def c_crlf_lines(t, m):
    return spec(["fit", _table(t, "d.csv", _rows().replace("\r\n", "\n").replace("\n", "\r\n")), *FIT], code=0)


@case
def c_semicolon_csv(t, m):
    return spec(["fit", _table(t, "d.csv", _rows().replace(",", ";")), *FIT], code=0)


@case
def c_one_megabyte_cell_is_valid_csv(t, m):
    text = _rows().rstrip("\n") + "\n" + '"' + "long text " * 100_000 + '",weather\n'
    return spec(["fit", _table(t, "d.csv", text), *FIT], code=0)


@case
def c_jsonl_invalid_line(t, m):
    return spec(["fit", _table(t, "d.jsonl", '{"text": "a", "label": "x"}\n{oops}\n')], message="invalid JSON",
                names="d.jsonl")


@case
def c_jsonl_not_object(t, m):
    return spec(["fit", _table(t, "d.jsonl", '[1, 2]\n')], message="not a JSON object", names="d.jsonl")


@case
def c_jsonl_list_as_text(t, m):
    return spec(["fit", _table(t, "d.jsonl", '{"text": [1], "label": "x"}\n')], message="JSON list",
                names="d.jsonl")


@case
def c_jsonl_nan_label(t, m):
    return spec(["fit", _table(t, "d.jsonl", '{"text": "a", "label": NaN}\n{"text": "b", "label": "y"}\n')],
                message="missing label", names="d.jsonl")


@case
def c_damaged_parquet(t, m):
    path = t / "d.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64)
    return spec(["fit", path], message="Parquet", names="d.parquet")


@case
def c_txt_has_no_labels(t, m):
    return spec(["fit", _table(t, "d.txt", "hello\nworld\n")], message="unlabeled", names="d.txt")


@case
def c_missing_text_column(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "--text-col", "body"], message="columns found", names="d.csv")


@case
def c_missing_label_column(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "--label-col", "klass"], message="columns found",
                names="d.csv")


@case
def c_one_class(t, m):
    return spec(["fit", _table(t, "d.csv", "text,label\na,x\nb,x\nc,x\n")], message="only one class",
                names="d.csv")


@case
def c_folder_without_class_folders(t, m):
    (t / "data").mkdir()
    (t / "data" / "a.md").write_text("x")
    return spec(["fit", t / "data"], message="class sub-folders", names="data")


@case
def c_class_folders_without_files(t, m):
    for name in ("a", "b"):
        (t / "data" / name).mkdir(parents=True)
    (t / "data" / "a" / "notes.md").write_text("x")
    return spec(["fit", t / "data"], message="no .txt files", names="data")


@case
def c_empty_txt_in_class_folder(t, m):
    for name in ("a", "b"):
        (t / "data" / name).mkdir(parents=True)
        (t / "data" / name / "1.txt").write_text("some text")
    (t / "data" / "a" / "2.txt").write_text("")
    return spec(["fit", t / "data"], message="empty", names="2.txt")


@case
def c_latin1_txt_in_class_folder(t, m):
    for name in ("a", "b"):
        (t / "data" / name).mkdir(parents=True)
        (t / "data" / name / "1.txt").write_text("some text")
    (t / "data" / "a" / "2.txt").write_bytes("Facture erronée".encode("latin-1"))
    return spec(["fit", t / "data"], message="encodings tried", names="2.txt")


# --- options ---------------------------------------------------------------------------------------------------

@case
def c_negative_seed(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "--seed", "-1"], message="seed")


@case
def c_test_size_out_of_range(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "-s", "scratch", "--evaluation", "holdout", "--test-size", "1.5"],
                message="between 0 and 1")


@case
def c_unknown_option(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "-s", "probe", "--set", "wings=3"], message="unknown option")


@case
def c_set_without_value(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "--set", "epochs"], message="KEY=VALUE")


@case
def c_unknown_strategy(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "-s", "magic"], message="unknown strategy")


@case
def c_bad_budget(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "--budget", "soon"], message="duration")


@case
def c_unknown_evaluation(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "-s", "scratch", "--evaluation", "vibes"],
                message="unknown evaluation")


@case
def c_unknown_task(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "--task", "dream"], message="unknown task")


@case
def c_bad_max_pixels(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), "--max-pixels", "0"], message="max-pixels")


@case
def c_test_file_without_labels(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "--test", _table(t, "test.txt", "hello\n")],
                message="labels", names="test.txt")


# --- leakage ---------------------------------------------------------------------------------------------------

@case
def c_test_is_the_training_file(t, m):
    data = write_labeled(t / "d.csv")

    def check(t, out, err):
        assert "training data itself" in err and "leakage" in err

    return spec(["fit", data, "-s", "scratch", "--no-baseline", "--test", data], code=0, check=check)


@case
def c_test_overlaps_training(t, m):
    data = write_labeled(t / "d.csv", seed=0)
    texts, labels = make_texts(8, 0)
    more, more_labels = make_texts(4, 9)
    test = write_csv(t / "test.csv", texts[:5] + more, labels[:5] + more_labels)

    def check(t, out, err):
        assert "also occur in the training data" in err and "leakage" in err

    return spec(["fit", data, "-s", "scratch", "--no-baseline", "--test", test], code=0, check=check)


# --- where fit writes ------------------------------------------------------------------------------------------

@case
def c_fit_over_a_model_keeps_hidden_files(t, m):
    model = copy_model(m["scratch"], t / "model")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (model / ".env").write_text("TOKEN=secret\n")
    (model / ".cache_user").mkdir()
    (model / ".cache_user" / "big.bin").write_bytes(os.urandom(64))
    (model / "notes.md").write_text("my notes\n")
    data = write_labeled(t / "d.csv")

    def check(t, out, err):
        assert json.loads((t / "model" / "tenni.json").read_text())["labels"] == ["food", "sports", "weather"]

    return spec(["fit", data, *FIT, "-o", model], code=0, check=check,
                changes=("model/tenni.json", "model/weights.safetensors", "model/README.md", "model/report.html"))


@case
def c_fit_into_a_folder_with_only_hidden_files(t, m):
    (t / "out" / ".git").mkdir(parents=True)
    (t / "out" / ".git" / "HEAD").write_text("ref\n")
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "-o", t / "out"], message="not a tenni model",
                names="out")


@case
def c_fit_into_a_foreign_folder(t, m):
    (t / "docs").mkdir()
    (t / "docs" / "thesis.tex").write_text("precious")
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "-o", t / "docs"], message="refusing", names="docs")


@case
def c_fit_output_is_a_file(t, m):
    (t / "model").write_text("a file")
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "-o", t / "model"], message="not a directory",
                names="model")


@case
def c_fit_output_under_a_file(t, m):
    (t / "afile").write_text("a file")
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "-o", t / "afile" / "model"], message="is a file",
                names="afile")


@case
def c_fit_output_in_proc(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "-o", "/proc/tenni-model"], message="cannot write",
                names="/proc/tenni-model")


@case
def c_fit_output_in_sys(t, m):
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "-o", "/sys/tenni-model"], message="cannot write",
                names="/sys/tenni-model")


@case
def c_fit_output_in_read_only_folder(t, m):
    ro = t / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return spec(["fit", write_labeled(t / "d.csv"), *FIT, "-o", ro / "model"], message="cannot write",
                names="model")


# --- predict: outputs and inputs --------------------------------------------------------------------------------

def _new_texts(t: Path, name: str = "new.txt") -> Path:
    return _table(t, name, "Heavy snow closed the roads\nI cooked curry for dinner\n")


@case
def c_predict_onto_its_own_input(t, m):
    data = _table(t, "new.csv", "text\nHeavy snow closed the roads\n")
    return spec(["predict", m["scratch"], data, "-o", data], message="input file", names="new.csv")


@case
def c_predict_onto_a_hard_link_of_its_input(t, m):
    data = _table(t, "new.csv", "text\nHeavy snow closed the roads\n")
    os.link(data, t / "same.csv")
    return spec(["predict", m["scratch"], data, "-o", t / "same.csv"], message="input file", names="same.csv")


@case
def c_predict_output_is_a_folder(t, m):
    (t / "out").mkdir()
    return spec(["predict", m["scratch"], _new_texts(t), "-o", t / "out"], message="folder", names="out")


@case
def c_predict_output_unknown_format(t, m):
    return spec(["predict", m["scratch"], _new_texts(t), "-o", t / "p.xlsx"], message="cannot write '.xlsx'")


@case
def c_predict_output_in_proc(t, m):
    return spec(["predict", m["scratch"], _new_texts(t), "-o", "/proc/p.csv"], message="cannot write",
                names="/proc/p.csv")


@case
def c_predict_output_under_a_file(t, m):
    (t / "afile").write_text("x")
    return spec(["predict", m["scratch"], _new_texts(t), "-o", t / "afile" / "p.csv"], message="is a file",
                names="afile")


@case
def c_predict_empty_folder(t, m):
    (t / "empty").mkdir()
    return spec(["predict", m["scratch"], t / "empty"], message="nothing to predict", names="empty")


@case
def c_predict_empty_txt(t, m):
    return spec(["predict", m["scratch"], _table(t, "new.txt", "")], message="empty", names="new.txt")


@case
def c_predict_blank_lines_only(t, m):
    return spec(["predict", m["scratch"], _table(t, "new.txt", "\n \n")], message="no non-blank", names="new.txt")


@case
def c_predict_missing_model(t, m):
    return spec(["predict", t / "nomodel", _new_texts(t)], message="no such model", names="nomodel")


@case
def c_predict_model_is_a_file(t, m):
    (t / "model").write_text("x")
    return spec(["predict", t / "model", _new_texts(t)], message="no such model", names="model")


@case
def c_predict_keep_columns(t, m):
    data = _table(t, "new.csv", "id,customer,text\n7,ACME,Heavy snow closed the roads\n8,Bob,I cooked curry\n")

    def check(t, out, err):
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [(r["id"], r["customer"]) for r in rows] == [("7", "ACME"), ("8", "Bob")]
        assert "prediction" in rows[0]

    return spec(["predict", m["scratch"], data, "--keep", "id,customer"], code=0, check=check)


@case
def c_predict_keep_missing_column(t, m):
    data = _table(t, "new.csv", "id,text\n7,Heavy snow\n")
    return spec(["predict", m["scratch"], data, "--keep", "customer"], message="columns found", names="new.csv")


@case
def c_predict_keep_on_a_txt(t, m):
    return spec(["predict", m["scratch"], _new_texts(t), "--keep", "id"], message="--keep", names="new.txt")


@case
def c_predict_keep_clashes(t, m):
    data = _table(t, "new.csv", "prediction,text\nx,Heavy snow\n")
    return spec(["predict", m["scratch"], data, "--keep", "prediction"], message="clash")


@case
def c_predict_writes_jsonl_unescaped(t, m):
    data = _table(t, "new.txt", "=HYPERLINK(\"http://x\")\n")

    def check(t, out, err):
        row = json.loads((t / "p.jsonl").read_text().splitlines()[0])
        assert row["text"] == '=HYPERLINK("http://x")' and row["prediction"] in ("=danger", "@food", "sports")

    return spec(["predict", m["scratch"], data, "-o", t / "p.jsonl"], code=0, changes=("p.jsonl",), check=check)


def _injection_case(prefix):
    def fn(t, m):
        buffer = io.StringIO()
        csv.writer(buffer).writerows([["text"], [prefix + "cmd|' /C calc'!A0"]])
        data = _table(t, "new.csv", buffer.getvalue())

        def check(t, out, err):
            rows = list(csv.reader(io.StringIO((t / "p.csv").read_text(), newline="")))
            for cell in [c for row in rows for c in row]:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
            # the readers strip surrounding whitespace from texts; what is left is escaped, not dropped
            assert rows[1][0] == "'" + prefix.strip() + "cmd|' /C calc'!A0"

        return spec(["predict", m["scratch"], data, "-o", t / "p.csv"], code=0, changes=("p.csv",), check=check)
    return fn


for _name, _prefix in (("equals", "="), ("plus", "+"), ("minus", "-"), ("at", "@"), ("tab", "\t="),
                       ("carriage_return", "\r=")):
    CASES[f"csv_injection_{_name}"] = _injection_case(_prefix)


@case
def c_csv_injection_in_labels_and_stdout(t, m):
    def check(t, out, err):
        rows = list(csv.reader(io.StringIO(out)))
        assert all(not c.startswith(("=", "@")) for row in rows for c in row), rows
        assert {r[1] for r in rows[1:]} <= {"'=danger", "'@food", "sports"}

    return spec(["predict", m["scratch"], _new_texts(t)], code=0, check=check)


@case
def c_csv_raw_opt_out(t, m):
    data = _table(t, "new.csv", "text\n=1+1\n")

    def check(t, out, err):
        assert list(csv.reader(io.StringIO(out)))[1][0] == "=1+1"

    return spec(["predict", m["scratch"], data, "--raw-csv"], code=0, check=check)


@case
def c_predict_overwrites_its_own_earlier_output(t, m):
    data = _new_texts(t)
    (t / "p.csv").write_text("text,prediction,confidence\nold,x,1.0\n")
    return spec(["predict", m["scratch"], data, "-o", t / "p.csv"], code=0, changes=("p.csv",))


@case
def c_predict_never_overwrites_a_users_file(t, m):
    (t / "budget.csv").write_text("month,amount\njan,100\n")
    return spec(["predict", m["scratch"], _new_texts(t), "-o", t / "budget.csv"], message="refusing to overwrite",
                names="budget.csv")


@case
def c_predict_never_overwrites_a_users_jsonl(t, m):
    (t / "log.jsonl").write_text('{"event": "login"}\n')
    return spec(["predict", m["scratch"], _new_texts(t), "-o", t / "log.jsonl"], message="refusing to overwrite",
                names="log.jsonl")


@case
def c_predict_output_is_a_fifo(t, m):
    os.mkfifo(t / "p.csv")
    return spec(["predict", m["scratch"], _new_texts(t), "-o", t / "p.csv"], message="not a regular file",
                names="p.csv")


@case
def c_report_never_overwrites_a_users_page(t, m):
    (t / "index.html").write_text("<!doctype html><p>my home page</p>")
    return spec(["report", m["scratch"], "-o", t / "index.html"], message="refusing to overwrite", names="index.html")


@case
def c_report_replaces_its_own_earlier_report(t, m):
    (t / "r.html").write_bytes((m["scratch"] / "report.html").read_bytes())
    return spec(["report", m["scratch"], "-o", t / "r.html"], code=0, changes=("r.html",))


@case
def c_pickle_dropped_in_model_folder_is_never_loaded(t, m):
    model = copy_model(m["scratch"], t / "model")
    (model / "weights.pkl").write_bytes(b"\x80\x04cos\nsystem\n(S'touch PWNED'\ntR.")
    return spec(["predict", model, _new_texts(t)], code=0,
                check=lambda t, out, err: not (Path.cwd() / "PWNED").exists())


# --- tampered model folders -----------------------------------------------------------------------------------

def _edit_manifest(model: Path, edit) -> None:
    manifest = json.loads((model / "tenni.json").read_text())
    edit(manifest)
    (model / "tenni.json").write_text(json.dumps(manifest))


def _tampered(field, edit, message, names="tenni.json"):
    def fn(t, m):
        model = copy_model(m["probe"], t / "model")
        _edit_manifest(model, edit)
        return spec(["predict", model, _new_texts(t)], message=message, names=names)
    fn.__name__ = field
    return fn


def _set(path, value):
    def edit(manifest):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _delete(path):
    def edit(manifest):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


TAMPERED = {
    "format_version_true": (_set(["format_version"], True), "format version True"),
    "format_version_float": (_set(["format_version"], 1.0), "format version 1.0"),
    "format_version_string": (_set(["format_version"], "1"), "format version '1'"),
    "format_version_future": (_set(["format_version"], 2), "format version 2"),
    "format_missing": (_delete(["format"]), "not a tenni model manifest"),
    "labels_reordered": (lambda mf: mf.update(labels=mf["labels"][::-1]), "field 'labels'"),
    "labels_renamed": (lambda mf: mf.update(labels=["a", "b", "c"]), "field 'labels'"),
    "labels_duplicated": (lambda mf: mf.update(labels=["food", "food", "weather"]), "field 'labels'|distinct"),
    "labels_not_a_list": (_set(["labels"], "food"), "label"),
    "fingerprint_removed": (_delete(["backbone", "fingerprint"]), "backbone.fingerprint"),
    "fingerprint_empty": (_set(["backbone", "fingerprint"], ""), "backbone.fingerprint"),
    "backbone_removed": (_set(["backbone"], None), "field 'backbone'"),
    "backbone_max_length_negative": (_set(["backbone", "max_length"], -1), "backbone.max_length"),
    "backbone_max_length_bool": (_set(["backbone", "max_length"], True), "backbone.max_length"),
    "strategy_unknown": (_set(["strategy", "name"], "magic"), "unknown strategy 'magic'"),
    "strategy_named_another": (_set(["strategy", "name"], "finetune"), "strategy.config"),
    "strategy_not_object": (_set(["strategy"], "probe"), "strategy"),
    "option_out_of_range": (_set(["strategy", "config", "C"], -1), "strategy.config"),
    "option_huge": (_set(["strategy", "config", "batch_size"], 1e30), "strategy.config"),
    "option_negative_batch": (_set(["strategy", "config", "batch_size"], -1), "strategy.config"),
    "option_wrong_type": (_set(["strategy", "config", "C"], "high"), "strategy.config"),
    "option_unknown": (_set(["strategy", "config", "wings"], 3), "strategy.config"),
    "config_not_object": (_set(["strategy", "config"], [1]), "strategy"),
    "seed_negative": (_set(["seed"], -5), "field 'seed'"),
    "seed_string": (_set(["seed"], "zero"), "field 'seed'"),
    "task_mismatch": (_set(["task"], "anomaly"), "does not match"),
    "modality_unknown": (_set(["modality"], "video"), "field 'modality'"),
    "metrics_not_object": (_set(["metrics"], [1, 2]), "field 'metrics'"),
    "created_not_string": (_set(["created"], 5), "field 'created'"),
    "weights_elsewhere": (_set(["weights", "file"], "../w.safetensors"), "weights other than"),
    "weights_not_object": (_set(["weights"], "weights.safetensors"), "field 'weights'"),
    "weights_hash_removed": (_delete(["weights", "sha256"]), "hash", "weights.safetensors"),
    "weights_size_wrong": (_set(["weights", "size"], 12), "the manifest says", "weights.safetensors"),
}
for _field, (_edit, _message, *_names) in TAMPERED.items():
    CASES[f"tampered_{_field}"] = _tampered(_field, _edit, _message, *_names)


@case
def c_tampered_weights_symlink_to_dev_zero(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "weights.safetensors").unlink()
    (model / "weights.safetensors").symlink_to("/dev/zero")
    return spec(["predict", model, _new_texts(t)], message="symbolic link", names="weights.safetensors")


@case
def c_tampered_weights_symlink_out_of_folder(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "weights.safetensors").rename(t / "elsewhere.safetensors")
    (model / "weights.safetensors").symlink_to(t / "elsewhere.safetensors")
    return spec(["predict", model, _new_texts(t)], message="symbolic link", names="weights.safetensors")


@case
def c_tampered_weights_fifo(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "weights.safetensors").unlink()
    os.mkfifo(model / "weights.safetensors")
    return spec(["predict", model, _new_texts(t)], message="FIFO", names="weights.safetensors")


@case
def c_tampered_manifest_fifo(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "tenni.json").unlink()
    os.mkfifo(model / "tenni.json")
    return spec(["predict", model, _new_texts(t)], message="FIFO", names="tenni.json")


@case
def c_tampered_weights_folder(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "weights.safetensors").unlink()
    (model / "weights.safetensors").mkdir()
    return spec(["predict", model, _new_texts(t)], message="a folder", names="weights.safetensors")


@case
def c_tampered_weights_missing(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "weights.safetensors").unlink()
    return spec(["predict", model, _new_texts(t)], message="missing", names="weights.safetensors")


@case
def c_tampered_weights_truncated(t, m):
    model = copy_model(m["probe"], t / "model")
    data = (model / "weights.safetensors").read_bytes()
    (model / "weights.safetensors").write_bytes(data[: len(data) // 2])
    return spec(["predict", model, _new_texts(t)], message="bytes|hash", names="weights.safetensors")


@case
def c_tampered_weights_bit_flip(t, m):
    model = copy_model(m["probe"], t / "model")
    data = bytearray((model / "weights.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (model / "weights.safetensors").write_bytes(bytes(data))
    return spec(["predict", model, _new_texts(t)], message="hash", names="weights.safetensors")


@case
def c_tampered_manifest_not_json(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "tenni.json").write_text("{not json")
    return spec(["predict", model, _new_texts(t)], message="damaged manifest", names="tenni.json")


@case
def c_tampered_manifest_a_list(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "tenni.json").write_text("[1, 2]")
    return spec(["predict", model, _new_texts(t)], message="not an object", names="tenni.json")


@case
def c_tampered_manifest_symlink(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "tenni.json").rename(t / "real.json")
    (model / "tenni.json").symlink_to(t / "real.json")
    return spec(["predict", model, _new_texts(t)], message="symbolic link", names="tenni.json")


@case
def c_tampered_manifest_missing(t, m):
    model = copy_model(m["probe"], t / "model")
    (model / "tenni.json").unlink()
    return spec(["predict", model, _new_texts(t)], message="not a tenni model", names="model")


@case
def c_tampered_other_fingerprint(t, m):
    model = copy_model(m["probe"], t / "model")
    _edit_manifest(model, _set(["backbone", "fingerprint"], "sha256:" + "0" * 64))
    return spec(["predict", model, _new_texts(t)], message="was trained on", names="model")


@case
def c_tampered_scratch_named_probe(t, m):
    model = copy_model(m["scratch"], t / "model")
    _edit_manifest(model, _set(["strategy", "name"], "probe"))
    return spec(["predict", model, _new_texts(t)], message="tenni.json", names="tenni.json")


# --- backbone folders ------------------------------------------------------------------------------------------

@case
def c_backbone_with_pickle_weights_only(t, m):
    bb = t / "bb"
    bb.mkdir()
    (bb / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    (bb / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'touch PWNED'\ntR.")

    def check(t, out, err):
        assert "weights_only" not in err and not (Path.cwd() / "PWNED").exists()

    return spec(["fit", write_labeled(t / "d.csv"), "-s", "probe", "--no-baseline", "-b", bb], message="pickle",
                names="bb", check=check)


@case
def c_backbone_folder_empty(t, m):
    (t / "bb").mkdir()
    return spec(["fit", write_labeled(t / "d.csv"), "-s", "probe", "--no-baseline", "-b", t / "bb"], names="bb")


# --- images and audio ------------------------------------------------------------------------------------------

def _png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width`` x ``height`` (its pixel data is one tiny row: only the header is read)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def _images(t: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (t / "img" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(t / "img" / label / f"{i}.png")
    return t / "img"


def _wav(path: Path, seconds: float, amplitude: float = 0.5, rate: int = 8000) -> Path:
    import soundfile as sf

    n = int(seconds * rate)
    sf.write(path, (amplitude * np.sin(np.arange(n) * 0.05)).astype(np.float32), rate)
    return path


@case
def c_image_over_pixel_limit(t, m):
    folder = _images(t)
    _png(folder / "cat" / "huge.png", 12_000, 12_000)
    return spec(["fit", folder, "-s", "probe", "--no-baseline"], message="max-pixels", names="huge.png")


@case
def c_image_over_lowered_pixel_limit(t, m):
    folder = _images(t)
    return spec(["fit", folder, "-s", "probe", "--no-baseline", "--max-pixels", "100"], message="max-pixels",
                names=".png")


@case
def c_image_raised_limit_still_checks_the_file(t, m):
    folder = _images(t)
    _png(folder / "cat" / "huge.png", 12_000, 12_000)
    return spec(["fit", folder, "-s", "probe", "--no-baseline", "--max-pixels", "200000000"],
                message="--skip-bad-files", names="huge.png",
                check=lambda t, out, err: "skip_bad_files" not in err)


@case
def c_corrupt_image(t, m):
    folder = _images(t)
    (folder / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return spec(["fit", folder, "-s", "probe", "--no-baseline"], message="--skip-bad-files", names="bad.png",
                check=lambda t, out, err: "skip_bad_files=" not in err)


@case
def c_zero_byte_image(t, m):
    folder = _images(t)
    (folder / "dog" / "empty.jpg").write_bytes(b"")
    return spec(["fit", folder, "-s", "probe", "--no-baseline"], message="zero-length", names="empty.jpg")


@case
def c_mixed_image_and_audio(t, m):
    folder = _images(t)
    _wav(folder / "dog" / "bark.wav", 0.5)
    return spec(["fit", folder], message="mixes image and audio", names="img")


@case
def c_audio_over_length_limit(t, m):
    for label in ("a", "b"):
        (t / "snd" / label).mkdir(parents=True)
        for i in range(2):
            _wav(t / "snd" / label / f"{i}.wav", 3.0)
    return spec(["fit", t / "snd", "-s", "probe", "--no-baseline", "--max-audio-seconds", "1"],
                message="max-audio-seconds", names=".wav")


@case
def c_silent_audio(t, m):
    for label in ("a", "b"):
        (t / "snd" / label).mkdir(parents=True)
        _wav(t / "snd" / label / "1.wav", 0.5)
    _wav(t / "snd" / "a" / "quiet.wav", 0.5, amplitude=0.0)
    return spec(["fit", t / "snd", "-s", "probe", "--no-baseline"], message="silent", names="quiet.wav")


@case
def c_predict_images_with_a_text_model(t, m):
    return spec(["predict", m["scratch"], _images(t)], message="text", names="img")


# --- other commands' outputs ------------------------------------------------------------------------------------

@case
def c_curve_never_replaces_a_users_curve_json(t, m):
    (t / "out").mkdir()
    (t / "out" / "curve.json").write_text('{"mine": true}')
    return spec(["curve", write_labeled(t / "d.csv"), "-o", t / "out"], message="did not write", names="out")


@case
def c_curve_never_replaces_a_users_curve_html(t, m):
    (t / "out").mkdir()
    (t / "out" / "curve.html").write_text("<p>my page</p>")
    return spec(["curve", write_labeled(t / "d.csv"), "-o", t / "out"], message="did not write", names="out")


@case
def c_curve_output_is_a_file(t, m):
    (t / "out").write_text("x")
    return spec(["curve", write_labeled(t / "d.csv"), "-o", t / "out"], message="is a file", names="out")


@case
def c_curve_output_in_proc(t, m):
    return spec(["curve", write_labeled(t / "d.csv"), "-o", "/proc/tenni-curve"], message="cannot write",
                names="/proc/tenni-curve")


@case
def c_report_output_in_proc(t, m):
    return spec(["report", m["scratch"], "-o", "/proc/r.html"], message="cannot write", names="/proc/r.html")


@case
def c_report_output_wrong_suffix(t, m):
    return spec(["report", m["scratch"], "-o", t / "r.pdf"], message="cannot write '.pdf'")


@case
def c_adapt_into_a_foreign_folder(t, m):
    (t / "out").mkdir()
    (t / "out" / "NOTES.md").write_text("mine")
    corpus = _table(t, "corpus.txt", "some text\nmore text\n")
    return spec(["adapt", corpus, "-o", t / "out", "--max-steps", "1"], message="not written by tenni",
                names="out")


@case
def c_adapt_output_in_proc(t, m):
    corpus = _table(t, "corpus.txt", "some text\nmore text\n")
    return spec(["adapt", corpus, "-o", "/proc/tenni-adapted"], message="cannot write", names="/proc/tenni-adapted")


@case
def c_adapt_corpus_folder_in_shift_jis_and_latin1(t, m):
    (t / "corpus").mkdir()
    (t / "corpus" / "a.txt").write_bytes("Facture erronée".encode("latin-1"))
    return spec(["adapt", t / "corpus", "-o", t / "out"], message="encodings tried", names="a.txt")


@case
def c_evaluate_with_missing_labels(t, m):
    return spec(["evaluate", m["scratch"], _new_texts(t)], message="label", names="new.txt")


@case
def c_check_missing_file(t, m):
    return spec(["check", t / "nope.csv"], message="no such file", names="nope.csv")


@case
def c_assess_missing_file(t, m):
    return spec(["assess", t / "nope.csv"], message="no such file", names="nope.csv")


# --- the runner ------------------------------------------------------------------------------------------------

@pytest.fixture
def models(probe_model_dir, scratch_model_dir):
    return {"probe": probe_model_dir, "scratch": scratch_model_dir}


@pytest.mark.parametrize("name", sorted(CASES))
def test_catalogue(name, tmp_path, models, capsys, monkeypatch):
    if name == "fit_output_in_read_only_folder" and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root may write into read-only folders")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "case"
    work.mkdir()
    c = CASES[name](work, models)
    before = snapshot(work)
    code, out, err = run_cli(capsys, monkeypatch, *c["args"])
    after = snapshot(work)
    assert code == c["code"], f"exit {code}, expected {c['code']}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in err, err
    if c["code"] == 2:
        line = error_line(err)
        if c["message"]:
            assert re.search(c["message"], line), line
        if c["names"]:
            assert names_file(line, c["names"]), f"the message does not name {c['names']}: {line}"
    allowed = c["changes"]
    changed = sorted(p for p in before if after.get(p) != before[p] and not any(fnmatch.fnmatch(p, a)
                                                                                for a in allowed))
    assert not changed, f"files that were there before changed or vanished: {changed}"
    created = sorted(p for p in after if p not in before and not any(fnmatch.fnmatch(p, a) for a in allowed))
    assert not created, f"files created that the case does not expect: {created}"
    if c["check"] is not None:
        assert c["check"](work, out, err) is not False
