"""A time limit that long-running loops check, so ``auto`` can stop a candidate that would blow its budget."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("tenni_deadline", default=None)


class BudgetExceeded(Exception):
    """Raised inside a training loop when the surrounding time budget has run out."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    token = _deadline.set(None if seconds is None else time.monotonic() + max(0.0, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def check_deadline() -> None:
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise BudgetExceeded
