"""Sentence-transformers and transformers text encoders.

The model is loaded lazily: a fit whose features are all in the cache never imports torch or transformers, which
is what makes a second fit on the same data take seconds instead of the encoder's load time.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from .._context import quiet_transformers
from ..errors import BackboneError
from .encoder import CachedEncoder, read_json, weights_fingerprint  # noqa: F401  (weights_fingerprint: where it was)
from .length import clip_texts

_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")
def refuse_pickles(folder: Path, name: str) -> None:
    """tenni never unpickles: a backbone folder whose weights exist only as pickles (``pytorch_model.bin``, ``.pt``)
    is refused in one line of its own, before a library would try (and advise ``weights_only=False``)."""
    if any(folder.rglob("*.safetensors")):
        return
    pickles = sorted(p.relative_to(folder) for pattern in _PICKLE_PATTERNS for p in folder.rglob(pattern)
                     if p.is_file())
    if pickles:
        raise BackboneError(f"backbone '{name}' has its weights only as pickle files ({pickles[0]}), which tenni "
                            "never loads (unpickling can run code)", path=folder,
                            hint="convert the weights to .safetensors (e.g. save_pretrained(..., "
                                 "safe_serialization=True) where you trust the file), or use another backbone")


_PIPELINE_FILES = ("modules.json", "sentence_bert_config.json", "config.json", "tokenizer.json",
                   "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def pipeline_tag(folder: Path) -> str:
    """A short hash of what, beside the weights, shapes a folder's embeddings: the module list, pooling and
    normalisation configs, the tokenizer. Two folders with the same weights and another pooling must not share
    cached features."""
    import hashlib

    files = [folder / name for name in _PIPELINE_FILES]
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        files += [folder / m["path"] / "config.json" for m in modules if isinstance(m, dict) and m.get("path")]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(folder)).encode())
        digest.update(f.read_bytes() if f.is_file() else b"-")
    return digest.hexdigest()[:12]


def card_languages(folder: Path) -> tuple[str, ...] | None:
    """Languages from the ``language:`` field of a hub model card's YAML header (None when it says nothing)."""
    readme = folder / "README.md"
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("---"):
        return None
    header = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    langs: list[str] = []
    lines = header.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("language:"):
            value = line.split(":", 1)[1].strip()
            if value:
                langs.extend(v.strip(" []'\"") for v in value.split(","))
            else:
                for item in lines[i + 1:]:
                    if not item.lstrip().startswith("-"):
                        break
                    langs.append(item.strip(" -'\""))
            break
    langs = [lang for lang in langs if lang]
    return tuple(langs) if langs else None


def inference_device() -> str:
    """Where the frozen text encoder runs: ``TENNI_DEVICE`` (cpu | cuda | auto: a GPU where there is one), cpu by
    default; Ray's GPU actors set it to cuda."""
    import os

    value = os.environ.get("TENNI_DEVICE", "cpu").strip().lower()
    if value in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


class TextBackbone(CachedEncoder):
    """A frozen or trainable text encoder from a local folder (registry entry, hub snapshot or user path)."""

    modality = "text"
    default_batch_size = 64

    def __init__(self, name: str, path: Path, *, trust_remote_code: bool = False, max_length: int = 256,
                 trainable: bool = True, languages: tuple[str, ...] | None = None):
        self.name = name
        self.languages = languages if languages is not None else card_languages(Path(path))
        self.path = Path(path)
        self.trust_remote_code = trust_remote_code
        self.max_length = max_length
        self.trainable = trainable
        self._model = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextBackbone({self.name!r})"

    def cache_tag(self) -> str:
        # the same weights truncating or pooling differently give other features: max_length and the pipeline
        # (pooling, normalisation, tokenizer) are in the key
        return f"len{self.max_length}-p{pipeline_tag(self.path)}"

    @property
    def token_cap(self) -> int:
        """The most tokens a text is read to: ``max_length``, or less where the folder's sentence-transformers
        config says so (what ``encode`` has always used)."""
        own = read_json(self.path / "sentence_bert_config.json").get("max_seq_length")
        return min(self.max_length, int(own)) if own else self.max_length

    @property
    def dim(self) -> int:
        cfg = read_json(self.transformer_dir() / "config.json", strict=True)
        return int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim") or 0)

    # --- layout of a sentence-transformers folder ---------------------------------------------------------
    def _modules(self) -> list[dict]:
        return read_json(self.path / "modules.json", strict=True) or []  # type: ignore[return-value]

    def transformer_dir(self) -> Path:
        for module in self._modules():
            if module.get("type", "").endswith("Transformer"):
                return self.path / module.get("path", "")
        return self.path

    def pooling(self) -> tuple[str, bool]:
        """(pooling mode, normalise) as the sentence-transformers config says; mean pooling for plain models."""
        mode, normalise = "mean", False
        for module in self._modules():
            kind = module.get("type", "")
            if kind.endswith("Pooling"):
                cfg = read_json(self.path / module.get("path", "") / "config.json", strict=True)
                if cfg.get("pooling_mode_cls_token"):
                    mode = "cls"
                elif cfg.get("pooling_mode") in ("cls", "mean"):
                    mode = cfg["pooling_mode"]
            if kind.endswith("Normalize"):
                normalise = True
        return mode, normalise

    # --- encoding -----------------------------------------------------------------------------------------
    def sentence_transformer(self):
        with self._lock:
            if self._model is None:
                refuse_pickles(self.path, self.name)
                try:
                    import warnings

                    from sentence_transformers import SentenceTransformer

                    # the libraries' own warnings and bars: the error below says it in one line, tenni shows progress
                    with warnings.catch_warnings(), quiet_transformers():
                        warnings.simplefilter("ignore")
                        model = SentenceTransformer(str(self.path), device=inference_device(),
                                                    trust_remote_code=self.trust_remote_code)
                except Exception as err:
                    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
                    first = first.split(" weights_only", 1)[0]  # torch's advice to unpickle: never followed here
                    raise BackboneError(f"cannot load backbone '{self.name}': {type(err).__name__}: {first}",
                                        path=self.path,
                                        hint="check that the folder holds a complete model") from None
                model.max_seq_length = min(self.max_length, model.max_seq_length or self.max_length)
                self._model = model
            return self._model

    def chunk_size(self, batch_size: int) -> int:
        return max(batch_size * 4, 256)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        texts = clip_texts(texts, self.max_length)  # characters first, then tokens
        return self.sentence_transformer().encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                                  show_progress_bar=False)

    def encode(self, items: list[str], *, batch_size: int | None = None, show_progress: bool = True,
               max_length: int | None = None, truncation: str = "head") -> np.ndarray:
        """Frozen sentence embeddings through the cache. ``max_length`` / ``truncation`` (see :mod:`.length`) say
        how a long text is read; the default, its first ``token_cap`` tokens, is sentence-transformers' own. Each
        reading has its own cache."""
        if (max_length is None or max_length == self.token_cap) and truncation == "head":
            return super().encode(items, batch_size=batch_size, show_progress=show_progress)
        return self.reading(max_length or self.token_cap, truncation).encode(
            items, batch_size=batch_size, show_progress=show_progress)

    def reading(self, max_length: int, truncation: str) -> TextReading:
        readings = self.__dict__.setdefault("_readings", {})
        if (max_length, truncation) not in readings:
            readings[(max_length, truncation)] = TextReading(self, max_length, truncation)
        return readings[(max_length, truncation)]


class TextReading(CachedEncoder):
    """A text backbone reading long texts its own way (another length, head + tail, or pooled windows): rows through
    the sentence-transformers modules (their pooling and normalisation), windows mean-pooled and re-normalised when
    the pipeline normalises. Its length and truncation are in its cache key."""

    modality = "text"
    default_batch_size = 64

    def __init__(self, backbone: TextBackbone, max_length: int, truncation: str):
        from .length import check_truncation

        self.backbone, self.max_length, self.truncation = backbone, int(max_length), check_truncation(truncation)
        self.name, self.path = backbone.name, backbone.path

    @property
    def fingerprint(self) -> str:
        return self.backbone.fingerprint

    @property
    def dim(self) -> int:
        return self.backbone.dim

    def cache_tag(self) -> str:
        return f"len{self.max_length}-{self.truncation}-p{pipeline_tag(self.path)}"

    def chunk_size(self, batch_size: int) -> int:
        return self.backbone.chunk_size(batch_size)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        from .length import pool_rows, tokenize_rows

        model = self.backbone.sentence_transformer()
        tokenizer = model.tokenizer
        rows, owner = tokenize_rows(tokenizer, texts, self.max_length, self.truncation)
        if not rows:
            return np.zeros((0, self.dim), np.float32)
        order = np.argsort([len(r) for r in rows], kind="stable")
        out: list = [None] * len(rows)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenizer.pad({"input_ids": [rows[i] for i in idx]}, return_tensors="pt")
                features = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
                if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
                    features["token_type_ids"] = torch.zeros_like(enc["input_ids"])
                emb = model(features)["sentence_embedding"].float().numpy()
                for j, i in enumerate(idx):
                    out[i] = emb[j]
        feats = pool_rows(np.stack(out), owner, len(texts))
        if self.truncation == "windows" and self.backbone.pooling()[1]:
            feats = feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)
        return feats.astype(np.float32)
