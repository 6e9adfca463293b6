"""The pieces behind the catalogue, one defect each: bounded tokenising, thread pools, CV progress, the replace rules
of AtomicDirectory and owned files, the CSV escaping rule, the CP932 evidence rule."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ..conftest import make_texts


class _SpyTokenizer:
    """Records the longest text it is given; returns one token per word (enough for Tokenized)."""

    def __init__(self):
        self.longest = 0

    def __call__(self, texts, truncation=True, max_length=None, **kwargs):
        self.longest = max(self.longest, max(len(t) for t in texts))
        return {"input_ids": [[1] * min(len(t.split()), max_length or 10**9) for t in texts]}


def test_tokenized_cuts_characters_before_tokenising():
    from tenni.strategies._torch import Tokenized

    spy = _SpyTokenizer()
    huge = "word " * 10_000_000  # 50 MB
    data = Tokenized(spy, [huge, "short text"], max_length=32)
    assert spy.longest <= 32 * 16
    assert len(data.ids[0]) == 32  # still max_length tokens: nothing that was kept is lost


def test_backbone_encode_cuts_characters_before_the_model(tiny_backbone, monkeypatch):
    from tenni.backbones.text import TextBackbone

    seen = []

    class Fake:
        def encode(self, texts, **kwargs):
            seen.extend(len(t) for t in texts)
            return np.zeros((len(texts), 4), np.float32)

    bb = TextBackbone("tiny-for-clip", tiny_backbone, max_length=64)
    monkeypatch.setattr(bb, "sentence_transformer", lambda: Fake())
    huge = "word " * 10_000_000 + "unique-tail"
    features = bb.encode([huge, "short"])
    assert features.shape == (2, 4) and max(seen) <= 64 * 16


def test_cpu_threads_sizes_and_restores(monkeypatch):
    from tenni._threads import cpu_threads, usable_cores

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert usable_cores() <= len(os.sched_getaffinity(0))
    with cpu_threads(1) as n:
        assert n == 1 and os.environ["OPENBLAS_NUM_THREADS"] == "1"
        from threadpoolctl import threadpool_info

        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert "OPENBLAS_NUM_THREADS" not in os.environ


def test_cpu_threads_keeps_what_the_user_set(monkeypatch):
    from tenni._threads import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with cpu_threads(1):
        assert os.environ["OMP_NUM_THREADS"] == "7"
    assert os.environ["OMP_NUM_THREADS"] == "7"


def test_importing_the_cli_changes_no_thread_setting(monkeypatch):
    import importlib
    import sys

    before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    sys.modules.pop("tenni._threads", None)
    importlib.reload(importlib.import_module("tenni.cli"))
    assert {k: os.environ.get(k) for k in before} == before


def test_cross_validation_shows_progress(monkeypatch):
    import contextlib

    import tenni
    from tenni import _logging

    steps = []

    @contextlib.contextmanager
    def spy(description, total):
        class Task:
            def advance(self, n=1):
                steps.append(description)

            def update(self, **kwargs):
                pass

        yield Task()

    monkeypatch.setattr(_logging, "progress", spy)
    monkeypatch.setattr("tenni.evaluation.protocol.progress", spy)
    texts, labels = make_texts(6, 0)
    tenni.fit((texts, labels), strategy="scratch", evaluation="cv", baseline=False)
    cv = [s for s in steps if s.startswith("cross-validation")]
    assert cv and len(cv) == 10  # 5 folds x 2 repeats, one strategy


def test_atomic_directory_carries_the_users_files_into_the_new_folder(tmp_path):
    from tenni._paths import AtomicDirectory

    out = tmp_path / "adapted"
    with AtomicDirectory(out, marker="lineage.json") as tmp:
        (tmp / "lineage.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"old")
    (out / "NOTES.md").write_text("my notes")
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref")
    with AtomicDirectory(out, marker="lineage.json") as tmp:
        (tmp / "lineage.json").write_text('{"v": 2}')
        (tmp / "model.safetensors").write_bytes(b"new")
    assert (out / "model.safetensors").read_bytes() == b"new"
    assert (out / "NOTES.md").read_text() == "my notes" and (out / ".git" / "HEAD").read_text() == "ref"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted"]


def test_owned_files_may_be_replaced_others_not(tmp_path):
    from tenni._paths import unowned, write_owned

    write_owned(tmp_path, {"curve.json": b"{}"})
    assert unowned(tmp_path, ["curve.json", "curve.html"]) == []
    (tmp_path / "curve.html").write_text("mine")
    (tmp_path / "curve.json").write_text('{"edited": 1}')
    assert unowned(tmp_path, ["curve.json", "curve.html"]) == ["curve.json", "curve.html"]


@pytest.mark.parametrize("value, escaped", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), ("plain", "plain"), (" =1", " =1"), (0.5, 0.5), ("", ""),
])
def test_escape_cell(value, escaped):
    from tenni.outputs import escape_cell

    assert escape_cell(value) == escaped


def test_write_predictions_escapes_headers_unless_raw(tmp_path):
    from tenni.outputs import write_predictions

    rows = [{"=id": "=1", "prediction": "-x", "confidence": 0.5}]
    write_predictions(rows, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines() == ["'=id,prediction,confidence", "'=1,'-x,0.5"]
    write_predictions(rows, tmp_path / "raw.csv", raw=True)
    assert (tmp_path / "raw.csv").read_text().splitlines()[1] == "=1,-x,0.5"
    write_predictions(rows, tmp_path / "p.jsonl")
    assert '"=1"' in (tmp_path / "p.jsonl").read_text()


@pytest.mark.parametrize("text, japanese", [
    ("今日は晴れです", True),
    ("ｶﾀｶﾅのテキスト", True),
    ("billing £".encode("cp1252").decode("cp932", errors="replace"), False),
    ("Facture erronée".encode("latin-1").decode("cp932", errors="replace"), False),
    ("経済政治", False),  # kanji alone: not enough evidence (the error suggests --encoding cp932)
    ("plain ascii", True),
])
def test_cp932_needs_strong_evidence(text, japanese):
    from tenni.data.readers import _looks_japanese

    assert _looks_japanese(text) is japanese


def test_check_writable(tmp_path):
    from tenni._paths import check_writable
    from tenni.errors import TenniError

    check_writable(tmp_path / "new" / "deeper" / "file.csv")
    check_writable(tmp_path / "folder", folder=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(TenniError, match="is a file"):
        check_writable(tmp_path / "f", folder=True)
    with pytest.raises(TenniError, match="is a file"):
        check_writable(tmp_path / "f" / "x.csv")
    with pytest.raises(TenniError, match="cannot write"):
        check_writable("/proc/tenni.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"], "the probe leaves nothing behind"


def test_adapt_over_an_adapted_backbone_keeps_the_users_files(tiny_backbone, tmp_path):
    from tenni.adapt import adapt

    corpus = [f"Sensor {i} reported vibration on line {i % 5}." for i in range(24)]
    config = {"batch_size": 8, "max_steps": 1, "max_length": 16, "method": "simcse"}
    out = adapt(corpus, tmp_path / "adapted", backbone=str(tiny_backbone), config=config)
    (out / "NOTES.md").write_text("why this backbone exists")
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main")
    adapt(corpus, out, backbone=str(tiny_backbone), config=dict(config, seed=1))
    assert (out / "NOTES.md").read_text() == "why this backbone exists"
    assert (out / ".git" / "HEAD").read_text() == "ref: refs/heads/main"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted"], "no temporary folder left behind"


def test_adapt_reads_a_latin1_corpus_folder_with_encoding(tmp_path):
    from tenni.adapt.continued import read_corpus
    from tenni.errors import DataError

    (tmp_path / "a.txt").write_bytes("Facture erronée".encode("latin-1"))
    (tmp_path / "b.txt").write_bytes("請求書が間違っています".encode("shift_jis"))
    with pytest.raises(DataError, match="encodings tried"):
        read_corpus(tmp_path)
    (tmp_path / "b.txt").unlink()
    assert read_corpus(tmp_path, encoding="latin-1") == ["Facture erronée"]


def test_a_progress_bar_asked_not_to_show_prints_nothing(monkeypatch, capsys):
    """``total=None`` is how callers say "not here" (the cross-check's inner rounds, a job's encodings): it printed
    an empty bar with an unknown total before, four of them in a self-training fit's output."""
    from tenni import _logging

    monkeypatch.delenv("TENNI_NO_PROGRESS", raising=False)
    monkeypatch.setattr(_logging, "_quiet", False)
    with _logging.progress("hidden", None) as bar:
        bar.advance(2)
    assert capsys.readouterr().err == ""
    with _logging.progress("shown", 2) as bar:
        bar.advance(2)
    assert "shown" in capsys.readouterr().err
