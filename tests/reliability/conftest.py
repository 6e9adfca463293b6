"""Helpers for the bad-input catalogue: run the CLI in-process, snapshot a folder before and after, trained models
to tamper with."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from ..conftest import make_texts, run_cli, write_csv  # noqa: F401  (run_cli: the catalogue's runner)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (hidden ones too) -> a digest, read with lstat first: a FIFO or device is recorded,
    never opened, and a symlink is recorded as its target, never followed."""
    found = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                found[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(mode):
                found[rel] = "dir"
            elif stat.S_ISREG(mode):
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[rel] = "special"
    return found




def error_line(err: str) -> str:
    """The one error line of a failed command; fails the test on a traceback or a message over several lines."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    return lines[0]


def write_labeled(path: Path, per_class: int = 8, seed: int = 0) -> Path:
    texts, labels = make_texts(per_class, seed)
    return write_csv(path, texts, labels)


@pytest.fixture(scope="session")
def probe_model_dir(tmp_path_factory, train_data) -> Path:
    """A probe on the bundled MiniLM, saved: the backbone-based model the tampering cases edit."""
    import tenni
    from tenni.strategies import get_strategy_class

    out = tmp_path_factory.mktemp("reliability") / "probe-model"
    tenni.Model(get_strategy_class("probe")().fit(*train_data)).save(out)
    return out


@pytest.fixture(scope="session")
def scratch_model_dir(tmp_path_factory) -> Path:
    """A from-scratch model whose labels begin with spreadsheet formula characters."""
    import tenni
    from tenni.strategies import get_strategy_class

    texts, labels = make_texts(8, 1)
    labels = [{"weather": "=danger", "food": "@food", "sports": "sports"}[y] for y in labels]
    out = tmp_path_factory.mktemp("reliability") / "scratch-model"
    tenni.Model(get_strategy_class("scratch")(backbone=None).fit(texts, labels)).save(out)
    return out


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def names_file(line: str, path: Path | str) -> bool:
    """Whether an error line names ``path`` (as given, or by its file name)."""
    path = str(path)
    return path in line or re.search(re.escape(Path(path).name) + r"\b", line) is not None
