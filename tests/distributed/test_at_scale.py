"""predict/embed at scale: a local Ray cluster on loopback (2 CPUs, started once for the module) and the local engine.

Everything runs on 127.0.0.1; each subprocess has a timeout so a hung cluster fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ..conftest import make_texts

pytest.importorskip("ray")

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def ray_cluster():
    """One Ray for the module (start-up costs ~13 s): bound to 127.0.0.1, 2 CPUs, no dashboard."""
    import ray

    from tenni.distributed.ray_engine import loopback_only

    with loopback_only():
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                                           "TENNI_CACHE_DIR": os.environ["TENNI_CACHE_DIR"],
                                           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")  # nothing listens beyond loopback
    assert ray._private.worker.global_worker.node.node_ip_address == "127.0.0.1"
    yield address
    ray.shutdown()


@pytest.fixture(scope="module")
def probe_model(tmp_path_factory, tiny_backbone, train_data):
    import tenni

    model = tenni.fit(train_data, strategy="probe", backbone=str(tiny_backbone), baseline=False,
                      evaluation="holdout", test_size=0.25)
    path = tmp_path_factory.mktemp("scale") / "model"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory):
    """3,000 synthetic texts with an id column, and two rows that cannot be predicted (empty, missing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, _ = make_texts(1000, seed=7)
    texts[10], texts[2500] = "   ", None
    path = tmp_path_factory.mktemp("big") / "big.parquet"
    pq.write_table(pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts}), path,
                   row_group_size=700)
    return path, texts


def _read(out_dir: Path):
    import pyarrow.parquet as pq

    return pq.read_table(out_dir).sort_by("id")  # the shards, without _job/_summary/_rejects


def _expected(model_dir, texts):
    import tenni

    keep = [t for t in texts if t is not None and t.strip()]
    return keep, tenni.load(model_dir).predict_proba([t.strip() for t in keep])


def _assert_same_as_predict(out_dir, model_dir, texts):
    import tenni

    table = _read(out_dir)
    keep, proba = _expected(model_dir, texts)
    assert table.column("text").to_pylist() == keep  # the input's columns as they came, in order
    assert table.schema.field("id").type == "int64"
    labels = tenni.load(model_dir).labels
    got = np.stack([table.column(f"p_{lab}").to_numpy() for lab in labels], axis=1)
    np.testing.assert_allclose(got, proba, atol=2e-6)
    assert table.column("prediction").to_pylist() == [labels[i] for i in proba.argmax(1)]
    rejects = [json.loads(line) for line in (out_dir / "_rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["empty text", "missing text"]
    assert {r["source"].rsplit(":", 1)[1] for r in rejects} == {"11", "2501"}  # 1-based record numbers


def test_ray_predict_equals_single_process_predict(ray_cluster, probe_model, big_parquet, tmp_path):
    from tenni.distributed import predict_at_scale

    path, texts = big_parquet
    summary = predict_at_scale(probe_model, path, tmp_path / "preds", actors=2, rows_per_shard=500)
    assert summary["shards"] == 6 and summary["shards_run"] == 6 and summary["shards_failed"] == 0
    assert summary["items"] == 2998 and summary["rejects"] == 2
    _assert_same_as_predict(tmp_path / "preds", probe_model, texts)
    again = predict_at_scale(probe_model, path, tmp_path / "preds", actors=2, rows_per_shard=500)
    assert again["shards_run"] == 0 and again["shards_skipped"] == 6 and again["items"] == 2998


def test_a_killed_ray_run_resumes_without_redoing_finished_shards(ray_cluster, probe_model, big_parquet, tmp_path):
    from tenni.distributed import predict_at_scale

    path, texts = big_parquet
    out = tmp_path / "preds"
    script = ("import sys; from tenni.distributed import predict_at_scale; "
              "predict_at_scale(sys.argv[1], sys.argv[2], sys.argv[3], address=sys.argv[4], actors=1, "
              "rows_per_shard=200)")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", script, str(probe_model), str(path), str(out), ray_cluster],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while not list(out.glob("*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-job; Ray ends its actors with it
        proc.wait(timeout=60)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.parquet")}
    assert 0 < len(before) < 15, (len(before), proc.stderr.read().decode()[-2000:])
    summary = predict_at_scale(probe_model, path, out, actors=2, rows_per_shard=200)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.parquet")}
    assert {k: after[k] for k in before} == before  # finished shards were not written again
    assert summary["shards_run"] == 15 - len(before) and summary["shards_skipped"] == len(before)
    assert len(after) == 15 and not list(out.glob(".*.tmp"))
    _assert_same_as_predict(out, probe_model, texts)


def test_cli_predict_engine_ray_and_a_changed_job_is_refused(ray_cluster, probe_model, big_parquet, tmp_path,
                                                             capsys, monkeypatch):
    from ..test_cli import run

    path, texts = big_parquet
    code, stdout, stderr = run(capsys, monkeypatch, "predict", probe_model, path, "-o", tmp_path / "p",
                               "--engine", "ray", "--address", ray_cluster, "--actors", "2")
    assert code == 0, stderr
    assert "2998 items in 1 of 1 shard(s)" in stdout and "2 rejected" in stdout
    _assert_same_as_predict(tmp_path / "p", probe_model, texts)
    code, _, stderr = run(capsys, monkeypatch, "predict", probe_model, path, "-o", tmp_path / "p", "--text-col",
                          "text", "--engine", "ray")
    assert code == 2 and "another job (it differs in: text_col)" in stderr
    code, _, stderr = run(capsys, monkeypatch, "predict", probe_model, path, "--engine", "ray")
    assert code == 2 and "pass -o FOLDER" in stderr


def test_embed_local_engine_csv_with_bad_rows(tiny_backbone, tmp_path, capsys, monkeypatch):
    """`tenni embed` on a CSV (quoted newlines, an empty text, bytes that are not UTF-8): embeddings equal the
    backbone's, bad rows in the rejects file with their line."""
    import pyarrow.parquet as pq

    from tenni.backbones import get_backbone

    from ..test_cli import run

    texts, _ = make_texts(40, seed=3)
    lines = ["text,n"] + [f'"{t}",{i}' for i, t in enumerate(texts)]
    lines[5] = '"a text\nover two lines",4'
    lines[8] = '"",7'
    raw = ("\n".join(lines) + "\n").encode("utf-8").replace(b"7\n", b"7\n\xff\xfe,99\n", 1)
    (tmp_path / "t.csv").write_bytes(raw)
    code, stdout, stderr = run(capsys, monkeypatch, "embed", tiny_backbone, tmp_path / "t.csv", "-o",
                               tmp_path / "f")
    assert code == 0, stderr
    assert "TENNI_FEATURE_CACHE" not in os.environ  # the local engine turned the cache off for its run only
    table = pq.read_table(tmp_path / "f")
    expected = [t for i, t in enumerate(texts) if i != 7]
    expected[4] = "a text\nover two lines"
    assert table.column("text").to_pylist() == expected
    assert table.column("n").to_pylist()[4] == "4"  # CSV values as they came: strings
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, get_backbone(str(tiny_backbone)).encode(expected), atol=1e-5)
    rejects = [json.loads(line) for line in (tmp_path / "f" / "_rejects.jsonl").read_text().splitlines()]
    assert [(r["source"].rsplit(":", 1)[1], r["reason"]) for r in rejects] == [
        ("10", "empty text"), ("11", "bytes that are not UTF-8")]


def test_media_folder_rejects_undecodable_files(tiny_vit, image_folder, tmp_path):
    import pyarrow.parquet as pq

    import tenni
    from tenni.distributed import predict_at_scale

    model = tenni.fit(image_folder, strategy="probe", backbone=str(tiny_vit), baseline=False,
                      evaluation="holdout")
    model.save(tmp_path / "m")
    data = tmp_path / "photos"
    data.mkdir()
    files = sorted((image_folder / "test").rglob("*.png"))[:5]
    for f in files:
        (data / f"{f.parent.name}_{f.name}").write_bytes(f.read_bytes())
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    summary = predict_at_scale(tmp_path / "m", data, tmp_path / "out", engine="local", rows_per_shard=4)
    assert summary["items"] == 5 and summary["rejects"] == 1 and summary["shards"] == 2
    table = pq.read_table(tmp_path / "out")
    paths = table.column("path").to_pylist()
    proba = tenni.load(tmp_path / "m").predict_proba(paths)
    labels = tenni.load(tmp_path / "m").labels
    np.testing.assert_allclose(np.stack([table.column(f"p_{lab}").to_numpy() for lab in labels], 1), proba,
                               atol=2e-6)
    reject = json.loads((tmp_path / "out" / "_rejects.jsonl").read_text())
    assert reject["source"].endswith("broken.jpg") and "cannot decode the image" in reject["reason"]


def test_a_model_the_actors_cannot_load_fails_the_shards_not_the_job(ray_cluster, probe_model, tmp_path,
                                                                      monkeypatch):
    """The driver loads the model, the actors do not (here: its weights vanish in between): every shard fails
    with the reason, quickly, and a re-run retries them."""
    import shutil

    import tenni.api
    from tenni.distributed import predict_at_scale

    model = tmp_path / "model"
    shutil.copytree(probe_model, model)
    (tmp_path / "t.txt").write_text("a text\nanother text\n")
    real_load = tenni.api.load

    def load_then_break(path, **kw):
        loaded = real_load(path, **kw)
        (model / "weights.safetensors").write_bytes(b"gone")
        return loaded

    monkeypatch.setattr(tenni.api, "load", load_then_break)
    summary = predict_at_scale(model, tmp_path / "t.txt", tmp_path / "out", actors=1)
    assert summary["shards_failed"] == 1 and summary["items"] == 0
    assert "the actor could not load the model" in summary["failures"][0]["error"]


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch):
    from tenni.distributed.ray_engine import require_ray
    from tenni.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'tenni\[ray\]'"):
        require_ray()


def test_self_training_labels_its_pool_on_ray_as_it_does_in_process(ray_cluster, tmp_path, monkeypatch):
    """``tenni.fit(..., unlabeled=pool, pool_labeler=ClusterLabeler(...))``: each round's teacher labels the pool as
    a job on the actor pool; the self-trained model is the one labelling in this process gives."""
    import tenni
    from tenni.distributed import ClusterLabeler

    from ..test_selftrain import _texts

    train, pool, test = _texts("labeled", 6, 1), _texts("pool", 40, 2), _texts("test", 10, 3)
    here = tenni.fit(train, test=test, strategy="scratch", unlabeled=pool[0], baseline=False, seed=5, rounds=1)
    labeler = ClusterLabeler("ray", address=ray_cluster, actors=2, rows_per_shard=20)
    monkeypatch.setenv("TENNI_CACHE_DIR", str(tmp_path))  # a cache of its own: the run must not resume the first
    there = tenni.fit(train, test=test, strategy="scratch", unlabeled=pool[0], baseline=False, seed=5, rounds=1,
                      pool_labeler=labeler)
    assert there.metrics["self_training"]["rounds"][-1]["kept_per_class"] == \
        here.metrics["self_training"]["rounds"][-1]["kept_per_class"]
    assert there.metrics["results"][0]["accuracy"] == here.metrics["results"][0]["accuracy"] >= 0.9
    assert [s["engine"] for s in labeler.summaries] == ["ray"] and labeler.summaries[0]["shards"] == 4


def test_a_probes_pool_is_embedded_once_on_ray_and_labelled_here(ray_cluster, tiny_backbone, tmp_path, monkeypatch):
    """A probe's pool: one embedding job on the actors, imported into this machine's cache; the rounds label it
    here from the cache (no labelling job), and the model is the one labelling in this process gives."""
    import tenni
    from tenni.distributed import ClusterLabeler

    from ..test_selftrain import _texts

    train, test = _texts("labeled", 6, 1), _texts("test", 10, 3)
    pool = list(dict.fromkeys(_texts("pool", 40, 2)[0]))
    options = dict(test=test, strategy="probe", backbone=str(tiny_backbone), unlabeled=pool, baseline=False, seed=5,
                   rounds=1, selftrain={"check_folds": 0})
    monkeypatch.setenv("TENNI_CACHE_DIR", str(tmp_path / "here"))
    here = tenni.fit(train, **options)
    labeler = ClusterLabeler("ray", address=ray_cluster, actors=2, rows_per_shard=20)
    monkeypatch.setenv("TENNI_CACHE_DIR", str(tmp_path / "there"))  # nothing cached: the job must bring it
    there = tenni.fit(train, pool_labeler=labeler, **options)
    assert [s["engine"] for s in labeler.summaries] == ["ray"] and labeler.summaries[0]["items"] == len(pool)
    assert there.metrics["self_training"]["rounds"][-1]["kept_per_class"] == \
        here.metrics["self_training"]["rounds"][-1]["kept_per_class"]
    assert there.predict(test[0]) == here.predict(test[0])
