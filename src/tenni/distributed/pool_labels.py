"""Self-training's pool labelled as a scale-out job: each round's teacher runs over the pool like ``predict_at_scale``.

For pools too slow to label in one process (labelling is each round's big cost): the round's teacher is saved as a
model folder under the run's checkpoint, the pool as one Parquet file beside it (written once, the row number
carried along), and the round is one predict job on the Ray engine (or the local one): finished shards are skipped
when an interrupted round runs again. The teacher's probabilities come back in pool order (rounded to 6 decimals,
as ``tenni predict`` writes them).

For a strategy on a frozen backbone the encoding is the cost, so :meth:`ClusterLabeler.embed` runs it once, as an
embedding job, and puts the features into this machine's feature cache: the leak check, the rounds' labelling and
the students then read them here (a linear head over cached features; before, the pool was encoded here for the
leak check and again on the cluster every round). The pool is still read into this process, and the students
train here on the kept pseudo-labels.
``tenni fit LABELED --unlabeled POOL --pool-engine ray [--address auto] [--actors 8]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .._logging import info
from ..errors import ConfigError, TenniError
from .batch import check_engine, embed_at_scale, predict_at_scale

ROW = "_row"


class ClusterLabeler:
    """A ``labeler`` for :func:`tenni.selftrain.self_train` (``tenni.fit(..., pool_labeler=ClusterLabeler())``).

    ``engine``: ``ray`` (an actor pool; ``address`` a running cluster, else a local one on 127.0.0.1) or
    ``local`` (the same job in this process, shard by shard). The job's files stay under the self-training
    checkpoint (``$TENNI_CACHE_DIR/selftrain/<run>/``), so a re-run resumes a round's labelling where it stopped."""

    def __init__(self, engine: str = "ray", *, address: str | None = None, actors: int | None = None,
                 rows_per_shard: int = 4096, cpus_per_actor: float = 1.0):
        check_engine(engine, address, actors, flag="--pool-engine")
        if engine == "ray":  # before any round runs, not after the first teacher is fitted
            from .ray_engine import require_ray

            require_ray()
        self.engine, self.address, self.actors = engine, address, actors
        self.rows_per_shard, self.cpus_per_actor = rows_per_shard, cpus_per_actor
        self.summaries: list[dict] = []
        """Each round's job summary (items, shards run and skipped, items per second)."""

    def __call__(self, teacher, pool, round_no: int, workdir: Path | None = None) -> np.ndarray:
        if workdir is None:
            with tempfile.TemporaryDirectory(prefix="tenni-pool-") as tmp:
                return self._label(teacher, pool, round_no, Path(tmp))
        return self._label(teacher, pool, round_no, Path(workdir))

    def round_done(self, round_no: int, workdir: Path, *, last: bool = False) -> None:
        """The round's pseudo-labels are saved: remove its job's files (and, after the last round, the pool copy)."""
        import shutil

        for name in (f"round-{round_no}-teacher", f"round-{round_no}-labels"):
            shutil.rmtree(Path(workdir) / name, ignore_errors=True)
        if last:
            (Path(workdir) / "pool.parquet").unlink(missing_ok=True)

    def embed(self, pool, backbone: str, workdir: Path | None = None) -> dict:
        """``backbone``'s features of every pool item, computed as one job (resumable: an interrupted one keeps its
        finished shards) and put into this machine's feature cache, where ``backbone.encode`` then finds them;
        the job's files are removed once imported. Returns the job's summary. ``workdir`` defaults to a folder
        under the cache named by the backbone's weights and the pool's items."""
        import contextlib
        import hashlib
        import shutil

        import pyarrow.parquet as pq

        from .._paths import cache_dir
        from ..backbones import get_backbone

        space = get_backbone(backbone)
        if workdir is None:
            digest = hashlib.sha256(f"{space.name}@{space.fingerprint}".encode())
            for item in pool.inputs:
                digest.update(str(item).encode("utf-8", "surrogatepass") + b"\0")
            workdir = cache_dir() / "selftrain" / f"pool-features-{digest.hexdigest()[:24]}"
        workdir = Path(workdir)
        out = workdir / "features"
        summary = self._job("embedding", embed_at_scale, backbone, pool, workdir, out)
        for shard in sorted(out.glob("[!_.]*.parquet")):  # one shard's features in memory at a time
            table = pq.read_table(shard, columns=[ROW, "embedding"])
            column = table.column("embedding").combine_chunks()
            feats = column.flatten().to_numpy().reshape(len(table), column.type.list_size)
            rows = table.column(ROW).to_numpy()
            space.cache.put([space.item_key(str(pool.inputs[r])) for r in rows], feats)
        shutil.rmtree(out, ignore_errors=True)  # the job's files only: a caller's workdir may hold its own
        (workdir / "pool.parquet").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            workdir.rmdir()  # only when nothing else is left in it
        info(f"the pool's features ({summary['items']} items) are in this machine's feature cache; the job's files "
             "are removed")
        return summary

    def _job(self, what: str, run, model, pool, workdir: Path, out: Path) -> dict:
        """``run`` (``predict_at_scale`` or ``embed_at_scale``) of ``model`` over the pool's Parquet copy into
        ``out`` on this labeler's engine; its summary, kept in ``summaries``; one error if shards failed."""
        pool_file = write_pool(pool, workdir / "pool.parquet")
        engine = {"address": self.address, "actors": self.actors} if self.engine == "ray" else {}
        summary = run(model, pool_file, out, engine=self.engine, rows_per_shard=self.rows_per_shard,
                      cpus_per_actor=self.cpus_per_actor, text_col="text" if pool.modality == "text" else None,
                      **engine)
        self.summaries.append(summary)
        if summary["shards_failed"]:
            first = summary["failures"][0]
            raise TenniError(f"{what} the pool: {summary['shards_failed']} shard(s) failed (first {first['shard']}: "
                             f"{first['error']}); the finished shards are kept: run the same command again to "
                             "resume")
        return summary

    def _label(self, teacher, pool, round_no: int, workdir: Path) -> np.ndarray:
        import pyarrow.parquet as pq

        from ..model import Model

        teacher_dir = workdir / f"round-{round_no}-teacher"
        if not (teacher_dir / "tenni.json").exists():  # a resumed round keeps the teacher its finished shards used
            Model(teacher, modality=pool.modality).save(teacher_dir)
        self._job("labelling", predict_at_scale, teacher_dir, pool, workdir, workdir / f"round-{round_no}-labels")
        classes = [str(c) for c in teacher.classes_]
        table = pq.read_table(workdir / f"round-{round_no}-labels", columns=[ROW] + [f"p_{c}" for c in classes])
        proba = np.full((len(pool), len(classes)), np.nan)
        rows = np.asarray(table.column(ROW).to_numpy(), dtype=np.int64)
        for j, c in enumerate(classes):
            proba[rows, j] = table.column(f"p_{c}").to_numpy()
        return proba


def write_pool(pool, path: Path) -> Path:
    """The pool as one Parquet file (``_row`` and ``text``, or ``path`` for image/audio files), written once."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .._paths import atomic_write_bytes

    if path.exists() and pq.ParquetFile(path).metadata.num_rows == len(pool):
        return path
    column = "text" if pool.modality == "text" else "path"
    values = list(pool.inputs)
    if column == "path" and not all(isinstance(v, (str, Path)) for v in values):
        raise ConfigError("a pool labelled on a cluster must be image or audio files, not images held in memory",
                          hint="pass the pool as a folder of files (or a table of their paths)")
    table = pa.table({ROW: pa.array(np.arange(len(values)), pa.int64()),
                      column: pa.array([str(Path(v).resolve()) if column == "path" else v for v in values],
                                       pa.string())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
