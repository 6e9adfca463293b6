"""Strategy options: dataclass fields that declare their help text, type and range, checked in one place.

In the spirit of PEFT's configs (fields carry ``metadata={"help": ...}``) and scikit-learn's
``_parameter_constraints`` (ranges declared beside the parameter, not guessed from its name)::

    @dataclass
    class ProbeConfig:
        C: float | None = option(1.0, "inverse L2 strength", low=0, low_open=True)

``make_config(ProbeConfig, {"C": "0.5"})`` accepts None, a dict (CLI strings are coerced to the field's type) or an
instance, and refuses unknown names, wrong types and values out of range with a :class:`ConfigError` naming the
option.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any

import numpy as np

from .errors import ConfigError


def option(default, help: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           choices: tuple | None = None):
    """A config field: ``default``, a help line, and what values it takes (``low``..``high``, ``choices``)."""
    metadata = {"help": help, "low": low, "high": high, "low_open": low_open, "choices": choices}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


SHARE = {"low": 0.0, "high": 1.0}
"""A share: from 0 to 1, both included (``option(0.1, "...", **SHARE)``)."""
POSITIVE = {"low": 0.0, "low_open": True}
"""A count, size, rate or strength: above 0."""
NON_NEGATIVE = {"low": 0.0}
"""A count that may be 0."""


def config_help(config_cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_cls)}


def make_config(config_cls, config: Any):
    """Accept None, a dict, or the dataclass; reject unknown keys with the list of known ones."""
    if config is None:
        config = config_cls()
    elif isinstance(config, dict):
        known = {f.name: f for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(repr(u) for u in unknown)} for this strategy",
                              hint=f"known: {', '.join(known)}")
        hints = _hints(config_cls)
        config = config_cls(**{key: coerce(key, value, known[key].default, hints[key])
                               for key, value in config.items()})
    if not isinstance(config, config_cls):
        raise ConfigError(f"config must be a dict or {config_cls.__name__}, not {type(config).__name__}")
    for f in dataclasses.fields(config_cls):
        check_value(f, getattr(config, f.name))
    return config


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


def check_seed(seed) -> None:
    """A seed numpy and torch accept: a whole number from 0 to 2**32 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be a whole number from 0 to {2**32 - 1}, got {seed!r}", hint="--seed 0, 1, 2 …")


def check_value(f: dataclasses.Field, value) -> None:
    """``value`` within what field ``f`` declares (choices, range, finite)."""
    meta, key = f.metadata, f.name
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = " or ".join(", ".join(_show(c) for c in choices).rsplit(", ", 1))
        raise ConfigError(f"option {key} must be {shown}, got {value!r}", hint=f"the default is {_show(f.default)}")
    if value is None or isinstance(value, bool) or not isinstance(value, (numbers.Real, np.number)):
        return
    if not math.isfinite(value):
        raise ConfigError(f"option {key} must be a finite number, got {value}", hint=f"the default is {f.default}")
    low, high, low_open = meta.get("low"), meta.get("high"), meta.get("low_open")
    ok = (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
    if ok:
        return
    if low is not None and high is not None:
        want = f"between {_num(low)} and {_num(high)}"
    elif low is not None:
        want = "above 0" if (low == 0 and low_open) else "0 or more" if low == 0 else \
            f"{'above' if low_open else 'at least'} {_num(low)}"
    else:
        want = f"at most {_num(high)}"
    raise ConfigError(f"option {key} must be {want}, got {value}", hint=f"the default is {f.default}")


def _show(value) -> str:
    return "none" if value is None else repr(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _hints(config_cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # an annotation that does not resolve: treat the field as free-form
        return {f.name: Any for f in dataclasses.fields(config_cls)}


def _kinds(annotation) -> tuple[set, bool]:
    """(the non-None types a field takes, whether it takes None)."""
    if annotation is Any:
        return set(), True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = set(typing.get_args(annotation))
    else:
        args = {origin or annotation}
    nullable = type(None) in args
    return {a for a in args if a is not type(None)}, nullable


def coerce(key: str, value, default, annotation=Any):
    """A value for option ``key`` in the field's type: CLI strings are parsed ('none' means None), Python values
    must already have the type (a whole float passes as an int, numpy scalars as Python ones)."""
    kinds, nullable = _kinds(annotation)
    if value is None or isinstance(value, str) and value.strip().lower() in ("none", "null"):
        if kinds and not nullable:
            raise ConfigError(f"option {key} cannot be none", hint=f"the default is {_show(default)}")
        return None
    if not kinds:
        return value
    if isinstance(value, str):
        return _parse(key, value, kinds, default)
    return _check_type(key, value, kinds, default)


def _parse(key, value: str, kinds: set, default):
    text = value.strip()
    if str in kinds and len(kinds) == 1:
        return value
    try:
        if bool in kinds:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if int in kinds:
            try:
                return int(text)
            except ValueError:
                if float not in kinds:
                    raise
        if float in kinds:
            return float(text)
        if tuple in kinds or list in kinds:
            items = tuple(v.strip() for v in text.split(",") if v.strip())
            if default and all(isinstance(d, numbers.Real) and not isinstance(d, bool) for d in default):
                return tuple(float(v) for v in items)
            return items
    except ValueError:
        if str in kinds:
            return value
        name = "bool" if bool in kinds else "int" if int in kinds else "float"
        raise ConfigError(f"option {key} needs a {name}, got '{value}'") from None
    return value


def _check_type(key, value, kinds: set, default):
    value = value.item() if isinstance(value, np.generic) else value
    if bool in kinds:
        ok, want = isinstance(value, bool) or value in (0, 1), "true or false"
        value = bool(value) if ok else value
    elif int in kinds and float in kinds:  # a count or a share (min_df)
        ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "number"
    elif int in kinds:
        ok = isinstance(value, numbers.Integral) or isinstance(value, float) and value.is_integer()
        ok, want = ok and not isinstance(value, bool), "whole number"
        value = int(value) if ok else value
    elif float in kinds:
        ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "number"
    elif tuple in kinds or list in kinds:
        ok = hasattr(value, "__iter__") and not isinstance(value, (dict, str, bytes))
        want = "list"
        value = tuple(v.item() if isinstance(v, np.generic) else v for v in value) if ok else value
    elif str in kinds:
        ok, want = isinstance(value, str), "string"
    else:
        return value
    if not ok:
        raise ConfigError(f"option {key} needs a {want}, got {value!r}", hint=f"the default is {default!r}")
    return value
