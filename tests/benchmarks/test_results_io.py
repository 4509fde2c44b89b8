"""The report side on large results through pytest-benchmark: ``ablate show`` and ``ablate export`` of a synthetic
results file built in tmp from the committed extrapolation rows, re-measured many times (as a long-lived
``--out`` that nightly runs append to), and ``ablate show`` / ``ablate report`` of the committed file itself.

    pytest tests/benchmarks/test_results_io.py -m benchmark --benchmark-enable
    ABLATE_BENCH_RESULTS_MB=200 pytest tests/benchmarks/test_results_io.py -m benchmark --benchmark-enable

The file is ``$ABLATE_BENCH_RESULTS_MB`` MB (default 50; issue 24 measured 200 MB, ~47,400 rows). What each test
returns is checked (the newest rows only, the same tables as the committed file), so a fast wrong answer fails;
the timings are the benchmark's, compared across runs with ``--benchmark-compare`` (docs/regressions.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ablate.io.export import export
from ablate.reporting.report import build_report
from ablate.reporting.show import render

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "results" / "extrapolation" / "cpu-small.jsonl"
RUN_ID = re.compile(rb'"run_id":"[^"]*"')


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """``SOURCE`` copied until the file reaches the size asked for, each copy with its own run id (the same
    measurements re-run: the newest copy is what every view shows)."""
    if not SOURCE.exists():
        pytest.skip(f"{SOURCE} is not in this checkout")
    lines = [x for x in SOURCE.read_bytes().splitlines() if x.strip()]
    target = float(os.environ.get("ABLATE_BENCH_RESULTS_MB", "50")) * 1e6
    copies = max(2, round(target / sum(len(x) + 1 for x in lines)))
    path = tmp_path_factory.mktemp("bench") / "extrapolation" / "cpu-small.jsonl"
    path.parent.mkdir()
    with open(path, "wb") as fh:
        for k in range(copies):
            tag = f'"run_id":"bench-{k:04d}"'.encode()
            fh.write(b"".join(RUN_ID.sub(tag, x, count=1) + b"\n" for x in lines))
    return path


def _tables(text: str) -> str:
    return text.split("\n", 1)[1]  # without the line naming the file and its row count


def test_show_large_file(benchmark, big):
    out = benchmark.pedantic(render, args=([big],), rounds=3, iterations=1)
    assert _tables(out) == _tables(render([SOURCE]))
    assert f"{big}: extrapolation, " in out.splitlines()[0]


def test_export_csv_large_file(benchmark, big, tmp_path):
    res = benchmark.pedantic(export, args=([big], "csv", tmp_path / "out.csv"), rounds=3, iterations=1)
    assert res.rows == len(SOURCE.read_text().splitlines())  # the newest copy of each row only
    assert "bench-" in (tmp_path / "out.csv").read_text().splitlines()[1]


def test_show_committed_file(benchmark):
    if not SOURCE.exists():
        pytest.skip(f"{SOURCE} is not in this checkout")
    out = benchmark.pedantic(render, args=([SOURCE],), rounds=3, iterations=1)
    assert "## extrapolation: ppl" in out


def test_report_committed_file(benchmark, tmp_path):
    if not SOURCE.exists():
        pytest.skip(f"{SOURCE} is not in this checkout")
    outs = iter(tmp_path / f"r{i}" for i in range(10))
    rep = benchmark.pedantic(lambda: build_report([SOURCE], next(outs)), rounds=2, iterations=1)
    assert rep.index.exists() and rep.files["extrapolation"]
