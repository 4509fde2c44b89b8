"""The result-row schema: defined once here, checked on every read (:mod:`ablate.store.results`), published as JSON Schema.

A row is one flat JSON object (see ``docs/results-schema.md``). :func:`row_problem` says what is wrong with a parsed
row (``None`` when it is valid); :func:`json_schema` builds the JSON Schema document (draft 2020-12) committed as
``docs/results.schema.json`` -- regenerate it with ``python -m ablate.store.schema > docs/results.schema.json``.

The rules:

* the reserved columns are all present: ``schema_version`` equal to :data:`SCHEMA_VERSION`, ``suite`` one of
  :data:`SUITES`, ``status`` one of :data:`STATUSES`, ``reason``/``run_id``/``timestamp`` strings, ``row_key`` 16
  lowercase hex digits, ``key_fields`` a list of distinct names of columns present in the row (none of them reserved
  or under ``config.``/``env.``), including the suite's :data:`SUITE_KEY_FIELDS`;
* every other column holds a JSON scalar (string, number, boolean, null) or a list of scalars -- never an object
  (nested values are stored flattened, ``config.model.d_model``) nor a list of lists; the columns of
  :data:`RECORD_LIST_COLUMNS` (``grid_points``) may also hold flat objects of scalars in their list;
* every number is finite (the store is strict JSON: no ``NaN``/``Infinity`` tokens, and no literal such as ``1e999``
  that overflows a double); the measured values of :data:`NUMBER_COLUMNS` (``value``, ``time_ms``, ``ppl``, ...)
  are numbers or null, never strings;
* ``row_key`` is :func:`ablate.store.results.row_key` of the key fields (a row whose key fields were edited by hand would
  otherwise resume, compare and de-duplicate as a different measurement).

Finite numbers, the ``row_key`` hash and "key fields name columns of the row" go beyond what JSON Schema can say;
the document lists them in its ``description``. A suite's own results file holds only that suite's rows: readers
pass ``expect_suite`` (see :func:`ablate.store.results.read_rows`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Mapping

__all__ = ["SCHEMA_VERSION", "SUITES", "STATUSES", "TERMINAL_STATUSES", "RESERVED_COLUMNS", "CONFIG_PREFIX",
           "ENV_PREFIX", "SUITE_KEY_FIELDS", "NUMBER_COLUMNS", "RECORD_LIST_COLUMNS", "row_problem", "hash_key_fields",
           "json_schema", "schema_text"]

SCHEMA_VERSION = 1

# ok: measured. unavailable: cannot run on this machine (package missing, no GPU) -- may work elsewhere or later.
# unsupported: the variant cannot do this configuration (e.g. a kernel without arbitrary bias).
# oom: ran out of memory. diverged: ran, but training/eval produced non-finite values. error: anything else.
STATUSES = ("ok", "unavailable", "unsupported", "oom", "diverged", "error", "skipped")
# Re-running a key with one of these statuses would give the same answer, so a resumed sweep skips it.
# `unavailable`, `oom` and `error` are retried: a package may have been installed, memory freed, a bug fixed;
# `skipped` (a time budget ran out before the measurement) is what a resumed run is for.
TERMINAL_STATUSES = frozenset({"ok", "unsupported", "diverged"})

RESERVED_COLUMNS = ("schema_version", "suite", "status", "reason", "row_key", "key_fields", "run_id", "timestamp")
CONFIG_PREFIX = "config."
ENV_PREFIX = "env."

# The key fields every row of a suite has (each suite adds more: device, dtype, variant keys, ...). Minimal: what
# the suite's own report and `ablate compare` group by, present in every row the suite writes.
SUITE_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "training": ("point", "seed"),
    "extrapolation": ("eval_len", "metric", "position", "seed"),
    "latency": ("part",),
    "recall": ("attention", "d_model", "seq_len", "kv_pairs", "lr", "seed"),
}

# Measured values that readers compute with: a finite number or null (never a string). `value` is the generic
# measurement of a row (named by its `metric` column); the rest are the columns `ablate compare` compares
# (ablate.regress.compare.METRICS, TIMING_METRICS) and the latency spread around time_ms.
NUMBER_COLUMNS: tuple[str, ...] = (
    "value",
    # latency
    "time_ms", "mean_ms", "p20_ms", "p80_ms", "tflops", "tokens_per_s", "mfu", "peak_mem_bytes",
    "step_extra_mem_bytes", "kv_bytes", "kv_bytes_allocated", "first_call_s", "compile_s",
    # extrapolation
    "ppl", "loss", "bpb", "passkey_acc", "train_loss", "train_tokens_per_s", "train_s", "eval_s",
    # training
    "val_loss", "val_ppl", "val_bpb", "step_ms",
)

# Columns that hold a list of records (flat objects of scalars) -- the one exception to "no objects in a row":
# training rows carry the grid's declared points (`grid_points`), so a report shows points another grid measured.
RECORD_LIST_COLUMNS: tuple[str, ...] = ("grid_points",)

_HEX16 = re.compile(r"[0-9a-f]{16}")
_NUMBER_SET = frozenset(NUMBER_COLUMNS)
_RECORD_LIST_SET = frozenset(RECORD_LIST_COLUMNS)
_RESERVED_SET = frozenset(RESERVED_COLUMNS)
_PREFIXES = (CONFIG_PREFIX, ENV_PREFIX)
_SCALARS = (str, int, bool, type(None))  # float: checked for finiteness
SUITES = ("training", "extrapolation", "latency", "recall")  # what a row's ``suite`` may be (ablate.plan.runner runs them)
_SUITE_SET = frozenset(SUITES)
_STATUS_SET = frozenset(STATUSES)
_STR_TYPE = frozenset({str})
_SUITE_KEY_SETS = {suite: frozenset(keys) for suite, keys in SUITE_KEY_FIELDS.items()}


def _an(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _canon(value: Any) -> Any:
    """:func:`ablate.store.results._canonical` for values parsed from JSON: integral floats → int (1.0 and 1 match)."""
    if type(value) is float:
        return int(value) if value.is_integer() else value
    if type(value) is list:
        return [_canon(v) for v in value]
    return value


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_PAIRS: dict[tuple, str] = {}  # (name, type, value) -> '"name":value' as row_key writes it: rows repeat values


def hash_key_fields(row: Mapping[str, Any], key_fields: list[str]) -> str:
    """``ablate.store.results.row_key({k: row[k] for k in key_fields})`` for a row parsed from JSON (distinct names): the
    same sorted, compact JSON, built from cached ``"name":value`` pieces."""
    enc = _KEY_ENCODER.encode
    if len(_PAIRS) > 100_000:
        _PAIRS.clear()
    parts = []
    for k in sorted(key_fields):
        v = row[k]
        t = type(v)
        if t is list:
            parts.append(enc(k) + ":" + enc(_canon(v)))
            continue
        pair = (k, t, v)  # the type keeps True apart from 1; equal floats print alike once canonical (-0.0 → 0)
        piece = _PAIRS.get(pair)
        if piece is None:
            piece = _PAIRS[pair] = enc(k) + ":" + enc(_canon(v))
        parts.append(piece)
    return hashlib.sha256(("{" + ",".join(parts) + "}").encode("ascii")).hexdigest()[:16]


def _cells_ok(values: Any) -> bool:
    """Quick check (the common case, one pass): every value is a JSON scalar or a list of scalars, floats finite.
    ``False`` means "look closer" (:func:`_cell_problem` says what is wrong, or that a record column is fine)."""
    for v in values:
        t = type(v)
        if t is str or t is int or v is None:
            continue
        if t is float:
            if v - v:  # inf - inf and nan - nan are nan (truthy); finite - itself is 0.0
                return False
        elif t is list:
            for x in v:
                tx = type(x)
                if tx is str or tx is int or x is None or tx is bool:
                    continue
                if tx is not float or x - x:
                    return False
        elif t is not bool:
            return False
    return True


def _cell_problem(name: str, value: Any) -> str | None:
    """What is wrong with a non-reserved column's value (``None``: it is fine)."""
    t = type(value)
    if t is float:
        if not math.isfinite(value):
            return f"column {name!r} holds a number too large for a double ({_show(value)})"
    elif t is list:
        records = name in _RECORD_LIST_SET
        for item in value:
            it = type(item)
            if it is float:
                if not math.isfinite(item):
                    return f"column {name!r} holds a list with a number too large for a double"
            elif records and it is dict:
                for k, v in item.items():
                    vt = type(v)
                    if vt is float and not math.isfinite(v):
                        return f"column {name!r} holds a record with a number too large for a double"
                    if vt is not float and vt not in _SCALARS:
                        return (f"column {name!r} holds a record whose {k!r} is {_an(_type(v))}; its records "
                                f"hold JSON scalars")
            elif it not in _SCALARS:
                return (f"column {name!r} holds a list with {_an(_type(item))} in it; a column holds a JSON "
                        f"scalar or a list of scalars")
    elif t not in _SCALARS:
        return (f"column {name!r} holds {_an(_type(value))}; a column holds a JSON scalar or a list of scalars "
                f"(nested values are stored flattened, as {name}.x)")
    if name in _NUMBER_SET and value is not None and (t is bool or t not in (int, float)):
        return f"column {name!r} must be a finite number or null, got {_type(value)} {_show(value)}"
    return None


_KEY_NAMES: dict[tuple, tuple[frozenset, str | None]] = {}  # rows of a file share their key_fields


def _key_names(kf: tuple) -> tuple[frozenset, str | None]:
    """(the names, what is wrong with the list itself or None) of a ``key_fields`` list of strings."""
    hit = _KEY_NAMES.get(kf)
    if hit is None:
        names, why = frozenset(kf), None
        if len(names) != len(kf):
            why = f"key_fields names a column twice: {_show(list(kf))}"
        else:
            for k in kf:
                if k in _RESERVED_SET or k.startswith(_PREFIXES):
                    why = f"key field {k!r} is a reserved column; key fields are the measurement's own columns"
                    break
        if len(_KEY_NAMES) > 10_000:
            _KEY_NAMES.clear()
        hit = _KEY_NAMES[kf] = (names, why)
    return hit


def row_problem(row: Any, expect_suite: str | None = None, *, check_key: bool = True) -> str | None:
    """Why ``row`` (a parsed JSON value) is not a valid result row, in one line; ``None`` when it is valid.

    ``expect_suite``: the row is read from that suite's own results file, so a row of another suite is invalid.
    ``check_key``: also check that ``row_key`` is the hash of the key fields.
    """
    if type(row) is not dict:
        return f"not a JSON object (got {_type(row)})"
    version = row.get("schema_version")
    if "schema_version" in row and not (version == SCHEMA_VERSION and type(version) in (int, float)):
        if type(version) in (int, float):
            return (f"schema_version {_show(version)} is not supported (this ablate reads schema_version "
                    f"{SCHEMA_VERSION})")
        return f"schema_version must be the number {SCHEMA_VERSION}, got {_type(version)} {_show(version)}"
    if not _RESERVED_SET <= row.keys():
        missing = [c for c in RESERVED_COLUMNS if c not in row]
        return f"missing column(s) {', '.join(missing)}: not an ablate result row (docs/results-schema.md)"
    suite = row["suite"]
    if type(suite) is not str or suite not in _SUITE_SET:
        return f"suite {_show(suite)} is unknown; valid: {', '.join(SUITES)}"
    if expect_suite is not None and suite != expect_suite:
        return f"{_an(suite)} row in {_an(expect_suite)} results file"
    status = row["status"]
    if type(status) is not str or status not in _STATUS_SET:
        return f"status {_show(status)} is unknown; valid: {', '.join(STATUSES)}"
    for col in ("reason", "run_id", "timestamp"):
        if type(row[col]) is not str:
            return f"{col} must be a string, got {_type(row[col])} {_show(row[col])}"
    rk = row["row_key"]
    if type(rk) is not str or not _HEX16.fullmatch(rk):
        return f"row_key must be 16 lowercase hex digits, got {_show(rk)}"
    kf = row["key_fields"]
    if type(kf) is not list or not set(map(type, kf)) <= _STR_TYPE:
        return f"key_fields must be a list of column names, got {_show(kf)}"
    names, why = _key_names(tuple(kf))
    if why:
        return why
    if not names <= row.keys():
        k = next(k for k in kf if k not in row)
        return f"key field {k!r} is not a column of the row"
    if not _SUITE_KEY_SETS[suite] <= names:
        lacking = [k for k in SUITE_KEY_FIELDS[suite] if k not in names]
        return f"{_an(suite)} row needs key field(s) {', '.join(lacking)} (it has: {', '.join(kf) or 'none'})"
    if not _cells_ok(row.values()):
        for name, value in row.items():  # find the culprit
            if name not in _RESERVED_SET:
                why = _cell_problem(name, value)
                if why:
                    return why
    for name in _NUMBER_SET.intersection(row):
        value = row[name]
        if value is not None and type(value) not in (int, float):
            name = next(k for k in row if k in _NUMBER_SET and row[k] is not None and type(row[k]) not in (int, float))
            value = row[name]  # the first such column in the row, whatever the set's order
            return f"column {name!r} must be a finite number or null, got {_type(value)} {_show(value)}"
    if check_key:
        expected = hash_key_fields(row, kf)
        if expected != rk:
            return (f"row_key {rk} is not the hash of the row's key fields ({expected}): a key field was edited "
                    f"or the row was not made by ablate")
    return None


# ---------------------------------------------------------------------------------------------------------------
# JSON Schema


def json_schema() -> dict[str, Any]:
    """The row schema as a JSON Schema (draft 2020-12) document; ``docs/results.schema.json`` is this, committed."""
    number_or_null = {"$ref": "#/$defs/number_or_null"}
    reserved_name = {"anyOf": [{"enum": list(RESERVED_COLUMNS)},
                               {"pattern": "^(" + "|".join(re.escape(p) for p in _PREFIXES) + ")"}]}
    per_suite = []
    for suite in SUITES:
        need = list(SUITE_KEY_FIELDS[suite])
        per_suite.append({
            "if": {"properties": {"suite": {"const": suite}}, "required": ["suite"]},
            "then": {"required": need,
                     "properties": {"key_fields": {"allOf": [{"contains": {"const": k}} for k in need]}}},
        })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"ablate result row (schema_version {SCHEMA_VERSION})",
        "description": (
            "One line of an ablate results file (JSONL, strict JSON, UTF-8). Generated by ablate.store.schema.json_schema(); "
            "see docs/results-schema.md. Checked by ablate beyond this document: every number is a finite double "
            "(no NaN/Infinity, no overflowing literal); every name in key_fields is a column of the row; row_key is "
            "ablate.store.results.row_key() of the key fields (first 16 hex digits of SHA-256 over their sorted, compact "
            "JSON, integral floats written as integers)."),
        "type": "object",
        "required": list(RESERVED_COLUMNS),
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION, "description": "the row layout's version"},
            "suite": {"enum": list(SUITES), "description": "the suite that measured the row"},
            "status": {"enum": list(STATUSES),
                       "description": "ok, or why there is no number; terminal (skipped on resume): "
                                      + ", ".join(s for s in STATUSES if s in TERMINAL_STATUSES)},
            "reason": {"type": "string", "description": "one line; empty for ok"},
            "row_key": {"type": "string", "pattern": "^[0-9a-f]{16}$", "minLength": 16, "maxLength": 16,
                        "description": "row_key(key fields): the identity of the measurement"},
            "key_fields": {"type": "array", "uniqueItems": True, "items": {"type": "string", "not": reserved_name},
                           "description": "names of the columns that identify the measurement"},
            "run_id": {"type": "string", "description": "one per ablate run process"},
            "timestamp": {"type": "string", "description": "UTC ISO 8601 when the row was made"},
            **{c: number_or_null for c in NUMBER_COLUMNS},
            **{c: {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/scalar"}, {"$ref": "#/$defs/record"}]}}
               for c in RECORD_LIST_COLUMNS},
        },
        "additionalProperties": {"$ref": "#/$defs/cell"},
        "allOf": per_suite,
        "$defs": {
            "scalar": {"type": ["string", "number", "boolean", "null"]},
            "cell": {"anyOf": [{"$ref": "#/$defs/scalar"}, {"type": "array", "items": {"$ref": "#/$defs/scalar"}}],
                     "description": "a JSON scalar or a list of scalars (nested values are flattened to dotted "
                                    "columns: config.model.d_model)"},
            "number_or_null": {"type": ["number", "null"], "description": "a measured value"},
            "record": {"type": "object", "additionalProperties": {"$ref": "#/$defs/scalar"},
                       "description": "a flat object of scalars (only in the columns that hold records)"},
        },
    }


def schema_text() -> str:
    """:func:`json_schema` as the exact text of ``docs/results.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # python -m ablate.store.schema > docs/results.schema.json
    import sys

    sys.stdout.write(schema_text())
