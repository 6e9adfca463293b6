"""Long documents: tenni's strategies beside the ``setfit`` library when every text is ~1,000-2,000 characters.

    python bench/long_text.py                                   # the grid below
    python bench/long_text.py --datasets ag_news_long --ns 8 --seeds 0 --methods anchor:setfit
    python bench/long_text.py --table                           # only rewrite long_text.md from the JSON

Data sets (built here from ../shared/data, never copied into the project):

- ``ag_news_long`` (English, 4 classes): AG News articles of ONE class joined into documents. For each split
  (train, test) and class separately, the articles are shuffled (fixed seed 0) and appended to the current
  document, separated by a blank line, until it holds at least 1,000 characters; an article that would take it
  past 2,000 characters starts the next document instead. The label is that class. Train documents are built from
  train.csv only and test documents from test.csv only, so no article is in both. Every article carries its
  class, so the label is spread over the whole document: head truncation loses evidence, it does not lose the
  label. ~1,000 train / ~250 test documents, ~1,400 characters (~300 MiniLM tokens) each.
- ``livedoor_news`` (Japanese, 9 classes): the articles as they are (median ~1,070 characters), scored on a fixed
  stratified share of test.csv (``--livedoor-test`` per class, default 30) to keep the 4-bit e5 engine's encoding
  time within the session; frozen backbone only (``text/e5-small-multilingual``, probe), since no trainable
  multilingual encoder is available offline.

N labelled documents per class are sampled from train (seeds 0, 1, 2). Methods: tenni's strategies on MiniLM
(``name`` or ``name:key=value+key=value`` for options, ``@backbone`` for another backbone) and the ``setfit`` library
(``anchor:setfit``: its defaults — oversampled pairs, 1 epoch, batch 16, MiniLM's own max_seq_length 256;
``anchor:setfit128``: the same at max_seq_length 128). Seconds are fit + predict of the run, on one 2-core
machine shared with other jobs (every run records it); timings there vary up to 3x between identical runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import RESULTS, Results, environment, shared_data, summarise  # noqa: E402

DATASETS = ["ag_news_long", "livedoor_news"]
BACKBONES = {"ag_news_long": "text/minilm", "livedoor_news": "text/e5-small-multilingual"}
METHODS = {"ag_news_long": ["probe", "setfit", "lora", "finetune", "auto", "anchor:setfit", "anchor:setfit128"],
           "livedoor_news": ["probe", "auto"]}
MIN_CHARS, MAX_CHARS = 1000, 2000


# --- data -------------------------------------------------------------------------------------------------------

def long_documents(texts: list[str], labels: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Articles of one class joined into documents of MIN_CHARS..MAX_CHARS characters (see the module doc)."""
    rng = np.random.default_rng(seed)
    docs, doc_labels = [], []
    labels_arr = np.asarray(labels)
    for cls in sorted(set(labels)):
        idx = np.flatnonzero(labels_arr == cls)
        rng.shuffle(idx)
        current: list[str] = []
        for i in idx:
            article = texts[i].strip()
            size = sum(len(a) + 2 for a in current)
            if current and size + len(article) > MAX_CHARS:
                if size >= MIN_CHARS:
                    docs.append("\n\n".join(current))
                    doc_labels.append(cls)
                current = []
            current.append(article)
            if sum(len(a) + 2 for a in current) - 2 >= MIN_CHARS:
                docs.append("\n\n".join(current))
                doc_labels.append(cls)
                current = []
    return docs, doc_labels


def load(name: str, livedoor_test: int):
    from tenni.data import as_dataset, read_dataset

    root = shared_data()
    if name == "ag_news_long":
        out = []
        for split in ("train", "test"):
            raw = read_dataset(root / "ag_news_sample" / f"{split}.csv")
            docs, labels = long_documents(list(raw.inputs), list(raw.labels))
            out.append(as_dataset((docs, labels)))
        return out
    train = read_dataset(root / name / "train.csv")
    test = read_dataset(root / name / "test.csv").sample_per_class(livedoor_test, seed=0)
    return train, test


# --- the setfit library -----------------------------------------------------------------------------------------

def anchor_setfit(train, test, seed, max_length=None):
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from tenni.backbones import get_backbone

    model = SetFitModel.from_pretrained(str(get_backbone("text/minilm").path), device="cpu")
    if max_length is not None:
        model.model_body.max_seq_length = max_length
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, max_length=max_length, save_strategy="no", report_to="none",
                                 show_progress_bar=False, seed=seed, logging_strategy="no")
        trainer = Trainer(model=model, args=args,
                          train_dataset=HFDataset.from_dict({"text": list(train.inputs), "label": list(train.labels)}),
                          metric=lambda y_pred, y_true: {"accuracy": float(np.mean(np.asarray(y_pred) ==
                                                                                   np.asarray(y_true)))})
        trainer.train()
    return [str(p) for p in model.predict(list(test.inputs), batch_size=64)], {
        "max_seq_length": model.model_body.max_seq_length}


def library_steps(n_train: int, n_classes: int) -> int:
    """Optimizer steps of the library's default (oversampling: twice the larger of the unique positive and
    negative pair counts, batch 16)."""
    per = n_train // n_classes
    positive = n_classes * per * (per - 1) // 2
    negative = n_train * (n_train - 1) // 2 - positive
    return math.ceil(2 * max(positive, negative) / 16)


# --- tenni ------------------------------------------------------------------------------------------------------

def parse_method(method: str, default_backbone: str) -> tuple[str, dict, str]:
    """``name[:key=value+...][@backbone]`` -> (strategy, config, backbone)."""
    head, _, backbone = method.partition("@")
    strategy, _, options = head.partition(":")
    config = {}
    for item in filter(None, options.split("+")):
        key, _, value = item.partition("=")
        config[key] = value
    return strategy, config, backbone or default_backbone


def tenni_predict(method, train, test, seed, backbone):
    from tenni.api import make_estimator

    strategy, config, backbone = parse_method(method, backbone)
    estimator = make_estimator(strategy, backbone, config=config or None, seed=seed)
    start = time.perf_counter()
    estimator.fit(list(train.inputs), list(train.labels))
    extra = {"fit_seconds": round(time.perf_counter() - start, 2)}
    for attr in ("length_", "training_", "reason_"):
        value = getattr(estimator, attr, None)
        if value is not None:
            extra[attr.rstrip("_")] = value if not isinstance(value, dict) else {
                k: v for k, v in value.items() if k != "history"}
    if strategy == "auto":
        extra["chosen"] = estimator.chosen_.name
        extra["budget_seconds"] = estimator.config_.budget
    return [str(p) for p in estimator.predict(list(test.inputs))], extra


# --- running ----------------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--ns", default="8,64")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=None, help="comma-separated; default: the set's list (METHODS)")
    parser.add_argument("--livedoor-test", type=int, default=30, help="test documents per class (livedoor)")
    parser.add_argument("--max-library-steps", type=int, default=400,
                        help="skip library fits above this many optimizer steps (recorded as skipped)")
    parser.add_argument("--out", default=str(RESULTS / "long_text.json"))
    parser.add_argument("--merge", default=None, help="add the runs of another results JSON, then write the table")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--publish", action="store_true", help="also write the table into docs/benchmarks.md")
    parser.add_argument("--shared", default="2 cores shared with ~9 other agents' jobs",
                        help="what else ran on the machine (recorded with every run)")
    args = parser.parse_args(argv)
    results = Results(Path(args.out), {"benchmark": "long_text"})
    if args.merge:
        for run in Results(Path(args.merge), {}).data["runs"]:
            results.add(run)
    if not args.table and not args.merge:
        results.data["meta"]["environment"] = environment()
        run_grid(results, args)
    table = render_table(results.data)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    if args.publish:
        from _common import replace_in_benchmarks

        replace_in_benchmarks("long_text", table)
    print(table)


def run_grid(results: Results, args) -> None:
    from tenni.evaluation import classification_metrics

    for name in args.datasets.split(","):
        train_all, test = load(name, args.livedoor_test)
        methods = args.methods.split(",") if args.methods else METHODS[name]
        results.data["meta"].setdefault("datasets", {})[name] = {
            "train_documents": len(train_all), "test_documents": len(test),
            "mean_characters": round(float(np.mean([len(t) for t in test.inputs])), 1)}
        for n in [int(v) for v in args.ns.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                train = train_all.sample_per_class(n, seed)
                for method in methods:
                    if results.done(dataset=name, n=n, seed=seed, method=method):
                        continue
                    record = {"dataset": name, "n": n, "seed": seed, "method": method, "train_size": len(train),
                              "test_size": len(test), "machine": args.shared}
                    if method.startswith("anchor:setfit"):
                        steps = library_steps(len(train), len(train.classes))
                        if steps > args.max_library_steps:
                            results.add(dict(record, status="skipped", reason=(
                                f"setfit library defaults: {steps} optimizer steps for {len(train)} documents "
                                f"(limit {args.max_library_steps}; ~{steps * 10 // 60} min at ~10 s a step here)")))
                            print(f"{name} N={n} seed={seed} {method}: skipped ({steps} steps)", flush=True)
                            continue
                    t0 = time.perf_counter()
                    if method.startswith("anchor:setfit"):
                        predictions, extra = anchor_setfit(train, test, seed,
                                                           128 if method == "anchor:setfit128" else None)
                        extra["steps"] = library_steps(len(train), len(train.classes))
                    else:
                        predictions, extra = tenni_predict(method, train, test, seed, BACKBONES[name])
                    seconds = time.perf_counter() - t0
                    metrics = classification_metrics(list(test.labels), predictions, sorted(set(train.labels)))
                    results.add(dict(record, status="ok", accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
                                     seconds=round(seconds, 2), **extra))
                    print(f"{name} N={n} seed={seed} {method:28s} acc={metrics['accuracy']:.3f} {seconds:7.1f}s",
                          flush=True)


NAMES = {"anchor:setfit": "SetFit lib (defaults, max_seq_length 256)",
         "anchor:setfit128": "SetFit lib (max_seq_length 128)"}


def render_table(data: dict) -> str:
    rows = summarise(data["runs"])
    cells = {(r["dataset"], r["n"], r["method"]): r for r in rows}
    skipped = {(r["dataset"], r["n"], r["method"]): r.get("status") for r in data["runs"]
               if r.get("status", "ok") != "ok"}
    keys = set(cells) | set(skipped)
    lines = []
    for dataset in [d for d in DATASETS if any(k[0] == d for k in keys)]:
        ns = sorted({k[1] for k in keys if k[0] == dataset})
        methods = sorted({k[2] for k in keys if k[0] == dataset}, key=lambda m: (m.startswith("anchor"), m))
        lines += [f"**{dataset}** ({BACKBONES[dataset]})", "",
                  "| method | " + " | ".join(f"N = {n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for method in methods:
            row = []
            for n in ns:
                r = cells.get((dataset, n, method))
                if r is None:
                    row.append(f"{skipped[(dataset, n, method)]} (too slow here; see the JSON)"
                               if (dataset, n, method) in skipped else "")
                    continue
                std = f" ± {r['accuracy_std']:.3f} ({r['seeds']} seeds)" if r["seeds"] > 1 else " (1 seed)"
                row.append(f"{r['accuracy_mean']:.3f}{std}, {r['seconds_mean']:.0f} s")
            lines.append(f"| {NAMES.get(method, 'tenni ' + method)} | " + " | ".join(row) + " |")
        lines.append("")
    lines.append("Cells: test accuracy, mean ± std over seeds, and fit + predict seconds (mean); a probe's seconds "
                 "include its first encoding of the test set, later cells (auto) read it from the feature cache. "
                 f"Machine: {'; '.join(sorted({str(r.get('machine')) for r in data['runs'] if r.get('machine')}))}; "
                 f"updated {data['meta'].get('updated')}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
