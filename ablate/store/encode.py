"""A row as it is stored: values as strict JSON (:func:`to_jsonable`), nested dicts flattened to dotted columns
(:func:`flatten`), the one line written (:func:`serialize_row`) and the row's identity, :func:`row_key` (a hash of
the fields that identify the measurement)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
from enum import Enum
from typing import Any, Mapping

__all__ = ["to_jsonable", "flatten", "serialize_row", "canonical", "row_key"]


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
    """Nested dicts as dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if not isinstance(k, str):
            raise TypeError(f"result row keys must be strings, got {k!r}")
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def serialize_row(row: Mapping[str, Any]) -> bytes:
    """The line written for ``row``: flattened, strict compact JSON, UTF-8, ending in a newline."""
    if not isinstance(row, Mapping):
        raise TypeError(f"a result row must be a dict, got {type(row).__name__}")
    flat = to_jsonable(flatten(row))
    line = json.dumps(flat, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (line + "\n").encode("utf-8")


def canonical(value: Any) -> Any:
    """Normalize for hashing: integral floats equal their int (1.0 and 1 are the same setting)."""
    value = to_jsonable(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def row_key(fields: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of the identifying fields (order-independent; same across processes and versions).

    ``row_key({"attention": "sdpa", "seq_len": 512}) == row_key({"seq_len": 512, "attention": "sdpa"})``.
    """
    canon = json.dumps(canonical(dict(fields)), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                       allow_nan=False)
    return hashlib.sha256(canon.encode("ascii")).hexdigest()[:16]
