"""Every strategy by name, without importing any of them (timm's ``_registry.py`` is the model).

An entry says where a strategy's class lives for each modality it works on, and the facts that choosing needs
before anything is imported: the task, whether it uses a backbone and trains it. ``scratch`` is one name with
a class per modality (TF-IDF for text, a small CNN for images, MFCC statistics for audio). Adding a strategy is a
module plus one entry below; a package outside tenni can call :func:`register_strategy` with its class.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..errors import ConfigError

MODALITIES = ("text", "image", "audio")


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    targets: dict[str, str]
    """modality -> "module:Class" (or the class itself, for strategies registered at run time)."""
    summary: str
    task: str = "classify"
    uses_backbone: bool = True
    trains_backbone: bool = False
    needs_transformer: bool = False
    """Adapts attention projections: refused on CNN backbones (LoRA)."""
    builtin: bool = True
    """In the table below (its facts set the class's attributes), not registered at run time."""
    classes: dict = field(default_factory=dict, compare=False, repr=False)
    """The classes imported so far, by modality."""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.targets)

    def supports(self, modality: str) -> bool:
        return modality in self.targets


def _all(target: str) -> dict[str, str]:
    return {m: target for m in MODALITIES}


_ENTRIES: dict[str, StrategyEntry] = {e.name: e for e in [
    StrategyEntry("auto", _all("tenni.strategies.auto:AutoStrategy"),
                  "races the others on CV folds within a time budget and keeps the winner"),
    StrategyEntry("probe", _all("tenni.strategies.probe:LinearProbe"),
                  "logistic regression on frozen (cached) embeddings"),
    StrategyEntry("hybrid", {"text": "tenni.strategies.hybrid:Hybrid"},
                  "the probe and TF-IDF blended with a weight chosen by CV"),
    StrategyEntry("setfit", {"text": "tenni.strategies.setfit:SetFitStrategy"},
                  "contrastive pair tuning of the encoder, then a logistic head", trains_backbone=True),
    StrategyEntry("lora", _all("tenni.strategies.lora:LoRA"), "PEFT LoRA adapters + a head",
                  trains_backbone=True, needs_transformer=True),
    StrategyEntry("finetune", _all("tenni.strategies.finetune:FineTune"), "every weight + a head",
                  trains_backbone=True),
    StrategyEntry("scratch", {"text": "tenni.strategies.scratch:TfidfScratch",
                              "image": "tenni.strategies.scratch_image:CNNScratch",
                              "audio": "tenni.strategies.scratch_audio:MFCCScratch"},
                  "the no-transfer baseline: trained on the labels alone", uses_backbone=False),
    StrategyEntry("zeroshot", {"text": "tenni.strategies.zeroshot:ZeroShot"},
                  "nearest label name (or description) by cosine: no labeled examples needed"),
    StrategyEntry("patchcore", {"image": "tenni.strategies.patchcore:PatchCore"},
                  "anomaly detection from normal images only (PatchCore memory bank)", task="anomaly"),
]}


def entry_for_class(cls, *, modalities: tuple[str, ...] = ("text",), task: str = "classify",
                    summary: str = "") -> StrategyEntry:
    """An entry for a class object (a strategy defined outside tenni, or in a test)."""
    return StrategyEntry(cls.name, {m: f"{cls.__module__}:{cls.__qualname__}" for m in modalities},
                         summary or (cls.__doc__ or "").strip(), task=task, builtin=False,
                         uses_backbone=getattr(cls, "uses_backbone", True),
                         trains_backbone=getattr(cls, "needs_trainable_backbone", False),
                         classes={m: cls for m in modalities})


def register_strategy(cls=None, *, modalities: tuple[str, ...] = ("text",), task: str = "classify",
                      summary: str = ""):
    """Register a strategy class defined outside tenni (also as ``@register_strategy(modalities=...)``)."""
    def add(cls):
        if cls.name in _ENTRIES and _ENTRIES[cls.name].builtin:
            raise ValueError(f"strategy {cls.name!r} is built in")
        _ENTRIES[cls.name] = entry_for_class(cls, modalities=modalities, task=task, summary=summary)
        return cls

    return add if cls is None else add(cls)


def strategy_names(*, task: str | None = "classify", modality: str | None = None) -> list[str]:
    """Names of the strategies for ``task`` (None: every task) that work on ``modality`` (None: any)."""
    return [n for n, e in _ENTRIES.items()
            if (task is None or e.task == task) and (modality is None or e.supports(modality))]


def get_entry(name: str) -> StrategyEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        known = ", ".join(strategy_names())
        raise ConfigError(f"unknown strategy '{name}'", hint=f"choose one of: {known}") from None


def get_strategy_class(name: str, modality: str = "text"):
    """The class of strategy ``name`` for ``modality`` (imported now, not before)."""
    entry = get_entry(name)
    if modality not in entry.targets:
        raise ConfigError(f"strategy '{name}' does not work on {modality}",
                          hint=f"use one of: {', '.join(strategy_names(task=entry.task, modality=modality))}")
    if modality not in entry.classes:
        module, _, attr = entry.targets[modality].partition(":")
        entry.classes[modality] = getattr(importlib.import_module(module), attr)
    return entry.classes[modality]
