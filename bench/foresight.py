"""Does `assess` foresee what fitting will show? Three checks on the text, image and audio sets in ../shared/data.

1. Backbone ranking: candidates = every offline backbone of the modality (text: MiniLM, e5-small-multilingual and
   MiniLM truncated to its first 2 and 4 layers; images: EfficientNet-Lite0/1/2; audio: BirdNET and the GE2E
   speaker encoder) and the scratch baseline's features (TF-IDF + SVD; 32 px pixels; MFCC statistics). On N
   labeled examples per class, assess ranks them by cross-validated probe accuracy; the truth is the test accuracy
   of a probe fitted on the same examples (for text's TF-IDF, the scratch strategy itself).
   Kendall tau per dataset and seed (the issue's target: >= 0.7 on average).
2. Learning-curve forecast: the probe's curve fitted on N <= 16 per class, forecast at N = 64, against the
   measured accuracy at 64 (error, and whether the truth lies in the interval).
3. Label check: 5% of labels flipped at random in a sample of N = 64 per class; share of the flips the check
   finds (recall) and share of its flags that are flips (precision).

    python bench/foresight.py [--datasets sms_spam,ag_news_sample] [--seeds 0,1,2]
    python bench/foresight.py --datasets cats_vs_dogs,brain_mri_tumor,fsdd_spoken_digits   # images and audio

Each run merges its datasets into bench/results/foresight.json (rows of other datasets are kept), so text and
media can be measured in separate runs; the summary and the docs/benchmarks.md table cover every dataset in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import RESULTS, environment, replace_in_benchmarks, shared_data  # noqa: E402

DATASETS = ["sms_spam", "ag_news_sample", "banking77", "livedoor_news"]
MODALITY = {"cats_vs_dogs": "image", "brain_mri_tumor": "image", "fsdd_spoken_digits": "audio"}
MEDIA_CANDIDATES = {"image": ["image/efficientnet-lite0", "image/efficientnet-lite1", "image/efficientnet-lite2"],
                    "audio": ["audio/birdnet", "audio/speaker"]}
DEFAULT_BACKBONE = {"text": "text/minilm", "image": "image/efficientnet-lite0", "audio": "audio/birdnet"}


def truncated_minilm(layers: int, root: Path) -> str:
    """MiniLM keeping its first ``layers`` transformer layers, saved as a sentence-transformers folder."""
    from sentence_transformers import SentenceTransformer

    from tenni.backbones import get_backbone

    out = root / f"minilm-{layers}l"
    if not out.exists():
        model = SentenceTransformer(str(get_backbone("text/minilm").path), device="cpu")
        bert = model[0].auto_model
        bert.encoder.layer = bert.encoder.layer[:layers]
        bert.config.num_hidden_layers = layers
        model.save(str(out))
    return str(out)


def kendall(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def ranking_check(name, train_full, test, seeds, n, candidates, results):
    from tenni.assess import assess
    from tenni.assess.assess import SCRATCH_NAMES
    from tenni.strategies import get_strategy_class

    for seed in seeds:
        train = train_full.sample_per_class(n, seed)
        t0 = time.perf_counter()
        report = assess(train, backbones=candidates, seed=seed)
        seconds = time.perf_counter() - t0
        predicted = {r.backbone: r.probe_accuracy for r in report.reports}
        logme = {r.backbone: r.logme for r in report.reports}
        truth = {}
        for cand in candidates:
            est = get_strategy_class("probe")(backbone=cand, seed=seed).fit(train.inputs, train.labels)
            truth[cand] = float(np.mean(est.predict(test.inputs) == np.asarray(test.labels)))
        scratch_name = SCRATCH_NAMES[train.modality]
        if train.modality == "text":
            est = get_strategy_class("scratch")(seed=seed).fit(train.inputs, train.labels)
            truth[scratch_name] = float(np.mean(est.predict(test.inputs) == np.asarray(test.labels)))
        else:  # what assess's scratch row estimates: a probe on pixels / MFCC statistics
            truth[scratch_name] = media_scratch_truth(train, test, seed)
        names = list(truth)
        row = {"dataset": name, "seed": seed, "n": n, "truth": truth, "assess_probe_cv": predicted,
               "logme": logme, "tau_probe_cv": kendall([predicted[k] for k in names], [truth[k] for k in names]),
               "tau_logme": kendall([logme[k] for k in names], [truth[k] for k in names]),
               "assess_seconds": round(seconds, 1)}
        results["ranking"].append(row)
        print(name, seed, f"tau(probe CV)={row['tau_probe_cv']:.2f} tau(LogME)={row['tau_logme']:.2f}",
              {k.rsplit("/", 1)[-1]: round(v, 3) for k, v in truth.items()}, flush=True)


def media_scratch_truth(train, test, seed) -> float:
    from sklearn.linear_model import LogisticRegression

    from tenni.assess.assess import media_scratch_features

    X = media_scratch_features(list(train.inputs) + list(test.inputs), train.modality)
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced", solver="newton-cg")
    clf.fit(X[:len(train)], train.labels)
    return float(np.mean(clf.predict(X[len(train):]) == np.asarray(test.labels)))


def curve_check(name, train_full, test, seeds, results):
    from tenni.evaluation.curve import summarise_curve
    from tenni.strategies import get_strategy_class

    budgets, target = [2, 4, 8, 16], 64
    per_seed = np.zeros((len(seeds), len(budgets)))
    measured = []
    labels = np.asarray(train_full.labels)
    for s, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in train_full.classes}
        for j, b in enumerate(budgets + [target]):
            subset = train_full.subset(sorted(int(i) for c in train_full.classes for i in order[c][:b]))
            est = get_strategy_class("probe")(backbone=DEFAULT_BACKBONE[subset.modality], seed=seed)
            est.fit(subset.inputs, subset.labels)
            acc = float(np.mean(est.predict(test.inputs) == np.asarray(test.labels)))
            if b == target:
                measured.append(acc)
            else:
                per_seed[s, j] = acc
    curve = summarise_curve("probe", budgets, per_seed, [target])
    forecast = curve.forecast[str(target)]
    truth = float(np.mean(measured))
    row = {"dataset": name, "forecast": forecast, "measured": truth, "error": forecast["mean"] - truth,
           "inside": forecast["low"] <= truth <= forecast["high"], "budgets": budgets,
           "per_seed": per_seed.tolist(), "measured_per_seed": measured}
    results["curve"].append(row)
    print(name, "curve", json.dumps(row), flush=True)


def flip_check(name, train_full, seeds, results):
    from tenni.assess import check_labels

    for seed in seeds:
        sample = train_full.sample_per_class(64, seed)
        rng = np.random.default_rng(seed)
        labels = list(sample.labels)
        classes = sample.classes
        flipped = rng.choice(len(labels), size=max(1, len(labels) // 20), replace=False)
        for i in flipped:
            labels[i] = rng.choice([c for c in classes if c != labels[i]])
        texts = list(sample.inputs)
        result = check_labels((texts, labels), backbone=DEFAULT_BACKBONE[sample.modality], seed=seed)
        found = {int(m["source"].split()[-1]) for m in result.suspected_mislabels}
        recall = len(found & set(map(int, flipped))) / len(flipped)
        precision = len(found & set(map(int, flipped))) / max(len(found), 1)
        results["flips"].append({"dataset": name, "seed": seed, "planted": len(flipped), "flagged": len(found),
                                 "recall": recall, "precision": precision})
        print(name, seed, f"flips: recall {recall:.2f} precision {precision:.2f}", flush=True)


def summarise(rows: list[dict], key: str, absolute: bool = False) -> float | None:
    values = [abs(r[key]) if absolute else r[key] for r in rows]
    return float(np.mean(values)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="sms_spam,ag_news_sample,banking77")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--checks", default="ranking,curve,flips", help="which checks to run (others are kept)")
    parser.add_argument("--table", action="store_true", help="only rewrite the docs/benchmarks.md table from the JSON")
    args = parser.parse_args()
    from tenni.data import read_dataset

    out = RESULTS / "foresight.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    datasets = [] if args.table else args.datasets.split(",")
    results = {"benchmark": "foresight", "environment": environment(), "ranking": [], "curve": [], "flips": [],
               "n": {**previous.get("n", {}), **{name: args.n for name in datasets}}}
    checks = args.checks.split(",")
    for section in ("ranking", "curve", "flips"):  # keep the rows this run does not measure
        results[section] = [r for r in previous.get(section, [])
                            if r["dataset"] not in datasets or section not in checks]
    results["n"] = {name: results["n"].get(name, 32) for name in {r["dataset"] for r in results["ranking"]}
                    | set(datasets)}
    root = shared_data()
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            modality = MODALITY.get(name, "text")
            if modality == "text":
                candidates = ["text/minilm", "text/e5-small-multilingual", truncated_minilm(4, Path(tmp)),
                              truncated_minilm(2, Path(tmp))]
                train_full = read_dataset(root / name / "train.csv")
                test = read_dataset(root / name / "test.csv")
            else:
                candidates = MEDIA_CANDIDATES[modality]
                train_full = read_dataset(root / name / "train")
                test = read_dataset(root / name / "test")
            if "ranking" in checks:
                ranking_check(name, train_full, test, seeds_of(args), args.n, candidates, results)
            if "curve" in checks:
                curve_check(name, train_full, test, seeds_of(args), results)
            if "flips" in checks:
                flip_check(name, train_full, seeds_of(args), results)
    for row in results["ranking"]:  # temporary folder names -> stable names
        for key in ("truth", "assess_probe_cv", "logme"):
            row[key] = {("text/minilm-" + Path(k).name.split("-")[-1] if k.startswith("/") else k): v
                        for k, v in row[key].items()}
    summary = {}
    for modality in ("all", "text", "image", "audio"):
        pick = {k: [r for r in results[k] if modality == "all" or MODALITY.get(r["dataset"], "text") == modality]
                for k in ("ranking", "curve", "flips")}
        if not pick["ranking"]:
            continue
        summary[modality] = {
            "datasets": sorted({r["dataset"] for r in pick["ranking"]}),
            "kendall_tau_probe_cv": summarise(pick["ranking"], "tau_probe_cv"),
            "kendall_tau_logme": summarise(pick["ranking"], "tau_logme"),
            "curve_abs_error": summarise(pick["curve"], "error", absolute=True),
            "curve_inside": summarise(pick["curve"], "inside"),
            "flip_recall": summarise(pick["flips"], "recall"),
            "flip_precision": summarise(pick["flips"], "precision")}
    measured = (previous.get("summary", {}).get("measured") if args.table
                else time.strftime("%Y-%m-%dT%H:%M:%S"))
    results["summary"] = dict(summary.get("all", {}), by_modality=summary, measured=measured)
    if args.table:
        results = dict(previous, summary=results["summary"], n=results["n"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    table = render_table(results)
    print(table)
    replace_in_benchmarks("foresight", table)


def seeds_of(args) -> list[int]:
    return [int(s) for s in args.seeds.split(",")]


def render_table(results: dict) -> str:
    by = results["summary"]["by_modality"]
    columns = [m for m in ("text", "image", "audio", "all") if m in by]
    names = {"text": "text", "image": "images", "audio": "audio", "all": "all datasets"}

    def row(label, fn):
        return f"| {label} | " + " | ".join(fn(by[m]) for m in columns) + " |"

    def pts(v):
        return "n/a" if v is None else f"{100 * v:.1f} points"

    def num(v):
        return "n/a" if v is None else f"{v:.2f}"

    lines = ["| check | " + " | ".join(names[m] for m in columns) + " |", "|---" * (len(columns) + 1) + "|",
             row("backbone ranking, Kendall tau (assess's probe CV)", lambda s: num(s["kendall_tau_probe_cv"])),
             row("backbone ranking, Kendall tau (LogME alone)", lambda s: num(s["kendall_tau_logme"])),
             row("curve forecast at N=64 from N<=16, mean abs error", lambda s: pts(s["curve_abs_error"])),
             row("curve forecast: truth inside the interval",
                 lambda s: "n/a" if s["curve_inside"] is None else f"{100 * s['curve_inside']:.0f}% of datasets"),
             row("planted label flips found (recall / precision)",
                 lambda s: f"{num(s['flip_recall'])} / {num(s['flip_precision'])}")]
    datasets = "; ".join(f"{m}: {', '.join(by[m]['datasets'])}" for m in columns if m != "all")
    ns = ", ".join(f"{k} {v}" for k, v in sorted(results.get("n", {}).items()))
    seeds = sorted({r["seed"] for r in results.get("ranking", [])})
    lines.append(f"\nDatasets ({datasets}); seeds {', '.join(map(str, seeds))}; ranking at N per class ({ns}) over "
                 "the candidates: text "
                 "MiniLM 6/4/2 layers, e5-small-multilingual, TF-IDF; images EfficientNet-Lite0/1/2, 32 px pixels; "
                 "audio BirdNET, GE2E speaker encoder, MFCC statistics. Tau is averaged over datasets and seeds. "
                 f"Measured {results['summary']['measured']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
