"""Continued pretraining: probe accuracy with and without adapting MiniLM on each set's own training texts.

For each text set in ../shared/data, MiniLM is adapted (SimCSE by default) on the set's training texts with the
labels hidden — the unlabeled data a user would have — under a time budget; then a probe is fitted at N = 8 and
64 labeled examples per class (seeds 0, 1, 2) on the base and on the adapted backbone and scored on the test
split. Also records what `assess` says about the domain gap, and the adaptation's wall time. Reports honestly
where adaptation does not help.

    python bench/adapt.py --datasets sms_spam,ag_news_sample --budget 900 --max-texts 10000
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
from _common import RESULTS, environment, replace_in_readme, shared_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="sms_spam,ag_news_sample,banking77,livedoor_news")
    parser.add_argument("--ns", default="8,64")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--method", default="simcse")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds of adaptation per dataset")
    parser.add_argument("--max-texts", type=int, default=10000)
    args = parser.parse_args()

    import resource

    from tenni.adapt import adapt
    from tenni.assess import assess
    from tenni.data import read_dataset
    from tenni.strategies import get_strategy_class

    out = {"benchmark": "adapt", "environment": environment(), "method": args.method, "rows": []}
    root = shared_data()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            train = read_dataset(root / name / "train.csv")
            test = read_dataset(root / name / "test.csv")
            corpus = train.inputs[: args.max_texts]
            t0 = time.perf_counter()
            adapted = adapt(corpus, Path(tmp) / name, backbone="text/minilm",
                            config={"method": args.method, "budget": args.budget, "max_steps": 100000})
            seconds = time.perf_counter() - t0
            lineage = json.loads((adapted / "tenni-backbone.json").read_text())
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            sample = train.sample_per_class(16, 0)
            report = assess(sample, backbones=["text/minilm", str(adapted)])
            minilm = next(r for r in report.reports if r.backbone == "text/minilm")
            row = {"dataset": name, "adapt_seconds": round(seconds, 1), "steps": lineage["steps"],
                   "texts": len(corpus), "peak_rss_mb": round(peak_mb), "assess_gap": minilm.reasons[1:],
                   "assess_verdict": minilm.verdict, "results": {}}
            for n in [int(x) for x in args.ns.split(",")]:
                for label, backbone in (("base", "text/minilm"), ("adapted", str(adapted))):
                    accs = []
                    for seed in [int(s) for s in args.seeds.split(",")]:
                        few = train.sample_per_class(n, seed)
                        est = get_strategy_class("probe")(backbone=backbone, seed=seed).fit(few.inputs, few.labels)
                        accs.append(float(np.mean(est.predict(test.inputs) == np.asarray(test.labels))))
                    row["results"][f"{label}@{n}"] = {"mean": float(np.mean(accs)), "std": float(np.std(accs))}
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / "adapt.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["| set | adaptation | N | base probe | adapted probe | gain |", "|---|---|---|---|---|---|"]
    for row in out["rows"]:
        for n in args.ns.split(","):
            base, adapted = row["results"][f"base@{n}"], row["results"][f"adapted@{n}"]
            lines.append(f"| {row['dataset']} | {row['steps']} steps, {row['adapt_seconds']:.0f} s | {n} | "
                         f"{base['mean']:.3f} ± {base['std']:.3f} | {adapted['mean']:.3f} ± {adapted['std']:.3f} | "
                         f"{100 * (adapted['mean'] - base['mean']):+.1f} pts |")
    table = "\n".join(lines) + f"\n\nMethod {args.method}; up to {args.max_texts} texts, {args.budget:.0f} s budget."
    print(table)
    replace_in_readme("adapt", table)


if __name__ == "__main__":
    main()
