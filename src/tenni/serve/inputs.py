"""Turning a request body into the inputs a model takes: texts as they are, images and audio (base64 in JSON, or
multipart files) written to a per-request temporary folder and checked as ``tenni fit`` checks files
(``data.media.check_file``), so a bad item is refused with its position before any model runs."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from .limits import Limits

MODALITY_NOUN = {"text": "texts", "image": "images", "audio": "audio clips"}


class InputError(Exception):
    """A request the client can fix: status code, the field it is about (``inputs[3]``) and a one-line message."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 422, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.headers = headers


# magic numbers of the formats tenni reads; the suffix matters (strategies and decoders go by it)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png", "image"),
    (b"\xff\xd8\xff", ".jpg", "image"),
    (b"II*\x00", ".tiff", "image"),
    (b"MM\x00*", ".tiff", "image"),
    (b"BM", ".bmp", "image"),
    (b"fLaC", ".flac", "audio"),
    (b"OggS", ".ogg", "audio"),
    (b"ID3", ".mp3", "audio"),
)


def sniff(data: bytes, filename: str | None = None) -> tuple[str, str] | None:
    """(suffix, modality) of a media file's bytes; the file name's suffix only when the bytes say nothing."""
    from ..data.media import modality_of_suffix

    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav", "audio"
    for magic, suffix, modality in _SIGNATURES:
        if data.startswith(magic):
            return suffix, modality
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # an MPEG audio frame without an ID3 tag
        return ".mp3", "audio"
    if filename:
        suffix = os.path.splitext(filename)[1].lower()
        modality = modality_of_suffix(suffix)
        if modality:
            return suffix, modality
    return None


def check_texts(items: list, limits: Limits) -> list[str]:
    texts = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            what = "an object (base64 media)" if isinstance(item, dict) else _json_type(item)
            raise InputError(f"{what}, not a text", field=f"inputs[{i}]")
        if len(item) > limits.max_text_chars:
            raise InputError(f"{len(item)} characters; the limit is {limits.max_text_chars}", field=f"inputs[{i}]")
        texts.append(item)
    return texts


def decode_b64_items(items: list) -> list[tuple[bytes, str | None, str]]:
    """``[{"b64": ..., "filename": optional}]`` -> (bytes, filename, field) per item."""
    out = []
    for i, item in enumerate(items):
        field = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise InputError(f"{_json_type(item)}; this model takes files: {{\"b64\": \"<base64 bytes>\"}}",
                             field=field)
        unknown = sorted(set(item) - {"b64", "filename"})
        if unknown:
            raise InputError(f"unknown key '{unknown[0]}' (keys: b64, filename)", field=field)
        data, name = item.get("b64"), item.get("filename")
        if not isinstance(data, str):
            raise InputError(f"'b64' must be a base64 string, not {_json_type(data)}", field=f"{field}.b64")
        if name is not None and not isinstance(name, str):
            raise InputError(f"'filename' must be a string, not {_json_type(name)}", field=f"{field}.filename")
        if data.startswith("data:") and "," in data[:200]:  # a data URL: data:image/png;base64,....
            data = data.split(",", 1)[1]
        try:
            raw = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InputError("not valid base64", field=f"{field}.b64") from None
        out.append((raw, name, field))
    return out


def save_media(files: list[tuple[bytes, str | None, str]], modality: str, limits: Limits, folder: Path) -> list[str]:
    """Write each file under ``folder`` with the suffix its bytes show, check it; its path, in order."""
    from ..data.media import check_file

    paths = []
    for i, (raw, name, field) in enumerate(files):
        if not raw:
            raise InputError("an empty file", field=field)
        kind = sniff(raw, name)
        if kind is None:
            raise InputError("not an image or audio file tenni reads (PNG, JPEG, BMP, TIFF; WAV, FLAC, OGG, MP3)",
                             field=field)
        suffix, found = kind
        if found != modality:
            raise InputError(f"a {suffix[1:].upper()} {found} file, but this model takes {MODALITY_NOUN[modality]}",
                             field=field)
        path = folder / f"{i}{suffix}"
        path.write_bytes(raw)
        _check_size(str(path), modality, limits, field)
        try:
            reason = check_file(str(path), modality)
        except Exception as err:  # e.g. a decoder that is not installed: the client cannot fix it, but it is no 500
            raise InputError(f"cannot read the file ({type(err).__name__})", field=field) from None
        finally:
            _forget(str(path))
        if reason:
            raise InputError(reason, field=field)
        paths.append(str(path))
    return paths


def _check_size(path: str, modality: str, limits: Limits, field: str) -> None:
    """Pixels / seconds from the file's header, before anything decodes the whole of it."""
    if modality == "image":
        try:
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
        except Exception:
            return  # undecodable: check_file says why
        if w * h > limits.max_image_pixels:
            raise InputError(f"{w}x{h} = {w * h} pixels; the limit is {limits.max_image_pixels}", field=field)
    else:
        try:
            import soundfile as sf

            info = sf.info(path)
            seconds = info.frames / info.samplerate if info.samplerate else 0.0
        except Exception:
            try:
                from ..data.media import load_audio

                wav, rate = load_audio(path)
                seconds = len(wav) / rate
            except Exception:
                return  # check_file says why
        if seconds > limits.max_audio_seconds:
            raise InputError(f"{seconds:.1f} s of audio; the limit is {limits.max_audio_seconds:g} s", field=field)


def _forget(path: str) -> None:
    """Drop the memo entries data.media keeps per checked file (keyed by path, size and mtime): a server's
    temporary files would otherwise grow them for as long as it runs. Call while the file still exists."""
    from ..data import media

    try:
        st = os.stat(path)
    except OSError:
        return
    key = (path, st.st_size, st.st_mtime_ns)
    for memo in (getattr(media, "_CHECKED", None), getattr(media, "_KEY_MEMO", None)):
        if isinstance(memo, dict):
            memo.pop(key, None)


def forget_files(paths: list[str]) -> None:
    for path in paths:
        _forget(path)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
