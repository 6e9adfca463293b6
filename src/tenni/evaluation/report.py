"""One self-contained HTML page a person can open and read: data, results, per-class metrics, confusion matrix,
and, when available, the assessment and the learning curve. Plots are embedded PNGs; no network, no scripts."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from .results import RESULT_COLUMNS, gain_sentence, result_cells

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#1d232a;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d6d9dc;padding:.3em .6em;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}.muted{color:#6a737d;font-size:.9em}
table.confusion td{min-width:2.2em;text-align:center}
.good{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}img{max-width:100%}
"""


def esc(value) -> str:
    return html.escape(str(value))


def table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def png_file_tag(path: Path) -> str:
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()}">'


def confusion_table(labels: list[str], matrix: list[list[int]]) -> str:
    """A confusion matrix as an HTML heat map (rows true, columns predicted; the shade is the share of the row).
    Plain HTML: the reader's browser draws any script (Japanese labels need no plot font), it costs no plotting
    library at fit time, and each count stays selectable text. Past 25 classes the columns are numbered."""
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    numbered = len(labels) > 25
    heads = [str(j) if numbered else labels[j] for j in range(len(labels))]
    head = "<th>true \\ predicted</th>" + "".join(f"<th>{esc(h)}</th>" for h in heads)
    body = []
    for i, label in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            alpha = round(float(share[i, j]), 3)
            colour = "#fff" if alpha > 0.55 else "#1d232a"
            mark = ";font-weight:600" if i == j else ""
            cells.append(f"<td style='background:rgba(31,119,180,{alpha});color:{colour}{mark}'>{int(m[i, j])}</td>")
        name = f"{i}: {label}" if numbered else label
        body.append(f"<tr><th>{esc(name)}</th>{''.join(cells)}</tr>")
    return f"<table class='confusion'><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{esc(name)}</h2>{content}" for name, content in sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>")


def model_sections(manifest: dict) -> list[tuple[str, str]]:
    """Sections from a model manifest: what was fitted, on what, and how it measured."""
    metrics = manifest.get("metrics") or {}
    data = manifest.get("data") or {}
    strategy = manifest["strategy"]["name"]
    backbone = (manifest.get("backbone") or {}).get("name", "none (from scratch)")
    sections = [("Model", table(["", ""], [
        ["strategy", strategy], ["backbone", backbone], ["labels", ", ".join(manifest["labels"])],
        ["seed", manifest.get("seed")], ["created", manifest.get("created")],
        ["tenni", manifest.get("tenni_version")]]))]
    if data:
        counts = data.get("class_counts", {})
        languages = ", ".join(f"{k} {v:.0%}" for k, v in (data.get("languages") or {}).items())
        modality = manifest.get("modality", "text")
        kind = ["scripts/languages", languages or "?"] if modality == "text" else ["modality", modality]
        evaluated = (f"{data.get('test_size')} ({data.get('test_source')})" if data.get("test_size") is not None
                     else "not evaluated (no test data)")
        sections.append(("Data", table(["", ""], [
            ["source", data.get("source")], ["training examples", data.get("train_size")],
            ["evaluated on", evaluated], kind]) + table(["class", "training examples"],
                                                             [[c, n] for c, n in counts.items()])))
    results = metrics.get("results") or []
    if results:
        rows = [[result_cells(r)[key] for key, _ in RESULT_COLUMNS] for r in results]
        sentence = gain_sentence(metrics)
        note = ""
        if sentence:
            cls = "good" if metrics["transfer_gain"]["accuracy"] > 0 else "bad"
            note = f"<p class='{cls}'><b>transfer vs scratch</b> — {esc(sentence)}</p>"
        sections.append(("Results", table([heading for _, heading in RESULT_COLUMNS], rows) + note))
    test = metrics.get("test") or {}
    if test.get("per_class"):
        rows = [[c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"]]
                for c, m in test["per_class"].items()]
        sections.append(("Per class", table(["class", "precision", "recall", "F1", "support"], rows)))
    cm = test.get("confusion_matrix")
    if cm:
        sections.append(("Confusion matrix", confusion_table(cm["labels"], cm["matrix"])))
    return sections


def assessment_section(assessment: dict) -> tuple[str, str]:
    rows = [[r["backbone"], f"{r['probe_accuracy']:.3f} [{r['probe_interval'][0]:.3f}, {r['probe_interval'][1]:.3f}]",
             f"{r['knn_accuracy']:.3f}", f"{r['logme']:.3f}", f"{r['h_score']:.2f}",
             "" if r["gain_over_scratch"] is None else f"{100 * r['gain_over_scratch']:+.1f} pts", r["verdict"]]
            for r in assessment["reports"]]
    rec = assessment["recommendation"]
    reasons = "".join(f"<li>{esc(x)}</li>" for x in rec.get("reasons", []))
    return ("Assessment (before training)",
            table(["backbone", "probe CV acc [95% CI]", "kNN", "LogME", "H-score", "vs scratch", "verdict"], rows)
            + f"<p>recommended: <b>{esc(rec.get('backbone'))}</b> with <b>{esc(rec.get('strategy'))}</b></p>"
            + f"<ul>{reasons}</ul><p class='muted'>{esc(assessment.get('label_check', ''))}</p>")


def curve_section(result: dict, png_path: Path | None = None) -> tuple[str, str]:
    import tempfile

    from .curve import curve_table, plot_curve

    with tempfile.TemporaryDirectory() as tmp:
        path = png_path or Path(tmp) / "curve.png"
        if png_path is None or not Path(png_path).exists():
            plot_curve(result, path)
        img = png_file_tag(path)
    saved = result.get("labels_saved")
    note = ""
    if saved and saved.get("scratch_labels_per_class") is not None:
        note = (f"<p>To reach {saved['target_accuracy']:.3f} accuracy, transfer needs "
                f"{saved['transfer_labels_per_class']} labels per class; scratch would need about "
                f"{saved['scratch_labels_per_class']:.0f} ({saved['factor']:.1f}x).</p>")
    elif saved:
        note = (f"<p>Scratch's fitted plateau ({saved['scratch_plateau']:.3f}) is below the "
                f"{saved['target_accuracy']:.3f} transfer reaches with {saved['transfer_labels_per_class']} labels per "
                "class: no amount of labels is forecast to close the gap.</p>")
    return ("Learning curve", img + note + table(["strategy", "labels per class", "accuracy", ""],
                                                curve_table(result)))


def render_report(manifest: dict, assessment: dict | None = None, curve: dict | None = None,
                  curve_png: Path | None = None) -> str:
    """The whole report page of a model manifest, with the assessment and the learning curve when given."""
    sections = model_sections(manifest)
    if assessment:
        sections.insert(1, assessment_section(assessment))
    if curve:
        sections.append(curve_section(curve, curve_png))
    backbone = (manifest.get("backbone") or {}).get("name")
    title = f"tenni report: {manifest['strategy']['name']}" + (f" on {backbone}" if backbone else "")
    return page(title, sections)
