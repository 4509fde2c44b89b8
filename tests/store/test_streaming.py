"""The streaming reader and the newest-row-per-measurement frame: rows are checked one at a time and only what the
caller keeps is held (tracemalloc peak against the file size), with the guarantees of the whole-file reader."""

from __future__ import annotations

import gc
import json
import re
import tracemalloc
from pathlib import Path

import pytest

from ablate.io.export import select_rows
from ablate.store.frame import latest_rows, to_frame
from ablate.store.reader import InvalidRowError, ResultsWarning, iter_rows, read_rows
from ablate.store.results import make_row

ENV = {"env.hostname": "h", "env.gpu": None, "env.cpu": "cpu", "env.gpu_count": 0}


def _row(i: int, run: int, value: float, *, suite: str = "extrapolation", n_loss: int = 0) -> dict:
    key = {"position": "rope", "eval_len": 64 * (i + 1), "seed": 0, "metric": "ppl"} if suite == "extrapolation" \
        else {"point": f"p{i}", "seed": 0}
    metrics = {"value": value, "pos_loss": [round(0.001 * j + value, 6) for j in range(n_loss)]}
    row = make_row(suite, "ok", key, metrics, env=ENV, run_id=f"run{run}")
    row["timestamp"] = f"2026-01-01T00:{run:02d}:{i % 60:02d}.000000Z"
    return row


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows), encoding="utf-8")
    return path


def _remeasured(tmp_path: Path, measurements: int, runs: int, n_loss: int) -> Path:
    """``measurements`` rows measured ``runs`` times (each run's rows newer than the last): the newest are run
    ``runs - 1``'s."""
    rows = [_row(i, run, 10.0 + run + i / 1000, n_loss=n_loss) for run in range(runs) for i in range(measurements)]
    return _write(tmp_path / "extrapolation" / "cpu.jsonl", rows)


def _peak(fn) -> tuple[object, int]:
    gc.collect()
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_follows_the_rows_kept_not_the_file(tmp_path):
    measurements, runs = 60, 25
    path = _remeasured(tmp_path / "all", measurements, runs, n_loss=150)
    newest = _write(tmp_path / "newest" / "extrapolation" / "cpu.jsonl",  # what is kept, alone in a file
                    [json.loads(x) for x in path.read_text().splitlines()[-measurements:]])
    size = path.stat().st_size
    assert size > 2_000_000
    to_frame(newest)  # pandas imported and warmed up before measuring
    select_rows([newest])
    count, peak = _peak(lambda: sum(1 for _ in iter_rows(path)))  # nothing kept
    assert count == measurements * runs and peak < 0.05 * size, (peak, size)
    (df, peak), (_, ref) = _peak(lambda: to_frame(path)), _peak(lambda: to_frame(newest))
    assert len(df) == measurements and set(df["run_id"]) == {f"run{runs - 1}"}
    assert peak < 1.5 * ref + 200_000 and peak < 0.5 * size, (peak, ref, size)  # the old reader: > 2x the file
    (rows, peak), (_, ref) = _peak(lambda: select_rows([path])), _peak(lambda: select_rows([newest]))
    assert len(rows) == measurements and peak < 1.5 * ref + 200_000 and peak < 0.5 * size, (peak, ref, size)
    rows, peak = _peak(lambda: read_rows(path, columns=("row_key", "value")))
    assert set(rows[0]) == {"row_key", "value"} and peak < 0.25 * size, (peak, size)


def test_latest_rows_is_the_newest_per_measurement_and_machine_in_file_order():
    a0, b0 = _row(0, 1, 1.0), _row(1, 1, 2.0)
    a1 = {**_row(0, 2, 3.0)}
    older = {**_row(1, 0, 4.0)}  # written later, measured earlier: not the newest
    other_machine = {**_row(0, 0, 5.0), "env.hostname": "h2"}
    same_time = {**a1, "value": 6.0}  # same timestamp: the later line wins
    got = latest_rows([a0, b0, a1, older, other_machine, same_time])
    assert [r["value"] for r in got] == [2.0, 5.0, 6.0]


def test_to_frame_text_columns_are_one_object_block(tmp_path):
    path = _remeasured(tmp_path, 5, 2, n_loss=3)
    df = to_frame(path)
    assert df["position"].dtype == object and df["value"].dtype == float
    assert df._mgr.nblocks <= 4  # selecting rows copies a few blocks, not one per text column
    assert list(to_frame(path, columns=["value", "position", "nope"]).columns) == ["value", "position"]
    assert list(to_frame(path, latest=False, columns=["value"])["value"]) == [10.0, 10.001, 10.002, 10.003, 10.004,
                                                                              11.0, 11.001, 11.002, 11.003, 11.004]


def test_an_invalid_row_far_down_is_still_refused_in_one_line(tmp_path):
    rows = [json.dumps(_row(i, 0, 1.0), separators=(",", ":")) for i in range(500)]
    rows[420] = rows[420].replace('"value":1.0', '"value":"1.0"')
    path = tmp_path / "extrapolation.jsonl"
    path.write_text("\n".join(rows) + "\n")
    it = iter_rows(path)
    got = [next(it) for _ in range(10)]  # rows come before the whole file is read
    assert len(got) == 10
    with pytest.raises(InvalidRowError, match=r"extrapolation\.jsonl:421: column 'value' must be a finite number"):
        list(it)
    with pytest.raises(InvalidRowError, match=":421: "):
        to_frame(path)
    with pytest.warns(ResultsWarning, match=r"skipped 1 invalid row\(s\) \(line 421\)"):
        assert len(read_rows(path, skip_invalid=True)) == 499


def test_foreign_rows_held_back_until_the_files_own_suite_shows(tmp_path):
    training = [json.dumps(_row(i, 0, 1.0, suite="training"), separators=(",", ":")) for i in range(2)]
    own = json.dumps(_row(0, 0, 1.0), separators=(",", ":"))
    broken = own.replace('"status":"ok"', '"status":"fine"')
    # a foreign row (line 1), a broken row (line 2), then the file's own suite (line 3): line 1 is the first problem
    path = tmp_path / "extrapolation.jsonl"
    path.write_text("\n".join([training[0], broken, own]) + "\n")
    with pytest.raises(InvalidRowError, match=re.escape(f"{path}:1: a training row in an extrapolation results")):
        read_rows(path)
    # no row of the suite it is named for: the file is read as it is
    path.write_text("\n".join(training) + "\n")
    assert [r["suite"] for r in read_rows(path)] == ["training", "training"]
    # skipped on request: the foreign rows, each counted once
    path.write_text("\n".join([training[0], own, training[1]]) + "\n")
    with pytest.warns(ResultsWarning, match=r"skipped 2 invalid row\(s\) \(lines 1, 3\)"):
        assert [r["suite"] for r in read_rows(path, skip_invalid=True)] == ["extrapolation"]


def test_missing_path_raises_at_the_call(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        iter_rows(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown suite 'x'"):
        iter_rows(tmp_path, expect_suite="x")
