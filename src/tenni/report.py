"""The ``tenni report`` workflow: a model directory's HTML report, with an assessment and a learning curve run on
the labeled data when asked (the page itself is :func:`tenni.evaluation.report.render_report`)."""

from __future__ import annotations

from pathlib import Path

from .evaluation.report import render_report


def write_report(model_dir: str | Path, output: str | Path | None = None, *, data=None, curve: bool = False,
                 **read_options) -> Path:
    """Write ``report.html`` for a model directory; with ``data``, add the assessment (and a learning curve)."""
    import json

    from ._paths import atomic_write_bytes
    from .artifacts import read_model_dir

    manifest, _ = read_model_dir(model_dir)
    assessment = curve_result = None
    backbone = (manifest.get("backbone") or {}).get("name")
    if data is not None:
        from .assess import assess
        from .data import as_dataset

        data = as_dataset(data, **read_options)
        data.require_modality(manifest.get("modality", "text"), "the model's input")
        assessment = assess(data, **read_options).to_dict()
        if curve:
            from .evaluation.curve import run_curve

            chosen = manifest["strategy"].get("state", {}).get("chosen") or manifest["strategy"]["name"]
            curve_result = run_curve(data, strategy=chosen, backbone=backbone or "auto",
                                     **read_options)
    out = Path(output) if output else Path(model_dir) / "report.html"
    html_text = render_report(manifest, assessment, curve_result)
    atomic_write_bytes(out, html_text.encode("utf-8"))
    if assessment:
        atomic_write_bytes(out.with_suffix(".assess.json"), json.dumps(assessment, indent=1).encode())
    return out
