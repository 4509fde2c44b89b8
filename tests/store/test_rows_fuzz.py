"""Generated result rows (Hypothesis): valid rows read back as written; any mutation of a file is either still valid
(and read) or refused with a ResultsFileError naming the file and line -- never another exception, never a wrong
row accepted, never the file changed.

Run with ``--hypothesis-show-statistics`` to see how many cases each property generated.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ablate.store import schema  # noqa: E402
from ablate.errors import ResultsFileError  # noqa: E402
from ablate.store.results import InvalidRowError, ResultsWarning, append_row, make_row, read_rows, row_key  # noqa: E402

ENV = {"env.hostname": "fuzz", "env.gpu": None, "env.torch": "2.5.1"}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])
FEWER = settings(SETTINGS, max_examples=200)  # properties whose cases are all alike in what they exercise

# --- strategies -------------------------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), finite, text)
cell = st.one_of(scalar, st.lists(scalar, max_size=5))
number = st.one_of(st.none(), st.integers(-2**40, 2**40), finite)
_TAKEN = set(schema.RESERVED_COLUMNS) | set(schema.NUMBER_COLUMNS) | set(schema.RECORD_LIST_COLUMNS)
name = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10).filter(
    lambda n: n not in _TAKEN and not n.startswith(("config.", "env.")) and "." not in n)


@st.composite
def made_rows(draw) -> dict:
    """A row as make_row builds it (random suite, status, key fields, metrics, config), as stored (via JSON)."""
    suite = draw(st.sampled_from(schema.SUITES))
    key = {k: draw(scalar) for k in schema.SUITE_KEY_FIELDS[suite]}
    key.update(draw(st.dictionaries(name, st.one_of(scalar, st.lists(scalar, max_size=3)), max_size=4)))
    metrics = draw(st.dictionaries(name, cell, max_size=5))
    metrics = {k: v for k, v in metrics.items() if k not in key}
    metrics.update(draw(st.dictionaries(st.sampled_from(schema.NUMBER_COLUMNS), number, max_size=3)))
    config = draw(st.dictionaries(name, st.one_of(scalar, st.dictionaries(name, scalar, max_size=2)), max_size=3))
    row = make_row(suite, draw(st.sampled_from(schema.STATUSES)), key, metrics, config, reason=draw(text),
                   run_id="20250101T000000Z-abcdef", env=ENV)
    return json.loads(json.dumps(row, allow_nan=False))


def strict_parse(line: bytes):
    """The oracle's own strict JSON parse (no NaN/Infinity tokens); raises ValueError on anything else."""
    def no(name):
        raise ValueError(name)
    return json.loads(line.decode("utf-8"), parse_constant=no)


def sane(row: dict) -> None:
    """What any accepted row must look like, checked independently of ablate.store.schema."""
    assert row["schema_version"] == 1 and row["suite"] in schema.SUITES and row["status"] in schema.STATUSES
    assert all(isinstance(row[c], str) for c in ("reason", "run_id", "timestamp", "row_key"))
    assert row["row_key"] == row_key({k: row[k] for k in row["key_fields"]})
    assert set(schema.SUITE_KEY_FIELDS[row["suite"]]) <= set(row["key_fields"])

    def walk(v, depth, records=False):
        if isinstance(v, float):
            assert math.isfinite(v)
        elif isinstance(v, list):
            assert depth == 0
            for x in v:
                walk(x, 1, records)
        elif isinstance(v, dict):
            assert depth == 1 and records
            for x in v.values():
                walk(x, 2)
        else:
            assert v is None or isinstance(v, (str, int, bool))

    for k, v in row.items():
        walk(v, 0, records=k in schema.RECORD_LIST_COLUMNS)
        if k in schema.NUMBER_COLUMNS:
            assert v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _serialize(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --- properties -------------------------------------------------------------------------------------------------


@FEWER
@given(rows=st.lists(made_rows(), min_size=1, max_size=4))
def test_valid_rows_round_trip(folder, rows):
    path = folder / "roundtrip.jsonl"
    path.unlink(missing_ok=True)
    stored = [append_row(path, r) for r in rows]
    assert stored == rows
    for r in rows:
        assert schema.row_problem(r) is None, schema.row_problem(r)
        sane(r)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about either
        assert read_rows(path) == rows
        assert read_rows(path, skip_invalid=True) == rows


def _mutate_value(draw, row: dict) -> dict:
    row = dict(row)
    col = draw(st.sampled_from(sorted(row) + ["new"]))
    anything = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(text, inner, max_size=3)), max_leaves=6)
    row[col] = draw(st.one_of(anything, st.sampled_from([[], {}, "1", 2, 1.0, True, "0" * 16, ["seed"],
                                                         list(row["key_fields"]) + ["nope"], "training",
                                                         "extrapolation", "latency", "ok", -0.0])))
    return row


@st.composite
def mutated_line(draw, row: dict) -> bytes:
    kind = draw(st.sampled_from(["value", "drop", "token", "version", "suite", "bytes", "text", "cut", "object",
                                 "two"]))
    event(f"mutation: {kind}")
    if kind == "value":
        return _serialize(_mutate_value(draw, row))
    if kind == "drop":
        col = draw(st.sampled_from(sorted(row)))
        return _serialize({k: v for k, v in row.items() if k != col})
    if kind == "token":  # a number replaced by a non-finite token or an overflowing literal
        nums = [k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        col = draw(st.sampled_from(nums))
        marker = "\u0000MARK\u0000"
        tok = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "nan", "inf"]))
        return _serialize({**row, col: marker}).replace(json.dumps(marker).encode(), tok.encode())
    if kind == "version":
        return _serialize({**row, "schema_version": draw(st.one_of(st.integers(-3, 5), text, st.none()))})
    if kind == "suite":
        return _serialize({**row, "suite": draw(st.one_of(st.sampled_from(schema.SUITES), text))})
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b" ")
    if kind == "text":
        return draw(text).encode("utf-8").replace(b"\n", b" ")
    if kind == "cut":
        data = _serialize(row)
        return data[: draw(st.integers(1, len(data) - 1))]
    if kind == "object":
        return _serialize(draw(st.dictionaries(text, scalar, max_size=4)))
    return _serialize(row) + b" " + _serialize(row)  # two rows on one line


@st.composite
def files(draw):
    """(lines, final newline?) of a results file: valid rows with mutated lines among them."""
    rows = draw(st.lists(made_rows(), min_size=1, max_size=4))
    lines = [_serialize(r) for r in rows]
    for _ in range(draw(st.integers(1, 3))):
        bad = draw(mutated_line(draw(st.sampled_from(rows))))
        lines.insert(draw(st.integers(0, len(lines))), bad)
    return lines, draw(st.booleans())


def _expected(lines: list[bytes], newline: bool, expect_suite: str | None):
    """The oracle: (valid rows, invalid line numbers: not JSON objects, then breaking the schema; torn last line?)."""
    good, not_json, not_row, torn = [], [], [], False
    for n, data in enumerate(lines, start=1):
        if not data.strip():
            continue
        last = n == len(lines) and not newline
        try:
            obj = strict_parse(data)
        except (ValueError, UnicodeDecodeError):
            try:  # a last line that is no whole JSON object even with NaN allowed is a torn write
                whole = isinstance(json.loads(data.decode("utf-8")), dict)
            except (ValueError, UnicodeDecodeError):
                whole = False
            if last and not whole:
                torn = True
            else:
                not_json.append(n)
            continue
        if not isinstance(obj, dict):
            not_json.append(n)
        elif schema.row_problem(obj, expect_suite) is None:
            good.append(obj)
        else:
            not_row.append(n)
    return good, not_json + not_row, torn


@SETTINGS
@given(f=files(), expect=st.sampled_from([None, *schema.SUITES]))
def test_mutated_files_are_read_or_refused_with_file_and_line(folder, f, expect):
    lines, newline = f
    path = folder / "mutated.jsonl"  # a name for no suite: only expect_suite says the file's suite
    data = b"\n".join(lines) + (b"\n" if newline else b"")
    path.write_bytes(data)
    good, bad, torn = _expected(lines, newline, expect)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rows = read_rows(path, expect_suite=expect)
        except ResultsFileError as exc:
            msg = str(exc)
            assert "\n" not in msg
            assert isinstance(exc, InvalidRowError) and exc.path == path
            assert exc.line == bad[0], (exc.line, bad)  # the first bad line (lines not JSON before schema breaks)
            assert msg.startswith((f"{path}:{exc.line}: ", f"results file {path} line {exc.line} "))
            assert not caught  # the error is the one thing said
            event("read: refused (file:line)")
        else:
            event(f"read: accepted{' with a torn last line' if torn else ''}")
            assert not bad and rows == good
            for r in rows:
                sane(r)
            torn_warning = f"results file {path} line {len(lines)} is incomplete (interrupted write); skipped"
            assert [str(w.message) for w in caught] == ([torn_warning] if torn else [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_rows(path, skip_invalid=True, expect_suite=expect) == good
    said = [str(w.message) for w in caught if issubclass(w.category, ResultsWarning)]
    assert len(said) == bool(bad) + torn
    if bad:
        lines_ = ", ".join(str(n) for n in sorted(bad)[:10]) + (", ..." if len(bad) > 10 else "")
        assert (f"results file {path}: skipped {len(bad)} invalid row(s) (line{'s' if len(bad) > 1 else ''} {lines_}); "
                f"first: ") in said[-1]
    assert path.read_bytes() == data  # reading never rewrites


try:
    import jsonschema
except ImportError:  # pragma: no cover - optional: pip install jsonschema
    jsonschema = None


@pytest.mark.skipif(jsonschema is None, reason="needs the jsonschema package")
@SETTINGS
@given(row=made_rows(), mutate=st.data())
def test_json_schema_accepts_every_row_the_reader_accepts(row, mutate):
    """The published document and the checks agree: a row ablate accepts is valid JSON Schema, so a row the
    document rejects is one ablate rejects (the document is weaker: it cannot say everything, see its description)."""
    validator = _validator(jsonschema)
    assert validator.is_valid(row)
    other = _mutate_value(mutate.draw, row)
    if schema.row_problem(other) is None:
        assert validator.is_valid(other), next(validator.iter_errors(other)).message


_VALIDATOR = []


def _validator(jsonschema):
    if not _VALIDATOR:
        doc = json.loads((Path(__file__).resolve().parents[2] / "docs" / "results.schema.json").read_text())
        _VALIDATOR.append(jsonschema.Draft202012Validator(doc))
    return _VALIDATOR[0]


key_value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@SETTINGS
@given(fields=st.dictionaries(name, key_value, min_size=1, max_size=6))
def test_fast_key_hash_equals_row_key(fields):
    """The reader's hash of parsed key fields is ablate.store.results.row_key (which resume and compare use)."""
    parsed = json.loads(json.dumps(fields, allow_nan=False))
    assert schema.hash_key_fields(parsed, sorted(parsed)) == row_key(fields)


@FEWER
@given(rows=st.lists(made_rows(), min_size=1, max_size=3), cut=st.integers(1, 10**6))
def test_torn_last_line_is_skipped_with_a_warning(folder, rows, cut):
    path = folder / "torn.jsonl"
    lines = [_serialize(r) for r in rows]
    tail = lines[-1][: 1 + cut % (len(lines[-1]) - 1)]
    assume(tail.strip())
    path.write_bytes(b"".join(x + b"\n" for x in lines[:-1]) + tail)
    with pytest.warns(ResultsWarning, match=f"line {len(lines)} is incomplete"):
        assert read_rows(path) == rows[:-1]
