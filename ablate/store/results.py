"""The results store: JSONL files, one flat JSON object (a *row*) per line.

Writing (:func:`append_row`) is safe from many processes at once: each row is serialized first and then written with
one ``os.write`` of the whole line to a file opened ``O_APPEND``, under an exclusive ``flock``, followed by ``fsync``.
A reader therefore sees whole lines only, except after a crash mid-write, which can leave a final line without its
newline; :func:`read_rows` skips such a torn tail (with a warning) and the next :func:`append_row` removes it.

Resuming: every row carries ``row_key`` (:func:`row_key` of the fields that identify the measurement) and ``status``;
:func:`done_keys` returns the keys whose status is terminal, which a suite skips on a re-run.

The row schema is defined in :mod:`ablate.store.schema` (documented in ``docs/results-schema.md``, published as
``docs/results.schema.json``); :func:`make_row` builds rows that follow it, and every read checks it: an invalid row
raises :class:`InvalidRowError` (``file:line: why``) unless the reader is asked to skip invalid rows
(``skip_invalid=True``, or within :func:`reading`), which it then does with one :class:`ResultsWarning` per file.
Reading never rewrites a file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import secrets
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Union

from ablate.errors import AblateError, ConfigError, ResultsFileError, UnavailableError
from ablate.store.atomic import append_all, check_appendable, is_storage_error, storage_error, writing
from ablate.store.schema import (CONFIG_PREFIX, ENV_PREFIX, RESERVED_COLUMNS, SCHEMA_VERSION, STATUSES, SUITES,
                           TERMINAL_STATUSES, row_problem)

try:  # POSIX; on other platforms O_APPEND single writes still keep lines whole on local disks
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION", "STATUSES", "TERMINAL_STATUSES", "RESERVED_COLUMNS", "ResultsWarning", "PathLike", "Paths",
    "append_row", "read_rows", "iter_files", "row_key", "done_keys", "to_frame", "make_row", "new_run_id",
    "current_run_id", "status_from_exception", "to_jsonable", "ResultWriter", "launch_dir", "shard_path",
    "shard_files", "RUN_ID_ENV", "InvalidRowError", "reading", "named_suite",
]

# SCHEMA_VERSION, STATUSES, TERMINAL_STATUSES, RESERVED_COLUMNS, CONFIG_PREFIX, ENV_PREFIX: see ablate.store.schema

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Iterable[PathLike]]


class ResultsWarning(UserWarning):
    """Something in a results file was skipped or repaired (a torn final line, invalid rows asked to be skipped)."""


class InvalidRowError(ResultsFileError):
    """A line of a results file that is not a valid result row: ``str()`` is ``file:line: why; hint`` (one line)."""

    def __init__(self, path: PathLike, line: int, why: str, hint: str = "", text: str | None = None):
        self.path, self.line, self.why, self.hint = Path(path), int(line), " ".join(str(why).split()), hint
        self.text = text if text is not None else f"{self.path}:{self.line}: {self.why}"
        super().__init__(f"{self.text}; {hint}" if hint else self.text)

    def __reduce__(self):  # pickled whole (a worker's error reaches its launcher through submitit)
        return type(self), (self.path, self.line, self.why, self.hint, self.text)


# ---------------------------------------------------------------------------------------------------------------
# Serialization


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; non-finite floats become None (the store is strict JSON)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Enum):
        return to_jsonable(value.value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        try:
            return to_jsonable(tolist())
        except Exception:
            pass
    return str(value)  # torch.dtype, torch.device, ...


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if not isinstance(k, str):
            raise TypeError(f"result row keys must be strings, got {k!r}")
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _serialize(row: Mapping[str, Any]) -> bytes:
    if not isinstance(row, Mapping):
        raise TypeError(f"a result row must be a dict, got {type(row).__name__}")
    flat = to_jsonable(flatten(row))
    line = json.dumps(flat, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (line + "\n").encode("utf-8")


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
    data = _serialize(row)  # serialize first: a bad value never leaves half a line behind
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
# Reading


SHARD_DIR = "shards"


def launch_dir(path: PathLike) -> Path:
    """The folder beside results file ``X.jsonl`` that holds what launched workers leave: ``X.launch/``
    (``plan.json``, ``shards/<task>.jsonl``, ``state/<task>.json``, ``logs/``; see :mod:`ablate.launchers.launch`)."""
    path = Path(path)
    return path.parent / f"{_stem(path)}.launch"


def _stem(path: Path) -> str:
    return path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name


def shard_path(path: PathLike, shard: str) -> Path:
    """Where worker ``shard`` writes the rows of results file ``path``: ``X.launch/shards/<shard>.jsonl``."""
    if not shard or "/" in shard or shard.startswith("."):
        raise ValueError(f"bad shard name {shard!r}")
    return launch_dir(path) / SHARD_DIR / f"{shard}.jsonl"


def shard_files(path: PathLike) -> list[Path]:
    """The worker shards of results file ``path`` (sorted), if any."""
    folder = launch_dir(path) / SHARD_DIR
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def iter_files(paths: Paths, *, missing_ok: bool = False) -> list[Path]:
    """Expand files and folders (all ``*.jsonl`` below, sorted) into a list of results files.

    A results file ``X.jsonl`` stands for itself and its workers' shards (``X.launch/shards/*.jsonl``), so reading,
    resuming and reporting see the rows of every worker. Each file is listed once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(p.rglob("*.jsonl"), key=lambda f: f.relative_to(p).as_posix()))
        elif p.exists() or shard_files(p):
            if p.exists():
                files.append(p)
            files.extend(shard_files(p))
        elif not missing_ok:
            raise ResultsFileError(f"results file {p} does not exist")
    seen: set[Path] = set()
    unique = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(f)
    return unique


class _NonFinite(Exception):
    """A ``NaN``/``Infinity``/``-Infinity`` token: not strict JSON (a non-finite number is stored as null)."""


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # strict JSON: NaN/Infinity tokens are errors
_RUN_HINT = "fix or remove that line; ablate run never rewrites or skips rows of its results file"
_READ_HINT = "fix or remove that line"


@dataclass
class _Reading:
    skip_invalid: bool = False
    hint: str = ""
    warned: set = field(default_factory=set)


_READING: ContextVar[_Reading | None] = ContextVar("ablate_results_reading", default=None)


@contextmanager
def reading(*, skip_invalid: bool = False, hint: str = "") -> Iterator[None]:
    """Within the block, the readers (:func:`read_rows`, :func:`to_frame`, ...) that are not told otherwise skip
    invalid rows when ``skip_invalid`` (else raise), each warning is given once however often a file is read, and
    ``hint`` ends an invalid row's error (e.g. ``"... or pass --skip-invalid"``). The CLI wraps commands in it."""
    token = _READING.set(_Reading(skip_invalid, hint))
    try:
        yield
    finally:
        _READING.reset(token)


def _warn(msg: str) -> None:
    ctx = _READING.get()
    if ctx is not None:
        if msg in ctx.warned:
            return
        ctx.warned.add(msg)
    warnings.warn(msg, ResultsWarning, stacklevel=4)


def _read_file(path: Path, *, skip_invalid: bool = False, expect_suite: str | None = None,
               hint: str = _READ_HINT) -> list[dict[str, Any]]:
    """The valid rows of one file. Lines that are not JSON objects are reported before rows that break the schema
    (the first problem raises :class:`InvalidRowError`; with ``skip_invalid`` all are skipped, with one warning)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ResultsFileError(f"results file {path} cannot be read: {exc.strerror or exc}") from None
    lines = raw.split(b"\n")
    torn = lines[-1] != b""  # text after the last newline: an unfinished write
    parsed: list[tuple[int, dict[str, Any]]] = []
    bad: list[InvalidRowError] = []
    torn_line = 0  # warned about only when the file is read (an error elsewhere in it is the one line said)
    decode = _DECODER.decode
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = n == len(lines)
        try:
            obj = decode(line.decode("utf-8"))
        except _NonFinite as exc:
            if last and torn and not _complete_object(line):
                torn_line = n
                continue
            bad.append(InvalidRowError(path, n, f"{exc.args[0]} is not strict JSON (the store writes a non-finite "
                                                f"number as null)", hint))
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            if last and torn:
                torn_line = n
                continue
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            bad.append(InvalidRowError(path, n, f"not valid JSON: {msg}", hint,
                                       text=f"results file {path} line {n} is not valid JSON: {msg}"))
            continue
        if type(obj) is not dict:
            bad.append(InvalidRowError(path, n, f"not a JSON object (got {type(obj).__name__})", hint,
                                       text=f"results file {path} line {n} is not a JSON object "
                                            f"(got {type(obj).__name__})"))
            continue
        parsed.append((n, obj))
    if bad and not skip_invalid:
        raise bad[0]
    if expect_suite is None:  # a file named for a suite that holds that suite's rows is that suite's results file
        named = named_suite(path)
        if named is not None and any(obj.get("suite") == named for _, obj in parsed):
            expect_suite = named
    rows: list[dict[str, Any]] = []
    for n, obj in parsed:
        why = row_problem(obj, expect_suite)
        if why is None:
            rows.append(obj)
        elif skip_invalid:
            bad.append(InvalidRowError(path, n, why, hint))
        else:
            raise InvalidRowError(path, n, why, hint)
    if torn_line:
        _warn(f"results file {path} line {torn_line} is incomplete (interrupted write); skipped")
    if bad:
        bad.sort(key=lambda e: e.line)
        at = ", ".join(str(e.line) for e in bad[:10]) + (", ..." if len(bad) > 10 else "")
        _warn(f"results file {path}: skipped {len(bad)} invalid row(s) (line{'s' if len(bad) > 1 else ''} {at}); "
              f"first: {bad[0].text}")
    return rows


def named_suite(path: PathLike) -> str | None:
    """The suite a results file is named for, if any: ``<suite>.jsonl``, a file in a folder named ``<suite>``
    (``results/extrapolation/cpu-tiny.jsonl``, ``runs/training/cpu-tiny.jsonl``), or a worker shard of such a file.

    When such a file holds rows of that suite, :func:`read_rows` reads it as that suite's results file: a row of
    another suite in it is invalid. (A file named for a suite that holds none of its rows -- say ``--out`` was
    named after another suite -- is read as it is.)"""
    path = Path(path)
    if path.parent.name == SHARD_DIR and path.parent.parent.name.endswith(".launch"):
        launch = path.parent.parent
        path = launch.parent / (launch.name[: -len(".launch")] + ".jsonl")
    for name in (_stem(path), path.parent.name):
        if name in SUITES:
            return name
    return None


def _complete_object(line: bytes) -> bool:
    """Whether ``line`` is a whole JSON object once NaN/Infinity tokens are allowed (else: a torn write)."""
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _options(skip_invalid: bool | None, expect_suite: str | None) -> tuple[bool, str]:
    if expect_suite is not None and expect_suite not in SUITES:
        raise ValueError(f"unknown suite {expect_suite!r}; valid: {', '.join(SUITES)}")
    ctx = _READING.get()
    skip = skip_invalid if skip_invalid is not None else bool(ctx and ctx.skip_invalid)
    return skip, (ctx.hint if ctx is not None and ctx.hint else _READ_HINT)


def read_rows(paths: Paths, *, missing_ok: bool = False, skip_invalid: bool | None = None,
              expect_suite: str | None = None) -> list[dict[str, Any]]:
    """All rows of the given files/folders, in file order (files sorted within a folder).

    Every row is checked against the schema (:mod:`ablate.store.schema`): a line that is not a valid row raises
    :class:`InvalidRowError` (a :class:`ResultsFileError`) naming file and line -- or, with ``skip_invalid``, is
    left out with one :class:`ResultsWarning` per file saying how many rows were skipped (``None``: as the enclosing
    :func:`reading` says; not skipped outside one). ``expect_suite``: the files are that suite's own results, so a
    row of another suite is invalid (``None``: a file named for a suite that holds that suite's rows expects it, see
    :func:`named_suite`). A final line without newline (a write that was killed) is skipped with a
    :class:`ResultsWarning`. ``missing_ok`` treats missing paths as empty. Files are never modified.
    """
    skip, hint = _options(skip_invalid, expect_suite)
    rows: list[dict[str, Any]] = []
    for f in iter_files(paths, missing_ok=missing_ok):
        rows.extend(_read_file(f, skip_invalid=skip, expect_suite=expect_suite, hint=hint))
    return rows


def done_keys(paths: Paths, *, expect_suite: str | None = None, skip_invalid: bool | None = None) -> set[str]:
    """``row_key`` of every row whose status is terminal (see :data:`TERMINAL_STATUSES`); missing files → empty.
    Invalid rows raise as in :func:`read_rows`."""
    return {r["row_key"] for r in read_rows(paths, missing_ok=True, skip_invalid=skip_invalid,
                                            expect_suite=expect_suite)
            if r["status"] in TERMINAL_STATUSES}


MACHINE_COLUMNS = ("env.hostname", "env.cpu", "env.gpu", "env.gpu_count")  # what tells two machines apart


def to_frame(paths: Paths, *, latest: bool = True, skip_invalid: bool | None = None,
             expect_suite: str | None = None) -> "pd.DataFrame":
    """Rows as a DataFrame (columns = union of all rows' keys); rows are read and checked as by :func:`read_rows`
    (``skip_invalid``, ``expect_suite``).

    ``latest`` keeps only the newest row for each measurement on each machine -- same ``suite``, ``row_key`` and
    machine (``env.hostname``, ``env.cpu``, ``env.gpu``, ``env.gpu_count``: hostnames alone repeat, e.g. two
    cloud VMs both called ``vm``) -- e.g. an ``error`` row superseded by the ``ok`` row of a resumed run, or a
    ``--no-resume`` re-measurement. Rows from different machines are all kept.
    """
    import pandas as pd

    rows = read_rows(paths, skip_invalid=skip_invalid, expect_suite=expect_suite)
    df = pd.DataFrame(rows)
    if latest and not df.empty and "row_key" in df.columns:
        ident = [c for c in ("suite", "row_key") + MACHINE_COLUMNS if c in df.columns]
        order = df["timestamp"].fillna("") if "timestamp" in df.columns else pd.Series([""] * len(df))
        df = (df.assign(_order=order.astype(str).to_numpy(), _pos=range(len(df)))
                .sort_values(["_order", "_pos"], kind="stable"))
        has_key = df["row_key"].notna()
        kept = df[has_key].drop_duplicates(subset=ident, keep="last")
        df = pd.concat([kept, df[~has_key]]).sort_values("_pos", kind="stable").drop(columns=["_order", "_pos"])
        df = df.reset_index(drop=True)
    return df


# ---------------------------------------------------------------------------------------------------------------
# Rows


def _canonical(value: Any) -> Any:
    """Normalize for hashing: integral floats equal their int (1.0 and 1 are the same setting)."""
    value = to_jsonable(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def row_key(fields: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of the identifying fields (order-independent; same across processes and versions).

    ``row_key({"attention": "sdpa", "seq_len": 512}) == row_key({"seq_len": 512, "attention": "sdpa"})``.
    """
    canon = json.dumps(_canonical(dict(fields)), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                       allow_nan=False)
    return hashlib.sha256(canon.encode("ascii")).hexdigest()[:16]


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
        try:
            rows = read_rows(self.results, missing_ok=True, skip_invalid=False, expect_suite=suite)
        except InvalidRowError as exc:
            raise InvalidRowError(exc.path, exc.line, exc.why, _RUN_HINT, text=exc.text) from None
        self._done: set[str] = {r["row_key"] for r in rows if r["status"] in TERMINAL_STATUSES} if resume else set()
        self.counts: dict[str, int] = {}
        if enabled:  # a file that cannot be appended is refused now, not after the first model trained
            check_appendable(self.path)

    def done(self, key_fields: Mapping[str, Any]) -> bool:
        return row_key(key_fields) in self._done

    def write(self, status: str, key_fields: Mapping[str, Any], metrics: Mapping[str, Any] | None = None,
              config: Any = None, *, reason: str = "") -> dict[str, Any]:
        row = make_row(self.suite, status, key_fields, metrics, config, reason=reason, run_id=self.run_id)
        stored = append_row(self.path, row) if self.enabled else json.loads(_serialize(row))
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
