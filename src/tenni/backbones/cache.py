"""Features on disk, keyed by (backbone fingerprint, content hash of each input).

The encoder is the expensive part of every strategy that uses frozen features, and of assess, curves and CV.
Caching per item (not per dataset) means any subset, fold or re-run of data seen before costs no encoding at all.
Features are written in shards as encoding goes, so an interrupted run resumes where it stopped.

``TENNI_CACHE_DIR`` may be a folder that several processes (or machines, on shared storage) use at once: every
shard is written under a temporary name and renamed into place, so a reader sees a whole shard or none; compaction
(many small shards merged into one) holds an exclusive ``flock`` on the folder's ``.lock`` file, re-reads the
shards under it and deletes only those it merged, while readers hold a shared lock and, where locks are not
supported, re-list the folder when a shard vanishes under them. Concurrent writers therefore never lose or corrupt
an entry; at worst two processes encode the same item twice.

``TENNI_FEATURE_CACHE=off`` keeps features in memory only, each served once to the call that encoded it: for
one-pass jobs over millions of items (``tenni predict --engine ray``), where a cache would only grow.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

import numpy as np

from .._paths import atomic_write_bytes, cache_dir


def content_key(item: str) -> bytes:
    return hashlib.blake2b(item.encode("utf-8"), digest_size=16).digest()


@contextlib.contextmanager
def _locked(folder: Path, exclusive: bool):
    """Yields True while ``folder/.lock`` is held (exclusive: only if free at once), False when the lock is taken
    by someone else (exclusive) or the file system offers no locks (then the caller proceeds unlocked, or skips)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; readers still re-list when a shard vanishes
        yield False
        return
    try:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except OSError:  # held by another compaction, or no lock support (some network/FUSE mounts)
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class FeatureCache:
    max_shards = 16
    """More shards than this (one per predict call) are merged into one when the cache is next loaded."""

    def __init__(self, fingerprint: str, root: str | Path | None = None):
        safe = fingerprint.replace(":", "-").replace("/", "_")
        self.dir = (Path(root) if root else cache_dir() / "features") / safe
        self._index: dict[bytes, np.ndarray] | None = None
        self._transient: dict[bytes, np.ndarray] = {}

    @property
    def persist(self) -> bool:
        """False while ``TENNI_FEATURE_CACHE=off``: read at each call, so it can be switched for one block."""
        return os.environ.get("TENNI_FEATURE_CACHE", "on").strip().lower() not in ("off", "0", "false", "no")

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.safetensors")) if self.dir.exists() else []

    def _read_all(self, index: dict[bytes, np.ndarray]) -> tuple[list[Path], list[Path]]:
        """Adds every shard's rows to ``index``; (shards read, shards damaged). A shard that vanishes while being
        read was merged by a compaction into a newer shard, so the folder is listed again (a few times at most)."""
        from safetensors.numpy import load_file

        done: set[Path] = set()
        read, damaged = [], []
        for _ in range(8):
            vanished = False
            for shard in self._shards():
                if shard in done:
                    continue
                done.add(shard)
                try:
                    tensors = load_file(str(shard))
                except FileNotFoundError:
                    vanished = True
                    continue
                except Exception:  # a damaged shard is only a cache miss
                    damaged.append(shard)
                    continue
                keys, feats = tensors.get("keys"), tensors.get("features")
                if keys is None or feats is None or len(keys) != len(feats):
                    damaged.append(shard)
                    continue
                for k, row in zip(keys, feats):
                    index.setdefault(k.tobytes(), row)
                read.append(shard)
            if not vanished:
                break
        return read, damaged

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            index: dict[bytes, np.ndarray] = {}
            if self.dir.exists():
                with _locked(self.dir, exclusive=False):
                    read, damaged = self._read_all(index)
                if len(read) + len(damaged) > self.max_shards:
                    self._compact(index)
            self._index = index
        return self._index

    def _compact(self, index: dict[bytes, np.ndarray]) -> None:
        """Many small shards (one per predict call) become one, so loading stays one read.

        Under the exclusive lock the shards are read again (others may have written since), the merged shard is
        renamed into place, and only then are the shards it holds deleted: an entry is always in some shard. When
        another process is compacting, or the folder cannot be locked, this one leaves the shards as they are.
        """
        from safetensors.numpy import save

        with _locked(self.dir, exclusive=True) as held:
            if not held:
                return
            merged_index: dict[bytes, np.ndarray] = {}
            read, damaged = self._read_all(merged_index)
            if len(read) + len(damaged) <= self.max_shards:
                index.update(merged_index)
                return  # another process compacted first
            keys = list(merged_index)
            if keys:
                payload = save({"keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1),
                                "features": np.stack([merged_index[k] for k in keys]).astype(np.float32)})
                atomic_write_bytes(self.dir / f"{uuid.uuid4().hex}.safetensors", payload)
            for shard in read + damaged:
                shard.unlink(missing_ok=True)
            for k, row in merged_index.items():
                index.setdefault(k, row)

    def get(self, keys: list[bytes]) -> list[np.ndarray | None]:
        if not self.persist:  # served once: memory stays bounded by one call's items
            rows = [self._transient.get(k) for k in keys]
            for k in keys:
                self._transient.pop(k, None)
            return rows
        index = self._load()
        return [index.get(k) for k in keys]

    def put(self, keys: list[bytes], features: np.ndarray) -> None:
        from safetensors.numpy import save

        if not keys:
            return
        feats = np.ascontiguousarray(features, dtype=np.float32)
        if not self.persist:
            self._transient.update(zip(keys, feats))
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        arr_keys = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        # a temporary name, fsync, rename: a reader or a crash never sees half a shard
        atomic_write_bytes(self.dir / f"{uuid.uuid4().hex}.safetensors", save({"keys": arr_keys, "features": feats}))
        index = self._load()
        for k, row in zip(keys, feats):
            index[k] = row
