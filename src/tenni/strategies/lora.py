"""LoRA (PEFT): low-rank adapters in the attention projections + a classification head.

Only the adapters and the head train, and only they are saved: the artifact is a few hundred KB on top of the
base backbone, which is checked by hash when the model is loaded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..config import POSITIVE, SHARE, option
from ..errors import ConfigError
from .finetune import FineTune, FinetuneConfig


@dataclass
class LoraConfig(FinetuneConfig):
    r: int = option(8, "rank of the low-rank update", **POSITIVE)
    alpha: int = option(16, "LoRA scaling numerator (update scaled by alpha / r)", **POSITIVE)
    lora_dropout: float = option(0.1, "dropout on the LoRA input", **SHARE)
    target_modules: tuple = option(("query", "value"), "names of the linear layers that get adapters "
                                                        "(comma-separated on the CLI)")
    learning_rate: float = option(1e-3, "learning rate of the adapters", **POSITIVE)


class LoRA(FineTune):
    """Parameter-efficient fine-tuning with PEFT LoRA adapters."""

    name = "lora"
    Config = LoraConfig
    media_keep = ("learning_rate",)

    def _build(self, n_classes: int, cfg):
        from .._context import import_peft

        peft = import_peft()

        backbone = self._backbone()
        if not getattr(backbone, "transformer", True):
            raise ConfigError(f"LoRA adapts a transformer's attention, and '{backbone.name}' is a CNN",
                              hint="use --strategy finetune (or probe), or a transformer backbone such as a ViT")
        tokenizer, model = super()._build(n_classes, cfg)
        targets = _pick_targets(model.encoder.model, tuple(cfg.target_modules))
        lora = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout,
                               target_modules=list(targets), bias="none")
        try:
            with warnings.catch_warnings():  # transformers 5 deprecation notices raised from inside peft
                warnings.simplefilter("ignore", FutureWarning)
                model.encoder.model = peft.get_peft_model(model.encoder.model, lora)
        except ValueError as err:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.encoder.model.named_modules()
                            if type(m).__name__ == "Linear"})
            raise ConfigError(f"LoRA target modules {list(cfg.target_modules)} do not fit this backbone ({err})",
                              hint=f"set target_modules to some of: {', '.join(names)}") from None
        return tokenizer, model

    def get_state(self):
        from peft import get_peft_model_state_dict

        from ._torch import to_numpy_state

        tensors = to_numpy_state(get_peft_model_state_dict(self._model.encoder.model), "lora.")
        tensors.update(to_numpy_state(self._model.head.state_dict(), "head."))
        return tensors, {"training": self.training_, "length": self._length()}

    def _set_state(self, tensors, meta) -> None:
        from peft import set_peft_model_state_dict

        from ._torch import from_numpy_state

        self._tokenizer, self._model = self._build(len(self.classes_), self._effective_config(self.config_))
        set_peft_model_state_dict(self._model.encoder.model, from_numpy_state(tensors, "lora."))
        self._model.head.load_state_dict(from_numpy_state(tensors, "head."))
        self._model.eval()
        self.training_ = meta.get("training", {})
        self.length_ = meta.get("length")


DEFAULT_TARGETS = ("query", "value")
_KNOWN_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q", "v"), ("q_lin", "v_lin"), ("qkv",))


def _pick_targets(model, requested: tuple) -> tuple:
    """The default (BERT/ViT names) when they exist; else the first known naming the model uses (wav2vec2 and
    HuBERT call them q_proj/v_proj). Targets the user set are kept as they are."""
    if tuple(requested) != DEFAULT_TARGETS:
        return requested
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
    for known in _KNOWN_TARGETS:
        if set(known) <= names:
            return known
    return requested
