"""Where training loops leave resumable checkpoints, set for one run by whoever started it (``tenni fit -o DIR``
keeps them in ``DIR.partial``).

Like the time budget (:mod:`._deadline`) it is a context, not a global: ``with checkpointing(folder, resume):``
around a fit, and every training call inside asks :func:`next_slot` for its own sub-folder, numbered in the order
the calls run (a fit is deterministic, so the n-th call of a rerun is the n-th call of the interrupted run; each
slot also records a key of what it trains, and a slot whose key differs is started afresh).
"""

from __future__ import annotations

import contextvars
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MARKER = "tenni-checkpoints.json"
"""The file that says a folder holds tenni's checkpoints (and so may be replaced or removed by tenni)."""


@dataclass
class Slot:
    """One training call's checkpoint folder, and whether to continue from what it holds."""

    folder: Path
    resume: bool


@dataclass
class Checkpoints:
    folder: Path
    resume: bool
    calls: int = 0

    def next_slot(self) -> Slot:
        self.calls += 1
        return Slot(self.folder / f"train-{self.calls}", self.resume)


_current: contextvars.ContextVar[Checkpoints | None] = contextvars.ContextVar("tenni_checkpoints", default=None)


def check_folder(folder: Path) -> None:
    """Refuse a folder tenni did not write (it would be replaced or removed later)."""
    from .errors import TenniError

    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARKER).exists())):
        raise TenniError("exists and does not hold tenni's checkpoints; refusing to use it", path=folder,
                         hint="move it away, or choose another output folder")


@contextmanager
def checkpointing(folder: str | Path | None, resume: bool = False, *,
                  main: bool = True) -> Iterator[Checkpoints | None]:
    """Training calls inside keep checkpoints in ``folder`` (None: none are kept). Without ``resume`` an earlier
    run's checkpoints there are dropped first; with it, each call continues from its own. Only the ``main``
    process (rank 0 of a data-parallel run) creates or clears the folder."""
    if folder is None:
        token = _current.set(None)
        try:
            yield None
        finally:
            _current.reset(token)
        return
    from ._logging import info
    from ._paths import atomic_write_json

    folder = Path(folder)
    if main:  # the other ranks leave the folder to the main one (which may be writing in it already)
        check_folder(folder)
        if folder.exists() and not resume:
            info(f"{folder} holds checkpoints of an earlier run: starting over (add --resume to continue it)")
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / MARKER).exists():
            atomic_write_json(folder / MARKER, {"what": "tenni training checkpoints; removed once the model is saved"})
    run = Checkpoints(folder, resume)
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def next_slot() -> Slot | None:
    """The next training call's checkpoint slot, or None when no checkpoints are kept."""
    run = _current.get()
    return None if run is None else run.next_slot()


def remove(folder: str | Path) -> None:
    """Drop a run's checkpoints once its result is safely saved (only a folder tenni marked as its own)."""
    folder = Path(folder)
    if (folder / MARKER).exists():
        shutil.rmtree(folder, ignore_errors=True)
