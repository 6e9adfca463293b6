"""Continued pretraining: probe accuracy with and without adapting MiniLM on each set's own training texts.

For each text set in ../shared/data, MiniLM is adapted (spans by default; SimCSE, TSDAE, MLM) on the set's training
texts with the labels hidden — the unlabeled data a user would have — under a time budget; then a probe is fitted at
N = 8 and 64 labeled examples per class (seeds 0, 1, 2) on the base and on the adapted backbone and scored on the
whole test split. Also records what `assess` says on a 16-per-class sample (domain-gap signals, whether it
recommends continued pretraining, and its verdict on the adapted backbone beside the base), and the adaptation's
wall time and peak memory (each adaptation runs in its own process, so the peak is its own). Reports where it does
not help.

    python bench/adapt.py --datasets banking77,livedoor_news --methods spans,simcse --budget 900 --max-texts 10000
    python bench/adapt.py --table          # only rewrite the docs/benchmarks.md table

For simcse/tsdae/mlm, long documents (livedoor_news articles) are split into lines/sentences first: the corpus is
sentences, as in the TSDAE and SimCSE papers; spans reads the documents whole (its passages come from within one).
``--merge`` sets the share of adapted weights kept (tenni's default: auto; 1 = as trained). Results are written after
every step and a re-run reuses adapted backbones kept under ``bench/.work/adapted`` and skips finished rows.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import RESULTS, ROOT, environment, replace_in_benchmarks, shared_data  # noqa: E402

WORK = ROOT / "bench" / ".work" / "adapted"
OUT = RESULTS / "adapt.json"

ADAPT_CHILD = """
import json, resource, sys, time
from tenni.adapt import adapt
texts = json.loads(open(sys.argv[1], encoding="utf-8").read())
config = json.loads(sys.argv[3])
t0 = time.perf_counter()
adapt(texts, sys.argv[2], backbone="text/minilm", config=config, resume=True)
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def corpus_for(texts: list[str], max_texts: int, seed: int = 0, documents: bool = False) -> list[str]:
    """Sentences from the training texts (labels hidden), deduplicated, shuffled, at most ``max_texts``; with
    ``documents``, the training texts whole (the spans method samples its passages from each document)."""
    pieces = []
    for text in texts:
        for part in [text] if documents else re.split(r"[\n\r]+|(?<=[。！？])", text):
            part = part.strip()
            if len(part) >= 8:
                pieces.append(part)
    unique = list(dict.fromkeys(pieces))
    order = np.random.default_rng(seed).permutation(len(unique))
    return [unique[i] for i in order[:max_texts]]


def merge_share(args) -> float | str:
    """The merge setting of the run: "auto" or a share of adapted weights (rows from before merging existed were
    kept as trained: 1)."""
    from tenni.adapt.continued import AdaptConfig, parse_merge

    return parse_merge(args.merge if args.merge is not None else AdaptConfig().merge)


def adapted_folder(name: str, method: str, lr: float | None, merge: float | str) -> Path:
    """Where the adapted backbone of one run is kept for re-runs."""
    suffix = "" if merge == 1 else f"-merge{merge}" if isinstance(merge, str) else f"-merge{merge:g}"
    return WORK / (f"{name}-{method}" + (f"-lr{lr:g}" if lr else "") + suffix)


def run_adaptation(name: str, method: str, corpus: list[str], args) -> dict:
    folder = adapted_folder(name, method, args.lr, merge_share(args))
    lineage_file = folder / "tenni-backbone.json"
    if lineage_file.exists():
        lineage = json.loads(lineage_file.read_text())
        return {"steps": lineage["steps"], "planned_steps": lineage.get("planned_steps"),
                "adapt_seconds": lineage["seconds"], "peak_rss_mb": lineage.get("bench_peak_rss_mb"),
                "texts": lineage["corpus_texts"], "path": str(folder), **_merge_facts(lineage)}
    WORK.mkdir(parents=True, exist_ok=True)
    corpus_file = WORK / f"{name}-{method}.corpus.json"
    corpus_file.write_text(json.dumps(corpus, ensure_ascii=False), encoding="utf-8")
    config = {"method": method, "budget": args.budget, "max_steps": 100000, "epochs": args.epochs,
              "checkpoint_every": 50}
    if args.lr:
        config["learning_rate"] = args.lr
    config["merge"] = merge_share(args)
    proc = subprocess.run([sys.executable, "-c", ADAPT_CHILD, str(corpus_file), str(folder), json.dumps(config)],
                          capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"adaptation of {name} with {method} failed:\n{proc.stderr[-3000:]}")
    measured = json.loads(line[len("RESULT "):])
    lineage = json.loads(lineage_file.read_text())
    lineage["bench_peak_rss_mb"] = round(measured["peak_rss_mb"])
    lineage_file.write_text(json.dumps(lineage, indent=1))
    return {"steps": lineage["steps"], "planned_steps": lineage.get("planned_steps"),
            "adapt_seconds": round(measured["seconds"], 1), "peak_rss_mb": round(measured["peak_rss_mb"]),
            "texts": len(corpus), "path": str(folder), **_merge_facts(lineage)}


def _merge_facts(lineage: dict) -> dict:
    """The share of adapted weights the folder holds and, where measured, how well the base did the spans task."""
    facts = {"merge_share": lineage.get("merge_share", lineage["config"].get("merge", 1.0))}
    if lineage.get("base_pretext"):
        facts["base_pretext_accuracy"] = lineage["base_pretext"]["accuracy"]
    return facts


def probe_scores(train, test, backbone: str, ns, seeds) -> dict:
    from tenni.strategies import get_strategy_class

    out = {}
    for n in ns:
        accs = []
        for seed in seeds:
            few = train.sample_per_class(n, seed)
            est = get_strategy_class("probe")(backbone=backbone, seed=seed).fit(few.inputs, few.labels)
            accs.append(float(np.mean(est.predict(test.inputs) == np.asarray(test.labels))))
        out[str(n)] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "runs": accs}
    return out


def merge_ablation(name: str, train, test, shares, seeds) -> dict:
    """Probe accuracy at N = 8 for other merge shares, without training again: the 0.5 run saved
    m = 0.5 a + 0.5 b (a adapted, b base), so s a + (1 - s) b = 2 s m + (1 - 2 s) b exactly."""
    from safetensors.torch import load_file, save_file

    from tenni.backbones import get_backbone

    merged_dir = adapted_folder(name, "spans", None, 0.5)
    base = load_file(str(get_backbone("text/minilm").transformer_dir() / "model.safetensors"))
    merged = load_file(str(merged_dir / "model.safetensors"))
    out = {}
    for share in shares:
        folder = merged_dir.with_name(f"{name}-spans-share{share:g}")
        if not folder.exists():
            shutil.copytree(merged_dir, folder)
            save_file({k: (2 * share * v + (1 - 2 * share) * base[k]) if k in base and v.is_floating_point() else v
                       for k, v in merged.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
        out[f"{share:g}"] = probe_scores(train, test, str(folder), [8], seeds)["8"]
    return out


def load() -> dict:
    if OUT.exists():
        return json.loads(OUT.read_text())
    return {"benchmark": "adapt", "rows": []}


def save(data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(OUT)


def main() -> None:
    global OUT, WORK
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="sms_spam,ag_news_sample,banking77,livedoor_news")
    parser.add_argument("--methods", default="spans")
    parser.add_argument("--ns", default="8,64")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds of adaptation per dataset and method")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-texts", type=int, default=10000)
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: tenni adapt's own)")
    parser.add_argument("--merge", default=None,
                        help="auto or the share of the adapted weights kept (default: tenni adapt's own; 1: as "
                             "trained)")
    parser.add_argument("--out", default=str(RESULTS / "adapt.json"))
    parser.add_argument("--work", default=str(ROOT / "bench" / ".work" / "adapted"),
                        help="where adapted backbones are kept for re-runs")
    parser.add_argument("--note", default=None, help="conditions of this run, shown under the table")
    parser.add_argument("--merge-ablation", default=None,
                        help="other merge shares to score at N = 8 from the default run, e.g. 0.25,0.75")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    OUT, WORK = Path(args.out), Path(args.work)
    if args.table:
        data = load()
        if args.note:
            data["note"] = args.note
            save(data)
        return write_table(data)

    from tenni.assess import assess
    from tenni.data import read_dataset

    data = load()
    data["environment"] = environment()
    if args.note:
        data["note"] = args.note
    ns = [int(x) for x in args.ns.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    root = shared_data()
    for name in args.datasets.split(","):
        train = read_dataset(root / name / "train.csv")
        test = read_dataset(root / name / "test.csv")
        base = next((r for r in data["rows"] if r["dataset"] == name and r["method"] == "base"), None)
        if base is None:
            sample = train.sample_per_class(16, 0)
            report = assess(sample, backbones=["text/minilm"])
            minilm = report.reports[0]
            base = {"dataset": name, "method": "base", "assess_verdict": minilm.verdict,
                    "assess_reasons": minilm.reasons,
                    "assess_recommends_adaptation": bool(report.recommendation.get("continued_pretraining")),
                    "results": probe_scores(train, test, "text/minilm", ns, seeds)}
            data["rows"].append(base)
            save(data)
            print(json.dumps(base, ensure_ascii=False), flush=True)
        if args.merge_ablation:
            shares = [float(x) for x in args.merge_ablation.split(",")]
            data.setdefault("merge_ablation", {})[name] = merge_ablation(name, train, test, shares, seeds)
            save(data)
            continue
        for method in args.methods.split(","):
            corpus = corpus_for(train.inputs, args.max_texts, documents=method == "spans")
            if any(r["dataset"] == name and r["method"] == method and r.get("learning_rate") == args.lr
                   and r.get("merge", 1.0) == merge_share(args) for r in data["rows"]):
                continue
            adapted = run_adaptation(name, method, corpus, args)
            sample = train.sample_per_class(16, 0)
            report = assess(sample, backbones=["text/minilm", adapted["path"]])
            mine = next(r for r in report.reports if r.backbone == adapted["path"])
            row = dict(adapted, dataset=name, method=method, budget=args.budget, learning_rate=args.lr,
                       merge=merge_share(args), assess_verdict=mine.verdict, assess_reasons=mine.reasons,
                       results=probe_scores(train, test, adapted["path"], ns, seeds))
            data["rows"].append(row)
            save(data)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    write_table(data)


def write_table(data: dict) -> None:
    from tenni.adapt.continued import AdaptConfig

    default = AdaptConfig()
    lines = ["| set | assess on MiniLM (16 per class) | method | adaptation | N | base probe | adapted probe | gain | "
             "assess: adapted vs base |", "|---|---|---|---|---|---|---|---|---|"]
    bases = {r["dataset"]: r for r in data["rows"] if r["method"] == "base"}

    def is_default(row) -> bool:
        return (row["method"] == default.method and row.get("merge", 1.0) == default.merge
                and not row.get("learning_rate"))

    rows = [r for r in data["rows"] if r["method"] != "base" and r["dataset"] in bases]
    def gap_label(dataset: str) -> str:
        base = bases[dataset]
        if base.get("assess_recommends_adaptation"):
            return "domain gap: suggests adapting"
        if any("but the backbone was trained on" in r for r in base.get("assess_reasons", [])):
            return "language gap: suggests a multilingual backbone"
        return "no gap"

    def order(row) -> tuple:  # the default first (sets with a gap before the others), then the other runs in order
        return (False, gap_label(row["dataset"]) == "no gap") if is_default(row) else (True, False)

    for row in sorted(rows, key=order):
        base = bases[row["dataset"]]
        gap = gap_label(row["dataset"])
        method = row["method"] + (f" (lr {row['learning_rate']:g})" if row.get("learning_rate") else "")
        if row.get("merge") == "auto":
            method += f" (merged auto: {row['merge_share']:.2f})"
        elif (row.get("merge") or 1) < 1:
            method += f" (merged {row['merge']:g})"
        method = f"**{method} (default)**" if is_default(row) else method
        if row.get("assess_verdict", "").startswith("adaptation made it worse"):
            verdict = "worse: keep the base"
        elif any("adaptation helped" in r for r in row.get("assess_reasons", [])):
            verdict = "helped"
        else:
            verdict = "about the same"
        for n, adapted in row["results"].items():
            b = base["results"][n]
            lines.append(f"| {row['dataset']} | {gap} | {method} | {row['texts']} texts, {row['steps']} steps, "
                         f"{row['adapt_seconds']:.0f} s, {row['peak_rss_mb']} MB | {n} | "
                         f"{b['mean']:.3f} ± {b['std']:.3f} | {adapted['mean']:.3f} ± {adapted['std']:.3f} | "
                         f"{100 * (adapted['mean'] - b['mean']):+.1f} pts | {verdict} |")
    table = "\n".join(lines) + ("\n\nProbe (logistic regression on frozen features) accuracy on the whole test "
                                "split, mean ± std over seeds; adaptation on the set's own training sentences "
                                "(labels hidden; spans: the training documents whole), one epoch or the time budget; "
                                "peak = resident memory of the adaptation process; the last column is what "
                                "`tenni assess --backbones text/minilm,ADAPTED/` says on 16 labels per class, "
                                "before any fit.")
    table += f" {data['note']}" if data.get("note") else ""
    ablation = data.get("merge_ablation") or {}
    if ablation:
        shares = sorted({float(k) for runs in ablation.values() for k in runs} | {0.5})
        table += ("\n\nShare of the adapted weights kept (`--merge`), probe at N = 8, gain over the base. 0.5 is the "
                  "spans (merged 0.5) run; the other fixed shares are rebuilt exactly from it and the base (no new "
                  "training); auto is the default run, with the share it chose and the base's accuracy on the "
                  "spans task that chose it:\n\n"
                  "| set | base matches pairs | " + " | ".join(f"{s:g}" for s in shares)
                  + " | auto (share) |\n|---|---|" + "---|" * (len(shares) + 1))
        for name, runs in ablation.items():
            base = bases[name]["results"]["8"]["mean"]
            half = next((r for r in rows if r["dataset"] == name and r["method"] == "spans"
                         and r.get("merge") == 0.5), None)
            runs = dict(runs, **({"0.5": half["results"]["8"]} if half else {}))
            auto = next((r for r in rows if r["dataset"] == name and is_default(r)), None)
            table += (f"\n| {name} | " + (f"{auto['base_pretext_accuracy']:.0%}" if auto else "") + " | "
                      + " | ".join(f"{100 * (runs[f'{s:g}']['mean'] - base):+.1f}" if f"{s:g}" in runs else ""
                                   for s in shares)
                      + (f" | {100 * (auto['results']['8']['mean'] - base):+.1f} ({auto['merge_share']:.2f})"
                         if auto else " | ") + " |")
    print(table)
    replace_in_benchmarks("adapt", table)


if __name__ == "__main__":
    main()
