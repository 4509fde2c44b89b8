"""Reading large results files on every core: the files are cut into contiguous byte ranges at line ends, each range
read by its own process (the parent reads the first, forked children the others) into an accumulator the caller
defines, and the accumulators come back in file order for the caller to merge (:func:`parallel_reduce`).

Each range goes through the reader's common path only (:mod:`ablate.store.reader`): one JSON object per line,
valid against the schema, of the suite its file is named for. Anything else -- a line that is not such an object, an
invalid row, a row of another suite, a torn final line, an error in a child -- makes :func:`parallel_reduce` answer
``None`` and the caller reads serially, so errors, warnings and held-back rows are exactly the serial reader's.
Small inputs, one CPU, platforms without ``fork`` and processes with other Python threads are read serially too.
``$ABLATE_READ_JOBS`` caps the processes (default: the CPUs this process may use; 1: always serial).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from ablate.errors import ConfigError
from ablate.store.paths import named_suite
from ablate.store.reader import common_object, iter_rows
from ablate.store.schema import row_problem

__all__ = ["READ_JOBS_ENV", "MIN_BYTES", "Accumulator", "env_jobs", "read_jobs", "segments", "read_into",
           "parallel_reduce"]

READ_JOBS_ENV = "ABLATE_READ_JOBS"
MIN_BYTES = 16 * 2**20  # below this a fork and the merge cost more than a second process saves


class Accumulator(Protocol):
    def add(self, file: Path, row: dict[str, Any]) -> None: ...


class Mergeable(Accumulator, Protocol):
    def merge(self, later: Any) -> None: ...


A = TypeVar("A", bound=Accumulator)
M = TypeVar("M", bound=Mergeable)
Segment = tuple[Path, int, int]  # (file, first byte, end byte): whole lines


class _Fallback(Exception):
    """A line the fast path leaves to the serial reader."""


def env_jobs(env_var: str, one: str) -> int:
    """A process count from ``$env_var`` (a whole number >= 1; ``one`` says what 1 means), else the CPUs this process
    may use."""
    raw = os.environ.get(env_var, "").strip()
    if raw:
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ConfigError(f"{env_var}={raw!r} is not a whole number of processes >= 1 (1: {one})")
        return int(raw)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1


def read_jobs() -> int:
    """How many processes may read at once: ``$ABLATE_READ_JOBS``, else the CPUs this process may use."""
    return env_jobs(READ_JOBS_ENV, "read serially")


def _line_end(path: Path, offset: int, size: int) -> int:
    """The first byte after the line holding byte ``offset - 1`` (``offset`` itself at a line start)."""
    if offset <= 0:
        return 0
    with open(path, "rb") as fh:
        fh.seek(offset - 1)
        fh.readline()
        return min(fh.tell(), size)


def segments(files: Sequence[Path], jobs: int) -> list[list[Segment]]:
    """``files`` cut into at most ``jobs`` parts of about equal bytes, each a list of whole-line byte ranges in file
    order; empty parts are dropped."""
    sizes = [(Path(f), os.path.getsize(f)) for f in files]
    total = sum(s for _, s in sizes)
    per = max(1, -(-total // max(1, jobs)))
    parts: list[list[Segment]] = [[]]
    room = per
    for f, size in sizes:
        start = 0
        while start < size:
            end = size if size - start <= room else _line_end(f, start + room, size)
            if end > start:
                parts[-1].append((f, start, end))
            room -= end - start
            start = end
            if room <= 0 and len(parts) < jobs:
                parts.append([])
                room = per
            elif room <= 0:
                room = total + 1  # the last part takes the rest
    return [p for p in parts if p]


def _rows(part: Sequence[Segment]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The rows of ``part`` through the reader's common path; :class:`_Fallback` at anything else."""
    for path, start, end in part:
        named = named_suite(path)
        with open(path, "rb") as fh:
            fh.seek(start)
            pos = start
            for raw in fh:
                pos += len(raw)
                obj = common_object(raw)
                if obj is None:
                    if raw.strip():
                        raise _Fallback
                elif row_problem(obj) is not None or (named is not None and obj.get("suite") != named):
                    raise _Fallback
                else:
                    yield path, obj
                if pos >= end:
                    break


def _fill(make: Callable[[], A], part: Sequence[Segment]) -> A:
    acc = make()
    add = acc.add
    for f, r in _rows(part):
        add(f, r)
    return acc


def _child(make: Callable[[], A], part: Sequence[Segment], w: int) -> None:
    """In a forked child: read ``part``, send ``("ok", accumulator)`` or ``("serial", None)``, exit."""
    code = 0
    try:
        try:
            msg: tuple[str, Any] = ("ok", _fill(make, part))
        except BaseException:  # noqa: BLE001 -- any trouble: the parent reads serially and reports it
            msg = ("serial", None)
        data = memoryview(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        while data:
            data = data[os.write(w, data):]
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


def read_into(files: Sequence[Path], make: Callable[[], M]) -> M:
    """``make()`` fed every row of ``files`` in order (``add(file, row)``): read in parts (:func:`parallel_reduce`)
    and merged (``merge(later)``), or serially through :func:`ablate.store.reader.iter_rows` (its errors and
    warnings)."""
    parts = parallel_reduce(files, make)
    if parts is None:
        got = make()
        add = got.add
        for f, r in iter_rows(files, with_file=True):
            add(f, r)
        return got
    got = parts[0]
    for later in parts[1:]:
        got.merge(later)
    return got


def parallel_reduce(files: Sequence[Path], make: Callable[[], A], *, jobs: int | None = None,
                    min_bytes: int | None = None) -> list[A] | None:
    """One accumulator per part of ``files`` (``make()``, fed ``add(file, row)`` for each row in order), in file
    order; ``None`` when the caller should read serially (see the module docstring). ``min_bytes``: read serially
    below this many bytes in all (default :data:`MIN_BYTES`)."""
    jobs = read_jobs() if jobs is None else jobs
    min_bytes = MIN_BYTES if min_bytes is None else min_bytes
    if jobs <= 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        return None
    try:
        if sum(os.path.getsize(f) for f in files) < min_bytes:
            return None
        parts = segments(files, jobs)
    except OSError:
        return None  # the serial reader says what is wrong, in one line
    if len(parts) < 2:
        return None
    children: list[tuple[int, int]] = []  # (pid, read end)
    try:
        gc.freeze()  # the children's collections leave the parent's objects alone (no copy of their pages)
        try:
            for part in parts[1:]:
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    _child(make, part, w)
                os.close(w)
                children.append((pid, r))
        finally:
            gc.unfreeze()
        try:
            out = [_fill(make, parts[0])]
        except _Fallback:
            return None
        for i, (pid, r) in enumerate(children):
            children[i] = (pid, -1)  # read and reaped here, whatever happens
            with os.fdopen(r, "rb") as fh:
                data = fh.read()
            _, status = os.waitpid(pid, 0)
            try:
                kind, acc = pickle.loads(data) if data and status == 0 else ("serial", None)
            except Exception:  # noqa: BLE001
                kind, acc = "serial", None
            if kind != "ok":
                return None
            out.append(acc)
        return out
    finally:
        for pid, r in children:  # on an early return or an error: no child left behind
            if r < 0:
                continue
            with contextlib.suppress(OSError):
                os.close(r)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
