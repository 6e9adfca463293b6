"""Errors a user can act on.

Every error tenni raises for bad input is a :class:`TenniError`: one line that names the file, the row or column
when there is one, and a fix. The CLI prints it and exits with code 2 instead of showing a traceback.
"""

from __future__ import annotations

from pathlib import Path


class TenniError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is a single, complete line."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, row: int | None = None,
                 column: str | None = None, hint: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.row = row
        self.column = column
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.path:
            where = self.path
            if self.row is not None:
                where += f":{self.row}"
            where += ": "
        elif self.row is not None:
            where = f"row {self.row}: "
        text = where + self.message
        if self.column is not None and f"'{self.column}'" not in self.message:
            text += f" (column '{self.column}')"
        if self.hint:
            text += f" — {self.hint}"
        return text


class DataError(TenniError):
    """The data given to tenni cannot be used as it is."""


class BackboneError(TenniError):
    """A backbone cannot be found, loaded or used the way that was asked."""


class ModelFileError(TenniError):
    """A saved model directory is missing, damaged, or from an unknown format."""


class ConfigError(TenniError):
    """A strategy or option was given a value it cannot take."""
