"""The results store: JSONL files, one flat JSON object (a *row*) per line -- here, how rows are made and written.

Writing (:func:`append_row`) is safe from many processes at once: each row is serialized first and then written with
one ``os.write`` of the whole line to a file opened ``O_APPEND``, under an exclusive ``flock``, followed by ``fsync``.
A reader therefore sees whole lines only, except after a crash mid-write, which can leave a final line without its
newline; the readers skip such a torn tail (with a warning) and the next :func:`append_row` removes it.

Resuming: every row carries ``row_key`` (:func:`ablate.store.encode.row_key` of the fields that identify the
measurement) and ``status``; :class:`ResultWriter` skips the keys whose status is terminal on a re-run.

The rest of the store, by what it holds: :mod:`ablate.store.schema` (the row schema, documented in
``docs/results-schema.md``), :mod:`ablate.store.encode` (JSON values, the line, ``row_key``),
:mod:`ablate.store.paths` (results files, launch folders, shards), :mod:`ablate.store.reader` (the streaming,
validated reader: ``iter_rows``, ``read_rows``, ``done_keys``, ``reading``) and :mod:`ablate.store.frame` (the newest
row per measurement, ``to_frame``). The names other modules use are importable from here too.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Mapping

from ablate.errors import AblateError, ConfigError, UnavailableError
from ablate.store.atomic import append_all, check_appendable, is_storage_error, storage_error, writing
from ablate.store.encode import flatten, row_key, serialize_row, to_jsonable
from ablate.store.frame import to_frame
from ablate.store.paths import PathLike, iter_files, launch_dir, named_suite, shard_files, shard_path
from ablate.store.reader import (RUN_HINT, InvalidRowError, ResultsWarning, done_keys, iter_rows, read_rows,
                                 reading)
from ablate.store.schema import (CONFIG_PREFIX, ENV_PREFIX, RESERVED_COLUMNS, SCHEMA_VERSION, STATUSES, SUITES,
                                 TERMINAL_STATUSES)

try:  # POSIX; on other platforms O_APPEND single writes still keep lines whole on local disks
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [  # made here, and (re-exported) the names other modules import from here
    "append_row", "make_row", "new_run_id", "current_run_id", "RUN_ID_ENV", "status_from_exception", "ResultWriter",
    "SCHEMA_VERSION", "STATUSES", "TERMINAL_STATUSES", "RESERVED_COLUMNS", "PathLike", "iter_files", "launch_dir",
    "named_suite", "shard_files", "shard_path", "InvalidRowError", "ResultsWarning", "reading", "read_rows",
    "iter_rows", "done_keys", "to_frame", "row_key", "flatten", "to_jsonable",
]


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _drop_torn_tail(fd: int, path: Path) -> None:
    """If the file does not end in a newline, a writer died mid-line: cut that partial line off (we hold the lock)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    chunk = 1 << 16
    cut = 0
    while end > 0:
        start = max(0, end - chunk)
        buf = os.pread(fd, end - start, start)
        nl = buf.rfind(b"\n")
        if nl >= 0:
            cut = start + nl + 1
            break
        end = start
    tail = os.pread(fd, size - cut, cut)
    try:  # a complete row that merely lacks its newline (hand edited): keep it
        if isinstance(json.loads(tail.decode("utf-8")), dict):
            os.write(fd, b"\n")
            return
    except (ValueError, UnicodeDecodeError):
        pass
    os.ftruncate(fd, cut)
    warnings.warn(f"results file {path}: removed a torn final line ({size - cut} bytes) left by an interrupted "
                  f"write", ResultsWarning, stacklevel=3)


def append_row(path: PathLike, row: Mapping[str, Any]) -> dict[str, Any]:
    """Append ``row`` as one line of JSON to ``path`` (created with its parent folders), atomically.

    Nested dicts are flattened with dotted keys; values are converted to JSON types (non-finite floats → null).
    Returns the row as stored. Safe to call from several processes on the same file at once.
    """
    data = serialize_row(row)  # serialize first: a bad value never leaves half a line behind
    path = Path(path)
    with writing(path, "append to"):  # a full disk, a read-only file, too many open files: one line
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            _drop_torn_tail(fd, path)
            append_all(fd, data, path)  # the whole line or, on an OS error, nothing (the file cut back)
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return json.loads(data)


# ---------------------------------------------------------------------------------------------------------------
# Rows


_RUN_ID: str | None = None


def new_run_id() -> str:
    """A fresh id: UTC time plus random hex, e.g. ``20250101T120000Z-3f9a2c``; sorts by start time."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


RUN_ID_ENV = "ABLATE_RUN_ID"


def current_run_id() -> str:
    """This process's run id (made on first use): every row written by one ``ablate run`` shares it -- including
    the rows of the workers and ranks it launches, which inherit it through ``$ABLATE_RUN_ID``."""
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = os.environ.get(RUN_ID_ENV) or new_run_id()
    return _RUN_ID


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_row(suite: str, status: str, key_fields: Mapping[str, Any], metrics: Mapping[str, Any] | None = None,
             config: Any = None, *, reason: str = "", run_id: str | None = None,
             env: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A result row following ``docs/results-schema.md``.

    * ``key_fields`` identify the measurement (they become top-level columns and ``row_key = row_key(key_fields)``);
      include everything that makes two measurements different: variant keys, lengths, seed, device, dtype, ...
    * ``metrics`` are the measured values (top-level columns; ``None`` / non-finite → null).
    * ``config`` (a dict or a dataclass, possibly nested) is recorded flattened under ``config.``.
    * ``status`` is one of :data:`STATUSES`; ``reason`` says why a row is not ``ok`` (defaults to the status).
    * ``env`` overrides the environment columns (default :func:`ablate.store.env.env_columns`).
    """
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
    key_fields = dict(key_fields)
    metrics = dict(metrics or {})
    for name in list(key_fields) + list(metrics):
        if name in RESERVED_COLUMNS or name.startswith((CONFIG_PREFIX, ENV_PREFIX)):
            raise ValueError(f"result column {name!r} is reserved; rename it")
    clash = sorted(set(key_fields) & set(metrics))
    if clash:
        raise ValueError(f"columns {clash} are both key fields and metrics")
    reason = " ".join(str(reason).split()) if reason else ("" if status == "ok" else status)
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "status": status,
        "reason": reason,
        "row_key": row_key(key_fields),
        "key_fields": sorted(key_fields),
        "run_id": run_id or current_run_id(),
        "timestamp": _utc_now(),
    }
    row.update(to_jsonable(flatten(key_fields)))
    row.update(to_jsonable(flatten(metrics)))
    if config is not None:
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = dataclasses.asdict(config)
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict or a dataclass, got {type(config).__name__}")
        row.update(to_jsonable(flatten(config, CONFIG_PREFIX)))
    if env is None:
        from ablate.store.env import env_columns

        env = env_columns()
    row.update(to_jsonable(dict(env)))
    return row


# Allocation failures by their message: CUDA ("CUDA out of memory"), the CPU allocator ("DefaultCPUAllocator: can't
# allocate memory ... Error code 12 (Cannot allocate memory)"), MPS / HIP ("out of memory").
_OOM_PATTERNS = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate")


def status_from_exception(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for a measurement that raised ``exc``: the usual mapping for suites.

    UnavailableError → unavailable; ConfigError (and other AblateErrors) → unsupported; CUDA/CPU out of memory → oom;
    anything else → error. ``reason`` is one line: ``"ExcType: message"`` (at most 500 characters).
    """
    text = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(reason) > 500:
        reason = reason[:497] + "..."
    names = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, UnavailableError):
        status = "unavailable"
    elif isinstance(exc, (ConfigError, AblateError)):
        status = "unsupported"
    elif "OutOfMemoryError" in names or isinstance(exc, MemoryError) or (
            isinstance(exc, RuntimeError) and any(p in text.lower() for p in _OOM_PATTERNS)):
        status = "oom"
    else:
        status = "error"
    return status, reason


class ResultWriter:
    """What a suite needs to write rows and resume: ``done(key_fields)`` and ``write(...)``.

    ::

        w = ResultWriter(results_path(opts, device, preset), suite="extrapolation", resume=opts.resume)
        for cfg in sweep:
            key = {"position": cfg.position, "seq_len": n, "seed": seed, "device": device}
            if w.done(key):
                continue
            try:
                w.write("ok", key, {"ppl": ppl}, config=cfg)
            except Exception as exc:
                w.write_exception(exc, key, config=cfg)
    """

    def __init__(self, path: PathLike, suite: str, *, resume: bool = True, run_id: str | None = None,
                 shard: str | None = None, enabled: bool = True):
        """``path``: the results file. ``shard``: write to this worker's shard of it instead (resume still sees
        every shard). ``enabled=False``: a writer that writes nothing (the non-zero ranks of a distributed run).
        A file that cannot be appended (read-only, a full or read-only file system) raises :class:`StorageError`.

        The rows already there (the file and every shard) are checked first, resuming or not: a row that is not a
        valid row of ``suite`` raises :class:`InvalidRowError` (``file:line: why``) -- a run never skips, rewrites or
        appends past it."""
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")
        self.results = Path(path)
        self.path = shard_path(path, shard) if shard else self.results
        self.suite = suite
        self.run_id = run_id or current_run_id()
        self.enabled = enabled
        try:  # every row is read and checked; only the keys are kept
            done = done_keys(self.results, skip_invalid=False, expect_suite=suite)
        except InvalidRowError as exc:
            raise InvalidRowError(exc.path, exc.line, exc.why, RUN_HINT, text=exc.text) from None
        self._done: set[str] = done if resume else set()
        self.counts: dict[str, int] = {}
        if enabled:  # a file that cannot be appended is refused now, not after the first model trained
            check_appendable(self.path)

    def done(self, key_fields: Mapping[str, Any]) -> bool:
        return row_key(key_fields) in self._done

    def write(self, status: str, key_fields: Mapping[str, Any], metrics: Mapping[str, Any] | None = None,
              config: Any = None, *, reason: str = "") -> dict[str, Any]:
        row = make_row(self.suite, status, key_fields, metrics, config, reason=reason, run_id=self.run_id)
        stored = append_row(self.path, row) if self.enabled else json.loads(serialize_row(row))
        if status in TERMINAL_STATUSES:
            self._done.add(row["row_key"])
        self.counts[status] = self.counts.get(status, 0) + 1
        return stored

    def write_exception(self, exc: BaseException, key_fields: Mapping[str, Any],
                        metrics: Mapping[str, Any] | None = None, config: Any = None) -> dict[str, Any]:
        if is_storage_error(exc):  # a full disk / read-only file is no measurement's outcome: the run stops
            raise storage_error(exc) from None
        status, reason = status_from_exception(exc)
        return self.write(status, key_fields, metrics, config, reason=reason)
