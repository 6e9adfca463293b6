"""Full fine-tuning: every backbone weight and a new classification head, with early stopping.

Text, image and audio backbones alike: for images and audio (PyTorch backbones) it adds augmentation, learning
rates that shrink with depth (``layer_decay``), batch-norm statistics kept as pretrained, and its own defaults
(``MEDIA_DEFAULTS``) for the options left unset, since a CNN step on 224 px images costs far more than a text one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .base import Strategy, balanced_class_weight, register_strategy


@dataclass
class FinetuneConfig:
    learning_rate: float = field(default=5e-5, metadata={"help": "learning rate of the backbone"})
    head_learning_rate: float = field(default=2e-3, metadata={
        "help": "learning rate of the new head (discriminative: the head starts from random, the body does not)"})
    epochs: int = field(default=10, metadata={"help": "epochs, raised until at least min_steps optimizer steps"})
    min_steps: int = field(default=100, metadata={
        "help": "at least this many optimizer steps: few-shot sets otherwise get too few updates to learn"})
    max_epochs: int = field(default=40, metadata={"help": "upper bound on epochs after the min_steps rule"})
    batch_size: int = field(default=16, metadata={"help": "examples per optimizer step"})
    max_length: int = field(default=128, metadata={"help": "tokens per text; longer texts are truncated"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps with linear learning-rate warm-up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    patience: int = field(default=3, metadata={"help": "epochs without validation gain before stopping"})
    validation_fraction: float = field(default=0.15, metadata={
        "help": "share of each class held out for early stopping (skipped when a class has under 5 examples)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout before the head"})
    class_weight: str | None = field(default="balanced", metadata={"help": "'balanced' or None"})
    head_init: str = field(default="probe", metadata={
        "help": "'probe' starts the head from logistic regression on the frozen (cached) features, then tunes "
                "everything (LP-FT, Kumar et al. 2022: less feature distortion, fewer steps); 'random' as usual"})
    head_warmup_epochs: int = field(default=0, metadata={
        "help": "images/audio: epochs training the head alone (body frozen) before unfreezing; images/audio "
                "default 1 with head_init=random (head_init=probe is the closed-form warm-up)"})
    layer_decay: float = field(default=0.5, metadata={
        "help": "images/audio: the body's learning rate in 4 slices by depth, each earlier slice this many times "
                "the next (discriminative learning rates); 1 for one rate"})
    augment: bool = field(default=True, metadata={
        "help": "images/audio: random crops, flips, colour (images); time shift, gain, noise (audio)"})


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


@register_strategy
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
        from ._torch import SequenceClassifier, load_encoder

        backbone = self._backbone()
        if backbone.modality != "text":
            from ._media import MediaClassifier

            return None, MediaClassifier(backbone.module(), backbone.dim, n_classes, dropout=cfg.dropout)
        tokenizer, encoder, dim = load_encoder(backbone)
        return tokenizer, SequenceClassifier(encoder, dim, n_classes, dropout=cfg.dropout)

    def _param_groups(self, model, cfg):
        return [
            {"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": cfg.learning_rate,
             "weight_decay": cfg.weight_decay},
            {"params": list(model.head.parameters()), "lr": cfg.head_learning_rate, "weight_decay": 0.0},
        ]

    def _fit(self, texts, y, cfg) -> None:
        from ._torch import Tokenized, TrainPlan, train_classifier

        if self._is_media():
            return self._fit_media(texts, y, media_config(cfg, self.media_keep, self.config))
        n_classes = len(self.classes_)
        self._tokenizer, self._model = self._build(n_classes, cfg)
        data = Tokenized(self._tokenizer, texts, cfg.max_length)
        plan = TrainPlan(epochs=cfg.epochs, batch_size=cfg.batch_size, min_steps=cfg.min_steps,
                         max_epochs=cfg.max_epochs, warmup_ratio=cfg.warmup_ratio, patience=cfg.patience,
                         validation_fraction=cfg.validation_fraction)
        weight = balanced_class_weight(y, n_classes) if cfg.class_weight == "balanced" else None
        if cfg.head_init == "probe":
            self._init_head_from_probe(texts, y, cfg)
        elif cfg.head_init != "random":
            raise ConfigError(f"head_init must be 'probe' or 'random', not '{cfg.head_init}'")
        self.training_ = train_classifier(self._model, data, y, param_groups=self._param_groups(self._model, cfg),
                                          plan=plan, class_weight=weight, seed=self.seed,
                                          description=f"training ({self.name})")

    def _fit_media(self, paths, y, cfg) -> None:
        from ._media import discriminative_groups, media_inputs, train_media_classifier
        from ._torch import TrainPlan

        backbone = self._backbone()
        n_classes = len(self.classes_)
        self._tokenizer, self._model = self._build(n_classes, cfg)
        if cfg.head_init == "probe":
            self._init_head_from_probe(paths, y, cfg)
        elif cfg.head_init != "random":
            raise ConfigError(f"head_init must be 'probe' or 'random', not '{cfg.head_init}'")
        inputs = media_inputs(backbone, paths)
        if not cfg.augment:
            inputs.train_batch = lambda idx, gen: inputs.backbone.to_tensor(
                inputs.pixels[list(idx)] if backbone.modality == "image"
                else [inputs.waves[int(i)][:inputs.crop] for i in idx])
        plan = TrainPlan(epochs=cfg.epochs, batch_size=cfg.batch_size, min_steps=cfg.min_steps,
                         max_epochs=cfg.max_epochs, warmup_ratio=cfg.warmup_ratio, patience=cfg.patience,
                         validation_fraction=cfg.validation_fraction)
        weight = balanced_class_weight(y, n_classes) if cfg.class_weight == "balanced" else None
        groups = discriminative_groups(self._model, cfg.learning_rate, cfg.head_learning_rate, cfg.weight_decay,
                                       cfg.layer_decay)
        self.training_ = train_media_classifier(self._model, inputs, y, param_groups=groups, plan=plan,
                                                class_weight=weight, seed=self.seed,
                                                description=f"training ({self.name})",
                                                head_warmup_epochs=cfg.head_warmup_epochs)
        self.training_["effective_config"] = dataclasses.asdict(cfg)  # with the image/audio defaults applied

    def _init_head_from_probe(self, texts, y, cfg) -> None:
        """Logistic regression on the frozen features becomes the head's starting point."""
        import torch

        from ._linear import fit_logistic

        if not self._is_media():
            pooling, normalise = self._backbone().pooling()
            if self._model.encoder.pooling != pooling or self._model.encoder.normalise != normalise:
                return  # frozen features would not match what the encoder outputs
        feats = self._backbone().encode(texts)
        coef, intercept, _ = fit_logistic(feats, y, seed=self.seed, C=None, class_weight=cfg.class_weight)
        if coef.shape[0] == 1:  # binary: sigmoid(w.x + b) == softmax([-w/2, w/2] . x + [-b/2, b/2])
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        with torch.no_grad():
            self._model.head.weight.copy_(torch.from_numpy(coef))
            self._model.head.bias.copy_(torch.from_numpy(intercept))

    def _predict_proba(self, texts) -> np.ndarray:
        from ._torch import Tokenized, predict_logits

        if self._is_media():
            from ._media import media_inputs, media_logits

            inputs = media_inputs(self._backbone(), texts)
            return media_logits(self._model, inputs).softmax(-1).numpy().astype(np.float64)
        data = Tokenized(self._tokenizer, texts, self.config_.max_length)
        return predict_logits(self._model, data).softmax(-1).numpy().astype(np.float64)

    def get_state(self):
        from ._torch import to_numpy_state

        return to_numpy_state(self._model.state_dict(), self._state_prefix), {"training": self.training_}

    def _set_state(self, tensors, meta) -> None:
        from ._torch import from_numpy_state

        cfg = media_config(self.config_, self.media_keep, self.config) if self._is_media() else self.config_
        self._tokenizer, self._model = self._build(len(self.classes_), cfg)
        self._model.load_state_dict(from_numpy_state(tensors, self._state_prefix))
        self._model.eval()
        self.training_ = meta.get("training", {})
