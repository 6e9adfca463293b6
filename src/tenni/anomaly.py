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

from dataclasses import dataclass, field

import numpy as np

from ._logging import info, warn
from .errors import ConfigError, DataError
from .strategies.base import Strategy, register_strategy

NORMAL_NAMES = ("normal", "good", "ok", "pass", "negative", "no", "clean", "healthy")
DEFECT, NORMAL = "defect", "normal"


@dataclass
class AnomalyConfig:
    calibration_fraction: float = field(default=0.2, metadata={
        "help": "share of the normal images held out of the memory bank to set the threshold (at least 2)"})
    quantile: float = field(default=0.98, metadata={
        "help": "threshold = this quantile of the held-out normals' scores (higher: fewer false alarms)"})
    coreset_ratio: float = field(default=0.1, metadata={
        "help": "share of the normal patches kept in the memory bank (greedy k-center coreset)"})
    max_bank: int = field(default=16384, metadata={"help": "most patch vectors in the memory bank"})
    scoring: str = field(default="both", metadata={
        "help": "'patch' (PatchCore: local defects), 'global' (kNN on pooled embeddings: images unlike the "
                "normals as a whole) or 'both' (each standardised on held-out normals, then added)"})
    normal_label: str | None = field(default=None, metadata={
        "help": "with labelled data: the class that is normal (default: a class named normal/good/ok/no...)"})
    batch_size: int = field(default=16, metadata={"help": "images per backbone batch"})


def auroc(is_defect, scores) -> float | None:
    """Area under the ROC curve of ``scores`` for ``is_defect``; None when only one kind is present."""
    from sklearn.metrics import roc_auc_score

    is_defect = np.asarray(is_defect, dtype=bool)
    if is_defect.all() or not is_defect.any():
        return None
    return float(roc_auc_score(is_defect, np.asarray(scores, dtype=np.float64)))


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


@register_strategy
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
        if cfg.scoring not in ("patch", "global", "both"):
            raise ConfigError(f"scoring must be patch, global or both, not '{cfg.scoring}'")
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


def normal_label_of(labels: list[str], requested: str | None, where=None) -> str:
    present = sorted(set(labels))
    if requested is not None:
        if requested not in present:
            raise DataError(f"no class '{requested}' in the data (classes: {', '.join(present)})", path=where)
        return requested
    for name in NORMAL_NAMES:
        for label in present:
            if label.lower() == name:
                return label
    if len(present) == 1:
        return present[0]
    raise ConfigError(f"cannot tell which class is normal among {', '.join(present)}",
                      hint="name the normal class folder 'normal' or 'good', or pass --set normal_label=NAME")


def evaluation_normal(dataset, normal: str) -> str:
    """The normal class to score ``dataset`` against: the model's, when the data has it; when it has not, another
    normal-looking class of the data (e.g. ``good``, for a model trained on a flat folder, whose normal class is the
    placeholder ``normal``) if it holds two or more classes, else the model's, every example then a defect."""
    present = set(dataset.labels)
    if normal in present:
        return normal
    if len(present) >= 2:
        return normal_label_of(dataset.labels, None, dataset.path)
    from ._logging import warn

    warn(f"{dataset.path or 'the evaluation data'}: no example is labelled '{normal}' (the model's normal class), so "
         "every example counts as a defect and AUROC cannot be computed")
    return normal


def anomaly_metrics(labels: list[str], scores: np.ndarray, threshold: float, normal: str) -> dict:
    from .evaluation import classification_metrics

    is_defect = np.asarray([y != normal for y in labels])
    truth = [DEFECT if d else NORMAL for d in is_defect]
    predicted = [DEFECT if s > threshold else NORMAL for s in scores]
    metrics = classification_metrics(truth, predicted, [DEFECT, NORMAL])
    metrics.update(auroc=auroc(is_defect, scores), normal_label=normal, threshold=threshold,
                   defects=int(is_defect.sum()), normals=int((~is_defect).sum()))
    return metrics


def fit_anomaly(data, *, test=None, backbone: str = "auto", config=None, seed: int = 0, **read_options):
    """Fit :class:`PatchCore` on the normal images of ``data``; measure it on ``test`` when it has labels."""
    from pathlib import Path

    from .api import AUTO
    from .backbones import DEFAULT_IMAGE_BACKBONE
    from .data import as_dataset
    from .data.media import split_folder
    from .model import Model

    if test is None and isinstance(data, (str, Path)) and Path(data).is_dir():
        data, test = split_folder(Path(data))
    dataset = as_dataset(data, labeled=False, **read_options)
    if dataset.modality != "image":
        raise ConfigError(f"--task anomaly works on images; the data is {dataset.modality}",
                          hint="give a folder of normal images")
    estimator = PatchCore(backbone=DEFAULT_IMAGE_BACKBONE if backbone == AUTO else backbone, config=config,
                          seed=seed)
    cfg = estimator.config_
    normals = dataset.inputs
    normal = NORMAL
    if dataset.labels is not None:
        normal = normal_label_of(dataset.labels, cfg.normal_label, dataset.path)
        normals = [p for p, y in zip(dataset.inputs, dataset.labels) if y == normal]
        others = len(dataset) - len(normals)
        if others:
            warn(f"fitting on the {len(normals)} '{normal}' images only; {others} images of other classes are left "
                 "out of training (put labelled defects in the test data to measure AUROC)")
    info(f"anomaly detection: memory bank from {len(normals)} normal images")
    estimator.fit(normals)
    metrics = dict(estimator.fit_info_, threshold=estimator.threshold_, evaluation="none (no test data)")
    metrics.pop("calibration_scores", None)
    summary = {"source": str(dataset.path or "in-memory data"), "train_size": len(normals), "modality": "image",
               "normal_label": normal, "class_counts": {normal: len(normals)}}
    if test is not None:
        test_set = as_dataset(test, **read_options)
        test_set.require_modality("image", "the training data")
        test_set.require_labels(min_classes=1)
        scores = estimator.score_samples(test_set.inputs)
        metrics["test"] = anomaly_metrics(test_set.labels, scores, estimator.threshold_,
                                          evaluation_normal(test_set, normal))
        metrics["evaluation"] = "test data"
        metrics["results"] = [{"strategy": "patchcore", "backbone": estimator.backbone,
                               "accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
                               "auroc": metrics["test"]["auroc"], "seconds": None}]
        summary.update(test_source=str(test_set.path), test_size=len(test_set))
    metrics.setdefault("results", [])
    model = Model(estimator, modality="image", metrics=metrics, data_summary=summary, task="anomaly")
    return model
