"""SetFit-style few-shot tuning: contrastive tuning of the sentence encoder, then a logistic head.

The recipe of Tunstall et al. (2022) — same-class pairs pulled to cosine 1, different-class pairs pushed to 0,
then logistic regression on the tuned embeddings — written on plain PyTorch so it runs offline and shares tenni's
training code. The default loss (``loss="batch"``) spends each encoding on every pair it can make: a step draws a
batch of examples (a few per class), encodes each once, and applies the same cosine loss to all pairs within the
batch (positives and negatives weighted alike), so 16 encodings give 120 pairs where independent pairs give 8-16.
The number of steps follows the data size (``examples_seen``), not a fixed cap. ``loss="pairs"`` keeps the
independent-pair recipe (one positive and one negative partner per example per round, capped at ``max_pairs``).
Batches run in groups of similar length (less padding), and the sequence length follows the data
(:mod:`tenni.backbones.length`). Measured against the ``setfit`` library: docs/guides/long-texts.md, docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .. import _checkpoints
from .._deadline import check_deadline
from .._logging import info, progress
from ..backbones.length import LengthOptions
from ..config import POSITIVE, SHARE, option
from ._linear import CLASS_WEIGHTS, fit_logistic, logistic_proba
from .base import Strategy

LOSSES = ("batch", "pairs")
CHECKPOINTS = 4
"""Checkpoints a tuning run keeps (one every quarter of its steps) when the run keeps them (``fit -o DIR``)."""


@dataclass
class SetFitConfig(LengthOptions):
    loss: str = option("batch", "'batch': cosine loss over all pairs within batches of examples, each encoded once; "
                                "'pairs': independent pairs (the original recipe; num_iterations, max_pairs)",
                       choices=LOSSES)
    examples_seen: float | None = option(None, "loss=batch: times each example is encoded in tuning; None: 16 up to "
                                               "32 examples, then falling as 1/sqrt(n) to 4", **POSITIVE)
    num_iterations: int = option(20, "loss=pairs: pair-generation rounds: each example gets one positive and one "
                                     "negative pair per round", **POSITIVE)
    max_pairs: int = option(1280, "loss=pairs: upper bound on the number of training pairs", **POSITIVE)
    epochs: int = option(1, "passes over the pairs (loss=pairs) or the steps (loss=batch)", **POSITIVE)
    batch_size: int = option(16, "examples (loss=batch) or pairs (loss=pairs) per optimizer step", **POSITIVE)
    learning_rate: float | None = option(None, "learning rate of the encoder; None: follows the number of steps, "
                                               "8e-5 up to 32 steps falling to 2e-5 at 64 (few steps move further "
                                               "each)",
                                         **POSITIVE)
    warmup_ratio: float = option(0.1, "share of steps with linear warm-up", **SHARE)
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


def examples_seen(n: int, value: float | None = None) -> float:
    """Encodings per example during tuning: 16 for up to 32 examples, then 16 * sqrt(32 / n), at least 4."""
    if value is not None:
        return float(value)
    return float(min(16.0, max(4.0, 16.0 * math.sqrt(32.0 / max(n, 1)))))


LR_RANGE = (2e-5, 8e-5)
FEW_STEPS = 32


def learning_rate(steps: int, value: float | None = None) -> float:
    """The encoder's learning rate: ``value``, else 8e-5 up to ``FEW_STEPS`` steps, falling as (32 / steps)^2 to
    2e-5 (from 64 steps on). Short runs need the larger steps to move the encoder at all; long ones lose by them.
    Measured at 8 per class (docs/guides/zeroshot.md): 2e-5 -> 8e-5 lifts ag_news (32 steps) 0.812 -> 0.831 and
    sms_spam (16) 0.918 -> 0.950, and costs banking77 (154 steps) 1 point and sms_spam at 64 per class (64
    steps) 0.3 at 3.9e-5; on the demo's synthetic tickets (36 steps) it costs 1.5."""
    if value is not None:
        return float(value)
    scaled = LR_RANGE[1] * (FEW_STEPS / max(steps, 1)) ** 2
    return float(min(LR_RANGE[1], max(LR_RANGE[0], scaled)))


def batch_steps(n: int, batch_size: int, seen: float) -> int:
    return max(1, math.ceil(seen * n / batch_size))


def class_batches(y: np.ndarray, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of about ``batch_size`` examples: K of each of P classes (K = max(2, batch / classes)),
    classes drawn at random, examples cycling through a shuffled order per class, so every batch has positives."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per_class = max(2, batch_size // len(classes))
    n_classes = max(2, min(len(classes), batch_size // per_class))
    pools = {c: [] for c in classes}
    batches = []
    for _ in range(steps):
        batch = []
        for c in rng.choice(classes, size=n_classes, replace=False):
            members = np.flatnonzero(y == c)
            take = min(per_class, len(members))
            if len(pools[c]) < take:  # a new round, without the examples the old one still holds (no repeats)
                pools[c].extend(m for m in rng.permutation(members).tolist() if m not in pools[c])
            batch.extend(pools[c][:take])
            del pools[c][:take]
        batches.append(np.asarray(batch, dtype=np.int64))
    return batches


def in_batch_cosine_loss(emb, labels):
    """MSE of the cosine of every pair in the batch against 1 (same class) or 0, positives and negatives
    weighted alike (``emb`` rows are unit vectors)."""
    import torch

    cos = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    upper = torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)
    pos, neg = same & upper, ~same & upper
    err = (cos - same.to(cos.dtype)) ** 2
    parts = [err[m].mean() for m in (pos, neg) if bool(m.any())]
    return sum(parts) / len(parts)


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
        from ..backbones.length import saved_choice
        from ._torch import Tokenized, predict_logits

        length, truncation = saved_choice(getattr(self, "length_", None), self.config_)
        data = Tokenized(self._tokenizer, texts, length, truncation)
        emb = predict_logits(self._encoder, data).numpy()
        if data.windowed:  # mean of unit vectors: back to unit length
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
        return emb

    def _fit(self, texts, y, cfg: SetFitConfig) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        from ..backbones.length import choose_for
        from ._resume import load_state, save_state, state_key
        from ._torch import TextInputs, Tokenized

        torch.manual_seed(self.seed)
        self._tokenizer, self._encoder = self._load()
        choice = choose_for(self._tokenizer, texts, cfg, self._backbone().token_cap, who="setfit",
                            model_config=self._encoder.model.config)
        self.length_ = choice.as_dict()
        data = Tokenized(self._tokenizer, texts, choice.max_length, choice.truncation)
        if cfg.loss == "batch":
            seen = examples_seen(len(y), cfg.examples_seen)
            steps = cfg.epochs * batch_steps(len(y), cfg.batch_size, seen)
            batches = class_batches(y, cfg.batch_size, steps, self.seed)
        else:
            pairs = make_pairs(y, cfg.num_iterations, cfg.max_pairs, self.seed)
            rng = np.random.default_rng(self.seed)
            batches = [pairs[order[i:i + cfg.batch_size]] for order in
                       (rng.permutation(len(pairs)) for _ in range(cfg.epochs))
                       for i in range(0, len(pairs), cfg.batch_size)]
            steps = len(batches)
        if not cfg.tune_embeddings:
            self._encoder.model.get_input_embeddings().weight.requires_grad_(False)
        from . import _parallel

        par = _parallel.current()  # None: one process on the CPU, the plain loop
        detach = par.attach(self._encoder) if par else None
        if par is not None and par.distributed:
            par.broadcast_from_main(self._encoder)
        scaler = torch.amp.GradScaler("cuda") if par and par.precision == "fp16" else None
        params = [p for p in self._encoder.parameters() if p.requires_grad]
        lr = learning_rate(steps, cfg.learning_rate)
        optimizer = _parallel.adamw(params, lr=lr, weight_decay=0.0)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)
        y_t = torch.as_tensor(y)
        losses, encoded, done = [], 0, 0
        slot = _checkpoints.next_slot()  # None unless the run keeps checkpoints (tenni fit -o DIR: DIR.partial)
        if slot is not None:
            trainable = {n for n, p in self._encoder.named_parameters() if p.requires_grad}
            key = state_key(self._encoder, ["setfit", asdict(cfg), self.seed, choice.as_dict(), np.asarray(y).tolist()],
                            lambda digest: TextInputs(data).update_digest(digest))
            every = max(1, math.ceil(steps / CHECKPOINTS))
            loaded = load_state(slot.folder, key, self._encoder, optimizer, scheduler) if slot.resume else None
            if loaded is not None:
                done, losses, encoded = loaded[0]["step"], loaded[0]["losses"], loaded[0]["encoded"]
                info(f"resuming contrastive tuning from its checkpoint after step {done} of {steps} ({slot.folder})")
        self._encoder.train()
        with progress(f"contrastive tuning (setfit, {cfg.loss} loss)", steps) as bar, \
                _parallel.SparseTables(self._encoder) as tables:
            bar.advance(done)
            for step, batch in enumerate(batches[done:], start=done + 1):
                check_deadline()
                if cfg.loss == "batch":
                    emb = self._encode_batch(data, batch, par)
                    loss = in_batch_cosine_loss(emb, y_t[batch])
                    encoded += len(batch)
                else:
                    unique, inverse = np.unique(batch[:, :2], return_inverse=True)
                    emb = self._encode_batch(data, unique, par)
                    inverse = torch.as_tensor(inverse.reshape(-1, 2))
                    cos = (emb[inverse[:, 0]] * emb[inverse[:, 1]]).sum(-1)
                    loss = torch.nn.functional.mse_loss(cos, torch.as_tensor(batch[:, 2], dtype=cos.dtype))
                    encoded += len(unique)
                if par is not None and par.distributed:
                    par.bind_gradients(params)
                if loss.requires_grad:  # False only on a rank that had no rows of this batch to encode
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                    tables.densify()
                if par is not None and par.distributed:  # each rank's part: d(loss)/d(its own rows)
                    par.sum_gradients(self._encoder.parameters(), tables.touched)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                bar.advance(1)
                if slot is not None and (step % every == 0 or step == steps):
                    save_state(slot.folder, key, self._encoder, trainable, optimizer, scheduler, par,
                               meta={"step": step, "losses": losses, "encoded": encoded})
        self._encoder.eval()
        feats = self._embed(texts)  # still on the training device; every rank fits the same head
        if detach is not None:
            detach()
        self.coef_, self.intercept_, self.C_ = fit_logistic(feats, y, seed=self.seed, C=cfg.C,
                                                            class_weight=cfg.class_weight)
        tokens_per_text = data.tokens() / max(len(data), 1)
        self.training_ = {"loss": cfg.loss, "steps": steps, "learning_rate": lr, "texts_encoded": encoded,
                          "token_steps": int(round(encoded * tokens_per_text)),
                          "final_loss": float(np.mean(losses[-10:])) if losses else None}
        if cfg.loss == "pairs":
            self.training_["pairs"] = int(len(pairs))
        if par is not None:
            self.training_.update(world_size=par.world, device=par.device, precision=par.precision)
        if done:
            self.training_["resumed_after_step"] = done

    def _encode_batch(self, data, idx, par):
        """Unit embeddings of the texts ``idx`` (one step's batch), with their autograd graph. On several processes
        every rank encodes its slice of the batch and the slices of all ranks are gathered (see
        ``Parallel.gather_rows``), so each rank computes the loss of the whole batch, as one process would."""
        import torch

        if par is None:
            return self._unit(data.forward_grouped(self._encoder, idx, planned=True), data)
        if not par.distributed:
            with par.autocast():
                return self._unit(data.forward_grouped(self._encoder, idx, planned=True).float(), data)
        mine = par.shard(idx)
        if len(mine):
            with par.autocast():
                local = self._unit(data.forward_grouped(self._encoder, mine, planned=True).float(), data)
        else:  # a batch smaller than the world: this rank only joins the gather
            local = torch.zeros((0, self._encoder.model.config.hidden_size))
        return par.gather_rows(local, par.split_sizes(len(idx)))

    @staticmethod
    def _unit(emb, data):
        """Windows' pooled embeddings back to unit length (one-row texts already are)."""
        import torch

        return torch.nn.functional.normalize(emb, dim=-1) if data.windowed else emb

    def _predict_proba(self, texts) -> np.ndarray:
        return logistic_proba(self._embed(texts), self.coef_, self.intercept_)

    def get_state(self):
        from ._torch import to_numpy_state

        tensors = to_numpy_state(self._encoder.state_dict(), "encoder.")
        tensors.update({"head.coef": self.coef_, "head.intercept": self.intercept_})
        return tensors, {"C": self.C_, "training": self.training_, "length": self.length_}

    def _set_state(self, tensors, meta) -> None:
        from ._torch import from_numpy_state

        self._tokenizer, self._encoder = self._load()
        self._encoder.load_state_dict(from_numpy_state(tensors, "encoder."))
        self._encoder.eval()
        self.coef_, self.intercept_ = tensors["head.coef"], tensors["head.intercept"]
        self.C_ = meta.get("C")
        self.training_ = meta.get("training", {})
        self.length_ = meta.get("length")
