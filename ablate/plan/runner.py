"""The suite contract: how ``ablate run`` and ``ablate report`` reach a suite.

A suite is a package ``ablate.suites.<name>`` (folder ``suites/<name>/``) offering

    def tasks(opts: RunOptions) -> tuple[Path, list[Task]]
    def run(opts: RunOptions) -> Path
        Both come from one :class:`ablate.plan.suitekit.Suite` object (``SUITE_KIT.tasks`` / ``SUITE_KIT.run``):
        the suite supplies its plan (config, data, tasks and the rows each owes), its measurement and its summary;
        :func:`ablate.plan.suitekit.run_loop` owns resume (rows already stored are skipped unless ``opts.resume`` is
        off), claims of tasks, failure rows, progress and trackers, and writes under ``opts.out`` (see
        :func:`results_path`). ``opts.device`` is already resolved to "cpu" or "cuda"; overrides are applied with
        ``ablate.core.config.apply_overrides`` (unknown keys → ConfigError). Task ids have one ASCII form
        (:func:`ablate.plan.tasks.task_id`: ``modern@s0``, ``rope@s0``, ``kernel-sdpa``).

    def report(rows: pandas.DataFrame, out_dir: Path) -> list[Path]      # optional
        Make tables/figures (ablate.reporting.tables) from this suite's rows; return the files written.

User mistakes raise :class:`ablate.errors.AblateError` subclasses, which the CLI prints as one line.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ablate.errors import ConfigError, UnavailableError
from ablate.plan.tasks import Task, canonical_task_id, select_tasks
from ablate.store.schema import SUITES

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SUITES", "DEVICES", "PRESETS", "PRESET_HELP", "PRESET_ALIASES", "suite_presets", "canonical_preset",
           "RunOptions", "Task", "select_tasks", "suite_tasks", "run_suite", "resolve_device", "check_suite",
           "load_suite", "results_path", "default_preset", "report_rows"]

DEVICES = ("cpu", "cuda")

# One preset vocabulary for every suite: each suite's ``PRESETS`` has at least these, with these meanings
# (tests/cli/test_cli_choices.py checks); a suite may add presets of its own (:func:`suite_presets`).
PRESETS = ("micro", "tiny", "gpu")
PRESET_HELP = {"micro": "seconds on a CPU, for tests", "tiny": "the CPU default", "gpu": "the CUDA default"}
# Old names still accepted, with a one-line note on stderr: latency's CPU default was called ``cpu`` until every
# suite said micro/tiny/gpu. Its rows never recorded the preset (row keys unchanged); only the results file name
# follows the new name (<device>-tiny.jsonl, see :func:`results_path`).
PRESET_ALIASES = {"cpu": "tiny"}
_NOTED: set[str] = set()


def suite_presets(suite: str) -> tuple[str, ...]:
    """The presets of ``suite``, in its order: its ``PRESETS`` (micro, tiny, gpu and any of its own), or the shared
    vocabulary :data:`PRESETS` when the suite cannot be imported here."""
    check_suite(suite)
    try:
        return tuple(importlib.import_module(f"ablate.suites.{suite}").PRESETS)
    except (ImportError, AttributeError):
        return PRESETS


def _note(message: str) -> None:
    """One line on stderr, once per process."""
    if message not in _NOTED:
        _NOTED.add(message)

        sys.stderr.write(f"ablate: note: {message}\n")
        sys.stderr.flush()


def canonical_preset(preset: str | None) -> str | None:
    """``preset`` under its current name: a deprecated alias (``cpu``) becomes its new name (``tiny``), with a
    one-line note on stderr; anything else is returned unchanged (the suite's ``resolve`` checks it)."""
    if preset is None:
        return None
    name = str(preset)
    new = PRESET_ALIASES.get(name)
    if new is None:
        return name
    _note(f"preset {name!r} is deprecated, now called {new!r} (every suite: {', '.join(PRESETS)}); "
          f"running {new!r}")
    return new


@dataclass(frozen=True)
class RunOptions:
    """Everything ``ablate run`` was asked for; suites receive it unchanged except ``device`` (resolved)."""

    suite: str
    preset: str | None = None
    overrides: tuple[str, ...] = ()
    out: Path = Path("runs")
    seeds: int = 1
    resume: bool = True
    data: Path | None = None
    device: str | None = None
    progress: bool = True
    only: tuple[str, ...] = ()  # run only these tasks of the sweep (ids from the suite's tasks(); () = all)
    shard: str | None = None  # write rows to this worker shard of the results file (ablate.store.results.shard_path)
    plugins: tuple[str, ...] = ()  # plugins (ablate.registry.plugins) every process of the run loads: modules, absolute files
    log_to: tuple[str, ...] = ()  # trackers for live training curves (ablate.store.livelog): wandb, mlflow, tensorboard
    summary_tables: bool = True  # the suite ends with its own summary tables (`ablate run` prints `ablate show`'s)

    def __post_init__(self) -> None:  # accept str paths and lists from Python callers
        object.__setattr__(self, "out", Path(self.out))
        if self.data is not None:
            object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "only", tuple(canonical_task_id(t) for t in self.only))
        object.__setattr__(self, "plugins", tuple(self.plugins))
        object.__setattr__(self, "log_to", tuple(self.log_to))
        object.__setattr__(self, "preset", canonical_preset(self.preset))


def check_suite(name: str) -> str:
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}")
    return name


def _check_overrides(overrides: tuple[str, ...]) -> None:
    """Syntax only (key=value, non-empty key); the suite checks that keys exist when it applies them."""
    for item in overrides:
        key = item.split("=", 1)[0].strip() if "=" in item else ""
        if not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. --set model.position=alibi)")


def check_out_dir(out: str | os.PathLike, flag: str = "--out") -> Path:
    """``out`` as a folder this process can write into, checked without creating anything: not empty, not a
    file, and the folder (or, when it does not exist yet, its nearest existing parent) accepts a new file.
    One-line :class:`ConfigError` otherwise."""
    text = os.fspath(out)
    if not str(text).strip():
        raise ConfigError(f"{flag} is empty; give a folder, e.g. {flag} runs")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder; give a folder (results go to "
                          f"{flag}/<suite>/<device>-<preset>.jsonl)")
    anchor = path
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise ConfigError(f"{flag} {path} cannot be created: {anchor} is not a folder")
    try:  # permission bits do not stop root, and a read-only mount ignores them: try it
        fd, probe = tempfile.mkstemp(prefix=".ablate-write-check-", dir=anchor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = "is not writable" if path == anchor else f"cannot be created in {anchor}"
        raise ConfigError(f"{flag} {path} {what} ({exc.strerror or exc})") from None
    return path


def resolve_device(opt: str | None) -> str:
    """``None``/``"auto"`` → ``"cuda"`` if a CUDA GPU is visible else ``"cpu"``; ``"cpu"``/``"cuda"`` are checked."""
    choice = (opt or "auto").strip().lower()
    if choice not in DEVICES + ("auto",):
        raise ConfigError(f"unknown device {opt!r}; valid: {', '.join(DEVICES)}")
    if choice == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except Exception:
        has_cuda = False
    if choice == "cuda" and not has_cuda:
        raise ConfigError("device cuda requested but no CUDA GPU is visible")
    return "cuda" if has_cuda else "cpu"


def load_suite(name: str, attr: str) -> Callable[..., Any] | None:
    """``ablate.suites.<name>.<attr>`` or None when the module or the attribute does not exist (yet)."""
    check_suite(name)
    module_name = f"ablate.suites.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, "ablate.suites"):
            return None
        raise  # the suite exists but something it imports is missing: a real error, keep the traceback
    fn = getattr(module, attr, None)
    return fn if callable(fn) else None


def default_preset(suite: str, device: str) -> str:
    """The preset a run of ``suite`` on ``device`` uses without ``--preset``: the suite's ``default_preset(device)``
    when it has one, else (every built-in suite) ``gpu`` on CUDA and ``tiny`` elsewhere."""
    fn = load_suite(suite, "default_preset")
    return str(fn(device)) if fn is not None else ("gpu" if device == "cuda" else "tiny")


def results_path(opts: RunOptions, device: str | None = None, preset: str | None = None) -> Path:
    """The results file of a run, one rule for every suite: ``<out>/<suite>/<device>-<preset>.jsonl``
    (``ablate run --suite latency --preset micro --device cpu --out runs`` → ``runs/latency/cpu-micro.jsonl``).

    One file per suite, device and preset, so runs on different machines or presets never resume into each other;
    a launched run keeps its plan, shards and logs beside it in ``<device>-<preset>.launch/``
    (:func:`ablate.store.results.launch_dir`). ``device``/``preset``: the ones the suite resolved; by default
    ``opts.device`` (resolved when unset or ``auto``) and ``opts.preset`` (else :func:`default_preset`)."""
    device = device or opts.device
    if device in (None, "", "auto"):
        device = resolve_device(device)
    preset = canonical_preset(preset) or opts.preset or default_preset(opts.suite, device)
    path = Path(opts.out) / opts.suite / f"{device}-{preset}.jsonl"
    for old, new in PRESET_ALIASES.items():
        legacy = path.with_name(f"{device}-{old}.jsonl")
        if preset == new and legacy.exists() and not path.exists():
            _note(f"{legacy} holds rows of the preset formerly called {old!r}; this run writes {path.name} "
                  f"(same row keys): rename {legacy.name} to {path.name} to resume it")
    return path


def suite_tasks(opts: RunOptions) -> tuple[Path, list[Task]]:
    """(results file, the sweep's tasks) of ``opts`` via the suite's ``tasks(opts)``; ``opts.device`` resolved."""
    check_suite(opts.suite)
    if opts.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {opts.seeds}")
    fn = load_suite(opts.suite, "tasks")
    if fn is None:
        raise UnavailableError(f"suite {opts.suite!r} cannot be split into tasks for a launcher")
    _check_overrides(opts.overrides)
    resolved = dataclasses.replace(opts, device=resolve_device(opts.device))
    _RESOLVED[:] = [(opts, resolved)]  # run_suite(opts) next runs the plan tasks() made (ablate.plan.suitekit)
    path, tasks = fn(resolved)
    return Path(path), list(tasks)


_RESOLVED: list[tuple[RunOptions, RunOptions]] = []  # (options given to suite_tasks, the options its suite saw)


def run_suite(opts: RunOptions) -> Path:
    """Validate ``opts``, resolve the device, and call ``ablate.suites.<suite>.run(opts)``; returns its results file."""
    check_suite(opts.suite)
    if opts.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {opts.seeds}")
    _check_overrides(opts.overrides)
    same = _RESOLVED.pop() if _RESOLVED else None
    opts = same[1] if same and same[0] is opts else dataclasses.replace(opts, device=resolve_device(opts.device))
    run = load_suite(opts.suite, "run")
    if run is None:
        raise UnavailableError(f"suite {opts.suite!r} is not implemented yet")
    result = run(opts)
    return Path(result) if result is not None else results_path(opts)


def _fallback_report(suite: str, rows: "pd.DataFrame", out_dir: Path) -> list[Path]:
    """For a suite without ``report()``: a table of row counts by status."""
    from ablate.reporting.tables import write_table

    counts = rows.groupby("status", dropna=False).size().rename("rows").reset_index()
    counts = counts.sort_values("status", kind="stable").reset_index(drop=True)
    md, tex = write_table(counts, out_dir / f"{suite}_status", caption=f"{suite}: rows by status")
    return [md, tex]


def report_rows(rows: "pd.DataFrame", out_dir: Path) -> dict[str, list[Path]]:
    """Call each present suite's ``report(rows_of_that_suite, out_dir)``; returns the files written per suite.

    Each suite gets only its own rows, without the columns that are empty for all of them (other suites' metrics).
    Suites without ``report()`` (or unknown suite names in old rows) get a status-count table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    if rows.empty or "suite" not in rows.columns:
        return written
    for suite in sorted(str(s) for s in rows["suite"].dropna().unique()):
        sub = rows[rows["suite"] == suite].reset_index(drop=True)
        sub = sub.dropna(axis=1, how="all")
        report = load_suite(suite, "report") if suite in SUITES else None
        if report is None:
            files = _fallback_report(suite, sub, out_dir)
        else:
            files = report(sub, out_dir) or []
        written[suite] = [Path(f) for f in files]
    return written
