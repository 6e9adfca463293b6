"""How many tokens of each text a text backbone reads for a strategy, and what it does with the rest.

The length is chosen from the data: a percentile of the training texts' token counts (special tokens included),
rounded up to a multiple of 8 and capped by the backbone's maximum, unless ``max_length`` is set. A text longer
than that is cut deliberately — ``head`` keeps its opening, ``head_tail`` its opening quarter and closing
three quarters (Sun et al., 2019: the best cut for long reviews and news) — or read whole as ``windows`` of that
length whose outputs are mean-pooled. The choice is recorded with the model and said in one line; prediction
reads texts the way training did. Measurements (which cut, which percentile) are in docs/guides/long-texts.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import POSITIVE, option
from ..errors import ConfigError

TRUNCATIONS = ("head", "head_tail", "windows")
MAX_WINDOWS = 8
"""A text longer than this many windows is cut to them (head): the cost stays bounded on a stray book."""
COUNT_LIMIT = 2048
"""Token counts for the percentile stop here: no backbone's cap is near it, and the work stays bounded."""
CHARS_PER_TOKEN = 16
"""Texts are cut to ``max_length * CHARS_PER_TOKEN`` characters before tokenising: no token is that long, so the
tokens kept are the same, and a 50 MB text costs what its first few kilobytes cost instead of gigabytes."""


def clip_texts(texts: list[str], max_length: int) -> list[str]:
    """``texts`` cut to the characters ``max_length`` tokens can cover (see ``CHARS_PER_TOKEN``)."""
    limit = max(int(max_length), 1) * CHARS_PER_TOKEN
    return [t if len(t) <= limit else t[:limit] for t in texts]


@dataclass
class LengthOptions:
    """How much of each text a strategy that encodes text reads: the two options every such strategy shares."""

    max_length: int | None = option(None, "tokens per text; None: from the data, capped by the backbone (strategies "
                                          "that train: the 95th percentile of the training texts' token counts; the "
                                          "probe: the backbone's most, since its features are cached)", **POSITIVE)
    truncation: str = option("head", "texts longer than max_length: 'head' (their opening), 'head_tail' (opening "
                                     "quarter + end) or 'windows' (read whole, outputs mean-pooled)",
                             choices=TRUNCATIONS)


def check_truncation(value: str) -> str:
    if value not in TRUNCATIONS:
        raise ConfigError(f"option truncation must be one of {', '.join(TRUNCATIONS)}, got {value!r}",
                          hint="head keeps the opening; head_tail the opening and the end; windows reads it all")
    return value


def token_counts(tokenizer, texts: list[str], limit: int = 2000) -> np.ndarray:
    """Tokens per text with special tokens, untruncated (on an even sample of at most ``limit`` texts)."""
    if len(texts) > limit:
        texts = [texts[i] for i in np.linspace(0, len(texts) - 1, limit).astype(int)]
    texts = clip_for(list(texts), COUNT_LIMIT, "head")
    rows = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.asarray([len(r) for r in rows], dtype=np.int64)


@dataclass
class LengthChoice:
    """What a strategy chose; ``as_dict`` goes into the model's metadata."""

    max_length: int
    truncation: str
    percentile: float
    percentile_tokens: int
    longer_share: float
    source: str  # "data" or "max_length option"

    def as_dict(self) -> dict:
        return {"max_length": self.max_length, "truncation": self.truncation, "percentile": self.percentile,
                "percentile_tokens": self.percentile_tokens, "longer_share": round(self.longer_share, 4),
                "source": self.source}

    def describe(self, who: str) -> str:
        cut = {"head": "cut to their opening", "head_tail": "cut to their opening and end",
               "windows": f"read as windows of {self.max_length} tokens, pooled"}[self.truncation]
        why = {"data": f"{self.percentile:g}th percentile of the training texts: {self.percentile_tokens}",
               "backbone": f"the backbone's most, frozen features being cached; {self.percentile:g}th percentile "
                           f"of the training texts: {self.percentile_tokens}"}.get(self.source, "set by max_length")
        return (f"{who}: {self.max_length} tokens per text ({why}); {100 * self.longer_share:.0f}% of the "
                f"training texts are longer and are {cut}")


def choose_length(counts, cap: int, *, percentile: float = 95.0, max_length: int | None = None,
                  truncation: str = "head", limit: int | None = None, floor: int = 16,
                  use_cap: bool = False) -> LengthChoice:
    """The sequence length for texts with these token ``counts``: ``max_length`` when set (up to ``limit``, the
    model's position limit), else the ``percentile`` rounded up to a multiple of 8, between ``floor`` and ``cap``
    (``use_cap``: the cap itself; the percentile is only reported)."""
    check_truncation(truncation)
    counts = np.asarray(counts, dtype=np.int64)
    at = int(math.ceil(np.percentile(counts, percentile))) if len(counts) else floor
    if max_length is not None:
        length, source = int(max_length), "max_length option"
        if limit is not None and length > limit:
            raise ConfigError(f"option max_length={length} is beyond what this backbone reads ({limit} tokens)",
                              hint=f"set max_length={limit} or less, or truncation=windows to read long texts")
    elif use_cap:
        length, source = int(cap), "backbone"
    else:
        length, source = min(cap, max(floor, 8 * math.ceil(at / 8))), "data"
    longer = float(np.mean(counts > length)) if len(counts) else 0.0
    return LengthChoice(length, truncation, percentile, at, longer, source)


def light_token_counts(folder, texts: list[str], limit: int = 2000) -> np.ndarray | None:
    """Token counts from the folder's ``tokenizer.json`` through the ``tokenizers`` library alone (no
    transformers import: a probe whose features are cached stays fast); None when there is no such file."""
    from pathlib import Path

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
    except Exception:  # an unreadable tokenizer file: the encoder's own load reports it
        return None
    tok.no_truncation()
    tok.no_padding()
    if len(texts) > limit:
        texts = [texts[i] for i in np.linspace(0, len(texts) - 1, limit).astype(int)]
    texts = clip_for(list(texts), COUNT_LIMIT, "head")
    return np.asarray([len(e.ids) for e in tok.encode_batch(list(texts))], dtype=np.int64)


def folder_position_limit(folder) -> int | None:
    """``position_limit`` from a model folder's config.json (None when it does not say)."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return position_limit(SimpleNamespace(**config)) if isinstance(config, dict) else None


def special_layout(tokenizer) -> tuple[list[int], list[int]]:
    """(prefix, suffix): the special tokens the tokenizer puts around one text ([CLS] ... [SEP], <s> ... </s>)."""
    whole = list(tokenizer("x", add_special_tokens=True)["input_ids"])
    body = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    for at in range(len(whole) - len(body) + 1):
        if whole[at:at + len(body)] == body:
            return whole[:at], whole[at + len(body):]
    return [], []


def fit_rows(body: list[int], length: int, truncation: str, prefix: list[int], suffix: list[int]) -> list[list[int]]:
    """One text's token ids without special tokens -> the rows the encoder reads (one, or several windows)."""
    room = max(1, length - len(prefix) - len(suffix))
    if len(body) <= room:
        return [prefix + body + suffix]
    if truncation == "head":
        return [prefix + body[:room] + suffix]
    if truncation == "head_tail":
        head = room // 4
        return [prefix + body[:head] + body[len(body) - (room - head):] + suffix]
    pieces = [body[i:i + room] for i in range(0, len(body), room)][:MAX_WINDOWS]
    if len(pieces) > 1 and len(pieces[-1]) < room // 4 and len(body) <= room * MAX_WINDOWS:
        pieces[-1] = body[-room:]  # a scrap of a window: the last window ends the text, overlapping the one before
    return [prefix + p + suffix for p in pieces]


def clip_for(texts: list[str], length: int, truncation: str) -> list[str]:
    """Texts cut, before tokenising, to the characters the reading can use (bounded work on a stray book): the
    opening for ``head``, the opening and the end for ``head_tail``, ``MAX_WINDOWS`` windows' worth for ``windows``."""
    limit = max(int(length), 1) * CHARS_PER_TOKEN
    if truncation == "windows":
        limit *= MAX_WINDOWS
    if truncation == "head_tail":
        return [t if len(t) <= 2 * limit else t[:limit] + " " + t[-limit:] for t in texts]
    return [t if len(t) <= limit else t[:limit] for t in texts]


def tokenize_rows(tokenizer, texts: list[str], length: int, truncation: str) -> tuple[list[list[int]], np.ndarray]:
    """(rows, owner): every text's rows after the policy, and the text each row belongs to."""
    texts = clip_for(list(texts), length, truncation)
    prefix, suffix = special_layout(tokenizer)
    bodies = (tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
              if texts else [])
    rows, owner = [], []
    for i, body in enumerate(bodies):
        for row in fit_rows(list(body), length, truncation, prefix, suffix):
            rows.append(row)
            owner.append(i)
    return rows, np.asarray(owner, dtype=np.int64)


def pool_rows(values, owner: np.ndarray, n: int):
    """Mean of the rows' outputs per text (torch or numpy; rows in ``owner`` order)."""
    if len(owner) == n and (n == 0 or np.array_equal(owner, np.arange(n))):
        return values
    if isinstance(values, np.ndarray):
        out = np.zeros((n,) + values.shape[1:], dtype=values.dtype)
        np.add.at(out, owner, values)
        return out / np.bincount(owner, minlength=n).reshape((n,) + (1,) * (values.ndim - 1)).astype(values.dtype)
    import torch

    index = torch.as_tensor(owner)
    out = torch.zeros((n,) + tuple(values.shape[1:]), dtype=values.dtype).index_add(0, index, values)
    counts = torch.bincount(index, minlength=n).to(values.dtype).reshape((n,) + (1,) * (values.dim() - 1))
    return out / counts


def position_limit(model_config) -> int | None:
    """The most tokens the model's position table holds (BERT-style models), or None when it does not say."""
    value = getattr(model_config, "max_position_embeddings", None)
    if not value:
        return None
    # RoBERTa/XLM-R offset their positions by the padding index + 1
    return int(value) - 2 if getattr(model_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") \
        else int(value)


def choose_for(tokenizer, texts: list[str], cfg, cap: int, *, who: str, model_config=None,
               percentile: float = 95.0) -> LengthChoice:
    """The length policy for a strategy's training ``texts`` (options ``max_length``, ``truncation`` of its
    config), said in one info line."""
    limit = position_limit(model_config) if model_config is not None else None
    choice = choose_length(token_counts(tokenizer, texts), cap, percentile=percentile, max_length=cfg.max_length,
                           truncation=cfg.truncation, limit=limit)
    say(choice, who)
    return choice


_SAID: set = set()


def say(choice: LengthChoice, who: str) -> None:
    """The choice in one info line, once per process for the same (strategy, length, truncation): auto's folds
    and the hybrid's inner probes would otherwise repeat it."""
    from .._logging import info

    key = (who, choice.max_length, choice.truncation)
    if key not in _SAID:
        _SAID.add(key)
        info(choice.describe(who))


def saved_choice(length: dict | None, cfg) -> tuple[int, str]:
    """(max_length, truncation) of a fitted model; models saved before the policy read their config's
    max_length (128 then) from the head."""
    if length:
        return int(length["max_length"]), str(length["truncation"])
    return int(cfg.max_length or 128), "head"
