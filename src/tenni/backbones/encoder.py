"""What every backbone shares: the identity of its weights, and the one encode-through-the-cache loop.

A backbone's ``encode(items)`` returns one feature row per item. Items seen before (the same text, or a file with
the same bytes, under the same weights and preprocessing) come from the on-disk :class:`FeatureCache`; the rest
are embedded in chunks by the backbone's own ``embed`` and written to the cache chunk by chunk, so an interrupted
run resumes where it stopped and a budget (``check_deadline``) can stop it between chunks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .._deadline import check_deadline
from .._logging import progress
from .._paths import atomic_write_json, cache_dir, sha256_file
from ..errors import BackboneError
from .cache import FeatureCache, content_key

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.onnx")


def read_json(path: Path, *, strict: bool = False) -> dict:
    """A model folder's JSON file as a dict ({} when absent); unreadable JSON is {} too, or, with ``strict``, a
    BackboneError naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        if strict:
            raise BackboneError(f"invalid JSON: {err}", path=path) from None
        return {}


def weight_files(folder: Path, patterns: tuple[str, ...] = WEIGHT_PATTERNS) -> list[Path]:
    files = sorted({p for pattern in patterns for p in Path(folder).rglob(pattern) if p.is_file()})
    return [p for p in files if "onnx" not in p.parts]  # exported copies do not change the model


def weights_fingerprint(folder: Path, patterns: tuple[str, ...] = WEIGHT_PATTERNS) -> str:
    """sha256 over the weight files of a model folder, memoised on disk by (path, size, mtime)."""
    folder = Path(folder)
    files = weight_files(folder, patterns)
    if not files:
        raise BackboneError("no weight files (*.safetensors, *.bin) in the model folder", path=folder)
    stamp = ";".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    memo_path = cache_dir() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    key = str(folder.resolve()) + ("" if patterns == WEIGHT_PATTERNS else ":" + ",".join(patterns))
    if memo.get(key, {}).get("stamp") == stamp:
        return memo[key]["sha256"]
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(folder)).encode())
        digest.update(sha256_file(p).encode())
    value = "sha256:" + digest.hexdigest()
    memo[key] = {"stamp": stamp, "sha256": value}
    try:
        atomic_write_json(memo_path, memo)
    except OSError:
        pass
    return value


class CachedEncoder:
    """Base of every backbone: ``fingerprint``, ``cache`` and ``encode``; a subclass says how to embed a chunk of
    items without the cache (``embed``), how its items are keyed (``item_key``) and what besides the weights
    shapes its features (``cache_tag``)."""

    name: str
    path: Path
    dim: int = 0
    weight_patterns: tuple[str, ...] = WEIGHT_PATTERNS
    default_batch_size = 16

    @property
    def fingerprint(self) -> str:
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = weights_fingerprint(self.path, patterns=self.weight_patterns)
        return self._fingerprint

    def cache_tag(self) -> str:
        """Part of the cache key: the same weights with other preprocessing give other features."""
        return "v1"

    @property
    def cache(self) -> FeatureCache:
        if getattr(self, "_cache", None) is None:
            self._cache = FeatureCache(f"{self.fingerprint}-{self.cache_tag()}")
        return self._cache

    def item_key(self, item: str) -> bytes:
        return content_key(item)

    def chunk_size(self, batch_size: int) -> int:
        """Items embedded between two cache writes (and two checks of the time budget)."""
        return batch_size

    def embed(self, items: list[str], batch_size: int) -> np.ndarray:
        """Features for a chunk of items, without the cache."""
        raise NotImplementedError

    def encode(self, items: list[str], *, batch_size: int | None = None, show_progress: bool = True) -> np.ndarray:
        """One feature row per item; items seen before come from the cache, the rest are embedded once each."""
        keys = [self.item_key(str(item)) for item in items]
        found = self.cache.get(keys)
        todo: dict[bytes, str] = {}
        for key, item, feat in zip(keys, items, found):
            if feat is None:
                todo.setdefault(key, str(item))
        if todo:
            pending = list(todo.items())
            if getattr(self, "modality", "text") == "text":  # chunks of similar length: less padding per batch
                pending.sort(key=lambda kv: len(kv[1]))
            step = batch_size or self.default_batch_size
            chunk = self.chunk_size(step)
            label = f"embedding ({self.name.rsplit('/', 1)[-1]})"
            with progress(label, len(pending) if show_progress else None) as bar:
                for start in range(0, len(pending), chunk):
                    check_deadline()  # what was embedded so far stays in the cache
                    part = pending[start:start + chunk]
                    feats = np.asarray(self.embed([item for _, item in part], step), dtype=np.float32)
                    self.cache.put([k for k, _ in part], feats)
                    bar.advance(len(part))
            found = self.cache.get(keys)
        return np.stack(found).astype(np.float32, copy=False) if found else np.zeros((0, self.dim), np.float32)
