"""Interrupts are failures: Ctrl-C (SIGINT) or SIGTERM during any command prints one line (what was saved, how to
resume) and exits 130 or 143, leaving every file as it was. Real subprocesses receive real signals during a step
made slow on purpose; the in-process cases cover every command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import copy_model, run_cli, snapshot, write_labeled

# the command's slow step is replaced by a sleep that says when it has started, so the signal lands inside it
WRAPPER = """
import sys, time
target, argv = sys.argv[1], sys.argv[2:]
module_name, attr = target.rsplit(".", 1)
import importlib
module = importlib.import_module(module_name)
def slow(*args, **kwargs):
    print("ready", file=sys.stderr, flush=True)
    time.sleep(120)
setattr(module, attr, slow)
sys.argv = ["tenni", *argv]
from tenni.cli import main
main()
"""

SLOW_STEPS = {"fit": "tenni.api.fit", "predict": "tenni.api.load", "curve": "tenni.evaluation.curve.run_curve",
              "adapt": "tenni.adapt.adapt", "check": "tenni.assess.check_labels"}


def _run_and_signal(args: list[str], target: str, signum: int, cwd: Path) -> tuple[int, str]:
    paths = [os.environ.get("PYTHONPATH", ""), str(Path(__file__).parents[2] / "src")]  # the tenni under test
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, target, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:  # wait until the slow step has started
            lines.append(line)
            if line.strip() == "ready":
                break
        proc.send_signal(signum)
        rest = proc.communicate(timeout=120)[1]
    except BaseException:
        proc.kill()
        raise
    return proc.returncode, "".join(lines) + (rest or "")


@pytest.mark.parametrize("command, signum, expected", [
    ("fit", signal.SIGINT, 130),
    ("fit", signal.SIGTERM, 143),
    ("predict", signal.SIGINT, 130),
    ("predict", signal.SIGTERM, 143),
    ("curve", signal.SIGTERM, 143),
    ("adapt", signal.SIGINT, 130),
])
def test_a_signal_during_a_slow_step(command, signum, expected, tmp_path, scratch_model_dir):
    work = tmp_path / "case"
    work.mkdir()
    data = write_labeled(work / "d.csv")
    model = copy_model(scratch_model_dir, work / "model")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref\n")
    (work / "new.txt").write_text("Heavy snow closed the roads\n")
    args = {"fit": ["fit", data, "-o", model],
            "predict": ["predict", model, work / "new.txt", "-o", work / "p.csv"],
            "curve": ["curve", data, "-o", work / "curve"],
            "adapt": ["adapt", work / "new.txt", "-o", work / "adapted"]}[command]
    before = snapshot(work)
    code, err = _run_and_signal(args, SLOW_STEPS[command], signum, work)
    assert code == expected, err
    assert "Traceback" not in err, err
    said = [line for line in err.splitlines() if line.startswith(("interrupted:", "terminated:"))]
    assert len(said) == 1, err
    assert snapshot(work) == before, "an interrupted command changed or left files"


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command, target", [
    ("fit", "tenni.api.fit"), ("predict", "tenni.api.load"), ("evaluate", "tenni.api.load"),
    ("assess", "tenni.assess.assess"), ("check", "tenni.assess.check_labels"),
    ("curve", "tenni.evaluation.curve.run_curve"), ("report", "tenni.report.write_report"),
    ("adapt", "tenni.adapt.adapt"), ("models", "tenni.backbones.list_backbones"),
])
def test_ctrl_c_in_every_command_exits_130_with_one_line(command, target, tmp_path, capsys, monkeypatch,
                                                         scratch_model_dir):
    import importlib

    module_name, attr = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module_name), attr, _interrupt)
    data = write_labeled(tmp_path / "d.csv")
    (tmp_path / "new.txt").write_text("Heavy snow\n")
    args = {"fit": ["fit", data], "predict": ["predict", scratch_model_dir, tmp_path / "new.txt"],
            "evaluate": ["evaluate", scratch_model_dir, data], "assess": ["assess", data], "check": ["check", data],
            "curve": ["curve", data, "-o", tmp_path / "curve"], "report": ["report", scratch_model_dir],
            "adapt": ["adapt", tmp_path / "new.txt", "-o", tmp_path / "adapted"], "models": ["models"]}[command]
    code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 130, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), err


def test_the_interrupt_line_says_what_was_saved_and_how_to_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tenni.api.fit", _interrupt)
    code, _, err = run_cli(capsys, monkeypatch, "fit", write_labeled(tmp_path / "d.csv"), "-o", tmp_path / "m")
    assert code == 130 and "no model was saved" in err and "again" in err
    assert not (tmp_path / "m").exists()


def test_signals_are_restored_after_a_command(tmp_path, capsys, monkeypatch):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    run_cli(capsys, monkeypatch, "version")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
