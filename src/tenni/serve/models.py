"""The models a server holds: named by folder, checked when the app is made, loaded once per worker process."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, ModelFileError

RUNTIMES = ("torch", "onnx")


class ServedModel:
    """One model folder: its manifest (read up front), the loaded model (after ``load``) and how to predict."""

    def __init__(self, folder: str | Path, runtime: str = "torch"):
        self.folder = Path(folder)
        self.name = self.folder.resolve().name if self.folder.name in ("", ".", "..") else self.folder.name
        self.runtime = runtime
        self.model = self.batcher = self._restore = None  # set when the model is loaded
        self.manifest = self._check()

    def _check(self) -> dict:
        """Fail before serving: a folder that is not a model is a one-line error, not a worker that never starts."""
        if not self.folder.is_dir():
            raise ModelFileError("no such model directory", path=self.folder, hint="pass the -o folder of `tenni fit`")
        if self.runtime == "torch":
            from ..artifacts import read_model_dir

            manifest, _ = read_model_dir(self.folder)
            return manifest
        runtime = _onnx_runtime()
        check = getattr(runtime, "read_export_manifest", None)
        return check(self.folder) if check else {}

    # --- loading ----------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self, threads: int | None = None) -> None:
        if self.model is not None:
            return
        if self.runtime == "onnx":
            options = {"threads": threads} if threads else {}
            model = _onnx_runtime().load_onnx_model(self.folder, **options)
            self.manifest = dict(getattr(model, "manifest", None) or {})
        else:
            from ..api import load

            model = load(self.folder)
            self._restore = _serve_without_feature_cache(model)
        if getattr(model, "task", "classify") == "anomaly" and not hasattr(model, "score"):
            raise ModelFileError(f"an anomaly model cannot be served with the {self.runtime} runtime", path=self.folder,
                                 hint="serve the model folder with --runtime torch")
        self.model = model

    def unload(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None
        self.model = None

    # --- facts ------------------------------------------------------------------------------------------------
    @property
    def modality(self) -> str:
        return getattr(self.model, "modality", None) or self.manifest.get("modality", "text")

    @property
    def task(self) -> str:
        return getattr(self.model, "task", None) or self.manifest.get("task", "classify")

    @property
    def labels(self) -> list[str]:
        if self.model is not None:
            return [str(x) for x in self.model.labels]
        return [str(x) for x in self.manifest.get("labels", [])]

    def summary(self) -> dict:
        m = self.manifest
        backbone = m.get("backbone") or (m.get("source") or {}).get("backbone")  # an export names its source's
        strategy = m.get("strategy")
        return {
            "name": self.name,
            "runtime": self.runtime,
            "loaded": self.loaded,
            "modality": self.modality,
            "task": self.task,
            "labels": self.labels,
            "backbone": backbone.get("name") if isinstance(backbone, dict) else backbone,
            "strategy": strategy.get("name") if isinstance(strategy, dict) else strategy,
            "metrics": metrics_summary(m.get("metrics") or {}),
            "tenni_version": m.get("tenni_version"),
            "created": m.get("created"),
        }

    # --- predicting (in the batcher's thread) -------------------------------------------------------------------
    def predict(self, inputs: list[str]) -> list[dict]:
        model = self.model
        if self.task == "anomaly":
            scores = model.score(inputs)
            threshold = float(_threshold(model))
            return [{"label": "defect" if float(s) > threshold else "normal", "score": float(s),
                     "threshold": threshold} for s in scores]
        proba = model.predict_proba(inputs)
        labels = self.labels
        out = []
        for row in proba:
            values = [float(v) for v in row]
            best = max(range(len(values)), key=values.__getitem__)
            out.append({"label": labels[best], "probabilities": dict(zip(labels, values))})
        return out


def _onnx_runtime():
    try:
        from ..export import runtime
    except ImportError:
        raise ConfigError("--runtime onnx needs tenni's export module, which this install lacks",
                          hint="use --runtime torch, or install a tenni with `tenni export`") from None
    return runtime


def _threshold(model) -> float:
    threshold = getattr(model, "threshold_", None)
    if threshold is None:
        threshold = model.estimator.threshold_
    return threshold


def metrics_summary(metrics: dict) -> dict:
    """The measured quality in a few numbers: how it was measured and the model's own row of the results."""
    keys = ("accuracy", "accuracy_low", "accuracy_high", "macro_f1", "auroc", "n", "threshold")
    out: dict = {}
    if isinstance(metrics.get("evaluation"), str):
        out["evaluation"] = metrics["evaluation"]
    rows = metrics.get("results")
    source = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else metrics.get("test")
    for where in (source, metrics):
        if isinstance(where, dict):
            for key in keys:
                value = where.get(key)
                if key not in out and isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[key] = value
    gain = metrics.get("transfer_gain")
    if isinstance(gain, dict) and isinstance(gain.get("accuracy"), (int, float)):
        out["transfer_gain_accuracy"] = gain["accuracy"]
    return out


def served_models(model_dirs, runtime: str) -> dict[str, ServedModel]:
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime '{runtime}'", hint="use torch or onnx")
    if isinstance(model_dirs, (str, Path)):
        model_dirs = [model_dirs]
    models: dict[str, ServedModel] = {}
    for folder in model_dirs:
        served = ServedModel(folder, runtime)
        if served.name in models:
            raise ConfigError(f"two model folders are named '{served.name}' ({models[served.name].folder} and "
                              f"{folder}); the folder name is the model's name in the URL",
                              hint="rename one of the folders")
        models[served.name] = served
    if not models:
        raise ConfigError("no model folder given", hint="tenni serve MODEL_DIR [MODEL_DIR...]")
    return models


class _MemoryFeatureCache:
    """What served models encode through instead of the on-disk feature cache, which saves re-encoding training
    data but, in a server, would write a file per request and keep every input's features in memory for as long
    as it runs: a bounded, in-memory LRU (the encoders put a batch's features, then read them back)."""

    def __init__(self, capacity: int = 8192):
        import collections
        import threading

        self.capacity = capacity
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, keys):
        with self._lock:
            out = []
            for key in keys:
                value = self._items.get(key)
                if value is not None:
                    self._items.move_to_end(key)
                out.append(value)
            return out

    def put(self, keys, features) -> None:
        with self._lock:
            for key, row in zip(keys, features):
                self._items[key] = row
                self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


def _serve_without_feature_cache(model):
    """Switch the model's backbone to a bounded in-memory cache; returns what puts the cache back (the backbone
    object is shared by every model of the process that names it)."""
    estimator = getattr(model, "estimator", None)
    name = getattr(estimator, "backbone", None) if getattr(estimator, "uses_backbone", False) else None
    if not name:
        return None
    from ..backbones import get_backbone

    backbone = get_backbone(name)
    if not hasattr(type(backbone), "cache") or isinstance(getattr(backbone, "_cache", None), _MemoryFeatureCache):
        return None
    original = getattr(backbone, "_cache", None)  # None: the disk cache is opened lazily, as before
    backbone._cache = _MemoryFeatureCache()

    def restore():
        backbone._cache = original

    return restore
