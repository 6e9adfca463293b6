"""Limits on what one image or audio file may cost to read (pixels, seconds), raised per command by the CLI's
``--max-pixels`` and ``--max-audio-seconds``. A context variable, so a limit set inside ``media_limits()`` ends
with the block; a light module, so ``tenni --help`` does not import numpy for it."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import DataError

MAX_PIXELS = 89_478_485
"""Largest image (width x height) read by default: PIL's own decompression-bomb limit (~1.7 GB decoded as RGBA
at twice that); ``--max-pixels`` raises it."""
MAX_AUDIO_SECONDS = 1200.0
"""Longest audio file read by default (20 minutes: ~230 MB of float32 samples at 48 kHz); ``--max-audio-seconds``
raises it."""

_LIMITS: contextvars.ContextVar[tuple[int, float]] = contextvars.ContextVar(
    "tenni_media_limits", default=(MAX_PIXELS, MAX_AUDIO_SECONDS))


@contextmanager
def media_limits(max_pixels: int | None = None, max_audio_seconds: float | None = None) -> Iterator[None]:
    """Raise (or lower) the image-size and audio-length limits inside the block; ``None`` keeps the current one.
    Inside it, ``set_media_limits`` changes them until the block ends (what each CLI command does)."""
    token = _LIMITS.set(_LIMITS.get())
    try:
        set_media_limits(max_pixels, max_audio_seconds)
        yield
    finally:
        _LIMITS.reset(token)


def set_media_limits(max_pixels: int | None = None, max_audio_seconds: float | None = None) -> None:
    if max_pixels is not None and max_pixels < 1:
        raise DataError(f"--max-pixels must be a positive number of pixels, got {max_pixels}",
                        hint="e.g. --max-pixels 200000000")
    if max_audio_seconds is not None and not max_audio_seconds > 0:
        raise DataError(f"--max-audio-seconds must be above 0, got {max_audio_seconds}",
                        hint="e.g. --max-audio-seconds 3600")
    pixels, seconds = _LIMITS.get()
    _LIMITS.set((max_pixels or pixels, max_audio_seconds or seconds))
