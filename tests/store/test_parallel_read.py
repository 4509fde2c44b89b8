"""Large results files read in parts on every core (ablate/store/parallel_read.py): the parts cover every byte once at
line ends, the merged result of ``ablate report``'s and ``ablate show``'s readers equals the serial one (order, ties,
re-measured rows, several files), and anything the fast path does not handle (an invalid row, a foreign row, a torn
last line, a failing child) leaves it to the serial reader, with the serial reader's error or warning."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path

import pytest

from ablate.reporting import report_inputs, show
from ablate.store import parallel_read
from ablate.store.parallel_read import parallel_reduce, segments
from ablate.store.reader import InvalidRowError, ResultsWarning
from ablate.store.results import make_row

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"


def _rows(rng: random.Random, n: int, suite: str = "extrapolation", status_of=None) -> list[dict]:
    """``n`` rows over a few measurements and two machines, timestamps drawn with ties, statuses mixed."""
    out = []
    for i in range(n):
        m = rng.randrange(7)
        key = ({"position": ["rope", "alibi"][m % 2], "eval_len": 64 * (m + 1), "seed": 0, "metric": "ppl"}
               if suite == "extrapolation" else {"point": f"p{m}", "seed": 0})
        env = {"env.hostname": rng.choice(["a", "b"]), "env.gpu": None, "env.cpu": "cpu", "env.gpu_count": 0,
               "env.git_commit": rng.choice(["c1", "c2"])}
        status = status_of(i) if status_of else rng.choice(["ok", "ok", "ok", "error"])
        extra = {"value": round(rng.random(), 6)} if rng.random() < 0.5 else {f"col{rng.randrange(4)}": i}
        row = make_row(suite, status, key, extra, env=env, run_id=f"run{rng.randrange(3)}")
        row["timestamp"] = f"2026-01-01T00:00:{rng.randrange(5):02d}.000000Z"
        out.append(row)
    return out


def _write(path: Path, rows: list[dict], *, tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


class _OneThread:
    """``threading`` as a single-threaded process sees it (threads other tests leave behind would make the reader
    decline to fork; its children here only read files and write a pipe)."""

    @staticmethod
    def active_count() -> int:
        return 1


@pytest.fixture
def parallel(monkeypatch):
    """Read in parts whatever the size: 3 processes."""
    monkeypatch.setattr(parallel_read, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel_read, "threading", _OneThread)
    monkeypatch.setenv(parallel_read.READ_JOBS_ENV, "3")


def _serial(monkeypatch):
    monkeypatch.setenv(parallel_read.READ_JOBS_ENV, "1")


@pytest.mark.parametrize("jobs", [1, 2, 3, 5, 40])
def test_parts_cover_every_byte_once_at_line_ends(tmp_path, jobs):
    rng = random.Random(SEED + jobs)
    files = [_write(tmp_path / f"{k}" / "extrapolation.jsonl", _rows(rng, n)) for k, n in enumerate((30, 1, 0, 55))]
    parts = segments(files, jobs)
    assert 1 <= len(parts) <= jobs
    flat = [s for p in parts for s in p]
    for f in files:  # each file's ranges: contiguous from 0 to its size, each starting a line
        spans = [(a, b) for g, a, b in flat if g == f]
        data = f.read_bytes()
        assert [a for a, _ in spans] == [0] + [b for _, b in spans[:-1]] if spans else not data, NOTE
        assert (spans[-1][1] if spans else 0) == len(data)
        assert all(a == 0 or data[a - 1:a] == b"\n" for a, _ in spans)
    assert [g for g, _, _ in flat] == sorted((g for g, _, _ in flat), key=files.index)  # file order


def test_report_and_show_readers_equal_the_serial_reader(tmp_path, monkeypatch, parallel):
    rng = random.Random(SEED)
    folder = tmp_path / "results"
    _write(folder / "extrapolation" / "cpu.jsonl", _rows(rng, 400))
    _write(folder / "training" / "cpu.jsonl", _rows(rng, 150, suite="training"))
    _write(folder / "training" / "gpu.jsonl", _rows(rng, 3, suite="training"))
    assert parallel_reduce(report_inputs.iter_files([folder]), report_inputs._Reading) is not None  # in parts

    def got():
        inp = report_inputs.read_inputs([folder])
        return (inp.frame.to_json(), list(inp.frame.columns), inp.index_rows, inp.cross_rows,
                [(s.path, s.rows, s.status, s.suites, s.first, s.last) for s in inp.files], show.read([folder]))

    fast = got()
    _serial(monkeypatch)
    slow = got()
    assert fast[:5] == slow[:5], NOTE
    assert fast[5][0] == slow[5][0] and fast[5][1].equals(slow[5][1]), NOTE
    assert fast[4][0][1] == 400 and len(fast[2]) == 553


@pytest.mark.parametrize("trouble", ["invalid", "foreign", "not_json", "torn"])
def test_anything_but_the_common_line_is_read_serially_with_the_serial_message(tmp_path, monkeypatch, parallel,
                                                                              trouble):
    rng = random.Random(SEED + 7)
    rows = _rows(rng, 300)
    tail = ""
    if trouble == "invalid":
        rows[250]["status"] = "fine"
    elif trouble == "foreign":
        rows[250] = _rows(rng, 1, suite="training")[0]
    elif trouble == "torn":
        tail = json.dumps(rows[0])[:40]
    path = _write(tmp_path / "extrapolation" / "cpu.jsonl", rows, tail=tail)
    if trouble == "not_json":
        lines = path.read_text().splitlines(keepends=True)
        lines[260] = "{oops\n"
        path.write_text("".join(lines))
    assert parallel_reduce([path], report_inputs._Reading) is None  # the fast path declines

    def outcome():
        try:
            with pytest.warns(ResultsWarning) if trouble == "torn" else contextlib.nullcontext() as w:
                inp = report_inputs.read_inputs([path])
            return ("ok", inp.frame.to_json(), [str(x.message) for x in w] if w else None)
        except InvalidRowError as exc:
            return ("error", str(exc))

    fast = outcome()
    _serial(monkeypatch)
    assert fast == outcome()
    assert fast[0] == ("ok" if trouble == "torn" else "error")
    if trouble != "torn":
        assert {"invalid": ":251: status 'fine'", "foreign": ":251: a training row", "not_json": "line 261 is not valid"}[
            trouble] in fast[1], fast[1]


class _FailsInAChild(report_inputs._Reading):
    parent = os.getpid()

    def add(self, f, r):
        if os.getpid() != self.parent:
            raise RuntimeError("a child failed")
        super().add(f, r)


def test_a_failing_child_means_serial_reading_and_no_child_left(tmp_path, parallel):
    path = _write(tmp_path / "extrapolation" / "cpu.jsonl", _rows(random.Random(SEED), 200))
    assert parallel_reduce([path], _FailsInAChild) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # every child reaped
    parts = parallel_reduce([path], report_inputs._Reading)
    assert parts is not None and len(parts) == 3 and sum(p.stats[path].rows for p in parts) == 200


def test_small_inputs_and_one_job_are_read_serially(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel_read, "threading", _OneThread)
    path = _write(tmp_path / "extrapolation" / "cpu.jsonl", _rows(random.Random(SEED), 50))
    assert parallel_reduce([path], report_inputs._Reading, jobs=4) is None  # below MIN_BYTES
    assert parallel_reduce([path], report_inputs._Reading, jobs=1, min_bytes=0) is None
    assert len(parallel_reduce([path], report_inputs._Reading, jobs=4, min_bytes=0)) == 4
    monkeypatch.setenv(parallel_read.READ_JOBS_ENV, "two")
    with pytest.raises(parallel_read.ConfigError, match="ABLATE_READ_JOBS='two' is not a whole number"):
        parallel_read.read_jobs()
