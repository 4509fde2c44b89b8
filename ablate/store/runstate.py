"""What a run folder says about a sweep: its plan, its workers' states, and each task's standing.

Beside every results file ``X.jsonl`` that ``ablate run`` writes, ``X.launch/`` holds::

    plan.json            the sweep's tasks (ids and the row keys each owes), how it was launched, every submission
    state/<task>.json    a worker's life: running (pid, host, job id, heartbeat), finished, or failed with the reason
    shards/<task>.jsonl  the rows a worker wrote (one file per task: no two processes append to one file)
    logs/                workers' stdout/stderr (gpus launcher) and submitit's job folders (slurm launcher)

A task's standing (:func:`task_standing`), as ``ablate status RUN_DIR`` shows it:

* ``done``     every row it owes has a terminal status (ok, unsupported, diverged), or -- for a task whose rows are
  not known ahead (latency) -- its worker finished;
* ``running``  its worker is alive (same host: the pid exists; elsewhere: a heartbeat in the last ``STALE_S`` s);
* ``failed``   a row it owes says error / oom / unavailable, or its worker failed, or died without finishing
  (killed, pre-empted, out of time: no heartbeat); the reason says which;
* ``queued``   submitted (a job id is recorded) but not started, or waiting for a slot in a live launcher;
* ``missing``  nothing yet. ``ablate run ... --resume`` submits the tasks that are not done.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ablate.store.atomic import storage_error, write_text, writing
from ablate.store.procinfo import LIKELY_OOM_FRACTION, killed_reason, pid_alive, process_memory  # noqa: F401
from ablate.errors import ResultsFileError
from ablate.store.results import TERMINAL_STATUSES, launch_dir, read_rows, row_key

PLAN_FILE = "plan.json"
STATE_DIR = "state"
LOG_DIR = "logs"
HEARTBEAT_S = 20.0  # a running worker rewrites its state this often
STALE_S = 120.0  # a worker on another host with no heartbeat for this long is taken for dead
STANDINGS = ("done", "running", "failed", "queued", "missing")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _age_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        t = _dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (_dt.datetime.now(_dt.timezone.utc) - t).total_seconds()


def safe_name(task_id: str) -> str:
    """A file name for a task id (ids hold '/', '→', '+', ...): readable part + a short hash against collisions."""
    readable = re.sub(r"[^A-Za-z0-9._=@+-]+", "_", task_id).strip("._")[:80] or "task"
    return f"{readable}-{hashlib.sha1(task_id.encode('utf-8')).hexdigest()[:6]}"


def plan_path(results: Path) -> Path:
    return launch_dir(results) / PLAN_FILE


def state_path(results: Path, task_id: str) -> Path:
    return launch_dir(results) / STATE_DIR / f"{safe_name(task_id)}.json"


def local_state_path(results: Path) -> Path:
    """The state of a ``--launcher local`` run: one process working through the tasks in plan order."""
    return launch_dir(results) / STATE_DIR / "_local.json"


def write_json(path: Path, data: dict) -> None:
    """Atomically (write a temporary file, then rename over)."""
    write_text(path, json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ResultsFileError(f"{path} is not readable JSON: {exc}") from None
    return data if isinstance(data, dict) else None


def plan_id(fields: dict[str, Any]) -> str:
    """Identity of a sweep (suite, preset, overrides, seeds, data, device): states of another sweep are ignored."""
    return row_key(fields)


# ---------------------------------------------------------------------------------------------------------------
# Worker states


class StateFile:
    """A worker's state file: ``start()`` (running + heartbeat thread), then ``finish()`` or ``fail(reason)``."""

    def __init__(self, path: Path, base: dict[str, Any]):
        self.path = path
        self.data = {**base, "pid": os.getpid(), "host": socket.gethostname()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _write(self, **changes: Any) -> None:
        with self._lock:
            self.data.update(changes)
            write_json(self.path, self.data)

    def start(self) -> "StateFile":
        now = utc_now()
        self._write(state="running", started=now, heartbeat=now, ended=None, reason="", **process_memory())
        self._thread = threading.Thread(target=self._beat, name="ablate-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write(heartbeat=utc_now(), **process_memory())
            except OSError:
                pass

    def _end(self, state: str, reason: str = "") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        now = utc_now()
        try:  # a full disk must not hide why the run ended: the state then says it stopped without an exit
            self._write(state=state, heartbeat=now, ended=now, reason=" ".join(reason.split())[:500])
        except OSError:
            pass

    def finish(self, **extra: Any) -> None:
        with self._lock:
            self.data.update(extra)
        self._end("finished")

    def fail(self, reason: str) -> None:
        self._end("failed", reason)


# ---------------------------------------------------------------------------------------------------------------
# Task claims: two runs into one --out never measure the same task


CLAIM_DIR = "claims"


def claim_path(results: Path, task_id: str) -> Path:
    return launch_dir(results) / CLAIM_DIR / f"{safe_name(task_id)}.json"


def _claim_holder(path: Path) -> dict | None:
    """Who holds the claim at ``path``; one being written this instant (empty or partial JSON) is held by a live
    process while it is younger than ``STALE_S``, else nobody's."""
    try:
        return read_json(path)
    except ResultsFileError:
        try:
            young = _dt.datetime.now().timestamp() - path.stat().st_mtime < STALE_S
        except OSError:
            return None
        return {"host": "?", "pid": "?", "heartbeat": utc_now()} if young else None


class Claims:
    """Per-task claim files ``X.launch/claims/<task>.json`` (host, pid, heartbeat), created atomically
    (``O_CREAT | O_EXCL``) before a task runs and removed when it ends. A claim whose owner is gone (same host: its
    pid is dead; another host: no heartbeat for ``STALE_S``) is taken over. A heartbeat thread refreshes the held
    claims every ``HEARTBEAT_S``.

        claims = Claims(results_file)
        if claims.claim("rope-s0"):   # False: another live run holds it -- skip it
            ... run the task ...
            claims.release("rope-s0")
    """

    def __init__(self, results: Path):
        self.results = Path(results)
        self.held: set[str] = set()
        self.skipped: dict[str, str] = {}  # task -> who holds it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": utc_now()}

    def claim(self, task_id: str) -> bool:
        path = claim_path(self.results, task_id)
        with writing(path, "create the claim"):
            path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = _claim_holder(path)
                if other is not None and worker_alive(other) and not (
                        other.get("host") == socket.gethostname() and other.get("pid") == os.getpid()):
                    self.skipped[task_id] = f"{other.get('host')}:{other.get('pid')}"
                    return False
                try:  # its owner is gone (or it is ours): take it over
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:  # no inodes left, a read-only folder, too many open files
                raise storage_error(exc, path, "create the claim") from None
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({**self._record(), "task": task_id}, fh)
            except OSError as exc:  # a claim half-written (disk full) is removed, never left to others
                path.unlink(missing_ok=True)
                raise storage_error(exc, path, "write the claim") from None
            with self._lock:
                self.held.add(task_id)
            self._start()
            return True
        self.skipped[task_id] = "a claim that kept changing hands"
        return False

    def release(self, task_id: str) -> None:
        with self._lock:
            self.held.discard(task_id)
        try:
            os.unlink(claim_path(self.results, task_id))
        except FileNotFoundError:
            pass

    def release_all(self) -> None:
        for t in list(self.held):
            self.release(t)
        self._stop.set()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="ablate-claims", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                held = list(self.held)
            for t in held:
                try:
                    write_json(claim_path(self.results, t), {**self._record(), "task": t})
                except OSError:
                    pass

    def __enter__(self) -> "Claims":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release_all()


def worker_alive(state: dict) -> bool:
    """Is the worker of a ``running`` state alive? Same host: its pid; another host: a recent heartbeat."""
    if state.get("host") == socket.gethostname() and isinstance(state.get("pid"), int):
        return pid_alive(state["pid"])
    age = _age_s(state.get("heartbeat"))
    return age is not None and age < STALE_S


# ---------------------------------------------------------------------------------------------------------------
# Standing


@dataclass
class TaskStanding:
    id: str
    standing: str  # one of STANDINGS
    label: str = ""
    rows: int = 0  # rows of this task found (any status)
    owed: int | None = None  # rows it owes (None: not known ahead)
    worker: str = ""  # job id / host:pid
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def latest_rows(rows: Iterable[dict]) -> dict[str, dict]:
    """The newest row per row_key (by timestamp, then file order)."""
    best: dict[str, tuple[str, int, dict]] = {}
    for i, r in enumerate(rows):
        k = r.get("row_key")
        if not k:
            continue
        stamp = str(r.get("timestamp") or "")
        if k not in best or (stamp, i) >= best[k][:2]:
            best[k] = (stamp, i, r)
    return {k: v[2] for k, v in best.items()}


def _worker_label(state: dict | None, job_id: str | None) -> str:
    if state:
        jid = state.get("job_id")
        where = f"{state.get('host')}:{state.get('pid')}"
        return f"{jid} ({where})" if jid else where
    return f"job {job_id}" if job_id else ""


def task_standing(task: dict, latest: dict[str, dict], state: dict | None, job_id: str | None) -> TaskStanding:
    """Classify one task of a plan (``task``: {"id", "keys", "label"}) from its rows and its worker's state."""
    keys = task.get("keys")
    st = TaskStanding(task["id"], "missing", task.get("label", ""), owed=len(keys) if keys is not None else None,
                      worker=_worker_label(state, job_id))
    rows = [latest[k] for k in keys if k in latest] if keys is not None else []
    st.rows = len(rows) if keys is not None else int((state or {}).get("rows") or 0)
    bad = [r for r in rows if r.get("status") not in TERMINAL_STATUSES]
    all_done = keys is not None and len(rows) == len(keys) and not bad
    s = (state or {}).get("state")
    if all_done:
        st.standing = "done"
    elif s == "running" and worker_alive(state):
        st.standing = "running"
    elif bad:
        st.standing = "failed"
        r = bad[0]
        st.reason = f"{r.get('status')}: {r.get('reason') or ''}".strip()
        if len(bad) > 1:
            st.reason += f" (+{len(bad) - 1} more row(s) not done)"
    elif s == "failed":
        st.standing, st.reason = "failed", state.get("reason") or "worker failed"
    elif s == "running":
        st.standing = "failed"
        st.reason = (f"worker stopped without finishing (killed, pre-empted or out of time; last heartbeat "
                     f"{state.get('heartbeat')})")
    elif s == "finished":
        if keys is None:
            st.standing = "done"
        else:
            st.standing = "failed"
            st.reason = f"worker finished but only {len(rows)} of {len(keys)} rows are stored"
    elif job_id:
        st.standing = "queued"
    elif rows:  # some rows (from an earlier run), none bad, not all there
        st.standing = "missing"
        st.reason = f"{len(rows)} of {len(keys)} rows stored"
    return st


@dataclass
class PlanStatus:
    results: Path
    plan: dict
    tasks: list[TaskStanding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STANDINGS}
        for t in self.tasks:
            out[t.standing] += 1
        return out


def plan_status(results: Path, plan: dict | None = None) -> PlanStatus:
    """Every task of the plan beside ``results`` with its standing."""
    plan = plan if plan is not None else read_json(plan_path(results))
    if plan is None:
        raise ResultsFileError(f"no plan for {results} (no {plan_path(results)})")
    latest = latest_rows(read_rows(results, missing_ok=True, expect_suite=plan.get("suite") or None))
    jobs: dict[str, str] = {}
    for sub in plan.get("submissions", []):
        jobs.update(sub.get("jobs") or {})
    out = PlanStatus(results, plan)
    for task in plan.get("tasks", []):
        state = read_json(state_path(results, task["id"]))
        if state is not None and state.get("plan_id") != plan.get("plan_id"):
            state = None  # a state left by another sweep in this folder
        out.tasks.append(task_standing(task, latest, state, jobs.get(task["id"])))
    subs = plan.get("submissions") or []
    last = subs[-1] if subs else None
    if last and last.get("launcher") in ("gpus", "slurm") and last.get("pid") and worker_alive(last):
        # the launching process still deals these out (a free GPU, a local-executor slot)
        for t in out.tasks:
            if t.standing == "missing" and t.id in (last.get("tasks") or []):
                t.standing, t.reason = "queued", f"waiting for a free worker slot in {last['host']}:{last['pid']}"
    local = read_json(local_state_path(results))
    if local is not None and local.get("plan_id") == plan.get("plan_id"):
        _apply_local(out, local)
    return out


def _apply_local(out: PlanStatus, local: dict) -> None:
    """A local run works through its tasks in plan order: while it lives, its first task not done is running and
    the rest are queued; after it stopped, they say how it ended."""
    asked = set(local.get("tasks") or [])
    pending = [t for t in out.tasks if t.id in asked and t.standing in ("missing", "queued")]
    where = f"{local.get('host')}:{local.get('pid')}"
    if local.get("state") == "running" and worker_alive(local):
        for i, t in enumerate(pending):
            t.standing, t.worker = ("running" if i == 0 else "queued"), f"local ({where})"
        return
    if local.get("state") == "running":
        why = f"the local run ({where}) {killed_reason(local)}"
    elif local.get("state") == "failed":
        why = f"the local run ({where}) failed: {local.get('reason')}"
    else:
        why = ""
    for t in pending:
        t.reason = t.reason or why


def find_plans(run_dir: Path) -> list[Path]:
    """Results files (``X.jsonl``) with a plan under ``run_dir`` (or ``run_dir`` itself when it is one)."""
    run_dir = Path(run_dir)
    if run_dir.is_file() or run_dir.name.endswith(".jsonl"):
        return [run_dir] if plan_path(run_dir).is_file() else []
    if run_dir.name.endswith(".launch") and (run_dir / PLAN_FILE).is_file():
        return [run_dir.parent / (run_dir.name[: -len(".launch")] + ".jsonl")]
    found = []
    for p in sorted(run_dir.rglob(f"*.launch/{PLAN_FILE}")):
        found.append(p.parent.parent / (p.parent.name[: -len(".launch")] + ".jsonl"))
    return found


__all__ = ["PLAN_FILE", "STANDINGS", "StateFile", "TaskStanding", "PlanStatus", "plan_status", "find_plans",
           "plan_path", "state_path", "local_state_path", "safe_name", "write_json", "read_json", "plan_id", "task_standing",
           "latest_rows", "worker_alive", "utc_now", "HEARTBEAT_S", "STALE_S", "Claims", "claim_path",
           "process_memory", "killed_reason"]
