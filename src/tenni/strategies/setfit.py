"""SetFit-style few-shot tuning: contrastive pairs tune the sentence encoder, then a logistic head.

The recipe of Tunstall et al. (2022) — pairs of same-class (target cosine 1) and different-class (target 0)
examples, cosine-similarity loss, then logistic regression on the tuned embeddings — written on plain PyTorch so
it runs offline and shares tenni's training code. Each batch encodes every distinct text once, in groups of similar
length, and the number of pairs is capped (``max_pairs``) so that larger label sets do not cost quadratically more
time than they return. Measured against the ``setfit`` library: docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._deadline import check_deadline
from .._logging import progress
from ..config import POSITIVE, SHARE, option
from ._linear import CLASS_WEIGHTS, fit_logistic, logistic_proba
from .base import Strategy


@dataclass
class SetFitConfig:
    num_iterations: int = option(20, "pair-generation rounds: each example gets one positive and one negative "
                                     "pair per round", **POSITIVE)
    max_pairs: int = option(1280, "upper bound on the number of training pairs", **POSITIVE)
    epochs: int = option(1, "passes over the pairs", **POSITIVE)
    batch_size: int = option(16, "pairs per optimizer step", **POSITIVE)
    learning_rate: float = option(2e-5, "learning rate of the encoder", **POSITIVE)
    warmup_ratio: float = option(0.1, "share of steps with linear warm-up", **SHARE)
    max_length: int = option(128, "tokens per text", **POSITIVE)
    tune_embeddings: bool = option(True, "also tune the token-embedding table; off: ~25% faster steps on MiniLM "
                                         "(its table is half the weights)")
    C: float | None = option(None, "head's inverse L2 strength; None picks it by CV", **POSITIVE)
    class_weight: str | None = option("balanced", "'balanced' or None for the head", choices=CLASS_WEIGHTS)


def make_pairs(y: np.ndarray, num_iterations: int, max_pairs: int, seed: int) -> np.ndarray:
    """Rows (i, j, target): one positive and one negative partner per example per round, shuffled and capped."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    pairs = []
    for _ in range(num_iterations):
        for i, c in enumerate(y):
            same = by_class[c]
            if len(same) > 1:
                j = i
                while j == i:
                    j = int(rng.choice(same))
                pairs.append((i, j, 1))
            other = np.flatnonzero(y != c)
            pairs.append((i, int(rng.choice(other)), 0))
    pairs = np.asarray(pairs, dtype=np.int64)
    rng.shuffle(pairs)
    return pairs[:max_pairs]


class SetFitStrategy(Strategy):
    """Contrastive tuning of the sentence encoder on label pairs + a logistic head."""

    name = "setfit"
    Config = SetFitConfig
    needs_trainable_backbone = True
    text_only = True

    def _load(self):
        from ._torch import load_encoder

        tokenizer, encoder, _ = load_encoder(self._backbone(), normalise=True)
        return tokenizer, encoder

    def _embed(self, texts) -> np.ndarray:
        from ._torch import Tokenized, predict_logits

        data = Tokenized(self._tokenizer, texts, self.config_.max_length)
        return predict_logits(self._encoder, data).numpy()

    def _fit(self, texts, y, cfg: SetFitConfig) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        from ._torch import Tokenized

        torch.manual_seed(self.seed)
        self._tokenizer, self._encoder = self._load()
        data = Tokenized(self._tokenizer, texts, cfg.max_length)
        pairs = make_pairs(y, cfg.num_iterations, cfg.max_pairs, self.seed)
        steps = cfg.epochs * math.ceil(len(pairs) / cfg.batch_size)
        if not cfg.tune_embeddings:
            self._encoder.model.get_input_embeddings().weight.requires_grad_(False)
        params = [p for p in self._encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)
        rng = np.random.default_rng(self.seed)
        self._encoder.train()
        losses = []
        with progress("contrastive tuning (setfit)", steps) as bar:
            for _ in range(cfg.epochs):
                order = rng.permutation(len(pairs))
                for start in range(0, len(order), cfg.batch_size):
                    check_deadline()
                    batch = pairs[order[start:start + cfg.batch_size]]
                    unique, inverse = np.unique(batch[:, :2], return_inverse=True)
                    emb = data.forward_grouped(self._encoder, unique)
                    inverse = torch.as_tensor(inverse.reshape(-1, 2))
                    cos = (emb[inverse[:, 0]] * emb[inverse[:, 1]]).sum(-1)
                    loss = torch.nn.functional.mse_loss(cos, torch.as_tensor(batch[:, 2], dtype=cos.dtype))
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(loss.detach()))
                    bar.advance(1)
        self._encoder.eval()
        feats = self._embed(texts)
        self.coef_, self.intercept_, self.C_ = fit_logistic(feats, y, seed=self.seed, C=cfg.C,
                                                            class_weight=cfg.class_weight)
        self.training_ = {"pairs": int(len(pairs)), "steps": steps,
                          "final_loss": float(np.mean(losses[-10:])) if losses else None}

    def _predict_proba(self, texts) -> np.ndarray:
        return logistic_proba(self._embed(texts), self.coef_, self.intercept_)

    def get_state(self):
        from ._torch import to_numpy_state

        tensors = to_numpy_state(self._encoder.state_dict(), "encoder.")
        tensors.update({"head.coef": self.coef_, "head.intercept": self.intercept_})
        return tensors, {"C": self.C_, "training": self.training_}

    def _set_state(self, tensors, meta) -> None:
        from ._torch import from_numpy_state

        self._tokenizer, self._encoder = self._load()
        self._encoder.load_state_dict(from_numpy_state(tensors, "encoder."))
        self._encoder.eval()
        self.coef_, self.intercept_ = tensors["head.coef"], tensors["head.intercept"]
        self.C_ = meta.get("C")
        self.training_ = meta.get("training", {})
