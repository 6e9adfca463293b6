"""``auto``: race the candidate strategies on cross-validation folds under a time budget, keep the winner.

Successive halving (Jamieson & Talwalkar, 2016) over folds, cheapest candidates first; nothing starts that could
not finish inside the budget, the final refit included. The probe is the incumbent: a challenger must beat it by
``margin`` on the same folds, since a tie is better won by the cheaper, steadier model. How the race spends its
budget, and the defaults measured and not kept, are in docs/design/auto-race.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .._deadline import BudgetExceeded, time_limit
from .._logging import info
from ..config import POSITIVE, SHARE, option
from .base import Strategy
from .registry import get_entry, get_strategy_class, strategy_names
from .scratch import wants_characters

COST_ORDER = ("probe", "hybrid", "setfit", "lora", "finetune")
RACED_ON_MEDIA = ("probe", "finetune")
"""Images and audio race these only: what works where is the registry's; what is worth racing there (measured on the
image and audio benchmarks) is auto's own choice."""
# the final refit on all the data is estimated from the folds' times scaled by the data's size; measured on
# ag_news at 8 per class (idle), the refit of setfit ran ~4% over that, so the fit ended at 125 s of a 120 s
# budget: the race keeps a margin for it
REFIT_SAFETY = 1.2


def refit_seconds(fold_seconds: float, n_all: int, n_fold: int) -> float:
    """A fold's time scaled to a refit on all the data, with the safety margin."""
    return REFIT_SAFETY * fold_seconds * n_all / max(n_fold, 1)


def usable(entry, backbone) -> bool:
    """Whether the strategy of ``entry`` can run on ``backbone`` at all (its modality; a frozen backbone for the
    strategies that train it; a transformer for LoRA)."""
    if not entry.supports(backbone.modality):
        return False
    if entry.trains_backbone and not backbone.trainable:
        return False
    return not (entry.needs_transformer and not getattr(backbone, "transformer", True))


@dataclass
class AutoConfig:
    budget: float = option(120.0, "seconds for the whole race, final refit included (CLI: --budget 5m)",
                           **POSITIVE)
    candidates: tuple = option(COST_ORDER, "strategies to race, cheapest first")
    folds: int = option(3, "stratified folds the race runs over", **POSITIVE)
    margin: float = option(0.01, "accuracy a challenger must gain over the probe (same folds) to be chosen", **SHARE)
    label_names: bool = option(True, "text: when the labels are words, blend the winner with a prior that starts "
                                     "from the label names' embeddings, weight chosen on the race's folds (CLI: "
                                     "--no-label-names)")
    label_descriptions: dict | None = option(None, "label -> description(s) embedded for that prior instead of the "
                                                   "names (CLI: --label-descriptions file.json)")

    def __post_init__(self):
        known = [n for n in strategy_names() if n != "auto"]
        unknown = [c for c in self.candidates if c not in known]
        if unknown or not self.candidates:
            from ..errors import ConfigError

            raise ConfigError(f"option candidates: {', '.join(map(repr, unknown)) or 'none given'} — not a "
                              "strategy auto can race", hint=f"choose among {', '.join(known)}")


# seconds per token through MiniLM on 2 idle cores (forward + backward for training, forward for inference), ~1.4x
# the measured ones (docs/guides/long-texts.md) to stay pessimistic
TRAIN_SECONDS_PER_TOKEN = {"setfit": 1.0e-3, "lora": 6e-4, "finetune": 9e-4}
INFER_SECONDS_PER_TOKEN = 2.5e-4
CAP_TOKENS = 256  # the text backbones' default maximum, where the length policy cuts


def text_tokens(n_train: int, characters: int, unspaced: bool = False) -> float:
    """Tokens a text strategy reads per text, from the characters: ~4 characters a WordPiece token in English,
    ~1.3 in unspaced scripts, plus the two special tokens; capped where the length policy cuts."""
    if n_train <= 0 or characters <= 0:
        return 32.0  # unknown: a short text
    per_text = characters / n_train / (1.3 if unspaced else 4.0) + 2
    return float(min(CAP_TOKENS, max(8.0, per_text)))


def estimate_seconds(name: str, n_train: int, n_classes: int, characters: int = 0, unspaced: bool = False) -> float:
    """A deliberately pessimistic prior for 2 CPU cores, replaced by measured times once a candidate has run.

    The hybrid's TF-IDF part scales with the amount of text (character n-grams, ``unspaced``, cost ~10x more per
    character than word n-grams), its logistic fits with examples x classes; the trained strategies with tokens x
    steps, texts being read up to the length policy's cap (a fold of long documents costs several times one of
    short texts). The measurements behind the constants are in docs/design/auto-race.md and
    docs/guides/long-texts.md.
    """
    if name == "probe":
        return 0.02 * n_train + 1.0
    if name == "hybrid":
        return 1e-4 * n_train * n_classes + (4e-4 if unspaced else 3e-5) * characters + 3.0
    tokens = text_tokens(n_train, characters, unspaced)
    # the fold's own inference: features for the head and the validation share, about 1.5 passes over the data
    infer = INFER_SECONDS_PER_TOKEN * 1.5 * n_train * tokens
    if name == "setfit":
        from .setfit import examples_seen

        encoded = examples_seen(n_train) * n_train  # loss=batch: each example encoded this many times
        return TRAIN_SECONDS_PER_TOKEN["setfit"] * encoded * tokens + infer + 5.0
    steps = max(100, 10 * math.ceil(0.85 * n_train / 16))  # lora / finetune: min_steps and epochs defaults
    per_token = TRAIN_SECONDS_PER_TOKEN.get(name, TRAIN_SECONDS_PER_TOKEN["finetune"])
    return per_token * steps * min(16, n_train) * tokens + infer + 5.0


class AutoStrategy(Strategy):
    """Pick the strategy by a budgeted race on CV folds; behaves as the winner afterwards."""

    name = "auto"
    Config = AutoConfig

    def _fit(self, texts, y, cfg: AutoConfig) -> None:
        from sklearn.model_selection import StratifiedKFold

        start = time.perf_counter()
        labels = self.classes_[y]
        backbone = self._backbone()
        self._fold_proba: dict[str, list] = {}  # out-of-fold probabilities, for the label-name prior
        candidates = [c for c in COST_ORDER if c in cfg.candidates] + [c for c in cfg.candidates
                                                                        if c not in COST_ORDER]
        candidates = [c for c in candidates if usable(get_entry(c), backbone)
                      and (backbone.modality == "text" or c in RACED_ON_MEDIA)]
        if "probe" not in candidates:
            candidates.insert(0, "probe")
        folds = int(min(cfg.folds, np.bincount(y).min()))
        race: dict[str, dict] = {c: {"scores": [], "seconds": [], "status": "racing"} for c in candidates}
        budget = cfg.budget
        if folds >= 2:
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(texts, y))
            # the incumbent runs every fold first (cheap): its scores are there for every comparison
            for train_idx, val_idx in splits:
                self._run_fold("probe", race["probe"], texts, labels, train_idx, val_idx)
            unspaced = backbone.modality == "text" and wants_characters(texts)
            alive = list(candidates)
            for k, (train_idx, val_idx) in enumerate(splits):
                survivors = ["probe"]  # ran every fold already; halving always keeps it
                for name in alive:
                    if name == "probe":
                        continue
                    entry = race[name]
                    chars = sum(len(texts[i]) for i in train_idx)
                    fold_est = (np.mean(entry["seconds"]) if entry["seconds"] else estimate_seconds(
                        name, len(train_idx), len(self.classes_), chars, unspaced))
                    refit_est = refit_seconds(fold_est, len(texts), len(train_idx))
                    # keep time to refit the challenger leading so far too: otherwise several folds that each
                    # fit can, together, leave no time to refit whichever of them wins
                    reserve = max(refit_est, self._refit_estimate(race, cfg, len(texts), len(train_idx)))
                    elapsed = time.perf_counter() - start
                    if elapsed + fold_est + reserve > budget:
                        entry["status"] = (f"stopped: this fold and the final refit would not finish within the "
                                           f"{budget:.0f} s budget")
                        if not entry["seconds"]:  # never ran: say what it would take
                            need = math.ceil((elapsed + fold_est + reserve) * 1.1 / 60)
                            size = (f" (texts of ~{text_tokens(len(train_idx), chars, unspaced):.0f} tokens)"
                                    if backbone.modality == "text" else "")
                            info(f"auto: {name} not tried: a fold (~{fold_est:.0f} s) and its refit (~{refit_est:.0f} "
                                 f"s) do not fit in the {max(budget - elapsed, 0):.0f} s left{size}; --budget {need}m "
                                 "would let it run")
                        continue
                    try:
                        self._run_fold(name, entry, texts, labels, train_idx, val_idx,
                                       limit=budget - elapsed - reserve)
                    except BudgetExceeded:
                        entry["status"] = (f"stopped mid-fold: the time left in the {budget:.0f} s budget is "
                                           "kept for the final refit")
                        entry["scores"], entry["seconds"] = [], []
                        info(f"auto: {name} stopped, over budget")
                        continue
                    survivors.append(name)
                    info(f"auto: fold {k + 1}/{len(splits)}: {name} {entry['scores'][-1]:.3f} "
                         f"({entry['seconds'][-1]:.0f} s; {time.perf_counter() - start:.0f} s of {budget:.0f})")
                if k < len(splits) - 1 and len(survivors) > 2:
                    # successive halving: the better half (by mean over the folds run so far) goes on
                    ranked = sorted(survivors, key=lambda c: np.mean(race[c]["scores"][:k + 1]), reverse=True)
                    keep = ranked[: max(2, math.ceil(len(ranked) / 2))]
                    if "probe" not in keep:
                        keep.append("probe")  # the incumbent always runs every fold: comparisons stay paired
                    for name in survivors:
                        if name not in keep:
                            race[name]["status"] = f"dropped after fold {k + 1} (successive halving)"
                    survivors = [c for c in survivors if c in keep]
                alive = survivors
            # a challenger wins only if its refit on all the data, estimated from its measured folds, fits in
            # what is left of the budget
            elapsed = time.perf_counter() - start
            for name, entry in race.items():
                if name != "probe" and entry["seconds"]:
                    refit = refit_seconds(float(np.mean(entry["seconds"])), len(texts), len(splits[0][0]))
                    if elapsed + refit > budget:
                        entry["status"] = (f"not eligible: its refit on all the data (~{refit:.0f} s) would not fit "
                                           f"in the {max(budget - elapsed, 0):.0f} s left of the budget")
                        entry["eligible"] = False
            chosen = self._choose({k: v for k, v in race.items() if v.get("eligible", True)}, cfg)
        else:
            chosen = "probe"
            for entry in race.values():
                entry["status"] = "not raced: a class has a single example"
        for entry in race.values():
            if entry["status"] == "racing":
                entry["status"] = "finished"
            entry["mean_accuracy"] = float(np.mean(entry["scores"])) if entry["scores"] else None
        race[chosen]["status"] = "chosen"
        self.race_ = race
        self.chosen_ = get_strategy_class(chosen, backbone.modality)(backbone=self.backbone, seed=self.seed)
        self.chosen_.fit(texts, labels)
        self.reason_ = self._explain(chosen, race)
        self.prior_ = None
        if cfg.label_names and backbone.modality == "text":
            from .zeroshot import fit_label_prior

            fit_label_prior(self, texts, y, chosen, cfg.label_descriptions, getattr(self, "unlabeled_texts", None))
        self.seconds_ = time.perf_counter() - start

    @staticmethod
    def _refit_estimate(race: dict, cfg: AutoConfig, n_all: int, n_fold: int) -> float:
        """Seconds to refit, on all the data, the challenger that would be chosen now (0 if it is the probe)."""
        leader = AutoStrategy._choose({k: v for k, v in race.items() if v["seconds"]}, cfg)
        if leader == "probe":
            return 0.0
        return refit_seconds(float(np.mean(race[leader]["seconds"])), n_all, n_fold)

    def _run_fold(self, name: str, entry: dict, texts, labels, train_idx, val_idx, limit: float | None = None):
        """Fit ``name`` on one fold's training part (within ``limit`` seconds) and score it on the rest."""
        t0 = time.perf_counter()
        est = get_strategy_class(name, self._backbone().modality)(backbone=self.backbone, seed=self.seed)
        with time_limit(limit):
            est.fit([texts[i] for i in train_idx], labels[train_idx])
        proba = est.predict_proba([texts[i] for i in val_idx])
        pred = est.classes_[proba.argmax(1)]
        self._fold_proba.setdefault(name, []).append((val_idx, est.classes_, proba))
        entry["scores"].append(float(np.mean(pred == labels[val_idx])))
        entry["seconds"].append(time.perf_counter() - t0)
        if name == "probe":
            info(f"auto: probe {entry['scores'][-1]:.3f} on fold {len(entry['scores'])} "
                 f"({entry['seconds'][-1]:.0f} s)")

    @staticmethod
    def _choose(race: dict, cfg: AutoConfig) -> str:
        probe = race["probe"]["scores"]

        def dropped(entry) -> bool:
            return entry.get("status", "").startswith("dropped")

        # one dropped by successive halving lost to a survivor on the same folds: its gain over the probe on fewer
        # folds is no reason to prefer it to that survivor — while a survivor is still in the running (one stopped
        # mid-fold or too slow to refit is not)
        survivors = any(entry["scores"] and not dropped(entry) for name, entry in race.items() if name != "probe")
        best, best_gain = "probe", 0.0
        for name, entry in race.items():
            n = len(entry["scores"])
            if name == "probe" or n == 0 or (survivors and dropped(entry)):
                continue
            gain = float(np.mean(entry["scores"]) - np.mean(probe[:n]))
            # a challenger that ran fewer folds is compared on the folds it ran, and needs the margin to win
            if gain > cfg.margin and gain > best_gain:
                best, best_gain = name, gain
        return best

    @staticmethod
    def _explain(chosen: str, race: dict) -> str:
        parts = []
        for name, entry in race.items():
            if entry["scores"]:
                n = len(entry["scores"])
                parts.append(f"{name} {np.mean(entry['scores']):.3f} ({n} fold{'s' if n != 1 else ''}, "
                             f"{np.mean(entry['seconds']):.0f} s/fold"
                             + (f"; {entry['status']})" if entry.get("eligible") is False else ")"))
            else:
                parts.append(f"{name} {entry['status']}")
        return f"chose {chosen}: " + "; ".join(parts)

    def _predict_proba(self, texts) -> np.ndarray:
        from .zeroshot import with_label_prior

        return with_label_prior(self, self.chosen_.predict_proba(texts), texts)

    def get_state(self):
        from .zeroshot import label_prior_state

        tensors, meta = self.chosen_.get_state()
        prior_tensors, prior_meta = label_prior_state(self)
        return {**tensors, **prior_tensors}, {"chosen": self.chosen_.name, "chosen_config": self.chosen_.config_dict(),
                                              "chosen_meta": meta, "race": self.race_, "reason": self.reason_,
                                              **prior_meta}

    def _set_state(self, tensors, meta) -> None:
        from .zeroshot import load_label_prior

        tensors = load_label_prior(self, tensors, meta)
        cls = get_strategy_class(meta["chosen"], self._backbone().modality)
        self.chosen_ = cls.from_state(backbone=self.backbone if cls.uses_backbone else None,
                                      config=meta["chosen_config"], seed=self.seed, classes=self.classes_,
                                      tensors=tensors, meta=meta["chosen_meta"])
        self.race_, self.reason_ = meta.get("race", {}), meta.get("reason", "")
