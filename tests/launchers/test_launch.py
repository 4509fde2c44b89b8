"""Scale-out (issue 7): torchrun DDP training, the gpus / slurm (submitit) launchers, worker shards, resume of a
killed job, and ``ablate status``. All on CPU: gloo for DDP, submitit's local executor for the slurm code path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablate.launchers import distributed
from ablate.launchers import launch
from ablate.store import runstate
from ablate.cli import main
from ablate.errors import ConfigError
from ablate.launchers.launch import DistOptions, LaunchOptions, SlurmOptions
from ablate.store.results import ResultWriter, read_rows, shard_files, shard_path
from ablate.plan.runner import RunOptions, results_path, run_suite

GRID4 = "grid.axes=norm=layernorm,rmsnorm;activation=relu,gelu"
TASKS4 = ["layernorm/relu@s0", "layernorm/gelu@s0", "rmsnorm/relu@s0", "rmsnorm/gelu@s0"]
# Fields that legitimately differ between two runs of the same measurement.
VOLATILE = {"run_id", "timestamp", "tokens_per_s", "step_ms", "train_s", "first_step_s", "eval_s", "tflops",
            "peak_mem_bytes", "env.command", "mfu", "env.contended", "env.contended_by", "env.threads",
            "env.git_commit", "env.git_dirty"}  # a shared checkout may move on between the serial run and the workers


def _opts(out: Path, *overrides: str, **kw) -> RunOptions:
    return RunOptions(suite="training", preset="micro", overrides=(GRID4, "cpu_threads=1") + overrides, out=out,
                      device="cpu", progress=False, **kw)


def _by_point(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for r in rows:
        assert r["point"] not in out, f"two rows for {r['point']}"
        out[r["point"]] = r
    return out


def _same_rows(a: list[dict], b: list[dict]) -> None:
    pa, pb = _by_point(a), _by_point(b)
    assert set(pa) == set(pb)
    for p in pa:
        cols = (set(pa[p]) | set(pb[p])) - VOLATILE
        diff = sorted(c for c in cols if pa[p].get(c) != pb[p].get(c))
        assert not diff, (p, diff, [(pa[p].get(c), pb[p].get(c)) for c in diff])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The 4-point micro grid run the ordinary way (one process)."""
    out = tmp_path_factory.mktemp("serial")
    before = torch.get_num_threads()
    try:
        path = run_suite(_opts(out))
    finally:
        torch.set_num_threads(before)
    rows = read_rows(path)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    return rows


# ---------------------------------------------------------------------------------------------------------------
# torchrun / DDP


def test_torchrun_two_gloo_ranks_match_single_process(tmp_path, serial):
    """2 gloo processes started by torchrun train each point with DDP: the loss curve and the final validation loss
    are the single-process ones (same global batch) to float tolerance, and rank 0 alone writes one set of rows."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "ablate.cli", "run", "--suite", "training", "--preset", "micro", "--set", GRID4,
           "--set", "cpu_threads=1", "--device", "cpu", "--out", str(out), "--no-progress", "--nproc-per-node", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = out / "training" / "cpu-micro.jsonl"
    rows = read_rows(path)
    assert len(rows) == 4, "only rank 0 writes"
    assert not shard_files(path)
    ddp, ref = _by_point(rows), _by_point(serial)
    for p, r in ddp.items():
        assert r["status"] == "ok" and r["world_size"] == 2 and r["dist_backend"] == "gloo"
        assert ref[p]["world_size"] == 1
        assert r["row_key"] == ref[p]["row_key"] and r["tokens"] == ref[p]["tokens"]
        assert r["curve.step"] == ref[p]["curve.step"]
        assert r["curve.train_loss"] == pytest.approx(ref[p]["curve.train_loss"], rel=1e-5, abs=1e-5)
        assert r["curve.val_loss"] == pytest.approx(ref[p]["curve.val_loss"], rel=1e-5, abs=1e-5)
        assert r["val_loss"] == pytest.approx(ref[p]["val_loss"], rel=1e-5)
        assert r["env.command"].startswith("ablate run") or "ablate.cli run" in r["env.command"]
    # a second launch resumes: nothing left to train, no new rows
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_rows(path)) == 4


def test_rank_slices_are_disjoint_and_cover_the_global_batch():
    batch = torch.arange(24).reshape(8, 3)
    parts = [distributed.shard_batch(batch, distributed.DistInfo(rank=r, world_size=4)) for r in range(4)]
    assert all(p.shape == (2, 3) for p in parts)
    assert torch.equal(torch.cat(parts), batch)
    assert distributed.shard_batch(batch, distributed.DistInfo()) is batch
    with pytest.raises(ConfigError, match="does not split evenly over 3 ranks"):
        distributed.check_batch(8, 3)
    distributed.check_batch(8, 4)


def test_torchrun_command_line():
    opts = RunOptions(suite="training", preset="micro", overrides=("train.lr=1e-3",), out=Path("o"), device="cpu",
                      only=("modern@s0",))
    cmd = launch.torchrun_args(opts, DistOptions(nproc_per_node=4))
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node"] and "--standalone" in cmd
    i = cmd.index("-m", 3)
    assert cmd[i + 1:i + 3] == ["ablate.cli", "run"]
    assert ["--set", "train.lr=1e-3"] == cmd[cmd.index("--set"):cmd.index("--set") + 2]
    assert "--task" in cmd and "--nproc-per-node" not in cmd[i:]
    multi = launch.torchrun_args(opts, DistOptions(nproc_per_node=8, nnodes="2", node_rank=1,
                                                   rdzv_backend="c10d", rdzv_endpoint="head:29500", rdzv_id="x"))
    assert "--standalone" not in multi
    for flag, value in (("--nnodes", "2"), ("--node-rank", "1"), ("--rdzv-endpoint", "head:29500")):
        assert multi[multi.index(flag) + 1] == value


@pytest.mark.parametrize("suite,lo,match", [
    ("extrapolation", LaunchOptions(dist=DistOptions(nproc_per_node=2)), "for the training suite"),
    ("training", LaunchOptions(launcher="gpus", dist=DistOptions(nproc_per_node=2)), "needs --launcher local"),
    ("training", LaunchOptions(dist=DistOptions(nproc_per_node=0)), "must be >= 1"),
    ("training", LaunchOptions(launcher="pbs"), "valid: local, gpus, slurm"),
    ("training", LaunchOptions(launcher="slurm", slurm=SlurmOptions(time="4h")), "--slurm-time"),
    ("training", LaunchOptions(launcher="slurm", slurm=SlurmOptions(opts=("account",))), "not key=value"),
    ("training", LaunchOptions(launcher="slurm", slurm=SlurmOptions(cluster="lsf")), "valid: slurm, local"),
])
def test_impossible_launches_are_refused(suite, lo, match):
    with pytest.raises(ConfigError, match=match):
        launch.check_launch(RunOptions(suite=suite), lo)


def test_slurm_time_and_options():
    assert launch.slurm_minutes(None) == launch.DEFAULT_SLURM_MIN
    assert launch.slurm_minutes("90") == 90
    assert launch.slurm_minutes("4:00:00") == 240
    assert launch.slurm_minutes("1:30") == 90
    assert launch.slurm_minutes("1-00:00") == 1440
    assert launch.slurm_minutes("0:00:30") == 1
    assert launch.slurm_extra(("account=proj", "--qos=high", "exclusive=")) == {"account": "proj", "qos": "high",
                                                                                "exclusive": ""}


def test_gpus_launcher_refuses_a_cpu_sweep(tmp_path):
    with pytest.raises(ConfigError, match="one worker per CUDA GPU"):
        launch.launch(_opts(tmp_path), LaunchOptions(launcher="gpus"), progress=False)
    assert not (tmp_path / "training").exists(), "refused before writing anything"


def test_ddp_refuses_a_time_budget_and_other_suites(monkeypatch):
    monkeypatch.setattr(distributed, "launched", lambda: True)
    for suite in ("extrapolation", "latency"):
        with pytest.raises(ConfigError, match="--launcher gpus or slurm"):
            run_suite(RunOptions(suite=suite, preset="micro", device="cpu", progress=False, out=Path("unused")))


# ---------------------------------------------------------------------------------------------------------------
# slurm through submitit's local executor; shards; resume; status


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The grid through `--launcher slurm --slurm-cluster local`, with one job killed (SIGKILL) as if pre-empted."""
    pytest.importorskip("submitit")
    out = tmp_path_factory.mktemp("slurm")
    os.environ[launch.FAULT_ENV] = "rmsnorm/gelu@s0"
    try:
        res = launch.launch(_opts(out), LaunchOptions(launcher="slurm", slurm=SlurmOptions(cluster="local")),
                            progress=False)
    finally:
        del os.environ[launch.FAULT_ENV]
    return out, res


def test_killed_job_leaves_finished_rows_and_status_says_so(launched, capsys):
    out, res = launched
    assert sorted(res.submitted) == sorted(TASKS4) and set(res.jobs) == set(TASKS4)
    assert list(res.failed) == ["rmsnorm/gelu@s0"]
    assert "without finishing" in res.failed["rmsnorm/gelu@s0"]
    path = out / "training" / "cpu-micro.jsonl"
    assert not path.exists(), "workers write shards, never the shared file"
    shards = shard_files(path)
    assert len(shards) == 3, "one shard per finished task"
    assert {r["point"] for r in read_rows(path)} == {"layernorm/relu", "layernorm/gelu", "rmsnorm/relu"}
    st = runstate.plan_status(path)
    assert st.counts()["done"] == 3 and st.counts()["failed"] == 1
    bad = next(t for t in st.tasks if t.standing == "failed")
    assert bad.id == "rmsnorm/gelu@s0" and "without finishing" in bad.reason
    with pytest.raises(SystemExit) as e:
        main(["status", str(out), "--format", "json"])
    assert e.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["counts"] == {"done": 3, "running": 0, "failed": 1, "queued": 0, "missing": 0}
    assert data[0]["launcher"] == "slurm"


def test_resume_submits_only_the_missing_point_and_matches_serial(launched, serial):
    out, first = launched
    res = launch.launch(_opts(out), LaunchOptions(launcher="slurm", slurm=SlurmOptions(cluster="local")),
                        progress=False)
    assert res.submitted == ["rmsnorm/gelu@s0"] and res.skipped == 3 and not res.failed
    path = out / "training" / "cpu-micro.jsonl"
    rows = read_rows(path)
    _same_rows(rows, serial)  # the same rows as one process gives, up to run ids and timings
    from ablate.store.results import current_run_id

    assert {r["run_id"] for r in rows} == {current_run_id()}, "workers carry the launching process's run id"
    assert runstate.plan_status(path).counts()["done"] == 4
    plan = runstate.read_json(runstate.plan_path(path))
    assert [s["tasks"] for s in plan["submissions"]] == [TASKS4, ["rmsnorm/gelu@s0"]]
    again = launch.launch(_opts(out), LaunchOptions(launcher="slurm", slurm=SlurmOptions(cluster="local")),
                          progress=False)
    assert again.submitted == [] and again.skipped == 4


def test_gpus_launcher_pins_one_gpu_per_worker(tmp_path, monkeypatch, serial):
    """The gpus code path on a CPU machine: two slots named GPU 3 and 5, each worker started with
    CUDA_VISIBLE_DEVICES of its slot; a worker that dies is reported, and a re-run finishes it."""
    monkeypatch.setattr(launch, "_check_gpu_device", lambda device: None)
    monkeypatch.setenv(launch.FAULT_ENV, "layernorm/gelu@s0")
    res = launch.launch(_opts(tmp_path), LaunchOptions(launcher="gpus", gpus=(3, 5)), progress=False)
    assert sorted(res.submitted) == sorted(TASKS4)
    assert list(res.failed) == ["layernorm/gelu@s0"] and "killed by SIGKILL" in res.failed["layernorm/gelu@s0"]
    path = tmp_path / "training" / "cpu-micro.jsonl"
    states = [runstate.read_json(runstate.state_path(path, t)) for t in TASKS4]
    assert {s["job_id"] for s in states} <= {"gpu3", "gpu5"}
    assert {s["state"] for s in states} == {"finished", "failed"}
    monkeypatch.delenv(launch.FAULT_ENV)
    res = launch.launch(_opts(tmp_path), LaunchOptions(launcher="gpus", gpus=(3, 5)), progress=False)
    assert res.submitted == ["layernorm/gelu@s0"] and not res.failed
    _same_rows(read_rows(path), serial)


def test_cli_slurm_local_end_to_end(tmp_path, capsys):
    pytest.importorskip("submitit")
    with pytest.raises(SystemExit) as e:
        main(["run", "--suite", "training", "--preset", "micro", "--set", "cpu_threads=1", "--device", "cpu",
              "--out", str(tmp_path), "--no-progress", "--launcher", "slurm", "--slurm-cluster", "local",
              "--task", "original@s0", "--task", "modern@s0", "--slurm-time", "10"])
    assert e.value.code == 0
    captured = capsys.readouterr()
    assert "(2 new rows: 2 ok)" in captured.out
    with pytest.raises(SystemExit) as e:
        main(["status", str(tmp_path)])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "2 done" in text and "12 missing" in text and "modern+linear@s0" in text


# ---------------------------------------------------------------------------------------------------------------
# Shards, tasks, standings


def test_writer_shard_is_read_with_the_results_file(tmp_path):
    path = tmp_path / "x.jsonl"
    ResultWriter(path, "latency").write("ok", {"part": "kernel", "i": 0})
    w = ResultWriter(path, "latency", shard="task-a")
    assert w.path == shard_path(path, "task-a") and w.path.parent.name == "shards"
    w.write("ok", {"part": "kernel", "i": 1})
    assert {r["i"] for r in read_rows(path)} == {0, 1}
    assert {r["i"] for r in read_rows(tmp_path)} == {0, 1}, "a folder lists each row once"
    assert ResultWriter(path, "latency", shard="task-b").done({"part": "kernel", "i": 1}), "resume sees every shard"
    quiet = ResultWriter(path, "latency", enabled=False)
    quiet.write("ok", {"part": "kernel", "i": 2})
    assert len(read_rows(path)) == 2, "a disabled writer (rank > 0) writes nothing"


def test_unknown_task_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--suite", "training", "--preset", "micro", "--out", str(tmp_path), "--device", "cpu",
              "--task", "nope@s0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown training task 'nope@s0'; valid: original@s0" in err[0]


def test_status_errors_are_one_line(tmp_path, capsys):
    for args, msg in ((["status", str(tmp_path / "nothing")], "does not exist"),
                      (["status", str(tmp_path)], "no sweep plan")):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0]


def test_latency_and_extrapolation_tasks(tmp_path):
    from ablate.suites import extrapolation, latency

    opts = RunOptions(suite="latency", preset="micro", out=tmp_path, device="cpu", progress=False)
    where, tasks = latency.tasks(opts)
    assert where == results_path(opts) == tmp_path / "latency" / "cpu-micro.jsonl"  # the one rule of every suite
    ids = [t.id for t in tasks]
    assert ids[:2] == ["kernel-naive", "kernel-sdpa"] and ids[-5:] == ["position", "train", "decode", "prefill", "stream"]
    assert all(t.keys is None for t in tasks)
    path = run_suite(RunOptions(suite="latency", preset="micro", out=tmp_path, device="cpu", progress=False,
                                only=("kernel-naive", "decode"), shard="w1"))
    rows = read_rows(path)
    assert rows and {r["part"] for r in rows} == {"kernel", "decode"}
    assert {r["attention"] for r in rows if r["part"] == "kernel"} == {"naive"}
    assert path == where and not path.exists() and shard_files(path) == [shard_path(path, "w1")]
    assert shard_path(path, "w1") == tmp_path / "latency" / "cpu-micro.launch" / "shards" / "w1.jsonl"  # beside it

    xopts = RunOptions(suite="extrapolation", preset="micro", out=tmp_path, device="cpu")
    where, tasks = extrapolation.tasks(xopts)
    assert where == results_path(xopts) == tmp_path / "extrapolation" / "cpu-micro.jsonl"
    assert all(t.keys for t in tasks) and len({t.id for t in tasks}) == len(tasks)
    assert any(t.id == "rope@s0" for t in tasks)  # one id form in every suite (ablate.plan.suitekit.task_id)


def _task(keys=("k1",)):
    return {"id": "t", "keys": list(keys) if keys is not None else None, "label": ""}


def test_standings_from_rows_and_states():
    me = {"host": runstate.socket.gethostname(), "pid": os.getpid(), "heartbeat": runstate.utc_now()}
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ok = {"k1": {"row_key": "k1", "status": "ok"}}
    err = {"k1": {"row_key": "k1", "status": "error", "reason": "RuntimeError: boom"}}
    cases = [
        (ok, None, None, "done", ""),
        ({}, None, None, "missing", ""),
        ({}, None, "123_4", "queued", ""),
        ({}, {**me, "state": "running"}, None, "running", ""),
        (err, {**me, "state": "running"}, None, "running", ""),
        (err, None, None, "failed", "error: RuntimeError: boom"),
        ({}, {**me, "state": "failed", "reason": "ValueError: x"}, None, "failed", "ValueError: x"),
        ({}, {**me, "pid": dead.pid, "state": "running"}, "9", "failed", "without finishing"),
        ({}, {"host": "elsewhere", "pid": 1, "state": "running", "heartbeat": "2020-01-01T00:00:00Z"}, None,
         "failed", "without finishing"),
        ({}, {"host": "elsewhere", "pid": 1, "state": "running", "heartbeat": runstate.utc_now()}, None,
         "running", ""),
        ({}, {**me, "state": "finished"}, None, "failed", "only 0 of 1 rows"),
    ]
    for latest, state, job, standing, reason in cases:
        st = runstate.task_standing(_task(), latest, state, job)
        assert (st.standing, reason in st.reason) == (standing, True), (latest, state, job, st)
    keyless = runstate.task_standing(_task(None), {}, {**me, "state": "finished"}, None)
    assert keyless.standing == "done"


def test_safe_names_are_distinct_file_names():
    names = {runstate.safe_name(t) for t in ("modern-rope→sinusoidal@s0", "modern-rope_sinusoidal@s0", "a/b@s1",
                                             "a_b@s1")}
    assert len(names) == 4 and all("/" not in n and not n.startswith(".") for n in names)


def test_local_run_records_a_plan_for_status(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--suite", "training", "--preset", "micro", "--set", "cpu_threads=1", "--device", "cpu",
              "--out", str(tmp_path), "--no-progress", "--task", "original@s0"])
    assert e.value.code == 0
    path = tmp_path / "training" / "cpu-micro.jsonl"
    st = runstate.plan_status(path)
    assert st.plan["launcher"] == "local"
    done = [t.id for t in st.tasks if t.standing == "done"]
    assert done == ["original@s0"] and st.counts()["missing"] == len(st.tasks) - 1
    assert math.isfinite(read_rows(path)[0]["val_loss"])


def test_tasks_waiting_in_a_live_launcher_are_queued(tmp_path):
    path = tmp_path / "x.jsonl"
    plan = {"suite": "training", "plan_id": "p", "launcher": "gpus",
            "tasks": [{"id": "a", "keys": ["ka"], "label": ""}, {"id": "b", "keys": ["kb"], "label": ""}],
            "submissions": [{"launcher": "gpus", "tasks": ["a", "b"], "jobs": {}, "host": runstate.socket.gethostname(),
                             "pid": os.getpid(), "heartbeat": runstate.utc_now()}]}
    runstate.write_json(runstate.plan_path(path), plan)
    ResultWriter(path, "training", shard="a").write("ok", {"point": "a", "seed": 0})  # a row for some other key
    st = runstate.plan_status(path)
    assert [t.standing for t in st.tasks] == ["queued", "queued"]
    assert "waiting for a free worker slot" in st.tasks[0].reason
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    plan["submissions"][0]["pid"] = dead.pid
    assert [t.standing for t in runstate.plan_status(path, plan).tasks] == ["missing", "missing"]
