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

from ablate.store.frame import Columns, latest_rows, rows_frame
from ablate.store.paths import PathLike, iter_files
from ablate.store.reader import iter_rows

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

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for proj, n, lo, hi in self.groups.values():
            first = {**proj, "timestamp": lo}
            out.append(first)
            if n > 1:
                out.append({**proj, "timestamp": hi})
                out.extend([first] * (n - 2))
        return out


def read_inputs(inputs: Sequence[PathLike]) -> Inputs:
    """Read ``inputs`` (files or folders) once; a missing path or an invalid row raises in one line."""
    files = iter_files(inputs)
    stats = {f: FileStats(f) for f in files}
    prov = _Provenance()
    cross: dict[tuple, dict[str, Any]] = {}

    def watched():
        last, s = None, None
        for f, r in iter_rows(files, with_file=True):
            if f is not last:  # a Path hashes and compares in Python: look each file up once, not per row
                last, s = f, stats[f]
            s.rows += 1
            st, ts = str(r["status"]), r["timestamp"]
            s.status[st] = s.status.get(st, 0) + 1
            s.suites.add(str(r["suite"]))
            if ts:
                s.first = ts if not s.first or ts < s.first else s.first
                s.last = ts if ts > s.last else s.last
            prov.add(r)
            if st == "ok":
                key = (r.get("env.git_commit"), r.get("env.hostname"), r.get("env.gpu"), r.get("env.cpu"),
                       r["suite"], r["row_key"])
                prev = cross.get(key)
                if prev is None or ts >= prev["timestamp"]:
                    cross[key] = r
            yield r

    cols = Columns()
    frame = rows_frame(latest_rows(cols.watch(watched())), list(cols.seen))
    return Inputs([stats[f] for f in files], frame, prov.rows(), list(cross.values()))
