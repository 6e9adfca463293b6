"""PyTorch text encoders for training: a transformers model + the pooling its sentence-transformers config asks for,
its tokenizer, and batches padded per group of similar length.

What a trainable text backbone offers the strategies that tune it (finetune, lora, setfit) and continued pretraining
(``tenni adapt``). torch is imported when this module is, so only training paths import it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._context import quiet_transformers
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


def load_encoder(backbone, *, normalise: bool | None = None, layers: int | None = None):
    """(tokenizer, PooledEncoder, dim) for a text backbone, from its local folder; no remote code by default.

    ``layers`` keeps only the first that many transformer layers (the rest of the checkpoint is not loaded): a
    smaller, faster encoder to fine-tune, such as the distilled student of :mod:`tenni.selftrain`."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = backbone.transformer_dir()
    from .text import refuse_pickles

    refuse_pickles(Path(backbone.path), backbone.name)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=backbone.trust_remote_code)
            extra = {}
            if layers is not None:
                config = AutoConfig.from_pretrained(str(folder), trust_remote_code=backbone.trust_remote_code)
                extra["num_hidden_layers"] = _kept_layers(config, layers, backbone.name)
            model = AutoModel.from_pretrained(str(folder), trust_remote_code=backbone.trust_remote_code, **extra)
    except BackboneError:
        raise
    except Exception as err:
        raise BackboneError(f"cannot load '{backbone.name}' for training: {type(err).__name__}: {err}",
                            path=folder) from None
    pooling, st_normalise = backbone.pooling()
    encoder = PooledEncoder(model, pooling, st_normalise if normalise is None else normalise)
    dim = int(getattr(model.config, "hidden_size", 0) or backbone.dim)
    return tokenizer, encoder, dim


def _kept_layers(config, layers: int, name: str) -> int:
    have = getattr(config, "num_hidden_layers", None)
    if not isinstance(have, int):
        raise BackboneError(f"backbone '{name}' does not say how many layers it has (no num_hidden_layers in its "
                            "config), so it cannot be cut to fewer", hint="leave the layers option unset")
    if layers > have:
        raise BackboneError(f"backbone '{name}' has {have} layers, fewer than the {layers} asked for",
                            hint=f"use layers from 1 to {have}")
    return int(layers)


class Tokenized:
    """Texts tokenized once under a length policy (:mod:`.length`); batches are padded on demand.

    ``truncation`` "head" and "head_tail" give each text one row; "windows" gives a long text several rows, run
    through the model like any others and mean-pooled back into one output per text.
    """

    def __init__(self, tokenizer, texts: list[str], max_length: int, truncation: str = "head"):
        from .length import tokenize_rows

        self.tokenizer = tokenizer
        self.rows, self.owner = tokenize_rows(tokenizer, list(texts), max_length, truncation)
        self.n = len(texts)
        starts = np.searchsorted(self.owner, np.arange(self.n + 1))
        self.row_spans = np.stack([starts[:-1], starts[1:]], axis=1) if self.n else np.zeros((0, 2), np.int64)
        self.ids = [self.rows[s] for s, _ in self.row_spans]  # each text's first row
        self.type_ids = True if "token_type_ids" in getattr(tokenizer, "model_input_names", ()) else None

    def __len__(self) -> int:
        return self.n

    @property
    def windowed(self) -> bool:
        return len(self.rows) != self.n

    def batch(self, idx) -> dict[str, torch.Tensor]:
        return self.pad([self.ids[i] for i in idx])

    def pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return pad_rows(self.tokenizer, rows, type_ids=self.type_ids is not None)

    def forward_grouped(self, model: nn.Module, idx, group: int = 8, planned: bool = False) -> torch.Tensor:
        """``model`` on the texts ``idx`` (rows in that order), run in groups of similar length (see
        ``forward_in_groups``); a text read as several windows gets the mean of their outputs. Inference runs a
        whole set through it in groups of the batch size."""
        from .length import pool_rows

        idx = np.asarray(idx, dtype=np.int64)
        if not self.windowed:
            return forward_in_groups(model, [self.rows[i] for i in idx], self.pad, group, planned)
        row_idx = [r for i in idx for r in range(*self.row_spans[i])]
        owner = np.repeat(np.arange(len(idx)), self.row_spans[idx, 1] - self.row_spans[idx, 0])
        out = forward_in_groups(model, [self.rows[r] for r in row_idx], self.pad, group, planned)
        return pool_rows(out, owner, len(idx))

    def tokens(self) -> int:
        """Tokens the model reads for one pass over all texts (rows as cut, special tokens included)."""
        return int(sum(len(r) for r in self.rows))


def pad_rows(tokenizer, rows: list[list[int]], type_ids: bool = False) -> dict[str, torch.Tensor]:
    """Token-id ``rows`` padded into one batch (ids, attention mask, and zero token types where the model has them)."""
    out = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    batch = {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
    if type_ids:
        batch["token_type_ids"] = torch.zeros_like(out["input_ids"])
    return batch


GROUP_OVERHEAD = 96
"""A forward and backward call's fixed cost in padded tokens, for :func:`planned_groups` (MiniLM on one CPU thread:
about 20 ms a call, 0.27 ms a token, so ~74; more per token's worth on two). One number everywhere, not read from
the machine: the groups, and so the dropout draws and the ranks' split of a batch, are the same on any machine."""


def forward_in_groups(model: nn.Module, rows: list[list[int]], pad, group: int = 8,
                      planned: bool = False) -> torch.Tensor:
    """``model`` on token-id ``rows`` (outputs in that order), padded by ``pad`` one group of similar length at a time.

    A batch of random texts padded to its longest one is mostly padding where a few texts are long. Sorted by
    length and run in groups of ``group``, each group is padded to its own longest text: the same outputs and
    gradients (the encoders have no batch statistics), about half the arithmetic on SMS-length training batches.
    ``planned``: groups of at most ``group`` cut where padding and calls cost least (:func:`planned_groups`).
    """
    chunks = planned_groups(rows, group) if planned else length_groups(rows, group)
    parts = [model(**pad([rows[i] for i in chunk])) for chunk in chunks]
    return torch.cat(parts)[torch.as_tensor(np.argsort(np.concatenate(chunks)))]


def length_groups(rows: list[list[int]], group: int = 8) -> list[np.ndarray]:
    """Indices of ``rows`` sorted by length and cut into ``ceil(len / group)`` groups of similar length."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    return np.array_split(order, max(1, math.ceil(len(rows) / group)))


def planned_groups(rows: list[list[int]], group: int = 8, overhead: float | None = None) -> list[np.ndarray]:
    """Indices of ``rows`` sorted by length and cut into groups of at most ``group`` where the padded tokens plus
    ``overhead`` per group (a call's fixed cost; :data:`GROUP_OVERHEAD`) add up least: a training batch
    of similar lengths runs in fewer calls, a long text apart from the short ones. Exact (dynamic programming
    over the sorted lengths; a training batch is small)."""
    order = np.argsort([len(r) for r in rows], kind="stable")
    cuts = _plan([len(rows[i]) for i in order], group, overhead)[1]
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def planned_cost(lengths, group: int = 8, overhead: float | None = None) -> float:
    """What :func:`planned_groups` costs for texts of these lengths (padded tokens + overhead per group)."""
    return _plan(sorted(lengths), group, overhead)[0]


def _plan(ordered: list[int], group: int, overhead: float | None) -> tuple[float, list[int]]:
    if overhead is None:
        overhead = GROUP_OVERHEAD
    n = len(ordered)
    best, back = [0.0] * (n + 1), [0] * (n + 1)
    for j in range(1, n + 1):
        best[j], back[j] = min((best[i] + overhead + (j - i) * ordered[j - 1], i) for i in range(max(0, j - group), j))
    cuts, j = [n], n
    while j > 0:
        j = back[j]
        cuts.append(j)
    return best[n], cuts[::-1]
