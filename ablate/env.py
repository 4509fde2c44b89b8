"""Environment fingerprint: what machine and software a measurement was taken on.

Every result row carries :func:`env_columns` (the fingerprint with keys prefixed ``env.``) so that a number can
always be traced to its hardware, driver, library versions and source commit.

Every probe is defensive: a missing tool, a broken driver or an odd platform yields ``None`` for that key, never an
exception. The fingerprint is computed once per process (it shells out to ``git`` and ``nvidia-smi``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["fingerprint", "env_columns", "OPTIONAL_PACKAGES", "ENV_PREFIX"]

ENV_PREFIX = "env."

# fingerprint key -> (distribution names to ask importlib.metadata, import name to probe as a fallback)
OPTIONAL_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "flash_attn": (("flash-attn", "flash_attn"), "flash_attn"),
    "flash_attn_4": (("flash-attn-4", "flash-attn4", "fa4"), "flash_attn.cute"),
    "xformers": (("xformers",), "xformers"),
    "triton": (("triton", "pytorch-triton", "pytorch-triton-rocm"), "triton"),
    "numpy": (("numpy",), "numpy"),
    "pandas": (("pandas",), "pandas"),
}

_TIMEOUT_S = 10.0


def _safe(probe: Callable[[], Any], default: Any = None) -> Any:
    try:
        return probe()
    except Exception:  # a probe must never take the caller down
        return default


def _run(cmd: list[str], cwd: str | Path | None = None) -> str | None:
    """stdout of ``cmd`` stripped, or None if it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    if sys.platform == "darwin":
        name = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if name:
            return name
    return platform.processor() or platform.machine() or None


def _package_version(dists: tuple[str, ...], import_name: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        except Exception:
            continue
    # Not installed as a distribution we know: maybe importable anyway (a source checkout on sys.path).
    # find_spec of "a.b" imports "a"; only do that for top-level names or when the parent is already loaded.
    parent = import_name.split(".")[0]
    if "." in import_name and parent not in sys.modules:
        if importlib.util.find_spec(parent) is None:
            return None
    spec = _safe(lambda: importlib.util.find_spec(import_name))
    if spec is None:
        return None
    module = sys.modules.get(import_name)
    version = getattr(module, "__version__", None) if module is not None else None
    return str(version) if version else "unknown"


def _torch_info() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": None, "cuda": None, "hip": None, "cudnn": None, "gpu": None, "gpu_count": 0}
    try:
        import torch
    except Exception:
        return info
    info["torch"] = _safe(lambda: str(torch.__version__))
    info["cuda"] = _safe(lambda: torch.version.cuda)
    info["hip"] = _safe(lambda: getattr(torch.version, "hip", None))
    info["cudnn"] = _safe(lambda: torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    available = _safe(lambda: torch.cuda.is_available(), False)
    if available:
        info["gpu_count"] = _safe(lambda: torch.cuda.device_count(), 0)
        info["gpu"] = _safe(lambda: torch.cuda.get_device_name(0))
    return info


def _driver_version() -> str | None:
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out:
        return out.splitlines()[0].strip() or None
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            _safe(pynvml.nvmlShutdown)
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None


def source_root() -> Path | None:
    """The git checkout holding the ablate sources, or None when ablate is installed from a wheel."""
    import ablate

    root = Path(ablate.__file__).resolve().parent.parent
    top = _run(["git", "-C", str(root), "rev-parse", "--show-toplevel"])
    if not top:
        return None
    # Must be *this* project's checkout, not an enclosing repository holding a virtualenv's site-packages.
    if Path(top).resolve() != root:
        return None
    return root


def _git_info() -> dict[str, Any]:
    root = _safe(source_root)
    if root is None:
        return {"git_commit": None, "git_dirty": None}
    commit = _run(["git", "-C", str(root), "rev-parse", "HEAD"])
    # Dirty means a change to what could affect a measurement: outputs (results/, reports/, runs/) do not count,
    # or a resumed sweep appending to a committed results file would call itself dirty.
    status = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
                   ":(exclude)results", ":(exclude)reports", ":(exclude)runs"])
    return {"git_commit": commit or None, "git_dirty": None if status is None else bool(status)}


def _ablate_version() -> str | None:
    import ablate

    return getattr(ablate, "__version__", None)


@functools.lru_cache(maxsize=1)
def _fingerprint() -> tuple[tuple[str, Any], ...]:
    fp: dict[str, Any] = {
        "python": _safe(lambda: platform.python_version()),
        "platform": _safe(lambda: platform.platform()),
        "cpu": _safe(_cpu_name),
        "cpu_count": _safe(lambda: os.cpu_count()),
        "hostname": _safe(lambda: socket.gethostname()),
    }
    fp.update(_safe(_torch_info, {}) or {})
    for key in ("torch", "cuda", "hip", "cudnn", "gpu", "gpu_count"):
        fp.setdefault(key, None)
    fp["driver"] = _safe(_driver_version)
    fp.update(_safe(_git_info, {}) or {"git_commit": None, "git_dirty": None})
    fp["ablate"] = _safe(_ablate_version)
    for key, (dists, import_name) in OPTIONAL_PACKAGES.items():
        fp[key] = _safe(lambda: _package_version(dists, import_name))
    return tuple(fp.items())


def fingerprint() -> dict[str, Any]:
    """Flat dict describing this machine and software (computed once per process; a fresh copy each call).

    Keys: python, platform, cpu, cpu_count, hostname, torch, cuda, hip, cudnn, gpu, gpu_count, driver, git_commit,
    git_dirty, ablate, flash_attn, flash_attn_4, xformers, triton, numpy, pandas, command (the command line that
    produced the row, as ``ablate ...`` when run through the CLI). Unknown values are None.
    """
    return {**dict(_fingerprint()), "command": _command()}


COMMAND_ENV = "ABLATE_COMMAND"  # set by launchers: the user's command, for their workers and torchrun ranks


def _command() -> str | None:
    """This process's command line, with the console-script path shortened to ``ablate`` (or, in a launched worker,
    the command that launched it: ``$ABLATE_COMMAND``)."""
    import shlex
    import sys

    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv = list(getattr(sys, "argv", []) or [])
    if not argv:
        return None
    if os.path.basename(argv[0]) in ("ablate", "cli.py", "__main__.py"):
        argv[0] = "ablate"
    return " ".join(shlex.quote(a) for a in argv)


def env_columns() -> dict[str, Any]:
    """The fingerprint as result-row columns: every key prefixed with ``env.``."""
    return {ENV_PREFIX + k: v for k, v in fingerprint().items()}


def clear_cache() -> None:
    """Forget the cached fingerprint (tests; a long-lived process after installing a package)."""
    _fingerprint.cache_clear()
