"""Features on disk, keyed by (backbone fingerprint, content hash of each input).

The encoder is the expensive part of every strategy that uses frozen features, and of assess, curves and CV.
Caching per item (not per dataset) means any subset, fold or re-run of data seen before costs no encoding at all.
Features are written in shards as encoding goes, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np

from .._paths import cache_dir


def content_key(item: str) -> bytes:
    return hashlib.blake2b(item.encode("utf-8"), digest_size=16).digest()


class FeatureCache:
    def __init__(self, fingerprint: str, root: Path | None = None):
        safe = fingerprint.replace(":", "-").replace("/", "_")
        self.dir = (root or cache_dir() / "features") / safe
        self._index: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            from safetensors.numpy import load_file

            index: dict[bytes, np.ndarray] = {}
            shards = sorted(self.dir.glob("*.safetensors")) if self.dir.exists() else []
            if self.dir.exists():
                for shard in shards:
                    try:
                        tensors = load_file(str(shard))
                    except Exception:  # a damaged shard is only a cache miss
                        continue
                    keys, feats = tensors.get("keys"), tensors.get("features")
                    if keys is None or feats is None:
                        continue
                    for k, row in zip(keys, feats):
                        index[k.tobytes()] = row
            self._index = index
            if len(shards) > self.max_shards:
                self._compact(shards)
        return self._index

    max_shards = 16

    def _compact(self, shards) -> None:
        """Many small shards (one per predict call) become one, so loading stays one read."""
        from safetensors.numpy import save_file

        keys = list(self._index)
        merged = self.dir / f"{uuid.uuid4().hex}.safetensors"
        tmp = self.dir / f".{merged.name}.tmp"
        save_file({"keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1),
                   "features": np.stack([self._index[k] for k in keys]).astype(np.float32)}, str(tmp))
        tmp.replace(merged)
        for shard in shards:
            shard.unlink(missing_ok=True)

    def get(self, keys: list[bytes]) -> list[np.ndarray | None]:
        index = self._load()
        return [index.get(k) for k in keys]

    def put(self, keys: list[bytes], features: np.ndarray) -> None:
        from safetensors.numpy import save_file

        if not keys:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        arr_keys = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        feats = np.ascontiguousarray(features, dtype=np.float32)
        name = uuid.uuid4().hex
        tmp = self.dir / f".{name}.tmp"
        save_file({"keys": arr_keys, "features": feats}, str(tmp))
        tmp.replace(self.dir / f"{name}.safetensors")
        index = self._load()
        for k, row in zip(keys, feats):
            index[k] = row
