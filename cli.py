"""The ``ablate`` command line (installed as ``ablate.cli``; console script ``ablate = ablate.cli:main``).

    ablate list [--axis A] [--format table|json]     registered variants, whether they run here, where they come from
    ablate env [--format table|json]                 the environment fingerprint stored with every row
    ablate run --suite S [--preset P] [--set k=v]... run a suite (resumes by default)
        [--launcher local|gpus|slurm] [--nproc-per-node N]     ... spread over GPUs / Slurm, or DDP via torchrun
    ablate status RUN_DIR                            done / running / failed / missing tasks of a sweep
    ablate report RESULTS... --out DIR               tables and figures from results files/folders
    ablate show RESULTS... [--all]                   the summary tables of results, printed as Markdown
    ablate export RESULTS... --to FORMAT [--out P]   parquet, csv, or a tracker: wandb, mlflow, tensorboard
    ablate compare BASELINE NEW [--fail-if E]...     regressions between two sets of results (exit 1)
    ablate nightly [--write-baseline]                the nightly GPU CI steps, runnable locally
    ablate version

``--plugin MODULE_OR_FILE`` (run, list, report; repeatable) and ``$ABLATE_PLUGINS`` add third-party variants
(ablate.plugins, docs/adding-a-variant.md).

User errors print one line ``ablate: error: <message>`` on stderr and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import enum
import json
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, List, Optional

import typer

try:  # typer >= 0.2x vendors click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover - typer on top of the click package
    from click.exceptions import ClickException as _ClickException  # type: ignore[no-redef]

from ablate import __version__
from ablate.errors import AblateError, ConfigError, Terminated

AXES = ("attention", "position", "norm", "activation")
INTERRUPTED = "interrupted; finished rows are saved, re-run to resume"
TERMINATED = "terminated (SIGTERM); finished rows are saved, re-run the same command to resume"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it

app = typer.Typer(
    name="ablate",
    help="Benchmark and ablation harness for Transformer components.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Format(str, enum.Enum):
    table = "table"
    json = "json"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"ablate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Benchmark and ablation harness for Transformer components (attention, positions, norms, activations)."""


# ---------------------------------------------------------------------------------------------------------------
# list


def _axis(name: str) -> str:
    low = name.strip().lower()
    for axis in AXES:
        if low in (axis, axis + "s") or (axis == "position" and low in ("pos", "positions")):
            return axis
    raise ConfigError(f"unknown axis {name!r}; valid: {', '.join(AXES)}")


def _load_registries() -> tuple[dict[str, Any], list[str]]:
    """The registries by axis, filled by importing the variant modules; failures of built-in modules are returned,
    not raised; a plugin that cannot be loaded raises (PluginError: one line, exit 2)."""
    import importlib

    from ablate import plugins, registry

    failures: list[str] = []
    try:
        registry.load_all()
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


_PLUGIN_HELP = ("Also load the variants registered by this plugin: a module name or a .py file (repeatable; added to "
                "$ABLATE_PLUGINS, so workers load it too). See docs/adding-a-variant.md.")


def _warn(msg: str) -> None:
    sys.stderr.write(f"ablate: warning: {' '.join(msg.split())}\n")


@app.command("list")
def list_variants(
    axis: Optional[str] = typer.Option(None, "--axis", "-a", help=f"Only this axis: {', '.join(AXES)}."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (human) or json (machine)."),
    device: Optional[str] = typer.Option(None, "--device", help="Check availability for cpu or cuda "
                                                                 "(default: this machine's best device)."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=_PLUGIN_HELP),
    sweeps: bool = typer.Option(False, "--sweeps", help="Instead: what `ablate run --sweep KEY=...` varies in "
                                "each suite (KEY -> the suite setting that takes the values)."),
) -> None:
    """List registered variants per axis, with whether each can run here, why not, and where each comes from
    (origin: ablate, entry point DIST:NAME, plugin MODULE_OR_FILE)."""
    from ablate.plugins import use

    if sweeps:
        from ablate.runner import SUITES
        from ablate.sweep import suite_sweeps

        table = {s: suite_sweeps(s) for s in SUITES}
        if fmt == Format.json:
            typer.echo(json.dumps(table, indent=2))
        else:
            for s, t in table.items():
                typer.echo(f"{s}: " + ", ".join(f"{k} -> {v}" for k, v in t.items()))
        return

    axes = [_axis(axis)] if axis is not None else list(AXES)
    if device is not None and device not in ("cpu", "cuda"):
        raise ConfigError(f"unknown device {device!r}; valid: cpu, cuda")
    use(plugin, load=False)  # loaded with the built-ins just below
    registries, failures = _load_registries()
    for failure in failures:
        _warn(f"could not load {failure}")
    data = {a: [{**e.as_dict(device), "origin": e.origin} for e in registries[a].entries()] if a in registries
                else [] for a in axes}
    if fmt == Format.json:
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
            # escape: reasons like "pip install 'ablate[flash]'" must not be read as rich markup
            table.add_row(escape(row["key"]), avail, escape(row["reason"] or ""), escape(row["description"] or ""),
                          escape(row["paper"] or ""), escape(row["origin"] or ""))
        console.print(table)


# ---------------------------------------------------------------------------------------------------------------
# env


@app.command("env")
def env_cmd(
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (human) or json (machine)."),
) -> None:
    """Show the environment fingerprint recorded (as env.* columns) with every result row."""
    from ablate.env import fingerprint

    fp = fingerprint()
    if fmt == Format.json:
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
# run


def _summarize(path: Path) -> tuple[str, int]:
    """One-line summary of the rows this process wrote, and how many of them have status ``error``."""
    from ablate.results import current_run_id, read_rows

    try:
        rows = [r for r in read_rows(path, missing_ok=True) if r.get("run_id") == current_run_id()]
    except AblateError as exc:
        return f"results: {path} ({exc})", 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
    return f"results: {path} ({len(rows)} new rows{': ' + detail if detail else ''})", counts.get("error", 0)


class Launcher(str, enum.Enum):
    local = "local"
    gpus = "gpus"
    slurm = "slurm"


_SCALE = "Scale-out (docs/scale-out.md)"


@app.command("run")
def run_cmd(
    suite: str = typer.Option(..., "--suite", "-s", help="training, extrapolation or latency."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="Named preset of the suite."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a setting: key=value "
                                                  "(dotted keys reach nested settings); repeatable."),
    sweep: Optional[List[str]] = typer.Option(None, "--sweep", help="Vary a setting: KEY=V1,V2 (repeatable), the "
                                              "same in every suite, e.g. --sweep model.position=rope,alibi "
                                              "(extrapolation, latency), --sweep model.attention=sdpa,flex "
                                              "(latency), --sweep model.norm=layernorm,rmsnorm (training: "
                                              "factorial over model.* and train.*); `ablate list --sweeps` "
                                              "shows what each suite sweeps."),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="Training only, the same as --sweep "
                                             "model.AXIS=V1,V2 (kept for old command lines)."),
    seeds: int = typer.Option(1, "--seeds", help="Number of seeds (0..K-1)."),
    out: str = typer.Option("runs", "--out", "-o", help="Folder for the results (JSONL)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data for suites that train: a text file or folder, "
                                        "a .bin token file, a datasets save_to_disk folder, or hf:NAME[:CONFIG] "
                                        "from the local Hugging Face cache (docs/data.md)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="bytes (default), the path of a "
                                            "tokenizer.json, or bpe:N (byte-level BPE of N tokens trained on the "
                                            "training split); same as --set data.tokenizer=... (docs/data.md)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if visible)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip measurements already in the results "
                                "(with a launcher: submit only the tasks that are not done)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
    task: Optional[List[str]] = typer.Option(None, "--task", help="Run only this task of the sweep (training: "
                                             "POINT@sSEED; see `ablate status`); repeatable."),
    launcher: Launcher = typer.Option(Launcher.local, "--launcher", rich_help_panel=_SCALE,
                                      help="local: this process; gpus: one worker per visible GPU; slurm: a "
                                           "submitit job array, one task per element."),
    gpus: Optional[str] = typer.Option(None, "--gpus", rich_help_panel=_SCALE,
                                       help="--launcher gpus: GPU ids to use, e.g. 0,1,2 (default: all visible)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", rich_help_panel=_SCALE,
                              help="--launcher slurm: wait for the jobs (--no-wait: submit and return)."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", rich_help_panel=_SCALE,
                                       help="Training: DDP processes per node, started by torchrun (each grid "
                                            "point trains on all of them; same global batch)."),
    nnodes: str = typer.Option("1", "--nnodes", rich_help_panel=_SCALE, help="torchrun: nodes (N or MIN:MAX)."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", rich_help_panel=_SCALE, help="torchrun."),
    rdzv_backend: Optional[str] = typer.Option(None, "--rdzv-backend", rich_help_panel=_SCALE,
                                               help="torchrun (e.g. c10d)."),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", rich_help_panel=_SCALE,
                                                help="torchrun: HOST:PORT of the rendezvous."),
    rdzv_id: Optional[str] = typer.Option(None, "--rdzv-id", rich_help_panel=_SCALE, help="torchrun."),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", rich_help_panel=_SCALE, help="torchrun."),
    master_port: Optional[int] = typer.Option(None, "--master-port", rich_help_panel=_SCALE, help="torchrun."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", rich_help_panel=_SCALE),
    slurm_time: Optional[str] = typer.Option(None, "--slurm-time", rich_help_panel=_SCALE,
                                             help="Per task: minutes or [D-]HH:MM[:SS] (default 4:00:00)."),
    slurm_gpus_per_task: Optional[int] = typer.Option(None, "--slurm-gpus-per-task", rich_help_panel=_SCALE,
                                                      help="Default: 1 for a CUDA sweep, 0 for a CPU one."),
    slurm_cpus_per_task: Optional[int] = typer.Option(None, "--slurm-cpus-per-task", rich_help_panel=_SCALE),
    slurm_mem_gb: Optional[float] = typer.Option(None, "--slurm-mem-gb", rich_help_panel=_SCALE),
    slurm_array_parallelism: int = typer.Option(64, "--slurm-array-parallelism", rich_help_panel=_SCALE,
                                                help="Array elements running at once."),
    slurm_opt: Optional[List[str]] = typer.Option(None, "--slurm-opt", rich_help_panel=_SCALE,
                                                  help="Any other sbatch option, key=value (account=..., qos=...); "
                                                       "repeatable."),
    slurm_cluster: str = typer.Option("slurm", "--slurm-cluster", rich_help_panel=_SCALE,
                                      help="submitit executor: slurm, or local (same code path on this machine)."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=_PLUGIN_HELP),
) -> None:
    """Run a suite; rows are appended to OUT as they finish, so an interrupted run resumes where it stopped."""
    from ablate import distributed
    from ablate.plugins import use
    from ablate.runner import RunOptions, run_suite

    from ablate.runner import check_out_dir

    out = check_out_dir(out)  # empty, a file, unwritable: one line before anything is written
    plugins = use(plugin)  # imported now: a broken plugin stops the run before anything starts
    overrides = list(overrides or ())
    if grid:
        from ablate.grid import to_override

        if suite != "training":
            raise ConfigError(f"--grid is for the training suite, not {suite!r}; use --sweep KEY=V1,V2")
        if sweep:
            raise ConfigError("--grid and --sweep both build the training grid; give every axis as --sweep "
                              "(--grid norm=a,b is --sweep model.norm=a,b)")
        overrides.append(to_override(grid))
    if sweep:
        from ablate.sweep import sweep_overrides

        overrides += sweep_overrides(suite, sweep, overrides)
    if tokenizer is not None:
        overrides.append(f"data.tokenizer={tokenizer}")
    opts = RunOptions(suite=suite, preset=preset, overrides=tuple(overrides), out=out, seeds=seeds,
                      resume=resume, data=data, device=device, progress=progress, only=tuple(task or ()),
                      plugins=plugins)
    if distributed.launched():  # a torchrun rank: run the suite (rank 0 writes)
        run_suite(opts)
        return
    from ablate.launch import DistOptions, LaunchOptions, SlurmOptions, launch

    lo = LaunchOptions(
        launcher=launcher.value, gpus=_gpu_ids(gpus), wait=wait,
        dist=DistOptions(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                         rdzv_backend=rdzv_backend, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id,
                         master_addr=master_addr, master_port=master_port),
        slurm=SlurmOptions(partition=slurm_partition, time=slurm_time, gpus_per_task=slurm_gpus_per_task,
                           cpus_per_task=slurm_cpus_per_task, mem_gb=slurm_mem_gb,
                           array_parallelism=slurm_array_parallelism, opts=tuple(slurm_opt or ()),
                           cluster=slurm_cluster))
    res = launch(opts, lo, progress=progress)
    if not res.waited:
        return
    path = Path(res.results)
    summary, n_errors = _summarize(path)
    typer.echo(summary)
    if res.failed:
        for t, why in res.failed.items():
            sys.stderr.write(f"ablate: task {t} failed: {_one_line(why)}\n")
        sys.stderr.write(f"ablate: {len(res.failed)} of {len(res.submitted)} task(s) did not finish; re-run the "
                         f"same command to retry them (see: ablate status {path.parent})\n")
        raise typer.Exit(1)
    if n_errors:
        sys.stderr.write(f"ablate: {n_errors} measurement(s) failed with status 'error' "
                         f"(see the reason column in {path})\n")
        raise typer.Exit(1)


def _gpu_ids(text: Optional[str]) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        ids = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--gpus {text!r} is not a comma-separated list of GPU ids (e.g. 0,1,2)") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r}: ids must be distinct and >= 0")
    return ids


# ---------------------------------------------------------------------------------------------------------------
# status

_SKIP_HELP = ("Leave out rows that break the results schema (docs/results-schema.md), with a warning saying how many "
              "were skipped in which file (default: such a row is an error).")
_SKIP_HINT = "fix or remove that line, or pass --skip-invalid to leave invalid rows out"


@app.command("status")
def status_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder (--out of `ablate run`) or one of its results files."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (human) or json (machine)."),
    all_tasks: bool = typer.Option(False, "--all", help="List done tasks too (default: only the others)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=_SKIP_HELP),
) -> None:
    """Done / running / failed / queued / missing tasks of every sweep launched into RUN_DIR, with the reasons."""
    from ablate.results import reading
    from ablate.runstate import find_plans, plan_status

    if not run_dir.exists():
        raise ConfigError(f"{run_dir} does not exist")
    plans = find_plans(run_dir)
    if not plans:
        raise ConfigError(f"no sweep plan under {run_dir} (ablate run writes one beside each results file: "
                          "X.launch/plan.json)")
    with reading(skip_invalid=skip_invalid, hint=_SKIP_HINT):
        statuses = [plan_status(p) for p in plans]
    if fmt == Format.json:
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
# report


@app.command("report")
def report_cmd(
    results: List[Path] = typer.Argument(..., help="Results files (.jsonl) or folders of them."),
    out: str = typer.Option("reports", "--out", "-o", help="Folder for tables and figures."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=_SKIP_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="Load this plugin's variants first, so the "
                                               "report knows their registered facts (GLU, kind, order); "
                                               "repeatable, as in `ablate run`."),
) -> None:
    """Tables (Markdown + LaTeX) and figures (PNG + SVG) from results alone, one set per suite present, a
    cross-run view when the results span several commits or machines, and OUT/index.md linking them."""
    from ablate.report import build_report
    from ablate.results import reading
    from ablate.runner import check_out_dir

    out = check_out_dir(out)
    if plugin:
        from ablate.plugins import use

        use(plugin)

    with reading(skip_invalid=skip_invalid, hint=_SKIP_HINT):
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


# ---------------------------------------------------------------------------------------------------------------
# show


@app.command("show")
def show_cmd(
    results: List[Path] = typer.Argument(..., help="Results files (.jsonl) or folders of them."),
    all_tables: bool = typer.Option(False, "--all", help="Every table of the report, not only the summary ones."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=_SKIP_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="Load this plugin's variants first, as in "
                                               "`ablate report`; repeatable."),
) -> None:
    """Print the summary tables of results files as Markdown: the tables `ablate report` writes, nothing written."""
    from ablate.results import reading
    from ablate.show import render

    if plugin:
        from ablate.plugins import use

        use(plugin)
    with reading(skip_invalid=skip_invalid, hint=_SKIP_HINT):
        text = render(results, all_tables=all_tables)
    typer.echo(text, nl=False)


# ---------------------------------------------------------------------------------------------------------------
# export


class ExportTarget(str, enum.Enum):
    parquet = "parquet"
    csv = "csv"
    wandb = "wandb"
    mlflow = "mlflow"
    tensorboard = "tensorboard"


@app.command("export")
def export_cmd(
    results: List[Path] = typer.Argument(..., help="Results files (.jsonl) or folders of them."),
    to: ExportTarget = typer.Option(..., "--to", "-t", help="parquet or csv (one column per field), or a tracker: "
                                    "wandb, mlflow, tensorboard (one run per suite and run id)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="csv/parquet: the file (default ./<results "
                                      "name>.<ext>); tensorboard: the log folder (default runs/tensorboard); "
                                      "wandb: its dir; mlflow: tracking URI or folder (default: MLflow's)."),
    project: str = typer.Option("ablate", "--project", help="W&B project / MLflow experiment."),
    all_rows: bool = typer.Option(False, "--all-rows", help="Every stored row, also those re-measured later "
                                  "(default: the newest row per measurement, as the reports use)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=_SKIP_HELP),
) -> None:
    """Export results to Parquet/CSV or an experiment tracker (README, "Export"; optional extras parquet, wandb,
    mlflow, tensorboard)."""
    from ablate.export import export
    from ablate.results import reading

    if out is not None and not out.strip():
        raise ConfigError("--out is empty; give a file (csv, parquet), a folder or an MLflow tracking URI")
    with reading(skip_invalid=skip_invalid, hint=_SKIP_HINT):
        res = export(results, to.value, out, all_rows=all_rows, project=project)
    if res.path is not None and to.value in ("csv", "parquet"):
        typer.echo(f"{to.value}: {res.rows} rows x {res.columns} columns -> {res.path}")
        return
    typer.echo(f"{to.value}: {res.rows} rows in {len(res.runs)} run(s)" + (f" -> {res.path}" if res.path else ""))
    for r in res.runs:
        typer.echo(f"  {r}")
    if to.value == "tensorboard":
        typer.echo(f"view: tensorboard --logdir {res.path}")


# ---------------------------------------------------------------------------------------------------------------
# compare


from ablate.compare import DEFAULT_FAIL_IF as _DEFAULT_FAIL_IF  # noqa: E402  (light: no torch, no pandas)


class CompareFormat(str, enum.Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


@app.command("compare")
def compare_cmd(
    baseline: Path = typer.Argument(..., help="Baseline results: a .jsonl file or a folder of them."),
    new: Path = typer.Argument(..., help="New results: a .jsonl file or a folder of them."),
    fail_if: Optional[List[str]] = typer.Option(
        None, "--fail-if", help="METRIC:AMOUNT% or METRIC:AMOUNT (pytest-benchmark syntax, e.g. median:5%, "
                                "time_ms:10%, tflops:10%, ppl:2%); repeatable. Default: "
                                + ", ".join(_DEFAULT_FAIL_IF) + "."),
    fmt: CompareFormat = typer.Option(CompareFormat.table, "--format", "-f", help="table, json or markdown."),
    allow_env_mismatch: bool = typer.Option(False, "--allow-env-mismatch",
                                            help="Compare even across GPUs / torch major versions / devices."),
    github_json: Optional[Path] = typer.Option(
        None, "--github-json", help="Folder to write github-action-benchmark custom data into "
                                    "(customSmallerIsBetter.json, customBiggerIsBetter.json)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the --format output to this file."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=_SKIP_HELP),
) -> None:
    """Compare NEW results with BASELINE row by row; exit 1 on a regression, 0 otherwise (docs/regressions.md)."""
    from ablate.compare import compare_paths, print_table, render_json, render_markdown, write_github_json
    from ablate.results import reading

    with reading(skip_invalid=skip_invalid, hint=_SKIP_HINT):
        result = compare_paths(baseline, new, fail_if or None, allow_env_mismatch=allow_env_mismatch)
    if github_json is not None:
        write_github_json(result, github_json)
    if fmt == CompareFormat.table:
        print_table(result)
        text = render_markdown(result) if output is not None else ""
    else:
        text = render_json(result) if fmt == CompareFormat.json else render_markdown(result)
        typer.echo(text, nl=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    if result.regressed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------------------------
# nightly


@app.command("nightly")
def nightly_cmd(
    preset_latency: Optional[str] = typer.Option(None, "--preset-latency",
                                                 help="Latency preset (default: gpu on CUDA, cpu on CPU)."),
    preset_extrapolation: Optional[str] = typer.Option(
        None, "--preset-extrapolation", help="Extrapolation preset (default: gpu on CUDA, tiny on CPU)."),
    baseline: Path = typer.Option(Path("results/baselines"), "--baseline",
                                  help="Baseline results folder (one sub-folder per machine)."),
    out: str = typer.Option("nightly", "--out", "-o", help="Folder for results, report and comparison."),
    write_baseline: bool = typer.Option(False, "--write-baseline",
                                        help="Write the new rows as the baseline instead of comparing."),
    fail_if: Optional[List[str]] = typer.Option(None, "--fail-if", help="As in `ablate compare`; repeatable."),
    allow_env_mismatch: bool = typer.Option(False, "--allow-env-mismatch", help="As in `ablate compare`."),
    set_latency: Optional[List[str]] = typer.Option(None, "--set-latency", help="key=value for the latency run."),
    set_extrapolation: Optional[List[str]] = typer.Option(None, "--set-extrapolation",
                                                          help="key=value for the extrapolation run."),
    suites: str = typer.Option("latency,extrapolation", "--suites", help="Comma-separated suites to run."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if visible)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Make the report of the new results."),
    pytest_benchmark: bool = typer.Option(False, "--pytest-benchmark/--no-pytest-benchmark",
                                          help="Also run the pytest-benchmark set (tests/benchmarks)."),
    resume: bool = typer.Option(False, "--resume/--no-resume", help="Resume an interrupted nightly in OUT."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """The nightly GPU CI steps, runnable anywhere: run the latency and extrapolation presets, report, compare
    with the baseline (exit 1 on a regression) or write the baseline (docs/regressions.md)."""
    from ablate.nightly import NightlyOptions, run_nightly
    from ablate.runner import check_out_dir

    out = check_out_dir(out)
    opts = NightlyOptions(out=out, baseline=baseline, preset_latency=preset_latency,
                          preset_extrapolation=preset_extrapolation, set_latency=tuple(set_latency or ()),
                          set_extrapolation=tuple(set_extrapolation or ()),
                          suites=tuple(x.strip() for x in suites.split(",") if x.strip()), device=device,
                          fail_if=tuple(fail_if or ()), allow_env_mismatch=allow_env_mismatch,
                          write_baseline=write_baseline, report=report, pytest_benchmark=pytest_benchmark,
                          resume=resume, progress=progress)
    argv: list[str] = []
    for flag, value in (("--preset-latency", preset_latency), ("--preset-extrapolation", preset_extrapolation)):
        if value:
            argv += [flag, value]
    argv += ["--baseline", str(baseline), "--out", str(out)]
    argv += [a for s in (set_latency or ()) for a in ("--set-latency", s)]
    argv += [a for s in (set_extrapolation or ()) for a in ("--set-extrapolation", s)]
    argv += [a for f in (fail_if or ()) for a in ("--fail-if", f)]
    if suites != "latency,extrapolation":
        argv += ["--suites", suites]
    if device:
        argv += ["--device", device]
    argv += [flag for flag, on in (("--write-baseline", write_baseline), ("--allow-env-mismatch", allow_env_mismatch),
                                   ("--no-report", not report), ("--pytest-benchmark", pytest_benchmark),
                                   ("--resume", resume)) if on]
    result = run_nightly(opts, argv=argv)
    if result.rc:
        raise typer.Exit(result.rc)


# ---------------------------------------------------------------------------------------------------------------
# version


@app.command("version")
def version_cmd() -> None:
    """Print the ablate version."""
    typer.echo(f"ablate {__version__}")


# ---------------------------------------------------------------------------------------------------------------
# entry point


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _die(message: str, code: int) -> None:
    sys.stderr.write(f"ablate: error: {_one_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as one line each; ablate's own (e.g. a skipped torn line) without the category name."""
    text = _one_line(str(message))
    if not (category.__module__ or "").startswith("ablate"):
        text = f"{category.__name__}: {text}"
    (file or sys.stderr).write(f"ablate: warning: {text}\n")


_TERMINATED = [False]


def _handle_sigterm():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so it unwinds like Ctrl-C:
    state files say it was terminated, and the process exits 143 with one line. Returns the previous handler."""

    def on_term(signum, frame):  # noqa: ANN001
        _TERMINATED[0] = True
        raise Terminated(signum)

    try:
        return signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        return None


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry: run the app; user errors → one line on stderr and exit 2, Ctrl-C → exit 130."""
    command = typer.main.get_command(app)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    previous_term = _handle_sigterm()
    try:
        rc = command.main(args=argv, prog_name="ablate", standalone_mode=False)
    except AblateError as exc:
        _die(str(exc) or type(exc).__name__, EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort) as exc:
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated) or _TERMINATED[0]:
            _die(TERMINATED, EXIT_TERMINATED)
        _die(INTERRUPTED, EXIT_INTERRUPTED)
    except _ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ablate`: show the help
            exc.show()
            raise SystemExit(EXIT_USAGE) from None
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        code = getattr(exc, "exit_code", EXIT_USAGE)
        _die(exc.format_message() + hint, code if isinstance(code, int) and code else EXIT_USAGE)
    finally:
        warnings.showwarning = previous
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    if rc == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130)
        _die(TERMINATED if _TERMINATED[0] else INTERRUPTED, EXIT_TERMINATED if _TERMINATED[0] else EXIT_INTERRUPTED)
    raise SystemExit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
