"""Rows as one flat table: :func:`flat_frame` (one column per field, JSON types kept) and the files written from it
(:func:`write_csv`, :func:`write_parquet`, atomically); what ``ablate export --to csv|parquet`` and
``ablate run --log-to`` write. Every name is importable from :mod:`ablate.io.export` too.

Types on the pandas / Parquet round trip: integers stay integers (pandas ``Int64``, nullable where a row lacks the
column; Parquet ``int64``), booleans stay booleans (``boolean`` / ``bool``), numbers mixing integers and floats are
``Float64`` / ``double``, and in Parquet the row's ``timestamp`` is a UTC datetime (``datetime64[us, UTC]`` /
``timestamp[us, tz=UTC]``). The Parquet file carries pandas' own metadata, so ``pd.read_parquet`` gives back these
dtypes (without it an integer column with a missing value would come back as float64)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ablate.errors import ResultsFileError
from ablate.store.atomic import write_atomic

if TYPE_CHECKING:
    import pandas as pd


def hashable(v: Any) -> Any:
    """``v`` as a set member: NaN as None, lists and dicts as sorted JSON text."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return v


def columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every field of ``rows``, in the order they first appear."""
    seen: dict[str, None] = {}
    for r in rows:
        for c in r:
            seen.setdefault(c, None)
    return list(seen)


def json_text(v: Any) -> str:
    """Compact JSON text of ``v`` (non-ASCII kept)."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _scalar_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (list, tuple)):
        return "list"
    return "other"


def _list_kind(values: list[Any]) -> str | None:
    """The one item type of lists of scalars (``number``, ``str``, ``bool``), or None (records, mixed, nested)."""
    kinds: set[str] = set()
    for v in values:
        for item in v:
            if item is None:
                continue
            k = _scalar_kind(item)
            kinds.add("number" if k in ("int", "float") else k)
    if not kinds:
        return "str"
    return kinds.pop() if len(kinds) == 1 and kinds <= {"number", "str", "bool"} else None


TIME_COLUMNS = ("timestamp",)  # ISO 8601 text in a row, a UTC datetime in Parquet


def _utc_times(values: list[Any], column: str) -> "pd.Series":
    """ISO 8601 texts as tz-aware UTC datetimes (microseconds); one that does not parse is one line."""
    import pandas as pd

    try:
        return pd.Series(pd.to_datetime(values, utc=True, format="ISO8601")).astype("datetime64[us, UTC]")
    except (ValueError, TypeError):
        bad = [v for v in values if v is not None and pd.isna(pd.to_datetime(v, utc=True, format="ISO8601",
                                                                               errors="coerce"))]
        raise ResultsFileError(f"column {column}: {(bad or values)[0]!r} is not an ISO 8601 time") from None


def flat_frame(rows: Sequence[Mapping[str, Any]], *, native_lists: bool = False,
               native_times: bool = False) -> "pd.DataFrame":
    """One column per field, one line per row, typed as described in the module docstring (``native_lists``: lists
    of scalars as lists, else JSON text; ``native_times``: :data:`TIME_COLUMNS` as UTC datetimes, else text)."""
    import pandas as pd

    cols = columns(rows)
    data: dict[str, Any] = {}
    for c in cols:
        values = [r.get(c) for r in rows]
        present = [v for v in values if v is not None]
        kinds = {_scalar_kind(v) for v in present}
        if native_times and c in TIME_COLUMNS and present and kinds == {"str"}:
            data[c] = _utc_times(values, c)
        elif not present:
            data[c] = pd.Series([None] * len(values), dtype=object)
        elif kinds == {"bool"}:
            data[c] = pd.array(values, dtype="boolean")
        elif kinds == {"int"}:
            data[c] = pd.array(values, dtype="Int64")
        elif kinds <= {"int", "float"}:
            data[c] = pd.array([float(v) if v is not None else None for v in values], dtype="Float64")
        elif kinds == {"str"}:
            data[c] = pd.Series(values, dtype=object)
        elif kinds == {"list"} and native_lists and _list_kind(present) is not None:
            kind = _list_kind(present)
            conv = (lambda x: None if x is None else float(x)) if kind == "number" else (lambda x: x)
            data[c] = pd.Series([None if v is None else [conv(x) for x in v] for v in values], dtype=object)
        else:  # lists of records, nested or mixed lists, or a mix of types: text
            data[c] = pd.Series([None if v is None else v if isinstance(v, str) else json_text(v) for v in values],
                                dtype=object)
    return pd.DataFrame(data, columns=cols)


# ---------------------------------------------------------------------------------------------------------------
# Files


_write_atomic = write_atomic  # ablate.store.atomic


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    df = flat_frame(rows)
    _write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))
    return path


def write_parquet(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = flat_frame(rows, native_lists=True, native_times=True)
    arrays, names = [], []
    for c in df.columns:
        col = df[c]
        try:
            arr = pa.Array.from_pandas(col)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):  # pragma: no cover - flat_frame types it
            arr = pa.array([None if v is None else v if isinstance(v, str) else json_text(v) for v in col],
                           type=pa.string())
        if pa.types.is_null(arr.type):
            arr = arr.cast(pa.string())
        arrays.append(arr)
        names.append(c)
    table = pa.Table.from_arrays(arrays, names=names)
    # pandas' metadata (the Int64 / boolean dtypes): read_parquet restores them, nullable integers included
    table = table.replace_schema_metadata(pa.Schema.from_pandas(df, preserve_index=False).metadata)
    _write_atomic(path, lambda tmp: pq.write_table(table, tmp))
    return path
