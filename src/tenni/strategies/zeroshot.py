"""Zero-shot classification from label names: no labeled examples, only the names (or descriptions) of the classes.

Each label — or each description the user gives of it — is put through a few sentence templates and embedded with
the text backbone (frozen, through its feature cache); a label's vector is the normalised mean of its prompts'
embeddings. A text goes to the label whose vector is nearest by cosine; probabilities are a softmax of the cosines
over a temperature. The unlabeled texts the model is fitted on, where there are any, are used — never their labels:
a few rounds of self-training move each label's vector towards the texts it claims most confidently (and, as an
option, their mean embedding is subtracted from texts and labels).

With labeled examples the same scores become a prior: ``auto`` blends them with the chosen model's probabilities,
the weight picked on the race's out-of-fold predictions (see :func:`fit_label_prior`). Label names count only when
they are words: ``0``/``1``, ``A1`` or ``label_3`` say nothing (:func:`label_names_are_words`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import NON_NEGATIVE, POSITIVE, option
from ..errors import ConfigError
from .base import Strategy

# the templates are measured on the benchmark sets (docs/guides/zeroshot.md); a user description is used as it is
DEFAULT_TEMPLATES = ("{}.", "This text is about {}.", "A message about {}.")
DEFAULT_TEMPERATURE = 0.05
_CODE_WORDS = {"label", "labels", "class", "classes", "cat", "category", "type", "id", "lbl", "target", "tag",
               "group", "cluster", "level", "grade", "item", "option", "choice", "no", "num", "number"}


# --- label names ------------------------------------------------------------------------------------------------

def humanize(label) -> str:
    """A label as words: ``card_arrival`` -> ``card arrival``, ``camelCase`` -> ``camel Case``."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(label))
    text = re.sub(r"[_\-]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _is_word_label(label) -> bool:
    chunks = re.findall(r"[^\W_]+", humanize(label))  # runs of letters and digits (any script)
    for chunk in chunks:
        if any(c.isdigit() for c in chunk):  # 3, A1, ISO9001: a code
            continue
        if chunk.lower() in _CODE_WORDS:
            continue
        if len(chunk) >= 2 or not chunk.isascii():  # one Latin letter is a code; one kanji is a word
            return True
    return False


def label_names_are_words(labels) -> bool:
    """True when every label has a word in it (``World``, ``card_arrival``, ``spam``, ``スポーツ``), False for codes
    (``0``/``1``, ``A1``, ``label_3``, ``x``): only words tell a text encoder what a class is about."""
    labels = [str(x) for x in labels]
    return bool(labels) and all(_is_word_label(x) for x in labels)


def parse_labels(labels) -> list[str]:
    """``"World,Sports"`` or a list of names -> distinct names (at least two)."""
    if isinstance(labels, str):
        names = [x.strip() for x in labels.split(",")]
    else:
        names = [str(x).strip() for x in labels]
    names = [x for x in names if x]
    duplicates = sorted({x for x in names if names.count(x) > 1})
    if duplicates:
        raise ConfigError(f"label {duplicates[0]!r} is given twice", hint="list each label once: --labels 'A,B,C'")
    if len(names) < 2:
        raise ConfigError(f"zero-shot needs at least two label names, got {len(names)}",
                          hint="--labels 'World,Sports,Business,Sci/Tech'")
    return names


def read_label_descriptions(path) -> dict[str, list[str]]:
    """A JSON object mapping label -> description, or label -> list of descriptions; errors name the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="--label-descriptions takes a JSON file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it ({type(err).__name__})",
                          hint="--label-descriptions takes a UTF-8 JSON file") from None
    except ValueError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})",
                          hint='write an object: {"Sports": "sport, games and athletes", ...}') from None
    return check_descriptions(raw, where=str(path))


def check_descriptions(raw, labels=None, where: str = "label descriptions") -> dict[str, list[str]]:
    """label -> non-empty list of non-empty strings; labels, when given, must include every key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a JSON object (label -> description), not a {type(raw).__name__}",
                          hint='e.g. {"Sports": "sport, games and athletes"}')
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        items = [value] if isinstance(value, str) else value
        if (not isinstance(items, (list, tuple)) or not items
                or not all(isinstance(v, str) and v.strip() for v in items)):
            raise ConfigError(f"{where}: the description of {key!r} must be a text or a list of texts",
                              hint='e.g. "Sports": ["sport news", "games and athletes"]')
        out[str(key)] = [v.strip() for v in items]
    if labels is not None:
        known = {str(x) for x in labels}
        unknown = [k for k in out if k not in known]
        if unknown:
            shown = ", ".join(sorted(known)[:8]) + (" …" if len(known) > 8 else "")
            raise ConfigError(f"{where}: label {unknown[0]!r} is not one of the data's labels",
                              hint=f"labels: {shown}")
    return out


def label_prompts(label, descriptions: dict | None, templates) -> list[str]:
    """The texts embedded for one label: its descriptions as given, else its name in every template."""
    given = (descriptions or {}).get(str(label))
    if given:
        return list(given)
    name = humanize(label)
    return [t.format(name) for t in templates] or [name]


# --- the scores -------------------------------------------------------------------------------------------------

def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def label_matrix(backbone, classes, descriptions, templates, batch_size: int = 64) -> np.ndarray:
    """(classes, dim): each label's prompts embedded, normalised, averaged, normalised again."""
    prompts = [label_prompts(c, descriptions, templates) for c in classes]
    flat = [p for group in prompts for p in group]
    emb = _normalise(backbone.encode(flat, batch_size=batch_size, show_progress=False))
    out, start = [], 0
    for group in prompts:
        out.append(emb[start:start + len(group)].mean(axis=0))
        start += len(group)
    return _normalise(np.stack(out))


def cosine_scores(feats: np.ndarray, labels: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Cosine of each centred text with each centred label vector."""
    return _normalise(_normalise(feats) - center) @ _normalise(labels - center).T


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def self_train(feats: np.ndarray, labels: np.ndarray, center: np.ndarray, rounds: int, share: float,
               anchor: float) -> np.ndarray:
    """Move each label vector towards the mean of the texts it claims most confidently (top ``share`` by margin),
    ``rounds`` times; ``anchor`` keeps the label's own vector in the mix so a class cannot drift to another topic.
    Returns un-centred label vectors (the centre is subtracted at scoring)."""
    x = _normalise(_normalise(feats) - center)
    protos = _normalise(labels - center)
    k = len(protos)
    for _ in range(rounds):
        scores = x @ protos.T
        assigned = scores.argmax(1)
        top2 = np.sort(scores, axis=1)[:, -2:] if k > 1 else np.concatenate([scores, scores], axis=1)
        margin = top2[:, 1] - top2[:, 0]
        new = []
        for c in range(k):
            mine = np.flatnonzero(assigned == c)
            if len(mine) == 0:
                new.append(protos[c])
                continue
            keep = mine[np.argsort(-margin[mine])[:max(1, int(np.ceil(share * len(mine))))]]
            new.append(_normalise(anchor * _normalise(labels[c] - center) + x[keep].mean(axis=0)))
        protos = np.stack(new)
    return protos + center


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature with the lowest log-loss on labeled examples (argmax, so accuracy, unchanged)."""
    grid = np.geomspace(0.005, 1.0, 40)
    losses = [-np.mean(np.log(softmax(scores / t)[np.arange(len(y)), y].clip(1e-12))) for t in grid]
    return float(grid[int(np.argmin(losses))])


@dataclass
class ZeroShotConfig:
    labels: tuple = option((), "the label names, when fitting without labeled examples (CLI: tenni fit DATA "
                               "--labels A,B,C)")
    label_descriptions: dict | None = option(None, "label -> description (or list of descriptions), embedded instead "
                                                   "of the templated name (CLI: --label-descriptions file.json)")
    templates: tuple = option(DEFAULT_TEMPLATES, "sentence templates a label name is put in ({} is the name); their "
                                                 "embeddings are averaged")
    temperature: float | None = option(None, "softmax temperature over the cosines; none: fitted on labeled examples "
                                             f"where there are any (log-loss), else {DEFAULT_TEMPERATURE}", **POSITIVE)
    center: bool = option(False, "subtract the mean embedding of the unlabeled texts from texts and labels "
                                 "(measured: +1 point on banking77, -12 on sms_spam, whose mean is the majority class)")
    self_training: bool = option(True, "move each label vector towards the unlabeled texts it claims most "
                                       "confidently")
    rounds: int = option(3, "self-training rounds", low=1)
    confident_fraction: float = option(0.5, "share of each label's texts, by margin, that self-training averages",
                                       low=0.0, low_open=True, high=1.0)
    anchor: float = option(0.25, "weight of the label's own vector beside the mean of its texts in self-training",
                           **NON_NEGATIVE)
    max_texts: int = option(5000, "unlabeled texts used at most for self-training (a random sample beyond)", low=1)
    batch_size: int = option(64, "texts per encoder batch", **POSITIVE)


class ZeroShot(Strategy):
    """Nearest label by cosine between a text and the label names (or descriptions); no labeled examples needed."""

    name = "zeroshot"
    Config = ZeroShotConfig

    def fit(self, X=None, y=None) -> ZeroShot:
        """With ``y``: labels are the class names and their texts are used unlabeled (the labels fit only the
        temperature). Without: ``config={"labels": [...]}`` names the classes and ``X`` (may be empty) is unlabeled
        text."""
        if y is not None:
            return super().fit(X, y)
        from ..data import as_texts

        cfg = self.config_
        if not cfg.labels:
            raise ConfigError("zero-shot without labeled examples needs the label names",
                              hint="--labels 'World,Sports,…' (API: config={'labels': [...]})")
        texts = as_texts(X) if X is not None and len(X) else []
        if texts:
            from ..data.media import infer_modality

            modality = infer_modality(texts[:50])
            if modality != "text":
                raise ConfigError(f"strategy 'zeroshot' works on text, and these inputs are {modality} files",
                                  hint="zero-shot needs a text backbone and text inputs")
        self.classes_ = np.asarray(sorted(parse_labels(cfg.labels)))
        self._fit_scores(texts, None, cfg)
        return self

    def _fit(self, texts, y, cfg: ZeroShotConfig) -> None:
        if cfg.labels and sorted(map(str, cfg.labels)) != sorted(map(str, self.classes_)):
            raise ConfigError("option labels names other labels than the data's",
                              hint="drop the labels option: with labeled data the labels come from the data")
        self._fit_scores(texts, y, cfg)

    def _fit_scores(self, texts, y, cfg: ZeroShotConfig) -> None:
        backbone = self._backbone()
        if backbone.modality != "text":
            raise ConfigError(f"zero-shot embeds label names, and backbone '{backbone.name}' takes {backbone.modality}",
                              hint="use a text backbone")
        descriptions = check_descriptions(cfg.label_descriptions, self.classes_) if cfg.label_descriptions else None
        base = label_matrix(backbone, self.classes_, descriptions, cfg.templates, cfg.batch_size)
        sample = texts
        if len(texts) > cfg.max_texts:
            rng = np.random.default_rng(self.seed)
            sample = [texts[i] for i in sorted(rng.choice(len(texts), cfg.max_texts, replace=False))]
        feats = backbone.encode(sample, batch_size=cfg.batch_size) if sample else None
        self.center_ = (_normalise(feats).mean(axis=0) if feats is not None and cfg.center
                        else np.zeros(base.shape[1])).astype(np.float32)
        labels = base
        if feats is not None and cfg.self_training and len(sample) >= 2 * len(self.classes_):
            labels = self_train(feats, base, self.center_, cfg.rounds, cfg.confident_fraction, cfg.anchor)
        self.label_emb_ = labels.astype(np.float32)
        self.temperature_ = float(cfg.temperature or DEFAULT_TEMPERATURE)
        if cfg.temperature is None and y is not None and texts:
            self.temperature_ = fit_temperature(self.scores(texts), np.asarray(y))

    def scores(self, texts) -> np.ndarray:
        """Cosine of each text with each label, (texts, classes)."""
        feats = self._backbone().encode(list(texts), batch_size=self.config_.batch_size)
        return cosine_scores(feats, self.label_emb_, self.center_)

    def _predict_proba(self, texts) -> np.ndarray:
        return softmax(self.scores(texts) / self.temperature_)

    def get_state(self):
        return ({"zeroshot.labels": self.label_emb_, "zeroshot.center": self.center_},
                {"temperature": self.temperature_})

    def _set_state(self, tensors, meta) -> None:
        self.label_emb_ = np.asarray(tensors["zeroshot.labels"], np.float32)
        self.center_ = np.asarray(tensors["zeroshot.center"], np.float32)
        if self.label_emb_.shape[0] != len(self.classes_) or self.center_.shape != self.label_emb_.shape[1:]:
            raise ValueError(f"{self.label_emb_.shape[0]} label vectors for {len(self.classes_)} labels")
        self.temperature_ = float(meta.get("temperature", DEFAULT_TEMPERATURE))


# --- label names as a prior for a model trained on labeled examples -----------------------------------------------

PRIOR_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
FEW_SHOT_WEIGHT = 0.5  # where no fold can be held out (a class with one example)
PRIOR_ANCHOR = 0.5  # the label name's vector beside the mean of its labeled examples (measured: 0.5 best of 0-2)


def choose_prior_weight(model_proba: np.ndarray, prior_proba: np.ndarray, y: np.ndarray,
                        weights=PRIOR_WEIGHTS, slack: int = 1) -> tuple[float, dict]:
    """The weight of the prior in ``(1 - w) * model + w * prior``: the smallest whose out-of-fold accuracy is
    within ``slack`` examples of the best. The folds' models saw a third fewer labels than the final one, which
    flatters the prior, and on a few dozen examples one more item right is no evidence: sms_spam at 8 per class,
    lora 14 of 16 alone and 15 at weight 0.7, then 0.983 alone on the test split and 0.896 blended."""
    rows = np.arange(len(y))
    hits, table = {}, {}
    for w in weights:
        blend = (1 - w) * model_proba + w * prior_proba
        hits[w] = int(np.sum(blend.argmax(1) == y))
        table[str(w)] = {"accuracy": hits[w] / max(len(y), 1),
                         "log_loss": float(-np.mean(np.log(blend[rows, y].clip(1e-9))))}
    best = max(hits.values())
    return min(w for w in weights if hits[w] >= best - slack), table


def anchored_prototypes(names: np.ndarray, feats: np.ndarray, y: np.ndarray, anchor: float = PRIOR_ANCHOR,
                        unlabeled: np.ndarray | None = None) -> np.ndarray:
    """Each class's vector: its label name's (weight ``anchor``) plus the mean of its labeled examples, then
    self-training on ``unlabeled`` texts where there are any. A nearest-centroid classifier that starts from the
    label names: the label embeddings as the starting point of a model of the labeled data."""
    feats = _normalise(feats)
    out = []
    for c in range(len(names)):
        mine = feats[y == c]
        out.append(_normalise(anchor * names[c] + (mine.mean(axis=0) if len(mine) else 0.0)))
    protos = np.stack(out)
    if unlabeled is not None and len(unlabeled) >= 2 * len(names):
        protos = self_train(unlabeled, protos, np.zeros(protos.shape[1]), 3, 0.5, 1.0)
    return protos


def fit_label_prior(auto, texts, y: np.ndarray, chosen: str, descriptions=None, unlabeled=None) -> None:
    """Give ``auto`` (fitted, ``chosen_`` set) a prior from its label names when they are words.

    The prior is a nearest-centroid model whose class vectors start at the label names' embeddings
    (:func:`anchored_prototypes`; self-trained on ``unlabeled`` texts where given). Its weight comes from the
    race's out-of-fold probabilities of the chosen strategy (the folds it ran) beside the prior's out-of-fold
    scores, built on the same folds; weight 1 is the prior alone, 0 the model alone. Sets ``prior_``,
    ``prior_weight_``, ``prior_cv_`` and adds a sentence to ``reason_``.
    """
    from .._logging import info

    classes = auto.classes_
    auto.prior_ = None
    shown = ", ".join(map(str, classes[:4])) + (" …" if len(classes) > 4 else "")
    if not label_names_are_words(classes):
        info(f"label names look like codes ({shown}): not used as a zero-shot prior")
        return
    info(f"label names are words ({shown}): using them as a zero-shot prior (--no-label-names turns it off)")
    backbone = auto._backbone()
    config = {"label_descriptions": descriptions, "self_training": False}
    names = ZeroShot(backbone=auto.backbone, config=dict(config, labels=tuple(map(str, classes))),
                     seed=auto.seed).fit([]).label_emb_
    feats = _normalise(backbone.encode(list(texts)))
    pool = _normalise(backbone.encode(list(unlabeled))) if unlabeled else None
    folds = getattr(auto, "_fold_proba", {}).get(chosen, [])
    prior = ZeroShot(backbone=auto.backbone, config=config, seed=auto.seed)
    prior.classes_, prior.center_ = classes, np.zeros(names.shape[1], np.float32)
    prior.label_emb_ = anchored_prototypes(names, feats, y, unlabeled=pool).astype(np.float32)
    if folds:
        idx = np.concatenate([f[0] for f in folds])
        model_proba = np.zeros((len(idx), len(classes)))
        scores = np.zeros((len(idx), len(classes)))
        row = 0
        for val_idx, fold_classes, proba in folds:
            cols = np.searchsorted(classes, fold_classes)
            model_proba[row:row + len(val_idx)][:, cols] = proba
            train_idx = np.setdiff1d(np.arange(len(texts)), val_idx)
            scores[row:row + len(val_idx)] = feats[val_idx] @ anchored_prototypes(
                names, feats[train_idx], y[train_idx], unlabeled=pool).T
            row += len(val_idx)
        prior.temperature_ = fit_temperature(scores, y[idx])
        weight, table = choose_prior_weight(model_proba, softmax(scores / prior.temperature_), y[idx])
        alone, zero = table["0.0"]["accuracy"], table["1.0"]["accuracy"]
        auto.reason_ += (f"; label names: prior weight {weight:g} (out-of-fold accuracy "
                         f"{table[str(weight)]['accuracy']:.3f}; {chosen} alone {alone:.3f}, label-name centroids "
                         f"alone {zero:.3f})")
    else:
        prior.temperature_ = fit_temperature(feats @ prior.label_emb_.T, y)
        weight, table = FEW_SHOT_WEIGHT, {}
        auto.reason_ += f"; label names: prior weight {weight:g} (too few examples to choose it)"
    if weight == 0.0:
        return
    auto.prior_, auto.prior_weight_, auto.prior_cv_ = prior, float(weight), table


def with_label_prior(auto, proba: np.ndarray, texts) -> np.ndarray:
    """The chosen model's probabilities, blended with the zero-shot prior where ``auto`` has one."""
    prior = getattr(auto, "prior_", None)
    if prior is None:
        return proba
    w = auto.prior_weight_
    return (1 - w) * proba + w * prior.predict_proba(texts)


def label_prior_state(auto) -> tuple[dict, dict]:
    prior = getattr(auto, "prior_", None)
    if prior is None:
        return {}, {}
    tensors, meta = prior.get_state()
    return ({f"prior.{k}": v for k, v in tensors.items()},
            {"prior": {"weight": auto.prior_weight_, "cv": auto.prior_cv_, "meta": meta,
                       "config": prior.config_dict()}})


def load_label_prior(auto, tensors: dict, meta: dict) -> dict:
    """Rebuild ``auto.prior_`` from a saved state; returns the tensors that are not the prior's."""
    own = {k: v for k, v in tensors.items() if not k.startswith("prior.")}
    auto.prior_ = None
    saved = meta.get("prior")
    if saved:
        auto.prior_ = ZeroShot.from_state(backbone=auto.backbone, config=saved["config"], seed=auto.seed,
                                          classes=auto.classes_, meta=saved["meta"],
                                          tensors={k[len("prior."):]: v for k, v in tensors.items()
                                                   if k.startswith("prior.")})
        auto.prior_weight_, auto.prior_cv_ = float(saved["weight"]), saved.get("cv", {})
    return own
