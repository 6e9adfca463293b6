"""PyTorch pieces shared by the text strategies that train the backbone (finetune, lora, setfit) and by continued
pretraining (``tenni adapt``).

torch is imported in modules like this one (and ``_media``), loaded only when a strategy trains, so the probe and
scratch paths stay light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._deadline import check_deadline
from .._logging import progress
from ..errors import BackboneError


class PooledEncoder(nn.Module):
    """A transformers encoder + the pooling its sentence-transformers config asks for (mean or CLS)."""

    def __init__(self, model: nn.Module, pooling: str = "mean", normalise: bool = False):
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalise = normalise

    def forward(self, input_ids, attention_mask, **extra):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalise:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled


class SequenceClassifier(nn.Module):
    def __init__(self, encoder: PooledEncoder, dim: int, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, input_ids, attention_mask, **extra):
        return self.head(self.dropout(self.encoder(input_ids, attention_mask, **extra)))


def load_encoder(backbone, *, normalise: bool | None = None):
    """(tokenizer, PooledEncoder, dim) for a text backbone, from its local folder; no remote code by default."""
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.disable_progress_bar()

    folder = backbone.transformer_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=backbone.trust_remote_code)
        model = AutoModel.from_pretrained(str(folder), trust_remote_code=backbone.trust_remote_code)
    except Exception as err:
        raise BackboneError(f"cannot load '{backbone.name}' for training: {type(err).__name__}: {err}",
                            path=folder) from None
    pooling, st_normalise = backbone.pooling()
    encoder = PooledEncoder(model, pooling, st_normalise if normalise is None else normalise)
    dim = int(getattr(model.config, "hidden_size", 0) or backbone.dim)
    return tokenizer, encoder, dim


class Tokenized:
    """Texts tokenized once; batches are padded on demand."""

    def __init__(self, tokenizer, texts: list[str], max_length: int):
        self.tokenizer = tokenizer
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        self.ids = enc["input_ids"]
        self.type_ids = enc.get("token_type_ids")

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, idx) -> dict[str, torch.Tensor]:
        return self.pad([self.ids[i] for i in idx])

    def pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return pad_rows(self.tokenizer, rows, type_ids=self.type_ids is not None)

    def forward_grouped(self, model: nn.Module, idx, group: int = 8) -> torch.Tensor:
        """``model`` on the texts ``idx`` (rows in that order), run in groups of similar length (see
        ``forward_in_groups``). Inference runs a whole set through it in groups of the batch size."""
        return forward_in_groups(model, [self.ids[i] for i in np.asarray(idx)], self.pad, group)


def pad_rows(tokenizer, rows: list[list[int]], type_ids: bool = False) -> dict[str, torch.Tensor]:
    """Token-id ``rows`` padded into one batch (ids, attention mask, and zero token types where the model has them)."""
    out = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    batch = {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
    if type_ids:
        batch["token_type_ids"] = torch.zeros_like(out["input_ids"])
    return batch


def forward_in_groups(model: nn.Module, rows: list[list[int]], pad, group: int = 8) -> torch.Tensor:
    """``model`` on token-id ``rows`` (outputs in that order), padded by ``pad`` one group of similar length at a time.

    A batch of random texts padded to its longest one is mostly padding where a few texts are long. Sorted by
    length and run in groups of ``group``, each group is padded to its own longest text: the same outputs and
    gradients (the encoders have no batch statistics), about half the arithmetic on SMS-length training batches.
    """
    chunks = length_groups(rows, group)
    parts = [model(**pad([rows[i] for i in chunk])) for chunk in chunks]
    return torch.cat(parts)[torch.as_tensor(np.argsort(np.concatenate(chunks)))]


def length_groups(rows: list[list[int]], group: int = 8) -> list[np.ndarray]:
    """Indices of ``rows`` sorted by length and cut into ``ceil(len / group)`` groups of similar length."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    return np.array_split(order, max(1, math.ceil(len(rows) / group)))


@dataclass
class TrainPlan:
    epochs: int
    batch_size: int
    min_steps: int
    max_epochs: int
    warmup_ratio: float
    patience: int
    validation_fraction: float


def stratified_validation(y: np.ndarray, fraction: float, seed: int, min_per_class: int = 5):
    """Indices (train, val) for early stopping, or (all, None) when classes are too small to spare examples."""
    counts = np.bincount(y)
    if fraction <= 0 or counts[counts > 0].min() < min_per_class:
        return np.arange(len(y)), None
    rng = np.random.default_rng(seed)
    val = []
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(y == c)
        take = max(1, int(round(fraction * len(idx))))
        val.extend(rng.choice(idx, size=take, replace=False).tolist())
    val = np.array(sorted(val))
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


class EarlyStopping:
    """Keeps the weights of the best validation epoch (accuracy first, loss breaks ties) and counts the epochs
    since, for the text and the image/audio training loops alike."""

    def __init__(self, model: nn.Module, patience: int, weight=None):
        self.model, self.patience, self.weight = model, patience, weight
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.best_score, self.best_state, self.bad_epochs = -math.inf, None, 0

    def update(self, logits, y_true) -> dict:
        """Scores one epoch's validation logits; returns what to record for it."""
        proba = logits.softmax(-1)
        val_loss = float(nn.functional.nll_loss(proba.clamp_min(1e-9).log(), y_true, weight=self.weight))
        val_acc = float((proba.argmax(-1) == y_true).float().mean())
        score = val_acc - 1e-3 * val_loss
        if score > self.best_score:
            self.best_score, self.bad_epochs = score, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()
                               if k in self.trainable}
        else:
            self.bad_epochs += 1
        return {"val_loss": val_loss, "val_accuracy": val_acc}

    @property
    def exhausted(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state, strict=False)


def train_classifier(model: SequenceClassifier, data: Tokenized, y: np.ndarray, *, param_groups, plan: TrainPlan,
                     class_weight: np.ndarray | None, seed: int, description: str) -> dict:
    """AdamW + linear warm-up/decay, class-weighted cross-entropy, early stopping on a held-out slice."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_idx, val_idx = stratified_validation(y, plan.validation_fraction, seed)
    steps_per_epoch = math.ceil(len(train_idx) / plan.batch_size)
    epochs = min(plan.max_epochs, max(plan.epochs, math.ceil(plan.min_steps / steps_per_epoch)))
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(plan.warmup_ratio * total), total)
    weight = None if class_weight is None else torch.as_tensor(class_weight)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    y_t = torch.as_tensor(y, dtype=torch.long)
    stopper, history = EarlyStopping(model, plan.patience, weight), []
    with progress(description, total) as bar:
        for epoch in range(epochs):
            model.train()
            order = rng.permutation(train_idx)
            running = 0.0
            for start in range(0, len(order), plan.batch_size):
                check_deadline()
                idx = order[start:start + plan.batch_size]
                logits = data.forward_grouped(model, idx)
                loss = loss_fn(logits, y_t[idx])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += float(loss.detach()) * len(idx)
                bar.advance(1)
            record = {"epoch": epoch + 1, "train_loss": running / len(order)}
            if val_idx is not None:
                record.update(stopper.update(predict_logits(model, data, val_idx), y_t[val_idx]))
            history.append(record)
            if val_idx is not None and stopper.exhausted:
                bar.update(completed=total)
                break
    stopper.restore()
    model.eval()
    return {"epochs_run": len(history), "history": history, "early_stopping": val_idx is not None}


@torch.no_grad()
def predict_logits(model: nn.Module, data: Tokenized, idx=None, batch_size: int = 64) -> torch.Tensor:
    """Batched inference, grouped by length so padding is short."""
    was_training = model.training
    model.eval()
    idx = np.arange(len(data)) if idx is None else np.asarray(idx)
    out = data.forward_grouped(model, idx, group=batch_size) if len(idx) else torch.zeros(0)
    if was_training:
        model.train()
    return out


def to_numpy_state(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().contiguous().float().numpy() if v.is_floating_point()
            else v.detach().cpu().contiguous().numpy() for k, v in state.items()}


def from_numpy_state(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()
            if k.startswith(prefix)}
