"""Image and audio files: finding them, checking them, decoding them.

A media Dataset holds absolute file paths as its inputs. Every file is opened once when the data is read, so a
corrupt, empty, unreadable or silent file is reported up front with its path (not half-way through a training
run): the run stops with a list of them, or skips them with a count when ``skip_bad_files`` is set. Nothing else
is dropped.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .._limits import _LIMITS, media_limits, set_media_limits  # noqa: F401  (media_limits: re-exported)
from .._paths import file_key  # noqa: F401  (the content key of a file: media users read it here)
from ..errors import DataError
from .columns import LABEL_COLUMNS, is_missing, normalise_label, pick_column

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3"})
MEDIA_SUFFIXES = IMAGE_SUFFIXES | AUDIO_SUFFIXES
PATH_COLUMNS = ("path", "file", "filename", "filepath", "file_path", "image", "image_path", "audio", "audio_path")
SILENCE_PEAK = 1e-4
"""An audio file whose loudest sample is below this (full scale = 1) holds nothing to classify."""


_PIL_LOCK = threading.Lock()


def _open_image(path: str):
    """``Image.open`` with tenni's pixel limit instead of PIL's (whose warning would print raw, and whose error
    would not say how to raise it): a DataError naming the file and ``--max-pixels``."""
    from PIL import Image

    with _PIL_LOCK:  # PIL's limit is a module attribute: off only while the header is read, then restored
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    limit = _LIMITS.get()[0]
    width, height = im.size
    if width * height > limit:
        im.close()
        raise DataError(f"the image is {width} x {height} = {width * height:,} pixels, more than the limit of "
                        f"{limit:,} (decoding it would take {width * height * 4 / 2**30:.1f} GB or more)",
                        path=path, hint=f"shrink the image, or pass --max-pixels {width * height} to read it anyway")
    return im


def modality_of_suffix(suffix: str) -> str | None:
    suffix = suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    return None


def infer_modality(inputs) -> str:
    """'image' or 'audio' when every input is a path to such a file, else 'text'.

    Strategies only see their inputs (the scikit-learn contract), so those that work differently per modality
    (scratch, finetune) tell the modality from the inputs themselves.
    """
    kinds = set()
    for item in inputs:
        item = str(item)
        if len(item) > 4096 or "\n" in item:
            return "text"
        kind = modality_of_suffix(os.path.splitext(item)[1])
        if kind is None or not os.path.isfile(item):
            return "text"
        kinds.add(kind)
        if len(kinds) > 1:
            raise DataError("the data mixes image and audio files", hint="keep one modality per dataset")
    return kinds.pop() if kinds else "text"


# --- decoding -----------------------------------------------------------------------------------------------

def load_image(path: str, size: int | None = None):
    """A PIL RGB image; grayscale, palette, 16-bit and RGBA (composited on white) are converted.

    ``size`` lets JPEG decoding skip resolution it will not need (draft mode), which is most of its cost.
    """
    from PIL import Image

    with _open_image(path) as im:
        if size and im.format == "JPEG":
            im.draft("RGB", (size, size))
        im.load()
        if im.getexif().get(0x0112, 1) in range(2, 9):  # EXIF orientation: as a camera or phone shows the photo
            from PIL import ImageOps

            im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            span = max(arr.max() - arr.min(), 1e-9)
            return Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8)).convert("RGB")
        if im.mode == "F":
            arr = np.asarray(im, dtype=np.float64)
            span = max(arr.max() - arr.min(), 1e-9)
            return Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8)).convert("RGB")
        return im.convert("RGB")


def image_array(path: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the image resized on its short side and centre-cropped to a square."""
    from PIL import Image

    im = load_image(path, size)
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_audio(path: str, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1], resampled to ``sample_rate`` when given; (samples, rate)."""
    try:
        import soundfile as sf
    except ImportError:
        raise DataError("reading audio needs the soundfile package", path=path,
                        hint="pip install 'tenni[audio]'") from None
    try:
        seconds = sf.info(path).duration
    except Exception:  # formats libsndfile lacks (mp3 on old builds): the fallback reads them
        seconds = None
    limit = _LIMITS.get()[1]
    if seconds is not None and seconds > limit:
        raise DataError(f"the recording is {seconds:.0f} s long, more than the limit of {limit:.0f} s",
                        path=path, hint=f"cut it into shorter clips, or pass --max-audio-seconds {seconds:.0f}")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile errors for damaged files; fall back for formats it lacks
        data, rate = _load_audio_fallback(path, err)
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sample_rate and rate != sample_rate:
        wav = resample(wav, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(wav, dtype=np.float32), int(rate)


def _load_audio_fallback(path: str, first_error: Exception):
    try:
        import audioread  # what librosa uses for MP3 on old libsndfile builds
    except ImportError:
        raise first_error from None
    try:
        with audioread.audio_open(path) as f:
            rate, channels = f.samplerate, f.channels
            raw = b"".join(f)
    except Exception as err:
        if str(err).strip():
            raise
        raise first_error from None  # audioread's errors often say nothing; libsndfile's say what is wrong
    data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return data.reshape(-1, channels), rate


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    try:
        import soxr

        return soxr.resample(wav, rate, target).astype(np.float32)
    except ImportError:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(rate), int(target))
        return resample_poly(wav, target // g, rate // g).astype(np.float32)


def windows(wav: np.ndarray, length: int, *, hop: int | None = None, max_windows: int = 20) -> np.ndarray:
    """(k, length): a short clip zero-padded to one window; a long one cut into windows (at most ``max_windows``,
    spread evenly over the clip), for the backbone to embed and the caller to pool."""
    hop = hop or length
    if len(wav) <= length:
        out = np.zeros((1, length), np.float32)
        out[0, :len(wav)] = wav
        return out
    starts = list(range(0, len(wav) - length + 1, hop))
    if starts[-1] + length < len(wav) and len(wav) - (starts[-1] + length) > length // 4:
        starts.append(len(wav) - length)  # the tail, when it holds more than a quarter window
    if len(starts) > max_windows:
        starts = [starts[int(i)] for i in np.linspace(0, len(starts) - 1, max_windows)]
    return np.stack([wav[s:s + length] for s in starts]).astype(np.float32)


# --- checking -----------------------------------------------------------------------------------------------

_CHECKED: dict[tuple, str | None] = {}


def check_file(path: str, modality: str) -> str | None:
    """None when the file can be used, else why not (memoised per path, size and mtime)."""
    try:
        st = os.stat(path)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if st.st_size == 0:
        return "zero-length file"
    memo = (path, st.st_size, st.st_mtime_ns, _LIMITS.get())
    if memo not in _CHECKED:
        _CHECKED[memo] = _check_image(path) if modality == "image" else _check_audio(path)
    return _CHECKED[memo]


def _check_image(path: str) -> str | None:
    try:
        im = load_image(path, size=64)
    except DataError:
        raise  # over the pixel limit: its own message, not "cannot decode"
    except Exception as err:
        return f"cannot decode the image ({type(err).__name__}: {str(err)[:80]})"
    if min(im.size) < 1:
        return "empty image"
    return None


def _check_audio(path: str) -> str | None:
    try:
        wav, rate = load_audio(path)
    except DataError:
        raise
    except Exception as err:
        return f"cannot decode the audio ({type(err).__name__}: {str(err)[:80]})"
    if len(wav) == 0:
        return "no samples"
    if not np.isfinite(wav).all():
        return "samples are not finite numbers"
    if float(np.abs(wav).max()) < SILENCE_PEAK:
        return "silent (every sample is zero or nearly so)"
    return None


def drop_bad_files(paths: list[str], labels: list[str] | None, sources: list[str], modality: str, *,
                   skip_bad_files: bool, where: str | Path):
    """Check every file; raise a DataError listing the bad ones, or drop them (with a warning) when asked to."""
    bad = [(i, reason) for i, p in enumerate(paths) if (reason := check_file(p, modality)) is not None]
    if not bad:
        return paths, labels, sources
    listing = "; ".join(f"{sources[i]} ({reason})" for i, reason in bad[:10])
    more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
    if not skip_bad_files:
        raise DataError(f"{len(bad)} bad {modality} file(s) of {len(paths)}: {listing}{more}", path=where,
                        hint="fix or delete them, or pass --skip-bad-files to leave them out")
    from .._logging import warn

    warn(f"{where}: skipped {len(bad)} bad {modality} file(s) of {len(paths)}: {listing}{more}")
    keep = sorted(set(range(len(paths))) - {i for i, _ in bad})
    if not keep:
        raise DataError(f"every {modality} file is bad", path=where, hint="check the files")
    return ([paths[i] for i in keep], None if labels is None else [labels[i] for i in keep],
            [sources[i] for i in keep])


# --- folders and tables -------------------------------------------------------------------------------------

def media_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def folder_modality(folder: Path) -> str | None:
    """'image' or 'audio' when the folder holds such files (and no .txt examples), else None."""
    files = media_files(folder)
    kinds = {modality_of_suffix(p.suffix) for p in files}
    if not kinds or len(list(folder.rglob("*.txt"))) > len(files):  # a text dataset with a stray picture
        return None
    if len(kinds) > 1:
        raise DataError("the folder mixes image and audio files", path=folder, hint="keep one modality per folder")
    return kinds.pop()


def split_folder(folder: Path) -> tuple[Path, Path | None]:
    """(train folder, test folder or None) for a folder with an optional ``train/`` and ``test/`` level."""
    train, test = folder / "train", folder / "test"
    if train.is_dir():
        return train, test if test.is_dir() else None
    return folder, None


def read_media_folder(root: Path, modality: str, *, labeled: bool, skip_bad_files: bool):
    """Inputs, labels and sources from ``root/<class>/<file>`` (or a flat folder when unlabeled)."""
    from .dataset import Dataset

    root, _ = split_folder(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels, sources = [], [], []
    flat = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES]
    if flat and (not labeled or not class_dirs):
        if labeled:
            raise DataError(f"the {modality} files are not in class sub-folders", path=root,
                            hint="put each class's files in a sub-folder named after the class")
        files = flat if not class_dirs else media_files(root)
        paths = [str(p.resolve()) for p in files]
        sources = [str(p) for p in files]
        paths, _, sources = drop_bad_files(paths, None, sources, modality, skip_bad_files=skip_bad_files,
                                           where=root)
        return Dataset(inputs=paths, labels=None, modality=modality, sources=sources, path=str(root))
    for cls_dir in class_dirs:
        for f in media_files(cls_dir):
            if modality_of_suffix(f.suffix) != modality:
                continue
            paths.append(str(f.resolve()))
            labels.append(cls_dir.name)
            sources.append(str(f))
    if not paths:
        raise DataError(f"no {modality} files in the class sub-folders", path=root)
    _warn_ignored(root, set(paths), modality)
    paths, labels, sources = drop_bad_files(paths, labels, sources, modality, skip_bad_files=skip_bad_files,
                                            where=root)
    return Dataset(inputs=paths, labels=labels, modality=modality, sources=sources, path=str(root))


def _warn_ignored(root: Path, used: set[str], modality: str) -> None:
    """Nothing is dropped silently: files in the class folders that are not read are counted."""
    ignored = [p for p in sorted(root.rglob("*")) if p.is_file() and str(p.resolve()) not in used
               and not any(part.startswith(".") for part in p.relative_to(root).parts)
               and p.parent != root]
    if ignored:
        from .._logging import warn

        kinds = ", ".join(sorted({p.suffix.lower() or "(no suffix)" for p in ignored})[:5])
        warn(f"{root}: ignored {len(ignored)} file(s) that are not {modality} files ({kinds}), e.g. {ignored[0]}")


def media_table(path: Path, rows, columns, label_col, *, labeled: bool, skip_bad_files: bool):
    """A CSV/JSONL whose path column names image or audio files (relative to the table's folder); else None."""
    from .dataset import Dataset

    by_lower = {str(c).lower(): c for c in columns}
    pcol = next((by_lower[c] for c in PATH_COLUMNS if c in by_lower), None)
    if pcol is None:
        return None
    first = next((str(r.get(pcol) or "").strip() for _, r in rows if str(r.get(pcol) or "").strip()), "")
    modality = modality_of_suffix(Path(first).suffix)
    if modality is None:
        return None
    lcol = pick_column(columns, label_col, LABEL_COLUMNS, "label", path, required=labeled)
    paths, labels, sources = [], [], []
    for row_no, record in rows:
        value = str(record.get(pcol) or "").strip()
        if not value:
            raise DataError("empty path", path=path, row=row_no, column=pcol, hint="fill it in or delete the row")
        file = Path(value).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if modality_of_suffix(file.suffix) != modality:
            raise DataError(f"'{value}' is not a {modality} file ({', '.join(sorted(MEDIA_SUFFIXES))})",
                            path=path, row=row_no, column=pcol, hint="one modality per table")
        if not file.exists():
            raise DataError(f"no such file '{value}'", path=path, row=row_no, column=pcol,
                            hint="paths are relative to the table's folder")
        paths.append(str(file.resolve()))
        sources.append(f"{path}:{row_no}")
        if lcol is not None:
            value = record.get(lcol)
            label = "" if is_missing(value) else str(value).strip()  # NaN in JSONL is missing, not a class "nan"
            if not label:
                if labeled:
                    raise DataError("missing label", path=path, row=row_no, column=lcol)
                labels.append(None)
            else:
                labels.append(normalise_label(label))
    has_labels = lcol is not None and all(lab is not None for lab in labels)
    paths, labels, sources = drop_bad_files(paths, labels if has_labels else None, sources, modality,
                                            skip_bad_files=skip_bad_files, where=path)
    return Dataset(inputs=paths, labels=labels, modality=modality, sources=sources, path=str(path))
