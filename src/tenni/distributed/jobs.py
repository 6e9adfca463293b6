"""What runs one shard of work: read it, predict (or embed), write one Parquet file atomically.

A :class:`Worker` loads the model (or backbone) once and then runs shard after shard: in the driver process for
the local engine, inside each actor of the pool for Ray. A shard is done when its output file exists: the file
is written under a temporary name and renamed, so an interrupted job leaves whole shards or none, and a re-run
skips the finished ones. Items that cannot be used (empty texts, undecodable files, bad JSON lines) are written
to the shard's rejects file with the reason, never dropped silently.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from .._context import temporary_env
from ..errors import DataError, TenniError
from .sources import Shard, read_shard

REJECTS_DIR = "_rejects"


def shard_file(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.parquet"


def rejects_file(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / REJECTS_DIR / f"{name}.jsonl"


class Worker:
    """``spec``: {"task": "predict"|"embed", "model": model folder or backbone name, "backbone": override,
    "text_col", "out_dir", "batch_size", "cache": keep the feature cache on disk, "threads": torch threads}."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.out_dir = Path(spec["out_dir"])
        if spec.get("threads"):
            import torch

            torch.set_num_threads(int(spec["threads"]))
        if spec["task"] == "predict":
            from ..api import load

            self.model = load(spec["model"], backbone=spec.get("backbone"))
            self.modality = self.model.modality
        else:
            from ..backbones import get_backbone

            self.model = get_backbone(spec["model"])
            self.modality = self.model.modality

    def __call__(self, batch: dict) -> dict:
        """Ray Data's batch form: a column ``shard`` of JSON-encoded shards in, one summary row per shard out."""
        results = [self.run(Shard.from_dict(json.loads(s))) for s in batch["shard"]]
        return {key: [r[key] for r in results] for key in ("shard", "items", "rejects", "seconds", "error")}

    def run(self, shard: Shard) -> dict:
        if self.spec.get("cache"):
            return self._run(shard)
        with temporary_env(TENNI_FEATURE_CACHE="off"):  # one pass over the data: nothing to re-read later
            return self._run(shard)

    def _run(self, shard: Shard) -> dict:
        start = time.perf_counter()
        try:
            rows = read_shard(shard, self.spec.get("text_col"))
            if rows.inputs and rows.modality != self.modality:
                raise DataError(f"the model takes {self.modality}, but this data holds {rows.modality}",
                                path=shard.path or None, hint="pass data of the kind the model was trained on")
            table = self._outputs(rows)
            _write_rejects(self.out_dir, shard.name, rows.rejects)
            _write_parquet(shard_file(self.out_dir, shard.name), table)
        except TenniError as err:
            return _summary(shard, 0, 0, start, str(err))
        except Exception as err:  # a shard that fails is reported and re-run next time; the others go on
            first = next((line for line in str(err).splitlines() if line.strip()), "")
            return _summary(shard, 0, 0, start, f"{type(err).__name__}: {first}")
        return _summary(shard, len(rows.inputs), len(rows.rejects), start, None)

    def _outputs(self, rows):
        import numpy as np
        import pyarrow as pa

        table = rows.table
        size = int(self.spec.get("batch_size") or 1024)
        if self.spec["task"] == "embed":
            parts = [self.model.encode(rows.inputs[i:i + size], show_progress=False)
                     for i in range(0, len(rows.inputs), size)]
            dim = parts[0].shape[1] if parts else int(self.model.dim or 0)
            feats = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, dim), np.float32)
            flat = pa.array(feats.reshape(-1), pa.float32())
            return _append(table, {"embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})
        if getattr(self.model, "task", "classify") == "anomaly":
            scores = np.concatenate([self.model.score(rows.inputs[i:i + size])
                                     for i in range(0, len(rows.inputs), size)]) if rows.inputs else np.zeros(0)
            threshold = float(self.model.estimator.threshold_)
            return _append(table, {
                "prediction": pa.array(["defect" if s > threshold else "normal" for s in scores], pa.string()),
                "score": pa.array(np.round(scores.astype(np.float64), 6)),
                "threshold": pa.array(np.full(len(scores), round(threshold, 6)))})
        labels = self.model.labels
        proba = (np.concatenate([self.model.predict_proba(rows.inputs[i:i + size])
                                 for i in range(0, len(rows.inputs), size)])
                 if rows.inputs else np.zeros((0, len(labels))))
        best = proba.argmax(1) if len(proba) else np.zeros(0, int)
        columns = {"prediction": pa.array([labels[i] for i in best], pa.string()),
                   "confidence": pa.array(np.round(proba[np.arange(len(best)), best], 6).astype(np.float64))}
        for j, lab in enumerate(labels):  # as `tenni predict` writes them
            columns[f"p_{lab}"] = pa.array(np.round(proba[:, j], 6).astype(np.float64))
        return _append(table, columns)


def _append(table, columns: dict):
    taken = [name for name in columns if name in table.column_names]
    if taken:
        raise DataError(f"the input already has column(s) {', '.join(repr(n) for n in taken)}, which the output "
                        "adds", hint="rename them in the input")
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def _summary(shard: Shard, items: int, rejects: int, start: float, error: str | None) -> dict:
    return {"shard": shard.name, "items": items, "rejects": rejects,
            "seconds": round(time.perf_counter() - start, 4), "error": error}


def _write_parquet(path: Path, table) -> None:
    import pyarrow.parquet as pq

    from .._paths import atomic_write_bytes

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _write_rejects(out_dir: Path, name: str, rejects: list[dict]) -> None:
    from .._paths import atomic_write_bytes

    path = rejects_file(out_dir, name)
    if rejects:
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
        atomic_write_bytes(path, payload.encode("utf-8"))
    else:
        path.unlink(missing_ok=True)
