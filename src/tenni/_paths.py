"""Where tenni keeps its caches, and atomic writes so nothing is ever half-written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
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
    ``marker``, a non-empty ``target`` without that file (someone else's folder) is refused, never replaced; in
    one with it, files the new build does not write (the user's notes, ``.git``) are moved into the new folder.
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
        with signals_deferred():  # a Ctrl-C now would strand the user's files between the two folders
            old = None
            if self.target.exists():
                # what the new build does not replace (the user's notes, .git, anything else) moves into it:
                # replacing the folder never deletes a file tenni did not write
                for entry in self.target.iterdir():
                    if not os.path.lexists(self.tmp / entry.name):
                        os.replace(entry, self.tmp / entry.name)
                old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(self.target, old)
            os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


@contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM back (they arrive when the block ends) around a few renames that must all happen:
    an interrupt between them would leave the user's files split across two folders. Off the main thread, or where
    signal masks do not exist, the block runs as it is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def check_writable(path: str | Path, *, folder: bool = False, option: str = "-o") -> None:
    """Raise a one-line error now, before any work, when ``path`` could not be written at the end: a file where a
    folder is needed (or the reverse), a read-only or virtual file system (``/proc``), a folder without write
    permission. Probed by creating (and removing) a temporary file where the output will go, which is what the
    final atomic write does."""
    from .errors import TenniError

    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        what = "a folder" if path.is_dir() else "a file"
        raise TenniError(f"is {what}, but {option} needs a {kind} here", path=path,
                         hint=f"pass {option} with a new {kind} name")
    probe_in = path if folder and path.is_dir() else path.parent
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise TenniError(f"cannot create the {kind} under {probe_in}: it is a file, not a folder", path=path,
                         hint=f"pass {option} with a path whose parents are folders")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".tenni-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise TenniError(f"cannot write there ({err.strerror or type(err).__name__} in {probe_in})", path=path,
                         hint=f"pass {option} with a folder you can write to") from None


OWNED_MARKER = ".tenni-written.json"


def unowned(folder: str | Path, names) -> list[str]:
    """Which of ``names`` exist in ``folder`` without having been written there by tenni (``write_owned``), or were
    changed since: the files a command must not replace. Hidden names count like any other."""
    folder = Path(folder)
    try:
        owned = json.loads((folder / OWNED_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        owned = {}
    owned = owned if isinstance(owned, dict) else {}
    found = []
    for name in names:
        f = folder / name
        if not os.path.lexists(f):
            continue
        if f.is_symlink() or not f.is_file() or owned.get(name) != sha256_file(f):
            found.append(name)
    return found


def write_owned(folder: str | Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> content) atomically into ``folder`` and record their hashes in a hidden marker, so
    a later run knows it may replace them (see ``unowned``)."""
    folder = Path(folder)
    marker = folder / OWNED_MARKER
    try:
        owned = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        owned = {}
    owned = owned if isinstance(owned, dict) else {}
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        owned[name] = hashlib.sha256(data).hexdigest()
    atomic_write_json(marker, owned)


def refuse_foreign_file(path: str | Path, looks_ours, what: str, option: str = "-o") -> None:
    """Raise now if ``path`` exists but is not a file this command writes (``looks_ours(first 64 KB)`` is false):
    re-running a command replaces its own earlier output; a user's file of the same name is never overwritten.
    Checked with lstat first, so a FIFO or device is never opened."""
    import stat

    from .errors import TenniError

    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:  # absent, or under a file: check_writable says what is wrong
        return
    if not stat.S_ISREG(st.st_mode):
        raise TenniError("exists and is not a regular file; refusing to replace it", path=path,
                         hint=f"pass {option} with a new file name")
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError as err:
        raise TenniError(f"cannot read the existing file ({err.strerror})", path=path) from None
    if head and not looks_ours(head):
        raise TenniError(f"exists and does not look like {what} tenni wrote; refusing to overwrite it", path=path,
                         hint=f"pass {option} with a new file name, or move the file away first")


_KEY_MEMO: dict[tuple, bytes] = {}


def file_key(path: str) -> bytes:
    """blake2b of the file's bytes (memoised per path, size and mtime): the cache follows content, not names."""
    st = os.stat(path)
    memo = (path, st.st_size, st.st_mtime_ns)
    key = _KEY_MEMO.get(memo)
    if key is None:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        key = _KEY_MEMO[memo] = digest.digest()
    return key
