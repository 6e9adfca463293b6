"""A fitted model: backbone reference + strategy state + label map + the metrics it was measured with."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from . import __version__
from .artifacts import read_model_dir, write_model_dir
from .data import as_dataset
from .errors import ConfigError, ModelFileError, TenniError
from .evaluation import classification_metrics
from .strategies.registry import get_entry, get_strategy_class


class Model:
    """What ``tenni.fit`` returns and ``tenni.load`` reads back; ``predict``, ``evaluate`` and ``save``."""

    def __init__(self, estimator, *, modality: str = "text", metrics: dict | None = None,
                 data_summary: dict | None = None, created: str | None = None, tenni_version: str = __version__,
                 task: str = "classify"):
        self.estimator = estimator
        self.modality = modality
        self.task = task
        self.metrics = metrics or {}
        self.data_summary = data_summary or {}
        self.created = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.tenni_version = tenni_version
        self.student: Model | None = None
        """A faster model distilled from this one (``fit(..., student=...)``), saved separately."""

    def __repr__(self) -> str:
        return f"Model(strategy={self.strategy!r}, backbone={self.backbone_name!r}, labels={self.labels})"

    @property
    def strategy(self) -> str:
        return self.estimator.name

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.estimator.classes_]

    @property
    def backbone_name(self) -> str | None:
        return self.estimator.backbone if self.estimator.uses_backbone else None

    # --- use ------------------------------------------------------------------------------------------------
    def predict(self, inputs) -> list[str]:
        return [str(v) for v in self.estimator.predict(_inputs(inputs))]

    def predict_proba(self, inputs) -> np.ndarray:
        """Probabilities, one column per label in ``self.labels`` order."""
        return self.estimator.predict_proba(_inputs(inputs))

    def score(self, inputs) -> np.ndarray:
        """Anomaly models: one score per item (higher is more unusual; above ``estimator.threshold_``: defect)."""
        if self.task != "anomaly":
            raise ModelFileError("score() is for anomaly models (fit with --task anomaly)")
        return self.estimator.score_samples(_inputs(inputs))

    def flag(self, inputs) -> tuple[list[str], np.ndarray]:
        """Anomaly models: ``"defect"`` or ``"normal"`` per item (defect: score above ``estimator.threshold_``),
        and the scores."""
        scores = self.score(inputs)
        threshold = float(self.estimator.threshold_)
        return ["defect" if s > threshold else "normal" for s in scores], scores

    def evaluate(self, data, **read_options) -> dict:
        dataset = as_dataset(data, **read_options)
        dataset.require_modality(self.modality, "the model's input")
        dataset.require_labels(min_classes=1)
        if self.task == "anomaly":
            from .evaluation.anomaly import anomaly_metrics, evaluation_normal

            normal = evaluation_normal(dataset, (self.data_summary or {}).get("normal_label", "normal"))
            return anomaly_metrics(dataset.labels, self.score(dataset.inputs), self.estimator.threshold_, normal)
        unseen = sorted(set(dataset.labels) - set(self.labels))
        if unseen:
            from ._logging import warn

            warn(f"{len(unseen)} label(s) in the evaluation data were never seen in training, so every example of "
                 f"them counts as an error: {', '.join(unseen[:5])}{' …' if len(unseen) > 5 else ''}")
        return classification_metrics(dataset.labels, self.predict(dataset.inputs), self.labels)

    # --- persistence ----------------------------------------------------------------------------------------
    def manifest(self, state_meta: dict | None = None) -> dict:
        backbone = None
        if self.estimator.uses_backbone:
            from .backbones import get_backbone, get_spec

            bb = get_backbone(self.estimator.backbone)
            spec = get_spec(bb.name)
            backbone = {"name": bb.name, "fingerprint": bb.fingerprint,
                        "source": spec.source if spec else bb.name, "max_length": getattr(bb, "max_length", None)}
        if state_meta is None:
            state_meta = self.estimator.get_state()[1]
        return {
            "tenni_version": self.tenni_version,
            "created": self.created,
            "modality": self.modality,
            "task": self.task,
            "backbone": backbone,
            "strategy": {"name": self.strategy, "config": self.estimator.config_dict(), "state": state_meta},
            "labels": self.labels,
            "seed": self.estimator.seed,
            "metrics": self.metrics,
            "data": self.data_summary,
        }

    def save(self, path: str | Path) -> Path:
        from .evaluation.card import render_model_card
        from .evaluation.report import render_report

        tensors, meta = self.estimator.get_state()
        manifest = self.manifest(meta)
        return write_model_dir(path, manifest, tensors, render_model_card(manifest),
                               {"report.html": render_report(manifest)})

    @classmethod
    def load(cls, path: str | Path, *, backbone: str | None = None) -> Model:
        """Read a model directory; ``backbone`` overrides where the base backbone is found (moved folders)."""
        manifest, tensors = read_model_dir(path)
        name, modality = manifest["strategy"]["name"], manifest.get("modality", "text")
        try:
            strategy_cls = get_strategy_class(name, modality if get_entry(name).supports(modality) else "text")
        except ConfigError as err:
            raise ModelFileError(f"strategy: {err.message}", path=Path(path) / "tenni.json",
                                 hint="the model was written by another version of tenni, or edited") from None
        bb_info = manifest.get("backbone")
        bb_name = None
        if strategy_cls.uses_backbone:
            from .backbones import get_backbone

            if not bb_info:
                raise ModelFileError("manifest names no backbone for a strategy that needs one", path=path)
            bb_name = backbone or bb_info["name"]
            if backbone is None:
                from .backbones import resolve

                resolve(bb_name, download=False)  # loading a model directory never downloads what it names
            bb = get_backbone(bb_name)
            if bb_info.get("fingerprint") and bb.fingerprint != bb_info["fingerprint"]:
                raise ModelFileError(
                    f"backbone '{bb.name}' has weights {bb.fingerprint[:19]}… but the model was trained on "
                    f"{bb_info['fingerprint'][:19]}…", path=path,
                    hint="install the same backbone version, or pass --backbone with the original weights")
        try:
            estimator = strategy_cls.from_state(backbone=bb_name, config=manifest["strategy"].get("config", {}),
                                                seed=manifest.get("seed", 0), classes=manifest["labels"],
                                                tensors=tensors, meta=manifest["strategy"].get("state", {}))
        except TenniError:
            raise  # a backbone that cannot be loaded, say: its own message, not the manifest's fault
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as err:
            raise ModelFileError(f"the weights do not fit the manifest's {strategy_cls.name} model "
                                 f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                                 path=path, hint="copy the whole model directory again, or re-fit") from None
        try:
            estimator.config_  # the stored options, checked now  # noqa: B018
        except ConfigError as err:
            raise ModelFileError(f"strategy config: {err.message}", path=Path(path) / "tenni.json",
                                 hint="the manifest's options are not valid for this version of tenni: correct "
                                      "them, or re-fit") from None
        return cls(estimator, modality=manifest.get("modality", "text"), metrics=manifest.get("metrics"),
                   data_summary=manifest.get("data"), created=manifest.get("created"),
                   tenni_version=manifest.get("tenni_version", "?"), task=manifest.get("task", "classify"))


def _inputs(inputs) -> list[str]:
    from .data import as_texts

    return as_texts(inputs)
