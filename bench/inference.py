"""Inference speed on 2 threads: sentence-transformers' ``encode`` + the same head (the anchor), ``tenni predict``
(torch), and the ONNX export in float32 and int8, each with its accuracy on the test split.

    nice -n 10 python bench/inference.py [--datasets sms_spam,banking77] [--per-class 64] [--reps 3]

Per dataset: a probe and a SetFit model (the strategies' estimators, saved as tenni models) are fitted on
``--per-class`` examples per class from the train split, and exported twice (float32; int8 gated on
``--check-texts`` other train texts, ``--max-drop`` points).
Throughput is the best of ``--reps`` passes (wall time, and CPU time of the process: other jobs on a shared
machine disturb it less) over the same ``--timing-texts`` test texts (their order shuffled
once), with each runtime's turn interleaved within a repetition so that load from other jobs spreads over all of
them; the probe's torch path gets an empty feature cache on every pass (otherwise it would read, not compute, the
features). Accuracy is over the test split (``--test-limit``: a fixed shuffled subset). Writes
bench/results/inference.json and inference.md, and the table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, environment, publish, shared_data  # noqa: E402

THREADS = 2


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def sample(texts, labels, per_class: int, seed: int):
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    picked = sorted(i for idx in by_class.values() for i in rng.sample(idx, min(per_class, len(idx))))
    rest = sorted(set(range(len(texts))) - set(picked))
    rng.shuffle(rest)
    return picked, rest


def cpu_seconds() -> float:
    """CPU time of this process, all its threads: less sensitive than wall time to other jobs on a shared machine."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def accuracy(labels, predicted) -> float:
    return sum(a == b for a, b in zip(labels, predicted)) / len(labels)


def macro_f1(labels, predicted) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, predicted, average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sms_spam,banking77",
                        help="NAME[:PER_CLASS[:STRATEGIES]] items, e.g. sms_spam:64:probe+setfit,banking77:16:probe")
    parser.add_argument("--per-class", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--timing-texts", type=int, default=1000)
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--check-texts", type=int, default=1000, help="held-out train texts gating int8")
    parser.add_argument("--test-limit", type=int, default=None, help="score accuracy on at most this many test "
                                                                       "texts (a fixed shuffled subset)")
    parser.add_argument("--strategies", default="probe,setfit")
    parser.add_argument("--retime", action="store_true", help="re-measure the speed of runs in inference.json "
                                                                   "(same models in --work), keep their accuracy")
    parser.add_argument("--table", action="store_true", help="only rewrite the tables from inference.json")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tenni-bench-inference")
    args = parser.parse_args()
    if args.table:
        publish("inference", RESULTS / "inference.json", table(json.loads((RESULTS / "inference.json").read_text())))
        return

    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    import tenni
    from tenni.backbones import get_backbone
    from tenni.errors import TenniError
    from tenni.export import export_model, load_onnx_model
    from tenni.strategies import get_strategy_class
    from tenni.strategies._linear import logistic_proba

    results = {"meta": {"threads": THREADS, "per_class": args.per_class, "reps": args.reps,
                        "timing_texts": args.timing_texts, "max_drop": args.max_drop,
                        "check_texts": args.check_texts, "test_limit": args.test_limit, "env": environment(),
                        "note": "2-core machine shared with other jobs (~9 agents) for every cell: absolute "
                                "texts/s are low and noisy, compare the ratios within a repetition"},
               "runs": []}
    out_json = RESULTS / "inference.json"
    if args.retime:
        results = json.loads(out_json.read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    for item in args.datasets.split(","):
        dataset, *rest = item.split(":")
        per_class = int(rest[0]) if rest else args.per_class
        strategies = rest[1].split("+") if len(rest) > 1 else args.strategies.split(",")
        root = shared_data() / dataset
        train_texts, train_labels = read_csv(root / "train.csv")
        test_texts, test_labels = read_csv(root / "test.csv")
        picked, others = sample(train_texts, train_labels, per_class, seed=0)
        fit_data = ([train_texts[i] for i in picked], [train_labels[i] for i in picked])
        held = others[:args.check_texts]
        check = ([train_texts[i] for i in held], [train_labels[i] for i in held])
        order = list(range(len(test_texts)))
        random.Random(1).shuffle(order)
        timing = [test_texts[i] for i in order[:args.timing_texts]]
        if args.test_limit:  # accuracy on a fixed shuffled subset of the test split
            test_texts = [test_texts[i] for i in order[:args.test_limit]]
            test_labels = [test_labels[i] for i in order[:args.test_limit]]
        for strategy in strategies:
            model_dir = args.work / f"{dataset}-{strategy}-{per_class}"
            started = time.perf_counter()
            if not (model_dir / "tenni.json").exists():  # the estimator alone: tenni.fit's own evaluation is redundant
                est = get_strategy_class(strategy)(backbone="text/minilm", seed=0)
                tenni.Model(est.fit(*fit_data)).save(model_dir)
            fit_seconds = time.perf_counter() - started
            exports = {f"onnx {kind}": args.work / f"{model_dir.name}-{kind}" for kind in ("fp32", "int8")}
            gate = None
            if not (exports["onnx fp32"] / "tenni-export.json").exists():
                export_model(model_dir, exports["onnx fp32"])
            if not (exports["onnx int8"] / "tenni-export.json").exists():
                try:
                    export_model(model_dir, exports["onnx int8"], quantize="int8", check=check,
                                 max_drop=args.max_drop)
                except TenniError as err:  # refused by the gate: measure it anyway, and say so
                    gate = str(err)
                    print(f"{dataset} {strategy}: {gate}", flush=True)
                    export_model(model_dir, exports["onnx int8"], quantize="int8", check=check, max_drop=100)
            int8_manifest = load_onnx_model(exports["onnx int8"], verify=False).manifest
            model = tenni.load(model_dir)
            runners = {}
            if strategy == "probe":
                st = get_backbone("text/minilm").sentence_transformer()
                coef, intercept = model.estimator.coef_, model.estimator.intercept_

                def anchor(texts, st=st, coef=coef, intercept=intercept):
                    feats = st.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
                    return logistic_proba(feats, coef, intercept)

                runners["anchor: sentence-transformers encode + head"] = anchor

            def tenni_torch(texts, model=model):
                if model.strategy == "probe":  # an empty feature cache: compute, do not read, the features
                    backbone = get_backbone("text/minilm")
                    os.environ["TENNI_CACHE_DIR"] = tempfile.mkdtemp(dir=args.work, prefix="cache-")
                    backbone._cache = None
                return model.predict_proba(texts)

            runners["tenni predict (torch)"] = tenni_torch
            for name, folder in exports.items():
                runners[f"tenni {name}"] = load_onnx_model(folder, threads=THREADS).predict_proba
            for fn in runners.values():  # warm-up: load the models, plan the graphs
                fn(timing[:16])
            seconds = {name: [] for name in runners}
            cpu = {name: [] for name in runners}
            load = []
            for _ in range(args.reps):
                for name, fn in runners.items():
                    start, start_cpu = time.perf_counter(), cpu_seconds()
                    fn(timing)
                    seconds[name].append(time.perf_counter() - start)
                    cpu[name].append(cpu_seconds() - start_cpu)
                load.append(os.getloadavg()[0])
            speed = {name: {"texts_per_s": len(timing) / min(seconds[name]), "seconds": seconds[name],
                            "texts_per_cpu_s": len(timing) / min(cpu[name]), "cpu_seconds": cpu[name],
                            "load_avg_1min": load} for name in runners}
            if args.retime:  # new timings for runs measured before (same models); accuracy kept
                for run in results["runs"]:
                    if run["dataset"] == dataset and run["strategy"] == strategy and run["runtime"] in speed:
                        run.update(speed[run["runtime"]], retimed=time.strftime("%Y-%m-%dT%H:%M:%S"))
                        print(f"{dataset:10s} {strategy:7s} {run['runtime']:45s} {run['texts_per_s']:7.1f} texts/s  "
                              f"{run['texts_per_cpu_s']:7.1f} texts/CPU-s", flush=True)
                out_json.write_text(json.dumps(results, indent=1) + "\n")
                continue
            labels = model.labels
            for name, fn in runners.items():
                predicted = [labels[i] for i in np.argmax(fn(test_texts), axis=1)]
                run = {"dataset": dataset, "strategy": strategy, "runtime": name, "per_class": per_class,
                       "train_size": len(fit_data[0]), "test_size": len(test_texts),
                       "accuracy": accuracy(test_labels, predicted), "macro_f1": macro_f1(test_labels, predicted),
                       "fit_seconds": round(fit_seconds, 1), **speed[name]}
                if name == "tenni onnx int8":
                    run["int8_gate"] = gate or int8_manifest["quantization"]
                results["runs"].append(run)
                print(f"{dataset:10s} {strategy:7s} {name:45s} {run['texts_per_s']:7.1f} texts/s  "
                      f"acc {run['accuracy']:.4f}", flush=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(results, indent=1) + "\n")
    publish("inference", out_json, table(results))


def table(results: dict) -> str:
    lines = ["`bench/inference.py`: models fitted on `per class` examples per class of the train split; best of "
             f"{results['meta']['reps']} passes over {results['meta']['timing_texts']} test texts; accuracy on "
             f"{results['meta'].get('test_limit') or 'all'} test texts. int8 gated on "
             f"{results['meta']['check_texts']} held-out train texts; x anchor compares CPU time. "
             + results["meta"]["note"] + ".", "",
             "| dataset | model | per class | runtime | texts/s (wall) | texts/CPU-s | x anchor (CPU) | accuracy | "
             "macro-F1 | int8 gate |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    anchors = {r["dataset"]: r.get("texts_per_cpu_s") for r in results["runs"] if r["runtime"].startswith("anchor")}
    for r in results["runs"]:
        cpu = r.get("texts_per_cpu_s")
        ratio = f"{cpu / anchors[r['dataset']]:.2f}" if cpu and anchors.get(r["dataset"]) else "–"
        gate = r.get("int8_gate")
        if isinstance(gate, dict):
            gate = (f"passed (held-out train texts: {-gate['accuracy_drop_points']:+.2f} pts)"
                    if gate.get("gated") else "not gated")
        lines.append(f"| {r['dataset']} | {r['strategy']} | {r['per_class']} | {r['runtime']} | "
                     f"{r['texts_per_s']:.1f} | {f'{cpu:.1f}' if cpu else '–'} | {ratio} | "
                     f"{r['accuracy']:.4f} | {r['macro_f1']:.4f} | {gate or ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
