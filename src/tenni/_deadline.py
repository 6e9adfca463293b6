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


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1.5h' -> seconds (the CLI's --budget, and ``tenni.fit(budget='5m')``)."""
    from .errors import ConfigError

    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    try:
        if value and value[-1] in units:
            return float(value[:-1]) * units[value[-1]]
        return float(value)
    except ValueError:
        raise ConfigError(f"cannot read the duration '{text}'", hint="write e.g. 90s, 5m or 1h") from None
