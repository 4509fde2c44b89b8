"""Who else is running: the live writers of an ``--out`` folder, and whether a timing was contended.

Every ``ablate run`` registers itself in ``<out>/.ablate-writers/<host>-<pid>.json`` (host, pid, device, visible
GPUs, threads, heartbeat) while it runs; the task claims (:class:`ablate.store.runstate.Claims`) keep two runs from
measuring one task, this keeps them from passing off each other's load as a measurement. Each row a run writes
records, as environment columns:

* ``env.threads``: the torch threads the process used (``torch.get_num_threads()``);
* ``env.contended``: whether the measurement shared its device -- another live writer on this host using the same
  device (any other writer for a CPU run; one sharing a visible GPU for a CUDA run) was seen while it ran (checked
  every :data:`CHECK_S` s, at the start of each task and when the row is written), or, on CPU, the machine was
  oversubscribed (1-minute load average above the CPUs, at least one CPU of it not this run's);
* ``env.contended_by``: who (``host:pid (device)``, ``load 5.6 on 2 CPUs``).

``ablate compare`` and the nightly never gate on a contended row (``skipped-contended``). A run on CPU whose
``cpu_threads`` is 0 (all cores) that finds other CPU writers at its start takes its share of the cores instead.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ablate.store.procinfo import pid_alive

__all__ = ["WRITERS_DIR", "CHECK_S", "Writers", "run_conditions", "machine_load", "cpu_count"]

WRITERS_DIR = ".ablate-writers"
CHECK_S = 2.0  # how often a run looks for other writers
HEARTBEAT_S = 20.0
_ACTIVE: list["Writers"] = []  # the run of this process (run_conditions reads it)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_load() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _threads() -> int | None:
    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def _gpus() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() or "all"


class Writers:
    """This run's entry among the writers of ``out``; ``start()`` / ``stop()`` (or ``with``)."""

    def __init__(self, out: str | os.PathLike, device: str, per_row: bool = False):
        self.folder = Path(out) / WRITERS_DIR
        self.device = "cuda" if str(device).startswith("cuda") else str(device)
        self.per_row = per_row  # the window of a row: since the previous row (else since the task began)
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.path = self.folder / f"{socket.gethostname()}-{os.getpid()}.json"
        self.seen: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self.device, "gpus": _gpus(),
                "threads": _threads(), "heartbeat": time.time()}

    def _write(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(self._record()), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # best effort: the results file's own checks say when --out is unwritable
            pass

    def start(self) -> "Writers":
        self._write()
        self.seen = self.others()
        self._thread = threading.Thread(target=self._beat, name="ablate-writers", daemon=True)
        self._thread.start()
        _ACTIVE[:] = [self]
        return self

    def stop(self) -> None:
        self._stop.set()
        if _ACTIVE and _ACTIVE[0] is self:
            _ACTIVE.clear()
        try:
            self.path.unlink()
            self.folder.rmdir()  # when no other writer is left in it
        except OSError:
            pass

    def __enter__(self) -> "Writers":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _shares(self, other: dict) -> bool:
        if self.device != "cuda":
            return True  # a CPU timing shares the cores with any other run
        if other.get("device") != "cuda":
            return False
        mine, theirs = _gpus(), str(other.get("gpus") or "all")
        return "all" in (mine, theirs) or bool(set(mine.split(",")) & set(theirs.split(",")))

    def others(self) -> dict[str, str]:
        """Live writers on this host sharing this run's device: ``host:pid`` -> device."""
        out: dict[str, str] = {}
        try:
            files = list(self.folder.glob("*.json"))
        except OSError:
            return out
        for f in files:
            if f == self.path:
                continue
            try:
                w = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(w, dict) or w.get("host") != socket.gethostname() or not isinstance(w.get("pid"), int):
                continue  # another host (a shared file system) shares nothing with this one
            if not pid_alive(w["pid"]):
                try:
                    f.unlink()  # a writer that died without removing its entry
                except OSError:
                    pass
                continue
            if self._shares(w):
                out[f"{w['host']}:{w['pid']}"] = str(w.get("device"))
        return out

    def _beat(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(CHECK_S):
            now = self.others()
            with self._lock:
                self.seen.update(now)
            if time.monotonic() - last >= HEARTBEAT_S:
                self._write()
                last = time.monotonic()

    def begin_task(self) -> None:
        """A new measurement starts: the writers seen from now on are its."""
        now = self.others()
        with self._lock:
            self.seen = now

    def conditions(self) -> dict[str, Any]:
        """``threads``, ``contended``, ``contended_by`` for a row written now."""
        now = self.others()
        with self._lock:
            seen = {**self.seen, **now}
            if self.per_row:
                self.seen = now
        threads = _threads()
        who = [f"{k} ({v})" for k, v in sorted(seen.items())]
        load, cpus = machine_load(), cpu_count()
        if self.device == "cpu" and load is not None and load > cpus and load - (threads or 1) >= 1.0:
            who.append(f"load {load:.1f} on {cpus} CPUs")
        return {"threads": threads, "contended": bool(who), "contended_by": ", ".join(who)}


def run_conditions() -> dict[str, Any]:
    """The columns of :meth:`Writers.conditions` for this process's run; empty outside a run."""
    return _ACTIVE[0].conditions() if _ACTIVE else {}
