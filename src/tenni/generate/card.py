"""The model card (README.md) of a text-to-text model: what it is, how it scored beside the prompt baseline, and a
table of examples (input, reference, output) so a reader sees what the numbers mean."""

from __future__ import annotations


def _cell(text, width: int = 160) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= width else text[:width - 1] + "…"
    return text.replace("|", "\\|")


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def model_card(gen) -> str:
    lines = [f"# tenni text-to-text model: {gen.label} on {gen.backbone_name}", ""]
    lines.append(f"- task: generate (text to text); strategy **{gen.label}**")
    lines.append(f"- base model: `{gen.backbone_name}` (weights {gen.fingerprint})")
    if gen.instruction:
        lines.append(f"- instruction put before every input: “{_cell(gen.instruction, 300)}”")
    d = gen.decoding
    how = "greedy" if d.temperature == 0 else f"sampling (temperature {d.temperature}, top-p {d.top_p})"
    stops = f", stop at {d.stop}" if d.stop else ""
    lines.append(f"- decoding: {how}, at most {d.max_new_tokens} new tokens{stops}")
    if gen.data_summary:
        lines.append(f"- trained on {gen.data_summary.get('train_size')} pairs from "
                     f"`{gen.data_summary.get('source') or 'memory'}`")
    t = gen.training or {}
    if t.get("steps"):
        lines.append(f"- training: {t['steps']} steps over {t['epochs']} epochs ({t.get('stopped')}; best epoch "
                     f"{t.get('best_epoch')}, held-out loss {t.get('val_loss')}), {t.get('seconds')} s")
    results = (gen.metrics or {}).get("results") or []
    if results:
        lines += ["", "## Results", "", f"Evaluated on {gen.metrics.get('test_size')} pairs "
                  f"({gen.metrics.get('test_source')}). Scores in percent.", "",
                  "| strategy | ROUGE-L | exact match | chrF | train s | generate s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in results:
            lines.append(f"| {r['strategy']} | {_pct(r.get('rougeL'))} | {_pct(r.get('exact_match'))} | "
                         f"{_pct(r.get('chrf'))} | {r.get('train_seconds', 0):.1f} | "
                         f"{r.get('generate_seconds', 0):.1f} |")
        gain = gen.metrics.get("transfer_gain")
        if gain:
            lines += ["", f"Gain over the no-training prompt baseline: {100 * gain['rougeL']:+.1f} ROUGE-L points."]
    examples = (gen.metrics or {}).get("examples") or []
    if examples:
        lines += ["", "## Examples", "", "| input | reference | output | ROUGE-L |", "|---|---|---|---:|"]
        for e in examples:
            lines.append(f"| {_cell(e['input'])} | {_cell(e['reference'], 100)} | {_cell(e['output'], 100)} | "
                         f"{_pct(e.get('rougeL'))} |")
    lines += ["", "## Use", "", "```", "tenni predict THIS_FOLDER inputs.csv -o outputs.jsonl",
              "tenni merge THIS_FOLDER -o merged/   # a plain Hugging Face model folder" if gen.strategy != "prompt"
              else "", "```", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"
