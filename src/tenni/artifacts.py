"""A saved model is a directory: ``tenni.json`` (manifest) + ``weights.safetensors`` + ``README.md`` (model card)
+ ``report.html`` (the measured results, readable in a browser).

No pickle anywhere: loading reads JSON and tensors, never executes code. The directory is built under a temporary
name and renamed into place, so it is complete or absent. Loading refuses an unknown format version, damaged
weights (hash mismatch) and a backbone whose weights differ from the ones the model was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._paths import AtomicDirectory
from .errors import ModelFileError

FORMAT = "tenni-model"
FORMAT_VERSION = 1
MANIFEST = "tenni.json"
WEIGHTS = "weights.safetensors"


def check_model_target(target: str | Path) -> None:
    """Raise now, before any training, if a model could not be saved at ``target``: a file, someone else's
    non-empty folder (hidden files count), or a place that cannot be written."""
    from ._paths import check_writable

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ModelFileError("exists and is not a directory", path=target, hint="choose another -o path")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).exists():
        raise ModelFileError("exists and is not a tenni model directory; refusing to replace it", path=target,
                             hint="choose a new or empty -o path")
    check_writable(target, folder=True)


def labels_digest(labels) -> str:
    """The label list's hash, stored in the weights' metadata: the label order is bound to the weights, so a
    manifest whose labels were reordered or renamed is refused instead of mislabelling every prediction."""
    import hashlib

    return hashlib.sha256(json.dumps([str(x) for x in labels], ensure_ascii=False).encode("utf-8")).hexdigest()


def write_model_dir(target: str | Path, manifest: dict, tensors: dict[str, np.ndarray], card: str,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write a model folder. A new or empty folder is built under a temporary name and renamed into place
    (complete or absent); over an earlier model, tenni's own files are replaced one by one (each atomically, the
    manifest last, so a half-replaced model fails its hash check) and nothing else in the folder is touched."""
    from safetensors.numpy import save

    from ._paths import atomic_write_bytes, signals_deferred

    target = Path(target)
    check_model_target(target)
    diverged = non_finite(tensors)
    if diverged:  # it could never be loaded: say so now, not at load
        raise ModelFileError(f"the model's weights hold NaN or infinite values ({', '.join(diverged[:3])}): "
                             "training diverged", path=target, hint="re-fit with a lower learning rate or more data")
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    metadata = {"format": FORMAT}
    if isinstance(manifest.get("labels"), list):
        metadata["labels_sha256"] = labels_digest(manifest["labels"])
    weights = save(arrays, metadata=metadata)
    import hashlib

    manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION,
                    weights={"file": WEIGHTS, "sha256": hashlib.sha256(weights).hexdigest(), "size": len(weights)})
    files = {WEIGHTS: weights, "README.md": card.encode("utf-8"),
             **{name: content.encode("utf-8") for name, content in (extra_files or {}).items()},
             MANIFEST: (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")}
    if target.is_dir() and (target / MANIFEST).exists():  # an earlier model: its files replaced, nothing else
        with signals_deferred():
            for name, data in files.items():
                atomic_write_bytes(target / name, data)
        return target
    with AtomicDirectory(target) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return target


MAX_WEIGHTS_BYTES = 64 << 30
MAX_OPTION = 1e9
MAX_MANIFEST_BYTES = 64 << 20


def _regular_file(path: Path, what: str, limit: int) -> int:
    """The size of ``path`` when it is a regular file inside the model folder, checked with lstat so that a FIFO or
    device is never opened (it would hang or read forever) and a symlink never leads out of the folder."""
    import os
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ModelFileError(f"{what} is missing", path=path, hint="copy the whole model directory") from None
    except OSError as err:
        raise ModelFileError(f"cannot read the {what} ({err.strerror})", path=path) from None
    if stat.S_ISLNK(st.st_mode):
        raise ModelFileError(f"the {what} is a symbolic link; it must be a regular file inside the model folder",
                             path=path, hint="copy the real file into the model directory")
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
            "a device or special file"
        raise ModelFileError(f"the {what} is {kind}, not a regular file", path=path,
                             hint="copy the whole model directory again, or re-fit")
    if st.st_size > limit:
        raise ModelFileError(f"the {what} is {st.st_size:,} bytes, more than tenni ever writes ({limit:,})",
                             path=path, hint="copy the whole model directory again, or re-fit")
    return st.st_size


def read_model_dir(path: str | Path, *, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_dir():
        raise ModelFileError("no such model directory", path=path, hint="pass the -o folder of `tenni fit`")
    manifest_path = path / MANIFEST
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise ModelFileError(f"no {MANIFEST} in the directory, so it is not a tenni model", path=path,
                             hint="pass the -o folder of `tenni fit`")
    _regular_file(manifest_path, "manifest", MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:
        raise ModelFileError(f"damaged manifest: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                             path=manifest_path, hint="re-run `tenni fit`") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"damaged manifest: a JSON {type(manifest).__name__}, not an object", path=manifest_path,
                             hint="re-run `tenni fit`")
    if manifest.get("format") != FORMAT:
        raise ModelFileError(f"not a tenni model manifest (format {manifest.get('format')!r})", path=manifest_path)
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # True and 1.0 equal 1 in Python: not here
        what = f"{version!r} (a {type(version).__name__})" if type(version) is not int else f"{version}"
        raise ModelFileError(f"unknown format version {what} (this tenni reads {FORMAT_VERSION})",
                             path=manifest_path, hint="upgrade tenni, or re-fit the model with this version")
    listed = manifest.get("weights")
    if not isinstance(listed, dict):
        raise ModelFileError("field 'weights' must be an object naming the weights file and its hash",
                             path=manifest_path, hint="re-run `tenni fit`")
    if listed.get("file", WEIGHTS) != WEIGHTS:
        raise ModelFileError(f"the manifest names weights other than {WEIGHTS}", path=manifest_path,
                             hint="re-fit the model; weights are always read from inside the model directory")
    weights = path / WEIGHTS
    size = _regular_file(weights, "weights file", MAX_WEIGHTS_BYTES)
    expected_size = listed.get("size")
    if expected_size is not None and (type(expected_size) is not int or expected_size != size):
        raise ModelFileError(f"weights are {size:,} bytes but the manifest says {expected_size!r}", path=weights,
                             hint="copy the model directory again (a truncated or modified copy), or re-fit")
    data = weights.read_bytes()
    if verify:
        import hashlib

        expected = listed.get("sha256")
        if not expected or hashlib.sha256(data).hexdigest() != expected:
            raise ModelFileError("weights do not match the hash in the manifest (damaged or modified)",
                                 path=weights, hint="copy the model directory again, or re-fit")
    try:
        tensors = load(data)
    except Exception as err:
        raise ModelFileError(f"cannot read weights: {err}", path=weights) from None
    stored = _weights_metadata(data).get("labels_sha256")
    if stored is not None and isinstance(manifest.get("labels"), list) and stored != labels_digest(manifest["labels"]):
        raise ModelFileError("field 'labels' is not the label list the weights were trained with (reordered, "
                             "renamed or from another model)", path=manifest_path,
                             hint="restore the original tenni.json, or re-fit")
    check_manifest(manifest, tensors, manifest_path)
    return manifest, tensors


def _weights_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file held in memory (an empty dict where there is none)."""
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        meta = header.get("__metadata__") or {}
        return meta if isinstance(meta, dict) else {}
    except (ValueError, AttributeError):
        return {}


def non_finite(tensors: dict[str, np.ndarray]) -> list[str]:
    """Names of the float tensors holding NaN or infinite values."""
    return [k for k, v in tensors.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]


def check_manifest(manifest: dict, tensors: dict[str, np.ndarray], where: Path) -> None:
    """What loading relies on, checked before any strategy reads it: a hash only proves the weights are the ones the
    manifest names, not that the manifest itself was written by tenni (hand edits, other tools)."""
    if manifest.get("task") == "generate":  # text-to-text: no labels; tenni.generate.model checks the rest
        diverged = non_finite(tensors)
        if diverged:
            raise ModelFileError(f"tensor {diverged[0]!r} holds NaN or infinite values", path=where.parent / WEIGHTS,
                                 hint="re-fit the model (a diverged training run, or damaged weights)")
        return
    labels = manifest.get("labels")
    if (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
            or len(set(labels)) != len(labels) or not labels):
        raise ModelFileError("'labels' must be a list of distinct label names", path=where, hint="re-run `tenni fit`")
    strategy = manifest.get("strategy")
    if (not isinstance(strategy, dict) or not isinstance(strategy.get("name"), str)
            or not isinstance(strategy.get("config", {}), dict) or not isinstance(strategy.get("state", {}), dict)):
        raise ModelFileError("'strategy' must name the strategy with its config", path=where, hint="re-run `tenni fit`")
    _check_schema(manifest, where)
    task = manifest.get("task", "classify")
    if task not in ("classify", "anomaly") or (task == "anomaly") != (strategy["name"] == "patchcore"):
        raise ModelFileError(f"task {task!r} does not match strategy {strategy['name']!r}", path=where,
                             hint="re-run `tenni fit`")
    diverged = non_finite(tensors)
    if diverged:
        raise ModelFileError(f"tensor {diverged[0]!r} holds NaN or infinite values", path=where.parent / WEIGHTS,
                             hint="re-fit the model (a diverged training run, or damaged weights)")
    coef, intercept = tensors.get("head.coef"), tensors.get("head.intercept")
    if coef is not None and task == "classify":
        rows = 1 if len(labels) == 2 else len(labels)
        if coef.ndim != 2 or coef.shape[0] != rows or intercept is None or intercept.shape != (rows,):
            raise ModelFileError(f"the head has {coef.shape[0] if coef.ndim else 0} rows for {len(labels)} labels",
                                 path=where, hint="the labels and the weights come from different models: re-fit")


def _field_error(field: str, problem: str, where: Path) -> ModelFileError:
    return ModelFileError(f"field '{field}' {problem}", path=where,
                          hint="the manifest was edited or damaged: restore it, or re-fit the model")


def _check_schema(manifest: dict, where: Path) -> None:
    """Types and ranges of every field loading uses (one schema, checked before anything reads it): the strategy
    is a known one and its options are valid for it (its own range checks), a model built on a backbone names the
    backbone and the fingerprint of the weights it was trained on."""
    from .errors import ConfigError

    for name in ("tenni_version", "created"):
        if name in manifest and not isinstance(manifest[name], str):
            raise _field_error(name, f"must be a string, not {type(manifest[name]).__name__}", where)
    for name in ("metrics", "data"):
        if manifest.get(name) is not None and not isinstance(manifest[name], dict):
            raise _field_error(name, f"must be an object, not {type(manifest[name]).__name__}", where)
    if manifest.get("modality", "text") not in ("text", "image", "audio"):
        raise _field_error("modality", f"must be text, image or audio, not {manifest.get('modality')!r}", where)
    seed = manifest.get("seed", 0)
    if type(seed) is not int or not 0 <= seed < 2**32:
        raise _field_error("seed", f"must be a whole number from 0 to {2**32 - 1}, not {seed!r}", where)
    strategy = manifest.get("strategy")
    if not isinstance(strategy, dict) or not isinstance(strategy.get("name"), str):
        raise _field_error("strategy", "must name the strategy with its config", where)
    for name in ("config", "state"):
        if not isinstance(strategy.get(name, {}), dict):
            raise _field_error(f"strategy.{name}", "must be an object", where)
    from .config import make_config
    from .strategies.registry import get_entry, get_strategy_class

    modality = manifest.get("modality", "text")
    try:
        entry = get_entry(strategy["name"])
        cls = get_strategy_class(entry.name, modality if entry.supports(modality) else "text")
    except ConfigError as err:
        raise _field_error("strategy.name", f"names {err.message}", where) from None
    try:
        make_config(cls.Config, strategy.get("config", {}))
    except ConfigError as err:
        raise _field_error("strategy.config", f"is not valid for strategy '{cls.name}': {err.message}",
                           where) from None
    for key, value in strategy.get("config", {}).items():  # a count, size or rate beyond any tenni writes
        if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_OPTION:
            raise _field_error(f"strategy.config.{key}", f"is {value:g}, beyond any value tenni uses "
                               f"(at most {MAX_OPTION:g})", where)
    if getattr(cls, "uses_backbone", False):
        backbone = manifest.get("backbone")
        if not isinstance(backbone, dict) or not isinstance(backbone.get("name"), str) or not backbone["name"]:
            raise _field_error("backbone", f"must name the backbone strategy '{cls.name}' was trained on", where)
        fingerprint = backbone.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint.strip():
            raise _field_error("backbone.fingerprint", "is missing: without it another backbone could be used "
                               "without a word", where)
        max_length = backbone.get("max_length")
        if max_length is not None and (type(max_length) is not int or not 1 <= max_length <= 1_000_000):
            raise _field_error("backbone.max_length", f"must be a whole number from 1 to 1000000, not "
                               f"{max_length!r}", where)
