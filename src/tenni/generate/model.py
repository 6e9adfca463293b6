"""A text-to-text model: a causal LM, how it is prompted, and (for lora/qlora) the trained adapter.

Strategies:
- ``prompt``: no training; zero-shot, or k-shot with the k training examples most similar to the input (MiniLM
  embeddings), dropped least-similar first until the prompt fits the context;
- ``lora``: PEFT LoRA adapters on every linear projection (attention and MLP), loss on output tokens only;
- ``qlora``: the same adapters over a 4-bit base, with gradient checkpointing: a fraction of the memory. The base
  is NF4 (bitsandbytes), or, for a model expanded from a Q4 GGUF, its own 4-bit blocks (:mod:`.quant4`, exact).

Saved as a tenni model folder: the adapter (safetensors), the manifest (strategy, config, the backbone's weight
fingerprint, the instruction, the k-shot pool) and ``generation_config.json``; loading runs no code from it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelFileError
from .backbone import DEFAULT_LLM, context_length, fingerprint, load_causal_lm, locate_llm
from .data import Pairs, as_pairs
from .engine import Decoding, Formatter, check_lengths, generate, mean_token_loss, train_adapter

STRATEGIES = ("prompt", "lora", "qlora")
DEFAULT_RETRIEVER = "text/minilm"


@dataclass
class PromptConfig:
    k: int = 3
    retriever: str = DEFAULT_RETRIEVER
    max_length: int = 2048


@dataclass
class AdapterConfig:
    r: int = 16
    alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    epochs: int = 3
    min_steps: int = 60
    max_epochs: int = 20
    max_steps: int = 0
    batch_size: int = 8
    patience: int = 2
    val_fraction: float = 0.1
    max_length: int = 1024
    budget: float = 0.0
    gradient_checkpointing: bool = False
    checkpoint_dir: str = ""
    k: int = 0
    retriever: str = DEFAULT_RETRIEVER
    quant: str = "auto"
    """qlora's 4-bit base: nf4 (bitsandbytes), q4 (affine blocks of 32, :mod:`.quant4`), or auto: q4 for a base
    expanded from a Q4 GGUF (its own blocks, exactly), nf4 otherwise."""


QUANTS = ("auto", "nf4", "q4")

_RANGES = {"k": (0, 64), "r": (1, 1024), "alpha": (1, 4096), "lora_dropout": (0.0, 0.9),
           "learning_rate": (1e-7, 1.0), "weight_decay": (0.0, 1.0), "epochs": (1, 1000), "min_steps": (0, 10 ** 6),
           "max_epochs": (1, 1000), "max_steps": (0, 10 ** 7), "batch_size": (1, 1024), "patience": (1, 100),
           "val_fraction": (0.0, 0.5), "max_length": (16, 1 << 20), "budget": (0.0, 1e7)}


def make_config(strategy: str, values: dict | None):
    """The strategy's config from defaults + overrides (CLI strings are coerced; unknown keys refused)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown generation strategy '{strategy}'", hint=f"use one of: {', '.join(STRATEGIES)}")
    cls = PromptConfig if strategy == "prompt" else AdapterConfig
    base = cls() if strategy != "qlora" else cls(gradient_checkpointing=True)
    known = {f.name: f for f in fields(cls)}
    out = asdict(base)
    for key, value in (values or {}).items():
        if key not in known:
            raise ConfigError(f"'{key}' is not an option of strategy '{strategy}'",
                              hint=f"options: {', '.join(known)}")
        kind = type(getattr(base, key))
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                value = value.lower() in ("1", "true", "yes", "on")
            elif kind is int and isinstance(value, str):
                value = int(float(value)) if float(value).is_integer() else int(value)
            else:
                value = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a {kind.__name__}", hint=f"e.g. --set {key}="
                              f"{getattr(base, key)}") from None
        low, high = _RANGES.get(key, (None, None))
        if low is not None and not low <= value <= high:
            raise ConfigError(f"{key}={value} is outside [{low}, {high}]", hint=f"default: {getattr(base, key)}")
        if key == "quant" and value not in QUANTS:
            raise ConfigError(f"quant={value!r} is not one of {', '.join(QUANTS)}", hint="e.g. --set quant=nf4")
        out[key] = value
    return cls(**out)


class Generator:
    """Generates outputs for inputs; ``fit`` trains it (or, for ``prompt``, only keeps the example pool)."""

    task = "generate"
    modality = "text"

    def __init__(self, strategy: str = "lora", backbone: str = DEFAULT_LLM, config: dict | None = None, *,
                 instruction: str | None = None, decoding: Decoding | dict | None = None, seed: int = 0):
        self.strategy = strategy
        self.config = make_config(strategy, config)
        self.backbone_name = backbone
        self.instruction = instruction.strip() if instruction and instruction.strip() else None
        self.decoding = (Decoding(**decoding) if isinstance(decoding, dict) else decoding or Decoding()).check()
        self.seed = seed
        self.training: dict = {}
        self.metrics: dict = {}
        self.data_summary: dict = {}
        self.shots: Pairs | None = None
        self._shot_embeddings: np.ndarray | None = None
        self._model = self._tokenizer = self._formatter = None
        self.fingerprint: str | None = None
        self.backbone_path: Path | None = None

    # -- loading the base ------------------------------------------------------------------------------------
    def _load_base(self, base=None):
        name, path = locate_llm(self.backbone_name)
        self.backbone_name, self.backbone_path = name, path
        self.fingerprint = fingerprint(path)
        if base is not None and self.strategy != "qlora":
            model, tokenizer = base
        else:
            if self.strategy == "qlora" and self.config.quant == "auto":  # fixed at fit: a loaded model rebuilds it
                from .backbone import native_q4

                self.config.quant = "q4" if native_q4(path) else "nf4"
            model, tokenizer = load_causal_lm(path, quantize=self.config.quant if self.strategy == "qlora" else None)
        self._model, self._tokenizer = model, tokenizer
        self._formatter = Formatter(tokenizer)
        return model

    @property
    def context(self) -> int:
        return min(context_length(self._model, self._tokenizer), self.config.max_length)

    def _peft(self, model):
        import warnings

        from .._context import import_peft

        peft = import_peft()
        cfg = self.config
        targets = cfg.target_modules if cfg.target_modules == "all-linear" else \
            [t.strip() for t in cfg.target_modules.split(",") if t.strip()]
        q4 = self.strategy == "qlora" and cfg.quant == "q4"
        if q4 and targets == "all-linear":  # PEFT's all-linear finds nn.Linear only
            from .quant4 import q4_target_names

            targets = q4_target_names(model)
        lora = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                               bias="none", task_type="CAUSAL_LM")
        if q4:
            from peft.tuners.lora.layer import Linear as LoraLinear

            from .quant4 import Q4Linear

            lora._register_custom_module({Q4Linear: LoraLinear})  # LoRA's own Linear wraps any module with a weight
        if self.strategy == "qlora" and not q4:
            model = peft.prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        elif cfg.gradient_checkpointing:  # lora, and qlora on q4 blocks (frozen buffers, nothing to cast)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return peft.get_peft_model(model, lora)
        except ValueError as err:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if "Linear" in type(m).__name__})
            raise ConfigError(f"LoRA target modules {cfg.target_modules!r} do not fit this model ({err})",
                              hint=f"set target_modules to all-linear or some of: {', '.join(names[:12])}") from None

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data, *, base=None, input_col=None, output_col=None, encoding="auto") -> Generator:
        import torch

        pairs = as_pairs(data, input_col=input_col, output_col=output_col, encoding=encoding)
        torch.manual_seed(self.seed)
        started = time.perf_counter()
        model = self._load_base(base)
        self.shots = pairs if self.config.k > 0 else None
        if self.shots is not None:
            self._shot_embeddings = self._embed(self.shots.inputs)
        if self.strategy != "prompt":
            encoded = [self._formatter.example_ids(self._conversation(c), o)
                       for c, o in zip(pairs.conversations, pairs.outputs)]
            check_lengths(encoded, pairs.sources, self.context)
            val_n = 0
            if self.config.val_fraction > 0 and len(encoded) >= 20:
                val_n = min(64, max(4, round(self.config.val_fraction * len(encoded))))
            order = np.random.default_rng(self.seed).permutation(len(encoded))
            val = [encoded[i] for i in order[:val_n]]
            train = [encoded[i] for i in order[val_n:]]
            self._model = self._peft(model)
            key = self._checkpoint_key(pairs)
            ckpt = Path(self.config.checkpoint_dir) if self.config.checkpoint_dir else None
            self.training = train_adapter(self._model, train, val, self._pad_id(), self.config, checkpoint=ckpt,
                                          key=key, seed=self.seed)
        self.training["seconds"] = round(time.perf_counter() - started, 3)
        self.data_summary = {"train_size": len(pairs), "source": pairs.path, "columns": pairs.columns}
        return self

    def _checkpoint_key(self, pairs: Pairs) -> str:
        import hashlib

        digest = hashlib.sha256(json.dumps([pairs.conversations, pairs.outputs, self.instruction, self.strategy,
                                            asdict(self.config) | {"checkpoint_dir": "", "budget": 0},
                                            self.fingerprint, self.seed]).encode())
        return digest.hexdigest()

    def _pad_id(self) -> int:
        tok = self._tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else self._formatter.stop_ids[0]

    # -- prompting -------------------------------------------------------------------------------------------
    def _conversation(self, conversation: list[dict]) -> list[dict]:
        if not self.instruction:
            return conversation
        last = conversation[-1]
        return conversation[:-1] + [{"role": "user", "content": f"{self.instruction}\n\n{last['content']}"}]

    def _embed(self, texts: list[str]) -> np.ndarray:
        from ..backbones import get_backbone

        emb = get_backbone(self.config.retriever).encode(texts, show_progress=False).astype(np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def _prompts(self, pairs: Pairs, room: int) -> list[list[int]]:
        convs = [self._conversation(c) for c in pairs.conversations]
        k = self.config.k if self.shots is not None else 0
        if k == 0:
            prompts = [self._formatter.prompt_ids(c) for c in convs]
            check_lengths([(p, None) for p in prompts], pairs.sources, self.context, 1)
            return prompts
        sims = self._embed(pairs.inputs) @ self._shot_embeddings.T
        prompts = []
        for row, conv in enumerate(convs):
            best = [int(i) for i in np.argsort(-sims[row], kind="stable")
                    if not _same(self.shots.conversations[int(i)], pairs.conversations[row])][:k]
            chosen = best[::-1]  # the most similar example nearest the input
            while True:
                shots = []
                for i in chosen:
                    shots += self._conversation(self.shots.conversations[i])
                    shots.append({"role": "assistant", "content": self.shots.outputs[i]})
                ids = self._formatter.prompt_ids(shots + conv)
                if len(ids) + room <= self.context or not chosen:
                    break
                chosen = chosen[1:]  # drop the least similar example until it fits
            check_lengths([(ids, None)], [pairs.sources[row]], self.context, 1)
            prompts.append(ids)
        return prompts

    def generate(self, inputs, **decoding) -> list[str]:
        """Outputs for ``inputs`` (a list of strings, Pairs or a file); ``decoding`` overrides the saved options
        (max_new_tokens, temperature, top_p, stop, batch_size, seed)."""
        self._require_fitted()
        pairs = as_pairs(inputs, labeled=False)
        options = Decoding(**{**asdict(self.decoding), **{k: v for k, v in decoding.items() if v is not None}})
        options.check()
        prompts = self._prompts(pairs, options.max_new_tokens)
        return generate(self._model, self._formatter, prompts, options, limit=self.context)

    predict = generate

    def evaluate(self, data, *, input_col=None, output_col=None, encoding="auto", examples: int = 20,
                 **decoding) -> dict:
        """ROUGE-L, exact match and chrF on labeled pairs, the seconds it took and the first ``examples`` rows."""
        from .metrics import text_metrics

        pairs = as_pairs(data, input_col=input_col, output_col=output_col, encoding=encoding)
        started = time.perf_counter()
        outputs = self.generate(pairs, **decoding)
        seconds = time.perf_counter() - started
        scores = text_metrics(outputs, pairs.outputs)
        per = scores.pop("per_example")
        scores["generate_seconds"] = round(seconds, 3)
        scores["examples"] = [{"input": i, "reference": r, "output": o, "rougeL": round(s, 4)}
                              for i, r, o, s in zip(pairs.inputs, pairs.outputs, outputs, per)][:examples]
        return scores

    def token_loss(self, data) -> float:
        """Mean loss per output token (nats) of the model on labeled pairs, prompted as it would be."""
        self._require_fitted()
        pairs = as_pairs(data)
        encoded = [self._formatter.example_ids(self._conversation(c), o)
                   for c, o in zip(pairs.conversations, pairs.outputs)]
        check_lengths(encoded, pairs.sources, self.context)
        return mean_token_loss(self._model, encoded, self._pad_id())

    def _require_fitted(self) -> None:
        if self._model is None:
            raise ConfigError("the generator is not fitted", hint="call fit() first, or load a saved model")

    @property
    def label(self) -> str:
        if self.strategy == "prompt":
            return f"prompt ({self.config.k}-shot)" if self.config.k else "prompt (zero-shot)"
        return self.strategy

    # -- saving and loading ----------------------------------------------------------------------------------
    def adapter_state(self) -> dict[str, np.ndarray]:
        tensors: dict[str, np.ndarray] = {}
        if self.strategy != "prompt":
            from peft import get_peft_model_state_dict

            for k, v in get_peft_model_state_dict(self._model).items():
                tensors["lora." + k] = v.detach().float().cpu().numpy()
        if self._shot_embeddings is not None:
            tensors["shots.embeddings"] = self._shot_embeddings
        return tensors

    def _saved_config(self) -> dict:
        """The options as saved: where checkpoints went is a fact of the run, not of the model."""
        config = asdict(self.config)
        if "checkpoint_dir" in config:
            config["checkpoint_dir"] = ""
        return config

    def manifest(self) -> dict:
        return {
            "task": "generate",
            "labels": [],
            "strategy": {"name": self.strategy, "config": self._saved_config(), "state": {}},
            "backbone": {"name": self.backbone_name, "fingerprint": self.fingerprint},
            "instruction": self.instruction,
            "generation": self.decoding.to_dict(),
            "shots": None if self.shots is None else {"conversations": self.shots.conversations,
                                                      "outputs": self.shots.outputs},
            "training": self.training,
            "metrics": self.metrics,
            "data": self.data_summary,
            "seed": self.seed,
        }

    def save(self, path: str | Path) -> Path:
        from ..artifacts import write_model_dir
        from .card import model_card

        self._require_fitted()
        generation = {"max_new_tokens": self.decoding.max_new_tokens,
                      "do_sample": self.decoding.temperature > 0, "temperature": self.decoding.temperature,
                      "top_p": self.decoding.top_p, "stop_strings": self.decoding.stop,
                      "eos_token_id": self._formatter.stop_ids, "pad_token_id": self._pad_id()}
        extra = {"generation_config.json": json.dumps(generation, indent=2) + "\n"}
        return write_model_dir(path, self.manifest(), self.adapter_state(), model_card(self), extra_files=extra)

    @classmethod
    def load(cls, path: str | Path, *, backbone: str | None = None) -> Generator:
        from ..artifacts import read_model_dir

        manifest, tensors = read_model_dir(path)
        check_generate_manifest(manifest, Path(path))
        strategy = manifest["strategy"]
        config = dict(strategy["config"] or {})
        if strategy["name"] == "qlora":
            config.setdefault("quant", "nf4")  # saved before the option existed: trained over NF4
        self = cls(strategy["name"], backbone or manifest["backbone"]["name"], config,
                   instruction=manifest.get("instruction"), decoding=manifest.get("generation"),
                   seed=manifest.get("seed", 0))
        self.training, self.metrics = manifest.get("training", {}), manifest.get("metrics", {})
        self.data_summary = manifest.get("data", {})
        model = self._load_base()
        expected = manifest["backbone"].get("fingerprint")
        if expected and self.fingerprint != expected:
            raise ModelFileError(f"the base model '{self.backbone_name}' has other weights than the model was "
                                 "trained on", path=path,
                                 hint="pass --backbone with the folder of the original base model")
        if manifest.get("shots"):
            self.shots = Pairs(manifest["shots"]["conversations"], manifest["shots"]["outputs"],
                               [f"shot {i}" for i in range(len(manifest["shots"]["outputs"]))])
            self._shot_embeddings = tensors.get("shots.embeddings")
            if self._shot_embeddings is None or len(self._shot_embeddings) != len(self.shots):
                raise ModelFileError("the k-shot pool and its embeddings do not match", path=path,
                                     hint="re-run `tenni fit`")
        if self.strategy != "prompt":
            import torch
            from peft import set_peft_model_state_dict

            self._model = self._peft(model)
            state = {k[5:]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()
                     if k.startswith("lora.")}
            result = set_peft_model_state_dict(self._model, state)
            unexpected = getattr(result, "unexpected_keys", [])
            if not state or unexpected:
                raise ModelFileError(f"the adapter does not fit the base model ({len(unexpected)} unexpected "
                                     "tensors)", path=path, hint="load it with the base model it was trained on")
            self._model.eval()
        return self

    def merge(self, output: str | Path) -> Path:
        """Write the base model with the adapter folded into its weights as a Hugging Face folder (safetensors +
        tokenizer + generation config). A qlora adapter is merged into the full-precision base."""
        from .._paths import AtomicDirectory
        from .backbone import _quiet_transformers

        self._require_fitted()
        if self.strategy == "prompt":
            raise ConfigError("a prompt model has no trained weights to merge",
                              hint="the base model itself is the merged model; merge a lora or qlora model")
        from .._context import import_peft

        peft = import_peft()
        state = peft.get_peft_model_state_dict(self._model)
        base, tokenizer = load_causal_lm(self.backbone_path)
        cfg = self.config
        targets = cfg.target_modules if cfg.target_modules == "all-linear" else \
            [t.strip() for t in cfg.target_modules.split(",") if t.strip()]
        wrapped = peft.get_peft_model(base, peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0,
                                                            target_modules=targets, bias="none",
                                                            task_type="CAUSAL_LM"))
        peft.set_peft_model_state_dict(wrapped, {k: v.float() for k, v in state.items()})
        merged = wrapped.merge_and_unload()
        merged.generation_config.max_new_tokens = self.decoding.max_new_tokens
        merged.generation_config.eos_token_id = self._formatter.stop_ids
        target = AtomicDirectory(output, marker="config.json")
        with target as tmp, _quiet_transformers():
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "tenni-merge.json").write_text(json.dumps({
                "base": self.backbone_name, "base_fingerprint": self.fingerprint, "strategy": self.strategy,
                "instruction": self.instruction, "note": "prepend the instruction to inputs as tenni does"},
                indent=2) + "\n")
        return Path(output)


def _same(a: list[dict], b: list[dict]) -> bool:
    return a == b


def check_generate_manifest(manifest: dict, where: Path) -> None:
    """What loading a generation model relies on, checked before use."""
    strategy = manifest.get("strategy")
    if not isinstance(strategy, dict) or strategy.get("name") not in STRATEGIES or \
            not isinstance(strategy.get("config"), dict):
        raise ModelFileError(f"'strategy' must name one of {', '.join(STRATEGIES)} with its config", path=where,
                             hint="re-run `tenni fit --task generate`")
    backbone = manifest.get("backbone")
    if not isinstance(backbone, dict) or not isinstance(backbone.get("name"), str):
        raise ModelFileError("'backbone' must name the base model", path=where, hint="re-run `tenni fit`")
    if not isinstance(manifest.get("generation", {}), dict):
        raise ModelFileError("'generation' must be an object of decoding options", path=where)
    shots = manifest.get("shots")
    if shots is not None and (not isinstance(shots, dict) or len(shots.get("conversations") or []) !=
                              len(shots.get("outputs") or [])):
        raise ModelFileError("'shots' must hold as many conversations as outputs", path=where)


def is_generate_model(path: str | Path) -> bool:
    """Whether ``path`` is a saved model folder whose manifest says task 'generate' (read without loading)."""
    manifest = Path(path) / "tenni.json"
    try:  # a FIFO or device named tenni.json would block a read: only a regular file is looked at
        if not manifest.is_file() or manifest.stat().st_size > 50_000_000:
            return False
        return json.loads(manifest.read_text(encoding="utf-8")).get("task") == "generate"
    except (OSError, ValueError, AttributeError):
        return False
