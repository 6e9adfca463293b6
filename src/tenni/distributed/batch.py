"""``predict_at_scale`` and ``embed_at_scale``: a model (or backbone) over millions of items, on Ray or locally.

The driver plans shards (see :mod:`.sources`), skips those whose output file already exists, and hands the rest
to an engine: ``local`` runs them one after the other in this process; ``ray`` streams them through a Ray Data
actor pool, each actor loading the model once. Output: one Parquet file per shard in ``out_dir`` (the input's
columns as they came, then what ``tenni predict`` writes: ``prediction``, ``confidence``, one ``p_<label>`` per
class; or an ``embedding`` column), ``_rejects.jsonl`` (items left out, with the reason) and ``_summary.json``.
Names starting with ``_`` are skipped by Parquet dataset readers: ``pyarrow.parquet.read_table(out_dir)`` or
``ray.data.read_parquet(out_dir)`` read the predictions alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import ConfigError
from .jobs import REJECTS_DIR, Worker, rejects_file, shard_file
from .sources import plan_shards

JOB_FILE = "_job.json"
SUMMARY_FILE = "_summary.json"
ENGINES = ("local", "ray")


def predict_at_scale(model_dir, data, out_dir, *, engine: str = "ray", address: str | None = None,
                     actors: int | None = None, batch_size: int = 1024, rows_per_shard: int = 4096,
                     text_col: str | None = None, backbone: str | None = None, cache: bool = False,
                     cpus_per_actor: float = 1) -> dict:
    """Predict on every row of ``data`` (a table, a folder of table shards, or a folder of images/audio) into
    Parquet shards under ``out_dir``; returns the job's summary (items, rejects, failed shards, items/s).

    ``address``: a running Ray cluster ("auto", "HOST:PORT"); without it a local one is started on 127.0.0.1 with
    every core and shut down after. ``actors``: pool size (default: one per ``cpus_per_actor`` cores, or one per
    GPU). ``cache``: also write the features to the feature cache (off: a one-pass job would only grow it).
    """
    from ..api import load

    model = load(model_dir, backbone=backbone)  # a damaged folder or a missing backbone fails here, once
    identity = {"task": "predict", "model": str(Path(model_dir).resolve()), "labels": model.labels,
                "weights": _weights_sha(model_dir)}
    spec = {"task": "predict", "model": str(Path(model_dir).resolve()), "backbone": backbone}
    return _run(spec, identity, model.modality, data, out_dir, engine=engine, address=address, actors=actors,
                batch_size=batch_size, rows_per_shard=rows_per_shard, text_col=text_col, cache=cache,
                cpus_per_actor=cpus_per_actor)


def embed_at_scale(backbone: str, data, out_dir, *, engine: str = "ray", address: str | None = None,
                   actors: int | None = None, batch_size: int = 1024, rows_per_shard: int = 4096,
                   text_col: str | None = None, cache: bool = False, cpus_per_actor: float = 1) -> dict:
    """Frozen features of ``backbone`` for every row of ``data``: Parquet shards with an ``embedding`` column
    (float32, one fixed-size list per row); same engines, resuming and rejects as :func:`predict_at_scale`."""
    from ..backbones import get_backbone

    bb = get_backbone(backbone)
    identity = {"task": "embed", "backbone": bb.name, "fingerprint": bb.fingerprint}
    spec = {"task": "embed", "model": backbone}
    return _run(spec, identity, bb.modality, data, out_dir, engine=engine, address=address, actors=actors,
                batch_size=batch_size, rows_per_shard=rows_per_shard, text_col=text_col, cache=cache,
                cpus_per_actor=cpus_per_actor)


def _weights_sha(model_dir) -> str | None:
    try:
        manifest = json.loads((Path(model_dir) / "tenni.json").read_text(encoding="utf-8"))
        return (manifest.get("weights") or {}).get("sha256")
    except (OSError, ValueError):
        return None


def check_engine(engine: str, address: str | None, actors: int | None, flag: str = "--engine") -> None:
    """A known engine, and ``address``/``actors`` only where they mean something (the Ray one)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}'", hint=f"choose one of: {', '.join(ENGINES)}")
    if actors is not None and actors < 1:
        raise ConfigError(f"--actors must be at least 1, not {actors}")
    if engine == "local" and (address is not None or actors is not None):
        raise ConfigError(f"--address and --actors are for the ray engine ({flag} ray)",
                          hint=f"add {flag} ray, or drop them")


def _run(spec, identity, modality, data, out_dir, *, engine, address, actors, batch_size, rows_per_shard,
         text_col, cache, cpus_per_actor) -> dict:
    from .._logging import info, progress

    check_engine(engine, address, actors)
    out_dir = Path(out_dir)
    shards, data_modality = plan_shards(data, rows_per_shard)
    if data_modality != "text" and data_modality != modality:
        from ..errors import DataError

        raise DataError(f"the {'model' if spec['task'] == 'predict' else 'backbone'} takes {modality}, but this "
                        f"data holds {data_modality}", path=data, hint="pass data of the kind it was trained on")
    identity = dict(identity, data=str(Path(data).resolve()), rows_per_shard=rows_per_shard, text_col=text_col)
    _claim(out_dir, identity)
    todo = [s for s in shards if not shard_file(out_dir, s.name).exists()]
    spec = dict(spec, out_dir=str(out_dir.resolve()), text_col=text_col, batch_size=batch_size, cache=cache)
    if todo:
        info(f"{len(todo)} of {len(shards)} shard(s) to run ({sum(s.rows for s in todo)} rows)"
             + (f"; {len(shards) - len(todo)} already done" if len(todo) < len(shards) else "")
             + f"; engine {engine}")
    results, started, startup = [], time.perf_counter(), 0.0
    with progress(f"{spec['task']} ({engine})", sum(s.rows for s in todo)) as bar:
        if engine == "local":
            runner = _local(todo, spec)
        else:
            from .ray_engine import run_on_ray

            runner = run_on_ray(todo, spec, address=address, actors=actors, cpus_per_actor=cpus_per_actor)
        for result in runner:
            if result.get("startup") is not None:  # the cluster is up: throughput counts from here
                startup = result["startup"]
                started = time.perf_counter()
                continue
            results.append(result)
            bar.advance(result["items"] + result["rejects"])
    seconds = time.perf_counter() - started
    return _finish(out_dir, shards, results, seconds, startup, engine, len(shards) - len(todo))


def _local(todo, spec):
    if not todo:
        return
    worker = Worker(spec)
    for shard in todo:
        yield worker.run(shard)


def _claim(out_dir: Path, identity: dict) -> None:
    """The output folder is this job's: new, empty, or holding the same job's earlier (interrupted) run."""
    from .._paths import atomic_write_json

    job = out_dir / JOB_FILE
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; -o takes a folder for the output shards",
                          hint="choose a new or empty folder")
    if job.exists():
        try:
            earlier = json.loads(job.read_text(encoding="utf-8"))
        except ValueError:
            earlier = None
        if earlier != identity:
            changed = sorted(k for k in set(identity) | set(earlier or {})
                             if (earlier or {}).get(k) != identity.get(k))
            raise ConfigError(f"{out_dir} holds the shards of another job (it differs in: {', '.join(changed)}); "
                              "resuming needs the same model, data and options",
                              hint="choose a new output folder, or delete that one")
        return
    if out_dir.is_dir() and any(p for p in out_dir.iterdir() if not p.name.startswith(".")):
        raise ConfigError(f"{out_dir} is not empty and was not written by tenni predict/embed",
                          hint="choose a new or empty output folder")
    atomic_write_json(job, identity)


def _finish(out_dir: Path, shards, results: list[dict], seconds: float, startup: float, engine: str,
            skipped: int) -> dict:
    """Merge the shards' rejects into ``rejects.jsonl``, count everything done so far, write ``_summary.json``."""
    import pyarrow.parquet as pq

    from .._logging import info, warn
    from .._paths import atomic_write_bytes, atomic_write_json

    failed = [r for r in results if r["error"]]
    items_run = sum(r["items"] for r in results if not r["error"])
    total_items = 0
    done = 0
    lines = []
    for shard in shards:
        out = shard_file(out_dir, shard.name)
        if out.exists():
            for stale in (*out_dir.glob(f".{out.name}.*.tmp"), *(out_dir / REJECTS_DIR).glob(f".{shard.name}.*.tmp")):
                stale.unlink(missing_ok=True)  # left by a worker killed mid-write; the shard is done since
            done += 1
            total_items += pq.ParquetFile(out).metadata.num_rows
            rej = rejects_file(out_dir, shard.name)
            if rej.exists():
                lines.append(rej.read_text(encoding="utf-8"))
    rejects_path = out_dir / "_rejects.jsonl"
    n_rejects = sum(chunk.count("\n") for chunk in lines)
    if n_rejects:
        atomic_write_bytes(rejects_path, "".join(lines).encode("utf-8"))
    else:
        rejects_path.unlink(missing_ok=True)
    summary = {
        "engine": engine, "shards": len(shards), "shards_done": done,
        "shards_run": len(results) - len(failed), "shards_skipped": skipped,
        "shards_failed": len(failed), "failures": [{"shard": r["shard"], "error": r["error"]} for r in failed[:20]],
        "items": total_items, "items_this_run": items_run, "rejects": n_rejects,
        "seconds": round(seconds, 3), "startup_seconds": round(startup, 3),
        # time the workers spent on shards (reading, model, writing), without actor start-up and model loading:
        # items / busy_seconds is one worker's rate, the number to size a cluster with
        "busy_seconds": round(sum(r["seconds"] for r in results), 3),
        "items_per_worker_second": round(items_run / sum(r["seconds"] for r in results), 2) if items_run else None,
        "items_per_second": round(items_run / seconds, 2) if seconds > 0 and items_run else None,
        "out_dir": str(out_dir), "rejects_file": str(rejects_path) if n_rejects else None,
    }
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    rate = f", {summary['items_per_second']:.1f} items/s" if summary["items_per_second"] else ""
    info(f"{items_run} items in {seconds:.1f} s{rate} ({summary['shards_run']} shard(s) run, "
         f"{summary['shards_skipped']} already done); {total_items} items in {done} of {len(shards)} shard(s) "
         f"in {out_dir}; {n_rejects} rejected" + (f" (see {rejects_path})" if n_rejects else ""))
    if failed:
        warn(f"{len(failed)} shard(s) failed, first {failed[0]['shard']}: {failed[0]['error']} — run the same "
             "command again to retry them")
    return summary

