"""Timings that say they were contended (issue #24, item 4): a run registers among the live writers of its --out,
every row records the threads it used and whether another run shared its device, a CPU run asked for every core
takes its share, and ``ablate compare`` never gates on a contended timing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ablate.store.writers as writers
from ablate.cli import main
from ablate.regress.compare import compare
from ablate.store.results import read_rows
from ablate.store.writers import WRITERS_DIR, Writers, run_conditions
from tests.regress.test_compare import H100, extrap, kernel

MICRO_X = ["run", "--suite", "extrapolation", "--preset", "micro", "--device", "cpu", "--no-progress",
           "--set", "positions=rope", "--set", "rope_scalings=", "--set", "train.steps=5"]


@pytest.fixture
def quiet(monkeypatch):
    """No load from other processes: only registered writers make a run contended (and no run of an earlier test
    left registered in this process)."""
    monkeypatch.setattr(writers, "machine_load", lambda: 0.0)
    monkeypatch.setattr(writers, "_ACTIVE", [])


@pytest.fixture
def other_run():
    """A live process registered as a writer (another ablate run) of a folder: ``register(out, device, gpus)``."""
    procs = []

    def register(out: Path, device: str = "cpu", gpus: str = "all") -> str:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        procs.append(p)
        folder = out / WRITERS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        (folder / f"{host}-{p.pid}.json").write_text(json.dumps(
            {"host": host, "pid": p.pid, "device": device, "gpus": gpus, "threads": 2, "heartbeat": 0}))
        return f"{host}:{p.pid}"

    yield register
    for p in procs:
        p.kill()
        p.wait()


def test_a_live_writer_on_the_device_makes_rows_contended(tmp_path, quiet, other_run):
    w = Writers(tmp_path, "cpu").start()
    try:
        assert run_conditions()["contended"] is False and run_conditions()["contended_by"] == ""
        who = other_run(tmp_path)
        c = run_conditions()
        assert c["contended"] is True and who in c["contended_by"] and isinstance(c["threads"], int)
        w.begin_task()
        assert run_conditions()["contended"] is True  # still live
    finally:
        w.stop()
    assert run_conditions() == {}  # outside a run: no columns
    assert not (tmp_path / WRITERS_DIR / f"{socket.gethostname()}-{os.getpid()}.json").exists()


def test_a_writer_seen_during_a_task_marks_it_even_after_it_left(tmp_path, quiet, other_run):
    w = Writers(tmp_path, "cpu").start()
    try:
        w.begin_task()
        other_run(tmp_path)
        w.seen.update(w.others())  # what the 2-s check does while the task runs
        for f in (tmp_path / WRITERS_DIR).glob("*.json"):
            if f != w.path:
                f.unlink()  # the other run finished before this task's row was written
        assert w.conditions()["contended"] is True
        w.begin_task()  # the next task: measured alone
        assert w.conditions()["contended"] is False
    finally:
        w.stop()


def test_dead_writers_and_other_devices_do_not_count(tmp_path, quiet, other_run, monkeypatch):
    folder = tmp_path / WRITERS_DIR
    folder.mkdir()
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / f"{host}-{dead.pid}.json").write_text(json.dumps({"host": host, "pid": dead.pid, "device": "cpu"}))
    (folder / "elsewhere-1.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "device": "cpu"}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    gpu = Writers(tmp_path, "cuda")
    assert gpu.others() == {}
    assert not (folder / f"{host}-{dead.pid}.json").exists()  # a dead writer's entry is removed
    other_run(tmp_path, "cpu")
    other_run(tmp_path, "cuda", "1")
    assert gpu.others() == {}  # a CPU run and a run on another GPU share nothing with GPU 0
    who = other_run(tmp_path, "cuda", "0,1")
    assert list(gpu.others()) == [who]
    assert len(Writers(tmp_path, "cpu").others()) == 3  # a CPU timing shares the cores with every run


def test_an_oversubscribed_cpu_is_contended(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "cpu_count", lambda: 2)
    w = Writers(tmp_path, "cpu")
    monkeypatch.setattr(writers, "machine_load", lambda: 5.0)
    c = w.conditions()
    assert c["contended"] is True and "load 5.0 on 2 CPUs" in c["contended_by"]
    monkeypatch.setattr(writers, "machine_load", lambda: 1.5)
    assert w.conditions()["contended"] is False
    monkeypatch.setattr(writers, "machine_load", lambda: 5.0)
    assert Writers(tmp_path, "cuda").conditions()["contended"] is False  # a GPU timing: the CPU load is not asked


def test_a_run_beside_another_writer_shares_the_cores_and_marks_its_rows(tmp_path, capsys, quiet, other_run,
                                                                         monkeypatch, request):
    monkeypatch.setattr(writers, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(4)  # what the run finds (an earlier test may have left fewer): it takes its share, 2
    request.addfinalizer(lambda: torch.set_num_threads(before))
    out = tmp_path / "out"
    who = other_run(out)
    with pytest.raises(SystemExit) as exc:
        main([*MICRO_X, "--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code in (0, None), err
    assert f"1 other run(s) write into {out} ({who})" in err and "uses 2 of 4 CPU threads" in err
    rows = list(read_rows(out / "extrapolation" / "cpu-micro.jsonl"))
    assert rows and all(r["env.contended"] is True and who in r["env.contended_by"] for r in rows)
    assert all(r["env.threads"] == 2 for r in rows)
    alone = tmp_path / "alone"
    with pytest.raises(SystemExit):
        main([*MICRO_X, "--set", "cpu_threads=1", "--out", str(alone)])
    rows = list(read_rows(alone / "extrapolation" / "cpu-micro.jsonl"))
    assert rows and all(r["env.contended"] is False and r["env.threads"] == 1 for r in rows)
    assert sorted(p.name for p in alone.iterdir()) == ["extrapolation", "extrapolation.ckpt"]  # no writers folder


def busy(env=None, who="box1:4242 (cuda)"):
    return {**(H100 if env is None else env), "env.contended": True, "env.contended_by": who}


def test_compare_never_gates_on_a_contended_timing():
    base = [kernel(ms=1.0), extrap(ppl=10.0)]
    new = [kernel(ms=2.0, env=busy()), extrap(ppl=12.0, env=busy())]
    res = compare(base, new, ["time_ms:10%", "tflops:10%", "ppl:5%"])
    skipped = res.by("skipped-contended")
    assert [(e.suite, e.metric) for e in skipped] == [("latency", "tflops, time_ms")]
    assert "new timed while box1:4242 (cuda) shared the device" in skipped[0].note
    assert [e.metric for e in res.by("regression")] == ["ppl"]  # quality is not a timing: still gated
    assert res.metrics["time_ms"].status == "skipped (contended)" and res.metrics["time_ms"].contended_rows == 1
    assert "skipped-contended" in res.summary()
    assert not res.github["customSmallerIsBetter"] or all("time_ms" not in i["name"]
                                                            for i in res.github["customSmallerIsBetter"])
    # the same slowdown measured alone is a regression
    assert compare(base[:1], [kernel(ms=2.0)], ["time_ms:10%"]).regressed
    # a contended baseline is as unusable as a contended new row
    assert not compare([kernel(ms=1.0, env=busy())], [kernel(ms=2.0)], ["time_ms:10%"]).regressed
