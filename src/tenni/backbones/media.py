"""What image and audio backbones share: cached features keyed by file content, and the trainable-module contract.

A media backbone's ``encode(paths)`` returns pooled features, one row per file, read from the feature cache where
the same bytes were embedded before (the key is a hash of the file's content, so renaming or copying a file costs
nothing, and editing one is never served stale features). Trainable ones (pure PyTorch) also offer ``module()``
(a fresh copy of the pretrained network mapping a batch to pooled features) and ``load_items``/``views`` so that
``finetune`` and ``lora`` can train them; frozen ones (a .tflite file) do not.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .encoder import CachedEncoder


def pooled_module(model, pool, attr: str = "model"):
    """A module that holds ``model`` as ``attr`` (so its parameters train, and saved weights are keyed
    ``attr.…``) and whose forward is ``pool(model, inputs)``: a batch -> pooled features."""
    from torch import nn

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            setattr(self, attr, model)

        def forward(self, inputs):
            return pool(getattr(self, attr), inputs)

    return Pooled()


def load_hf_encoder(path: Path, name: str, kind: str):
    """A transformers model from a local folder for an image/audio backbone; never runs remote code."""
    from transformers import AutoModel

    from .._context import quiet_transformers
    from ..errors import BackboneError

    try:
        with quiet_transformers():
            return AutoModel.from_pretrained(str(path), trust_remote_code=False)
    except Exception as err:
        raise BackboneError(f"cannot load {kind} backbone '{name}': {type(err).__name__}: {err}",
                            path=path) from None


class MediaBackbone(CachedEncoder):
    modality = "image"
    trainable = False
    transformer = False
    """True for transformer networks (attention projections that LoRA can adapt)."""
    languages = None
    trust_remote_code = False
    max_length = None
    weight_patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.pt", "*.pth")
    default_batch_size = 16

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = Path(path)
        self._frozen = None  # the frozen network that encode() runs, built once
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def frozen_module(self):
        """``module()`` in eval mode with gradients off, built once per backbone object (trainable backbones)."""
        with self._lock:
            if self._frozen is None:
                model = self.module()
                model.eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                self._frozen = model
            return self._frozen

    def preprocessing_tag(self) -> str:
        """Part of the cache key: the same weights with other preprocessing give other features."""
        return "v1"

    def cache_tag(self) -> str:
        return self.preprocessing_tag()

    def item_key(self, path: str) -> bytes:
        """A hash of the file's bytes: renaming or copying a file costs nothing, editing one is never stale."""
        from ..data.media import file_key

        return file_key(path)

    def embed(self, paths: list[str], batch_size: int | None = None) -> np.ndarray:
        """Features for a batch of files, without the cache."""
        raise NotImplementedError
