"""Export a fitted model to one ONNX graph (input ids to class probabilities), and run it without PyTorch.

``export_model(model_dir, out)`` writes ``model.onnx``, ``tokenizer.json``, a manifest (``tenni-export.json``) and
a parity report (``parity.json``); ``load_onnx_model(out)`` runs it with onnxruntime, the tokenizers library and
numpy only. This package imports nothing heavy itself: the runtime must load where torch is not installed.
"""

from __future__ import annotations

_LAZY = {"export_model": "onnx", "OnnxModel": "runtime", "load_onnx_model": "runtime"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tenni.export' has no attribute {name!r}")
