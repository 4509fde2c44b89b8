"""The results store: JSONL files, one flat JSON object (a *row*) per line.

Writing (:func:`append_row`) is safe from many processes at once: each row is serialized first and then written with
one ``os.write`` of the whole line to a file opened ``O_APPEND``, under an exclusive ``flock``, followed by ``fsync``.
A reader therefore sees whole lines only, except after a crash mid-write, which can leave a final line without its
newline; :func:`read_rows` skips such a torn tail (with a warning) and the next :func:`append_row` removes it.

Resuming: every row carries ``row_key`` (:func:`row_key` of the fields that identify the measurement) and ``status``;
:func:`done_keys` returns the keys whose status is terminal, which a suite skips on a re-run.

The row schema is documented in ``docs/results-schema.md``; :func:`make_row` builds rows that follow it.
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
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Union

from ablate.errors import AblateError, ConfigError, ResultsFileError, UnavailableError

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
    "shard_files", "RUN_ID_ENV",
]

SCHEMA_VERSION = 1

# ok: measured. unavailable: cannot run on this machine (package missing, no GPU) -- may work elsewhere or later.
# unsupported: the variant cannot do this configuration (e.g. a kernel without arbitrary bias).
# oom: ran out of memory. diverged: ran, but training/eval produced non-finite values. error: anything else.
STATUSES = ("ok", "unavailable", "unsupported", "oom", "diverged", "error")
# Re-running a key with one of these statuses would give the same answer, so a resumed sweep skips it.
# `unavailable`, `oom` and `error` are retried: a package may have been installed, memory freed, a bug fixed.
TERMINAL_STATUSES = frozenset({"ok", "unsupported", "diverged"})

RESERVED_COLUMNS = ("schema_version", "suite", "status", "reason", "row_key", "key_fields", "run_id", "timestamp")
CONFIG_PREFIX = "config."
ENV_PREFIX = "env."

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Iterable[PathLike]]


class ResultsWarning(UserWarning):
    """Something in a results file was skipped or repaired (a torn final line)."""


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


def _flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if not isinstance(k, str):
            raise TypeError(f"result row keys must be strings, got {k!r}")
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _serialize(row: Mapping[str, Any]) -> bytes:
    if not isinstance(row, Mapping):
        raise TypeError(f"a result row must be a dict, got {type(row).__name__}")
    flat = to_jsonable(_flatten(row))
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            _drop_torn_tail(fd, path)
            view = memoryview(data)
            while view:  # one write for a whole line in practice; loop only on a short write (still under lock)
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
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
    (``plan.json``, ``shards/<task>.jsonl``, ``state/<task>.json``, ``logs/``; see :mod:`ablate.launch`)."""
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


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ResultsFileError(f"results file {path} cannot be read: {exc.strerror or exc}") from None
    lines = raw.split(b"\n")
    torn = lines[-1] != b""  # text after the last newline: an unfinished write
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = n == len(lines)
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            if last and torn:
                warnings.warn(f"results file {path} line {n} is incomplete (interrupted write); skipped",
                              ResultsWarning, stacklevel=3)
                continue
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ResultsFileError(f"results file {path} line {n} is not valid JSON: {msg}") from None
        if not isinstance(obj, dict):
            raise ResultsFileError(f"results file {path} line {n} is not a JSON object "
                                   f"(got {type(obj).__name__})")
        rows.append(obj)
    return rows


def read_rows(paths: Paths, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """All rows of the given files/folders, in file order (files sorted within a folder).

    A corrupt line raises :class:`ResultsFileError` naming file and line; a final line without newline (a write
    that was killed) is skipped with a :class:`ResultsWarning`. ``missing_ok`` treats missing paths as empty.
    """
    rows: list[dict[str, Any]] = []
    for f in iter_files(paths, missing_ok=missing_ok):
        rows.extend(_read_file(f))
    return rows


def done_keys(paths: Paths) -> set[str]:
    """``row_key`` of every row whose status is terminal (see :data:`TERMINAL_STATUSES`); missing files → empty."""
    return {r["row_key"] for r in read_rows(paths, missing_ok=True)
            if r.get("row_key") and r.get("status") in TERMINAL_STATUSES}


def to_frame(paths: Paths, *, latest: bool = True) -> "pd.DataFrame":
    """Rows as a DataFrame (columns = union of all rows' keys).

    ``latest`` keeps only the newest row for each measurement -- same ``suite``, ``row_key`` and ``env.hostname``
    (e.g. an ``error`` row superseded by the ``ok`` row of a resumed run, or a ``--no-resume`` re-measurement).
    Rows from different machines are all kept.
    """
    import pandas as pd

    rows = read_rows(paths)
    df = pd.DataFrame(rows)
    if latest and not df.empty and "row_key" in df.columns:
        ident = [c for c in ("suite", "row_key", "env.hostname") if c in df.columns]
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
    * ``env`` overrides the environment columns (default :func:`ablate.env.env_columns`).
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
    row.update(to_jsonable(_flatten(key_fields)))
    row.update(to_jsonable(_flatten(metrics)))
    if config is not None:
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = dataclasses.asdict(config)
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict or a dataclass, got {type(config).__name__}")
        row.update(to_jsonable(_flatten(config, CONFIG_PREFIX)))
    if env is None:
        from ablate.env import env_columns

        env = env_columns()
    row.update(to_jsonable(dict(env)))
    return row


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
    elif "OutOfMemoryError" in names or (isinstance(exc, (RuntimeError, MemoryError))
                                         and ("out of memory" in text.lower() or isinstance(exc, MemoryError))):
        status = "oom"
    else:
        status = "error"
    return status, reason


class ResultWriter:
    """What a suite needs to write rows and resume: ``done(key_fields)`` and ``write(...)``.

    ::

        w = ResultWriter(opts.out / "extrapolation.jsonl", suite="extrapolation", resume=opts.resume)
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
        every shard). ``enabled=False``: a writer that writes nothing (the non-zero ranks of a distributed run)."""
        self.results = Path(path)
        self.path = shard_path(path, shard) if shard else self.results
        self.suite = suite
        self.run_id = run_id or current_run_id()
        self.enabled = enabled
        self._done: set[str] = done_keys(self.results) if resume else set()
        self.counts: dict[str, int] = {}

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
        status, reason = status_from_exception(exc)
        return self.write(status, key_fields, metrics, config, reason=reason)
