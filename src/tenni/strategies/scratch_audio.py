"""The no-transfer baseline for audio: MFCC mean and standard deviation per clip + logistic regression.

The classic bag-of-frames features, learned from the user's labels alone. MFCCs are computed here in numpy (no
librosa import: it costs seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import POSITIVE, option
from ._linear import CLASS_WEIGHTS, fit_logistic, logistic_proba
from .base import Strategy
from .scratch import LEGACY_SCRATCH_OPTIONS

SCRATCH_SAMPLE_RATE = 16000


@dataclass
class MFCCScratchConfig:
    n_mfcc: int = option(20, "MFCCs per frame (features: their mean and std over the clip)", **POSITIVE)
    class_weight: str | None = option("balanced", "'balanced' or None", choices=CLASS_WEIGHTS)


class MFCCScratch(Strategy):
    """MFCC statistics + logistic regression (no pretrained weights)."""

    name = "scratch"
    Config = MFCCScratchConfig
    legacy_options = LEGACY_SCRATCH_OPTIONS - {"n_mfcc", "class_weight"}

    def _fit(self, paths, y, cfg: MFCCScratchConfig) -> None:
        X = mfcc_stats(paths, cfg.n_mfcc)
        self.mfcc_mean_, self.mfcc_std_ = X.mean(0), np.maximum(X.std(0), 1e-6)
        self.coef_, self.intercept_, _ = fit_logistic((X - self.mfcc_mean_) / self.mfcc_std_, y, seed=self.seed,
                                                      C=1.0, class_weight=cfg.class_weight)

    def _predict_proba(self, paths) -> np.ndarray:
        X = (mfcc_stats(paths, self.config_.n_mfcc) - self.mfcc_mean_) / self.mfcc_std_
        return logistic_proba(X, self.coef_, self.intercept_)

    def get_state(self):
        return ({"mfcc.mean": self.mfcc_mean_, "mfcc.std": self.mfcc_std_, "head.coef": self.coef_,
                 "head.intercept": self.intercept_}, {"modality": "audio"})

    def _set_state(self, tensors, meta) -> None:
        self.mfcc_mean_, self.mfcc_std_ = tensors["mfcc.mean"], tensors["mfcc.std"]
        self.coef_, self.intercept_ = tensors["head.coef"], tensors["head.intercept"]


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
