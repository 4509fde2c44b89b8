"""Environment fingerprint: what machine and software a measurement was taken on.

Every result row carries :func:`env_columns` (the fingerprint with keys prefixed ``env.``) so that a number can
always be traced to its hardware, driver, library versions and source commit -- also on a machine without the
``.git`` folder (see :func:`provenance`: git checkout, then ``$ABLATE_GIT_COMMIT``/``$ABLATE_GIT_DIRTY``, then the
build stamp of a wheel).

Every probe is defensive: a missing tool, a broken driver or an odd platform yields ``None`` for that key, never an
exception. The fingerprint is computed once per process (it shells out to ``git`` and ``nvidia-smi``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from ablate.store.writers import run_conditions

__all__ = ["fingerprint", "env_columns", "OPTIONAL_PACKAGES", "ENV_PREFIX", "provenance", "provenance_env",
           "GIT_COMMIT_ENV", "GIT_DIRTY_ENV", "STAMP_FILE"]

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


def checkout_root(path: str | Path) -> Path | None:
    """``path`` (resolved) when it is the top of a git checkout (``git rev-parse --show-toplevel``), else None.

    A folder inside an enclosing repository (a virtualenv's site-packages, a copy of the tree under someone's
    home checkout) is not a checkout of its own: None."""
    root = Path(path).resolve()
    top = _run(["git", "-C", str(root), "rev-parse", "--show-toplevel"])
    if not top or Path(top).resolve() != root:
        return None
    return root


def source_root() -> Path | None:
    """The git checkout holding the ablate sources, or None when ablate is installed from a wheel (or runs from a
    copy of the tree without its ``.git``)."""
    import ablate

    return checkout_root(Path(ablate.__file__).resolve().parent.parent)


def git_info(root: str | Path) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the checkout at ``root`` (None for what git cannot tell).

    Dirty means a change to what could affect a measurement: outputs (results/, reports/, runs/) do not count, or a
    resumed sweep appending to a committed results file would call itself dirty. Untracked files do not count either.
    Without a commit (``HEAD`` unresolvable: a fresh ``git init``) dirty means nothing and is None too."""
    commit = parse_commit(_run(["git", "-C", str(root), "rev-parse", "HEAD"]) or "")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
                   ":(exclude)results", ":(exclude)reports", ":(exclude)runs"])
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


# ---------------------------------------------------------------------------------------------------------------
# Provenance: the source commit of a row, also where there is no .git
#
# Resolution order (the first that yields a commit wins; git_source says which):
#   "git"    the git checkout ablate runs from (source_root / git_info)
#   "env"    $ABLATE_GIT_COMMIT (40 or 64 hex digits) and $ABLATE_GIT_DIRTY (true/false/1/0/yes/no), set by a
#            launcher for a machine that got a copy of the tree without .git: see provenance_env()
#   "stamp"  ablate/_build_stamp.json, written into a wheel by setup.py's build_py hook when the wheel is built
#            from a git checkout (or from an sdist made from one)
#   None     unknown: git_commit and git_dirty are None
# A malformed $ABLATE_GIT_COMMIT (or stamp) is ignored with a RuntimeWarning, never recorded: a row must not claim a
# commit nobody can check out. The resolution goes on to the next source. A malformed or missing $ABLATE_GIT_DIRTY
# next to a valid commit records the commit with git_dirty None (unknown), warning when it was malformed.

GIT_COMMIT_ENV = "ABLATE_GIT_COMMIT"
GIT_DIRTY_ENV = "ABLATE_GIT_DIRTY"
STAMP_NAME = "_build_stamp.json"
# Where the installed package's stamp lies; tests point it elsewhere (monkeypatch.setattr(env, "STAMP_FILE", ...)).
STAMP_FILE: Path = Path(__file__).resolve().parents[1] / STAMP_NAME  # ablate/_build_stamp.json

_HEX = frozenset("0123456789abcdef")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def parse_commit(value: Any) -> str | None:
    """A full commit id (40 hex digits, or 64 for a SHA-256 repository), lower-cased; None for anything else."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    return v if len(v) in (40, 64) and set(v) <= _HEX else None


def parse_dirty(value: Any) -> bool | None:
    """True/False from a bool or ``true/false/1/0/yes/no`` (any case); None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    return None


def _warn(message: str) -> None:

    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _from_env() -> dict[str, Any] | None:
    raw = os.environ.get(GIT_COMMIT_ENV)
    if raw is None or not raw.strip():
        return None
    commit = parse_commit(raw)
    if commit is None:
        _warn(f"ignoring ${GIT_COMMIT_ENV}={raw!r}: not a full commit id (40 hex digits)")
        return None
    raw_dirty = os.environ.get(GIT_DIRTY_ENV)
    dirty = parse_dirty(raw_dirty) if raw_dirty is not None else None
    if raw_dirty is not None and raw_dirty.strip() and dirty is None:
        _warn(f"ignoring ${GIT_DIRTY_ENV}={raw_dirty!r} (want true/false/1/0): git_dirty is recorded as unknown")
    return {"git_commit": commit, "git_dirty": dirty}


def read_stamp(path: str | Path) -> dict[str, Any] | None:
    """``{"git_commit", "git_dirty"}`` from a build stamp, or None when there is none (or it is malformed: warned)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    commit = parse_commit(data.get("git_commit")) if isinstance(data, dict) else None
    if commit is None:
        _warn(f"ignoring the build stamp {p}: no valid git_commit in it")
        return None
    return {"git_commit": commit, "git_dirty": parse_dirty(data.get("git_dirty"))}


def stamp_text(info: Mapping[str, Any]) -> str:
    """The build stamp's content for ``{"git_commit", "git_dirty"}`` (deterministic JSON)."""
    return json.dumps({"git_commit": info.get("git_commit"), "git_dirty": info.get("git_dirty")},
                      sort_keys=True) + "\n"


def provenance(root: str | Path | None = None) -> dict[str, Any]:
    """``{"git_commit", "git_dirty", "git_source"}`` by the resolution order above (not cached).

    ``root``: the checkout to ask git about (default: :func:`source_root`, ablate's own checkout)."""
    top = checkout_root(root) if root is not None else _safe(source_root)
    if top is not None:
        info = _safe(lambda: git_info(top)) or {}
        if info.get("git_commit"):
            return {**info, "git_source": "git"}
    for source, probe in (("env", _from_env), ("stamp", lambda: read_stamp(STAMP_FILE))):
        info = _safe(probe)
        if info:
            return {**info, "git_source": source}
    return {"git_commit": None, "git_dirty": None, "git_source": None}


def provenance_env(root: str | Path | None = None) -> dict[str, str]:
    """``{"ABLATE_GIT_COMMIT": ..., "ABLATE_GIT_DIRTY": "true"|"false"}`` for this checkout, to pass to a process on
    a machine that gets a copy of the tree without ``.git`` (a launcher: ``env={**os.environ, **provenance_env()}``).

    Resolved like the rows' own provenance, so a chain of launches passes the commit on. Empty when the commit is
    unknown; without ``ABLATE_GIT_DIRTY`` when only that is unknown."""
    info = provenance(root)
    if not info["git_commit"]:
        return {}
    out = {GIT_COMMIT_ENV: info["git_commit"]}
    if info["git_dirty"] is not None:
        out[GIT_DIRTY_ENV] = "true" if info["git_dirty"] else "false"
    return out


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
    fp.update(_safe(provenance, {}) or {"git_commit": None, "git_dirty": None, "git_source": None})
    fp["ablate"] = _safe(_ablate_version)
    for key, (dists, import_name) in OPTIONAL_PACKAGES.items():
        fp[key] = _safe(lambda: _package_version(dists, import_name))
    return tuple(fp.items())


def fingerprint() -> dict[str, Any]:
    """Flat dict describing this machine and software (computed once per process; a fresh copy each call).

    Keys: python, platform, cpu, cpu_count, hostname, torch, cuda, hip, cudnn, gpu, gpu_count, driver, git_commit,
    git_dirty, git_source (where the commit came from: "git", "env", "stamp" or None; see :func:`provenance`), ablate, flash_attn, flash_attn_4, xformers, triton, numpy, pandas, command (the command line that
    produced the row, as ``ablate ...`` when run through the CLI). Unknown values are None.
    """
    return {**dict(_fingerprint()), "command": command_line()}


COMMAND_ENV = "ABLATE_COMMAND"  # set by launchers: the user's command, for their workers and torchrun ranks


def command_line() -> str | None:
    """This process's command line, with the console-script path shortened to ``ablate`` (or, in a launched worker,
    the command that launched it: ``$ABLATE_COMMAND``)."""
    if os.environ.get(COMMAND_ENV):
        return os.environ[COMMAND_ENV]
    argv = list(getattr(sys, "argv", []) or [])
    if not argv:
        return None
    if os.path.basename(argv[0]) in ("ablate", "cli.py", "__main__.py"):
        argv[0] = "ablate"
    return " ".join(shlex.quote(a) for a in argv)


def env_columns() -> dict[str, Any]:
    """The fingerprint as result-row columns: every key prefixed with ``env.``; during a run also the threads it
    uses and whether another run shared its device (``env.threads``, ``env.contended``, ``env.contended_by``:
    :mod:`ablate.store.writers`)."""
    return {ENV_PREFIX + k: v for k, v in {**fingerprint(), **run_conditions()}.items()}


def clear_cache() -> None:
    """Forget the cached fingerprint (tests; a long-lived process after installing a package)."""
    _fingerprint.cache_clear()
