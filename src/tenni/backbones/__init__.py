"""Backbones: pretrained encoders by registry name, local path or hub id (see :mod:`.registry`)."""

from __future__ import annotations

from pathlib import Path

from .registry import (
    DEFAULT_AUDIO_BACKBONE,
    DEFAULT_BACKBONES,
    DEFAULT_IMAGE_BACKBONE,
    DEFAULT_TEXT_BACKBONE,
    MULTILINGUAL_TEXT_BACKBONE,
    BackboneSpec,
    get_spec,
    list_backbones,
    register_backbone,
    resolve,
    sniff_modality,
)
from .text import TextBackbone

_LOADED: dict[tuple, object] = {}
"""Backbones loaded in this process, keyed by what they are (folder, weights stamp, options), so a loaded model
is shared between fits, and a folder whose weights changed (re-adapted in place) is loaded anew."""


def _weights_stamp(path: Path) -> str:
    """Size and modification time of every file in a model folder: cheap, and changes when the weights do."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    return ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def get_backbone(name_or_path: str = DEFAULT_TEXT_BACKBONE, *, trust_remote_code: bool = False,
                 max_length: int = 256):
    """The backbone for a name, path or hub id; one instance per process and weights, so a loaded model is
    shared."""
    name, path, spec = resolve(name_or_path)
    key = (name, str(path), _weights_stamp(path), trust_remote_code, max_length)
    if key not in _LOADED:
        if spec is not None and spec.build is not None:
            _LOADED[key] = spec.build(name, path)
        elif spec is None and sniff_modality(path) == "image":
            from .image import HFImageBackbone

            _LOADED[key] = HFImageBackbone(name, path)
        elif spec is None and sniff_modality(path) == "audio":
            from .audio import HFAudioBackbone

            _LOADED[key] = HFAudioBackbone(name, path)
        else:
            _LOADED[key] = TextBackbone(name, path, trust_remote_code=trust_remote_code, max_length=max_length,
                                        trainable=True if spec is None else spec.trainable,
                                        languages=None if spec is None else spec.languages)
    return _LOADED[key]


__all__ = ["DEFAULT_AUDIO_BACKBONE", "DEFAULT_BACKBONES", "DEFAULT_IMAGE_BACKBONE", "DEFAULT_TEXT_BACKBONE",
           "MULTILINGUAL_TEXT_BACKBONE", "BackboneSpec", "TextBackbone", "get_backbone", "get_spec",
           "list_backbones", "register_backbone", "resolve", "sniff_modality"]
