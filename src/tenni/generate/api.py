"""Fit, assess and load text-to-text models; the CLI's ``--task generate`` calls these.

``fit`` always measures the no-training prompt baseline (k-shot in-context) on the same test pairs beside the
trained model, so the gain from training is shown, as ``scratch`` is for classification.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import DataError
from .backbone import DEFAULT_LLM, load_causal_lm, locate_llm
from .data import Pairs, as_pairs, with_instruction  # noqa: F401  (with_instruction: public helper)
from .engine import Decoding
from .model import DEFAULT_RETRIEVER, Generator, is_generate_model  # noqa: F401

BASELINE_SHOTS = 3


def split_pairs(pairs: Pairs, test_size: float, seed: int) -> tuple[Pairs, Pairs]:
    if not 0 < test_size < 1:
        raise DataError(f"test_size must be between 0 and 1, got {test_size}", hint="e.g. --test-size 0.2")
    n_test = max(1, round(test_size * len(pairs)))
    if len(pairs) - n_test < 2:
        raise DataError(f"{len(pairs)} pairs are too few to hold out a test set", path=pairs.path,
                        hint="add examples, or pass a separate --test file")
    order = np.random.default_rng(seed).permutation(len(pairs))
    return pairs.subset(sorted(order[n_test:])), pairs.subset(sorted(order[:n_test]))


def _row(gen: Generator, scores: dict, train_seconds: float) -> dict:
    return {"strategy": gen.label, "backbone": gen.backbone_name, "rougeL": scores["rougeL"],
            "exact_match": scores["exact_match"], "chrf": scores["chrf"], "n": scores["n"],
            "train_seconds": round(train_seconds, 3), "generate_seconds": scores["generate_seconds"],
            "seconds": round(train_seconds + scores["generate_seconds"], 3)}


def fit(data, *, test=None, strategy: str | None = None, backbone: str | None = None, config: dict | None = None,
        seed: int = 0, baseline: bool = True, test_size: float = 0.2, input_col: str | None = None,
        output_col: str | None = None, encoding: str = "auto", instruction: str | None = None,
        decoding: Decoding | dict | None = None, max_test: int | None = None) -> Generator:
    """Train a text-to-text model on (input, output) pairs and measure it beside the prompt baseline.

    ``strategy``: lora (default), qlora or prompt. Without ``test`` a ``test_size`` share is held out; ``max_test``
    caps the test pairs (generation is the slow part on a CPU)."""
    strategy = "lora" if strategy in (None, "auto") else strategy
    backbone = backbone if backbone and backbone != "auto" else DEFAULT_LLM
    pairs = as_pairs(data, input_col=input_col, output_col=output_col, encoding=encoding)
    if test is not None:
        train, held = pairs, as_pairs(test, input_col=input_col, output_col=output_col, encoding=encoding)
        source = f"--test {held.path or 'data'}"
    else:
        train, held = split_pairs(pairs, test_size, seed)
        source = f"{round(100 * test_size)}% hold-out"
    if max_test and len(held) > max_test:
        held = held.subset(sorted(np.random.default_rng(seed).permutation(len(held))[:max_test]))
        source += f", first {max_test} of a shuffle"
    results = []
    base = None
    if strategy != "qlora":  # the baseline and lora share one fp32 base (lora wraps it after the baseline ran)
        base = load_causal_lm(locate_llm(backbone)[1])
    prompt_row = None
    if baseline and strategy != "prompt":
        started = time.perf_counter()
        shots = min(BASELINE_SHOTS, len(train))
        retriever = (config or {}).get("retriever", DEFAULT_RETRIEVER)
        prompt = Generator("prompt", backbone, {"k": shots, "retriever": retriever}, instruction=instruction,
                           decoding=decoding, seed=seed)
        prompt.fit(train, base=base or load_causal_lm(locate_llm(backbone)[1]))
        scores = prompt.evaluate(held)
        prompt_row = _row(prompt, scores, time.perf_counter() - started - scores["generate_seconds"])
        results.append(prompt_row)
        del prompt
    gen = Generator(strategy, backbone, config, instruction=instruction, decoding=decoding, seed=seed)
    gen.fit(train, base=base)
    scores = gen.evaluate(held)
    row = _row(gen, scores, gen.training.get("seconds", 0.0))
    results.insert(0, row)
    gen.metrics = {"results": results, "test_size": len(held), "test_source": source, "train_size": len(train),
                   "examples": scores["examples"]}
    if prompt_row is not None:
        gen.metrics["transfer_gain"] = {k: row[k] - prompt_row[k] for k in ("rougeL", "exact_match", "chrf")}
    return gen


def load(path: str | Path, *, backbone: str | None = None) -> Generator:
    return Generator.load(path, backbone=backbone)


def merge(model_dir: str | Path, output: str | Path, *, backbone: str | None = None) -> Path:
    """Fold a lora/qlora model's adapter into its base and write a Hugging Face model folder."""
    return Generator.load(model_dir, backbone=backbone).merge(output)


def assess(data, *, backbone: str | None = None, instruction: str | None = None, input_col: str | None = None,
           output_col: str | None = None, encoding: str = "auto", k: int = BASELINE_SHOTS, max_examples: int = 64,
           seed: int = 0, decoding: Decoding | dict | None = None, retriever: str = DEFAULT_RETRIEVER) -> dict:
    """Before training: how well the base model does the task by prompting alone (zero- and k-shot, scored on up
    to ``max_examples`` pairs with the rest as the shot pool), and its per-token loss on the reference outputs —
    high loss means outputs unlike what the model expects (a domain gap that training can close)."""
    import math

    backbone = backbone if backbone and backbone != "auto" else DEFAULT_LLM
    pairs = as_pairs(data, input_col=input_col, output_col=output_col, encoding=encoding)
    if len(pairs) < 2:
        raise DataError("assessing needs at least 2 pairs", path=pairs.path, hint="add examples")
    n_eval = min(max_examples, max(1, len(pairs) // 2))
    order = np.random.default_rng(seed).permutation(len(pairs))
    held, pool = pairs.subset(sorted(order[:n_eval])), pairs.subset(sorted(order[n_eval:]))
    base = load_causal_lm(locate_llm(backbone)[1])
    out = {"backbone": backbone, "n_pairs": len(pairs), "n_scored": n_eval, "instruction": instruction}
    zero = Generator("prompt", backbone, {"k": 0}, instruction=instruction, decoding=decoding, seed=seed)
    zero.fit(pool, base=base)
    loss = zero.token_loss(held)
    out["base_loss_per_token"] = round(loss, 4)
    out["base_perplexity"] = round(math.exp(min(loss, 50)), 2)
    for shots in sorted({0, min(k, len(pool))}):
        gen = zero if shots == 0 else Generator("prompt", backbone, {"k": shots, "retriever": retriever},
                                                instruction=instruction, decoding=decoding,
                                                seed=seed).fit(pool, base=base)
        scores = gen.evaluate(held, examples=5)
        out[f"prompt_{shots}shot"] = {k2: scores[k2] for k2 in ("rougeL", "exact_match", "chrf",
                                                               "generate_seconds", "examples")}
    best = max((v["rougeL"] for key, v in out.items() if key.startswith("prompt_")), default=0.0)
    reasons = []
    if loss > 2.5:
        reasons.append(f"the base model finds the outputs unlikely ({loss:.2f} nats/token): training (lora) should "
                       "gain much over prompting")
    elif loss < 1.0:
        reasons.append(f"the base model already expects these outputs ({loss:.2f} nats/token): prompting may be "
                       "enough")
    if best < 0.2:
        reasons.append(f"prompting alone scores {100 * best:.1f} ROUGE-L: fine-tune (lora; qlora where memory is "
                       "short)")
    out["recommendation"] = {"strategy": "prompt" if best >= 0.6 and loss < 1.0 else "lora", "reasons": reasons}
    return out


CURVE_SIZES = (16, 32, 64, 128, 256, 512, 1024)


def curve(data, *, sizes: list[int] | None = None, seeds: int = 1, strategy: str = "lora",
          backbone: str | None = None, config: dict | None = None, instruction: str | None = None, test=None,
          test_size: float = 0.2, max_test: int | None = None, input_col: str | None = None,
          output_col: str | None = None, encoding: str = "auto", decoding: Decoding | dict | None = None,
          shots: int = BASELINE_SHOTS) -> dict:
    """ROUGE-L, exact match and chrF at growing numbers of training pairs: the trained ``strategy`` beside
    ``shots``-shot prompting from the same pairs (the no-training baseline), and zero-shot prompting as the point
    at 0 pairs. Each size is drawn ``seeds`` times from the training pairs; one fixed test set for all."""
    if strategy not in ("lora", "qlora"):
        raise DataError(f"a generation curve traces lora or qlora, not '{strategy}'",
                        hint="--strategy lora (prompting is traced beside it anyway)")
    backbone = backbone if backbone and backbone != "auto" else DEFAULT_LLM
    pairs = as_pairs(data, input_col=input_col, output_col=output_col, encoding=encoding)
    if test is not None:
        train, held = pairs, as_pairs(test, input_col=input_col, output_col=output_col, encoding=encoding)
    else:
        train, held = split_pairs(pairs, test_size, 0)
    if max_test and len(held) > max_test:
        held = held.subset(sorted(np.random.default_rng(0).permutation(len(held))[:max_test]))
    wanted = sorted(set(sizes)) if sizes else [s for s in CURVE_SIZES if s < len(train)] + [len(train)]
    if any(s < 1 for s in wanted):
        raise DataError("training-pair counts must be positive", hint="e.g. --budgets 16,64,256")
    too_big = [s for s in wanted if s > len(train)]
    if too_big:
        raise DataError(f"{', '.join(map(str, too_big))} training pairs asked for, {len(train)} available",
                        path=pairs.path, hint=f"use sizes up to {len(train)}")
    path = locate_llm(backbone)[1]
    retriever = (config or {}).get("retriever", DEFAULT_RETRIEVER)
    names = (strategy, f"prompt{shots}")
    metrics = ("rougeL", "exact_match", "chrf")
    curves = {name: {m: {str(s): [] for s in wanted} for m in (*metrics, "train_seconds")} for name in names}
    zero = Generator("prompt", backbone, {"k": 0}, instruction=instruction, decoding=decoding, seed=0)
    zero.fit(train.subset([0]), base=load_causal_lm(path))
    zero_scores = zero.evaluate(held)
    from .._logging import info, progress

    with progress(f"generation curve ({strategy} and prompting)", len(wanted) * seeds * 2) as bar:
        for size in wanted:
            for seed in range(seeds):
                sub = train.subset(sorted(np.random.default_rng(seed).permutation(len(train))[:size]))
                for name in names:
                    gen = (Generator(strategy, backbone, config, instruction=instruction, decoding=decoding,
                                     seed=seed) if name == strategy else
                           Generator("prompt", backbone, {"k": min(shots, size), "retriever": retriever},
                                     instruction=instruction, decoding=decoding, seed=seed))
                    started = time.perf_counter()
                    gen.fit(sub, base=None if strategy == "qlora" and name == strategy else load_causal_lm(path))
                    seconds = gen.training.get("seconds", time.perf_counter() - started)
                    scores = gen.evaluate(held)
                    for m in metrics:
                        curves[name][m][str(size)].append(scores[m])
                    curves[name]["train_seconds"][str(size)].append(round(seconds, 3))
                    bar.advance(1)
            means = {n: float(np.mean(curves[n]["rougeL"][str(size)])) for n in names}
            info(f"{size} pairs: ROUGE-L {strategy} {100 * means[strategy]:.1f}, prompting "
                 f"{100 * means[names[1]]:.1f}")
    return {"task": "generate", "strategy": strategy, "backbone": backbone, "sizes": wanted, "seeds": seeds,
            "test_size": len(held), "train_available": len(train), "instruction": instruction, "curves": curves,
            "zeroshot": {m: zero_scores[m] for m in metrics}}


def curve_rows(result: dict) -> list[list[str]]:
    """The curve as table rows: method, training pairs, ROUGE-L / exact match / chrF (mean ± std over seeds)."""
    def cell(values) -> str:
        values = 100 * np.asarray(values, dtype=float)
        return f"{values.mean():.1f} ± {values.std():.1f}" if len(values) > 1 else f"{values.mean():.1f}"

    z = result["zeroshot"]
    rows = [["prompt0", "0", f"{100 * z['rougeL']:.1f}", f"{100 * z['exact_match']:.1f}", f"{100 * z['chrf']:.1f}"]]
    for name, c in result["curves"].items():
        for s in result["sizes"]:
            rows.append([name, str(s), cell(c["rougeL"][str(s)]), cell(c["exact_match"][str(s)]),
                         cell(c["chrf"][str(s)])])
    return rows


def plot_generation_curve(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    sizes = result["sizes"]
    for name, c in result["curves"].items():
        values = 100 * np.array([c["rougeL"][str(s)] for s in sizes], dtype=float)
        ax.errorbar(sizes, values.mean(1), yerr=values.std(1), fmt="o-", capsize=3, label=name)
    ax.axhline(100 * result["zeroshot"]["rougeL"], ls="--", color="grey", label="zero-shot prompting (0 pairs)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training pairs")
    ax.set_ylabel("ROUGE-L")
    ax.set_title(f"generation curve: {result['strategy']} on {result['backbone']} vs prompting")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
