"""No-transfer baselines for images and audio: what the labels alone can teach.

Images: a small CNN (three conv blocks, ~100k parameters) trained from random weights on the pixels at a low
resolution, with flips and crops. Audio: MFCC mean and standard deviation per clip (the classic bag-of-frames
features) + logistic regression. MFCCs are computed here in numpy (no librosa import: it costs seconds).
"""

from __future__ import annotations

import math

import numpy as np

SCRATCH_SAMPLE_RATE = 16000


# --- images: a small CNN --------------------------------------------------------------------------------------

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


def fit_cnn(paths: list[str], y: np.ndarray, n_classes: int, cfg, seed: int) -> tuple[dict, dict]:
    """Train the CNN; returns (tensors, meta) for the artifact."""
    import torch
    from torch import nn

    from .._deadline import check_deadline
    from .._logging import progress
    from .base import balanced_class_weight

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
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
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


# --- audio: MFCC statistics -----------------------------------------------------------------------------------

def _mel_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2)
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    hz = mel_to_hz(mels)
    fb = np.zeros((n_mels, len(bins)), np.float64)
    for m in range(n_mels):
        lo, mid, hi = hz[m], hz[m + 1], hz[m + 2]
        rising = (bins - lo) / max(mid - lo, 1e-9)
        falling = (hi - bins) / max(hi - mid, 1e-9)
        fb[m] = np.maximum(0.0, np.minimum(rising, falling))
    return fb


def mfcc(wav: np.ndarray, sr: int = SCRATCH_SAMPLE_RATE, n_mfcc: int = 20, n_mels: int = 40,
         n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """(frames, n_mfcc) MFCCs: Hann-windowed power spectrum -> mel bands -> log -> DCT-II."""
    from scipy.fft import dct

    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    mel = power @ _mel_filterbank(sr, n_fft, n_mels).T
    return dct(np.log(mel + 1e-10), type=2, axis=1, norm="ortho")[:, :n_mfcc]


def mfcc_stats(paths: list[str], n_mfcc: int) -> np.ndarray:
    """Per clip: mean and standard deviation of each MFCC over time (2 x n_mfcc features)."""
    from ..data.media import load_audio

    rows = []
    for p in paths:
        coeffs = mfcc(load_audio(p, SCRATCH_SAMPLE_RATE)[0], n_mfcc=n_mfcc)
        rows.append(np.concatenate([coeffs.mean(0), coeffs.std(0)]))
    return np.asarray(rows, np.float32)
