"""PyTorch pieces the strategies that train share: the classifier (an encoder + dropout + a linear head) for text,
images and audio, the text inputs adapter for the training loop (:mod:`._training`), and tensors to and from the
artifact's numpy arrays.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..backbones.text_torch import (  # noqa: F401  (what the text strategies use, in one place)
    PooledEncoder,
    Tokenized,
    forward_in_groups,
    length_groups,
    load_encoder,
    pad_rows,
    planned_cost,
)


class EncoderClassifier(nn.Module):
    """``encoder`` (inputs -> pooled features) + dropout + a linear head; the same for text, images and audio."""

    def __init__(self, encoder: nn.Module, dim: int, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, *args, **kwargs):
        return self.head(self.dropout(self.encoder(*args, **kwargs)))


class TextInputs:
    """Tokenized texts for the training loop: logits of any rows, run in groups of similar length."""

    min_per_class = 5
    """Examples a class needs before some are held out for early stopping."""

    def __init__(self, data: Tokenized):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def train_logits(self, model: nn.Module, idx, gen: torch.Generator) -> torch.Tensor:
        return self.data.forward_grouped(model, idx, planned=True)

    def shard(self, idx, par) -> np.ndarray:
        """This rank's rows of a global batch (``par``: the run's ``Parallel``). The texts go out longest first,
        each to the rank whose work (its texts in ``planned_groups``: padded tokens plus a cost per call) grows
        least, so no rank waits long for one that drew the long texts; every rank computes the same split."""
        idx = np.asarray(idx)
        tokens = [sum(len(r) for r in self.data.rows[s:e]) for s, e in self.data.row_spans[idx]]
        parts: list[list[int]] = [[] for _ in range(par.world)]
        lengths: list[list[int]] = [[] for _ in range(par.world)]
        for i in np.argsort(tokens, kind="stable")[::-1]:
            r = min(range(par.world), key=lambda r: (planned_cost(lengths[r] + [tokens[i]]), len(parts[r]), r))
            parts[r].append(int(i))
            lengths[r].append(tokens[i])
        return idx[np.sort(parts[par.rank])]

    def eval_logits(self, model: nn.Module, idx) -> torch.Tensor:
        return predict_logits(model, self.data, idx)

    def update_digest(self, digest) -> None:
        """Feeds the token rows into ``digest`` (a resumable checkpoint's key)."""
        digest.update(np.ascontiguousarray(self.data.owner, dtype=np.int64).tobytes())
        for row in self.data.rows:
            digest.update(np.asarray(row, dtype=np.int64).tobytes())


@torch.inference_mode()
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
