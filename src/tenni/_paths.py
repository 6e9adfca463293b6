"""Where tenni keeps its caches, and atomic writes so nothing is ever half-written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path


def cache_dir() -> Path:
    """``$TENNI_CACHE_DIR``, else ``$XDG_CACHE_HOME/tenni``, else ``~/.cache/tenni``."""
    root = os.environ.get("TENNI_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tenni"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``); elsewhere set and
    restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (0o666 less the umask): temporary files are created 0o600,
    and a model or report must stay readable by whoever could read the folder."""
    return 0o666 & ~_umask()


def _chmod(path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError:  # file systems without Unix modes (vfat, some FUSE mounts): keep what they give
        pass


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


class AtomicDirectory:
    """Build a directory under a temporary name and swap it into place on success.

    ``with AtomicDirectory(target) as tmp: write files into tmp`` — on an exception (or Ctrl-C) the temporary
    directory is removed and ``target`` is untouched; on success ``target`` is replaced in two renames. With
    ``marker``, a non-empty ``target`` without that file (someone else's folder) is refused, never replaced.
    """

    def __init__(self, target: str | Path, marker: str | None = None):
        self.target = Path(target)
        self.marker = marker

    def check(self) -> None:
        """Raise now if ``target`` could not be replaced (a file, or someone else's folder): call it before long
        work whose result goes there."""
        from .errors import TenniError

        if self.target.exists() and not self.target.is_dir():
            raise TenniError("exists and is a file, not a folder; refusing to replace it", path=self.target,
                             hint="choose a new or empty output folder")
        blocking = next((p for p in self.target.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise TenniError(f"cannot create a folder under {blocking}: it is a file", path=self.target,
                             hint="choose an output folder whose parents are folders")
        if (self.marker and self.target.is_dir() and any(self.target.iterdir())
                and not (self.target / self.marker).exists()):
            raise TenniError("exists and was not written by tenni; refusing to replace it", path=self.target,
                             hint="choose a new or empty output folder")

    def __enter__(self) -> Path:
        self.check()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.target.parent / f".{self.target.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        mode = _file_mode()
        for f in self.tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                _chmod(f, mode)
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False
