"""Self-training on the unlabeled rest of the training split, beside the same strategy on the labels alone.

    python bench/selftrain.py                                   # text sets, N = 8 and 64, seeds 0,1,2
    python bench/selftrain.py --datasets sms_spam --ns 8 --seeds 0

For each dataset in ../shared/data, N labeled examples per class are sampled from train; the rest of train is the
pool (its labels hidden from training: they only score the pseudo-labels), all of it by default; ``--max-pool N``
caps it at N items drawn at random, to bound the encoding time (livedoor_news's long articles). The probe (MiniLM;
the multilingual backbone for livedoor_news) is fitted on the labels alone and with the pool
(``tenni.fit(..., unlabeled=pool)``), both scored on the whole test split, and a probe and the from-scratch
baseline on the whole labeled train split are the full-data references. At N = 64, seed 0, the self-trained model
is also distilled into a TF-IDF student (``student="scratch"``): its accuracy and predictions per second beside the
teacher's; ``--student small`` distils into the backbone cut to one layer and fine-tuned instead, on every seed
(its own results file and table; with ``--teacher hybrid`` too). Results are written after every run; a re-run
skips what is done.

``--teacher hybrid`` self-trains the hybrid (probe + TF-IDF; its students vote evenly), with a hybrid on all the
labels as its full-data row (text sets only).

``--teacher names`` runs the probe blended with the label-name prior instead (``auto`` racing the probe alone, so
its label-name prior is on, as in a default ``fit`` whose race picks the probe): labels only and with the pool, the
blend teaching the first round. Its rows are ``probe+names (labels only)`` and ``probe+names + self-training``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import RESULTS, Results, environment, publish, shared_data, summarise  # noqa: E402

DATASETS = ["sms_spam", "ag_news_sample", "banking77", "livedoor_news"]
BACKBONE = {"livedoor_news": "text/e5-small-multilingual", "cats_vs_dogs": "image/efficientnet-lite0"}
"""Text sets read train.csv / test.csv; image sets (cats_vs_dogs) their train/ and test/ class folders."""


TEACHERS = {"probe": ("probe", None, "probe"),
            "names": ("auto", {"candidates": ["probe"]}, "probe+names"),
            "hybrid": ("hybrid", None, "hybrid")}
"""--teacher: (strategy, its options, the rows' name)."""

STUDENT_NAMES = {"scratch": "TF-IDF", "small": "backbone cut to 1 layer, fine-tuned", "probe": "probe"}


def run_one(results: Results, name: str, n, seed: int, train, test, max_pool: int, rounds: int,
            teacher: str = "probe", student_kind: str = "scratch") -> None:
    import tenni

    backbone = BACKBONE.get(name, "text/minilm")
    strategy, options, label = TEACHERS[teacher]
    if n == "all":  # the full-data references: the probe, and the from-scratch baseline (TF-IDF, a small CNN)
        for kind in (("hybrid",) if teacher == "hybrid" else ("probe", "scratch")):
            if results.done(dataset=name, n=n, seed=0, method=f"{kind} (all labels)"):
                continue
            start = time.perf_counter()
            model = tenni.fit(train, test=test, strategy=kind, backbone=backbone, baseline=False)
            row = model.metrics["results"][0]
            results.add({"dataset": name, "n": n, "seed": 0, "method": f"{kind} (all labels)",
                         "accuracy": row["accuracy"], "macro_f1": row["macro_f1"],
                         "seconds": time.perf_counter() - start})
        return
    if results.done(dataset=name, n=n, seed=seed, method=f"{label} + self-training"):
        return
    labeled = train.sample_per_class(int(n), seed=seed)
    chosen = set(labeled.sources)
    rest = [i for i, s in enumerate(train.sources) if s not in chosen]
    rng = np.random.default_rng(seed)
    if max_pool:
        rest = sorted(rng.choice(rest, size=min(max_pool, len(rest)), replace=False).tolist())
    pool = train.subset(rest)
    student = None  # images: the probe is already the fast model (no scratch student for them)
    if int(n) == 64 and train.modality == "text" and (
            (teacher == "probe" and seed == 0) or (teacher != "names" and student_kind != "scratch")):
        student = student_kind  # the TF-IDF student on seed 0; the small one on every seed
    start = time.perf_counter()
    model = tenni.fit(labeled, test=test, strategy=strategy, config=options, backbone=backbone, unlabeled=pool,
                      rounds=rounds, student=student, baseline=False)
    seconds = time.perf_counter() - start
    rows = {r["strategy"]: r for r in model.metrics["results"]}
    plain = next(r for r in rows if r.endswith("(labels only)"))  # auto's row names its winner too
    trained = next(r for r in rows if r.endswith("+ self-training"))
    st = model.metrics["self_training"]
    common = {"dataset": name, "n": n, "seed": seed, "pool": len(pool)}
    results.add(dict(common, method=f"{label} (labels only)", accuracy=rows[plain]["accuracy"],
                     macro_f1=rows[plain]["macro_f1"], seconds=rows[plain]["seconds"]))
    extra = {"rounds": st["rounds"], "dropped_leaks": st["dropped_leaks"], "teacher": st["teacher"],
             "skipped": st["skipped"], "check": st.get("check"), "load_average": round(os.getloadavg()[0], 2)}
    if student:
        extra["student"] = model.metrics["student"]
    results.add(dict(common, method=f"{label} + self-training", accuracy=rows[trained]["accuracy"],
                     macro_f1=rows[trained]["macro_f1"], seconds=seconds, **extra))
    print(f"{name} N={n} seed={seed} {label}: labels only {rows[plain]['accuracy']:.3f}, "
          f"self-trained {rows[trained]['accuracy']:.3f} ({seconds:.0f} s; teacher {st['teacher']})", flush=True)


def render_table(data: dict) -> str:
    rows = summarise(data["runs"])
    lines = ["| set | N | method | accuracy (mean ± std) | seeds | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['n']} | {r['method']} | {r['accuracy_mean']:.3f} ± "
                     f"{r['accuracy_std']:.3f} | {r['seeds']} | {r['seconds_mean']:.0f} |")
    students = [r for r in data["runs"] if r.get("student")]
    if students:
        lines += ["", "| set | seed | teacher accuracy | student | student accuracy | teacher / student predictions "
                      "per s |", "|---|---|---|---|---|---|"]
        for r in sorted(students, key=lambda r: (r["dataset"], r["seed"])):
            s = r["student"]
            lines.append(f"| {r['dataset']} | {r['seed']} | {r['accuracy']:.3f} | {STUDENT_NAMES[s['kind']]} | "
                         f"{s['accuracy']:.3f} | {s['predictions_per_second']['teacher']:.0f} / "
                         f"{s['predictions_per_second']['student']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS[:3]))
    parser.add_argument("--ns", default="8,64,all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-pool", type=int, default=0, help="cap the pool at this many items (0: no cap)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--teacher", choices=sorted(TEACHERS), default="probe",
                        help="probe; names: the probe blended with the label-name prior; hybrid: probe + TF-IDF")
    parser.add_argument("--student", choices=["scratch", "small"], default="scratch",
                        help="the student distilled at N = 64: scratch (TF-IDF; seed 0, --teacher probe) or small (the "
                             "backbone cut to one layer, fine-tuned; every seed, --teacher probe or hybrid; its own "
                             "results file and table)")
    parser.add_argument("--out", default=None,
                        help="results JSON (default: the file behind the published table of --teacher; a re-run "
                             "skips the rows it holds: use a new file after a change)")
    parser.add_argument("--machine", default="quiet: one job at a time",
                        help="what else ran on the machine, recorded in the JSON")
    args = parser.parse_args()
    tag = "selftrain" if args.teacher == "probe" else f"selftrain-{args.teacher}"
    if args.student != "scratch":
        tag += f"-{args.student}"
    args.out = args.out or str(RESULTS / (tag.replace("-", "_") + "_full.json"))
    from tenni.data import read_dataset

    results = Results(Path(args.out), {"environment": environment(), "max_pool": args.max_pool,
                                       "rounds": args.rounds, "machine": args.machine})
    for name in args.datasets.split(","):
        folder = shared_data() / name
        split = "{}.csv" if (folder / "train.csv").exists() else "{}"
        train, test = read_dataset(folder / split.format("train")), read_dataset(folder / split.format("test"))
        for n in args.ns.split(","):
            for seed in ([0] if n == "all" else [int(s) for s in args.seeds.split(",")]):
                if n == "all" or args.teacher == "probe" or train.modality == "text":
                    run_one(results, name, n, seed, train, test, args.max_pool, args.rounds, args.teacher,
                            args.student)
    publish(tag, args.out, render_table(results.data))


if __name__ == "__main__":
    main()
