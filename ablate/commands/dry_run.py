"""``ablate run --dry-run``: the resolved configuration, the plan (which tasks are done, which the ``--task``
selection keeps) and what the rest costs. Imports nothing heavy at import time."""

from __future__ import annotations

import dataclasses
import importlib

import typer

from ablate.errors import ConfigError


def show_plan(opts) -> None:
    """``ablate run --dry-run``: the resolved configuration (every setting, after presets, --set and --sweep) and the
    plan (results file, tasks, which are done already), then exit without running or writing anything."""
    from ablate.core.config import flatten
    from ablate.store.results import done_keys
    from ablate.plan.runner import default_preset, resolve_device, suite_tasks

    device = resolve_device(opts.device)
    opts = dataclasses.replace(opts, device=device)
    path, tasks = suite_tasks(opts)  # resolves, validates and plans exactly as the run would
    planned = len(tasks)
    tasks = selected_tasks(opts, tasks)
    module = importlib.import_module(f"ablate.suites.{opts.suite}")
    preset = opts.preset or default_preset(opts.suite, device)
    cfg = module.resolve(preset, opts.overrides)
    done = done_keys(path) if opts.resume and path.exists() else set()
    typer.echo(f"suite: {opts.suite}   preset: {preset}   device: {device}   seeds: {opts.seeds}")
    typer.echo(f"results: {path}" + ("" if opts.resume else "   (--no-resume: every task runs again)"))
    typer.echo("configuration:")
    for key, value in flatten(cfg).items():
        typer.echo(f"  {key} = {value!r}")
    owed = [t for t in tasks if not (t.keys and done and set(t.keys) <= done)]
    chosen = f" (--task: {len(tasks)} of {planned})" if opts.only else ""
    typer.echo(f"plan: {len(tasks)} task(s){chosen}, {len(tasks) - len(owed)} done already, {len(owed)} to run")
    for t in tasks:
        state = "done" if t not in owed else "todo"
        rows = f"{len(t.keys)} row(s)" if t.keys is not None else "rows known when it runs"
        typer.echo(f"  [{state}] {t.id}: {t.label} ({rows})")
    if tasks and not owed and hasattr(module, "train_jobs"):
        typer.echo("estimate: nothing left to run (every task is done; --no-resume runs them again)")
    else:
        whole = f" [the whole plan: {planned} task(s), {len(owed)} to run]" if len(owed) < planned else ""
        for line in _estimate(module, cfg, opts, device):
            typer.echo(line + whole)
    typer.echo("dry run: nothing was run or written")


def selected_tasks(opts, tasks: list) -> list:
    """The tasks of the plan that ``--task`` selects (all without it). An id the plan does not have is one line
    that says how to list the valid ones: the same command without ``--task``."""
    from ablate.plan.runner import select_tasks

    if not opts.only:
        return tasks
    try:
        chosen = select_tasks([t.id for t in tasks], opts.only, f"{opts.suite} task")
    except ConfigError as exc:
        head = str(exc).split("; valid:")[0]
        raise ConfigError(f"{head}; the same command without --task lists the {len(tasks)} valid task ids (e.g. "
                          f"ablate run --suite {opts.suite} --dry-run)") from None
    return [t for t in tasks if t.id in chosen]


def _estimate(module, cfg, opts, device: str) -> list[str]:
    """The dry run's cost lines (:mod:`ablate.plan.estimate`) for a suite that lists what it trains: FLOPs of the whole
    plan and its time at the throughput earlier rows of this machine measured (results/ of the checkout, --out)."""
    from ablate.store.env import fingerprint
    from ablate.plan.estimate import estimate_lines, measured_rate, measured_where

    custom = getattr(module, "dry_run_estimate", None)  # a suite's own estimate (a pretrained model: no training)
    lines = custom(cfg, opts, device) if custom is not None else None
    if lines is not None:
        return lines
    if not hasattr(module, "train_jobs"):
        return []
    jobs, evals = module.train_jobs(cfg, list(range(opts.seeds)))
    fp = fingerprint()
    rate = measured_rate(device, where=measured_where(opts.out), gpu=fp.get("gpu"), cpu=fp.get("cpu"))
    return estimate_lines(jobs, evals, rate, device=device)
