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

from .._deadline import check_deadline
from .._logging import progress
from .cache import FeatureCache


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
    import transformers
    from transformers import AutoModel

    from ..errors import BackboneError

    transformers.logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(path), trust_remote_code=False)
    except Exception as err:
        raise BackboneError(f"cannot load {kind} backbone '{name}': {type(err).__name__}: {err}",
                            path=path) from None


class MediaBackbone:
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
        self._fingerprint: str | None = None
        self._cache: FeatureCache | None = None
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

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            from .text import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.path, patterns=self.weight_patterns)
        return self._fingerprint

    def preprocessing_tag(self) -> str:
        """Part of the cache key: the same weights with other preprocessing give other features."""
        return "v1"

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            self._cache = FeatureCache(f"{self.fingerprint}-{self.preprocessing_tag()}")
        return self._cache

    def encode(self, paths: list[str], *, batch_size: int | None = None, show_progress: bool = True) -> np.ndarray:
        """Pooled features for files, one row each; files seen before (same bytes) come from the cache."""
        from ..data.media import file_key

        keys = [file_key(str(p)) for p in paths]
        found = self.cache.get(keys)
        todo: dict[bytes, str] = {}
        for key, p, feat in zip(keys, paths, found):
            if feat is None:
                todo.setdefault(key, str(p))
        if todo:
            items = list(todo.items())
            step = batch_size or self.default_batch_size
            with progress(f"embedding ({self.name.rsplit('/', 1)[-1]})", len(items) if show_progress else None) as bar:
                for start in range(0, len(items), step):
                    check_deadline()  # what was embedded so far stays in the cache
                    part = items[start:start + step]
                    feats = np.asarray(self.embed([p for _, p in part]), dtype=np.float32)
                    self.cache.put([k for k, _ in part], feats)
                    bar.advance(len(part))
            found = self.cache.get(keys)
        return np.stack(found).astype(np.float32, copy=False) if found else np.zeros((0, self.dim), np.float32)

    def embed(self, paths: list[str]) -> np.ndarray:
        """Features for a batch of files, without the cache."""
        raise NotImplementedError
