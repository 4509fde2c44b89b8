"""The suite kit's one run loop (ablate.plan.suitekit): task ids, resume, claims, failure rows, the plan made once."""

import dataclasses
import os
import socket

import pytest

from ablate.errors import ConfigError, UnavailableError
from ablate.plan import runner
from ablate.plan.runner import RunOptions, run_suite, select_tasks, suite_tasks
from ablate.plan.suitekit import Plan, Suite, SuiteTask, canonical_task_id, task_id
from ablate.store.results import read_rows, row_key
from ablate.store.runstate import claim_path, utc_now, write_json


# ---------------------------------------------------------------------------------------------------------------
# Task ids


@pytest.mark.parametrize("name, seed, want", [
    ("modern", 0, "modern@s0"),
    ("modern-prenorm→postnorm", 0, "modern-prenorm-to-postnorm@s0"),
    ("layernorm/relu", 2, "layernorm/relu@s2"),
    ("original+swiglu", 1, "original+swiglu@s1"),
    ("passkey-rope", 0, "passkey-rope@s0"),
    ("kernel-sdpa", None, "kernel-sdpa"),
    ("a b", None, "a_b"),
])
def test_task_ids_are_ascii_and_shell_safe(name, seed, want):
    got = task_id(name, seed)
    assert got == want and got.isascii() and not set(got) & set(" >|<;&$'\"`*?()[]{}")


@pytest.mark.parametrize("typed, want", [
    ("modern-prenorm→postnorm@s0", "modern-prenorm-to-postnorm@s0"),  # the Unicode arrow of grid point names
    ("modern-prenorm->postnorm@s0", "modern-prenorm-to-postnorm@s0"),  # the ASCII arrow, quoted
    ("modern-prenorm-to-postnorm@s0", "modern-prenorm-to-postnorm@s0"),
    ("rope-s0", "rope@s0"),  # the extrapolation suite's old form
    ("ft-rope_pi-x4-rope-s1", "ft-rope_pi-x4-rope@s1"),
    ("kernel-sdpa", "kernel-sdpa"), ("decode", "decode"),  # latency's ids are unchanged
])
def test_old_ids_resolve(typed, want):
    assert canonical_task_id(typed) == want
    assert select_tasks([want, "other@s0"], (typed,)) == {want}


def test_run_options_hold_current_ids_and_unknown_ids_are_one_line():
    assert RunOptions(suite="training", only=("modern-swiglu→relu@s0", "rope-s1")).only == \
        ("modern-swiglu-to-relu@s0", "rope@s1")
    with pytest.raises(ConfigError, match=r"^unknown training task 'nope@s0'; valid: a@s0$"):
        select_tasks(["a@s0"], ("nope@s0",), "training task")


# ---------------------------------------------------------------------------------------------------------------
# The loop, with a suite that measures nothing but what it is told


class Fake(Suite[dict]):
    name = "latency"  # any known suite name: the rows only need to be valid rows of one
    tf32 = None
    torchrun = "fake: one process"

    def __init__(self, fail=None):
        self.fail = fail or {}  # item -> exception its measurement raises
        self.plans = 0
        self.measured: list[str] = []

    def plan(self, opts):
        self.plans += 1
        tasks = []
        for t in ("a", "b", "c"):
            items = (f"{t}1", f"{t}2")
            tasks.append(SuiteTask(task_id(t, 0), t, items, tuple({"part": "fake", "item": i} for i in items),
                                   config={"task": t}))
        return Plan("cpu", "micro", {}, runner.results_path(opts, "cpu", "micro"), tasks)

    def measure(self, run, task, todo):
        for item in todo:
            self.measured.append(item)
            if item in self.fail:
                raise self.fail[item]
            run.rows.write("ok", {"part": "fake", "item": item}, {"metric": "x", "value": 1.0, "unit": "u"},
                           config=task.config)

    def failure_fields(self, run, task, item):
        return {"metric": "x", "value": None, "unit": "u"}


def _opts(tmp_path, **kw):
    return RunOptions(suite="latency", preset="micro", out=tmp_path, device="cpu", progress=False, **kw)


def _status(path):
    return {r["item"]: (r["status"], r["reason"].split(":")[0]) for r in read_rows(path)}


def test_failures_are_status_rows_and_the_sweep_goes_on(tmp_path):
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
    suite = Fake({"a2": oom, "b1": ConfigError("no such shape"), "c1": UnavailableError("no package")})
    out = suite.run(_opts(tmp_path))
    assert _status(out) == {"a1": ("ok", ""), "a2": ("oom", "RuntimeError"), "b1": ("unsupported", "ConfigError"),
                            "b2": ("unsupported", "ConfigError"), "c1": ("unavailable", "UnavailableError"),
                            "c2": ("unavailable", "UnavailableError")}
    # resume: terminal rows are skipped; unavailable and oom ones are measured again
    suite = Fake()
    suite.run(_opts(tmp_path))
    assert suite.measured == ["a2", "c1", "c2"]
    assert {r["item"] for r in read_rows(out) if r["status"] == "ok"} == {"a1", "a2", "c1", "c2"}


def test_resume_skips_rows_and_no_resume_measures_again(tmp_path):
    Fake().run(_opts(tmp_path))
    suite = Fake()
    suite.run(_opts(tmp_path))
    assert suite.measured == []
    suite.run(_opts(tmp_path, resume=False))
    assert suite.measured == ["a1", "a2", "b1", "b2", "c1", "c2"]


def test_a_task_claimed_by_a_live_run_is_left_to_it(tmp_path, capsys):
    opts = _opts(tmp_path)
    results = runner.results_path(opts, "cpu", "micro")
    live = {"host": socket.gethostname(), "pid": os.getppid(), "heartbeat": utc_now(), "task": "b@s0"}
    write_json(claim_path(results, "b@s0"), live)  # held by another live process (this one's parent)
    suite = Fake()
    suite.run(opts)
    assert claim_path(results, "b@s0").exists()
    assert suite.measured == ["a1", "a2", "c1", "c2"]
    assert "1 task(s) were being run by another process" in capsys.readouterr().err
    assert not claim_path(results, "a@s0").exists()  # this run's claims are gone when it ends


def test_a_dead_runs_claim_is_taken_over(tmp_path):
    opts = _opts(tmp_path)
    results = runner.results_path(opts, "cpu", "micro")
    write_json(claim_path(results, "b@s0"), {"host": socket.gethostname(), "pid": 2 ** 22 + 7, "task": "b@s0"})
    suite = Fake()
    suite.run(opts)
    assert suite.measured == ["a1", "a2", "b1", "b2", "c1", "c2"]


def test_only_accepts_old_forms_and_torchrun_is_refused(tmp_path, monkeypatch):
    suite = Fake()
    suite.run(_opts(tmp_path, only=("b-s0",)))
    assert suite.measured == ["b1", "b2"]
    from ablate.launchers import distributed

    monkeypatch.setattr(distributed, "launched", lambda: True)
    with pytest.raises(ConfigError, match="fake: one process"):
        suite.run(_opts(tmp_path))


def test_the_plan_is_made_once_per_run(tmp_path, monkeypatch):
    suite = Fake()
    monkeypatch.setattr(runner, "load_suite", lambda name, attr: getattr(suite, attr))
    opts = _opts(tmp_path)
    results, tasks = suite_tasks(opts)
    assert [t.id for t in tasks] == ["a@s0", "b@s0", "c@s0"]
    assert tasks[0].keys == tuple(row_key({"part": "fake", "item": i}) for i in ("a1", "a2"))
    assert run_suite(opts) == results and suite.plans == 1
    run_suite(opts)  # a run of its own: a plan of its own
    run_suite(dataclasses.replace(opts))
    assert suite.plans == 3
