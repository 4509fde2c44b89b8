"""What every launcher of :mod:`ablate.launchers.launch` shares: its options and result, the worker spec and plan
fields of a sweep, the plan file and its submissions, the one-line messages and the progress bar of finished tasks.
Every name is importable from :mod:`ablate.launchers.launch` too."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.store import runstate
from ablate.store.atomic import check_appendable

if TYPE_CHECKING:
    from ablate.plan.runner import RunOptions, Task


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str | None = None  # minutes ("90") or [D-]HH:MM[:SS]; default DEFAULT_SLURM_MIN
    gpus_per_task: int | None = None  # default: 1 on a CUDA sweep, 0 on a CPU one
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int = 64  # array elements running at once
    opts: tuple[str, ...] = ()  # any other sbatch option as key=value (account=..., qos=..., constraint=...)
    cluster: str = "slurm"  # submitit executor: slurm, or local (submitit's local executor)


@dataclass(frozen=True)
class DistOptions:
    """torchrun's rendezvous options (``python -m torch.distributed.run --help``)."""

    nproc_per_node: int = 1
    nnodes: str = "1"  # "N" or "MIN:MAX"
    node_rank: int | None = None
    rdzv_backend: str | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def enabled(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes not in ("1", "1:1")


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str = "local"
    gpus: tuple[int, ...] = ()  # gpus launcher: GPU ids to use (default: every visible GPU)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    dist: DistOptions = field(default_factory=DistOptions)
    wait: bool = True  # wait for the workers (False: submit and return; follow with `ablate status`)


@dataclass
class LaunchResult:
    results: Path
    tasks: int = 0  # tasks in the sweep
    skipped: int = 0  # already done
    submitted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # task id -> reason (workers that did not finish)
    jobs: dict[str, str] = field(default_factory=dict)  # task id -> job id (slurm)
    waited: bool = True
    rc: int = 0  # exit code of an in-process / torchrun run


def spec_opts(opts: RunOptions) -> dict[str, Any]:
    d = {"suite": opts.suite, "preset": opts.preset, "overrides": list(opts.overrides), "out": str(opts.out),
         "seeds": opts.seeds, "resume": opts.resume, "data": str(opts.data) if opts.data else None,
         "device": opts.device}
    if opts.plugins:  # only when there are some: a sweep without plugins keeps its plan id
        d["plugins"] = list(opts.plugins)
    if opts.log_to:  # --log-to: every worker logs the models it trains (ablate.store.livelog)
        d["log_to"] = list(opts.log_to)
    return d


def plan_fields(opts: RunOptions) -> dict[str, Any]:
    d = spec_opts(opts)
    d.pop("resume")
    d.pop("log_to", None)  # where curves are logged is not what is measured: the same plan with or without
    return d


def write_plan(results: Path, opts: RunOptions, lo: LaunchOptions, tasks: list[Task], pid: str) -> dict:
    """Write ``X.launch/plan.json`` (atomically: a full disk leaves the old plan or none, and one
    :class:`ablate.errors.StorageError` line); first refuse a results file that cannot be appended, before any
    file of the run is written."""
    check_appendable(results)
    path = runstate.plan_path(results)
    old = runstate.read_json(path) if path.is_file() else None
    plan = {
        "suite": opts.suite, "results": results.name, "plan_id": pid, "opts": plan_fields(opts),
        "launcher": lo.launcher, "updated": runstate.utc_now(),
        "tasks": [{"id": t.id, "keys": list(t.keys) if t.keys is not None else None, "label": t.label}
                  for t in tasks],
        "submissions": (old or {}).get("submissions", []) if (old or {}).get("plan_id") == pid else [],
    }
    runstate.write_json(path, plan)
    return plan


def record_submission(results: Path, plan: dict, lo: LaunchOptions, ids: list[str], jobs: dict[str, str],
                       run_id: str) -> None:
    plan["submissions"].append({"time": runstate.utc_now(), "launcher": lo.launcher, "run_id": run_id,
                                "tasks": ids, "jobs": jobs, "argv": sys.argv[1:], "host": socket.gethostname(),
                                "pid": os.getpid(), "heartbeat": runstate.utc_now()})
    runstate.write_json(runstate.plan_path(results), plan)


def say(msg: str) -> None:
    sys.stderr.write(f"ablate: {msg}\n")


class TaskProgress:
    """A rich bar of tasks finished (with failures counted); silent when disabled."""

    def __init__(self, enabled: bool, total: int, what: str):
        self.enabled, self.total, self.what = enabled, total, what
        self.done = self.failed = 0
        self.prog = self.task = None

    def __enter__(self) -> "TaskProgress":
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
