"""Where a sweep runs: ``--launcher local | gpus | slurm``, and ``--nproc-per-node`` (torchrun) for one run on
many GPUs. The engines are the ones users already have -- ``torch.distributed.run`` and submitit -- not a
home-made scheduler.

* ``local`` (default): this process runs the whole sweep (with ``--nproc-per-node N``: every grid point trains with
  DDP on N processes started by ``python -m torch.distributed.run``; rank 0 writes the rows).
* ``gpus``: one worker process per visible GPU, pinned with ``CUDA_VISIBLE_DEVICES``; the sweep's tasks (training:
  grid point x seed; extrapolation: trained variant; latency: an attention key's kernel sweep, or a part) are dealt
  out as workers free up (a thread pool of one slot per GPU, each slot starting a fresh ``python -m ablate.launchers.launch``
  worker per task, so a crash never takes the others down and no two measurements share a GPU).
* ``slurm``: a submitit job array, one task per array element (``--slurm-partition``, ``--slurm-time``,
  ``--slurm-gpus-per-task``, ``--slurm-array-parallelism``, ``--slurm-opt key=value``). ``--slurm-cluster local``
  runs the same code path through submitit's local executor (tests, trying a sweep on a workstation). Jobs that
  time out or are pre-empted requeue themselves (submitit checkpointing) and resume from their stored rows.

Plugins (``--plugin``, ``$ABLATE_PLUGINS``; :mod:`ablate.registry.plugins`) reach every worker twice over: in the environment
it inherits, and explicitly -- ``opts.plugins`` of the worker spec (gpus, slurm), ``--plugin`` on the ranks' command
line (torchrun). ``--log-to`` (:mod:`ablate.store.livelog`) travels the same way (``opts.log_to``, ``--log-to``): each
worker logs the models it trains, rank 0 for a DDP run.

Every worker writes its own shard (``X.launch/shards/<task>.jsonl``) and state (:mod:`ablate.store.runstate`);
``ablate report``, resume and ``ablate status`` read them all. A re-run with ``--resume`` (the default) submits only
the tasks that are not done.

Layout: this module holds the options, the checks, the worker (``run_task``, ``python -m ablate.launchers.launch SPEC``),
:func:`launch` and the local / torchrun launcher; :mod:`ablate.launchers.gpus` and :mod:`ablate.launchers.slurm` the other
two, :mod:`ablate.launchers.common` what they share. Every name is importable from here, as before.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ablate.store import runstate
from ablate.errors import AblateError, ConfigError, UnavailableError
from ablate.launchers.common import (DistOptions, LaunchOptions, LaunchResult, SlurmOptions, TaskProgress,  # noqa: F401
                                     plan_fields, record_submission, say, spec_opts, write_plan)
from ablate.launchers.gpus import exit_reason, launch_gpus, visible_gpus  # noqa: F401
from ablate.launchers.slurm import (DEFAULT_SLURM_MIN, job_failure, launch_slurm, slurm_extra,  # noqa: F401
                                 slurm_minutes)
from ablate.store.results import RUN_ID_ENV, current_run_id, launch_dir, shard_files
from ablate.plan.runner import RunOptions, check_out_dir, resolve_device, run_suite, select_tasks, suite_tasks

LAUNCHERS = ("local", "gpus", "slurm")
SUBMITIT_CLUSTERS = ("slurm", "local")
FAULT_ENV = "ABLATE_FAULT_KILL_TASKS"  # fault drill: comma-separated task ids whose worker kills itself (SIGKILL)
DISTRIBUTED_SUITES = ("training",)


# ---------------------------------------------------------------------------------------------------------------
# Checks


def check_launch(opts: RunOptions, lo: LaunchOptions) -> None:
    """One-line ConfigErrors for impossible combinations, before anything starts."""
    if lo.launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {lo.launcher!r}; valid: {', '.join(LAUNCHERS)}")
    d = lo.dist
    if d.nproc_per_node < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {d.nproc_per_node}")
    if d.enabled:
        if opts.suite not in DISTRIBUTED_SUITES:
            raise ConfigError(f"--nproc-per-node / --nnodes are for the training suite (DDP), not {opts.suite!r}: "
                              f"spread {opts.suite} over devices with --launcher gpus or slurm")
        if lo.launcher != "local":
            raise ConfigError("--nproc-per-node trains one grid point at a time on N GPUs (torchrun) and needs "
                              f"--launcher local; --launcher {lo.launcher} runs one grid point per GPU instead")
    s = lo.slurm
    if s.cluster not in SUBMITIT_CLUSTERS:
        raise ConfigError(f"unknown --slurm-cluster {s.cluster!r}; valid: {', '.join(SUBMITIT_CLUSTERS)}")
    if s.array_parallelism < 1:
        raise ConfigError(f"--slurm-array-parallelism must be >= 1, got {s.array_parallelism}")
    if s.gpus_per_task is not None and s.gpus_per_task < 0:
        raise ConfigError(f"--slurm-gpus-per-task must be >= 0, got {s.gpus_per_task}")
    if s.cluster == "local" and not lo.wait and lo.launcher == "slurm":
        raise ConfigError("--no-wait needs a real Slurm queue; submitit's local executor (--slurm-cluster local) "
                          "runs the jobs from this process, which must wait")
    slurm_minutes(s.time)
    slurm_extra(s.opts)


# ---------------------------------------------------------------------------------------------------------------
# The worker: what every launcher runs for one task


def _job_id(default: str = "") -> str:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:
        return default


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one task of a sweep in this process, writing its shard and its state file; returns a summary.

    ``spec``: ``{"opts": {...RunOptions fields}, "task", "results", "plan_id", "run_id", "worker"}``.
    Raises what the suite raised (after recording it), so the launcher / submitit sees the failure."""
    import ablate.store.results as results_mod

    os.environ[RUN_ID_ENV] = spec["run_id"]
    results_mod._RUN_ID = spec["run_id"]  # every row of the sweep carries the launching run's id
    if spec.get("command"):
        from ablate.store.env import COMMAND_ENV

        os.environ[COMMAND_ENV] = spec["command"]  # and the command the user typed, not the worker's
    for k, v in (spec.get("provenance") or {}).items():
        os.environ.setdefault(k, v)  # used only where the worker's own tree has no .git
    task = spec["task"]
    results = Path(spec["results"])
    state = runstate.StateFile(runstate.state_path(results, task),
                               {"task": task, "plan_id": spec["plan_id"], "run_id": spec["run_id"],
                                "job_id": _job_id(spec.get("worker", ""))}).start()
    if task in [t.strip() for t in os.environ.get(FAULT_ENV, "").split(",") if t.strip()]:
        os.kill(os.getpid(), signal.SIGKILL)  # fault drill: die like a pre-empted job, leaving "running" behind
    opts = RunOptions(**spec["opts"], only=(task,), shard=runstate.safe_name(task), progress=False)
    t0 = time.perf_counter()
    try:
        from ablate.registry.plugins import use

        # The launcher's plugins, whatever this worker's environment says, loaded with the built-ins and the entry
        # points before the suite resolves its config (a broken one is recorded in this task's state).
        use(opts.plugins)
        out = run_suite(opts)
    except BaseException as exc:
        state.fail(f"{type(exc).__name__}: {exc}")
        raise
    from ablate.store.results import read_rows, shard_path

    written = sum(1 for r in read_rows(shard_path(results, opts.shard), missing_ok=True) if r.get("run_id") ==
                  spec["run_id"])
    state.finish(rows=written)
    return {"task": task, "results": str(out), "seconds": time.perf_counter() - t0, "rows": written}


class SubmititTask:
    """The callable submitit pickles: runs :func:`run_task`; on a timeout or pre-emption, submitit calls
    ``checkpoint`` and requeues the same task, which resumes from its stored rows."""

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        return run_task(spec)

    def checkpoint(self, spec: dict[str, Any]):
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititTask(), spec)


def _worker_main(argv: list[str]) -> int:
    """``python -m ablate.launchers.launch SPEC_JSON``: the gpus launcher's worker."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m ablate.launchers.launch SPEC_JSON\n")
        return 2
    try:
        run_task(json.loads(argv[0]))
    except Exception as exc:  # recorded in the state file; one line for the log
        sys.stderr.write(f"ablate worker: {type(exc).__name__}: {exc}\n")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Launch


def launch(opts: RunOptions, lo: LaunchOptions, progress: bool = True) -> LaunchResult:
    """Run the sweep ``opts`` describes with launcher ``lo``; see the module docstring."""
    check_launch(opts, lo)
    check_out_dir(opts.out)
    opts = dataclasses.replace(opts, device=resolve_device(opts.device))
    if opts.plugins:  # loaded here, and in $ABLATE_PLUGINS for every process started from here
        from ablate.registry.plugins import use

        opts = dataclasses.replace(opts, plugins=use(opts.plugins))
    if lo.launcher == "local":
        return _launch_local(opts, lo)
    if lo.launcher == "gpus":
        _check_gpu_device(opts.device)
    results, tasks = suite_tasks(opts)
    chosen = select_tasks([t.id for t in tasks], opts.only, f"{opts.suite} task")
    pid = runstate.plan_id(plan_fields(opts))
    plan = write_plan(results, opts, lo, tasks, pid)
    status = runstate.plan_status(results, plan) if opts.resume else None
    done = {t.id for t in status.tasks if t.standing == "done"} if status else set()
    busy = {t.id for t in status.tasks if t.standing == "running"} if status else set()
    todo = [t for t in tasks if t.id in chosen and t.id not in done and t.id not in busy]
    res = LaunchResult(results, tasks=len(tasks), skipped=len([t for t in tasks if t.id in chosen]) - len(todo))
    if busy & chosen:
        say(f"{len(busy & chosen)} task(s) still running elsewhere are left alone: {', '.join(sorted(busy))}")
    if not todo:
        say(f"{opts.suite}: all {len(chosen)} task(s) are done or running; nothing to launch ({results})")
        return res
    run_id = current_run_id()
    from ablate.store.env import command_line, provenance_env

    prov = provenance_env()  # the launcher's commit, for workers on machines without .git
    specs = [{"opts": spec_opts(opts), "task": t.id, "results": str(results), "plan_id": pid, "run_id": run_id,
              "command": command_line(), "provenance": prov} for t in todo]
    res.submitted = [t.id for t in todo]
    if lo.launcher == "gpus":
        launch_gpus(specs, lo, res, plan, run_id, progress)
    else:
        launch_slurm(specs, lo, res, plan, run_id, progress, opts.device, SubmititTask())
    return res


def _check_gpu_device(device: str | None) -> None:
    if device != "cuda":
        raise ConfigError("--launcher gpus runs one worker per CUDA GPU but this sweep runs on cpu; use --launcher "
                          "local, or --launcher slurm --slurm-cluster local for parallel CPU workers")


# local -----------------------------------------------------------------------------------------------------------


def _launch_local(opts: RunOptions, lo: LaunchOptions) -> LaunchResult:
    """This process runs the sweep (torchrun children with --nproc-per-node); a plan and a process state are
    recorded when the suite can list its tasks, so `ablate status` can follow it."""
    results, state = None, None
    try:
        results, tasks = suite_tasks(opts)
    except UnavailableError:
        tasks = []
    # What this run may create, recorded before it does: removed again if the run is refused before any row.
    existed: set[Path] = set()
    new_dirs: list[Path] = []
    if results is not None:
        existed = {f for f in (runstate.plan_path(results), runstate.local_state_path(results)) if f.exists()}
        new_dirs = [d for d in (runstate.local_state_path(results).parent, launch_dir(results) / runstate.CLAIM_DIR,
                                launch_dir(results), results.parent) if not d.exists()]
    if results is not None and tasks and opts.only:
        select_tasks([t.id for t in tasks], opts.only, f"{opts.suite} task")
    if results is not None and tasks:
        try:  # a results file that cannot be appended, a full disk: refused before any work, nothing left behind
            pid = runstate.plan_id(plan_fields(opts))
            plan = write_plan(results, opts, lo, tasks, pid)
            ids = [t.id for t in tasks if not opts.only or t.id in opts.only]
            record_submission(results, plan, lo, ids, {}, current_run_id())
            state = runstate.StateFile(runstate.local_state_path(results),
                                       {"task": None, "plan_id": pid, "run_id": current_run_id(), "job_id": "local",
                                        "tasks": ids}).start()
        except AblateError:
            _undo_launch_files(results, existed, new_dirs)
            raise
    res = LaunchResult(results or Path(opts.out))
    before = _footprint(results)
    try:
        if lo.dist.enabled:
            res.rc = _torchrun(opts, lo.dist)
            if res.rc:
                raise ConfigError(f"torchrun exited with code {res.rc} (see the ranks' output above)")
            res.results = results or res.results
        else:
            res.results = run_suite(opts)
    except AblateError as exc:  # refused (a user error) before any row: leave nothing behind
        if state is not None:
            state.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if results is not None and _footprint(results) == before:
            _undo_launch_files(results, existed, new_dirs)
        raise
    except BaseException as exc:
        if state is not None:
            state.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        raise
    if state is not None:
        state.finish()
    return res


def _footprint(results: Path | None) -> tuple:
    """Size of the results file and of its shards: unchanged means no row was written."""
    if results is None:
        return ()
    files = [results] + shard_files(results)
    return tuple((str(f), f.stat().st_size if f.exists() else -1) for f in files)


def _undo_launch_files(results: Path, existed: set[Path], new_dirs: list[Path]) -> None:
    """Remove the plan and state files and the (empty) folders this run created: it was refused before a row."""
    for f in (runstate.plan_path(results), runstate.local_state_path(results)):
        if f not in existed:
            f.unlink(missing_ok=True)
    for d in new_dirs:  # deepest first
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


def _cli_args(opts: RunOptions) -> list[str]:
    """``ablate run`` arguments that reproduce ``opts`` (for the torchrun ranks)."""
    args = ["run", "--suite", opts.suite, "--out", str(opts.out), "--seeds", str(opts.seeds)]
    if opts.preset:
        args += ["--preset", opts.preset]
    for o in opts.overrides:
        args += ["--set", o]
    if opts.data is not None:
        args += ["--data", str(opts.data)]
    if opts.device:
        args += ["--device", opts.device]
    for t in opts.only:
        args += ["--task", t]
    for p in opts.plugins:
        args += ["--plugin", p]
    for t in opts.log_to:
        args += ["--log-to", t]
    args += ["--resume" if opts.resume else "--no-resume", "--progress" if opts.progress else "--no-progress"]
    return args


def torchrun_args(opts: RunOptions, d: DistOptions) -> list[str]:
    """The ``python -m torch.distributed.run`` command line for ``opts`` on ``d``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(d.nproc_per_node),
           "--nnodes", str(d.nnodes)]
    standalone = d.nnodes in ("1", "1:1") and not (d.rdzv_endpoint or d.master_addr)
    if standalone:
        cmd.append("--standalone")
    for flag, value in (("--node-rank", d.node_rank), ("--rdzv-backend", d.rdzv_backend),
                        ("--rdzv-endpoint", d.rdzv_endpoint), ("--rdzv-id", d.rdzv_id),
                        ("--master-addr", d.master_addr), ("--master-port", d.master_port)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + ["-m", "ablate.cli"] + _cli_args(opts)


def _torchrun(opts: RunOptions, d: DistOptions) -> int:
    from ablate.store.env import COMMAND_ENV, command_line

    env = dict(os.environ)
    env[RUN_ID_ENV] = current_run_id()
    env[COMMAND_ENV] = command_line() or ""
    from ablate.store.env import provenance_env

    for k, v in provenance_env().items():
        env.setdefault(k, v)  # ranks on other nodes without .git record the launcher's commit
    if opts.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")  # N CPU ranks share the cores
    return subprocess.call(torchrun_args(opts, d), env=env)






__all__ = ["LAUNCHERS", "LaunchOptions", "SlurmOptions", "DistOptions", "LaunchResult", "launch", "run_task",
           "check_launch", "torchrun_args", "slurm_minutes", "visible_gpus", "SubmititTask"]


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
