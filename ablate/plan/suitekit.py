"""What every suite package shares: lazy loading of its two sides, and names set on the package reaching its modules.

A suite is a package of small modules in two sides: the *measurement* side (torch; imported together) and the
*report* side (pandas/matplotlib, no torch), so ``ablate report`` / ``ablate compare`` never import torch. The
package re-exports every public name of both; :func:`lazy_package` makes a name load only its side on first use, and
makes setting a name on the package (``monkeypatch.setattr(latency, "bench", fake)``) set it in each loaded module
holding the same object, so the code there sees the change, as when the suite was one module.
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Mapping, Sequence, TypeVar

from ablate.plan.tasks import Task, canonical_task_id, select_tasks, task_id

__all__ = ["lazy_package", "set_threads", "training_setup", "task_id", "canonical_task_id", "SuiteTask", "Plan",
           "Run", "Suite", "run_loop"]

_UNSET = object()


class _SuitePackage(types.ModuleType):
    _sides: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        old = getattr(self, name, _UNSET)
        super().__setattr__(name, value)
        if old is _UNSET or isinstance(old, types.ModuleType):
            return
        for m in self._sides:
            module = sys.modules.get(f"{self.__name__}.{m}")
            if module is not None and module.__dict__.get(name, _UNSET) is old:
                setattr(module, name, value)


def lazy_package(name: str, measure: Sequence[str], report: Sequence[str],
                 exports: Mapping[str, Sequence[str]]) -> None:
    """Make package ``name`` resolve ``exports`` (module -> names it gives the package) on first use, loading the
    whole side (``measure`` or ``report`` modules) the name's module belongs to."""
    package = sys.modules[name]
    home = {n: module for module, names in exports.items() for n in names}
    measure, report = tuple(measure), tuple(report)

    def __getattr__(attr: str) -> Any:
        module = home.get(attr)
        if module is None:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        for m in measure if module in measure else report:
            importlib.import_module(f"{name}.{m}")
        value = getattr(sys.modules[f"{name}.{module}"], attr)
        package.__dict__[attr] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(package.__dict__) | set(home))

    package.__dict__.update(__getattr__=__getattr__, __dir__=__dir__, _HOME=home)
    package.__class__ = type("SuitePackage", (_SuitePackage,), {"_sides": measure + report})


def set_threads(device: str, cpu_threads: int, *, tf32: bool | None = None) -> int:
    """Apply a suite's torch settings for the run and return the thread count to restore afterwards: on CPU
    ``cpu_threads`` torch threads (0: leave torch's default); on CUDA TF32 matmuls on or off when ``tf32`` says
    (the suites that train allow them, the latency suite keeps fp32 fp32)."""
    import torch  # lazy: the report side imports this module

    if str(device).startswith("cuda") and tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    before = torch.get_num_threads()
    if str(device) == "cpu" and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    return before


def training_setup(opts: Any, resolve: Any) -> tuple[str, str, Any, Any]:
    """The preamble every suite that trains shares: ``(device, preset, cfg, corpus)`` -- the device resolved, the
    preset defaulted (:func:`ablate.plan.runner.default_preset`), the config resolved with ``--set`` (``resolve(preset,
    overrides)``), bf16 autocast asked on CPU refused, and the corpus loaded (``cfg`` updated with its data)."""
    from ablate.io.data import corpus_for
    from ablate.plan.runner import default_preset, resolve_device
    from ablate.core.train import refuse_cpu_amp

    device = resolve_device(opts.device)
    preset = opts.preset or default_preset(opts.suite, device)
    cfg = resolve(preset, opts.overrides)
    refuse_cpu_amp(cfg.train, opts.overrides, device)
    cfg, corpus = corpus_for(cfg, opts.data)
    return device, preset, cfg, corpus


# ---------------------------------------------------------------------------------------------------------------
# The suite interface and the one run loop: plan -> tasks -> measure -> rows -> report.
#
# A suite subclasses :class:`Suite` and supplies its plan (``plan(opts)``: config, data, tasks and the rows each
# owes), its measurement (``measure(run, task, todo)``: write the rows of ``todo`` through ``run.rows``) and, on the
# report side, its ``report`` (suites/<name>/reporting.py, torch-free). :func:`run_loop` owns everything else: the
# torchrun refusal, task selection (``--task``), resume (rows already stored are skipped), claims of tasks (two runs
# into one ``--out`` share the work), the status row of a failure (oom / unsupported / unavailable / error: the
# sweep goes on), progress, ``--log-to`` trackers and torch thread settings. The plan is made once per run.

@dataclass
class SuiteTask:
    """One task of a plan: what a launcher hands to a worker (``--task <id>``) and what :meth:`Suite.measure` gets.

    ``rows``: the suite's own description of each row the task owes; ``keys``: the row key of each (parallel to
    ``rows``; None when not known ahead: the task is done when its worker finished). ``run_name`` / ``config``: the
    ``--log-to`` tracker run of the task and the config its rows record (None: no tracker run). ``work``: the suite's
    own description of the task (a job, a grid point and seed, a part)."""

    id: str
    label: str = ""
    rows: tuple[Any, ...] = ()
    keys: tuple[dict, ...] | None = None
    run_name: str | None = None
    config: Any = None
    work: Any = None

    def launcher_task(self) -> Any:
        """The :class:`ablate.plan.tasks.Task` a launcher records in its plan."""
        from ablate.store.results import row_key

        return Task(self.id, None if self.keys is None else tuple(row_key(k) for k in self.keys), self.label)


C = TypeVar("C")


@dataclass
class Plan(Generic[C]):
    """What a suite's ``plan`` returns, made once per run: the resolved device, preset and config, the data, the
    results file, the tasks in run order, and anything else its measurement needs (``extra``)."""

    device: str
    preset: str
    cfg: C
    results: Path
    tasks: list[SuiteTask]
    corpus: Any = None
    cpu_threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run(Generic[C]):
    """What a measurement sees of the run. Rows go through ``rows`` (the writer, tapped by the current task's tracker
    run); ``progress`` / ``overall`` are the progress bar and its overall task (None: no progress); ``on_log`` is the
    current tracker run's training-curve callback; ``state`` holds what the suite's ``begin`` prepared."""

    opts: Any
    plan: Plan[C]
    writer: Any
    dist: Any
    live: Any = None
    progress: Any = None
    overall: Any = None
    claims: Any = None
    writers: Any = None  # this run among the live writers of --out (ablate.store.writers): contended timings
    rows: Any = None
    on_log: Any = None
    measured: int = 0  # what measure() returned, summed (models trained; tasks run, failed ones too)
    left: int = 0  # tasks left when the suite said stop (a time limit)
    t_start: float = field(default_factory=time.perf_counter)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg(self) -> C:
        return self.plan.cfg

    @property
    def device(self) -> str:
        return self.plan.device

    def advance(self, n: int = 1, info: str | None = None) -> None:
        """Advance the overall progress by ``n`` rows (and show ``info``)."""
        if self.progress is not None and self.overall is not None:
            self.progress.update(self.overall, advance=n, **({} if info is None else {"info": info}))


class Suite(ABC, Generic[C]):
    """A suite's part of the run: its plan, its measurement, its summary. See :func:`run_loop`."""

    name: ClassVar[str]
    title: ClassVar[str] = ""  # the progress bar's description
    tf32: ClassVar[bool | None] = True  # TF32 matmuls on CUDA (None: leave torch's setting)
    torchrun: ClassVar[str | None] = None  # None: runs under torchrun (DDP, rank 0 writes); else the refusal
    whole_run_claims: ClassVar[bool] = False  # claim every task at the start, measure them in one measure_claimed()

    @abstractmethod
    def plan(self, opts: Any) -> Plan[C]:
        """Resolve config and data, check the plan before any compute, and list its tasks (once per run)."""

    def begin(self, run: Run[C]) -> None:
        """Prepare the measurement (after the writer opened, before the first task); keep results in ``run.state``."""

    def measure(self, run: Run[C], task: SuiteTask, todo: list[Any]) -> int | None:
        """Measure the items of ``task.rows`` still to do and write their rows through ``run.rows``; returns what it
        counts (``run.measured``; None: 1). An exception becomes a status row for each row it left unwritten."""
        raise NotImplementedError

    def measure_claimed(self, run: Run[C], tasks: list[SuiteTask]) -> None:
        """``whole_run_claims`` suites: measure the claimed tasks together (resume per row is the suite's)."""
        raise NotImplementedError

    def failure_fields(self, run: Run[C], task: SuiteTask, item: Any) -> dict[str, Any]:
        """The metrics of the status row written for ``item`` when its measurement raised."""
        return {"value": None}

    def check_distributed(self, run_plan: Plan[C], dist: Any) -> None:
        """Refuse (ConfigError) settings a torchrun run cannot honour."""

    def stop(self, run: Run[C]) -> bool:
        """True to stop before the next task (a time limit); the tasks left are counted in ``run.left``."""
        return False

    def summary(self, run: Run[C]) -> None:
        """Print the run's summary (rank 0)."""

    # the module-level entry points the runner calls (ablate.plan.runner: ``tasks(opts)``, ``run(opts)``)
    def tasks(self, opts: Any) -> tuple[Path, list[Any]]:
        """(results file, the launcher tasks of the plan); the plan is kept for this run's :func:`run_loop`."""
        plan = self.plan(opts)
        _remember(opts, plan)
        return plan.results, [t.launcher_task() for t in plan.tasks]

    def run(self, opts: Any) -> Path:
        return run_loop(self, opts)


_PLANNED: list[tuple[Any, Plan]] = []  # (opts, plan): the plan tasks() made, for the run of the same opts


def _remember(opts: Any, plan: Plan) -> None:
    _PLANNED[:] = [(opts, plan)]


def _recall(opts: Any) -> Plan | None:
    """The plan made for these very options (``tasks`` then ``run`` in one process), once; else None."""
    if _PLANNED and _PLANNED[0][0] is opts:
        return _PLANNED.pop()[1]
    _PLANNED.clear()
    return None


class _Recorder:
    """A writer that remembers the row keys written through it (the rows a failed measurement left are the rest)."""

    def __init__(self, writer: Any):
        self._writer, self.written = writer, set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    def write(self, *args: Any, **kwargs: Any) -> Any:
        row = self._writer.write(*args, **kwargs)
        self.written.add(row.get("row_key") if isinstance(row, dict) else None)
        return row

    def write_exception(self, *args: Any, **kwargs: Any) -> Any:
        row = self._writer.write_exception(*args, **kwargs)
        self.written.add(row.get("row_key") if isinstance(row, dict) else None)
        return row


class _Counted:
    """A progress bar that counts how far the overall task was advanced (a measurement may advance it per row)."""

    def __init__(self, progress: Any, overall: Any):
        self._progress, self._overall, self.advanced = progress, overall, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._progress, name)

    def update(self, task: Any, *args: Any, **kwargs: Any) -> None:
        if task == self._overall:
            self.advanced += int(kwargs.get("advance") or 0)
        self._progress.update(task, *args, **kwargs)


def run_loop(suite: Suite, opts: Any) -> Path:
    """Run ``suite`` as ``opts`` (an :class:`ablate.plan.runner.RunOptions`, device resolved) asks; returns the
    results file. See the comment above :func:`task_id`."""
    import torch

    from ablate.errors import ConfigError
    from ablate.launchers import distributed
    from ablate.store.livelog import open_live
    from ablate.store.results import ResultWriter
    from ablate.store.runstate import Claims
    from ablate.store.writers import Writers

    if suite.torchrun is not None and distributed.launched():
        raise ConfigError(suite.torchrun)
    t_start = time.perf_counter()
    plan = _recall(opts) or suite.plan(opts)
    dist = distributed.init(plan.device) if suite.torchrun is None else distributed.current()
    if dist.enabled:
        suite.check_distributed(plan, dist)
    chosen = select_tasks([t.id for t in plan.tasks], opts.only, f"{suite.name} task")
    tasks = [t for t in plan.tasks if t.id in chosen]
    writer = ResultWriter(plan.results, suite.name, resume=opts.resume, shard=opts.shard, enabled=dist.is_main)
    live = open_live(opts, suite.name, plan.device, plan.preset) if dist.is_main else None
    run = Run(opts, plan, writer, dist, live=live, t_start=t_start,
              claims=None if dist.enabled else Claims(plan.results))  # DDP ranks are one run: rank 0 decides
    threads_before = set_threads(plan.device, plan.cpu_threads, tf32=suite.tf32)
    if dist.is_main:
        run.writers = Writers(opts.out, plan.device, per_row=suite.whole_run_claims).start()
    try:
        if run.writers is not None:
            _share_cores(run)
        suite.begin(run)
        if suite.whole_run_claims:
            _claimed(suite, run, tasks)
        else:
            _loop(suite, run, tasks)
    finally:
        if run.claims is not None:
            run.claims.release_all()
        if run.writers is not None:
            run.writers.stop()
        torch.set_num_threads(threads_before)
    if run.claims is not None and run.claims.skipped:
        who = run.claims.skipped
        sys.stderr.write(f"ablate: {len(who)} task(s) were being run by another process into the same --out and "
                         f"were left to it: " + ", ".join(f"{t} ({w})" for t, w in who.items()) + "\n")
    if dist.is_main:
        suite.summary(run)
    if dist.enabled:
        distributed.shutdown()
    return plan.results


def _share_cores(run: Run) -> None:
    """A CPU run asked for every core (``cpu_threads`` 0) that finds other runs writing into its ``--out`` takes its
    share of the cores, and says so; its rows are marked contended either way (``env.contended``)."""
    import torch

    from ablate.store.writers import cpu_count

    others = run.writers.seen
    if run.device != "cpu" or run.plan.cpu_threads > 0 or not others:
        return
    share = max(1, cpu_count() // (len(others) + 1))
    if share < torch.get_num_threads():
        torch.set_num_threads(share)
    sys.stderr.write(f"ablate: {len(others)} other run(s) write into {run.opts.out} ({', '.join(sorted(others))}): "
                     f"this run uses {torch.get_num_threads()} of {cpu_count()} CPU threads, and its timings are "
                     "marked contended (env.contended), which ablate compare does not gate on\n")


def _claimed(suite: Suite, run: Run, tasks: list[SuiteTask]) -> None:
    """Claim every task first (the suite measures them together), then measure the ones this run holds."""
    mine = [t for t in tasks if run.claims.claim(t.id)]
    if not mine and tasks:
        sys.stderr.write(f"ablate: every {suite.name} task is being run by another process into "
                         f"{run.plan.results} ({', '.join(sorted(set(run.claims.skipped.values())))}); "
                         "nothing left to run here\n")
        run.claims.skipped.clear()  # said
        return
    suite.measure_claimed(run, mine)


def _loop(suite: Suite, run: Run, tasks: list[SuiteTask]) -> None:
    """Every task in plan order: its rows not yet stored, claimed, measured; a failure is a status row per row."""
    from ablate.launchers import distributed
    from ablate.plan.progress import start_progress
    from ablate.store.results import done_keys, row_key

    writer, dist = run.writer, run.dist
    todo: list[list[int]] = [[i for i, k in enumerate(t.keys or ()) if not writer.done(k)] for t in tasks]
    # rank 0's view of what is done decides for every rank (the others must measure the same tasks)
    pending = distributed.broadcast([n for n, idx in enumerate(todo) if idx], dist)
    prog = start_progress(run.opts.progress and dist.is_main)
    if prog is not None:
        run.overall = prog.add_task(suite.title or suite.name, total=sum(len(t.keys or ()) for t in tasks),
                                    info="")
        run.progress = _Counted(prog, run.overall)
        run.advance(sum(len(t.keys or ()) for t in tasks) - sum(len(todo[n]) for n in pending))
    try:
        for count, n in enumerate(pending):
            task, idx = tasks[n], todo[n]
            if distributed.broadcast(suite.stop(run), dist):
                run.left = len(pending) - count
                break
            run.advance(0, task.label or task.id)
            if run.claims is not None:  # two runs into one --out: each task is measured by one of them
                if not run.claims.claim(task.id):
                    run.advance(len(idx))
                    continue
                if run.opts.resume:  # the other run may have finished rows between our start and our claim
                    finished = done_keys(run.plan.results)
                    idx = [i for i in idx if row_key(task.keys[i]) not in finished]
                    run.advance(len(todo[n]) - len(idx))
            try:
                if idx:
                    if run.writers is not None:
                        run.writers.begin_task()
                    _measure(suite, run, task, idx)
            finally:
                if run.claims is not None:
                    run.claims.release(task.id)
    finally:
        if prog is not None:
            prog.stop()


def _measure(suite: Suite, run: Run, task: SuiteTask, idx: list[int]) -> None:
    import torch

    from ablate.store.atomic import is_storage_error, storage_error
    from ablate.store.livelog import model_run
    from ablate.store.results import row_key, status_from_exception

    before = run.progress.advanced if run.progress is not None else 0
    with model_run(run.live if task.run_name else None, task.run_name or "", config=task.config,
                   keys=list(task.keys or ())) as lrun:
        rows = _Recorder(lrun.tap(run.writer))
        run.rows, run.on_log = rows, lrun.on_log
        try:
            got = suite.measure(run, task, [task.rows[i] for i in idx])
            run.measured += 1 if got is None else int(got)
        except Exception as exc:  # OOM, unsupported, a kernel that fails: status rows, and the sweep goes on
            if is_storage_error(exc):  # a full disk / read-only file is not a measurement: stop, in one line
                raise storage_error(exc) from None
            run.measured += 1
            if status_from_exception(exc)[0] == "oom" and run.device == "cuda":
                torch.cuda.empty_cache()
            for i in idx:
                if row_key(task.keys[i]) not in rows.written:
                    rows.write_exception(exc, task.keys[i], suite.failure_fields(run, task, task.rows[i]),
                                         config=task.config)
        finally:
            run.rows, run.on_log = None, None
    if run.device == "cuda":
        torch.cuda.empty_cache()
    if run.progress is not None:  # rows the measurement did not count itself
        run.advance(max(0, len(idx) - (run.progress.advanced - before)))
