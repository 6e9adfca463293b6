"""tenni (転移, "transfer"): adapt a pretrained model to your small labeled dataset, and measure the gain.

    import tenni
    model = tenni.fit("tickets.csv", strategy="probe")     # transfer vs scratch, measured on a hold-out
    model.save("model/")
    tenni.load("model/").predict(["my card was charged twice"])

Heavy libraries (torch, transformers) are imported only when a strategy needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "fit": "api", "load": "api", "TenniClassifier": "api", "FitResult": "api",
    "Model": "model", "Dataset": "data", "read_dataset": "data",
    "list_backbones": "backbones", "get_backbone": "backbones",
    "TenniError": "errors", "DataError": "errors", "BackboneError": "errors", "ModelFileError": "errors",
    "ConfigError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tenni' has no attribute {name!r}")
