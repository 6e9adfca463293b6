"""Warnings and progress bars that go to the terminal (stderr), never into predictions on stdout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

_quiet = bool(os.environ.get("TENNI_QUIET"))


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = value


def warn(message: str) -> None:
    """A one-line warning the user should read (unseen labels, language mismatch...)."""
    if not _quiet:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    if not _quiet:
        from rich.console import Console

        Console(stderr=True).print(message, highlight=False, soft_wrap=True, markup=False)


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **kwargs) -> None:
        pass


class _Task:
    def __init__(self, progress, task_id):
        self._progress = progress
        self._id = task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)

    def update(self, **kwargs) -> None:
        self._progress.update(self._id, **kwargs)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[_Task | _NullTask]:
    """A rich progress bar on stderr for anything slow (encoding, training); silent when quiet, and for a ``total`` of
    None (a caller told not to show one: the cross-check's inner rounds, encodings inside a job)."""
    if _quiet or total is None or os.environ.get("TENNI_NO_PROGRESS"):
        yield _NullTask()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task_id = bar.add_task(description, total=total)
        yield _Task(bar, task_id)
