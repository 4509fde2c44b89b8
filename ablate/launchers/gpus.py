"""``--launcher gpus`` of :mod:`ablate.launchers.launch`: one ``python -m ablate.launchers.launch SPEC`` worker process per task, pinned to
a free GPU with ``CUDA_VISIBLE_DEVICES`` (a thread pool of one slot per GPU). Every name is importable from
:mod:`ablate.launchers.launch` too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue

from ablate.store import runstate
from ablate.errors import ConfigError
from ablate.launchers.common import LaunchOptions, LaunchResult, TaskProgress, record_submission, say
from ablate.store.results import RUN_ID_ENV, launch_dir


def visible_gpus() -> list[int]:
    """GPU ids this process may use: ``$CUDA_VISIBLE_DEVICES`` (its entries) or ``range(device_count)``."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        ids = [e.strip() for e in env.split(",") if e.strip()]
        return [int(e) if e.isdigit() else i for i, e in enumerate(ids)][:n] if n else []
    return list(range(n))




def launch_gpus(specs: list[dict], lo: LaunchOptions, res: LaunchResult, plan: dict, run_id: str,
                 progress: bool) -> None:
    gpus = list(lo.gpus) or visible_gpus()
    if not gpus:
        raise ConfigError("--launcher gpus needs CUDA GPUs and none is visible; use --launcher local (CPU) or name "
                          "them with --gpus 0,1")
    logs = launch_dir(res.results) / runstate.LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    record_submission(res.results, plan, lo, res.submitted, {}, run_id)
    free: Queue = Queue()
    for g in gpus:
        free.put(g)

    def work(spec: dict) -> tuple[str, int, str]:
        gpu = free.get()
        try:
            spec = {**spec, "worker": f"gpu{gpu}"}
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), RUN_ID_ENV: run_id}
            log = logs / f"{runstate.safe_name(spec['task'])}.log"
            with open(log, "ab") as fh:
                rc = subprocess.call([sys.executable, "-m", "ablate.launchers.launch", json.dumps(spec)], stdout=fh,
                                     stderr=subprocess.STDOUT, env=env)
            return spec["task"], rc, str(log)
        finally:
            free.put(gpu)

    say(f"launcher gpus: {len(specs)} task(s) over GPU(s) {', '.join(map(str, gpus))}; logs in {logs}")
    with TaskProgress(progress, len(specs), "tasks") as bar, ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        for task, rc, log in pool.map(work, specs):
            if rc != 0:
                res.failed[task] = exit_reason(res.results, task, rc, log)
            bar.advance(task, ok=rc == 0)


def exit_reason(results: Path, task: str, rc: int, log: str) -> str:
    """Why a worker did not finish; also marks its state failed when the worker could not (killed by a signal)."""
    path = runstate.state_path(results, task)
    state = runstate.read_json(path) or {}
    if state.get("state") == "failed" and state.get("reason"):
        return f"{state['reason']} (log: {log})"
    how = runstate.killed_reason(state, -rc) if rc < 0 else f"exited with code {rc}"
    reason = f"worker {how} without finishing (log: {log})"
    if state.get("state") != "finished":
        runstate.write_json(path, {**state, "task": task, "state": "failed", "reason": reason,
                                   "ended": runstate.utc_now()})
    return reason
