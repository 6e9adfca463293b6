"""The command line: exit codes, tables, files written, one-line errors without tracebacks."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tenni.cli import main  # noqa: F401

from .conftest import run_cli

run = run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, train_csv, test_csv):
    out = tmp_path_factory.mktemp("cli") / "model"
    proc = subprocess.run([sys.executable, "-m", "tenni.cli", "fit", str(train_csv), "--test", str(test_csv),
                           "--budget", "10s", "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "auto (" in proc.stdout and "scratch" in proc.stdout and "transfer gain" in proc.stdout
    assert "auto chose" in proc.stdout
    return out


def test_fit_prints_the_table_and_saves(model_dir):
    assert (model_dir / "tenni.json").exists()


def test_fit_json(capsys, monkeypatch, train_csv):
    code, out, _ = run(capsys, monkeypatch, "fit", train_csv, "--strategy", "scratch", "--json")
    assert code == 0
    assert json.loads(out)["results"][0]["strategy"] == "scratch"


def test_predict_csv_and_jsonl(capsys, monkeypatch, model_dir, tmp_path):
    inputs = tmp_path / "new.txt"
    inputs.write_text("Heavy snow closed the roads\nI cooked curry for dinner\n")
    code, out, _ = run(capsys, monkeypatch, "predict", model_dir, inputs)
    assert code == 0
    rows = list(csv.DictReader(out.splitlines()))
    assert [r["prediction"] for r in rows] == ["weather", "food"]
    assert {"p_food", "p_sports", "p_weather", "confidence"} <= set(rows[0])
    code, _, _ = run(capsys, monkeypatch, "predict", model_dir, inputs, "-o", tmp_path / "p.jsonl")
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert code == 0 and json.loads(lines[1])["prediction"] == "food"


def test_evaluate(capsys, monkeypatch, model_dir, test_csv):
    code, out, _ = run(capsys, monkeypatch, "evaluate", model_dir, test_csv)
    assert code == 0 and "accuracy" in out and "confusion matrix" in out
    code, out, _ = run(capsys, monkeypatch, "evaluate", model_dir, test_csv, "--json")
    assert json.loads(out)["accuracy"] > 0.8


def test_models_lists_the_default(capsys, monkeypatch):
    code, out, _ = run(capsys, monkeypatch, "models", "--json")
    assert code == 0 and any(r["name"] == "text/minilm" and r["offline"] for r in json.loads(out))


def test_models_lists_the_generative_backbone_too(capsys, monkeypatch):
    code, out, _ = run(capsys, monkeypatch, "models", "llm/*", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["llm/smollm2-135m-instruct"]
    assert rows[0]["modality"] == "text-to-text"


@pytest.mark.parametrize("args, message", [
    (["fit", "missing.csv"], "no such file"),
    (["fit", "{train}", "--strategy", "magic"], "unknown strategy 'magic'"),
    (["fit", "{train}", "--set", "epochs"], "KEY=VALUE"),
    (["fit", "{train}", "--text-col", "body"], "columns found"),
    (["fit", "{train}", "--budget", "soon"], "cannot read the duration"),
    (["fit", "{train}", "-s", "probe", "--budget", "5m"], "--strategy auto only"),
    (["predict", "{tmp}", "{train}"], "not a tenni model"),
    (["fit", "{train}", "--seed", "-1"], "seed must be a whole number"),
    (["assess", "{train}", "--seed", "-1"], "seed must be a whole number"),
    (["fit", "{train}", "-s", "probe", "--set", "C=-1"], "option C must be above 0"),
    (["fit", "{train}", "-s", "finetune", "--set", "dropout=1.5"], "option dropout must be between 0 and 1"),
    (["fit", "{train}", "-s", "probe", "--set", "class_weight=bogus"], "'balanced' or none"),
    (["fit", "{train}", "-s", "probe", "--set", "=3"], "KEY=VALUE"),
    (["fit", "{train}", "--test-size", "1.5"], "hold-out share must be between 0 and 1"),
    (["fit", "{train}", "--budget", "0s"], "option budget must be above 0"),
    (["predict", "{tmp}", "{train}", "-o", "{tmp}/p.xlsx"], "cannot write '.xlsx'"),
    (["predict", "{tmp}", "{train}", "-o", "{tmp}"], "is a folder"),
    (["curve", "{train}", "--budgets", "2,x"], "--budgets takes whole numbers"),
    (["curve", "{train}", "--seeds", "0"], "at least 1 seed"),
    (["curve", "{train}", "--target", "5"], "--target is an accuracy"),
])
def test_bad_input_exits_2_with_one_line(capsys, monkeypatch, tmp_path, train_csv, args, message):
    args = [a.format(train=train_csv, tmp=tmp_path) for a in args]
    code, _, err = run(capsys, monkeypatch, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["fit"], "Missing argument"),
    (["fit", "{train}", "--seed", "abc"], "Invalid value"),
    (["fit", "{train}", "--no-such-option"], "No such option"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_exit_2_without_a_traceback(capsys, monkeypatch, train_csv, args, message):
    code, _, err = run(capsys, monkeypatch, *[a.format(train=train_csv) for a in args])
    assert code == 2
    assert message in err and "Traceback" not in err


def test_user_text_is_never_read_as_markup(capsys, monkeypatch, tmp_path):
    from .conftest import make_texts, write_csv

    texts, labels = make_texts(6, seed=9)
    texts[0] = "[urgent] [/url] " + texts[0]
    data = write_csv(tmp_path / "m.csv", texts + [texts[0]], labels + [labels[0]])
    code, out, err = run(capsys, monkeypatch, "check", data, "--backbone", "text/minilm")
    assert code == 0 and "[urgent] [/url]" in out


def test_console_script_bad_file_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,a\n,b\n")
    proc = subprocess.run([sys.executable, "-m", "tenni.cli", "fit", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "bad.csv:3" in proc.stderr and "Traceback" not in proc.stderr
