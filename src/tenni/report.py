"""``tenni report``: the HTML report of a model directory, optionally with an assessment and a learning curve."""

from __future__ import annotations

from pathlib import Path

from .evaluation.report import assessment_section, curve_section, model_sections, page


def render_report(manifest: dict, assessment: dict | None = None, curve: dict | None = None,
                  curve_png: Path | None = None) -> str:
    sections = model_sections(manifest)
    if assessment:
        sections.insert(1, assessment_section(assessment))
    if curve:
        sections.append(curve_section(curve, curve_png))
    backbone = (manifest.get("backbone") or {}).get("name")
    title = f"tenni report: {manifest['strategy']['name']}" + (f" on {backbone}" if backbone else "")
    return page(title, sections)


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
