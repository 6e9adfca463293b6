"""Sentence-transformers and transformers text encoders.

The model is loaded lazily: a fit whose features are all in the cache never imports torch or transformers, which
is what makes a second fit on the same data take seconds instead of the encoder's load time.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from .._deadline import check_deadline
from .._logging import progress
from .._paths import atomic_write_json, cache_dir, sha256_file
from ..errors import BackboneError
from .cache import FeatureCache, content_key

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.onnx")


def weights_fingerprint(folder: Path, patterns: tuple[str, ...] = _WEIGHT_PATTERNS) -> str:
    """sha256 over the weight files of a model folder, memoised on disk by (path, size, mtime)."""
    files = sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()})
    files = [p for p in files if "onnx" not in p.parts]  # exported copies do not change the model
    if not files:
        raise BackboneError("no weight files (*.safetensors, *.bin) in the model folder", path=folder)
    stamp = ";".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    memo_path = cache_dir() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    key = str(folder.resolve()) + ("" if patterns == _WEIGHT_PATTERNS else ":" + ",".join(patterns))
    if memo.get(key, {}).get("stamp") == stamp:
        return memo[key]["sha256"]
    import hashlib

    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(folder)).encode())
        digest.update(sha256_file(p).encode())
    value = "sha256:" + digest.hexdigest()
    memo[key] = {"stamp": stamp, "sha256": value}
    try:
        atomic_write_json(memo_path, memo)
    except OSError:
        pass
    return value


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


class TextBackbone:
    """A frozen or trainable text encoder from a local folder (registry entry, hub snapshot or user path)."""

    modality = "text"

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
        self._fingerprint: str | None = None
        self._cache: FeatureCache | None = None

    def __repr__(self) -> str:
        return f"TextBackbone({self.name!r})"

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.path)
        return self._fingerprint

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            # the cache key includes max_length and the pipeline (pooling, normalisation, tokenizer): the same
            # weights truncating or pooling differently give other features
            self._cache = FeatureCache(f"{self.fingerprint}-len{self.max_length}-p{pipeline_tag(self.path)}")
        return self._cache

    @property
    def dim(self) -> int:
        cfg = self._read_json(self.transformer_dir() / "config.json")
        return int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim") or 0)

    # --- layout of a sentence-transformers folder ---------------------------------------------------------
    @staticmethod
    def _read_json(path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise BackboneError(f"invalid JSON: {err}", path=path) from None

    def _modules(self) -> list[dict]:
        return self._read_json(self.path / "modules.json") or []  # type: ignore[return-value]

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
                cfg = self._read_json(self.path / module.get("path", "") / "config.json")
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
                try:
                    import transformers
                    from sentence_transformers import SentenceTransformer

                    transformers.logging.disable_progress_bar()  # tenni shows its own progress

                    import warnings

                    with warnings.catch_warnings():  # the libraries' own warnings: the error below says it in one line
                        warnings.simplefilter("ignore")
                        model = SentenceTransformer(str(self.path), device="cpu",
                                                    trust_remote_code=self.trust_remote_code)
                except Exception as err:
                    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
                    raise BackboneError(f"cannot load backbone '{self.name}': {type(err).__name__}: {first}",
                                        path=self.path,
                                        hint="check that the folder holds a complete model") from None
                model.max_seq_length = min(self.max_length, model.max_seq_length or self.max_length)
                self._model = model
            return self._model

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
        """Frozen sentence embeddings, read from the feature cache where possible."""
        keys = [content_key(t) for t in texts]
        found = self.cache.get(keys)
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            # unique texts only; written to the cache chunk by chunk so an interrupted run resumes
            todo: dict[bytes, str] = {}
            for i in missing:
                todo.setdefault(keys[i], texts[i])
            items = list(todo.items())
            model = self.sentence_transformer()
            chunk = max(batch_size * 4, 256)
            label = f"embedding ({self.name.rsplit('/', 1)[-1]})"
            with progress(label, len(items) if show_progress else None) as bar:
                for start in range(0, len(items), chunk):
                    check_deadline()  # what was encoded so far stays in the cache
                    part = items[start:start + chunk]
                    feats = model.encode([t for _, t in part], batch_size=batch_size, convert_to_numpy=True,
                                         show_progress_bar=False)
                    self.cache.put([k for k, _ in part], feats)
                    bar.advance(len(part))
            found = self.cache.get(keys)
        return np.stack(found).astype(np.float32, copy=False) if found else np.zeros((0, 0), np.float32)
