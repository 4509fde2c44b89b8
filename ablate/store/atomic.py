"""Atomic file writes: a temporary file in the target's folder, then ``os.replace`` over the target, so a reader
(or a run killed half-way) never sees half a file. The one writer of every report, index, state and export file;
results rows are appended by :class:`ablate.store.results.ResultWriter` and checkpoints by :mod:`ablate.core.checkpoint`
(which also fsyncs)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Callable

__all__ = ["write_atomic", "write_text"]


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Create ``path``'s folder, call ``write(tmp)`` to fill a fresh temporary file next to it (unique per process
    and thread; it ends in ``.tmp``), then rename it over ``path``. On any failure the temporary file is removed and
    the target is left as it was. The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask),
    not ``tempfile.mkstemp``'s private ``0o600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
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
