"""Full fine-tuning: every backbone weight and a new classification head, with early stopping.

Text, image and audio backbones alike: for images and audio (PyTorch backbones) it adds augmentation, learning
rates that shrink with depth (``layer_decay``), batch-norm statistics kept as pretrained, and its own defaults
(``MEDIA_DEFAULTS``) for the options left unset, since a CNN step on 224 px images costs far more than a text one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..backbones.length import LengthOptions
from ..config import NON_NEGATIVE, POSITIVE, SHARE, option
from ..errors import ConfigError
from ._linear import CLASS_WEIGHTS
from .base import Strategy, balanced_class_weight


@dataclass
class FinetuneConfig(LengthOptions):
    learning_rate: float = option(5e-5, "learning rate of the backbone", **POSITIVE)
    head_learning_rate: float = option(2e-3, "learning rate of the new head (discriminative: the head starts from "
                                             "random, the body does not)", **POSITIVE)
    epochs: int = option(10, "epochs, raised until at least min_steps optimizer steps", **POSITIVE)
    min_steps: int = option(100, "at least this many optimizer steps: few-shot sets otherwise get too few updates "
                                 "to learn", **NON_NEGATIVE)
    max_epochs: int = option(40, "upper bound on epochs after the min_steps rule", **POSITIVE)
    batch_size: int = option(16, "examples per optimizer step", **POSITIVE)
    warmup_ratio: float = option(0.1, "share of steps with linear learning-rate warm-up", **SHARE)
    weight_decay: float = option(0.01, "AdamW weight decay", **NON_NEGATIVE)
    patience: int = option(3, "epochs without validation gain before stopping", **NON_NEGATIVE)
    validation_fraction: float = option(0.15, "share of each class held out for early stopping (skipped when a "
                                              "class has under 5 examples)", **SHARE)
    dropout: float = option(0.1, "dropout before the head", **SHARE)
    class_weight: str | None = option("balanced", "'balanced' or None", choices=CLASS_WEIGHTS)
    head_init: str = option("probe", "'probe' starts the head from logistic regression on the frozen (cached) "
                                     "features, then tunes everything (LP-FT, Kumar et al. 2022); 'random' as usual",
                            choices=("probe", "random"))
    head_warmup_epochs: int = option(0, "images/audio: epochs training the head alone (body frozen) before "
                                        "unfreezing; images/audio default 1 with head_init=random", **NON_NEGATIVE)
    layer_decay: float = option(0.5, "images/audio: the body's learning rate in 4 slices by depth, each earlier "
                                     "slice this many times the next (discriminative rates); 1 for one rate", **SHARE)
    augment: bool = option(True, "images/audio: random crops, flips, colour (images); time shift, gain, noise (audio)")
    layers: int | None = option(None, "text: keep only the backbone's first N transformer layers, a smaller and "
                                      "faster model (the distilled 'small' student; its head starts from random); "
                                      "none: all", **POSITIVE)


MEDIA_DEFAULTS = {"learning_rate": 2e-4, "head_learning_rate": 1e-3, "epochs": 6, "min_steps": 30, "max_epochs": 15,
                  "patience": 3}
"""Used for images and audio where the option was left at its (text) default."""


def media_config(cfg, keep: tuple = (), given=None):
    """The config with MEDIA_DEFAULTS for the fields the user did not set (except those in ``keep``).

    ``given`` is what the user passed (a dict's keys count as set, even at the text default's value).
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    explicit = set(given) if isinstance(given, dict) else set()
    changes = {k: v for k, v in MEDIA_DEFAULTS.items()
               if k in defaults and k not in keep and k not in explicit and getattr(cfg, k) == defaults[k]}
    if cfg.head_init == "random" and cfg.head_warmup_epochs == 0:
        changes["head_warmup_epochs"] = 1
    return dataclasses.replace(cfg, **changes)


class FineTune(Strategy):
    """Train the whole backbone with a classification head."""

    name = "finetune"
    Config = FinetuneConfig
    needs_trainable_backbone = True
    _state_prefix = "model."
    media_keep: tuple = ()
    """Options whose own default stays for images/audio (LoRA's adapters keep their higher learning rate)."""

    def _is_media(self) -> bool:
        return self._backbone().modality != "text"

    def _build(self, n_classes: int, cfg):
        """(tokenizer or None, the classifier) for the backbone's modality."""
        from ._torch import EncoderClassifier, load_encoder

        backbone = self._backbone()
        if backbone.modality != "text":
            if cfg.layers is not None:
                raise ConfigError(f"option layers cuts a transformer text encoder, and '{backbone.name}' is "
                                  f"{backbone.modality}", hint="leave layers unset for images and audio")
            return None, EncoderClassifier(backbone.module(), backbone.dim, n_classes, dropout=cfg.dropout)
        tokenizer, encoder, dim = load_encoder(backbone, layers=cfg.layers)
        return tokenizer, EncoderClassifier(encoder, dim, n_classes, dropout=cfg.dropout)

    def _param_groups(self, model, cfg):
        if self._is_media():  # learning rates that shrink with depth
            from ._media import discriminative_groups

            return discriminative_groups(model, cfg.learning_rate, cfg.head_learning_rate, cfg.weight_decay,
                                         cfg.layer_decay)
        return [
            {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": cfg.learning_rate,
             "weight_decay": cfg.weight_decay},
            {"params": list(model.head.parameters()), "lr": cfg.head_learning_rate, "weight_decay": 0.0},
        ]

    def _effective_config(self, cfg):
        """Images and audio: their own defaults for the options left unset (``media_config``)."""
        return media_config(cfg, self.media_keep, self.config) if self._is_media() else cfg

    def _inputs(self, items, cfg, augment: bool = True):
        if self._is_media():
            from ._media import media_inputs

            return media_inputs(self._backbone(), items, augment=augment and cfg.augment)
        from ..backbones.length import saved_choice
        from ._torch import TextInputs, Tokenized

        length, truncation = saved_choice(getattr(self, "length_", None), cfg)
        return TextInputs(Tokenized(self._tokenizer, items, length, truncation))

    def fit_soft(self, inputs, targets: np.ndarray, classes) -> FineTune:
        """Fit on soft targets (one probability per class in ``classes`` order): distillation of a teacher. The
        loss is the cross-entropy against the teacher's probabilities; their argmax only picks and scores the
        held-out slice for early stopping."""
        from ..data import as_texts

        targets = np.asarray(targets, dtype=np.float64)
        self.classes_ = np.asarray(classes)
        self._fit(as_texts(inputs), targets.argmax(1), self.config_, soft=targets)
        return self

    def _fit(self, texts, y, cfg, soft: np.ndarray | None = None) -> None:
        import torch

        from ._training import TrainPlan, train_classifier

        cfg = self._effective_config(cfg)
        n_classes = len(self.classes_)
        torch.manual_seed(self.seed)  # the new head (and LoRA's adapters) drawn from the seed, not the process's state
        self._tokenizer, self._model = self._build(n_classes, cfg)
        if not self._is_media():
            from ..backbones.length import choose_for

            self.length_ = choose_for(self._tokenizer, texts, cfg, self._backbone().token_cap, who=self.name,
                                      model_config=self._model.encoder.model.config).as_dict()
        if cfg.head_init == "probe" and cfg.layers is None:  # a cut encoder's features are not the cached ones
            self._init_head_from_probe(texts, y, cfg)
        plan = TrainPlan(epochs=cfg.epochs, batch_size=cfg.batch_size, min_steps=cfg.min_steps,
                         max_epochs=cfg.max_epochs, warmup_ratio=cfg.warmup_ratio, patience=cfg.patience,
                         validation_fraction=cfg.validation_fraction)
        weight = balanced_class_weight(y, n_classes) if cfg.class_weight == "balanced" else None
        inputs = self._inputs(texts, cfg)
        self.training_ = train_classifier(self._model, inputs, y,
                                          param_groups=self._param_groups(self._model, cfg), plan=plan,
                                          class_weight=weight, soft=soft, seed=self.seed,
                                          description=f"training ({self.name})",
                                          head_warmup_epochs=cfg.head_warmup_epochs if self._is_media() else 0)
        if self._is_media():
            self.training_["effective_config"] = dataclasses.asdict(cfg)  # with the image/audio defaults applied
        else:  # tokens through the model in training: auto's time prior is calibrated on it
            share = 1 - plan.validation_fraction if self.training_.get("early_stopping") else 1.0
            self.training_["token_steps"] = int(round(inputs.data.tokens() * share
                                                      * self.training_.get("epochs_run", 1)))

    def _init_head_from_probe(self, texts, y, cfg) -> None:
        """Logistic regression on the frozen features becomes the head's starting point."""
        import torch

        from ._linear import fit_logistic

        if not self._is_media():
            pooling, normalise = self._backbone().pooling()
            if self._model.encoder.pooling != pooling or self._model.encoder.normalise != normalise:
                return  # frozen features would not match what the encoder outputs
        length = getattr(self, "length_", None) if not self._is_media() else None
        feats = (self._backbone().encode(texts, max_length=length["max_length"], truncation=length["truncation"])
                 if length else self._backbone().encode(texts))
        coef, intercept, _ = fit_logistic(feats, y, seed=self.seed, C=None, class_weight=cfg.class_weight)
        if coef.shape[0] == 1:  # binary: sigmoid(w.x + b) == softmax([-w/2, w/2] . x + [-b/2, b/2])
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        with torch.no_grad():
            self._model.head.weight.copy_(torch.from_numpy(coef))
            self._model.head.bias.copy_(torch.from_numpy(intercept))

    def _predict_proba(self, texts) -> np.ndarray:
        inputs = self._inputs(texts, self._effective_config(self.config_), augment=False)
        logits = inputs.eval_logits(self._model, np.arange(len(inputs)))
        return logits.softmax(-1).numpy().astype(np.float64)

    def get_state(self):
        from ._torch import to_numpy_state

        return to_numpy_state(self._model.state_dict(), self._state_prefix), {"training": self.training_,
                                                                               "length": self._length()}

    def _set_state(self, tensors, meta) -> None:
        from ._torch import from_numpy_state

        self._tokenizer, self._model = self._build(len(self.classes_), self._effective_config(self.config_))
        self._model.load_state_dict(from_numpy_state(tensors, self._state_prefix))
        self._model.eval()
        self.training_ = meta.get("training", {})
        self.length_ = meta.get("length")

    def _length(self) -> dict | None:
        return getattr(self, "length_", None)
