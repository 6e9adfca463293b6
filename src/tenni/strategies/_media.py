"""Image and audio inputs for the training loop (:mod:`._training`): decoded once, augmented per epoch.

Files are decoded once per fit (pixels at the network's input size, waveforms at its sample rate); each epoch
draws augmented views of them. Images: random resized crops, horizontal flips, brightness/contrast/saturation
jitter. Audio: random time shifts (crops of long clips, offsets of short ones), gain, and background noise.
Without augmentation a batch is the plain view (images as decoded; audio the clip's start, zero-padded to one
length). Prediction uses the plain view (audio: every window of the clip, logits averaged).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class MediaInputs:
    """What the image and audio inputs share: the training loop's two calls."""

    min_per_class = 10
    """Early stopping needs a validation slice that means something: with under 10 images of a class, one or two
    held-out images decide by chance, so small sets train the fixed schedule (see docs/design)."""
    augment = True

    def train_logits(self, model: nn.Module, idx, gen: torch.Generator) -> torch.Tensor:
        return model(self.train_batch(idx, gen) if self.augment else self.plain_batch(idx))

    def shard(self, idx, par) -> np.ndarray:
        """This rank's rows of a global batch (images and clips all cost the same: ``par``'s contiguous slice)."""
        return par.shard(np.asarray(idx))

    def eval_logits(self, model: nn.Module, idx) -> torch.Tensor:
        return media_logits(model, self, idx)

    def update_digest(self, digest) -> None:
        """Feeds what the loop trains on into ``digest`` (a resumable checkpoint's key)."""
        digest.update(f"{type(self).__name__}{self.augment}".encode())
        for item in self.items():
            digest.update(np.ascontiguousarray(item).tobytes())


class ImageInputs(MediaInputs):
    def __init__(self, backbone, paths: list[str], augment: bool = True):
        self.backbone = backbone
        self.augment = augment
        self.pixels = torch.from_numpy(backbone.load_items(paths))  # (N, S, S, 3) uint8

    def items(self):
        return [self.pixels.numpy()]

    def __len__(self) -> int:
        return len(self.pixels)

    def plain_batch(self, idx):
        return self.backbone.to_tensor(self.pixels[list(idx)])

    def train_batch(self, idx, gen: torch.Generator):
        size = self.pixels.shape[1]
        out = []
        for i in idx:
            img = self.pixels[int(i)].permute(2, 0, 1).float().div(255.0)  # (3, S, S) in [0, 1]
            scale = float(torch.empty(1).uniform_(0.6, 1.0, generator=gen))
            ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen)))
            h = max(8, min(size, int(round(size * math.sqrt(scale / ratio)))))
            w = max(8, min(size, int(round(size * math.sqrt(scale * ratio)))))
            top = int(torch.randint(0, size - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, size - w + 1, (1,), generator=gen))
            crop = img[:, top:top + h, left:left + w].unsqueeze(0)
            img = nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
            if float(torch.rand(1, generator=gen)) < 0.5:
                img = img.flip(-1)
            jitter = torch.empty(3).uniform_(0.8, 1.2, generator=gen)
            img = img * jitter[0]  # brightness
            img = (img - img.mean()) * jitter[1] + img.mean()  # contrast
            gray = img.mean(0, keepdim=True)
            img = (img - gray) * jitter[2] + gray  # saturation
            out.append(img.clamp(0, 1))
        batch = (torch.stack(out) * 255.0).permute(0, 2, 3, 1)
        return self.backbone.to_tensor(batch)

    def eval_batches(self, idx, batch_size: int):
        """Batches of (tensor, owner rows): one view per image."""
        for start in range(0, len(idx), batch_size):
            part = list(idx[start:start + batch_size])
            yield self.backbone.to_tensor(self.pixels[part]), list(range(start, start + len(part)))


class AudioInputs(MediaInputs):
    def __init__(self, backbone, paths: list[str], augment: bool = True):
        self.backbone = backbone
        self.augment = augment
        self.waves = backbone.load_items(paths)
        longest = max((len(w) for w in self.waves), default=1)
        self.crop = int(min(backbone.window, longest))

    def items(self):
        return self.waves

    def __len__(self) -> int:
        return len(self.waves)

    def plain_batch(self, idx):
        """Each clip's first ``crop`` samples, zero-padded to that length (so clips of any length stack)."""
        return self.backbone.to_tensor([_pad(self.waves[int(i)], self.crop) for i in idx])

    def train_batch(self, idx, gen: torch.Generator):
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        out = []
        for i in idx:
            wav = self.waves[int(i)]
            view = np.zeros(self.crop, np.float32)
            if len(wav) > self.crop:  # time shift: a random crop of a long clip
                start = int(rng.integers(0, len(wav) - self.crop + 1))
                view[:] = wav[start:start + self.crop]
            else:  # time shift: a random offset of a short one
                offset = int(rng.integers(0, self.crop - len(wav) + 1))
                view[offset:offset + len(wav)] = wav
            view *= 10 ** (rng.uniform(-6, 6) / 20)  # gain, +-6 dB
            rms = float(np.sqrt(np.mean(view ** 2))) or 1e-4
            view += rng.normal(0, rms / 10 ** (rng.uniform(20, 40) / 20), size=view.shape).astype(np.float32)
            out.append(view)
        return self.backbone.to_tensor(out)

    def eval_batches(self, idx, batch_size: int):
        """Batches of (inputs, owner rows): every window of every clip, for logits averaged per clip."""
        views, owners = [], []
        for row, i in enumerate(idx):
            wav = self.waves[int(i)]
            wins = self.backbone.clip_windows(wav) if len(wav) > self.crop else _pad(wav, self.crop)[None]
            for w in wins:
                views.append(_pad(w, self.crop) if len(w) < self.crop else w[:self.crop])
                owners.append(row)
        for start in range(0, len(views), batch_size):
            yield self.backbone.to_tensor(views[start:start + batch_size]), owners[start:start + batch_size]


def _pad(wav: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.float32)
    out[:min(length, len(wav))] = wav[:length]
    return out


def media_inputs(backbone, paths: list[str], augment: bool = True) -> MediaInputs:
    cls = ImageInputs if backbone.modality == "image" else AudioInputs
    return cls(backbone, paths, augment=augment)


def discriminative_groups(model: nn.Module, lr: float, head_lr: float, weight_decay: float,
                          layer_decay: float, n_groups: int = 4) -> list[dict]:
    """The head at ``head_lr``; the body in ``n_groups`` slices by depth, the last at ``lr`` and each earlier one
    ``layer_decay`` times slower (early layers hold generic features: move them least)."""
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = []
    slices = np.array_split(np.arange(len(params)), n_groups) if params else []
    for k, part in enumerate(slices):
        if len(part):
            groups.append({"params": [params[i] for i in part], "lr": lr * layer_decay ** (n_groups - 1 - k),
                           "weight_decay": weight_decay})
    groups.append({"params": list(model.head.parameters()), "lr": head_lr, "weight_decay": 0.0})
    return groups


@torch.inference_mode()
def media_logits(model: nn.Module, inputs, idx=None, batch_size: int = 32) -> torch.Tensor:
    was_training = model.training
    model.eval()
    idx = np.arange(len(inputs)) if idx is None else np.asarray(idx)
    n_out = model.head.out_features
    total = torch.zeros(len(idx), n_out)
    count = torch.zeros(len(idx), 1)
    for batch, owners in inputs.eval_batches(idx, batch_size):
        logits = model(batch).float()
        owner_t = torch.as_tensor(owners)
        total.index_add_(0, owner_t, logits)
        count.index_add_(0, owner_t, torch.ones(len(owners), 1))
    if was_training:
        model.train()
    return total / count.clamp(min=1)
