"""The model card (README.md in every model directory), generated from the manifest's real metrics."""

from __future__ import annotations

from .results import Protocol, gain_sentence, result_cells


def render_model_card(manifest: dict) -> str:
    strategy = manifest["strategy"]["name"]
    backbone = manifest.get("backbone") or {}
    metrics = manifest.get("metrics") or {}
    data = manifest.get("data") or {}
    lines = [f"# tenni model: {strategy}" + (f" on {backbone.get('name')}" if backbone else ""), ""]
    lines.append(f"Created {manifest.get('created')} with tenni {manifest.get('tenni_version')}; "
                 f"seed {manifest.get('seed')}.")
    lines.append("")
    if backbone:
        lines += [f"- Backbone: `{backbone.get('name')}` ({backbone.get('source')})",
                  f"- Backbone weights: `{backbone.get('fingerprint')}`"]
    lines.append(f"- Labels ({len(manifest['labels'])}): " + ", ".join(f"`{x}`" for x in manifest["labels"]))
    cv = Protocol.of(metrics).kind == "cv"
    if data:
        evaluated = (data.get("test_source") if cv
                     else f"evaluated on {data.get('test_size')} held-out examples ({data.get('test_source')})")
        lines.append(f"- Training data: {data.get('train_size')} examples from `{data.get('source')}`; {evaluated}")
    results = metrics.get("results") or []
    if results:
        heading = "## Measured by cross-validation" if cv else "## Measured on the held-out set"
        lines += ["", heading, "", "| strategy | accuracy | macro-F1 | seconds |",
                  "|---|---|---|---|"]
        for row in results:
            cells = result_cells(row)
            lines.append(f"| {cells['strategy']} | {cells['accuracy']} | {cells['macro_f1']} | {cells['seconds']} |")
        if gain_sentence(metrics):
            lines += ["", gain_sentence(metrics) + "."]
    modality = manifest.get("modality", "text")
    if manifest.get("task") == "anomaly":
        lines += ["", f"Anomaly detector: images scoring above {metrics.get('threshold', 0):.4f} are flagged as "
                      f"defects (threshold from {metrics.get('calibration_size')} held-out normal images)."]
    example, call = {"image": ("photos/", "['photo.jpg']"), "audio": ("clips/", "['clip.wav']")}.get(
        modality, ("texts.csv", "['a new text']"))
    lines += ["", "## Use", "", "```bash", f"tenni predict THIS_DIR {example} -o predictions.csv", "```", "",
              "```python", "import tenni", "model = tenni.load('THIS_DIR')",
              f"model.predict({call})", "```", "",
              "Loading reads JSON and safetensors only; no code from this directory is executed.", ""]
    return "\n".join(lines)
