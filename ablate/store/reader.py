"""Reading results files: a streaming, validated reader (:func:`iter_rows`) and what is built on it
(:func:`read_rows`, :func:`done_keys`).

Files are read line by line, each row parsed as strict JSON and checked against the schema
(:mod:`ablate.store.schema`) as it goes by, so memory is what the caller keeps, not the file: ``columns=`` keeps only
the named columns of each row (after checking the whole row). An invalid row raises :class:`InvalidRowError`
(``file:line: why``; lines that are not JSON objects are reported before rows that break the schema) unless the
reader is asked to skip invalid rows (``skip_invalid=True``, or within :func:`reading`), which it then does with
one :class:`ResultsWarning` per file. A final line without its newline (a killed write) is skipped with a warning.
Reading never rewrites a file.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator
import warnings

from ablate.errors import ResultsFileError
from ablate.store.paths import Paths, PathLike, iter_files, named_suite
from ablate.store.schema import SUITES, TERMINAL_STATUSES, row_problem

__all__ = ["ResultsWarning", "InvalidRowError", "reading", "iter_rows", "read_rows", "done_keys", "common_object",
           "RUN_HINT"]

RUN_HINT = "fix or remove that line; ablate run never rewrites or skips rows of its results file"
_READ_HINT = "fix or remove that line"


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


class _NonFinite(Exception):
    """A ``NaN``/``Infinity``/``-Infinity`` token: not strict JSON (a non-finite number is stored as null)."""


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # strict JSON: NaN/Infinity tokens are errors
_SCAN = _DECODER.scan_once  # the C scanner: a value at an offset, and where it ends (StopIteration: none there)


def common_object(raw: bytes) -> dict | None:
    """The JSON object of a results line in its common form -- one object from its first byte to the newline --
    or None: the line then goes through the full checks (not JSON, NaN tokens, a torn last line, ...)."""
    try:
        text = raw.decode("utf-8")
        obj, end = _SCAN(text, 0)
    except (StopIteration, ValueError, _NonFinite):
        return None
    if end != len(text) - 1 or text[end] != "\n" or type(obj) is not dict:
        return None
    return obj


@dataclass
class _Reading:
    skip_invalid: bool = False
    hint: str = ""
    warned: set = field(default_factory=set)


_READING: ContextVar[_Reading | None] = ContextVar("ablate_results_reading", default=None)


@contextmanager
def reading(*, skip_invalid: bool = False, hint: str = "") -> Iterator[None]:
    """Within the block, the readers (:func:`read_rows`, :func:`iter_rows`, ``to_frame``, ...) that are not told
    otherwise skip invalid rows when ``skip_invalid`` (else raise), each warning is given once however often a file
    is read, and ``hint`` ends an invalid row's error (e.g. ``"... or pass --skip-invalid"``). The CLI wraps
    commands in it."""
    token = _READING.set(_Reading(skip_invalid, hint))
    try:
        yield
    finally:
        _READING.reset(token)


def _warn(ctx: _Reading | None, msg: str) -> None:
    if ctx is not None:
        if msg in ctx.warned:
            return
        ctx.warned.add(msg)
    warnings.warn(msg, ResultsWarning, stacklevel=4)


def _complete_object(line: bytes) -> bool:
    """Whether ``line`` is a whole JSON object once NaN/Infinity tokens are allowed (else: a torn write)."""
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _not_json(path: Path, n: int, raw: bytes, last: bool, hint: str) -> tuple[dict | None, InvalidRowError | None]:
    """(the JSON object of line ``n``, None), (None, why it is not one), or (None, None) for a torn final line."""
    try:
        obj = _DECODER.decode(raw.decode("utf-8"))
    except _NonFinite as exc:
        if last and not _complete_object(raw):
            return None, None
        return None, InvalidRowError(path, n, f"{exc.args[0]} is not strict JSON (the store writes a non-finite "
                                              f"number as null)", hint)
    except (ValueError, UnicodeDecodeError) as exc:
        if last:
            return None, None
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, InvalidRowError(path, n, f"not valid JSON: {msg}", hint,
                                     text=f"results file {path} line {n} is not valid JSON: {msg}")
    if type(obj) is not dict:
        kind = type(obj).__name__
        return None, InvalidRowError(path, n, f"not a JSON object (got {kind})", hint,
                                     text=f"results file {path} line {n} is not a JSON object (got {kind})")
    return obj, None


def _iter_file(path: Path, *, skip: bool, expect_suite: str | None, hint: str, ctx: _Reading | None,
               columns: Collection[str] | None) -> Iterator[dict[str, Any]]:
    """The valid rows of one file, as they are read (see the module docstring).

    A file named for a suite (:func:`ablate.store.paths.named_suite`) expects that suite's rows when it holds any:
    rows of another suite met before the first row of the named suite are held back until one comes (they are
    then invalid) or the file ends (they are then its rows) -- memory only in a file that holds no row of the
    suite it is named for. Strict reading stops yielding at the first invalid row but reads on, so that a line
    that is not JSON further down is the one reported."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ResultsFileError(f"results file {path} cannot be read: {exc.strerror or exc}") from None
    named = None if expect_suite is not None else named_suite(path)
    keep = None if columns is None else tuple(columns)
    bad: list[InvalidRowError] = []  # skipped (skip) or the first schema problem (strict: raised at the end)
    held: list[tuple[int, dict, str | None, str | None]] = []  # (line, row, why as it is, why as foreign)
    seen_named = False
    torn = 0
    n = 0

    def problem(err: InvalidRowError) -> None:
        if skip:
            bad.append(err)
        elif not bad or err.line < bad[0].line:  # strict: the first problem by line is the one raised
            bad[:] = [err]

    def out(obj: dict) -> dict:
        return obj if keep is None else {k: obj[k] for k in keep if k in obj}

    with fh:
        try:
            for raw in fh:
                n += 1
                obj = common_object(raw)  # else _not_json says why
                if obj is None:
                    if not raw.strip():
                        continue
                    obj, err = _not_json(path, n, raw, not raw.endswith(b"\n"), hint)
                if obj is None:
                    if err is None:
                        torn = n
                    elif skip:
                        bad.append(err)
                    else:
                        raise err  # not JSON: reported before any schema problem
                    continue
                if expect_suite is not None or named is None:
                    why = row_problem(obj, expect_suite)
                else:
                    why = row_problem(obj)
                    if obj.get("suite") == named:
                        if not seen_named:
                            seen_named = True
                            for h in held:  # the file holds its suite's rows: the rows held back are foreign
                                problem(InvalidRowError(path, h[0], h[3], hint))
                            held.clear()
                    else:
                        alt = row_problem(obj, named)
                        if alt != why:  # a row of another (known) suite
                            if not seen_named:
                                held.append((n, obj, why, alt))
                                continue
                            why = alt
                if why is not None:
                    problem(InvalidRowError(path, n, why, hint))
                elif skip or not bad:
                    yield out(obj)
        except OSError as exc:
            raise ResultsFileError(f"results file {path} cannot be read: {exc.strerror or exc}") from None
    for line, obj, why, _ in held:  # no row of the named suite: the file is read as it is
        if why is not None:
            problem(InvalidRowError(path, line, why, hint))
        elif skip or not bad:
            yield out(obj)
    if bad and not skip:
        raise bad[0]
    if torn:
        _warn(ctx, f"results file {path} line {torn} is incomplete (interrupted write); skipped")
    if bad:
        bad.sort(key=lambda e: e.line)
        at = ", ".join(str(e.line) for e in bad[:10]) + (", ..." if len(bad) > 10 else "")
        _warn(ctx, f"results file {path}: skipped {len(bad)} invalid row(s) (line{'s' if len(bad) > 1 else ''} "
                   f"{at}); first: {bad[0].text}")


def iter_rows(paths: Paths, *, missing_ok: bool = False, skip_invalid: bool | None = None,
              expect_suite: str | None = None, columns: Collection[str] | None = None,
              with_file: bool = False) -> Iterator[Any]:
    """The rows of the given files/folders as they are read, in file order (files sorted within a folder),
    each checked against the schema first; ``columns``: keep only these columns of each row; ``with_file``:
    yield ``(file, row)`` pairs (the file of :func:`ablate.store.paths.iter_files` each row was read from).

    Arguments as for :func:`read_rows`. Missing paths and a bad ``expect_suite`` raise here, at the call; invalid
    rows raise (or are skipped) while iterating. Memory: what the caller keeps."""
    if expect_suite is not None and expect_suite not in SUITES:
        raise ValueError(f"unknown suite {expect_suite!r}; valid: {', '.join(SUITES)}")
    ctx = _READING.get()
    skip = skip_invalid if skip_invalid is not None else bool(ctx and ctx.skip_invalid)
    hint = ctx.hint if ctx is not None and ctx.hint else _READ_HINT
    files = iter_files(paths, missing_ok=missing_ok)

    def rows() -> Iterator[Any]:
        for f in files:
            it = _iter_file(f, skip=skip, expect_suite=expect_suite, hint=hint, ctx=ctx, columns=columns)
            if with_file:
                for r in it:
                    yield f, r
            else:
                yield from it

    return rows()


def read_rows(paths: Paths, *, missing_ok: bool = False, skip_invalid: bool | None = None,
              expect_suite: str | None = None, columns: Collection[str] | None = None) -> list[dict[str, Any]]:
    """All rows of the given files/folders, in file order (files sorted within a folder).

    Every row is checked against the schema (:mod:`ablate.store.schema`): a line that is not a valid row raises
    :class:`InvalidRowError` (a :class:`ResultsFileError`) naming file and line -- or, with ``skip_invalid``, is
    left out with one :class:`ResultsWarning` per file saying how many rows were skipped (``None``: as the enclosing
    :func:`reading` says; not skipped outside one). ``expect_suite``: the files are that suite's own results, so a
    row of another suite is invalid (``None``: a file named for a suite that holds that suite's rows expects it, see
    :func:`ablate.store.paths.named_suite`). A final line without newline (a write that was killed) is skipped with
    a :class:`ResultsWarning`. ``missing_ok`` treats missing paths as empty. ``columns``: keep only these columns
    of each row. Files are never modified. (:func:`iter_rows` gives the same rows without holding them.)
    """
    return list(iter_rows(paths, missing_ok=missing_ok, skip_invalid=skip_invalid, expect_suite=expect_suite,
                          columns=columns))


def done_keys(paths: Paths, *, expect_suite: str | None = None, skip_invalid: bool | None = None) -> set[str]:
    """``row_key`` of every row whose status is terminal (see :data:`TERMINAL_STATUSES`); missing files → empty.
    Invalid rows raise as in :func:`read_rows`."""
    return {r["row_key"] for r in iter_rows(paths, missing_ok=True, skip_invalid=skip_invalid,
                                            expect_suite=expect_suite, columns=("row_key", "status"))
            if r["status"] in TERMINAL_STATUSES}
