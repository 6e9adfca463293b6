"""Use the unlabeled data: self-training (a teacher labels the pool, a student learns from the confident part, and
becomes the next teacher) and distillation into a fast student.

Pseudo-labels follow a curriculum (Cascante-Bonilla et al., 2021, "Curriculum Labeling"): round r of R keeps the
most confident r/R of ``max_share`` of the pool, ranked by the teacher's probability, so no absolute threshold has
to suit every number of classes; a per-class quota (the pool's class shares, estimated from the first teacher's
argmax counts and used to correct its probabilities for the prior shift between a class-balanced teacher and the
pool; EM on the probabilities is ``prior="pool"``) keeps a class the teacher over-predicts from swallowing the pool.
The student is the teacher's strategy trained on the labels plus the kept pseudo-labels (its own dropout and
augmentation are the noise). Pool items that duplicate or nearly duplicate a test item are dropped before anything
is learned from them. Every self-trained fit is measured beside the same
strategy without the pool, on the same split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._logging import info, progress, warn
from .config import NON_NEGATIVE, POSITIVE, SHARE, option
from .data import Dataset
from .errors import ConfigError


@dataclass
class SelfTrainConfig:
    rounds: int = option(2, "teacher -> student rounds", **POSITIVE)
    max_share: float = option(1.0, "share of the pool pseudo-labeled in the last round, the most confident first "
                                   "(round r of R keeps r/R of it; 0.8 cost sms_spam 1.3 points at 64 per class)",
                              **SHARE)
    threshold: float = option(0.0, "and only where the teacher's probability is at least this", **SHARE)
    prior: str = option("counts", "per-class quotas from the pool's class shares as the first teacher estimates "
                                  "them (counts: its argmax counts; pool: EM on its probabilities, which runs to a "
                                  "boundary on a few-shot teacher), or from the labeled data's (labeled)",
                        choices=("counts", "pool", "labeled"))
    leak_similarity: float = option(0.97, "pool items at least this similar to a test item are dropped", **SHARE)
    check_folds: int = option(4, "strategies that fit in seconds: self-training is first cross-checked on this many "
                                 "folds of the labeled data, and skipped where the student is worse than the teacher "
                                 "there (0: no check)", **NON_NEGATIVE)
    check_pool: int = option(20000, "the cross-check labels at most this many pool items (drawn at random) on each "
                                    "fold", **POSITIVE)
    check_alpha: float = option(0.1, "the cross-check skips self-training only where its sign test on the folds' "
                                     "items says the student is worse at this level (a student merely not better "
                                     "on a few dozen labels is noise: skipping it cost 3 of 15 few-shot runs 2-5 "
                                     "points; 0: never skip)", **SHARE)


@dataclass
class RoundRecord:
    round: int
    kept: int
    kept_per_class: dict[str, int]
    mean_confidence: float
    pseudo_accuracy: float | None = None
    seconds: float = 0.0


@dataclass
class SelfTrainResult:
    estimator: object
    rounds: list[RoundRecord] = field(default_factory=list)
    pool_size: int = 0
    dropped_leaks: int = 0
    check: dict | None = None
    """The cross-check on the labeled data: accuracy of the labels-only teacher and of the student, per fold."""


POOL_CHUNK = 4096
"""Pool items the leak check compares, or a teacher labels, at once in this process: memory holds one chunk's
features, not the pool's."""


def drop_test_leaks(pool: Dataset, test: Dataset | None, backbone, similarity: float) -> tuple[Dataset, int]:
    """The pool without items that duplicate (same text or bytes) or nearly duplicate (cosine >= ``similarity``
    in ``backbone``'s space) an item of ``test``: a model must never learn the test set from the pool."""
    if test is None or not len(pool):
        return pool, 0
    from .assess.check import _exact_form, nearest

    form = _exact_form(pool.modality)
    test_forms = {form(x) for x in test.inputs}
    leaked = {i for i, x in enumerate(pool.inputs) if form(x) in test_forms}
    if backbone is not None:  # a chunk of the pool's features in memory at a time, not the pool's
        test_features = backbone.encode(test.inputs)
        one = len(pool) <= POOL_CHUNK  # one chunk: the encoder's own bar, else one bar over the chunks
        with progress("leak check (pool against test)", None if one else len(pool)) as bar:
            for start in range(0, len(pool), POOL_CHUNK):
                part = pool.inputs[start:start + POOL_CHUNK]
                _, score = nearest(backbone.encode(part, show_progress=one), test_features)
                leaked |= set((np.flatnonzero(score >= similarity) + start).tolist())
                bar.advance(len(part))
    if leaked:
        warn(f"{len(leaked)} item(s) of the unlabeled pool duplicate the test data; left out of self-training")
    keep = [i for i in range(len(pool)) if i not in leaked]
    return pool.subset(keep), len(leaked)


def em_prior(proba: np.ndarray, base: np.ndarray, iterations: int = 200, tol: float = 1e-6) -> np.ndarray:
    """The class shares of a pool, estimated from a classifier's probabilities on it by EM (Saerens, Latinne &
    Decaestecker, 2002): posteriors re-weighted by (pool prior / training prior) until the prior they imply stops
    moving. ``base`` is the prior the classifier was trained under (uniform for class-balanced weights)."""
    prior = np.asarray(base, dtype=np.float64).copy()
    for _ in range(iterations):
        adjusted = shift_prior(proba, base, prior)
        new = adjusted.mean(axis=0)
        if np.abs(new - prior).max() < tol:
            return new
        prior = new
    return prior


def count_prior(proba: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """The pool's class shares as the teacher's argmax counts (classify and count), each at least ``floor`` of an
    even share: biased toward even shares where the teacher errs, but it cannot run to a boundary as EM does on a
    few-shot teacher's under-confident probabilities (docs/benchmarks.md, self-training)."""
    k = proba.shape[1]
    shares = np.bincount(np.asarray(proba).argmax(1), minlength=k) / max(len(proba), 1)
    shares = np.maximum(shares, floor / k)
    return shares / shares.sum()


def shift_prior(proba: np.ndarray, base: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Posteriors of a classifier trained under ``base`` class shares, moved to ``prior`` (Bayes' rule)."""
    weighted = np.asarray(proba, dtype=np.float64) * (np.asarray(prior) / np.clip(base, 1e-12, None))
    return weighted / np.clip(weighted.sum(axis=1, keepdims=True), 1e-12, None)


def class_quotas(prior: np.ndarray, budget: int) -> np.ndarray:
    """``budget`` split by the shares ``prior``, whole numbers summing to it (largest remainders first): rounding
    each share alone gives every class 0 when the budget is smaller than the classes, or more than the budget."""
    exact = np.clip(prior, 0, None) / max(float(np.clip(prior, 0, None).sum()), 1e-12) * budget
    quotas = np.floor(exact).astype(np.int64)
    rest = int(budget - quotas.sum())
    if rest > 0:
        quotas[np.argsort(-(exact - quotas), kind="stable")[:rest]] += 1
    return quotas


def select_pseudo_labels(proba: np.ndarray, classes: np.ndarray, prior: np.ndarray, threshold: float,
                         budget: int, usable: np.ndarray | None = None) -> np.ndarray:
    """Indices of the pool items to pseudo-label: confident ones (max probability >= ``threshold``), at most
    ``budget`` in all and, per class, at most its share ``prior`` of the budget (the most confident first);
    only where ``usable`` (all items by default)."""
    best = proba.argmax(1)
    confidence = proba.max(1)
    usable = np.ones(len(proba), bool) if usable is None else np.asarray(usable, bool)
    chosen: list[int] = []
    quotas = class_quotas(np.asarray(prior, dtype=np.float64), budget)
    for c in range(len(classes)):
        candidates = np.flatnonzero((best == c) & (confidence >= threshold) & usable)
        quota = int(quotas[c])
        order = candidates[np.argsort(-confidence[candidates], kind="stable")]
        chosen.extend(order[:quota].tolist())
    return np.asarray(sorted(chosen), dtype=np.int64)


def run_key(strategy: str, options, train: Dataset, pool: Dataset, cfg: SelfTrainConfig, seed: int,
            backbone: str | None = None) -> str:
    """What identifies a self-training run (for resuming it): the data (a file's bytes, not its path), the
    strategy with its options (and the first teacher's label-name prior, in ``strategy``) and its backbone (name
    and weights), the config."""
    import hashlib
    import json

    from ._paths import file_key

    digest = hashlib.sha256(json.dumps([strategy, repr(options), seed, repr(cfg), backbone]).encode())
    media = train.modality != "text"  # files: their bytes, not their paths (an edited image is another run)
    for items, files in ((train.inputs, media), (train.labels, False), (pool.inputs, media)):
        for item in items:
            digest.update((file_key(str(item)) if files else str(item).encode("utf-8", "surrogatepass")) + b"\0")
    return digest.hexdigest()[:24]


def _load_rounds(folder: Path | None) -> list[dict]:
    import json

    if folder is None or not folder.is_dir():
        return []
    done = []
    for r in range(1, 1000):
        try:
            done.append(json.loads((folder / f"round-{r}.json").read_text()))
        except (OSError, ValueError):
            break
    return done


def label_locally(teacher, pool: Dataset, round_no: int, workdir: Path | None = None) -> np.ndarray:
    """The teacher's probabilities over the pool (columns in ``teacher.classes_`` order), in this process, a chunk
    at a time (the features go through the backbone's feature cache, so a resumed round re-reads them)."""
    inputs = pool.inputs
    return np.vstack([np.asarray(teacher.predict_proba(inputs[i:i + POOL_CHUNK]), dtype=np.float64)
                      for i in range(0, max(len(inputs), 1), POOL_CHUNK)])


def self_train(make, train: Dataset, pool: Dataset, cfg: SelfTrainConfig, *, teacher=None,
               checkpoint: Path | None = None, show: bool = True, labeler=None) -> SelfTrainResult:
    """Rounds of teacher -> pseudo-labels -> student; ``make(**options)`` builds a fresh estimator of the strategy
    (a student gets the strategy's ``student_options``: a hybrid's views vote evenly).

    With ``checkpoint`` (a folder), each finished round's pseudo-labels are saved there; a run interrupted after
    some rounds resumes from the last one (its student is refitted from the saved pseudo-labels, the earlier
    rounds are not run again). ``labeler(teacher, pool, round, workdir)`` returns the teacher's probabilities over
    the pool (:func:`label_locally` by default; ``tenni.distributed.ClusterLabeler`` runs it as a resumable
    job on a Ray cluster); a row of NaN is an item it could not label, never pseudo-labelled."""
    from ._paths import atomic_write_json

    done = _load_rounds(checkpoint)
    result = SelfTrainResult(None, pool_size=len(pool))
    options = getattr(make(), "student_options", dict)()  # what a student is built with (hybrid: an even vote)

    def make_student():
        return make(**options) if options else make()

    hidden = pool.labels  # benchmarks pass pools whose labels are hidden from training: report accuracy
    if done:
        last = done[-1]
        info(f"self-training: resuming after round {len(done)} of {cfg.rounds} ({checkpoint})")
        teacher = make_student().fit(list(train.inputs) + [pool.inputs[i] for i in last["indices"]],
                                     list(train.labels) + last["pseudo"])
        result.rounds = [RoundRecord(**d["record"]) for d in done]
    else:
        teacher = teacher if teacher is not None else make().fit(train.inputs, train.labels)
    classes = np.asarray(teacher.classes_)
    counts = np.asarray([train.labels.count(str(c)) for c in classes], dtype=np.float64)
    # the teacher's own prior: uniform when it weighs classes as balanced (tenni's default), else the labels' shares
    own = getattr(teacher, "chosen_", teacher)  # auto (with a label-name prior): its winner's weighting
    balanced = getattr(getattr(own, "config_", None), "class_weight", None) == "balanced"
    base = np.full(len(classes), 1.0 / len(classes)) if balanced else counts / counts.sum()
    if done and "base" in done[0]:  # the first teacher's, as a run that was not interrupted keeps it
        base = np.asarray(done[0]["base"])
    prior = np.asarray(done[0]["prior"]) if done else counts / counts.sum()
    with progress("self-training", cfg.rounds if show else None) as bar:
        bar.advance(len(done))
        for r in range(len(done) + 1, cfg.rounds + 1):
            start = time.perf_counter()
            proba = (labeler or label_locally)(teacher, pool, r, checkpoint)
            usable = ~np.isnan(proba).any(axis=1)  # a row of NaN: an item the labeler rejected
            proba = np.where(usable[:, None], proba, 1.0 / len(classes))
            if r == 1 and cfg.prior in ("pool", "counts") and usable.any():
                prior = em_prior(proba[usable], base) if cfg.prior == "pool" else count_prior(proba[usable])
            if cfg.prior in ("pool", "counts"):  # the teacher's probabilities under the pool's shares
                proba = shift_prior(proba, base, prior)
            share = cfg.max_share * int(usable.sum()) * r / cfg.rounds
            budget = max(int(round(share)), 1) if share > 0 else 0  # a pool of one item is labelled too
            idx = select_pseudo_labels(proba, classes, prior, cfg.threshold, budget, usable)
            pseudo = [str(classes[k]) for k in proba[idx].argmax(1)]
            record = RoundRecord(r, len(idx), {str(c): pseudo.count(str(c)) for c in classes},
                                 float(proba[idx].max(1).mean()) if len(idx) else 0.0)
            if hidden is not None and len(idx):
                record.pseudo_accuracy = float(np.mean([p == hidden[i] for p, i in zip(pseudo, idx)]))
            if not len(idx):
                if show:
                    warn(f"self-training round {r}: no pool item was kept (confidence {cfg.threshold} or more, within "
                         "the class quotas); stopping")
                result.rounds.append(record)
                if hasattr(labeler, "round_done") and checkpoint is not None:  # the run ends here: nothing to resume
                    labeler.round_done(r, checkpoint, last=True)
                break
            student = make_student().fit(list(train.inputs) + [pool.inputs[i] for i in idx],
                                         list(train.labels) + pseudo)
            teacher = student
            record.seconds = time.perf_counter() - start
            result.rounds.append(record)
            if checkpoint is not None:
                atomic_write_json(checkpoint / f"round-{r}.json", {
                    "indices": idx.tolist(), "pseudo": pseudo, "prior": np.asarray(prior).tolist(),
                    "base": np.asarray(base).tolist(), "record": vars(record)})
                if hasattr(labeler, "round_done"):  # the round is saved: its labelling job's files can go
                    labeler.round_done(r, checkpoint, last=r == cfg.rounds)
            if show:
                info(f"self-training round {r}: {len(idx)} pseudo-labels kept ({record.kept_per_class})")
            bar.advance(1)
    result.estimator = teacher
    return result


def cross_check(make, train: Dataset, pool: Dataset, cfg: SelfTrainConfig, seed: int = 0) -> dict:
    """Self-training run on folds of the labeled data (the pool as it is), the student and the labels-only teacher
    scored on each held-out fold: whether the pool hurts here, measured without touching the test data. The
    decision is a sign test on the held-out items the two disagree on: with 2-8 held-out labels per class a mean
    accuracy a little lower is one or two items, not evidence."""
    from dataclasses import replace

    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(train.labels)
    folds = int(min(cfg.check_folds, np.unique(labels, return_counts=True)[1].min()))
    if folds < 2:
        return {"folds": 0, "helps": True, "reason": "too few labels per class to cross-check"}
    quiet = replace(cfg, check_folds=0)
    if len(pool) > cfg.check_pool:  # a cluster-sized pool: the folds ask the same question of a sample of it
        pool = pool.subset(sorted(np.random.default_rng(seed).choice(len(pool), cfg.check_pool, replace=False)))
    teacher_acc, student_acc = [], []
    teacher_only = student_only = 0  # held-out items one of the two gets right and the other wrong
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for fit_idx, val_idx in splitter.split(np.zeros(len(labels)), labels):
        part, held = train.subset(fit_idx), train.subset(val_idx)
        teacher = make().fit(part.inputs, part.labels)
        student = self_train(make, part, pool, quiet, teacher=teacher, show=False).estimator
        truth = np.asarray(held.labels)
        t_right = np.asarray(teacher.predict(held.inputs)) == truth
        s_right = np.asarray(student.predict(held.inputs)) == truth
        teacher_acc.append(float(np.mean(t_right)))
        student_acc.append(float(np.mean(s_right)))
        teacher_only += int(np.sum(t_right & ~s_right))
        student_only += int(np.sum(s_right & ~t_right))
    p_worse = sign_test(teacher_only, student_only)
    helps = cfg.check_alpha == 0 or p_worse > cfg.check_alpha
    return {"folds": folds, "teacher_accuracy": teacher_acc, "student_accuracy": student_acc,
            "teacher_only": teacher_only, "student_only": student_only, "p_worse": p_worse, "helps": helps}


def sign_test(losses: int, wins: int) -> float:
    """One-sided sign test: the chance of at least ``losses`` of the ``losses + wins`` discordant items going
    against the student if it were no worse than the teacher (a coin per item). Small: the student is worse."""
    from scipy.stats import binom

    n = losses + wins
    return float(binom.sf(losses - 1, n, 0.5)) if n else 1.0


STUDENTS = ("probe", "scratch", "small")

SMALL_STUDENT = {"layers": 1, "class_weight": None, "learning_rate": 5e-4, "head_learning_rate": 0.05,
                 "batch_size": 32, "epochs": 6, "head_init": "random"}
"""The ``small`` student: the backbone cut to its first transformer layer and fine-tuned on the teacher's
probabilities. Its head starts from random (a cut encoder's features are not the frozen ones a probe head could
start from) on unit-length features, so it needs a far higher rate than a head started from a probe: at the
finetune defaults (2e-3, body 1e-4, 4 epochs) a banking77 student reached 0.805 against its teacher's 0.920; with
these 0.910-0.916 against 0.917-0.921 over three seeds, at 6-7 times the teacher's speed (docs/benchmarks.md)."""


def _student_strategy(kind: str) -> tuple[str, dict]:
    """The strategy a student kind trains and the options it trains with (no class weights: see ``distill``)."""
    if kind == "small":
        return "finetune", dict(SMALL_STUDENT)
    return kind, {"class_weight": None}


def check_student(kind: str, modality: str, backbone: str | None = None) -> None:
    """A student that can learn from soft labels on this modality, and, for ``small``, a ``backbone`` it can cut
    and fine-tune (checked before any round runs)."""
    from .strategies.registry import get_strategy_class

    if kind not in STUDENTS:
        raise ConfigError(f"unknown student '{kind}'", hint=f"use one of: {', '.join(STUDENTS)}")

    def usable(k: str) -> bool:
        return (modality == "text" or k != "small") and hasattr(get_strategy_class(_student_strategy(k)[0],
                                                                                   modality), "fit_soft")
    if not usable(kind):
        raise ConfigError(f"student '{kind}' cannot be distilled on {modality} data",
                          hint=f"use --student {' or '.join(k for k in STUDENTS if usable(k))}")
    if kind == "small" and backbone is not None:
        from .backbones import get_backbone

        if not get_backbone(backbone).trainable:
            raise ConfigError(f"student 'small' fine-tunes a cut copy of the backbone, and '{backbone}' is frozen",
                              hint="use --student scratch, or a trainable backbone (`tenni models`)")


DISTILL_JOB = 0
"""The labelling job number of distillation's pass over the pool (the rounds are numbered from 1)."""


def distill(teacher, kind: str, train: Dataset, pool: Dataset, *, backbone: str, seed: int = 0, labeler=None,
            workdir: Path | None = None):
    """A cheaper model trained on the teacher's soft labels over the pool (and the true labels): ``probe`` (a
    logistic head on ``backbone``'s frozen features), ``small`` (``backbone`` cut to one transformer layer and
    fine-tuned: an encoder still, at several times the speed) or ``scratch`` (TF-IDF: no encoder at prediction
    time).

    The student mimics the teacher's probabilities without class weights: they already carry the teacher's own
    (class-balanced) weighting, and weighting them again by their inverse mass moved a sms_spam student (13% spam
    pool) to 0.913 against its teacher's 0.945; unweighted 0.966 (64 per class, three seeds; ag_news_sample and
    banking77 0.3 and 0.4 lower; docs/guides/selftrain.md).

    ``labeler`` and ``workdir``: who labels the pool, as in :func:`self_train` (a cluster job under the run's
    checkpoint, its files removed once the probabilities are back); items it could not label are left out."""
    from .choose import make_estimator

    check_student(kind, train.modality, backbone)
    classes = np.asarray(teacher.classes_)
    inputs = list(pool.inputs)
    if not len(pool):
        soft = np.zeros((0, len(classes)))
    elif labeler is None:
        soft = label_locally(teacher, pool, DISTILL_JOB)
    else:
        soft = labeler(teacher, pool, DISTILL_JOB, workdir)
        if hasattr(labeler, "round_done") and workdir is not None:
            labeler.round_done(DISTILL_JOB, workdir, last=True)
        usable = ~np.isnan(soft).any(axis=1)  # a row of NaN: an item the labeler rejected
        inputs, soft = [inputs[i] for i in np.flatnonzero(usable)], soft[usable]
    hard = np.zeros((len(train), len(classes)))
    hard[np.arange(len(train)), np.searchsorted(classes, np.asarray(train.labels))] = 1.0
    strategy, options = _student_strategy(kind)
    student = make_estimator(strategy, backbone, options, seed, train.modality)
    student.fit_soft(list(train.inputs) + inputs, np.vstack([hard, soft]), classes)
    return student


def predictions_per_second(estimator, inputs: list[str]) -> float:
    """Items per second of ``estimator.predict_proba`` on ``inputs`` as new data: the backbone's feature cache is
    set aside for the measurement (cached features would make any probe look as fast as no encoder at all), and a
    few items go through first, untimed: a backbone whose features all came from the cache so far loads its weights
    on that first call (which halved a MiniLM probe's measured speed on sms_spam's test split)."""
    import tempfile

    from .backbones import get_backbone
    from .backbones.cache import FeatureCache

    backbone = get_backbone(estimator.backbone) if estimator.uses_backbone and estimator.backbone else None
    saved = getattr(backbone, "_cache", None)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if backbone is not None:
                backbone._cache = FeatureCache("warm-up", root=Path(tmp) / "warm-up")
            estimator.predict_proba(inputs[:8])
            if backbone is not None:  # a fresh cache: the timed call encodes every item, the warm-up's too
                backbone._cache = FeatureCache("speed", root=Path(tmp) / "speed")
            start = time.perf_counter()
            estimator.predict_proba(inputs)
            return len(inputs) / max(time.perf_counter() - start, 1e-9)
        finally:
            if backbone is not None:
                backbone._cache = saved
