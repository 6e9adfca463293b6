"""Run a folder written by ``tenni export`` with onnxruntime, the tokenizers library and numpy: no PyTorch.

    from tenni.export.runtime import load_onnx_model
    model = load_onnx_model("export/")
    model.predict(["my card was charged twice"])      # labels
    model.predict_proba(texts)                          # one column per label, in model.labels order

Texts are tokenized as the original model tokenized them (the same tokenizer, truncation and padding id, from
the manifest), sorted by length and run in batches padded to their own longest text. This module must never
import torch or transformers (a test checks it): it is what ``tenni predict --runtime onnx`` and ``tenni serve
--runtime onnx`` load where only ``tenni[runtime]`` is installed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import DataError, ModelFileError

EXPORT_FORMAT = "tenni-export"
EXPORT_FORMAT_VERSION = 1
EXPORT_MANIFEST = "tenni-export.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_export_manifest(folder: str | Path) -> dict:
    """The manifest of an export folder, checked for what the runtime relies on."""
    folder = Path(folder)
    path = folder / EXPORT_MANIFEST
    if not folder.is_dir():
        raise ModelFileError("no such export folder", path=folder, hint="pass the -o folder of `tenni export`")
    if not path.is_file():
        hint = ("this is a model folder: run it without --runtime onnx, or export it first (`tenni export`)"
                if (folder / "tenni.json").exists() else "pass the -o folder of `tenni export`")
        raise ModelFileError(f"no {EXPORT_MANIFEST}, so it is not an exported model", path=folder, hint=hint)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelFileError(f"damaged manifest: {err}", path=path, hint="export the model again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ModelFileError("not a tenni export manifest", path=path, hint="export the model again")
    if manifest.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ModelFileError(f"unknown export format version {manifest.get('format_version')!r} (this tenni reads "
                             f"{EXPORT_FORMAT_VERSION})", path=path, hint="export the model again with this version")
    labels = manifest.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ModelFileError("'labels' must list the label names", path=path, hint="export the model again")
    if manifest.get("input") not in ("tokens", "pixels", "features"):
        raise ModelFileError(f"unknown input kind {manifest.get('input')!r}", path=path,
                             hint="export the model again")
    return manifest


class OnnxModel:
    """An exported model: ``labels``, ``modality``, ``task``, ``manifest``, ``predict_proba``, ``predict``.

    ``threads`` sets onnxruntime's intra-op threads (default: its own choice, one per physical core);
    ``batch_size`` how many inputs run together (texts of similar length are batched together).
    """

    def __init__(self, folder: str | Path, *, threads: int | None = None, batch_size: int = 64,
                 verify: bool = True):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFileError("running an exported model needs onnxruntime", path=folder,
                                 hint="pip install 'tenni[runtime]'") from None
        self.folder = Path(folder)
        self.manifest = read_export_manifest(self.folder)
        graph = self.manifest.get("graph") or {}
        model_path = self.folder / str(graph.get("file", "model.onnx"))
        if model_path.parent != self.folder or not model_path.is_file():
            raise ModelFileError("the ONNX graph is missing", path=model_path, hint="copy the whole export folder")
        if verify and graph.get("sha256") and _sha256(model_path) != graph["sha256"]:
            raise ModelFileError("model.onnx does not match the hash in the manifest (damaged or modified)",
                                 path=model_path, hint="copy the export folder again, or export again")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ModelFileError(f"onnxruntime cannot load the graph: {type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''}", path=model_path,
                                 hint="export again, or upgrade onnxruntime") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.batch_size = max(1, int(batch_size))
        self.tokenizer = None
        if self.input_kind == "tokens":
            self.tokenizer = self._load_tokenizer()

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.folder)!r}, labels={self.labels})"

    # --- what tenni's Model also offers ----------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def modality(self) -> str:
        return self.manifest.get("modality", "text")

    @property
    def task(self) -> str:
        return self.manifest.get("task", "classify")

    @property
    def input_kind(self) -> str:
        return self.manifest["input"]

    def predict(self, inputs) -> list[str]:
        proba = self.predict_proba(inputs)
        return [self.labels[i] for i in np.argmax(proba, axis=1)] if len(proba) else []

    def predict_proba(self, inputs) -> np.ndarray:
        """Probabilities (float64), one row per input and one column per label in ``labels`` order.

        Texts for text models; image file paths for image models; for a head-only export (a frozen backbone that
        is not PyTorch) the backbone's features, one row each (``manifest['features']['front']`` says which).
        """
        if self.input_kind == "features":
            feats = np.asarray(inputs, dtype=np.float32)
            dim = (self.manifest.get("features") or {}).get("dim")
            if feats.ndim != 2 or (dim and feats.shape[1] != dim):
                raise DataError(f"this export is a head only: it takes ({dim}-wide) feature rows, got an array of "
                                f"shape {feats.shape}", hint=(self.manifest.get("features") or {}).get("front"))
            return self._run_dense(feats)
        items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        if not items:
            return np.zeros((0, len(self.labels)))
        if self.input_kind == "pixels":
            return self._run_dense(self._pixels(items))
        bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"item {bad}: a text model takes strings, got {type(items[bad]).__name__}")
        return self._run_tokens(items)

    # --- texts ----------------------------------------------------------------------------------------------
    def _load_tokenizer(self):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelFileError("running an exported text model needs the tokenizers library", path=self.folder,
                                 hint="pip install 'tenni[runtime]'") from None
        settings = self.manifest.get("tokenizer") or {}
        path = self.folder / str(settings.get("file", "tokenizer.json"))
        if path.parent != self.folder or not path.is_file():
            raise ModelFileError("the tokenizer file is missing", path=path, hint="copy the whole export folder")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:
            raise ModelFileError(f"cannot read the tokenizer: {err}", path=path, hint="export again") from None
        tokenizer.no_padding()
        tokenizer.enable_truncation(int(settings.get("max_length", 512)))
        return tokenizer

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        settings = self.manifest.get("tokenizer") or {}
        if settings.get("strip"):
            texts = [t.strip() for t in texts]
        if settings.get("lowercase"):
            texts = [t.lower() for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def _run_tokens(self, texts: list[str]) -> np.ndarray:
        rows = self.tokenize(texts)
        pad_id = int((self.manifest.get("tokenizer") or {}).get("pad_id", 0))
        out = np.zeros((len(rows), len(self.labels)), dtype=np.float64)
        order = np.argsort([len(r) for r in rows], kind="stable")
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(1, max(len(rows[i]) for i in chunk))
            ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for j, i in enumerate(chunk):
                ids[j, :len(rows[i])] = rows[i]
                mask[j, :len(rows[i])] = 1
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feed["token_type_ids"] = np.zeros_like(ids)
            out[chunk] = self.session.run([self.output_name], feed)[0]
        return out

    # --- images and feature rows --------------------------------------------------------------------------
    def _pixels(self, paths: list) -> np.ndarray:
        """(N, 3, S, S) float32: decoded, resized on the short side, centre-cropped and normalised as in training."""
        from ..data.media import image_array

        pre = self.manifest.get("preprocessing") or {}
        size = int(pre["image_size"])
        mean = np.asarray(pre["mean"], np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(pre["std"], np.float32).reshape(1, 3, 1, 1)
        pixels = np.stack([image_array(str(p), size) for p in paths]).astype(np.float32) / 255.0
        return (pixels.transpose(0, 3, 1, 2) - mean) / std

    def _run_dense(self, x: np.ndarray) -> np.ndarray:
        name = self.input_names[0]
        parts = [self.session.run([self.output_name], {name: np.ascontiguousarray(x[s:s + self.batch_size])})[0]
                 for s in range(0, len(x), self.batch_size)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, len(self.labels)))


def load_onnx_model(folder: str | Path, **options) -> OnnxModel:
    """An :class:`OnnxModel` for an export folder (``threads=``, ``batch_size=``, ``verify=`` as there)."""
    return OnnxModel(folder, **options)
