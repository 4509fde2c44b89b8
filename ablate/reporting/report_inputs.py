"""What ``ablate report`` reads, in one streaming pass over the results (:func:`read_inputs`), holding no more than
the report uses: the newest row of each measurement (the suites' tables), per file its rows by status, suites and
time span, the provenance columns of every row (``env.*``, suite, status, timestamp, run id, command) collapsed to
their distinct values, and the newest ``ok`` row of each measurement per commit and machine (the cross-run view).
Memory follows the measurements and runs, not the number of lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ablate.store.frame import Kept
from ablate.store.parallel_read import read_into
from ablate.store.paths import PathLike, iter_files

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["INDEX_COLUMNS", "FileStats", "Inputs", "read_inputs"]

INDEX_COLUMNS = ("suite", "status", "timestamp", "run_id", "command")  # with every env.* column


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


@dataclass
class FileStats:
    """One results file: its rows by status, its suites, the first and last timestamp."""

    path: Path
    rows: int = 0
    status: dict[str, int] = field(default_factory=dict)
    suites: set[str] = field(default_factory=set)
    first: str = ""
    last: str = ""


@dataclass
class Inputs:
    """What :func:`read_inputs` kept (see the module docstring)."""

    files: list[FileStats]
    frame: "pd.DataFrame"  # the newest row per measurement, as ablate.store.frame.to_frame makes it
    index_rows: list[dict[str, Any]]  # one entry per row read: the provenance columns (entries shared, see below)
    cross_rows: list[dict[str, Any]]  # the newest ok row per commit, machine, suite and row_key

    @property
    def rows(self) -> int:
        return len(self.index_rows)


class _Provenance:
    """The provenance columns of every row, each distinct combination stored once: rows that differ only in
    their timestamp share one dict, so that the list :meth:`rows` returns (one entry per row, for counting) holds
    references, with the earliest and the latest timestamp of each combination kept."""

    def __init__(self) -> None:
        self.layouts: dict[tuple, tuple[str, ...]] = {}
        self.groups: dict[tuple, list[Any]] = {}

    def add(self, r: dict[str, Any]) -> None:
        layout = tuple(r)
        keys = self.layouts.get(layout)
        if keys is None:
            keys = self.layouts[layout] = tuple(k for k in layout if k.startswith("env.") or
                                                (k in INDEX_COLUMNS and k != "timestamp"))
        values = tuple(map(r.__getitem__, keys))
        try:
            ident = (keys, values, hash(values))
        except TypeError:  # a list or dict among them
            values = tuple(_hashable(v) for v in values)
            ident = (keys, values, hash(values))
        ts = r.get("timestamp")
        g = self.groups.get(ident)
        if g is None:
            self.groups[ident] = [{k: r[k] for k in keys}, 1, ts, ts]
        else:
            g[1] += 1
            if ts is not None:
                g[2] = ts if g[2] is None or ts < g[2] else g[2]
                g[3] = ts if g[3] is None or ts > g[3] else g[3]

    def merge(self, later: "_Provenance") -> None:
        """As if ``later``'s rows had been added here, after this one's."""
        for ident, (proj, n, lo, hi) in later.groups.items():
            g = self.groups.get(ident)
            if g is None:
                self.groups[ident] = [proj, n, lo, hi]
                continue
            g[1] += n
            if lo is not None:
                g[2] = lo if g[2] is None or lo < g[2] else g[2]
            if hi is not None:
                g[3] = hi if g[3] is None or hi > g[3] else g[3]

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for proj, n, lo, hi in self.groups.values():
            first = {**proj, "timestamp": lo}
            out.append(first)
            if n > 1:
                out.append({**proj, "timestamp": hi})
                out.extend([first] * (n - 2))
        return out


class _Reading:
    """Everything :func:`read_inputs` keeps, filled a row at a time (:meth:`add`); :meth:`merge` takes in another
    one's, read from rows that come after (a large file read in parts, :mod:`ablate.store.parallel_read`)."""

    def __init__(self) -> None:
        self.stats: dict[Path, FileStats] = {}
        self.prov = _Provenance()
        self.cross: dict[tuple, dict[str, Any]] = {}
        self.kept = Kept()
        self._last: tuple[Any, FileStats | None] = (None, None)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last": (None, None)}

    def add(self, f: Path, r: dict[str, Any]) -> None:
        last, s = self._last
        if f is not last:  # a Path hashes and compares in Python: look each file up once, not per row
            s = self.stats.get(f)
            if s is None:
                s = self.stats[f] = FileStats(f)
            self._last = (f, s)
        s.rows += 1
        st, ts = str(r["status"]), r["timestamp"]
        s.status[st] = s.status.get(st, 0) + 1
        s.suites.add(str(r["suite"]))
        if ts:
            s.first = ts if not s.first or ts < s.first else s.first
            s.last = ts if ts > s.last else s.last
        self.prov.add(r)
        if st == "ok":
            key = (r.get("env.git_commit"), r.get("env.hostname"), r.get("env.gpu"), r.get("env.cpu"),
                   r["suite"], r["row_key"])
            prev = self.cross.get(key)
            if prev is None or ts >= prev["timestamp"]:
                self.cross[key] = r
        self.kept.add(r)

    def merge(self, later: "_Reading") -> None:
        for f, o in later.stats.items():
            s = self.stats.get(f)
            if s is None:
                self.stats[f] = o
                continue
            s.rows += o.rows
            for st, n in o.status.items():
                s.status[st] = s.status.get(st, 0) + n
            s.suites |= o.suites
            if o.first:
                s.first = o.first if not s.first or o.first < s.first else s.first
            s.last = o.last if o.last > s.last else s.last
        self.prov.merge(later.prov)
        for key, r in later.cross.items():
            prev = self.cross.get(key)
            if prev is None or r["timestamp"] >= prev["timestamp"]:
                self.cross[key] = r
        self.kept.merge(later.kept)


def read_inputs(inputs: Sequence[PathLike]) -> Inputs:
    """Read ``inputs`` (files or folders) once; a missing path or an invalid row raises in one line. A large input
    is read in parts on every core (:func:`ablate.store.parallel_read.parallel_reduce`), to the same result."""
    files = iter_files(inputs)
    got = read_into(files, _Reading)
    frame = got.kept.frame()
    stats = [got.stats.get(f) or FileStats(f) for f in files]
    return Inputs(stats, frame, got.prov.rows(), list(got.cross.values()))
