"""Text-to-text transfer on ag_news_headlines (description -> headline) with SmolLM2-135M-Instruct.

Cells: prompt 0-shot and 3-shot (no training), tenni lora, tenni qlora, and the plain Hugging Face + PEFT recipe
(a minimal loop: LoRA r=8 on q_proj/v_proj, lr 2e-4, loss on the headline tokens) as the anchor, at N training pairs.
Each cell runs in its own process so its peak memory (ru_maxrss) is its own. Results are written after every
cell (resumable: finished cells are skipped); a wall-clock budget stops starting new cells.

    TENNI_BENCH_DATA=/path/to/shared/data nice -n 10 python bench/generate.py --sizes 64,256 --test-n 40
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, replace_in_benchmarks, shared_data  # noqa: E402

INSTRUCTION = "Write a headline for this news text."
MAX_NEW = 24
METHODS = ("prompt3", "lora", "peft", "qlora", "prompt0")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _data(n: int, seed: int, test_n: int):
    import numpy as np

    from tenni.generate import read_pairs

    root = shared_data() / "ag_news_headlines"
    train, test = read_pairs(root / "train.csv"), read_pairs(root / "test.csv")
    train = train.subset(sorted(np.random.default_rng(seed).permutation(len(train))[:n]))
    test = test.subset(sorted(np.random.default_rng(0).permutation(len(test))[:test_n]))
    return train, test


def run_cell(cell: dict) -> dict:
    """One method at one size and seed, in this process."""
    import torch

    torch.set_num_threads(cell["threads"])
    torch.manual_seed(cell["seed"])
    start_mb = _rss_mb()
    from tenni.generate import Generator
    from tenni.generate.metrics import text_metrics

    train, test = _data(cell["n"], cell["seed"], cell["test_n"])
    method = cell["method"]
    decoding = {"max_new_tokens": MAX_NEW, "batch_size": 8}
    out = {"train_pairs": len(train), "test_pairs": len(test)}
    if method == "peft":
        outputs, train_s, gen_s, facts = _peft_recipe(train, test, cell)
        out.update(facts)
    else:
        strategy = "prompt" if method.startswith("prompt") else method
        config = {"k": int(method[-1])} if strategy == "prompt" else dict(cell["lora"])
        started = time.perf_counter()
        gen = Generator(strategy, "llm/smollm2-135m-instruct", config, instruction=INSTRUCTION, decoding=decoding,
                        seed=cell["seed"]).fit(train)
        train_s = time.perf_counter() - started
        out["train_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        outputs = gen.generate(test)
        gen_s = time.perf_counter() - started
        if gen.training.get("steps"):
            out["training"] = {k: gen.training.get(k) for k in ("epochs", "steps", "stopped", "best_epoch",
                                                                  "val_loss", "train_examples", "val_examples")}
    scores = text_metrics(outputs, test.outputs)
    scores.pop("per_example")
    scores["test_n"] = scores.pop("n")
    out.update(scores, train_seconds=round(train_s, 2), generate_seconds=round(gen_s, 2),
               peak_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               start_mb=round(start_mb, 1),
               examples=[{"input": i, "reference": r, "output": o}
                         for i, r, o in zip(test.inputs[:5], test.outputs[:5], outputs[:5])])
    return out


def _peft_recipe(train, test, cell):
    """The plain recipe: PEFT LoRA (r=8, alpha=16, q_proj/v_proj, lr 2e-4, batch 8) in a minimal PyTorch loop,
    prompts through the chat template, labels masked to the answer, greedy ``model.generate``."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tenni.generate import locate_llm

    path = locate_llm("llm/smollm2-135m-instruct")[1]
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def prompt(text):
        return tok.apply_chat_template([{"role": "user", "content": f"{INSTRUCTION}\n\n{text}"}],
                                       add_generation_prompt=True, tokenize=False)

    rows = []
    for text, out in zip(train.inputs, train.outputs):
        p = tok(prompt(text), add_special_tokens=False)["input_ids"]
        a = tok(out + tok.eos_token, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": p + a, "attention_mask": [1] * (len(p) + len(a)), "labels": [-100] * len(p) + a})
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                       target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    # the loop a PEFT tutorial writes: shuffled batches padded to their longest, full logits, AdamW + linear decay
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    g = torch.Generator().manual_seed(cell["seed"])
    steps = cell["peft_epochs"] * ((len(rows) + 7) // 8)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=steps)
    model.train()
    for _ in range(cell["peft_epochs"]):
        order = torch.randperm(len(rows), generator=g).tolist()
        for i in range(0, len(order), 8):
            batch = [rows[j] for j in order[i:i + 8]]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.tensor([r["input_ids"] + [tok.pad_token_id] * (width - len(r["input_ids"])) for r in batch])
            mask = torch.tensor([r["attention_mask"] + [0] * (width - len(r["input_ids"])) for r in batch])
            labels = torch.tensor([r["labels"] + [-100] * (width - len(r["input_ids"])) for r in batch])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    train_s = time.perf_counter() - started
    model.eval()
    tok.padding_side = "left"
    outputs = []
    started = time.perf_counter()
    texts = [prompt(t) for t in test.inputs]
    with torch.inference_mode():
        for i in range(0, len(texts), 8):
            batch = tok(texts[i:i + 8], return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**batch, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tok.pad_token_id)
            outputs += [tok.decode(g[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for g in gen]
    return outputs, train_s, time.perf_counter() - started, {"epochs": cell["peft_epochs"]}


def _markdown(data: dict) -> str:
    meta = data["meta"]
    lines = ["# Text-to-text transfer: ag_news_headlines (description -> headline), SmolLM2-135M-Instruct", "",
             f"Test: {meta['test_n']} of the 300 test pairs (fixed subset); seeds: {meta['seeds']}; "
             f"greedy, at most {MAX_NEW} new tokens; instruction \"{INSTRUCTION}\". torch threads: "
             f"{meta['threads']}. Machine: {meta['machine']}.", "",
             "| N | method | ROUGE-L | exact match | chrF | train s | generate s | peak MB | notes |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(data["runs"], key=lambda r: (r["n"], METHODS.index(r["method"]), r["seed"])):
        if "error" in r:
            lines.append(f"| {r['n']} | {r['method']} | | | | | | | {r['error'][:80]} |")
            continue
        t = r.get("training") or {}
        note = f"{t.get('steps')} steps, {t.get('stopped')}" if t else ""
        lines.append(f"| {r['n']} | {r['method']} | {100 * r['rougeL']:.1f} | {100 * r['exact_match']:.1f} | "
                     f"{100 * r['chrf']:.1f} | {r['train_seconds']:.0f} | {r['generate_seconds']:.0f} | "
                     f"{r['peak_mb']:.0f} | {note} |")
    lines += ["", "Peak MB is the cell process's ru_maxrss (Python, torch and the model load included; "
              f"about {meta.get('start_mb', '?')} MB before the model is loaded).", ""]
    for line in meta.get("notes", []):
        lines.append(f"- {line}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--test-n", type=int, default=40)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell (1 on a shared machine)")
    parser.add_argument("--epochs", default="64:3,256:1", help="training epochs per size, N:E pairs")
    parser.add_argument("--budget-minutes", type=float, default=80.0)
    parser.add_argument("--lora-checkpointing", action="store_true",
                        help="tenni lora with gradient checkpointing (less memory, ~30%% more compute)")
    parser.add_argument("--out", default=str(RESULTS / "generate.json"))
    parser.add_argument("--merge", nargs="*", default=None,
                        help="only merge the runs of these result files (cells run in parallel) into --out")
    parser.add_argument("--note", action="append", default=[], help="a line for the notes (repeatable)")
    args = parser.parse_args()
    if args.cell:
        result = run_cell(json.loads(args.cell))
        print("RESULT " + json.dumps(result))
        return
    from tenni._paths import atomic_write_bytes, atomic_write_json

    out = Path(args.out)
    if args.merge is not None:
        data = json.loads(out.read_text())
        for other in args.merge:
            for run in json.loads(Path(other).read_text())["runs"]:
                run["n"] = run.get("train_pairs", run["n"])
                key = (run["n"], run["seed"], run["method"])
                data["runs"] = [r for r in data["runs"] if (r["n"], r["seed"], r["method"]) != key] + [run]
        data["meta"]["notes"] = [n for n in data["meta"].get("notes", []) if not n.startswith("not run")]
        data["meta"]["notes"] += args.note
        atomic_write_json(out, data)
        atomic_write_bytes(out.with_suffix(".md"), _markdown(data).encode("utf-8"))
        if out.resolve().parent == RESULTS.resolve():  # the project's own results: also the benchmarks page
            replace_in_benchmarks("generate", _markdown(data).split("\n", 2)[2].strip())
        return
    from _common import environment

    data = json.loads(out.read_text()) if out.exists() else {"meta": {}, "runs": []}
    env = environment()
    data["meta"].update(test_n=args.test_n, seeds=args.seeds, threads=args.threads, environment=env,
                        machine=f"{env['cpus']} CPUs, load average {os.getloadavg()[0]:.0f} at start (the "
                                "cells run one at a time; each cell's load average is in the JSON)",
                        epochs=args.epochs)
    epochs = dict(tuple(int(x) for x in item.split(":")) for item in args.epochs.split(","))
    deadline = time.time() + 60 * args.budget_minutes
    methods = [m for m in args.methods.split(",") if m]
    for n in [int(s) for s in args.sizes.split(",")]:
        for seed in range(args.seeds):
            for method in methods:
                if method == "prompt0" and any(r["method"] == "prompt0" and r["seed"] == seed and r["n"] != n
                                               for r in data["runs"]):
                    continue  # zero-shot does not depend on N
                if any(r["n"] == n and r["seed"] == seed and r["method"] == method and "error" not in r
                       for r in data["runs"]):
                    continue
                if time.time() > deadline:
                    data["meta"].setdefault("notes", []).append(f"not run (time budget): N={n} seed={seed} {method}")
                    continue
                e = epochs.get(n, 1)
                cell = {"n": n, "seed": seed, "method": method, "test_n": args.test_n, "threads": args.threads,
                        "peft_epochs": e, "lora": {"epochs": e, "min_steps": 0, "learning_rate": 5e-4,
                                                   "batch_size": 8}}
                if args.lora_checkpointing and method == "lora":
                    cell["lora"]["gradient_checkpointing"] = True
                print(f"[{time.strftime('%H:%M:%S')}] N={n} seed={seed} {method} ...", flush=True)
                proc = subprocess.run([sys.executable, __file__, "--cell", json.dumps(cell)], capture_output=True,
                                      text=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                run = {"n": n, "seed": seed, "method": method, "load_average": round(os.getloadavg()[0], 1)}
                if line is None:
                    run["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                else:
                    run.update(json.loads(line[7:]))
                    run["n"] = n
                data["runs"] = [r for r in data["runs"] if (r["n"], r["seed"], r["method"]) != (n, seed, method)]
                data["runs"].append(run)
                data["meta"]["start_mb"] = run.get("start_mb", data["meta"].get("start_mb"))
                atomic_write_json(out, data)
                atomic_write_bytes(out.with_suffix(".md"), _markdown(data).encode("utf-8"))
                keys = ("rougeL", "exact_match", "train_seconds", "generate_seconds", "peak_mb", "error")
                print(f"    -> {json.dumps({k: run[k] for k in keys if k in run})}", flush=True)


if __name__ == "__main__":
    main()
