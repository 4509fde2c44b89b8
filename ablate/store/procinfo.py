"""What /proc says about a process: is it alive, how much memory it holds, and why it stopped (a signal, likely the
kernel's OOM killer). Used by the worker states and claims of :mod:`ablate.store.runstate`."""

from __future__ import annotations

import os
import signal as _signal
from pathlib import Path

__all__ = ["pid_alive", "process_memory", "killed_reason", "LIKELY_OOM_FRACTION"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not alive
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_memory() -> dict[str, int | None]:
    """This process's resident memory now and at its peak (``VmRSS`` / ``VmHWM``) and the memory it may use
    (cgroup ``memory.max`` when set, else ``MemTotal``), in bytes; None where /proc cannot say."""
    out: dict[str, int | None] = {"rss_bytes": None, "peak_rss_bytes": None, "mem_limit_bytes": None}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    out["rss_bytes"] = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    out["peak_rss_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    limit = None
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        limit = int(raw) if raw.isdigit() else None
    except OSError:
        pass
    if limit is None:
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemTotal:"):
                        limit = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    out["mem_limit_bytes"] = limit
    return out


LIKELY_OOM_FRACTION = 0.8  # a SIGKILL after the process used this share of its memory limit: likely the OOM killer


def killed_reason(state: dict, signum: int | None = None) -> str:
    """Why a worker that left no exit behind stopped: the signal when known, and "likely out of memory" when its
    last heartbeat showed it near the memory limit."""
    if signum is not None:
        try:
            name = _signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        how = f"killed by {name}"
    else:
        how = "stopped without recording an exit (killed by a signal it could not catch, e.g. SIGKILL)"
    rss, limit = state.get("peak_rss_bytes") or state.get("rss_bytes"), state.get("mem_limit_bytes")
    if (signum in (None, 9)) and rss and limit and rss >= LIKELY_OOM_FRACTION * limit:
        how += (f"; likely out of memory (the kernel's OOM killer): its memory reached {rss / 2**30:.1f} GiB of "
                f"{limit / 2**30:.1f} GiB")
    elif rss and limit:
        how += f" (memory at its last heartbeat: {rss / 2**30:.1f} of {limit / 2**30:.1f} GiB)"
    return how
