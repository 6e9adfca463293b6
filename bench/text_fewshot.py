"""Few-shot text classification: tenni's strategies beside the anchors, on the same backbone and splits.

    python bench/text_fewshot.py                       # the full grid (hours on 2 cores)
    python bench/text_fewshot.py --datasets sms_spam --ns 8 --seeds 0
    python bench/text_fewshot.py --table               # only rewrite the docs/benchmarks.md table from the JSON

For every dataset in ../shared/data (sms_spam, ag_news_sample, banking77, livedoor_news), N labeled examples per
class are sampled from train (seeds 0, 1, 2; N = "all" uses the whole train set) and every method is scored on
the whole test split. Methods: tenni's strategies (probe, setfit, lora, finetune, scratch) and the anchors,
written the way their libraries document them: TF-IDF + logistic regression (scikit-learn defaults), the
``setfit`` library (num_iterations 20, 1 epoch, batch 16, max_length 128), and Hugging Face ``Trainer`` full
fine-tuning (lr 5e-5, batch 16, epochs raised until 150 optimizer steps, at most 30: tuned, not a straw man).

Seconds are fit + predict of that run. Frozen-feature methods (probe) reuse the feature cache, so the one-off
encoding of each dataset is measured once, separately (``encode_seconds`` in the JSON). Runs that would take far
too long on 2 CPU cores are recorded as skipped with their estimated size, never silently left out. Results are
written after every run, and a re-run skips what is already done (resume after an interruption).
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
from _common import RESULTS, Results, environment, publish, shared_data, summarise  # noqa: E402

DATASETS = ["sms_spam", "ag_news_sample", "banking77", "livedoor_news"]
TENNI = ["probe", "setfit", "lora", "finetune", "scratch"]
ANCHORS = ["anchor:tfidf_lr", "anchor:setfit", "anchor:hf_finetune"]
TRAINED = {"setfit", "lora", "finetune", "anchor:setfit", "anchor:hf_finetune"}


def minilm_path() -> str:
    from tenni.backbones import get_backbone

    return str(get_backbone("text/minilm").path)


# --- the anchors ------------------------------------------------------------------------------------------------

def anchor_tfidf_lr(train, test, seed):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer()
    clf = LogisticRegression(max_iter=1000).fit(vec.fit_transform(train.inputs), train.labels)
    return clf.predict(vec.transform(test.inputs))


def anchor_tfidf_char_lr(train, test, seed):
    """Character n-grams: the TF-IDF anchor that suits Japanese (no spaces between words)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3))
    clf = LogisticRegression(max_iter=1000).fit(vec.fit_transform(train.inputs), train.labels)
    return clf.predict(vec.transform(test.inputs))


def anchor_setfit(train, test, seed):
    from datasets import Dataset as HFDataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(minilm_path(), device="cpu")
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


def anchor_hf_finetune(train, test, seed):
    import torch
    from datasets import Dataset as HFDataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    labels = sorted(set(train.labels))
    index = {lab: i for i, lab in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=len(labels))

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=128)

    ds = HFDataset.from_dict({"text": train.inputs, "label": [index[y] for y in train.labels]})
    ds = ds.map(encode, batched=True, remove_columns=["text"])
    steps_per_epoch = math.ceil(len(ds) / 16)
    epochs = min(30, max(4, math.ceil(150 / steps_per_epoch)))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, learning_rate=5e-5, per_device_train_batch_size=16,
                                 num_train_epochs=epochs, warmup_steps=int(0.1 * epochs * steps_per_epoch),
                                 save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True,
                                 disable_tqdm=True, logging_strategy="no", seed=seed)
        Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tokenizer)).train()
    model.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(test.inputs), 64):
            enc = tokenizer(test.inputs[start:start + 64], truncation=True, max_length=128, padding=True,
                            return_tensors="pt")
            preds.extend(model(**enc).logits.argmax(-1).tolist())
    return [labels[i] for i in preds]


ANCHOR_FUNCS = {"anchor:tfidf_lr": anchor_tfidf_lr, "anchor:tfidf_char_lr": anchor_tfidf_char_lr,
                "anchor:setfit": anchor_setfit, "anchor:hf_finetune": anchor_hf_finetune}


# --- running ------------------------------------------------------------------------------------------------

def too_slow(method: str, n_train: int, args) -> str | None:
    """A reason to skip a run that would take far too long on 2 CPU cores, or None."""
    if method == "anchor:setfit":
        steps = 2 * 20 * n_train / 16
        if steps > args.max_setfit_steps:
            return (f"setfit library defaults: {int(steps)} pair steps for {n_train} examples "
                    f"(limit {args.max_setfit_steps})")
    elif method in TRAINED and n_train > args.max_train_trained:
        return (f"{n_train} training examples: full training passes exceed the 2-core budget "
                f"(limit {args.max_train_trained})")
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--ns", default="8,64,all", help="examples per class; 'all' = whole train set")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(TENNI + ANCHORS))
    parser.add_argument("--expensive-seeds", default=None,
                        help="seeds for anchor:setfit and anchor:hf_finetune (default: --seeds)")
    parser.add_argument("--max-train-trained", type=int, default=1300,
                        help="skip strategies that train the encoder above this many training examples")
    parser.add_argument("--max-setfit-steps", type=int, default=700)
    parser.add_argument("--out", default=str(RESULTS / "text_fewshot.json"))
    parser.add_argument("--table", action="store_true", help="only rewrite the docs/benchmarks.md table")
    args = parser.parse_args(argv)

    results = Results(Path(args.out), {"benchmark": "text_fewshot"})
    if not args.table:
        results.data["meta"]["environment"] = environment()
        run_grid(results, args)
    publish("text_fewshot", args.out, render_table(results.data))


def run_grid(results: Results, args) -> None:
    from tenni.backbones import get_backbone
    from tenni.data import read_dataset
    from tenni.evaluation import classification_metrics

    root = shared_data()
    methods = args.methods.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    expensive = [int(s) for s in args.expensive_seeds.split(",")] if args.expensive_seeds else seeds
    for name in args.datasets.split(","):
        full_train = read_dataset(root / name / "train.csv")
        test = read_dataset(root / name / "test.csv")
        start = time.perf_counter()
        if "probe" in methods:
            get_backbone("text/minilm").encode(full_train.inputs + test.inputs)  # one-off, then cached
            seconds = round(time.perf_counter() - start, 2)
            encode = results.data["meta"].setdefault("encode_seconds", {})
            encode[name] = max(seconds, encode.get(name, 0.0))  # a re-run finds the cache warm
        for n_text in args.ns.split(","):
            n = "all" if n_text == "all" else int(n_text)
            for seed in seeds if n != "all" else seeds[:1]:
                train = full_train if n == "all" else full_train.sample_per_class(n, seed)
                for method in methods:
                    if method in ("anchor:setfit", "anchor:hf_finetune") and seed not in expensive:
                        continue
                    if results.done(dataset=name, n=n, seed=seed, method=method):
                        continue
                    record = {"dataset": name, "n": n, "seed": seed, "method": method, "train_size": len(train),
                              "test_size": len(test), "torch_threads": torch_threads()}
                    reason = too_slow(method, len(train), args)
                    if reason:
                        results.add(dict(record, status="skipped", reason=reason))
                        print(f"{name:15s} N={n!s:4s} seed={seed} {method:20s} skipped: {reason}", flush=True)
                        continue
                    t0 = time.perf_counter()
                    timing = {}
                    predictions = predict_with(method, train, test, seed, timing)
                    seconds = time.perf_counter() - t0
                    labels = sorted(set(train.labels))
                    metrics = classification_metrics(test.labels, predictions, labels)
                    results.add(dict(record, status="ok", accuracy=metrics["accuracy"],
                                     macro_f1=metrics["macro_f1"], seconds=round(seconds, 2), **timing))
                    print(f"{name:15s} N={n!s:4s} seed={seed} {method:20s} acc={metrics['accuracy']:.3f} "
                          f"F1={metrics['macro_f1']:.3f} {seconds:7.1f}s", flush=True)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def predict_with(method: str, train, test, seed: int, timing: dict | None = None) -> list[str]:
    """Test-set predictions; for tenni's strategies ``timing`` gets the fit's own seconds (auto: vs its budget)."""
    if method in ANCHOR_FUNCS:
        return ANCHOR_FUNCS[method](train, test, seed)
    from tenni.api import make_estimator

    strategy, _, backbone = method.partition("@")  # "probe@text/other-backbone" names another backbone
    config = None
    if backbone.startswith("budget="):  # "auto@budget=300": auto with another time budget
        config, backbone = {"budget": float(backbone.split("=", 1)[1])}, ""
    estimator = make_estimator(strategy, backbone or "text/minilm", config=config, seed=seed)
    start = time.perf_counter()
    estimator.fit(train.inputs, train.labels)
    if timing is not None:
        timing["fit_seconds"] = round(time.perf_counter() - start, 2)
        budget = getattr(estimator.config_, "budget", None)
        if budget is not None:
            timing["budget_seconds"] = budget
    return [str(p) for p in estimator.predict(test.inputs)]


NAMES = {"auto": "tenni auto (default)",
         "auto@budget=300": "tenni auto --budget 5m",
         "auto@text/e5-small-multilingual": "tenni auto, e5-multilingual (the default for Japanese)",
         "probe": "tenni probe", "setfit": "tenni setfit", "lora": "tenni lora", "finetune": "tenni finetune",
         "hybrid": "tenni hybrid", "scratch": "tenni scratch",
         "probe@text/e5-small-multilingual": "tenni probe (e5-multilingual)",
         "hybrid@text/e5-small-multilingual": "tenni hybrid (e5-multilingual)",
         "anchor:tfidf_lr": "TF-IDF+LR", "anchor:tfidf_char_lr": "char TF-IDF+LR", "anchor:setfit": "SetFit lib",
         "anchor:hf_finetune": "HF fine-tune"}


def render_table(data: dict) -> str:
    """One block per dataset: a row per method, a column per N; cells are accuracy ± std / macro-F1 (seconds)."""
    rows = summarise(data["runs"])
    cells = {(r["dataset"], r["n"], r["method"]): r for r in rows}
    skipped = {(r["dataset"], r["n"], r["method"]) for r in data["runs"] if r.get("status") == "skipped"}
    order = list(NAMES) + sorted({r["method"] for r in rows} - set(NAMES))
    datasets = sorted({r["dataset"] for r in rows}, key=lambda d: DATASETS.index(d) if d in DATASETS else 99)
    lines = []
    for dataset in datasets:
        ns = sorted({r["n"] for r in rows if r["dataset"] == dataset}, key=lambda n: math.inf if n == "all" else n)
        lines += [f"**{dataset}**", "", "| method | " + " | ".join(f"N = {n}" for n in ns) + " |",
                  "|---|" + "---|" * len(ns)]
        for method in order:
            if not any((dataset, n, method) in cells or (dataset, n, method) in skipped for n in ns):
                continue
            row = []
            for n in ns:
                r = cells.get((dataset, n, method))
                if r is None:
                    row.append("skipped (too slow)" if (dataset, n, method) in skipped else "")
                    continue
                std = f" ± {r['accuracy_std']:.3f}" if r["seeds"] > 1 else " (1 seed)"
                row.append(f"{r['accuracy_mean']:.3f}{std} / {r['macro_f1_mean']:.3f} ({r['seconds_mean']:.0f} s)")
            lines.append(f"| {NAMES.get(method, method)} | " + " | ".join(row) + " |")
        lines.append("")
    env = data["meta"].get("environment", {})
    encode = data["meta"].get("encode_seconds", {})
    lines.append("Cells: accuracy mean ± std over seeds / macro-F1 (fit + predict seconds, mean). "
                 f"{env.get('cpus', '?')} CPU cores, torch {env.get('versions', {}).get('torch', '?')}; "
                 f"updated {data['meta'].get('updated', '?')}. One-off MiniLM encoding of each whole dataset "
                 "(cached, so not in the probe's seconds): " + ", ".join(f"{k} {v:.0f} s" for k, v in encode.items())
                 + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
