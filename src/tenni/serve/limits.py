"""What one request may ask of the server, and how long a client may take to ask it.

Every bound is a field of :class:`Limits` so a deployment can change it (``create_app(limits=Limits(...))``); the
defaults suit a small classifier on a CPU behind an internal API.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body (base64 images included); larger ones get 413 before they are read."""
    max_items: int = 256
    """Inputs per request."""
    max_text_chars: int = 20_000
    """Characters per text (backbones truncate long texts anyway; this bounds memory and tokenizer time)."""
    max_image_pixels: int = 40_000_000
    """Width x height per image, read from the header before the image is decoded."""
    max_audio_seconds: float = 600.0
    """Length per audio clip."""
    read_timeout_s: float = 30.0
    """Time a client may take to send its whole request body (a slow client gets 408, not a held connection)."""
    keep_alive_s: float = 5.0
    """Idle time before a keep-alive connection is closed (uvicorn's timeout_keep_alive)."""
    graceful_shutdown_s: float = 30.0
    """On SIGTERM/Ctrl-C: time in-flight requests get to finish (uvicorn's timeout_graceful_shutdown)."""
    max_connections: int = 1024
    """Open connections per worker; beyond it uvicorn answers 503 (uvicorn's limit_concurrency)."""
    max_header_bytes: int = 64 * 1024
    """Largest request head (h11_max_incomplete_event_size)."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"Limits.{field.name} must be a positive number, not {value!r}")
