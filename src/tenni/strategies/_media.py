"""Training image and audio backbones: decoded inputs, augmentation, and the fine-tuning loop.

Files are decoded once per fit (pixels at the network's input size, waveforms at its sample rate); each epoch
draws augmented views of them. Images: random resized crops, horizontal flips, brightness/contrast/saturation
jitter. Audio: random time shifts (crops of long clips, offsets of short ones), gain, and background noise.
Prediction uses the plain view (audio: every window of the clip, logits averaged).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .._deadline import check_deadline
from .._logging import progress


class MediaClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, dim: int, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x):
        return self.head(self.dropout(self.encoder(x)))


class ImageInputs:
    def __init__(self, backbone, paths: list[str]):
        self.backbone = backbone
        self.pixels = torch.from_numpy(backbone.load_items(paths))  # (N, S, S, 3) uint8

    def __len__(self) -> int:
        return len(self.pixels)

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


class AudioInputs:
    def __init__(self, backbone, paths: list[str]):
        self.backbone = backbone
        self.waves = backbone.load_items(paths)
        longest = max((len(w) for w in self.waves), default=1)
        self.crop = int(min(backbone.window, longest))

    def __len__(self) -> int:
        return len(self.waves)

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


def media_inputs(backbone, paths: list[str]):
    return ImageInputs(backbone, paths) if backbone.modality == "image" else AudioInputs(backbone, paths)


def discriminative_groups(model: MediaClassifier, lr: float, head_lr: float, weight_decay: float,
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


def _freeze_norm_stats(model: nn.Module) -> None:
    """Batch-norm layers keep their pretrained statistics (batches of a few images would corrupt them)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def media_logits(model: MediaClassifier, inputs, idx=None, batch_size: int = 32) -> torch.Tensor:
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


def train_media_classifier(model: MediaClassifier, inputs, y: np.ndarray, *, param_groups, plan, class_weight,
                           seed: int, description: str, head_warmup_epochs: int = 0,
                           freeze_norm: bool = True) -> dict:
    """AdamW with warm-up/decay over augmented batches; optional head-only warm-up epochs (body frozen);
    early stopping on a held-out slice, as for text (:func:`._torch.train_classifier`)."""
    from transformers import get_linear_schedule_with_warmup

    from ._torch import EarlyStopping, stratified_validation

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    # early stopping needs a validation slice that means something: with under 10 images of a class, one or two
    # held-out images decide by chance (measured: brain MRI at 8 per class stopped at epoch 6 on 2 images, 0.41
    # accuracy; the full schedule without it reached 0.78), so small sets train the fixed schedule
    train_idx, val_idx = stratified_validation(y, plan.validation_fraction, seed, min_per_class=10)
    steps_per_epoch = math.ceil(len(train_idx) / plan.batch_size)
    epochs = min(plan.max_epochs, max(plan.epochs, math.ceil(plan.min_steps / steps_per_epoch)))
    warm = min(head_warmup_epochs, max(epochs - 1, 0))
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(plan.warmup_ratio * (total - warm * steps_per_epoch)),
                                                total)
    weight = None if class_weight is None else torch.as_tensor(class_weight)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    y_t = torch.as_tensor(y, dtype=torch.long)
    body = [p for p in model.encoder.parameters() if p.requires_grad]
    stopper, history = EarlyStopping(model, plan.patience, weight), []
    with progress(description, total) as bar:
        for epoch in range(epochs):
            head_only = epoch < warm
            for p in body:
                p.requires_grad_(not head_only)
            model.train()
            if freeze_norm:
                _freeze_norm_stats(model)
            order = rng.permutation(train_idx)
            running = 0.0
            for start in range(0, len(order), plan.batch_size):
                check_deadline()
                idx = order[start:start + plan.batch_size]
                logits = model(inputs.train_batch(idx, gen))
                loss = loss_fn(logits, y_t[idx])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                if not head_only:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += float(loss.detach()) * len(idx)
                bar.advance(1)
            record = {"epoch": epoch + 1, "train_loss": running / len(order), "head_only": head_only}
            if val_idx is not None and not head_only:
                record.update(stopper.update(media_logits(model, inputs, val_idx), y_t[val_idx]))
            history.append(record)
            if val_idx is not None and stopper.exhausted:
                bar.update(completed=total)
                break
    for p in body:
        p.requires_grad_(True)
    stopper.restore()
    model.eval()
    return {"epochs_run": len(history), "history": history, "early_stopping": val_idx is not None}
