"""What ``ablate list``, ``ablate env``, ``ablate status``, ``ablate report``, ``ablate show`` and ``ablate export`` print (the commands themselves are in ``ablate.cli``),
and the one-line messages every command shares. Imports nothing heavy at import time (no torch, no rich)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import typer

from ablate.errors import ConfigError

AXES = ("attention", "position", "norm", "activation")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def warn(msg: str) -> None:
    sys.stderr.write(f"ablate: warning: {' '.join(msg.split())}\n")


# ---------------------------------------------------------------------------------------------------------------
# list


def axis_name(name: str) -> str:
    low = name.strip().lower()
    for axis in AXES:
        if low in (axis, axis + "s") or (axis == "position" and low in ("pos", "positions")):
            return axis
    raise ConfigError(f"unknown axis {name!r}; valid: {', '.join(AXES)}")


def load_registries() -> tuple[dict[str, Any], list[str]]:
    """The registries by axis, filled by importing the variant modules; failures of built-in modules are returned,
    not raised; a plugin that cannot be loaded raises (PluginError: one line, exit 2)."""
    from ablate.registry import plugins
    from ablate.registry import keys as registry

    failures: list[str] = []
    try:
        registry.build()
    except plugins.PluginError:
        raise
    except Exception:
        for mod in ("attention", "positions", "norms", "activations"):
            try:
                importlib.import_module(f"ablate.variants.{mod}")
            except Exception as exc:
                failures.append(f"ablate.variants.{mod}: {type(exc).__name__}: {exc}")
        plugins.load_plugins()
    return dict(registry.REGISTRIES), failures


def list_variants(axis: Optional[str], as_json: bool, device: Optional[str], plugin: Optional[Sequence[str]],
                  sweeps: bool) -> None:
    """``ablate list``: the variants per axis (or, with ``sweeps``, what ``--sweep`` varies in each suite)."""
    from ablate.registry.plugins import use

    if sweeps:
        from ablate.plan.runner import SUITES
        from ablate.plan.sweep import suite_sweeps

        table = {s: suite_sweeps(s) for s in SUITES}
        if as_json:
            typer.echo(json.dumps(table, indent=2))
        else:
            for s, t in table.items():
                typer.echo(f"{s}: " + ", ".join(f"{k} -> {v}" for k, v in t.items()))
        return

    axes = [axis_name(axis)] if axis is not None else list(AXES)
    if device is not None and device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; valid: cpu, cuda")
    use(plugin, load=False)  # loaded with the built-ins just below
    registries, failures = load_registries()
    for failure in failures:
        warn(f"could not load {failure}")
    data = {a: [{**e.as_dict(device), "origin": e.origin} for e in registries[a].entries()] if a in registries
                else [] for a in axes}
    if as_json:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for a in axes:
        table = Table(title=f"{a} ({len(data[a])})", title_justify="left", show_lines=False)
        for col in ("key", "available", "reason", "description", "paper", "origin"):
            table.add_column(col, overflow="fold", no_wrap=col == "key")
        for row in data[a]:
            avail = "[green]yes[/green]" if row["available"] else "[red]no[/red]"
            # escape: reasons like "pip install 'ablate-bench[flash]'" must not be read as rich markup
            table.add_row(escape(row["key"]), avail, escape(row["reason"] or ""), escape(row["description"] or ""),
                          escape(row["paper"] or ""), escape(row["origin"] or ""))
        console.print(table)


def preset_table() -> dict[str, dict[str, Any]]:
    """Per suite: its presets (name -> what it is for, for the shared ones), the one a run uses by default on each
    device (every suite: tiny on CPU, gpu on CUDA), and the deprecated names still accepted."""
    from ablate.plan.runner import DEVICES, PRESET_ALIASES, PRESET_HELP, SUITES, default_preset, suite_presets

    return {s: {"presets": {p: PRESET_HELP.get(p, "") for p in suite_presets(s)},
                "default": {d: default_preset(s, d) for d in DEVICES},
                "deprecated_aliases": dict(PRESET_ALIASES)} for s in SUITES}


def list_presets(as_json: bool) -> None:
    """``ablate list --presets`` (and the end of ``ablate list``): the presets of each suite."""
    table = preset_table()
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    typer.echo("presets (ablate run --suite S --preset P):")
    for suite, t in table.items():
        names = ", ".join(f"{p} ({why})" if why else p for p, why in t["presets"].items())
        typer.echo(f"  {suite}: {names}")
    aliases = {old: new for t in table.values() for old, new in t["deprecated_aliases"].items()}
    if aliases:
        typer.echo("  deprecated: " + ", ".join(f"{old} = {new}" for old, new in aliases.items()))


# ---------------------------------------------------------------------------------------------------------------
# env


def show_env(as_json: bool) -> None:
    """``ablate env``: the environment fingerprint, as JSON or a table."""
    from ablate.store.env import fingerprint

    fp = fingerprint()
    if as_json:
        typer.echo(json.dumps(fp, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=True)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    for k, v in fp.items():
        table.add_row(escape(k), "-" if v is None else escape(str(v)))
    Console().print(table)


# ---------------------------------------------------------------------------------------------------------------
# status


def show_status(run_dir: Path, as_json: bool, all_tasks: bool, skip_invalid: bool, hint: str) -> None:
    """``ablate status``: the tasks of every sweep plan under ``run_dir``, as JSON or one table per plan."""
    from ablate.store.results import reading
    from ablate.store.runstate import find_plans, plan_status

    if not run_dir.exists():
        raise ConfigError(f"{run_dir} does not exist")
    plans = find_plans(run_dir)
    if not plans:
        raise ConfigError(f"no sweep plan under {run_dir} (ablate run writes one beside each results file: "
                          "X.launch/plan.json)")
    with reading(skip_invalid=skip_invalid, hint=hint):
        statuses = [plan_status(p) for p in plans]
    if as_json:
        typer.echo(json.dumps([{"results": str(s.results), "suite": s.plan.get("suite"),
                                "launcher": s.plan.get("launcher"), "counts": s.counts(),
                                "tasks": [t.as_dict() for t in s.tasks]} for s in statuses], indent=2,
                              ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    colour = {"done": "green", "running": "cyan", "failed": "red", "queued": "yellow", "missing": "yellow"}
    for s in statuses:
        counts = s.counts()
        head = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no tasks"
        console.print(f"[bold]{escape(str(s.results))}[/] ({s.plan.get('suite')}, launcher "
                      f"{s.plan.get('launcher')}, {len(s.tasks)} tasks): {head}")
        shown = [t for t in s.tasks if all_tasks or t.standing != "done"]
        if not shown:
            continue
        table = Table(show_header=True, header_style="bold")
        for col in ("task", "state", "rows", "worker", "reason"):
            table.add_column(col, overflow="fold", no_wrap=col in ("task", "state"))
        for t in shown:
            rows = f"{t.rows}/{t.owed}" if t.owed is not None else str(t.rows or "")
            table.add_row(escape(t.id), f"[{colour[t.standing]}]{t.standing}[/]", rows, escape(t.worker),
                          escape(t.reason))
        console.print(table)


# ---------------------------------------------------------------------------------------------------------------
# report, show, export


def use_plugins(plugin: Optional[Sequence[str]]) -> None:
    if plugin:
        from ablate.registry.plugins import use

        use(plugin)


def make_report(results: Sequence[Path], out: str, skip_invalid: bool, plugin: Optional[Sequence[str]],
                hint: str) -> None:
    """``ablate report``: build the report of ``results`` into ``out`` and list the files written."""
    from ablate.plan.runner import check_out_dir
    from ablate.reporting.report import build_report
    from ablate.store.results import reading

    out = check_out_dir(out)
    use_plugins(plugin)
    with reading(skip_invalid=skip_invalid, hint=hint):
        rep = build_report(results, out)
    for suite, files in rep.files.items():
        typer.echo(f"{suite}: {len(files)} file(s)")
        for f in files:
            typer.echo(f"  {f}")
    if rep.cross_run:
        typer.echo(f"across runs: {len(rep.cross_run)} file(s)")
        for f in rep.cross_run:
            typer.echo(f"  {f}")
    typer.echo(f"index: {rep.index}")


def show_results(results: Sequence[Path], all_tables: bool, skip_invalid: bool, plugin: Optional[Sequence[str]],
                 hint: str) -> None:
    """``ablate show``: the summary tables (or ``all_tables``) of ``results``, as Markdown."""
    from ablate.reporting.show import render
    from ablate.store.results import reading

    use_plugins(plugin)
    with reading(skip_invalid=skip_invalid, hint=hint):
        text = render(results, all_tables=all_tables)
    typer.echo(text, nl=False)


def export_results(results: Sequence[Path], to: str, out: Optional[str], project: str, all_rows: bool,
                   skip_invalid: bool, hint: str) -> None:
    """``ablate export``: write ``results`` as ``to`` (csv, parquet or a tracker) and say where."""
    from ablate.io.export import export
    from ablate.store.results import reading

    if out is not None and not out.strip():
        raise ConfigError("--out is empty; give a file (csv, parquet), a folder or an MLflow tracking URI")
    with reading(skip_invalid=skip_invalid, hint=hint):
        res = export(results, to, out, all_rows=all_rows, project=project)
    if res.path is not None and to in ("csv", "parquet"):
        typer.echo(f"{to}: {res.rows} rows x {res.columns} columns -> {res.path}")
        return
    typer.echo(f"{to}: {res.rows} rows in {len(res.runs)} run(s)" + (f" -> {res.path}" if res.path else ""))
    for r in res.runs:
        typer.echo(f"  {r}")
    if to == "tensorboard":
        typer.echo(f"  {res.path}/hparams: {res.sessions} HParams session(s), one per row")
        typer.echo(f"view: tensorboard --logdir {res.path}  (rows side by side: the HPARAMS tab)")
