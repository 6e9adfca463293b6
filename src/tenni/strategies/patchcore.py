"""Few-normal-only defect detection (``--task anomaly``): PatchCore-style nearest-neighbour scoring.

Fit on normal images only. Mid-level patch features of a pretrained backbone (each averaged over its 3x3
neighbourhood, two depths concatenated) from the normal images form a memory bank, thinned by a greedy k-center
coreset (Roth et al. 2022, "Towards Total Recall in Industrial Anomaly Detection"). An image's score is the
distance of its most unusual patch to its nearest neighbour in the bank: a scratch or a spot no normal image
has stands out even when the rest of the picture is ordinary. With ``scoring="both"`` (the default) the image's
pooled embedding adds its distance to the nearest normal embedding (kNN novelty, Bergman et al. 2020): that
catches images unlike the normals as a whole (another object, another kind of scan) which no single patch
betrays. Each part is standardised by the held-out normals' scores before they are added. The threshold is the
``quantile`` of the scores of normal images held out from the bank (never seen by it), so no defect examples
are needed to set it. With labelled defects in the test data, evaluation reports AUROC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import POSITIVE, SHARE, option
from ..errors import ConfigError, DataError
from .base import Strategy

DEFECT, NORMAL = "defect", "normal"


@dataclass
class AnomalyConfig:
    calibration_fraction: float = option(0.2, "share of the normal images held out of the memory bank to set the "
                                              "threshold (at least 2)", **SHARE)
    quantile: float = option(0.98, "threshold = this quantile of the held-out normals' scores (higher: fewer false "
                                   "alarms)", **SHARE)
    coreset_ratio: float = option(0.1, "share of the normal patches kept in the memory bank (greedy k-center "
                                       "coreset)", **SHARE)
    max_bank: int = option(16384, "most patch vectors in the memory bank", **POSITIVE)
    scoring: str = option("both", "'patch' (PatchCore: local defects), 'global' (kNN on pooled embeddings: images "
                                  "unlike the normals as a whole) or 'both' (each standardised on held-out normals, "
                                  "then added)", choices=("patch", "global", "both"))
    normal_label: str | None = option(None, "with labelled data: the class that is normal (default: a class named "
                                            "normal/good/ok/no...)")
    batch_size: int = option(16, "images per backbone batch", **POSITIVE)


def greedy_coreset(x: np.ndarray, n: int, seed: int, proj_dim: int = 128) -> np.ndarray:
    """Indices of ``n`` rows that cover ``x`` (each new one the farthest from those chosen), on a random
    projection so the distances are cheap."""
    import torch

    if n >= len(x):
        return np.arange(len(x))
    rng = np.random.default_rng(seed)
    if x.shape[1] > proj_dim:
        x = x @ (rng.standard_normal((x.shape[1], proj_dim)) / np.sqrt(proj_dim)).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    chosen = [int(rng.integers(len(x)))]
    nearest = ((t - t[chosen[0]]) ** 2).sum(1)
    for _ in range(n - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, ((t - t[i]) ** 2).sum(1))
    return np.asarray(sorted(chosen))


class PatchCore(Strategy):
    """Memory bank of normal patch features; score = farthest patch's nearest-neighbour distance."""

    name = "patchcore"
    Config = AnomalyConfig

    def _patches(self, paths: list[str]) -> list[np.ndarray]:
        backbone = self._backbone()
        if backbone.modality != "image" or not hasattr(backbone, "patch_features"):
            raise ConfigError(f"anomaly detection needs an image backbone with patch features, not '{backbone.name}'",
                              hint="use --backbone image/efficientnet-lite0 or a hub vision model")
        out = []
        step = self.config_.batch_size
        for start in range(0, len(paths), step):
            maps = backbone.patch_features(paths[start:start + step])
            out.extend(m.reshape(-1, m.shape[-1]).astype(np.float32) for m in maps)
        return out

    def fit(self, X, y=None) -> PatchCore:
        """Fit on normal images (``y`` is ignored: everything given here is normal)."""
        paths = [str(p) for p in X]
        cfg = self.config_
        if len(paths) < 3:
            raise DataError(f"{len(paths)} normal images are too few", hint="give at least 3 (better 10 or more)")
        rng = np.random.default_rng(self.seed)
        n_cal = max(2, int(round(cfg.calibration_fraction * len(paths))))
        order = rng.permutation(len(paths))
        calibration, bank_paths = [paths[i] for i in order[:n_cal]], [paths[i] for i in order[n_cal:]]
        patches = np.concatenate(self._patches(bank_paths))
        size = int(min(cfg.max_bank, max(1, round(cfg.coreset_ratio * len(patches)))))
        self.bank_ = patches[greedy_coreset(patches, size, self.seed)]
        self.global_bank_ = self._backbone().encode(bank_paths).astype(np.float32)
        parts = self._parts(calibration)  # their mean and std on held-out normals standardise the two parts
        self.norm_ = np.asarray([parts[0].mean(), max(parts[0].std(), 1e-6), parts[1].mean(),
                                 max(parts[1].std(), 1e-6)], np.float32)
        cal_scores = self.score_samples(calibration)
        self.threshold_ = float(np.quantile(cal_scores, cfg.quantile))
        spread = float(np.std(cal_scores)) if len(cal_scores) > 1 else 0.0
        self.scale_ = max(spread, 0.05 * abs(self.threshold_), 1e-6)
        self.classes_ = np.asarray([DEFECT, NORMAL])
        self.fit_info_ = {"train_size": len(bank_paths), "calibration_size": len(calibration),
                          "bank_size": int(len(self.bank_)), "patches": int(len(patches)),
                          "calibration_scores": [round(float(s), 6) for s in cal_scores]}
        return self

    def _parts(self, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(patch score, global score) per image, raw."""
        import torch

        scoring = self.config_.scoring
        patch = np.zeros(len(paths))
        if scoring in ("patch", "both"):
            bank = torch.from_numpy(np.ascontiguousarray(self.bank_, dtype=np.float32))
            patch = np.asarray([float(torch.cdist(torch.from_numpy(p), bank).min(dim=1).values.max())
                                for p in self._patches(paths)])
        glob = np.zeros(len(paths))
        if scoring in ("global", "both"):
            feats = torch.from_numpy(self._backbone().encode(paths).astype(np.float32))
            glob = torch.cdist(feats, torch.from_numpy(self.global_bank_)).min(dim=1).values.double().numpy()
        return patch, glob

    def score_samples(self, X) -> np.ndarray:
        """Anomaly score per image: higher is more unusual."""
        paths = [str(p) for p in X]
        if not paths:
            return np.zeros(0)
        patch, glob = self._parts(paths)
        scoring = self.config_.scoring
        if scoring == "patch":
            return patch
        if scoring == "global":
            return glob
        m = self.norm_
        return (patch - m[0]) / m[1] + (glob - m[2]) / m[3]

    def predict_proba(self, X) -> np.ndarray:
        """Columns (defect, normal): a logistic squashing of (score - threshold) / spread — an ordering, not a
        calibrated probability; the decision is score > threshold."""
        paths = [str(p) for p in X]
        if not paths:
            return np.zeros((0, 2))
        z = (self.score_samples(paths) - self.threshold_) / self.scale_
        p_defect = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        return np.stack([p_defect, 1.0 - p_defect], axis=1)

    def get_state(self):
        return ({"bank": self.bank_.astype(np.float32), "global_bank": self.global_bank_, "norm": self.norm_},
                {"threshold": self.threshold_, "scale": self.scale_, "fit": self.fit_info_})

    def _set_state(self, tensors, meta) -> None:
        self.bank_ = tensors["bank"]
        self.global_bank_ = tensors["global_bank"]
        self.norm_ = tensors["norm"]
        self.threshold_ = float(meta["threshold"])
        self.scale_ = float(meta["scale"])
        self.fit_info_ = meta.get("fit", {})
