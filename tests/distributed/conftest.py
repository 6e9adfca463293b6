"""Every test here is bounded in time: an alarm fails a test that hangs (a cluster that never answers), since
pytest-timeout is not a dependency; subprocesses have their own timeouts."""

from __future__ import annotations

import signal

import pytest

LIMIT_S = 900


@pytest.fixture(autouse=True)
def _time_limit():
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"test ran past {LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
