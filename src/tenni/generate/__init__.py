"""Text-to-text transfer: prompt a causal language model (zero-/k-shot), or fine-tune it with LoRA / QLoRA.

``fit(pairs_file, strategy="lora")`` trains and measures it beside the prompt baseline; ``load(folder)`` reads a
saved model; ``assess(pairs_file)`` says before training how far prompting alone gets. Heavy libraries (torch,
transformers, peft) are imported only when a model is loaded.
"""

from __future__ import annotations

from .api import assess, curve, fit, load, merge, split_pairs
from .backbone import DEFAULT_LLM, LLM_REGISTRY, locate_llm
from .data import Pairs, as_pairs, read_pairs
from .engine import Decoding
from .metrics import text_metrics
from .model import STRATEGIES, Generator, is_generate_model

__all__ = ["DEFAULT_LLM", "LLM_REGISTRY", "STRATEGIES", "Decoding", "Generator", "Pairs", "as_pairs", "assess",
           "curve", "fit", "is_generate_model", "load", "locate_llm", "merge", "read_pairs", "split_pairs",
           "text_metrics"]
