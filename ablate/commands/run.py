"""The work behind ``ablate run`` once typer has parsed the options (the commands, their options and help texts are
in ``ablate.cli``; ``compare``, ``calibrate`` and ``nightly`` are in :mod:`ablate.commands.gates`, ``--dry-run`` in
:mod:`ablate.commands.dry_run`): ``run`` takes its options as one typed object (:class:`RunArgs`). Imports nothing
heavy at import time: the runner and the launchers are imported when a command runs."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import importlib
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from ablate.commands.dry_run import show_plan
from ablate.commands.views import one_line
from ablate.errors import AblateError, ConfigError

# ---------------------------------------------------------------------------------------------------------------
# run


def summarize(path: Path) -> tuple[str, int]:
    """One-line summary of the rows this process wrote, and how many of them have status ``error``."""
    from ablate.store.results import current_run_id, read_rows

    try:
        rows = [r for r in read_rows(path, missing_ok=True) if r.get("run_id") == current_run_id()]
    except AblateError as exc:
        return f"results: {path} ({exc})", 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
    return f"results: {path} ({len(rows)} new rows{': ' + detail if detail else ''})", counts.get("error", 0)


def gpu_ids(text: Optional[str]) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        ids = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--gpus {text!r} is not a comma-separated list of GPU ids (e.g. 0,1,2)") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r}: ids must be distinct and >= 0")
    return ids


def _strings(values: Optional[Sequence[str]]) -> tuple[str, ...]:
    return tuple(values or ())


def _name(value: Any) -> Any:
    """A choice (an :class:`enum.Enum` typer parsed) by its name; anything else unchanged."""
    return value.value if isinstance(value, enum.Enum) else value


@dataclasses.dataclass(frozen=True)
class RunArgs:
    """Every option of ``ablate run``, as typed on the command line, grouped as ``ablate run --help`` shows them.
    Choices (``suite``, ``device``, ``launcher``, ``slurm_cluster``) are kept by name; repeatable options are tuples
    (an option not given: ``()``)."""

    # What to run
    suite: Optional[str] = None  # from --config when not given; one of the two is needed
    preset: Optional[str] = None
    overrides: tuple[str, ...] = ()  # --set
    sweep: tuple[str, ...] = ()
    grid: tuple[str, ...] = ()  # legacy, undocumented, training only: --grid AXIS=V1,V2 is --sweep model.AXIS=V1,V2
    config: Optional[Path] = None  # a sweep file (ablate.commands.config_file)
    print_config: bool = False
    seeds: Optional[int] = None  # 1 unless --seeds or the --config file says otherwise
    data: Optional[Path] = None
    tokenizer: Optional[str] = None
    model: Optional[str] = None  # --model hf:NAME_OR_PATH (extrapolation: score a pretrained checkpoint)
    device: Optional[str] = None
    plugin: tuple[str, ...] = ()
    # Where results go
    out: str = "runs"
    summary: bool = True
    # Resuming & selection
    resume: bool = True
    task: tuple[str, ...] = ()
    dry_run: bool = False
    # Logging & trackers
    progress: bool = True
    log_to: tuple[str, ...] = ()
    # Launchers (GPUs, Slurm)
    launcher: str = "local"
    gpus: Optional[str] = None
    wait: bool = True
    slurm_partition: Optional[str] = None
    slurm_time: Optional[str] = None
    slurm_gpus_per_task: Optional[int] = None
    slurm_cpus_per_task: Optional[int] = None
    slurm_mem_gb: Optional[float] = None
    slurm_array_parallelism: int = 64
    slurm_opt: tuple[str, ...] = ()
    slurm_cluster: str = "slurm"
    # Distributed training (torchrun)
    nproc_per_node: int = 1
    nnodes: str = "1"
    node_rank: Optional[int] = None
    rdzv_backend: Optional[str] = None
    rdzv_endpoint: Optional[str] = None
    rdzv_id: Optional[str] = None
    master_addr: Optional[str] = None
    master_port: Optional[int] = None

    def __post_init__(self) -> None:  # typer gives None for a repeatable option not given, and enums for choices
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "tuple[str, ...]":
                object.__setattr__(self, f.name, _strings(value))
            else:
                object.__setattr__(self, f.name, _name(value))


def run(args: RunArgs) -> int:
    """``ablate run``: run or launch the suite, print the summary tables of the results file (``args.summary``, as
    ``ablate show`` prints them) and its summary line; returns the exit code (1 when a task did not finish or a
    measurement failed). ``--dry-run`` prints the plan instead. While the suite runs, what it prints (progress bars,
    its own tables and status lines) goes to stderr: stdout carries the results only, as tqdm and lm-eval do."""
    from ablate.launchers import distributed
    from ablate.plan.runner import run_suite

    args = with_config(args)
    if args.print_config:
        print_config(args)
        return 0
    opts = run_options(args)
    if args.dry_run:
        show_plan(opts)
        return 0
    with contextlib.redirect_stdout(sys.stderr):
        if distributed.launched():  # a torchrun rank: run the suite (rank 0 writes)
            run_suite(opts)
            return 0
        from ablate.launchers.launch import launch

        res = launch(opts, launch_options(args), progress=args.progress)
    if not res.waited:
        return 0
    path = Path(res.results)
    if args.summary:
        show_summary(path)
    line, n_errors = summarize(path)
    typer.echo(line)
    if res.failed:
        for t, why in res.failed.items():
            sys.stderr.write(f"ablate: task {t} failed: {one_line(why)}\n")
        sys.stderr.write(f"ablate: {len(res.failed)} of {len(res.submitted)} task(s) did not finish; re-run the "
                         f"same command to retry them (see: ablate status {path.parent})\n")
        return 1
    if n_errors:
        sys.stderr.write(f"ablate: {n_errors} measurement(s) failed with status 'error' "
                         f"(see the reason column in {path})\n")
        return 1
    return 0


def with_config(a: RunArgs) -> RunArgs:
    """``a`` with its ``--config`` file merged in (suite, preset, seeds; the file's --set before the command line's,
    its --sweep next to them), every item of the file checked as the command line's are, a mistake named by
    ``FILE:LINE``. Without a file: ``a`` with its defaults filled in (``--suite`` is then required)."""
    from ablate.plan.runner import check_suite

    if a.config is None:
        if not a.suite:
            raise ConfigError("--suite is required (or --config FILE with suite = \"...\" in it); e.g. ablate run "
                              "--suite training")
        return dataclasses.replace(a, seeds=1 if a.seeds is None else a.seeds)
    from ablate.commands.config_file import checked, load

    rf = load(a.config)
    if a.suite and rf.suite and a.suite != rf.suite:
        raise ConfigError(f"{rf.where('suite')}: suite = {rf.suite!r}, but --suite {a.suite}; give one of them")
    suite = a.suite or rf.suite
    if not suite:
        raise ConfigError(f"{rf.path}: no suite: add suite = \"training\" (or extrapolation, latency) to the file, "
                          f"or pass --suite")
    checked(rf, lambda: check_suite(suite), key="suite" if rf.suite else None)
    if rf.preset and not a.preset:
        from ablate.plan.runner import canonical_preset

        module = importlib.import_module(f"ablate.suites.{suite}")
        checked(rf, lambda: module.resolve(canonical_preset(rf.preset), ()), key="preset")
    merged = dataclasses.replace(a, suite=suite, preset=a.preset or rf.preset,
                                 seeds=a.seeds if a.seeds is not None else (rf.seeds or 1),
                                 overrides=tuple(i.text for i in rf.sets) + a.overrides,
                                 sweep=tuple(i.text for i in rf.sweeps) + a.sweep)
    _check_config_items(merged, rf)
    return merged


def _check_config_items(a: RunArgs, rf) -> None:
    """Resolve the merged settings as the run will; when that fails, the first file item whose addition fails it
    names its line (the command line's own items keep their plain message)."""
    from ablate.commands.config_file import checked
    from ablate.plan.runner import canonical_preset, default_preset, resolve_device
    from ablate.plan.sweep import parse_sweeps, sweep_overrides

    module = importlib.import_module(f"ablate.suites.{a.suite}")
    preset = canonical_preset(a.preset) or default_preset(a.suite, resolve_device(a.device))
    for item in rf.sweeps:  # the form of each sweep item, alone
        checked(rf, lambda item=item: parse_sweeps([item.text]), item)

    def attempt(sets: Sequence[str], sweeps: Sequence[str]) -> None:
        module.resolve(preset, list(sets) + sweep_overrides(a.suite, list(sweeps), list(sets)))

    n_file_sets = len(rf.sets)
    try:
        attempt(a.overrides, a.sweep)
        return
    except ConfigError as whole:
        # items in order: the file's sets, the file's sweeps, then the command line's
        sets, sweeps = list(a.overrides), list(a.sweep)
        order = [("set", i) for i in range(len(sets))] + [("sweep", j) for j in range(len(sweeps))]
        order = ([o for o in order if o[0] == "set" and o[1] < n_file_sets]
                 + [o for o in order if o[0] == "sweep" and o[1] < len(rf.sweeps)]
                 + [o for o in order if (o[0] == "set" and o[1] >= n_file_sets)
                    or (o[0] == "sweep" and o[1] >= len(rf.sweeps))])
        for k in range(1, len(order) + 1):
            chosen = order[:k]
            try_sets = [sets[i] for kind, i in chosen if kind == "set"]
            try_sweeps = [sweeps[j] for kind, j in chosen if kind == "sweep"]
            try:
                attempt(try_sets, try_sweeps)
            except ConfigError as exc:
                kind, i = order[k - 1]
                file_item = (rf.sets[i] if kind == "set" and i < n_file_sets
                             else rf.sweeps[i] if kind == "sweep" and i < len(rf.sweeps) else None)
                if file_item is None:
                    raise whole from None
                raise ConfigError(f"{rf.where(line=file_item.line)}: {exc}") from None
        raise ConfigError(f"{rf.path}: {whole}") from None


def print_config(a: RunArgs) -> None:
    """``ablate run ... --print-config``: the run's "what to run" as a TOML sweep file on stdout (``--config`` reads
    it back to the same plan), every resolved setting as comments; checked as the run would be, nothing runs."""
    from ablate.commands.config_file import dump
    from ablate.core.config import flatten
    from ablate.plan.runner import default_preset, resolve_device

    opts = run_options(a)  # the same checks as a run
    module = importlib.import_module(f"ablate.suites.{opts.suite}")
    preset = opts.preset or default_preset(opts.suite, resolve_device(opts.device))
    resolved = flatten(module.resolve(preset, opts.overrides))
    sets = list(a.overrides)
    if a.grid:  # legacy --grid: its --set form
        from ablate.plan.grid import to_override

        sets.append(to_override(list(a.grid)))
    if a.tokenizer is not None:
        sets.append(f"data.tokenizer={a.tokenizer}")
    if a.model is not None:
        sets.append(f"pretrained={a.model}")
    typer.echo(dump(opts.suite, a.preset, opts.seeds, sets, list(a.sweep), resolved), nl=False)


def run_options(a: RunArgs):
    """The :class:`ablate.plan.runner.RunOptions` of ``a``, checked before anything runs or is written: ``--out``,
    ``--log-to`` trackers, plugins (imported now), ``--grid``/``--sweep``/``--tokenizer`` turned into ``--set``."""
    from ablate.registry.plugins import use
    from ablate.plan.runner import RunOptions, check_out_dir

    out = check_out_dir(a.out)  # empty, a file, unwritable: one line before anything is written
    log_to: Sequence[str] = a.log_to
    if log_to:  # --log-to: an unknown tracker or a missing package is one line before anything runs
        from ablate.store.livelog import parse_targets

        log_to = parse_targets(log_to, a.suite)
    plugins = use(a.plugin or None)  # imported now: a broken plugin stops the run before anything starts
    overrides = list(a.overrides)
    if a.grid:
        from ablate.plan.grid import to_override

        if a.suite != "training":
            raise ConfigError(f"--grid is for the training suite, not {a.suite!r}; use --sweep KEY=V1,V2")
        if a.sweep:
            raise ConfigError("--grid and --sweep both build the training grid; give every axis as --sweep "
                              "(--grid norm=a,b is --sweep model.norm=a,b)")
        overrides.append(to_override(list(a.grid)))
    if a.sweep:
        from ablate.plan.sweep import sweep_overrides

        overrides += sweep_overrides(a.suite, list(a.sweep), overrides)
    if a.tokenizer is not None:
        overrides.append(f"data.tokenizer={a.tokenizer}")
    if a.model is not None:
        overrides.append(model_override(a.suite, a.model))
    return RunOptions(suite=a.suite, preset=a.preset, overrides=tuple(overrides), out=out,
                      seeds=1 if a.seeds is None else a.seeds,
                      resume=a.resume, data=a.data, device=a.device, progress=a.progress, only=a.task,
                      plugins=plugins, log_to=tuple(log_to or ()),
                      summary_tables=False)  # one summary: ablate show's tables, below (none with --no-summary)


def model_override(suite: str | None, model: str) -> str:
    """``--model hf:NAME_OR_PATH`` as its ``--set pretrained=...`` (so launchers and --config carry it); checked now:
    the suite that takes it, the form, transformers installed."""
    if suite != "extrapolation":
        raise ConfigError(f"--model scores a pretrained checkpoint in the extrapolation suite, not {suite!r}; add "
                          "--suite extrapolation")
    from ablate.suites.extrapolation.pretrained import source_of, transformers

    source_of(model)
    transformers()
    return f"pretrained={str(model).strip()}"


def launch_options(a: RunArgs):
    """The :class:`ablate.launchers.launch.LaunchOptions` of ``a`` (launcher, GPUs, torchrun, Slurm)."""
    from ablate.launchers.launch import DistOptions, LaunchOptions, SlurmOptions

    return LaunchOptions(
        launcher=a.launcher, gpus=gpu_ids(a.gpus), wait=a.wait,
        dist=DistOptions(nproc_per_node=a.nproc_per_node, nnodes=a.nnodes, node_rank=a.node_rank,
                         rdzv_backend=a.rdzv_backend, rdzv_endpoint=a.rdzv_endpoint, rdzv_id=a.rdzv_id,
                         master_addr=a.master_addr, master_port=a.master_port),
        slurm=SlurmOptions(partition=a.slurm_partition, time=a.slurm_time, gpus_per_task=a.slurm_gpus_per_task,
                           cpus_per_task=a.slurm_cpus_per_task, mem_gb=a.slurm_mem_gb,
                           array_parallelism=a.slurm_array_parallelism, opts=a.slurm_opt,
                           cluster=a.slurm_cluster))


def show_summary(path: Path) -> None:
    """The summary tables of the results file ``path`` (what ``ablate show PATH`` prints), before the run's last line.
    The rows are saved whatever happens here: a file that cannot be summarised gets a one-line warning, not an
    error."""
    from ablate.reporting.show import render

    if not path.is_file():
        return
    try:
        text = render([path])
    except Exception as exc:  # noqa: BLE001  (the run is done; its exit code must not depend on the tables)
        sys.stderr.write(f"ablate: warning: no summary table for {path} ({type(exc).__name__}: "
                         f"{one_line(str(exc))}); see `ablate show {path}`\n")
        return
    typer.echo("")
    typer.echo(text, nl=False)
    typer.echo("")
