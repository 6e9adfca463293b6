"""Changes to process-wide state (environment variables, a library's log level, an attribute of a module), made
only inside a ``with`` block and restored when it ends, so that using tenni as a library leaves the host process
as it found it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.RLock()


@contextmanager
def temporary_env(**values: str) -> Iterator[None]:
    """Set environment variables for the block; each is put back (or removed) afterwards."""
    with _lock:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
    try:
        yield
    finally:
        with _lock:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


@contextmanager
def patched(owner, name: str, value) -> Iterator[None]:
    """``owner.name = value`` for the block (one thread at a time), then the original again."""
    with _lock:
        original = getattr(owner, name)
        setattr(owner, name, value)
        try:
            yield
        finally:
            setattr(owner, name, original)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own warnings and progress bars off for the block (tenni says what matters in one line and
    shows its own progress); its verbosity and progress-bar setting restored afterwards."""
    import transformers
    from transformers.utils import logging as hf_logging

    with _lock:
        verbosity = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        transformers.logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        with _lock:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()


@contextmanager
def quiet_logging(*names: str, level: int = 40) -> Iterator[None]:
    """Loggers ``names`` (and their children) report only ``level`` and above for the block, then as before:
    e.g. bitsandbytes' warning, on import, that an optional kernel package is missing."""
    import logging

    with _lock:
        loggers = [logging.getLogger(name) for name in names]
        saved = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(level)
    try:
        yield
    finally:
        with _lock:
            for lg, old in zip(loggers, saved):
                lg.setLevel(old)


def import_peft():
    """``peft``, imported without the warnings of its optional bitsandbytes backend."""
    with quiet_logging("bitsandbytes"):
        import peft
    return peft
