"""Atomic file writes: a temporary file in the target's folder, then ``os.replace`` over the target, so a reader
(or a run killed half-way) never sees half a file. The one writer of every report, index, state and export file;
results rows are appended by :class:`ablate.store.results.ResultWriter` (through :func:`append_all`) and checkpoints by
:mod:`ablate.core.checkpoint` (which also fsyncs).

An OS error on a file a run writes (a full disk, a read-only file or file system, no permission, too many open files)
becomes one :class:`ablate.errors.StorageError` line naming the file, the errno and what to do
(:func:`storage_error`); nothing is left half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Callable, Iterator

from ablate.errors import StorageError

__all__ = ["write_atomic", "write_text", "storage_error", "is_storage_error", "writing", "append_all",
           "check_appendable", "STORAGE_ERRNOS"]

_FULL = "free space or give another --out; rows already written are kept (re-run to resume)"
_DENIED = "make it writable or give another --out"
_ADVICE = {
    errno.ENOSPC: "the disk is full: " + _FULL,
    errno.EDQUOT: "the disk quota is used up: " + _FULL,
    errno.EFBIG: "the file is larger than the file system allows: give another --out",
    errno.EROFS: "the file system is read-only: give another --out",
    errno.EACCES: _DENIED,
    errno.EPERM: _DENIED,
    errno.EMFILE: "this process has too many open files: raise the limit (ulimit -n) and re-run",
    errno.ENFILE: "the system has too many open files: close some programs and re-run",
    errno.EIO: "the disk reported an I/O error: check it, or give another --out",
}
STORAGE_ERRNOS = frozenset(_ADVICE)  # errors of the place a run writes to, never of the measurement


def storage_error(exc: OSError, path: str | os.PathLike | None = None, doing: str = "write") -> StorageError:
    """``exc`` as one line: ``cannot <doing> <path>: <strerror> (<ERRNO>); <what to do>``."""
    if isinstance(exc, StorageError):
        return exc
    where = path if path is not None else (exc.filename or "a file")
    name = errno.errorcode.get(exc.errno or -1, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    advice = _ADVICE.get(exc.errno or -1, "")
    msg = f"cannot {doing} {where}: {text}" + (f" ({name})" if name else "") + (f"; {advice}" if advice else "")
    return StorageError(" ".join(msg.split()), exc.errno, str(where))


def is_storage_error(exc: BaseException) -> bool:
    """An error of where the run writes (disk full, read-only, permission, open files), not of what it measures."""
    return isinstance(exc, StorageError) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS)


@contextlib.contextmanager
def writing(path: str | os.PathLike, doing: str = "write") -> Iterator[None]:
    """Within the block, an :class:`OSError` becomes the one-line :class:`StorageError` naming ``path``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, path, doing) from None


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Create ``path``'s folder, call ``write(tmp)`` to fill a fresh temporary file next to it (unique per process
    and thread; it ends in ``.tmp``), then rename it over ``path``. On any failure the temporary file is removed and
    the target is left as it was; an OS error is raised as :class:`StorageError` naming ``path``. The file gets the
    mode a plain ``open()`` would give it (``0o666`` less the umask), not ``tempfile.mkstemp``'s private ``0o600``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _fresh(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise storage_error(exc, path) from None
        raise
    return path


def _fresh(path: Path) -> Path:
    """A new, empty file next to ``path``, created by the kernel with ``0o666 & ~umask`` (as ``open(path, "w")``
    would): ``O_EXCL`` under a random name, so two writers never share one."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name next to {path}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as UTF-8 with the line endings it has (``\\n``), atomically."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def append_all(fd: int, data: bytes, path: str | os.PathLike) -> None:
    """Append ``data`` through ``fd`` (opened ``O_APPEND``; the caller holds its lock) and fsync. On an OS error
    (ENOSPC after half a line, EIO at fsync, ...) the file is cut back to its length before, so no half line stays,
    and :class:`StorageError` names ``path``."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:  # one write for a whole line in practice; loop only on a short write
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise storage_error(exc, path, "append to") from None


def check_appendable(path: str | os.PathLike) -> None:
    """Refuse (:class:`StorageError`) a file a run will append to but cannot -- before any work. An existing file is
    opened for appending (nothing is written); a missing one is probed in its nearest existing folder by creating
    and removing a temporary file (permission bits do not stop root; a read-only file system or a full inode table
    does)."""
    path = Path(path)
    if path.is_dir():
        raise StorageError(f"cannot append to {path}: it is a folder, not a results file", errno.EISDIR, str(path))
    if path.exists():
        with writing(path, "append to"):
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    with writing(path, "create"):
        _fresh(folder / path.name).unlink()
