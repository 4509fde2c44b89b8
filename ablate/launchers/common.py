"""What every launcher of :mod:`ablate.launchers.launch` shares: the worker spec and plan fields of a sweep, the plan file
and its submissions, the one-line messages and the progress bar of finished tasks. Every name is importable from
:mod:`ablate.launchers.launch` too."""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from ablate.store import runstate

if TYPE_CHECKING:
    from pathlib import Path

    from ablate.launchers.launch import LaunchOptions
    from ablate.plan.runner import RunOptions, Task


def _spec_opts(opts: RunOptions) -> dict[str, Any]:
    d = {"suite": opts.suite, "preset": opts.preset, "overrides": list(opts.overrides), "out": str(opts.out),
         "seeds": opts.seeds, "resume": opts.resume, "data": str(opts.data) if opts.data else None,
         "device": opts.device}
    if opts.plugins:  # only when there are some: a sweep without plugins keeps its plan id
        d["plugins"] = list(opts.plugins)
    if opts.log_to:  # --log-to: every worker logs the models it trains (ablate.store.livelog)
        d["log_to"] = list(opts.log_to)
    return d


def _plan_fields(opts: RunOptions) -> dict[str, Any]:
    d = _spec_opts(opts)
    d.pop("resume")
    d.pop("log_to", None)  # where curves are logged is not what is measured: the same plan with or without
    return d


def _write_plan(results: Path, opts: RunOptions, lo: LaunchOptions, tasks: list[Task], pid: str) -> dict:
    path = runstate.plan_path(results)
    old = runstate.read_json(path) if path.is_file() else None
    plan = {
        "suite": opts.suite, "results": results.name, "plan_id": pid, "opts": _plan_fields(opts),
        "launcher": lo.launcher, "updated": runstate.utc_now(),
        "tasks": [{"id": t.id, "keys": list(t.keys) if t.keys is not None else None, "label": t.label}
                  for t in tasks],
        "submissions": (old or {}).get("submissions", []) if (old or {}).get("plan_id") == pid else [],
    }
    runstate.write_json(path, plan)
    return plan


def _record_submission(results: Path, plan: dict, lo: LaunchOptions, ids: list[str], jobs: dict[str, str],
                       run_id: str) -> None:
    plan["submissions"].append({"time": runstate.utc_now(), "launcher": lo.launcher, "run_id": run_id,
                                "tasks": ids, "jobs": jobs, "argv": sys.argv[1:], "host": socket.gethostname(),
                                "pid": os.getpid(), "heartbeat": runstate.utc_now()})
    runstate.write_json(runstate.plan_path(results), plan)


def _say(msg: str) -> None:
    sys.stderr.write(f"ablate: {msg}\n")


class _Progress:
    """A rich bar of tasks finished (with failures counted); silent when disabled."""

    def __init__(self, enabled: bool, total: int, what: str):
        self.enabled, self.total, self.what = enabled, total, what
        self.done = self.failed = 0
        self.prog = self.task = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from ablate.plan.progress import start_progress

            self.prog = start_progress(True)
            if self.prog is not None:
                self.task = self.prog.add_task(f"{self.what}", total=self.total, info="")
        return self

    def advance(self, task: str, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self.prog is not None:
            self.prog.update(self.task, advance=1, info=f"{task} {'ok' if ok else 'FAILED'}"
                             + (f" ({self.failed} failed)" if self.failed else ""))

    def __exit__(self, *exc: Any) -> None:
        if self.prog is not None:
            self.prog.stop()
