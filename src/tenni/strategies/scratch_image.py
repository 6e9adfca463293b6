"""The no-transfer baseline for images: a small CNN trained from random weights on the user's labels alone.

Three conv blocks (~100k parameters) on the pixels at a low resolution, with shifted crops and flips; what the
labels can teach without a pretrained network, so the gain from transfer is measured, not claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._deadline import check_deadline
from .._logging import progress
from ..config import NON_NEGATIVE, POSITIVE, option
from ._linear import CLASS_WEIGHTS
from .base import Strategy, balanced_class_weight
from .scratch import LEGACY_SCRATCH_OPTIONS


@dataclass
class CNNScratchConfig:
    image_size: int = option(64, "side of the square the CNN sees, in pixels", **POSITIVE)
    width: int = option(16, "channels of the CNN's first block (x2, x4 after)", **POSITIVE)
    epochs: int = option(20, "epochs of CNN training (raised to min_steps)", **POSITIVE)
    min_steps: int = option(100, "at least this many optimizer steps", **NON_NEGATIVE)
    batch_size: int = option(32, "examples per optimizer step", **POSITIVE)
    learning_rate: float = option(3e-3, "peak (one-cycle) learning rate", **POSITIVE)
    class_weight: str | None = option("balanced", "'balanced' or None", choices=CLASS_WEIGHTS)


class CNNScratch(Strategy):
    """A small CNN trained on the pixels (no pretrained weights)."""

    name = "scratch"
    Config = CNNScratchConfig
    legacy_options = LEGACY_SCRATCH_OPTIONS - {"image_size", "width", "epochs", "min_steps", "batch_size",
                                               "learning_rate", "class_weight"}

    def _fit(self, paths, y, cfg: CNNScratchConfig) -> None:
        self.tensors_, self.meta_ = train_cnn(paths, y, len(self.classes_), cfg, self.seed)

    def _predict_proba(self, paths) -> np.ndarray:
        return cnn_proba(paths, self.tensors_, self.meta_, len(self.classes_))

    def get_state(self):
        return dict(self.tensors_), dict(self.meta_)

    def _set_state(self, tensors, meta) -> None:
        self.tensors_, self.meta_ = dict(tensors), dict(meta)


def _cnn(n_classes: int, width: int = 32):
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.MaxPool2d(2))

    return nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * width, n_classes))


def _pixels(paths: list[str], size: int) -> np.ndarray:
    from ..data.media import image_array

    return np.stack([image_array(p, size) for p in paths])


def _normalise(batch, mean, std):
    import torch

    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float().div(255.0)
    return (x - torch.as_tensor(mean).view(1, 3, 1, 1)) / torch.as_tensor(std).view(1, 3, 1, 1)


def train_cnn(paths: list[str], y: np.ndarray, n_classes: int, cfg, seed: int) -> tuple[dict, dict]:
    """Train the CNN; returns (tensors, meta) for the artifact."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = cfg.image_size
    pixels = _pixels(paths, size)
    mean = (pixels.reshape(-1, 3).mean(0) / 255.0).astype(np.float32)
    std = np.maximum(pixels.reshape(-1, 3).std(0) / 255.0, 1e-3).astype(np.float32)
    model = _cnn(n_classes, cfg.width)
    steps_per_epoch = math.ceil(len(paths) / cfg.batch_size)
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    from ._parallel import adamw

    optimizer = adamw(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=total)
    weight = torch.as_tensor(balanced_class_weight(y, n_classes)) if cfg.class_weight == "balanced" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    y_t = torch.as_tensor(y, dtype=torch.long)
    pad = max(2, size // 8)
    with progress("training (scratch CNN)", total) as bar:
        for _ in range(epochs):
            model.train()
            order = rng.permutation(len(paths))
            for start in range(0, len(paths), cfg.batch_size):
                check_deadline()
                idx = order[start:start + cfg.batch_size]
                batch = pixels[idx].copy()
                for j in range(len(batch)):  # random shifted crop + horizontal flip
                    padded = np.pad(batch[j], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
                    top, left = rng.integers(0, 2 * pad + 1, size=2)
                    batch[j] = padded[top:top + size, left:left + size]
                    if rng.random() < 0.5:
                        batch[j] = batch[j][:, ::-1]
                loss = loss_fn(model(_normalise(batch, mean, std)), y_t[idx])
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                bar.advance(1)
    _recalibrate_batch_norm(model, pixels, mean, std, cfg.batch_size)
    model.eval()
    tensors = {f"cnn.{k}": v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    tensors.update({"cnn_mean": mean, "cnn_std": std})
    return tensors, {"modality": "image", "image_size": size, "width": cfg.width, "epochs_run": epochs}


def _recalibrate_batch_norm(model, pixels, mean, std, batch_size: int) -> None:
    """Batch-norm statistics recomputed over the (unaugmented) training images with the final weights: after a
    short run the running averages still remember the first, random-weight batches."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            model(_normalise(pixels[start:start + batch_size], mean, std))
    for m in norms:
        m.momentum = 0.1


def cnn_proba(paths: list[str], tensors: dict, meta: dict, n_classes: int) -> np.ndarray:
    import torch

    model = _cnn(n_classes, meta["width"])
    model.load_state_dict({k[4:]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()
                           if k.startswith("cnn.")})
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), 64):
            batch = _pixels(paths[start:start + 64], meta["image_size"])
            out.append(model(_normalise(batch, tensors["cnn_mean"], tensors["cnn_std"])).softmax(-1).numpy())
    return np.concatenate(out).astype(np.float64)
