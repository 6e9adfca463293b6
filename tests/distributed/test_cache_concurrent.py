"""Several processes sharing one TENNI_CACHE_DIR: every entry any of them wrote comes back, none is corrupted."""

from __future__ import annotations

import contextlib
import multiprocessing as mp

import numpy as np

WRITERS, BATCHES, PER_BATCH = 4, 30, 5


def _value(writer: int, batch: int, item: int) -> np.ndarray:
    return np.full(8, writer * 10_000 + batch * 100 + item, np.float32)


def _write(root: str, writer: int, barrier) -> None:
    from tenni.backbones.cache import FeatureCache, content_key

    FeatureCache.max_shards = 3  # compaction on almost every load, racing the other writers' puts and reads
    barrier.wait()
    for batch in range(BATCHES):
        cache = FeatureCache("sha256:shared", root=root)  # a new object per batch, as separate predict calls are
        keys = [content_key(f"w{writer} b{batch} i{i}") for i in range(PER_BATCH)]
        cache.put(keys, np.stack([_value(writer, batch, i) for i in range(PER_BATCH)]))
        # what this process wrote is readable at once, and so is what others wrote before
        again = FeatureCache("sha256:shared", root=root).get(keys)
        assert all(row is not None for row in again), f"writer {writer} lost its own batch {batch}"


def test_concurrent_writers_with_compaction_lose_nothing(tmp_path):
    from tenni.backbones.cache import FeatureCache, content_key

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_write, args=(str(tmp_path), w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    cache = FeatureCache("sha256:shared", root=tmp_path)
    for w in range(WRITERS):
        for b in range(BATCHES):
            rows = cache.get([content_key(f"w{w} b{b} i{i}") for i in range(PER_BATCH)])
            for i, row in enumerate(rows):
                assert row is not None, f"entry w{w} b{b} i{i} lost"
                np.testing.assert_array_equal(row, _value(w, b, i))
    shards = list(cache.dir.glob("*.safetensors"))
    assert len(shards) < WRITERS * BATCHES  # compaction ran
    assert not list(cache.dir.glob(".*.tmp"))  # no temporary file left behind


def test_a_reader_survives_a_shard_vanishing(tmp_path, monkeypatch):
    """A compaction elsewhere deletes a shard between listing and reading: the reader lists again and finds the
    merged shard."""
    from tenni.backbones import cache as cache_mod
    from tenni.backbones.cache import FeatureCache, content_key

    writer = FeatureCache("sha256:v", root=tmp_path)
    for i in range(3):
        writer.put([content_key(f"t{i}")], np.full((1, 2), i, np.float32))
    import safetensors.numpy as stn

    real_load, calls = stn.load_file, {"n": 0}

    def flaky_load(path):
        calls["n"] += 1
        if calls["n"] == 1:  # another process merges everything into one shard right now
            merged = FeatureCache("sha256:v", root=tmp_path)
            monkeypatch.setattr(stn, "load_file", real_load)
            merged.max_shards = 0
            merged._load()
            monkeypatch.setattr(stn, "load_file", flaky_load)
            raise FileNotFoundError(path)
        return real_load(path)

    monkeypatch.setattr(stn, "load_file", flaky_load)
    monkeypatch.setattr(cache_mod, "_locked", _no_lock)
    got = FeatureCache("sha256:v", root=tmp_path).get([content_key(f"t{i}") for i in range(3)])
    assert [None if g is None else float(g[0]) for g in got] == [0.0, 1.0, 2.0]


@contextlib.contextmanager
def _no_lock(folder, exclusive):
    yield True
