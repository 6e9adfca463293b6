"""Which scripts and languages a dataset is written in, and whether a backbone was trained on them.

A script check needs no model and no network, and catches the case that matters most: an English-only encoder
given Japanese, Chinese, Korean, Cyrillic or Arabic text, where transfer can be worse than none.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache

# (name, first code point, last code point)
_RANGES = [
    ("kana", 0x3040, 0x30FF), ("kana", 0x31F0, 0x31FF), ("kana", 0xFF66, 0xFF9F),
    ("han", 0x3400, 0x4DBF), ("han", 0x4E00, 0x9FFF), ("han", 0xF900, 0xFAFF),
    ("hangul", 0xAC00, 0xD7AF), ("hangul", 0x1100, 0x11FF),
    ("cyrillic", 0x0400, 0x04FF), ("greek", 0x0370, 0x03FF), ("arabic", 0x0600, 0x06FF),
    ("hebrew", 0x0590, 0x05FF), ("devanagari", 0x0900, 0x097F), ("thai", 0x0E00, 0x0E7F),
]
LANGUAGE_NAMES = {"en": "English", "ja": "Japanese", "zh": "Chinese", "ko": "Korean", "ru": "Cyrillic-script",
                  "el": "Greek", "ar": "Arabic", "he": "Hebrew", "hi": "Devanagari-script", "th": "Thai",
                  "latin": "Latin-script"}


def _script(ch: str) -> str | None:
    code = ord(ch)
    if code < 0x250:
        return "latin" if ch.isalpha() else None
    if 0xFF21 <= code <= 0xFF5A:  # full-width Latin letters
        return "latin"
    for name, lo, hi in _RANGES:
        if lo <= code <= hi:
            return name
    return "other" if ch.isalpha() else None


@lru_cache(maxsize=8192)  # a dataset's sample (2,000) several times over; ~10 MB at most
def _letter_counts(text: str) -> tuple[tuple[str, int], ...]:
    """Letters per script in one text (memoised: CV folds and strategies ask again about the same texts)."""
    counts: Counter[str] = Counter()
    for ch in text:
        script = _script(ch)
        if script:
            counts[script] += 1
    return tuple(counts.items())


def script_profile(texts: list[str], sample: int = 2000, max_chars: int = 400) -> dict[str, float]:
    """Share of letters per script over (a sample of) the texts."""
    counts: Counter[str] = Counter()
    step = max(1, len(texts) // sample)
    for text in texts[::step]:
        for script, n in _letter_counts(text[:max_chars]):
            counts[script] += n
    total = sum(counts.values()) or 1
    return {k: round(v / total, 4) for k, v in counts.most_common()}


def detect_languages(texts: list[str]) -> dict[str, float]:
    """Languages by script: kana means Japanese (with its kanji), Han alone Chinese, Hangul Korean...

    Latin-script text is reported as ``latin``: telling English from French needs more than a script check.
    """
    profile = script_profile(texts)
    langs: Counter[str] = Counter()
    kana = profile.get("kana", 0.0)
    for script, share in profile.items():
        if script == "han":
            langs["ja" if kana >= 0.05 else "zh"] += share
        else:
            langs[{"kana": "ja", "hangul": "ko", "cyrillic": "ru", "greek": "el", "arabic": "ar", "hebrew": "he",
                   "devanagari": "hi", "thai": "th"}.get(script, script)] += share
    return {k: round(v, 4) for k, v in langs.most_common()}


def main_language(texts: list[str], threshold: float = 0.3) -> str:
    """The dominant non-Latin language if it makes up at least ``threshold`` of the letters, else 'latin'."""
    langs = detect_languages(texts)
    for lang, share in langs.items():
        if lang not in ("latin", "other") and share >= threshold:
            return lang
    return "latin"


def covers(backbone_languages: tuple[str, ...], language: str) -> bool:
    """Whether a backbone trained on ``backbone_languages`` knows ``language``."""
    if "multilingual" in backbone_languages:
        return True
    if language == "latin":
        return any(lang in ("en", "latin") for lang in backbone_languages)
    return language in backbone_languages


def normalise_width(text: str) -> str:
    """NFKC: full-width Latin letters and digits become ASCII, half-width katakana becomes full-width."""
    return unicodedata.normalize("NFKC", text)
