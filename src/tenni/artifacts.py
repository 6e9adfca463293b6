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

from ._paths import AtomicDirectory, sha256_file
from .errors import ModelFileError

FORMAT = "tenni-model"
FORMAT_VERSION = 1
MANIFEST = "tenni.json"
WEIGHTS = "weights.safetensors"


def write_model_dir(target: str | Path, manifest: dict, tensors: dict[str, np.ndarray], card: str,
                    extra_files: dict[str, str] | None = None) -> Path:
    from safetensors.numpy import save_file

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ModelFileError("exists and is not a directory", path=target, hint="choose another -o path")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).exists():
        raise ModelFileError("exists and is not a tenni model directory; refusing to replace it", path=target,
                             hint="choose a new or empty -o path")
    if (target / MANIFEST).exists():  # an earlier model: replaced whole, so nothing else may live in it
        ours = {MANIFEST, WEIGHTS, "README.md", "report.html", "report.assess.json", *(extra_files or {})}
        foreign = sorted(p.name for p in target.iterdir() if p.name not in ours and not p.name.startswith("."))
        if foreign:
            raise ModelFileError(f"holds an earlier model and files tenni did not write ({', '.join(foreign[:5])}"
                                 f"{' …' if len(foreign) > 5 else ''}), which replacing the model would delete",
                                 path=target, hint="move those files out, or choose another -o path")
    diverged = non_finite(tensors)
    if diverged:  # it could never be loaded: say so now, not at load
        raise ModelFileError(f"the model's weights hold NaN or infinite values ({', '.join(diverged[:3])}): "
                             "training diverged", path=target, hint="re-fit with a lower learning rate or more data")
    with AtomicDirectory(target) as tmp:
        arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        save_file(arrays, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION,
                        weights={"file": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS)})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (tmp / name).write_text(content, encoding="utf-8")
    return target


def read_model_dir(path: str | Path, *, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_dir():
        raise ModelFileError("no such model directory", path=path, hint="pass the -o folder of `tenni fit`")
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise ModelFileError(f"no {MANIFEST} in the directory, so it is not a tenni model", path=path,
                             hint="pass the -o folder of `tenni fit`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ModelFileError(f"damaged manifest: {err}", path=manifest_path, hint="re-run `tenni fit`") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"damaged manifest: a JSON {type(manifest).__name__}, not an object", path=manifest_path,
                             hint="re-run `tenni fit`")
    if manifest.get("format") != FORMAT:
        raise ModelFileError(f"not a tenni model manifest (format {manifest.get('format')!r})", path=manifest_path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        what = f"{version!r} (a {type(version).__name__})" if not isinstance(version, int) else f"{version}"
        raise ModelFileError(f"unknown format version {what} (this tenni reads {FORMAT_VERSION})",
                             path=manifest_path, hint="upgrade tenni, or re-fit the model with this version")
    if manifest.get("weights", {}).get("file", WEIGHTS) != WEIGHTS:
        raise ModelFileError(f"the manifest names weights other than {WEIGHTS}", path=manifest_path,
                             hint="re-fit the model; weights are always read from inside the model directory")
    weights = path / WEIGHTS
    if not weights.exists():
        raise ModelFileError("weights file is missing", path=weights, hint="copy the whole model directory")
    if verify:
        expected = manifest.get("weights", {}).get("sha256")
        if not expected or sha256_file(weights) != expected:
            raise ModelFileError("weights do not match the hash in the manifest (damaged or modified)",
                                 path=weights, hint="copy the model directory again, or re-fit")
    if not weights.is_file():
        raise ModelFileError("weights are not a file", path=weights, hint="copy the whole model directory")
    try:
        tensors = load_file(str(weights))
    except Exception as err:
        raise ModelFileError(f"cannot read weights: {err}", path=weights) from None
    check_manifest(manifest, tensors, manifest_path)
    return manifest, tensors


def non_finite(tensors: dict[str, np.ndarray]) -> list[str]:
    """Names of the float tensors holding NaN or infinite values."""
    return [k for k, v in tensors.items() if np.asarray(v).dtype.kind == "f" and not np.isfinite(v).all()]


def check_manifest(manifest: dict, tensors: dict[str, np.ndarray], where: Path) -> None:
    """What loading relies on, checked before any strategy reads it: a hash only proves the weights are the ones the
    manifest names, not that the manifest itself was written by tenni (hand edits, other tools)."""
    labels = manifest.get("labels")
    if (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
            or len(set(labels)) != len(labels) or not labels):
        raise ModelFileError("'labels' must be a list of distinct label names", path=where, hint="re-run `tenni fit`")
    strategy = manifest.get("strategy")
    if (not isinstance(strategy, dict) or not isinstance(strategy.get("name"), str)
            or not isinstance(strategy.get("config", {}), dict) or not isinstance(strategy.get("state", {}), dict)):
        raise ModelFileError("'strategy' must name the strategy with its config", path=where, hint="re-run `tenni fit`")
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
