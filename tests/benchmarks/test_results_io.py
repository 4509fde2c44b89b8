"""The report side on large results through pytest-benchmark: ``ablate show`` and ``ablate export`` of a synthetic
results file built in tmp from the committed extrapolation rows, re-measured many times (as a long-lived
``--out`` that nightly runs append to), and ``ablate show`` / ``ablate report`` of the committed files.

    pytest tests/benchmarks/test_results_io.py -m benchmark --benchmark-enable
    ABLATE_BENCH_RESULTS_MB=200 pytest tests/benchmarks/test_results_io.py -m benchmark --benchmark-enable

The file is ``$ABLATE_BENCH_RESULTS_MB`` MB (default 50; issue 24 measured 200 MB, ~47,400 rows). What each test
returns is checked (the newest rows only, the same tables as the committed file), so a fast wrong answer fails;
the timings are the benchmark's, compared across runs with ``--benchmark-compare`` (docs/regressions.md).

The ``*_command`` tests time the whole command as a user runs it (``python -m ablate.cli ...``: start-up and
imports included, figures saved by forked children) and hold it to the issues' targets on a quiet 2-core machine:
``ablate show`` within 2 s and ``ablate report`` within 10 s on the largest committed results file (issue 23),
``show`` / ``report`` / ``export`` of the synthetic file within 10 s, their peak memory following the rows kept,
not the file (issue 24). The best of the rounds is held to the target (a busy machine slows some rounds, not
all; over it on a machine busier than its cores, the test is skipped saying so), the CPU seconds always (one core
for ``export`` and ``show`` of a committed file, two for ``report``, whose figures are saved by forked children,
and for ``show`` of the synthetic file, read in parts on every core: ``ablate.store.parallel_read``); CPU seconds
and peak memory go into the benchmark's ``extra_info``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ablate.io.export import export
from ablate.reporting.report import build_report
from ablate.reporting.show import render
from ablate.store.writers import cpu_count, machine_load

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "results" / "extrapolation" / "cpu-small.jsonl"
RUN_ID = re.compile(rb'"run_id":"[^"]*"')
# The largest committed results file (issue 23's yardstick): by size, among results/<suite>/<name>.jsonl.
COMMITTED = sorted((ROOT / "results").glob("*/*.jsonl"), key=lambda p: (p.stat().st_size, p.as_posix()))
LARGEST = COMMITTED[-1] if COMMITTED else SOURCE
SHOW_S, REPORT_S, LARGE_S = 2.0, 10.0, 10.0  # issue 23 item 3; issue 24 item 5 (a 200 MB file on 2 cores)


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


# ---------------------------------------------------------------------------------------------------------------
# Whole commands, held to the issues' targets


def _command(*args: str) -> dict:
    """Run ``python -m ablate.cli ARGS`` to its end: wall, CPU (its own and its children's: the figure savers) and
    peak memory (the largest process), from the kernel's accounting of the finished process (``os.wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "ablate.cli", *args], stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        assert proc.returncode == 0, err.read().decode(errors="replace")[-2000:]
        text = out.read().decode()
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": peak / 2**20, "stdout": text}


def _timed(benchmark, rounds: int, *args: str) -> list[dict]:
    runs: list[dict] = []
    benchmark.pedantic(lambda: runs.append(_command(*args)), rounds=rounds, iterations=1, warmup_rounds=0)
    best = min(runs, key=lambda r: r["wall_s"])
    benchmark.extra_info.update({"best_wall_s": round(best["wall_s"], 2),
                                 "cpu_s": sorted(round(r["cpu_s"], 2) for r in runs),
                                 "peak_mib": max(round(r["peak_mib"]) for r in runs)})
    return runs


def _within(runs: list[dict], target: float, what: str, *, processes: int = 1) -> None:
    """The best wall time of the rounds within ``target``, and the CPU seconds within what ``processes`` busy cores
    give in that time (always: CPU time hardly moves on a busy machine). A wall time over the target on a machine
    busier than its cores is skipped with the load named: it measured the other work, not this command."""
    cpu = min(r["cpu_s"] for r in runs)
    assert cpu <= processes * target, f"{what}: {cpu:.2f} CPU s, more than {processes} core(s) x {target:g} s"
    best = min(r["wall_s"] for r in runs)
    if best <= target:
        return
    load, cores = machine_load(), cpu_count()
    if load is not None and load > cores:
        pytest.skip(f"{what}: best of {len(runs)} rounds {best:.2f} s, over the target {target:g} s on a busy "
                    f"machine (load {load:.1f} on {cores} CPUs; {cpu:.2f} CPU s)")
    raise AssertionError(f"{what}: best of {len(runs)} rounds {best:.2f} s, target {target:g} s "
                         f"(CPU {[round(r['cpu_s'], 2) for r in runs]} s)")


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="os.wait4 (the finished process's own accounting): Unix only")
class TestCommands:
    def test_show_largest_committed_file(self, benchmark):
        runs = _timed(benchmark, 5, "show", str(LARGEST))
        assert f"## {LARGEST.parent.name}:" in runs[0]["stdout"]
        _within(runs, SHOW_S, f"ablate show {LARGEST.relative_to(ROOT)}")

    def test_report_largest_committed_file(self, benchmark, tmp_path):
        outs = iter(tmp_path / f"r{i}" for i in range(10))
        runs = _timed(benchmark, 3, "report", str(LARGEST), "--out", str(next(outs)))
        assert "index:" in runs[0]["stdout"]
        _within(runs, REPORT_S, f"ablate report {LARGEST.relative_to(ROOT)}", processes=2)

    def test_show_command_on_large_file(self, benchmark, big):
        small = _command("show", str(SOURCE))
        runs = _timed(benchmark, 3, "show", str(big))
        assert _tables(runs[0]["stdout"]) == _tables(small["stdout"])
        _within(runs, LARGE_S, f"ablate show of {big.stat().st_size / 1e6:.0f} MB", processes=2)  # read in parts
        # memory follows the rows kept (the same as the source file's), not the file
        assert max(r["peak_mib"] for r in runs) <= 1.5 * small["peak_mib"] + 32, (runs, small["peak_mib"])

    def test_report_command_on_large_file(self, benchmark, big, tmp_path):
        small = _command("report", str(SOURCE), "--out", str(tmp_path / "small"))
        outs = iter(tmp_path / f"r{i}" for i in range(10))
        runs = _timed(benchmark, 2, "report", str(big), "--out", str(next(outs)))
        _within(runs, LARGE_S, f"ablate report of {big.stat().st_size / 1e6:.0f} MB", processes=2)
        assert max(r["peak_mib"] for r in runs) <= 1.5 * small["peak_mib"] + 32, (runs, small["peak_mib"])

    def test_export_command_on_large_file(self, benchmark, big, tmp_path):
        small = _command("export", str(SOURCE), "--to", "csv", "--out", str(tmp_path / "small.csv"))
        runs = _timed(benchmark, 3, "export", str(big), "--to", "csv", "--out", str(tmp_path / "big.csv"))
        _within(runs, LARGE_S, f"ablate export of {big.stat().st_size / 1e6:.0f} MB")
        assert max(r["peak_mib"] for r in runs) <= 1.5 * small["peak_mib"] + 32, (runs, small["peak_mib"])
