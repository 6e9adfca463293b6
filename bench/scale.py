"""Scale-out benchmark: predict throughput on 1 process vs Ray with 1 and 2 actors; training step throughput on 1
vs 2 gloo processes; self-training with its pool in this process vs as jobs.

    TENNI_BENCH_DATA=/path/to/shared/data nice -n 10 python bench/scale.py [--items 20000] [--reps 1]
        [--part predict|train|selftrain|all]

Predict: a probe on MiniLM (8 labels per class of banking77), over ``--items`` banking77 texts (train + test,
repeated as needed) in one Parquet file. Every configuration runs in a fresh process with a fresh, empty
TENNI_CACHE_DIR, so no run reads features another one encoded. Items/s counts from the moment the engine is up
(Ray's start-up, ~13 s here, reported apart) to the last shard written, so it includes the actors' model load.
Train: finetune of MiniLM, ``--train-steps`` optimizer steps (12 and 48: the short run carries the first step's
one-off costs, the long one is closer to steady state) on global batches of 16 banking77 texts, 1 process (2
threads) vs ``torch.distributed.run --nproc_per_node 2`` (gloo, 1 thread each): samples/s over the training loop
(model load excluded), and whether the ranks end with identical weights (a hash of each rank's).
Self-training (``--part selftrain``): the probe on MiniLM, 64 labels per class of sms_spam (seed 0), the rest of
its training split as the pool (2 rounds, the cross-check on), with the pool labelled in this process, with the
``local`` pool engine (the jobs run in this process) and with ``ray2`` (2 actors); each in a fresh process with a
fresh cache. Recorded: the fit's seconds, the test accuracy, and the texts this process encoded (with ``local`` the
jobs' texts included; with ``ray2`` only the driver's).
Results: bench/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, publish, shared_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")


def _env(cache: Path) -> dict:
    return dict(os.environ, TENNI_CACHE_DIR=str(cache), PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                TENNI_NO_PROGRESS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def prepare(work: Path, items: int) -> tuple[Path, Path]:
    """A probe model and a Parquet file of ``items`` texts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import tenni
    from tenni.data import read_dataset

    data = shared_data() / "banking77"
    train = read_dataset(data / "train.csv")
    model_dir = work / "model"
    if not model_dir.exists():
        model = tenni.fit(train.sample_per_class(8, seed=0), strategy="probe", backbone="text/minilm",
                          baseline=False, evaluation="holdout", test_size=0.25)
        model.save(model_dir)
    texts = train.inputs + read_dataset(data / "test.csv").inputs
    texts = (texts * (items // len(texts) + 1))[:items]
    path = work / "texts.parquet"
    pq.write_table(pa.table({"id": pa.array(range(items), pa.int64()), "text": texts}), path, row_group_size=1000)
    return model_dir, path


def one_predict(config: str, model_dir: str, data: str, out: str) -> dict:
    """Runs in its own process (fresh cache): 'local' = Model.predict_proba in this process; 'rayN' = N actors."""
    import numpy as np

    if config == "local":
        import pyarrow.parquet as pq

        import tenni

        texts = pq.read_table(data).column("text").to_pylist()
        model = tenni.load(model_dir)
        start = time.perf_counter()
        proba = model.predict_proba(texts)
        seconds = time.perf_counter() - start
        np.save(out + ".npy", proba)
        return {"items": len(texts), "seconds": seconds, "startup_seconds": 0.0}
    from tenni.distributed import predict_at_scale

    summary = predict_at_scale(model_dir, data, out, actors=int(config[3:]), rows_per_shard=1000)
    return {"items": summary["items_this_run"], "seconds": summary["seconds"],
            "startup_seconds": summary["startup_seconds"], "failed": summary["shards_failed"],
            "items_per_actor_second": summary["items_per_worker_second"]}


def bench_predict(work: Path, items: int, reps: int) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    model_dir, data = prepare(work, items)
    runs = []
    for rep in range(reps):
        for config in ("local", "ray1", "ray2"):
            cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
            out = work / f"out-{config}-{rep}"
            load = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, "--one", config, str(model_dir), str(data), str(out)],
                                  env=_env(cache), capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"{config} failed: {proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result.update(config=config, rep=rep, load_average_before=round(load, 1),
                          items_per_second=round(result["items"] / result["seconds"], 1))
            print(json.dumps(result), flush=True)
            runs.append(result)
    baseline = np.load(work / "out-local-0.npy")
    labels = json.loads((model_dir / "tenni.json").read_text())["labels"]
    agreement = {}
    for config in ("ray1", "ray2"):
        table = pq.read_table(work / f"out-{config}-0").sort_by("id")
        got = np.stack([table.column(f"p_{lab}").to_numpy() for lab in labels], axis=1)
        agreement[config] = {"max_abs_diff_proba": float(np.abs(got - baseline).max()),
                             "same_labels": bool(table.column("prediction").to_pylist()
                                                 == [labels[i] for i in baseline.argmax(1)])}

    def best(config):
        return max(r["items_per_second"] for r in runs if r["config"] == config)

    return {"items": items, "reps": reps, "runs": runs, "agreement_with_local": agreement,
            "best_items_per_second": {c: best(c) for c in ("local", "ray1", "ray2")},
            "ray2_over_ray1": round(best("ray2") / best("ray1"), 2),
            "ray2_over_ray1_per_rep": [round(r2["items_per_second"] / r1["items_per_second"], 3)
                                       for r1 in runs if r1["config"] == "ray1"
                                       for r2 in runs if r2["config"] == "ray2" and r2["rep"] == r1["rep"]],
            "ray_startup_seconds": [r["startup_seconds"] for r in runs if r["config"] != "local"]}


TRAIN_CONFIG = {"epochs": 1, "min_steps": 0, "batch_size": 16, "max_length": 64, "validation_fraction": 0.0,
                "head_init": "random"}


def one_train(out: str, steps: int) -> None:
    """Runs once per process (alone, or as a rank under torch.distributed.run): fine-tunes MiniLM for ``steps``
    steps, writes this rank's record and a hash of its weights."""
    import hashlib

    from tenni.data import read_dataset
    from tenni.strategies.registry import get_strategy_class

    n = steps * TRAIN_CONFIG["batch_size"]
    train = read_dataset(shared_data() / "banking77" / "train.csv").sample_per_class(-(-n // 77), seed=0)
    texts, labels = train.inputs[:n], train.labels[:n]
    est = get_strategy_class("finetune")(backbone="text/minilm", config=TRAIN_CONFIG, seed=0).fit(texts, labels)
    tensors, meta = est.get_state()
    digest = hashlib.sha256(b"".join(tensors[k].tobytes() for k in sorted(tensors))).hexdigest()
    record = meta["training"]
    rank = os.environ.get("RANK", "0")
    Path(f"{out}.rank{rank}").write_text(json.dumps({"steps": record["steps"], "seconds": record["train_seconds"],
                                                     "weights_sha256": digest}))


def bench_train(work: Path, reps: int, step_counts: list[int]) -> dict:
    """1 vs 2 gloo processes on the same global batches, side by side in each rep: samples/s and whether the
    ranks agree; for each number of steps."""
    runs = []
    for steps in step_counts:
        for rep in range(reps):
            for procs in (1, 2):
                out = work / f"train-{steps}-{procs}-{rep}"
                load = os.getloadavg()[0]
                command = [sys.executable, __file__, "--train-one", str(out), str(steps)]
                if procs > 1:
                    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               str(procs), *command[1:]]
                env = dict(_env(work / "cache-train"), GLOO_SOCKET_IFNAME="lo",
                           OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // procs)))
                proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
                if proc.returncode != 0:
                    raise SystemExit(f"training with {procs} process(es) failed: {proc.stderr[-3000:]}")
                ranks = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(procs)]
                seconds = max(r["seconds"] for r in ranks)
                result = {"processes": procs, "rep": rep, "steps": ranks[0]["steps"], "seconds": seconds,
                          "samples_per_second": round(ranks[0]["steps"] * TRAIN_CONFIG["batch_size"] / seconds, 2),
                          "ranks_identical": len({r["weights_sha256"] for r in ranks}) == 1,
                          "load_average_before": round(load, 1)}
                print(json.dumps(result), flush=True)
                runs.append(result)
    ratios = {}
    for steps in step_counts:
        per_rep = []
        for rep in range(reps):
            one, two = ([r["samples_per_second"] for r in runs if r["steps"] == steps and r["rep"] == rep
                         and r["processes"] == p][0] for p in (1, 2))
            per_rep.append(round(two / one, 3))
        ratios[str(steps)] = {"per_rep": per_rep, "mean": round(sum(per_rep) / len(per_rep), 3)}
    return {"runs": runs, "two_over_one": ratios,
            "ranks_identical": all(r.get("ranks_identical", True) for r in runs if r["processes"] == 2)}


def one_selftrain(config: str) -> dict:
    """Runs in its own process (fresh cache): one self-trained probe with the pool labelled by ``config``."""
    import tenni
    from tenni.backbones.text import TextBackbone
    from tenni.data import read_dataset
    from tenni.distributed import ClusterLabeler

    encoded = [0]
    real = TextBackbone.embed

    def counting(self, texts, batch_size=64):
        encoded[0] += len(texts)
        return real(self, texts, batch_size)

    TextBackbone.embed = counting
    data = shared_data() / "sms_spam"
    train, test = read_dataset(data / "train.csv"), read_dataset(data / "test.csv")
    labeled = train.sample_per_class(64, seed=0)
    chosen = set(labeled.sources)
    pool = train.subset([i for i, s in enumerate(train.sources) if s not in chosen])
    labeler = None if config == "here" else (ClusterLabeler("local") if config == "local"
                                             else ClusterLabeler("ray", actors=int(config[3:])))
    start = time.perf_counter()
    model = tenni.fit(labeled, test=test, strategy="probe", backbone="text/minilm", unlabeled=pool,
                      baseline=False, pool_labeler=labeler)
    return {"seconds": time.perf_counter() - start, "accuracy": model.metrics["results"][0]["accuracy"],
            "pool": len(pool), "encoded_here": encoded[0],
            "jobs": [{"items": s["items"], "seconds": s["seconds"], "startup_seconds": s["startup_seconds"]}
                     for s in (labeler.summaries if labeler is not None else [])]}


def bench_selftrain(work: Path, reps: int) -> dict:
    runs = []
    for rep in range(reps):
        for config in ("here", "local", "ray2"):
            cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
            load = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, "--selftrain-one", config], env=_env(cache),
                                  capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"{config} failed: {proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result.update(config=config, rep=rep, load_average_before=round(load, 1))
            print(json.dumps(result), flush=True)
            runs.append(result)
    return {"runs": runs}


def write_markdown(result: dict, path: Path) -> None:
    """The tables, in ``scale.md`` and in docs/benchmarks.md between the ``scale`` markers."""
    lines = [f"Machine: {result['env']['cpus']} cores; the load average before each run is in the tables (under ~3: "
             "nothing heavy beside the run; the runs of one table ran one after another, never at once). Timings on "
             "this machine vary up to 3x under load, so compare ratios of runs made side by side.", ""]
    p = result.get("predict")
    if p:
        lines += [f"**Predict, {p['items']} texts (probe on MiniLM, fresh feature cache per run)**", "",
                  "| engine | rep | items/s | seconds | Ray start-up s | items/s per busy actor | load avg |",
                  "|---|---|---|---|---|---|---|"]
        for r in p["runs"]:
            lines.append(f"| {r['config']} | {r['rep']} | {r['items_per_second']} | {r['seconds']:.1f} | "
                         f"{r['startup_seconds']:.1f} | {r.get('items_per_actor_second') or ''} | "
                         f"{r['load_average_before']} |")
        per_rep = p.get("ray2_over_ray1_per_rep") or []
        spread = (f"; per rep (run side by side) {', '.join(f'{x:.2f}' for x in per_rep)}, mean "
                  f"{sum(per_rep) / len(per_rep):.2f}" if per_rep else "")
        lines += ["", f"Ray 2 actors / 1 actor: **{p['ray2_over_ray1']}x** best of reps{spread} (target >= 1.6x).",
                  "Predictions vs the local run: " + "; ".join(
                      f"{c}: max |Δp| {a['max_abs_diff_proba']:.1e}, same labels {a['same_labels']}"
                      for c, a in p["agreement_with_local"].items()), ""]
    t = result.get("train")
    if t:
        lines += ["**Training step throughput, 1 vs 2 gloo processes (same global batches)**", "",
                  "| steps | processes | rep | samples/s | seconds | load avg |", "|---|---|---|---|---|---|"]
        for r in t["runs"]:
            lines.append(f"| {r['steps']} | {r['processes']} | {r['rep']} | {r['samples_per_second']} | "
                         f"{r['seconds']:.1f} | {r['load_average_before']} |")
        lines.append("")
        for steps, ratio in t["two_over_one"].items():
            lines.append(f"- {steps} steps: 2 processes / 1 process per sample, per rep (run side by side) "
                         f"{', '.join(f'{x:.2f}' for x in ratio['per_rep'])}: mean **{ratio['mean']:.2f}x** "
                         f"(target >= 0.9x)")
        lines += ["", f"Ranks identical: {t['ranks_identical']}.", ""]
    st = result.get("selftrain")
    if st:
        lines += ["**Self-training a probe (sms_spam, 64 labels per class, the rest of the split as the pool; fresh "
                  "cache per run)**", "",
                  "| pool labelled | rep | fit seconds | accuracy | texts encoded in this process (pool, labels, "
                  "test) | jobs (items, seconds) | load avg |", "|---|---|---|---|---|---|---|"]
        names = {"here": "in this process", "local": "as jobs, local engine", "ray2": "as jobs, Ray, 2 actors"}
        for r in st["runs"]:
            jobs = "; ".join(f"{j['items']}, {j['seconds']:.0f} s" for j in r["jobs"]) or "none"
            lines.append(f"| {names.get(r['config'], r['config'])} | {r['rep']} | {r['seconds']:.0f} | "
                         f"{r['accuracy']:.3f} | {r['encoded_here']} | {jobs} | {r['load_average_before']} |")
        lines.append("")
    publish("scale", path.with_suffix(".json"), "\n".join(lines).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--part", choices=("predict", "train", "selftrain", "all"), default="all")
    parser.add_argument("--selftrain-one", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=4, metavar=("CONFIG", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--train-steps", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--train-one", nargs=2, metavar=("OUT", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--table", action="store_true", help="Only rewrite the tables from scale.json.")
    args = parser.parse_args()
    if args.train_one:
        one_train(args.train_one[0], int(args.train_one[1]))
        return
    if args.one:
        print(json.dumps(one_predict(*args.one)))
        return
    if args.selftrain_one:
        print(json.dumps(one_selftrain(args.selftrain_one)))
        return
    if args.table:
        write_markdown(json.loads((RESULTS / "scale.json").read_text()), RESULTS / "scale.md")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "scale.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["env"] = environment()
    with tempfile.TemporaryDirectory(prefix="tenni-scale-") as tmp:
        work = Path(tmp)
        if args.part in ("predict", "all"):
            result["predict"] = bench_predict(work, args.items, args.reps)
        if args.part in ("train", "all"):
            result["train"] = bench_train(work, args.reps, args.train_steps)
        if args.part in ("selftrain", "all"):
            result["selftrain"] = bench_selftrain(work, args.reps)
    path.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result, RESULTS / "scale.md")
    print(f"written: {path}, {RESULTS / 'scale.md'}")


if __name__ == "__main__":
    main()
