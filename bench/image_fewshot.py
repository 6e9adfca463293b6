"""Few-shot image classification: transfer (probe, finetune on EfficientNet-Lite0) vs training from scratch.

    python bench/image_fewshot.py                          # the grid below (about an hour on 2 busy cores)
    python bench/image_fewshot.py --datasets brain_mri_tumor --ns 8 --seeds 0
    python bench/image_fewshot.py --sections anomaly       # only the defect-detection (anomaly) AUROC
    python bench/image_fewshot.py --table                  # only rewrite the docs/benchmarks.md table from the JSON

For cats_vs_dogs and brain_mri_tumor in ../shared/data (``<split>/<class>/<file>``), N labeled images per class
are sampled from train (seeds 0, 1, 2; N = "all" the whole train set, one seed) and every method is scored on the
whole test split. Methods: tenni ``probe`` and ``finetune`` on image/efficientnet-lite0, tenni ``scratch`` (a small
CNN on 64 px pixels), and the anchor "32 px pixels + logistic regression" (scikit-learn defaults). finetune runs
on ``--expensive-seeds`` only and is skipped (and recorded as skipped) above ``--max-train-finetune`` images.

Sections: ``fewshot`` (the grid), ``throughput`` (images/s of feature extraction on a cold cache, then the same
files again: a cached second pass does no extraction), ``anomaly`` (``--task anomaly``: fit on N normal train images
of one class, score the test split, AUROC with the other class as "defect").

Seconds are fit + predict of a run; the probe's one-off feature extraction of each dataset is measured apart.
The machine is shared with other benchmarks, so seconds are noisy (up to 3x); accuracies are not.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import RESULTS, Results, environment, publish, shared_data, summarise  # noqa: E402

DATASETS = ["cats_vs_dogs", "brain_mri_tumor"]
METHODS = ["probe", "finetune", "scratch", "anchor:pixels_lr"]
BACKBONE = "image/efficientnet-lite0"
NORMAL_CLASS = {"cats_vs_dogs": "cat", "brain_mri_tumor": "no_tumor"}
NAMES = {"auto": "tenni auto (race: probe, finetune; Lite0)",
         "probe": "tenni probe (EfficientNet-Lite0)", "finetune": "tenni finetune (EfficientNet-Lite0)",
         "scratch": "tenni scratch (small CNN, 64 px)", "anchor:pixels_lr": "32 px pixels + LR (anchor)"}


def anchor_pixels_lr(train, test, seed):
    from sklearn.linear_model import LogisticRegression

    from tenni.data.media import image_array

    def feats(ds):
        return np.stack([image_array(p, 32).reshape(-1) / 255.0 for p in ds.inputs])

    clf = LogisticRegression(max_iter=1000).fit(feats(train), train.labels)
    return [str(p) for p in clf.predict(feats(test))]


def predict_with(method: str, train, test, seed: int) -> list[str]:
    if method == "anchor:pixels_lr":
        return anchor_pixels_lr(train, test, seed)
    from tenni.api import make_estimator

    strategy, _, backbone = method.partition("@")
    estimator = make_estimator(strategy, backbone or BACKBONE, seed=seed)
    estimator.fit(train.inputs, train.labels)
    return [str(p) for p in estimator.predict(test.inputs)]


def run_fewshot(results: Results, args) -> None:
    from tenni.backbones import get_backbone
    from tenni.data import read_dataset
    from tenni.evaluation import classification_metrics

    root = shared_data()
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    expensive = [int(s) for s in args.expensive_seeds.split(",")]
    for name in args.datasets.split(","):
        full_train = read_dataset(root / name / "train")
        test = read_dataset(root / name / "test")
        if "probe" in methods or "finetune" in methods:
            start = time.perf_counter()
            get_backbone(BACKBONE).encode(full_train.inputs + test.inputs)  # one-off, then cached
            encode = results.data["meta"].setdefault("encode_seconds", {})
            encode[name] = max(round(time.perf_counter() - start, 1), encode.get(name, 0.0))
        for n_text in args.ns.split(","):
            n = "all" if n_text == "all" else int(n_text)
            for seed in seeds if n != "all" else seeds[:1]:
                train = full_train if n == "all" else full_train.sample_per_class(n, seed)
                for method in methods:
                    if method == "finetune" and seed not in expensive:
                        continue
                    if results.done(dataset=name, n=n, seed=seed, method=method):
                        continue
                    record = {"dataset": name, "n": n, "seed": seed, "method": method, "train_size": len(train),
                              "test_size": len(test)}
                    if method == "finetune" and len(train) > args.max_train_finetune:
                        reason = (f"{len(train)} training images: fine-tuning a CNN at 224 px exceeds the 2-core "
                                  f"budget (limit {args.max_train_finetune})")
                        results.add(dict(record, status="skipped", reason=reason))
                        print(f"{name:16s} N={n!s:4s} seed={seed} {method:18s} skipped: {reason}", flush=True)
                        continue
                    t0 = time.perf_counter()
                    predictions = predict_with(method, train, test, seed)
                    seconds = time.perf_counter() - t0
                    metrics = classification_metrics(test.labels, predictions, sorted(set(train.labels)))
                    results.add(dict(record, status="ok", accuracy=metrics["accuracy"],
                                     macro_f1=metrics["macro_f1"], seconds=round(seconds, 2)))
                    print(f"{name:16s} N={n!s:4s} seed={seed} {method:18s} acc={metrics['accuracy']:.3f} "
                          f"F1={metrics['macro_f1']:.3f} {seconds:7.1f}s", flush=True)


def run_throughput(results: Results, args, backbones=(BACKBONE,), count: int = 64) -> None:
    """Images/s on a cold cache (a fresh cache folder), then the same files again from the cache."""
    from tenni.backbones import get_backbone
    from tenni.backbones.cache import FeatureCache
    from tenni.data import read_dataset

    paths = read_dataset(shared_data() / "cats_vs_dogs" / "test").inputs[:count]
    out = results.data["meta"].setdefault("throughput", {})
    for name in backbones:
        bb = get_backbone(name)
        with tempfile.TemporaryDirectory() as tmp:
            bb._cache = FeatureCache(bb.fingerprint + "-bench", root=Path(tmp))
            bb.encode(paths[:4])  # load the network
            start = time.perf_counter()
            bb.encode(paths[4:])
            cold = time.perf_counter() - start
            start = time.perf_counter()
            bb.encode(paths[4:])
            warm = time.perf_counter() - start
            bb._cache = None
        out[name] = {"items_per_second": round((count - 4) / cold, 2), "items": count - 4,
                     "cached_second_pass_seconds": round(warm, 4), "threads": _threads()}
        print(f"throughput {name}: {(count - 4) / cold:.1f} images/s; cached second pass {warm:.3f} s", flush=True)


def run_anomaly(results: Results, args) -> None:
    """Fit on N normal train images, score the whole test split; AUROC with the other class as defect."""
    from tenni.api import fit
    from tenni.data import Dataset, read_dataset
    from tenni.evaluation.anomaly import auroc

    root = shared_data()
    out = results.data.setdefault("anomaly", [])
    for name in args.datasets.split(","):
        normal = NORMAL_CLASS[name]
        full_train = read_dataset(root / name / "train")
        test = read_dataset(root / name / "test")
        normals = [p for p, y in zip(full_train.inputs, full_train.labels) if y == normal]
        for n in (int(v) for v in args.anomaly_ns.split(",")):
            if any(r["dataset"] == name and r["n"] == n and r.get("scoring") == "both" for r in out):
                continue
            rng = np.random.default_rng(0)
            chosen = sorted(rng.choice(len(normals), size=min(n, len(normals)), replace=False).tolist())
            data = Dataset(inputs=[normals[i] for i in chosen], labels=None, modality="image")
            t0 = time.perf_counter()
            model = fit(data, task="anomaly", backbone=BACKBONE)
            scores = model.score(test.inputs)
            seconds = time.perf_counter() - t0
            is_defect = np.asarray([y != normal for y in test.labels])
            value = auroc(is_defect, scores)
            patch, glob = model.estimator._parts(test.inputs)  # each part alone, for comparison
            flagged = scores > model.estimator.threshold_
            out.append({"dataset": name, "n": n, "normal": normal, "scoring": "both", "auroc": round(value, 4),
                        "auroc_patch_only": round(auroc(is_defect, patch), 4),
                        "auroc_global_only": round(auroc(is_defect, glob), 4),
                        "normal_flagged": round(float(flagged[~is_defect].mean()), 4),
                        "defect_flagged": round(float(flagged[is_defect].mean()), 4), "seconds": round(seconds, 1)})
            results.save()
            print(f"anomaly {name:16s} normals={n:4d} AUROC={value:.3f} {seconds:.0f}s", flush=True)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def render_table(data: dict) -> str:
    rows = summarise(data["runs"])
    cells = {(r["dataset"], r["n"], r["method"]): r for r in rows}
    skipped = {(r["dataset"], r["n"], r["method"]): r for r in data["runs"] if r.get("status") == "skipped"}
    datasets = sorted({r["dataset"] for r in rows}, key=lambda d: DATASETS.index(d) if d in DATASETS else 99)
    lines = []
    for dataset in datasets:
        ns = sorted({r["n"] for r in rows if r["dataset"] == dataset}, key=lambda n: math.inf if n == "all" else n)
        lines += [f"**{dataset}**", "", "| method | " + " | ".join(f"N = {n}" for n in ns) + " |",
                  "|---|" + "---|" * len(ns)]
        for method in list(NAMES) + sorted({r["method"] for r in rows} - set(NAMES)):
            if not any((dataset, n, method) in cells or (dataset, n, method) in skipped for n in ns):
                continue
            row = []
            for n in ns:
                r = cells.get((dataset, n, method))
                if r is None:
                    skip = skipped.get((dataset, n, method))
                    row.append("" if skip is None else "n/a" if skip.get("reason", "").startswith("not applicable")
                               else "skipped (too slow)")
                    continue
                std = f" ± {r['accuracy_std']:.3f}" if r["seeds"] > 1 else " (1 seed)"
                row.append(f"{r['accuracy_mean']:.3f}{std} / {r['macro_f1_mean']:.3f} ({r['seconds_mean']:.0f} s)")
            lines.append(f"| {NAMES.get(method, method)} | " + " | ".join(row) + " |")
        lines.append("")
    anomaly = [r for r in data.get("anomaly", []) if r.get("scoring") == "both"]  # older runs: patch scoring only
    if anomaly:
        lines += ["**defect detection (`--task anomaly`)**: fit on N normal train images of one class; the test "
                  "split's other class plays the defect", "",
                  "| dataset (normal class) | N normals | AUROC (default: patch + global) | patch only | global only "
                  "| normals flagged | defects flagged | seconds |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in anomaly:
            lines.append(f"| {r['dataset']} ({r['normal']}) | {r['n']} | {r['auroc']:.3f} | "
                         f"{r['auroc_patch_only']:.3f} | {r['auroc_global_only']:.3f} | {r['normal_flagged']:.2f} "
                         f"| {r['defect_flagged']:.2f} | {r['seconds']:.0f} |")
        lines.append("")
    env = data["meta"].get("environment", {})
    encode = data["meta"].get("encode_seconds", {})
    speed = data["meta"].get("throughput", {})
    notes = ["Cells: accuracy mean ± std over seeds / macro-F1 (fit + predict seconds, mean)."]
    if speed:
        notes.append("Feature extraction: " + ", ".join(
            f"{k} {v['items_per_second']:.1f} images/s (cold cache; cached second pass "
            f"{v['cached_second_pass_seconds']:.2f} s for {v['items']})" for k, v in speed.items()) + ".")
    if encode:
        notes.append("One-off extraction of each whole dataset (cached, not in the probe's seconds): "
                     + ", ".join(f"{k} {v:.0f} s" for k, v in encode.items()) + ".")
    notes.append(f"{env.get('cpus', '?')} CPU cores shared with other benchmarks (seconds noisy, up to 3x), torch "
                 f"{env.get('versions', {}).get('torch', '?')}; updated {data['meta'].get('updated', '?')}.")
    lines.append(" ".join(notes))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--ns", default="8,32,all", help="images per class; 'all' = whole train set")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--expensive-seeds", default="0", help="seeds for finetune")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-train-finetune", type=int, default=100)
    parser.add_argument("--sections", default="throughput,fewshot,anomaly")
    parser.add_argument("--anomaly-ns", default="16,64")
    parser.add_argument("--out", default=str(RESULTS / "image_fewshot.json"))
    parser.add_argument("--table", action="store_true", help="only rewrite the docs/benchmarks.md table")
    parser.add_argument("--rerun", action="store_true",
                        help="drop the stored runs of the chosen datasets, methods, Ns and seeds, and run them again")
    args = parser.parse_args(argv)
    os.environ.setdefault("TENNI_NO_PROGRESS", "1")

    results = Results(Path(args.out), {"benchmark": "image_fewshot"})
    if args.rerun:
        chosen = (set(args.datasets.split(",")), set(args.methods.split(",")),
                  {n if n == "all" else int(n) for n in args.ns.split(",")}, {int(s) for s in args.seeds.split(",")})
        results.data["runs"] = [r for r in results.data["runs"] if not (
            r["dataset"] in chosen[0] and r["method"] in chosen[1] and r["n"] in chosen[2] and r["seed"] in chosen[3])]
    if not args.table:
        results.data["meta"]["environment"] = environment()
        sections = args.sections.split(",")
        if "throughput" in sections:
            run_throughput(results, args)
            results.save()
        if "fewshot" in sections:
            run_fewshot(results, args)
        if "anomaly" in sections:
            run_anomaly(results, args)
    publish("image_fewshot", args.out, render_table(results.data))


if __name__ == "__main__":
    main()
