"""The JSONL results store: atomic concurrent appends, torn/corrupt lines, resume keys, row schema."""

from __future__ import annotations

import json
import math
import multiprocessing
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.store import results
from ablate.store import schema
from ablate.errors import ConfigError, ResultsFileError, UnavailableError
from ablate.store.results import (STATUSES, TERMINAL_STATUSES, InvalidRowError, ResultsWarning, ResultWriter, append_row,
                            done_keys, make_row, read_rows, reading, row_key, status_from_exception, to_frame)
from ablate.plan.runner import RunOptions, results_path
from tests.helpers import cli

ENV = {"env.hostname": "test-host", "env.gpu": None}
ROOT = Path(__file__).resolve().parents[2]


def lat(i: int, status: str = "ok", metrics: dict | None = None, **kw) -> dict:
    """A valid latency row (key fields part, i)."""
    return make_row("latency", status, {"part": "kernel", "i": i}, metrics or {}, env=kw.pop("env", ENV), **kw)


def line(row: dict) -> str:
    return json.dumps(row, separators=(",", ":"), allow_nan=False)


def _writer(path: str, writer: int, n: int, barrier) -> None:
    pad = "x" * (4096 + 97 * writer)  # rows longer than PIPE_BUF: whole lines only thanks to the lock
    barrier.wait(60)  # all writers start together, so their appends really interleave
    for i in range(n):
        append_row(path, make_row("latency", "ok", {"part": "kernel", "writer": writer, "i": i}, {"pad": pad},
                                  env=ENV, run_id="r"))


def test_concurrent_appends_from_processes_keep_every_line_whole(tmp_path):
    path = tmp_path / "deep" / "dir" / "rows.jsonl"  # parent folders are created
    writers, per = 4, 200
    ctx = multiprocessing.get_context("spawn")  # no fork of a (possibly torch-threaded) test process
    barrier = ctx.Barrier(writers)
    procs = [ctx.Process(target=_writer, args=(str(path), w, per, barrier)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == writers * per
    seen = set()
    for line in lines:
        row = json.loads(line)  # every line is one whole JSON object
        seen.add((row["writer"], row["i"]))
        assert len(row["pad"]) == 4096 + 97 * row["writer"]
    assert seen == {(w, i) for w in range(writers) for i in range(per)}
    assert len(read_rows(path)) == writers * per


def test_append_serializes_before_writing(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, {"a": 1})

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot serialize")

    with pytest.raises(RuntimeError):
        append_row(path, {"a": Boom()})
    assert path.read_text() == '{"a":1}\n'  # nothing half-written


def test_append_flattens_and_makes_strict_json(tmp_path):
    import numpy as np
    import torch

    path = tmp_path / "r.jsonl"
    stored = append_row(path, {"m": {"loss": float("nan"), "ppl": np.float32(2.5)}, "n": np.int64(3),
                               "t": torch.tensor(1.5), "dtype": torch.bfloat16, "p": Path("a/b"), "xs": (1, 2),
                               "inf": float("inf")})
    assert stored == {"m.loss": None, "m.ppl": 2.5, "n": 3, "t": 1.5, "dtype": "torch.bfloat16", "p": "a/b",
                      "xs": [1, 2], "inf": None}

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(path.read_text(), parse_constant=no_constants)


def test_torn_final_line_is_skipped_with_warning_and_repaired_on_append(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, lat(0))
    append_row(path, lat(1))
    with open(path, "ab") as fh:
        fh.write(line(lat(2))[:40].encode())  # killed mid-write
    with pytest.warns(ResultsWarning, match="line 3"):
        assert [r["i"] for r in read_rows(path)] == [0, 1]
    with pytest.warns(ResultsWarning, match="torn"):
        append_row(path, lat(3))
    assert [r["i"] for r in read_rows(path)] == [0, 1, 3]
    assert path.read_text().count("\n") == 3


def test_torn_final_line_cut_after_a_nan_token_is_still_torn(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, lat(0))
    with open(path, "ab") as fh:
        fh.write(line(lat(1, metrics={"ms": 1.5}))[:-20].replace('"ms":1.5', '"ms":NaN').encode())
    with pytest.warns(ResultsWarning, match="incomplete"):
        assert [r["i"] for r in read_rows(path)] == [0]


def test_complete_final_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(line(lat(0)) + "\n" + line(lat(1)))  # hand edited, no trailing newline
    assert [r["i"] for r in read_rows(path)] == [0, 1]
    append_row(path, lat(2))
    assert [r["i"] for r in read_rows(path)] == [0, 1, 2]


def test_complete_final_line_with_nan_is_invalid_not_torn(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(line(lat(0)) + "\n" + line(lat(1, metrics={"ms": 1.5})).replace('"ms":1.5', '"ms":NaN'))
    with pytest.raises(InvalidRowError, match=r"r\.jsonl:2: NaN is not strict JSON"):
        read_rows(path)


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(line(lat(0)) + '\n\n{"i": 1\n' + line(lat(2)) + "\n")
    before = path.read_bytes()
    with pytest.raises(ResultsFileError, match=r"results file .*r\.jsonl line 3 is not valid JSON: "):
        read_rows(path)
    assert path.read_bytes() == before


def test_non_object_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(line(lat(0)) + "\n[1, 2]\n")
    with pytest.raises(ResultsFileError, match="line 2 is not a JSON object"):
        read_rows(path)


def test_binary_file_is_one_error(tmp_path, recwarn):
    path = tmp_path / "r.jsonl"
    path.write_bytes(bytes(range(256)) * 4)  # no final newline: its last "line" looks torn too
    with pytest.raises(ResultsFileError, match="line 1 is not valid JSON") as info:
        read_rows(path)
    assert "\n" not in str(info.value)
    assert not recwarn.list, "the error is the one thing said"


def test_lines_that_are_not_json_are_reported_before_rows_that_break_the_schema(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\nnot json\n' + line(lat(0)) + "\n")
    with pytest.raises(ResultsFileError, match="line 2 is not valid JSON"):
        read_rows(path)


def test_missing_file(tmp_path):
    with pytest.raises(ResultsFileError, match="does not exist"):
        read_rows(tmp_path / "nope.jsonl")
    assert read_rows(tmp_path / "nope.jsonl", missing_ok=True) == []
    assert done_keys(tmp_path / "nope.jsonl") == set()


def test_folder_reads_all_shards_sorted(tmp_path):
    append_row(tmp_path / "b.jsonl", lat(0, metrics={"f": "b"}))
    append_row(tmp_path / "a.jsonl", lat(0, metrics={"f": "a"}))
    append_row(tmp_path / "sub" / "c.jsonl", lat(0, metrics={"f": "c"}))
    (tmp_path / "notes.txt").write_text("not results")
    assert [r["f"] for r in read_rows(tmp_path)] == ["a", "b", "c"]
    assert [r["f"] for r in read_rows([tmp_path / "b.jsonl", tmp_path / "a.jsonl"])] == ["b", "a"]


def test_row_key_is_stable_and_order_independent():
    a = row_key({"attention": "sdpa", "seq_len": 512, "seed": 0})
    assert a == row_key({"seed": 0, "seq_len": 512, "attention": "sdpa"})
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != row_key({"attention": "sdpa", "seq_len": 1024, "seed": 0})
    assert row_key({"scale": 1.0}) == row_key({"scale": 1})  # same setting, however it was typed
    assert row_key({"lens": (1, 2)}) == row_key({"lens": [1, 2]})
    # Pinned: a change here silently breaks resuming every existing results file.
    # sha256('{"attention":"sdpa","seed":0,"seq_len":512}')[:16]
    assert row_key({"attention": "sdpa", "seq_len": 512, "seed": 0}) == "56f9b556aa5d95a6"


def test_row_key_same_in_another_process():
    code = ("from ablate.store.results import row_key; "
            "print(row_key({'position': 'alibi', 'seq_len': 4096, 'device': 'cpu', 'dtype': 'float32'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == row_key({"position": "alibi", "seq_len": 4096, "device": "cpu", "dtype": "float32"})


def test_make_row_schema():
    from ablate.core.config import ModelConfig

    key = {"position": "alibi", "seq_len": 128, "seed": 0, "device": "cpu"}
    row = make_row("extrapolation", "ok", key, {"ppl": 12.5, "loss": float("nan")}, ModelConfig(), run_id="r1")
    assert row["schema_version"] == results.SCHEMA_VERSION
    assert row["suite"] == "extrapolation" and row["status"] == "ok" and row["reason"] == ""
    assert row["row_key"] == row_key(key)
    assert row["key_fields"] == sorted(key)
    assert row["run_id"] == "r1"
    assert row["timestamp"].endswith("Z") and row["timestamp"][:4].isdigit()
    assert row["position"] == "alibi" and row["ppl"] == 12.5 and row["loss"] is None
    assert row["config.d_model"] == ModelConfig().d_model
    assert "env.python" in row and "env.git_commit" in row and "env.torch" in row
    assert all(not isinstance(v, dict) for v in row.values())  # flat
    json.dumps(row, allow_nan=False)


def test_make_row_rows_are_valid():
    from ablate.core.config import ModelConfig

    rows = [make_row("training", "ok", {"point": "base", "seed": 0}, {"val_loss": 1.5, "curve.step": [1, 2]},
                     ModelConfig(), env=ENV),
            make_row("extrapolation", "diverged", {"position": "rope", "eval_len": 128, "seed": 0, "metric": "ppl",
                                                   "rope_scale": 2.0}, {"value": float("nan")}, env=ENV),
            make_row("latency", "oom", {"part": "kernel", "seq_len": 1024}, {"time_ms": None}, env=ENV)]
    for r in rows:
        assert schema.row_problem(json.loads(line(r))) is None, r
    # make_row does not know a suite's key fields: a row without them is made, and refused when read
    assert "needs key field(s) part" in schema.row_problem(make_row("latency", "ok", {"i": 0}, env=ENV))


def test_make_row_checks():
    with pytest.raises(ValueError, match="unknown status"):
        make_row("latency", "weird", {"a": 1}, {}, env=ENV)
    with pytest.raises(ValueError, match="reserved"):
        make_row("latency", "ok", {"status": 1}, {}, env=ENV)
    with pytest.raises(ValueError, match="reserved"):
        make_row("latency", "ok", {"a": 1}, {"env.x": 1}, env=ENV)
    with pytest.raises(ValueError, match="both"):
        make_row("latency", "ok", {"a": 1}, {"a": 2}, env=ENV)
    row = make_row("latency", "oom", {"a": 1}, {}, env=ENV)
    assert row["reason"] == "oom"  # a non-ok row always says something
    row = make_row("latency", "error", {"a": 1}, {}, reason="line one\nline two", env=ENV)
    assert row["reason"] == "line one line two"
    assert set(TERMINAL_STATUSES) < set(STATUSES)


def test_done_keys_only_terminal_statuses(tmp_path):
    path = tmp_path / "r.jsonl"
    for i, status in enumerate(STATUSES):
        append_row(path, lat(i, status))
    expected = {row_key({"part": "kernel", "i": i}) for i, s in enumerate(STATUSES)
                if s in ("ok", "unsupported", "diverged")}
    assert done_keys(path) == expected
    assert done_keys(tmp_path) == expected
    append_row(path, {"no": "row_key"})  # not a row: an error, not a row to ignore
    with pytest.raises(InvalidRowError, match=rf"r\.jsonl:{len(STATUSES) + 1}: missing column"):
        done_keys(path)
    with pytest.warns(ResultsWarning, match="skipped 1 invalid row"):
        assert done_keys(path, skip_invalid=True) == expected


def test_to_frame_keeps_latest_row_per_key(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, lat(0, "error", reason="boom"))
    append_row(path, lat(1, metrics={"ms": 2.0}))
    append_row(path, lat(0, metrics={"ms": 1.0}))  # the retry
    append_row(path, lat(0, metrics={"ms": 3.0}, env={**ENV, "env.hostname": "other"}))
    df = to_frame(path)
    assert len(df) == 3
    mine = df[(df["i"] == 0) & (df["env.hostname"] == "test-host")]
    assert mine["status"].tolist() == ["ok"] and mine["ms"].tolist() == [1.0]
    assert len(to_frame(path, latest=False)) == 4


def test_to_frame_tells_machines_with_one_hostname_apart(tmp_path):
    """Two cloud VMs both called ``vm``: an H100 and an A100 measurement of one key are two measurements."""
    path = tmp_path / "r.jsonl"
    h100 = {**ENV, "env.hostname": "vm", "env.gpu": "NVIDIA H100 80GB HBM3"}
    append_row(path, lat(0, metrics={"ms": 1.0}, env=h100))
    append_row(path, lat(0, metrics={"ms": 2.0}, env={**h100, "env.gpu": "NVIDIA A100-SXM4-80GB"}))
    append_row(path, lat(0, metrics={"ms": 1.5}, env=h100))  # the same machine again: supersedes its first row
    df = to_frame(path)
    assert sorted(df["ms"].tolist()) == [1.5, 2.0]


def test_result_writer_resumes(tmp_path):
    path = tmp_path / "r.jsonl"
    k0, k1 = {"part": "kernel", "i": 0}, {"part": "kernel", "i": 1}
    w = ResultWriter(path, "latency")
    assert not w.done(k0)
    w.write("ok", k0, {"ms": 1.0})
    w.write_exception(UnavailableError("flash-attn is not installed"), k1)
    assert w.done(k0) and not w.done(k1)
    w2 = ResultWriter(path, "latency")  # a re-run
    assert w2.done(k0) and not w2.done(k1)
    assert not ResultWriter(path, "latency", resume=False).done(k0)
    rows = read_rows(path)
    assert rows[1]["status"] == "unavailable" and "flash-attn" in rows[1]["reason"]


def test_status_from_exception():
    import torch

    assert status_from_exception(UnavailableError("no gpu"))[0] == "unavailable"
    assert status_from_exception(ConfigError("window needs causal"))[0] == "unsupported"
    assert status_from_exception(torch.cuda.OutOfMemoryError("CUDA out of memory."))[0] == "oom"
    assert status_from_exception(RuntimeError("CUDA out of memory. Tried to allocate"))[0] == "oom"
    status, reason = status_from_exception(ValueError("bad\nthing"))
    assert status == "error" and reason == "ValueError: bad thing"
    assert math.isfinite(len(status_from_exception(RuntimeError("x" * 2000))[1]))
    assert len(status_from_exception(RuntimeError("x" * 2000))[1]) <= 500


# ---------------------------------------------------------------------------------------------------------------
# The row schema (ablate/store/schema.py), checked on every read


COMMITTED = sorted((ROOT / "results").glob("*/*.jsonl"))


def test_committed_results_are_valid_rows_with_matching_keys():
    assert len(COMMITTED) >= 4
    for f in COMMITTED:
        lines = [x for x in f.read_bytes().split(b"\n") if x.strip()]
        rows = read_rows(f)
        assert len(rows) == len(lines), f
        for r in rows:
            assert r["row_key"] == row_key({k: r[k] for k in r["key_fields"]})  # the rule holds for real rows
            assert schema.hash_key_fields(r, r["key_fields"]) == r["row_key"]


def test_published_json_schema_is_the_definition():
    doc = ROOT / "docs" / "results.schema.json"
    assert doc.read_text(encoding="utf-8") == schema.schema_text(), \
        "regenerate it: python -m ablate.store.schema > docs/results.schema.json"
    assert json.loads(doc.read_text())["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_documented_example_row_is_valid():
    text = (ROOT / "docs" / "results-schema.md").read_text(encoding="utf-8")
    example = text.split("## Example", 1)[1].split("```json", 1)[1].split("```", 1)[0].strip()
    assert schema.row_problem(json.loads(example)) is None


def test_schema_agrees_with_the_rest_of_ablate():
    from ablate.regress import compare
    from ablate.plan import runner

    assert schema.SUITES == runner.SUITES and set(schema.SUITE_KEY_FIELDS) == set(schema.SUITES)
    compared = set(compare.METRICS) | set(compare.TIMING_METRICS) | {compare.SPREAD_LO, compare.SPREAD_HI}
    assert compared <= set(schema.NUMBER_COLUMNS), "a compared metric must be declared a number column"
    assert results.SCHEMA_VERSION == schema.SCHEMA_VERSION and results.STATUSES == schema.STATUSES


def _valid_extrapolation_row() -> dict:
    key = {"position": "alibi", "eval_len": 512, "seed": 0, "metric": "ppl", "rope_scale": 1.0}
    return json.loads(line(make_row("extrapolation", "ok", key, {"value": 14.2, "ppl": 14.2, "pos_loss": [1.5, 2.0],
                                                                 "unit": "ppl", "flag": True}, env=ENV)))


def _edit(**changes):
    def apply(r):
        for k, v in changes.items():
            if v is _DROP:
                r.pop(k)
            else:
                r[k] = v
        return r
    return apply


_DROP = object()

# (what is wrong, edit of a valid extrapolation row, the message's gist)
BAD_ROWS = [
    ("string metric", _edit(value="14.2"), "column 'value' must be a finite number or null, got string '14.2'"),
    ("string ppl", _edit(ppl="14.2"), "column 'ppl' must be a finite number or null"),
    ("bool metric", _edit(value=True), "column 'value' must be a finite number or null, got boolean"),
    ("overflow", _edit(ppl=float("inf")), "column 'ppl' holds a number too large for a double"),
    ("overflow in a list", _edit(pos_loss=[1.0, float("inf")]), "holds a list with a number too large"),
    ("object", _edit(extra={"a": 1}), "column 'extra' holds an object"),
    ("list of lists", _edit(pos_loss=[[1.0]]), "column 'pos_loss' holds a list with a list in it"),
    ("records outside grid_points", _edit(pos_loss=[{"a": 1}]), "holds a list with an object"),
    ("nested record in grid_points", _edit(grid_points=[{"a": {"b": 1}}]), "holds a record whose 'a' is an object"),
    ("another version", _edit(schema_version=2),
     "schema_version 2 is not supported (this ablate reads schema_version 1)"),
    ("version as text", _edit(schema_version="1"), "schema_version must be the number 1, got string"),
    ("no version", _edit(schema_version=_DROP), "missing column(s) schema_version"),
    ("unknown suite", _edit(suite="mystery"), "suite 'mystery' is unknown; valid: training, extrapolation, latency"),
    ("unknown status", _edit(status="fine"), "status 'fine' is unknown; valid: ok, unavailable"),
    ("reason not text", _edit(reason=3), "reason must be a string, got number 3"),
    ("run_id missing", _edit(run_id=_DROP), "missing column(s) run_id"),
    ("timestamp not text", _edit(timestamp=None), "timestamp must be a string, got null"),
    ("row_key not hex", _edit(row_key="XYZ"), "row_key must be 16 lowercase hex digits, got 'XYZ'"),
    ("row_key of other fields", _edit(row_key="0" * 16), "row_key 0000000000000000 is not the hash of the row's key"),
    ("key field edited", _edit(eval_len=1024), "is not the hash of the row's key fields"),
    ("key_fields not a list", _edit(key_fields="seed"), "key_fields must be a list of column names"),
    ("key field twice", _edit(key_fields=["seed", "seed"]), "key_fields names a column twice"),
    ("key field not a column", _edit(seed=_DROP), "key field 'seed' is not a column of the row"),
    ("reserved key field", _edit(key_fields=["eval_len", "metric", "position", "seed", "env.gpu"]),
     "key field 'env.gpu' is a reserved column"),
    ("suite key field missing", _edit(key_fields=["eval_len", "position", "seed"]),
     "an extrapolation row needs key field(s) metric"),
]


@pytest.mark.parametrize("what,edit,gist", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_row_problem_names_the_problem(what, edit, gist):
    assert schema.row_problem(_valid_extrapolation_row()) is None
    why = schema.row_problem(edit(_valid_extrapolation_row()))
    assert why is not None and gist in why, why
    assert "\n" not in why


def test_foreign_suite_and_record_columns():
    row = _valid_extrapolation_row()
    assert schema.row_problem(row, "extrapolation") is None
    assert schema.row_problem(row, "training") == "an extrapolation row in a training results file"
    row["grid_points"] = [{"point": "base", "baseline": None, "point_index": 0}, "x"]
    assert schema.row_problem(row) is None  # the declared list-of-records column
    assert schema.row_problem([row]) == "not a JSON object (got list)"


def test_json_schema_document_agrees_with_the_checks():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / "docs" / "results.schema.json").read_text()))
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    for f in COMMITTED:
        for r in read_rows(f):
            assert validator.is_valid(r), next(validator.iter_errors(r)).message
    beyond = {"overflow", "overflow in a list", "row_key of other fields", "key field edited", "key field not a column"}
    for what, edit, _ in BAD_ROWS:
        if what not in beyond:  # rules JSON Schema cannot say are listed in its description instead
            assert not validator.is_valid(edit(_valid_extrapolation_row())), what


# ---------------------------------------------------------------------------------------------------------------
# Reading invalid rows: one line naming file:line, the file untouched; skip_invalid leaves them out with a warning


def _file_with(tmp_path, bad: str, name: str = "extrapolation.jsonl", n: int = 4, at: int = 2) -> Path:
    rows = [line(make_row("extrapolation", "ok", {"position": "alibi", "eval_len": 64 * 2 ** i, "seed": 0,
                                                  "metric": "ppl"}, {"value": 2.0 + i}, env=ENV)) for i in range(n)]
    rows.insert(at, bad)
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


TRAINING_ROW = line(make_row("training", "ok", {"point": "base", "seed": 0}, {"val_loss": 1.5}, env=ENV))
_ROW = line(_valid_extrapolation_row())
# The failures of the old reader, each as the line that shows it (inserted as line 3 of an extrapolation file)
FAILURES = [
    ("string metrics", _ROW.replace('"value":14.2', '"value":"14.2"').replace('"ppl":14.2', '"ppl":"14.2"'),
     "column 'value' must be a finite number or null, got string '14.2'"),
    ("NaN", _ROW.replace('"value":14.2', '"value":NaN'), "NaN is not strict JSON"),
    ("Infinity", _ROW.replace('"ppl":14.2', '"ppl":Infinity'), "Infinity is not strict JSON"),
    ("-Infinity", _ROW.replace('"ppl":14.2', '"ppl":-Infinity'), "-Infinity is not strict JSON"),
    ("foo", '{"foo": 1}', "missing column(s) schema_version, suite, status"),
    ("schema_version 2", _ROW.replace('"schema_version":1', '"schema_version":2'),
     "schema_version 2 is not supported"),
    ("training row", TRAINING_ROW, "a training row in an extrapolation results file"),
]
assert all(f[1] != _ROW for f in FAILURES)


@pytest.mark.parametrize("what,bad,gist", FAILURES, ids=[f[0] for f in FAILURES])
def test_invalid_row_raises_file_line_why_and_is_skippable(tmp_path, what, bad, gist):
    path = _file_with(tmp_path, bad)
    before = path.read_bytes()
    with pytest.raises(InvalidRowError) as info:
        read_rows(path)
    err = info.value
    assert isinstance(err, ResultsFileError)
    assert str(err) == f"{path}:3: {err.why}; fix or remove that line" and gist in err.why
    assert (err.path, err.line) == (path, 3) and "\n" not in str(err)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)  # a worker's error reaches its launcher pickled
    with pytest.raises(InvalidRowError, match=re.escape(f"{path}:3: ")):
        to_frame(path)
    with pytest.warns(ResultsWarning) as caught:
        rows = read_rows(path, skip_invalid=True)
    assert len(rows) == 4 and [str(w.message) for w in caught] == [
        f"results file {path}: skipped 1 invalid row(s) (line 3); first: {err.text}"]
    with pytest.warns(ResultsWarning, match="skipped 1 invalid row"):
        assert len(to_frame(path, skip_invalid=True)) == 4
    assert path.read_bytes() == before  # reading never rewrites


def test_skip_counts_every_invalid_line_in_one_warning_per_file(tmp_path):
    a = _file_with(tmp_path, '{"foo": 1}\nnot json\n' + FAILURES[1][1], name="a.jsonl")
    b = _file_with(tmp_path, '{"foo": 2}', name="b.jsonl")
    with pytest.warns(ResultsWarning) as caught:
        rows = read_rows([a, b], skip_invalid=True)
    assert len(rows) == 8
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2
    assert messages[0].startswith(f"results file {a}: skipped 3 invalid row(s) (lines 3, 4, 5); first: {a}:3: ")
    assert messages[1].startswith(f"results file {b}: skipped 1 invalid row(s) (line 3)")


def test_reading_context_sets_the_default_warns_once_and_adds_the_hint(tmp_path):
    path = _file_with(tmp_path, '{"foo": 1}')
    with reading(hint="fix it, or pass --skip-invalid"):
        with pytest.raises(InvalidRowError, match=r"not an ablate result row .*; fix it, or pass --skip-invalid$"):
            read_rows(path)
    with pytest.warns(ResultsWarning) as caught:
        with reading(skip_invalid=True):
            for _ in range(3):  # a report reads its inputs several times
                assert len(read_rows(path)) == 4
            assert len(to_frame(path)) == 4
            with pytest.raises(InvalidRowError):
                read_rows(path, skip_invalid=False)  # an explicit answer wins
    assert len(caught) == 1
    with pytest.raises(InvalidRowError):
        read_rows(path)  # outside: strict again


def test_file_named_for_a_suite_expects_its_rows(tmp_path):
    # named for a suite and holding its rows: another suite's row is foreign
    for name in ("extrapolation.jsonl", "extrapolation/cpu-tiny.jsonl", "extrapolation.launch/shards/t.jsonl",
                 "extrapolation/cpu-tiny.launch/shards/t.jsonl"):
        path = _file_with(tmp_path, TRAINING_ROW, name=name)
        assert results.named_suite(path) == "extrapolation"
        with pytest.raises(InvalidRowError, match=re.escape(f"{path}:3: a training row in an extrapolation results")):
            read_rows(path)
    # a file named for nothing is read as it is; so is one named for a suite whose rows it does not hold
    assert len(read_rows(_file_with(tmp_path, TRAINING_ROW, name="mixed.jsonl"))) == 5
    other = tmp_path / "training" / "cpu.jsonl"  # e.g. latency rows copied into a folder named training
    other.parent.mkdir()
    other.write_text("\n".join(line(lat(i)) for i in range(3)) + "\n")
    assert results.named_suite(other) == "training" and len(read_rows(other)) == 3
    # expect_suite says it explicitly, whatever the name
    with pytest.raises(InvalidRowError, match=r"mixed\.jsonl:1: an extrapolation row in a training results file"):
        read_rows(tmp_path / "mixed.jsonl", expect_suite="training")
    with pytest.raises(ValueError, match="unknown suite 'nope'"):
        read_rows(other, expect_suite="nope")


@pytest.mark.parametrize("resume", [True, False])
def test_result_writer_refuses_a_file_with_an_invalid_row(tmp_path, resume):
    path = _file_with(tmp_path, TRAINING_ROW)
    before = path.read_bytes()
    with pytest.raises(InvalidRowError) as info:
        ResultWriter(path, "extrapolation", resume=resume)
    assert str(info.value) == (f"{path}:3: a training row in an extrapolation results file; fix or remove that line; "
                               f"ablate run never rewrites or skips rows of its results file")
    with pytest.raises(InvalidRowError, match=r"another\.jsonl:1: an extrapolation row in a latency results file"):
        ResultWriter(_file_with(tmp_path, line(lat(0)), name="another.jsonl"), "latency", resume=resume)
    # a shard counts as the file's: a bad row in it is refused too
    good = tmp_path / "good.jsonl"
    ResultWriter(good, "latency").write("ok", {"part": "kernel", "i": 0})
    results.shard_path(good, "w1").parent.mkdir(parents=True)
    results.shard_path(good, "w1").write_text('{"foo": 1}\n')
    with pytest.raises(InvalidRowError, match=r"shards/w1\.jsonl:1: missing column"):
        ResultWriter(good, "latency", shard="w2", resume=resume)
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match="unknown suite 'mystery'"):
        ResultWriter(tmp_path / "m.jsonl", "mystery")


# ---------------------------------------------------------------------------------------------------------------
# The CLI: one line FILE:LINE, exit 2, the file byte-identical, nothing written; --skip-invalid reads around it


def one_line_error(code, err, start: str, ignore: str = "\0") -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [x for x in err.strip("\n").splitlines() if not x.startswith(ignore)]
    assert len(lines) == 1 and lines[0].startswith(f"ablate: error: {start}"), err
    return lines[0]


@pytest.fixture
def fake_extrapolation_report(monkeypatch):
    """The extrapolation suite's report() replaced by one that records the rows it got and writes a small table."""
    import types

    got = []
    mod = types.ModuleType("ablate.suites.extrapolation")

    def report(rows, out_dir):
        got.append(rows)
        f = Path(out_dir) / "extrapolation_rows.md"
        f.write_text(rows[["eval_len", "value"]].to_csv())
        return [f]

    mod.report = report
    monkeypatch.setitem(sys.modules, "ablate.suites.extrapolation", mod)
    return got


@pytest.mark.parametrize("what,bad,gist", FAILURES, ids=[f[0] for f in FAILURES])
def test_report_refuses_an_invalid_row_in_one_line_and_skips_it_on_request(tmp_path, capsys, what, bad, gist,
                                                                           fake_extrapolation_report):
    path = _file_with(tmp_path / "res", bad)
    before = path.read_bytes()
    out = tmp_path / "rep"
    code, _, err = cli(capsys, "report", path, "--out", out)
    msg = one_line_error(code, err, f"{path}:3: ")
    assert gist in msg and msg.endswith("; fix or remove that line, or pass --skip-invalid to leave invalid rows out")
    assert path.read_bytes() == before and not out.exists()  # nothing written
    code, stdout, err = cli(capsys, "report", path, "--out", out, "--skip-invalid")
    assert code == 0, err
    why = msg.split(f"{path}:3: ", 1)[1].split("; fix or remove")[0]
    expected = f"ablate: warning: results file {path}: skipped 1 invalid row(s) (line 3); first: {path}:3: {why}"
    assert [x for x in err.splitlines() if x.strip()] == [expected], err
    (rows,) = fake_extrapolation_report
    assert len(rows) == 4 and set(rows["suite"]) == {"extrapolation"} and rows["value"].notna().all()
    assert "training" not in stdout and (out / "index.md").exists()
    assert path.read_bytes() == before


def test_report_with_a_nan_row_no_longer_prints_ok_as_a_perplexity(tmp_path, capsys):
    """The real extrapolation report: the NaN row made the old report print "ok" in a perplexity cell."""
    src = (ROOT / "results" / "extrapolation" / "cpu-tiny.jsonl").read_text().splitlines()[:8]
    r = json.loads(src[2])
    assert r["metric"] == "ppl" and r["status"] == "ok"
    src[2] = src[2].replace(f'"value":{r["value"]!r}', '"value":NaN').replace(f'"ppl":{r["ppl"]!r}', '"ppl":NaN')
    assert src[2].count("NaN") == 2
    path = tmp_path / "extrapolation.jsonl"
    path.write_text("\n".join(src) + "\n")
    before = path.read_bytes()
    code, _, err = cli(capsys, "report", path, "--out", tmp_path / "rep")
    one_line_error(code, err, f"{path}:3: NaN is not strict JSON")
    code, _, err = cli(capsys, "report", path, "--out", tmp_path / "rep", "--skip-invalid")
    assert code == 0 and "skipped 1 invalid row(s) (line 3)" in err, err
    table = (tmp_path / "rep" / "extrapolation_ppl.md").read_text()
    cells = [c.strip() for row in table.splitlines() if row.startswith("| ") for c in row.split("|")]
    neighbour = f"{json.loads(src[3])['value']:.2f}"  # the row after the NaN one still shows its perplexity
    assert "ok" not in cells and neighbour in cells and "—" in cells
    assert path.read_bytes() == before


def _kernel(ms: float, attention: str = "sdpa") -> dict:
    key = {"part": "kernel", "attention": attention, "pass": "fwd", "seq_len": 1024, "dtype": "bfloat16",
           "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}
    env = {**ENV, "env.gpu": "NVIDIA H100 80GB HBM3", "env.torch": "2.5.1"}
    return make_row("latency", "ok", key, {"metric": "time_ms", "value": ms, "unit": "ms", "time_ms": ms,
                                           "p20_ms": ms * 0.99, "p80_ms": ms * 1.01}, env=env)


def test_compare_refuses_nan_instead_of_calling_it_unchanged(tmp_path, capsys):
    base = tmp_path / "base.jsonl"
    base.write_text(line(_kernel(1.0)) + "\n" + line(_kernel(5.0, "naive")) + "\n")
    new = tmp_path / "new.jsonl"
    new.write_text(line(_kernel(1.0)).replace('"time_ms":1.0', '"time_ms":NaN') + "\n" + line(_kernel(5.0, "naive"))
                   + "\n")
    before = new.read_bytes()
    code, _, err = cli(capsys, "compare", base, new, "--format", "json")
    one_line_error(code, err, f"{new}:1: NaN is not strict JSON")
    # the skipped row leaves a baseline row missing: a gate fails on that unless told to accept it
    code, out, err = cli(capsys, "compare", base, new, "--format", "json", "--skip-invalid")
    assert code == 1 and "1 baseline row(s) missing" in err
    assert err.strip().splitlines()[0] == (f"ablate: warning: results file {new}: skipped 1 invalid row(s) (line 1); first: {new}:1: "
                           f"NaN is not strict JSON (the store writes a non-finite number as null)"), err
    code, out, err = cli(capsys, "compare", base, new, "--format", "json", "--skip-invalid", "--allow-missing")
    data = json.loads(out)
    assert not data["regressed"] and data["summary"]["missing"] == 1 and code == 0
    assert new.read_bytes() == before


def test_status_refuses_an_invalid_row_and_skips_it_on_request(tmp_path, capsys):
    from ablate.store import runstate

    path = tmp_path / "latency.jsonl"
    path.write_text(line(lat(0)) + "\n" + line(lat(1)).replace('"schema_version":1', '"schema_version":2') + "\n")
    keys = [row_key({"part": "kernel", "i": i}) for i in range(2)]
    runstate.write_json(runstate.plan_path(path), {"suite": "latency", "plan_id": "p", "launcher": "gpus",
                                                   "tasks": [{"id": f"t{i}", "keys": [k], "label": ""}
                                                             for i, k in enumerate(keys)], "submissions": []})
    before = path.read_bytes()
    code, _, err = cli(capsys, "status", tmp_path)
    one_line_error(code, err, f"{path}:2: schema_version 2 is not supported")
    code, out, err = cli(capsys, "status", tmp_path, "--format", "json", "--skip-invalid")
    assert code == 0 and "skipped 1 invalid row(s) (line 2)" in err and len(err.strip().splitlines()) == 1, err
    (st,) = json.loads(out)
    assert st["counts"]["done"] == 1 and st["counts"]["missing"] == 1
    assert path.read_bytes() == before


def test_run_refuses_a_foreign_row_in_its_results_file(tmp_path, capsys):
    """A resumed (or --no-resume) run of the real extrapolation suite: one line, exit 2, before any training,
    the file byte-identical and no plan or state left behind."""
    out = tmp_path / "out"
    path = _file_with(out, TRAINING_ROW, name="extrapolation/cpu-tiny.jsonl")
    assert path == results_path(RunOptions(suite="extrapolation", preset="tiny", device="cpu", out=out))
    before = path.read_bytes()
    for flag in ("--resume", "--no-resume"):
        code, _, err = cli(capsys, "run", "--suite", "extrapolation", "--preset", "tiny", "--out", out,
                           "--device", "cpu", "--no-progress", flag)
        # (the suite prints its plan's caveats before it opens its results file)
        msg = one_line_error(code, err, f"{path}:3: a training row in an extrapolation results file; ",
                             ignore="caveat: ")
        assert msg.endswith("fix or remove that line; ablate run never rewrites or skips rows of its results file")
        assert path.read_bytes() == before
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
            "extrapolation", "extrapolation/cpu-tiny.jsonl"]


def test_run_refuses_string_metrics_in_its_results_file(tmp_path, capsys):
    rows = [json.loads(x) for x in (ROOT / "results" / "latency" / "cpu.jsonl").read_text().splitlines()]
    ok = next(r for r in rows if r["status"] == "ok")
    path = results_path(RunOptions(suite="latency", preset="micro", device="cpu", out=tmp_path))
    assert path == tmp_path / "latency" / "cpu-micro.jsonl"  # the latency suite's file for --preset micro on CPU
    path.parent.mkdir()
    path.write_text(line(rows[0]) + "\n" + line({**ok, "time_ms": "1.5"}) + "\n")
    before = path.read_bytes()
    code, _, err = cli(capsys, "run", "--suite", "latency", "--preset", "micro", "--out", tmp_path,
                       "--device", "cpu", "--no-progress")
    one_line_error(code, err, f"{path}:2: column 'time_ms' must be a finite number or null, got string '1.5'")
    assert path.read_bytes() == before
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "latency", "latency/cpu-micro.jsonl"]
