"""``--launcher slurm`` of :mod:`ablate.launchers.launch`: a submitit job array, one task per element (``--slurm-cluster local``:
submitit's local executor, same code path), and the ``--slurm-time`` / ``--slurm-opt`` parsing. The callable
submitit pickles, :class:`ablate.launchers.launch.SubmititTask`, stays beside the worker in :mod:`ablate.launchers.launch`
(which passes it in). Every name is importable from :mod:`ablate.launchers.launch` too."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from ablate.store import runstate
from ablate.errors import ConfigError, UnavailableError
from ablate.launchers.common import LaunchOptions, LaunchResult, TaskProgress, record_submission, say
from ablate.store.results import RUN_ID_ENV, launch_dir


def slurm_minutes(text: str | None) -> int:
    """``--slurm-time``: minutes ("90") or [D-]HH:MM[:SS] ("4:00:00", "1-12:00") → whole minutes."""
    if text is None or str(text).strip() == "":
        return DEFAULT_SLURM_MIN
    t = str(text).strip()
    try:
        days = 0
        if "-" in t:
            d, t = t.split("-", 1)
            days = int(d)
        parts = [int(p) for p in t.split(":")]
        if len(parts) == 1 and not days:
            minutes = parts[0]
        elif len(parts) in (2, 3) or (days and len(parts) == 1):
            h, m, sec = (parts + [0, 0])[:3] if days and len(parts) == 1 else (parts + [0])[:3]
            minutes = days * 1440 + h * 60 + m + (1 if sec else 0)
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--slurm-time {text!r} is not minutes or [D-]HH:MM[:SS] (e.g. 90, 4:00:00, 1-00:00)") \
            from None
    if minutes < 1:
        raise ConfigError(f"--slurm-time must be at least one minute, got {text!r}")
    return minutes


DEFAULT_SLURM_MIN = 240


def slurm_extra(opts: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in opts:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-opt {item!r} is not key=value (e.g. --slurm-opt account=myproj)")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


def launch_slurm(specs: list[dict], lo: LaunchOptions, res: LaunchResult, plan: dict, run_id: str, progress: bool,
                 device: str | None, task_fn: Callable[[dict], Any]) -> None:
    """Submit ``specs`` as a job array of ``task_fn`` (:class:`ablate.launchers.launch.SubmititTask`, passed in by the
    launcher: it stays beside the worker it runs, and its pickled name with it)."""
    try:
        import submitit
    except ImportError:
        raise UnavailableError("--launcher slurm needs submitit: pip install 'ablate-bench[slurm]'") from None
    s = lo.slurm
    folder = launch_dir(res.results) / runstate.LOG_DIR / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster=s.cluster)
    gpus = s.gpus_per_task if s.gpus_per_task is not None else (1 if device == "cuda" else 0)
    params: dict[str, Any] = {"name": f"ablate-{specs[0]['opts']['suite']}", "timeout_min": slurm_minutes(s.time),
                              "tasks_per_node": 1, "nodes": 1, "gpus_per_node": gpus,
                              "slurm_array_parallelism": s.array_parallelism}
    if s.cpus_per_task:
        params["cpus_per_task"] = s.cpus_per_task
    if s.mem_gb:
        params["mem_gb"] = s.mem_gb
    if s.partition:
        params["slurm_partition"] = s.partition
    extra = slurm_extra(s.opts)
    if extra:
        params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)  # AutoExecutor applies slurm_* only on slurm
    suite = specs[0]["opts"]["suite"]
    # submitit's local executor has no queue: this process keeps at most `parallel` jobs running (latency: one, so
    # timings never share the CPU); on Slurm the whole array goes in at once and Slurm applies the parallelism.
    parallel = len(specs) if s.cluster == "slurm" else (1 if suite == "latency" else s.array_parallelism)
    queue = list(specs)

    def submit(batch: list[dict]) -> list[Any]:
        env_before = os.environ.get(RUN_ID_ENV)
        os.environ[RUN_ID_ENV] = run_id  # the local executor's workers inherit it (slurm ones read the spec)
        try:
            jobs = executor.map_array(task_fn, batch)
        except Exception as exc:
            raise UnavailableError(f"submitit could not submit the jobs: {type(exc).__name__}: {exc}") from None
        finally:
            if env_before is None:
                os.environ.pop(RUN_ID_ENV, None)
            else:
                os.environ[RUN_ID_ENV] = env_before
        for spec, job in zip(batch, jobs):
            res.jobs[spec["task"]] = str(job.job_id)
            pending[spec["task"]] = job
        plan["submissions"][-1]["jobs"] = dict(res.jobs)
        runstate.write_json(runstate.plan_path(res.results), plan)
        return jobs

    pending: dict[str, Any] = {}
    record_submission(res.results, plan, lo, res.submitted, {}, run_id)
    submit(queue[:parallel])
    del queue[:parallel]
    ids = sorted({j.split("_")[0] for j in res.jobs.values()})
    say(f"launcher slurm ({s.cluster}): {len(res.jobs)} of {len(specs)} task(s) submitted as job(s) "
         f"{', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''}; logs in {folder}")
    if not lo.wait:
        res.waited = False
        say(f"not waiting; follow with: ablate status {res.results.parent}")
        return
    try:
        with TaskProgress(progress, len(specs), "jobs") as bar:
            while pending:
                for task, job in list(pending.items()):
                    if not job.done():
                        continue
                    del pending[task]
                    ok = True
                    try:
                        job.result()
                    except Exception as exc:
                        ok = False
                        res.failed[task] = job_failure(res.results, task, job, exc)
                    bar.advance(task, ok=ok)
                    if queue:
                        submit(queue[:1])
                        del queue[:1]
                if pending:
                    time.sleep(0.5)
    except KeyboardInterrupt:
        say(f"stopped waiting; {len(pending)} job(s) keep running: ablate status {res.results.parent}")
        raise


def job_failure(results: Path, task: str, job: Any, exc: BaseException) -> str:
    state = runstate.read_json(runstate.state_path(results, task)) or {}
    if state.get("state") == "failed" and state.get("reason"):
        return f"{state['reason']} (job {job.job_id})"
    try:
        log = str(job.paths.stderr)
    except Exception:
        log = "the submitit folder"
    reason = (f"job {job.job_id} ended without finishing ({type(exc).__name__}, submitit state {job.state}: killed, "
              f"pre-empted, out of time or crashed before reporting); log: {log}")
    if state.get("state") != "finished":
        runstate.write_json(runstate.state_path(results, task),
                            {**state, "task": task, "state": "failed", "reason": reason, "ended": runstate.utc_now(),
                             "job_id": str(job.job_id)})
    return reason
