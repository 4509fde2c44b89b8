"""Rows as the reports use them: the newest row of each measurement (:func:`latest_rows`, kept while streaming, so
memory follows the measurements kept, not the file) and as a pandas DataFrame (:func:`to_frame`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Iterable, Iterator

from ablate.store.paths import Paths
from ablate.store.reader import iter_rows

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MACHINE_COLUMNS", "IDENTITY_COLUMNS", "Columns", "Latest", "Kept", "latest_rows", "rows_frame", "to_frame", "summary_frame"]

MACHINE_COLUMNS = ("env.hostname", "env.cpu", "env.gpu", "env.gpu_count")  # what tells two machines apart
IDENTITY_COLUMNS = ("suite", "row_key", "timestamp") + MACHINE_COLUMNS  # what :func:`latest_rows` compares


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


class Columns:
    """Every column of the rows passed through :meth:`watch`, in the order they first appear (``seen``)."""

    def __init__(self) -> None:
        self.seen: dict[str, None] = {}

    def watch(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        seen = self.seen
        for r in rows:
            if not seen.keys() >= r.keys():
                for k in r:
                    seen.setdefault(k, None)
            yield r

    def merge(self, later: "Columns") -> None:
        """Add the columns ``later`` saw (rows read after this one's)."""
        for k in later.seen:
            self.seen.setdefault(k, None)


class Latest:
    """:func:`latest_rows` kept while rows are added one at a time (:meth:`add`); :meth:`merge` takes in the rows
    another one kept from rows read after this one's (a file read in parts, :mod:`ablate.store.parallel_read`)."""

    def __init__(self, machine: Collection[str] = MACHINE_COLUMNS) -> None:
        self.machine = tuple(machine)
        self.best: dict[tuple, tuple[str, int]] = {}
        self.kept: dict[int, dict[str, Any]] = {}  # by position; insertion order is position order
        self.n = 0  # rows added

    def add(self, r: dict[str, Any]) -> None:
        pos = self.n
        self.n += 1
        key = r.get("row_key")
        if not key:
            self.kept[pos] = r
            return
        ident = (r.get("suite"), key, *map(r.get, self.machine))
        try:
            prev = self.best.get(ident)
        except TypeError:  # a list or dict among the machine columns
            ident = tuple(_hashable(v) for v in ident)
            prev = self.best.get(ident)
        ts = r.get("timestamp")
        ts = ts if type(ts) is str else ("" if ts is None else str(ts))
        self._keep(ident, prev, ts, pos, r)

    def _keep(self, ident: tuple, prev: tuple[str, int] | None, ts: str, pos: int, r: dict[str, Any]) -> None:
        if prev is None or ts >= prev[0]:
            if prev is not None:
                del self.kept[prev[1]]
            self.best[ident] = (ts, pos)
            self.kept[pos] = r

    def merge(self, later: "Latest") -> None:
        """As if ``later``'s rows had been added here, after this one's."""
        shift = self.n
        keyed = {pos: (ident, ts) for ident, (ts, pos) in later.best.items()}
        for pos, r in later.kept.items():  # position order
            if pos not in keyed:
                self.kept[pos + shift] = r
                continue
            ident, ts = keyed[pos]
            self._keep(ident, self.best.get(ident), ts, pos + shift, r)
        self.n += later.n

    def rows(self) -> list[dict[str, Any]]:
        return list(self.kept.values())


class Kept:
    """What a frame of the newest rows needs, kept a row at a time: the columns seen (:class:`Columns`) and the
    newest row of each measurement (:class:`Latest`); :meth:`merge` takes in another one's (rows read after)."""

    def __init__(self) -> None:
        self.cols = Columns()
        self.latest = Latest()

    def add(self, r: dict[str, Any]) -> None:
        seen = self.cols.seen
        if not seen.keys() >= r.keys():
            for k in r:
                seen.setdefault(k, None)
        self.latest.add(r)

    def merge(self, later: "Kept") -> None:
        self.cols.merge(later.cols)
        self.latest.merge(later.latest)

    def frame(self) -> "pd.DataFrame":
        return rows_frame(self.latest.rows(), list(self.cols.seen))


def latest_rows(rows: Iterable[dict[str, Any]], machine: Collection[str] = MACHINE_COLUMNS) -> list[dict[str, Any]]:
    """The newest row of each measurement, in the order the rows came: one per ``suite``, ``row_key`` and machine
    (the ``machine`` columns, by default ``env.hostname``, ``env.cpu``, ``env.gpu``, ``env.gpu_count``: hostnames
    alone repeat, e.g. two cloud VMs both called ``vm``). Newest: the latest ``timestamp``, then the later row.
    Rows without a ``row_key`` are all kept. Only the rows kept so far are held."""
    latest = Latest(machine)
    add = latest.add
    for r in rows:
        add(r)
    return latest.rows()


def to_frame(paths: Paths, *, latest: bool = True, skip_invalid: bool | None = None,
             expect_suite: str | None = None, columns: Collection[str] | None = None) -> "pd.DataFrame":
    """Rows as a DataFrame (columns = union of all rows' keys, in the order they first appear); rows are read and
    checked as by :func:`ablate.store.reader.read_rows` (``skip_invalid``, ``expect_suite``), one at a time.

    ``latest`` keeps only the newest row for each measurement on each machine (:func:`latest_rows`) -- e.g. an
    ``error`` row superseded by the ``ok`` row of a resumed run, or a ``--no-resume`` re-measurement; rows from
    different machines are all kept. ``columns``: only these columns (those present in some row). Text columns are
    plain ``object`` columns (one block with the other object columns, so selecting rows stays cheap).
    """
    wanted = None if columns is None else tuple(dict.fromkeys(columns))
    read = wanted if wanted is None or not latest else tuple(dict.fromkeys(wanted + IDENTITY_COLUMNS))
    cols = Columns()
    rows: Iterable[dict[str, Any]] = cols.watch(iter_rows(paths, skip_invalid=skip_invalid,
                                                          expect_suite=expect_suite, columns=read))
    rows = latest_rows(rows) if latest else list(rows)
    return rows_frame(rows, list(cols.seen) if wanted is None else [c for c in wanted if c in cols.seen])


def rows_frame(rows: list[dict[str, Any]], columns: list[str]) -> "pd.DataFrame":
    """``rows`` as a DataFrame with these ``columns``, text columns as ``object`` (as :func:`to_frame` makes it)."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    text = [c for c, t in df.dtypes.items() if isinstance(t, pd.StringDtype)]
    if text:
        df = df.astype(dict.fromkeys(text, object)).copy()  # the copy consolidates: one block per dtype
    return df


def summary_frame(out: Path) -> "pd.DataFrame | None":
    """The rows of ``out`` for a run's closing summary, or None when there are none to show: a missing file, or
    one that cannot be read (one warning line on stderr -- the run itself succeeded, so its summary never fails it)."""
    if not Path(out).exists():
        return None
    try:
        return to_frame(out)
    except Exception as exc:  # noqa: BLE001 -- any reason: the summary is optional
        sys.stderr.write(f"ablate: warning: could not read {out} for the summary: {' '.join(str(exc).split())}\n")
        return None
