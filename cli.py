"""The ``ablate`` command line (installed as ``ablate.cli``; console script ``ablate = ablate.cli:main``).

    ablate list [--axis A] [--format table|json]     registered variants, whether they run here, where they come from;
                [--presets]                          the presets of each suite
    ablate env [--format table|json]                 the environment fingerprint stored with every row
    ablate run --suite S [--preset P] [--set k=v]... run a suite (resumes by default), then print its summary tables
        [--launcher local|gpus|slurm] [--nproc-per-node N]     ... spread over GPUs / Slurm, or DDP via torchrun
    ablate status RUN_DIR                            done / running / failed / missing tasks of a sweep
    ablate report RESULTS... --out DIR               tables and figures from results files/folders
    ablate show RESULTS... [--all]                   the summary tables of results, printed as Markdown
    ablate export RESULTS... --to FORMAT [--out P]   parquet, csv, or a tracker: wandb, mlflow, tensorboard
    ablate compare BASELINE NEW [--fail-if E]...     regressions between two sets of results (exit 1)
    ablate nightly [--write-baseline]                the nightly GPU CI steps, runnable locally
    ablate version

``--plugin MODULE_OR_FILE`` (run, list, report; repeatable) and ``$ABLATE_PLUGINS`` add third-party variants
(ablate.registry.plugins, docs/adding-a-variant.md).

User errors print one line ``ablate: error: <message>`` on stderr and exit 2 (a value outside an option's choices
names the valid ones); Ctrl-C exits 130. ``ablate --install-completion`` installs shell completion, which lists the
choices of every option with a fixed vocabulary (ablate.commands.choices).
"""

from __future__ import annotations

import enum
import signal
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

try:  # typer >= 0.2x vendors click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover - typer on top of the click package
    from click.exceptions import ClickException as _ClickException  # type: ignore[no-redef]

from ablate import __version__
from ablate.commands.choices import (Device, Suite, choice_error as _choice_error, complete_axis,
                                complete_extrapolation_preset, complete_latency_preset, complete_preset,
                                complete_suites, plain as _plain)
from ablate.commands.views import AXES, one_line as _one_line, warn as _warn  # noqa: F401  (AXES: tests import it here)
from ablate.errors import AblateError, ConfigError, Terminated

INTERRUPTED = "interrupted; finished rows are saved, re-run to resume"
TERMINATED = "terminated (SIGTERM); finished rows are saved, re-run the same command to resume"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it

app = typer.Typer(
    name="ablate",
    help="Benchmark and ablation harness for Transformer components.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; choices below complete (ablate.commands.choices)
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


_PLUGIN_HELP = ("Also load the variants registered by this plugin: a module name or a .py file (repeatable; added to "
                "$ABLATE_PLUGINS, so workers load it too). See docs/adding-a-variant.md.")


@app.command("list")
def list_variants(
    axis: Optional[str] = typer.Option(None, "--axis", "-a", help=f"Only this axis: {', '.join(AXES)}.",
                                       autocompletion=complete_axis),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (human) or json (machine)."),
    device: Optional[Device] = typer.Option(None, "--device", case_sensitive=False,
                                            help="Check availability for cpu or cuda (default, auto: this machine's "
                                                 "best device)."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=_PLUGIN_HELP),
    sweeps: bool = typer.Option(False, "--sweeps", help="Instead: what `ablate run --sweep KEY=...` varies in "
                                "each suite (KEY -> the suite setting that takes the values)."),
    presets: bool = typer.Option(False, "--presets", help="Instead: the presets of each suite (`ablate run "
                                 "--preset`), and which one a run uses by default on CPU and on CUDA."),
) -> None:
    """List registered variants per axis, with whether each can run here, why not, and where each comes from
    (origin: ablate, entry point DIST:NAME, plugin MODULE_OR_FILE); then the presets of each suite."""
    from ablate.commands.views import list_presets, list_variants as show

    if presets:
        list_presets(fmt == Format.json)
        return
    device_name = None if device in (None, Device.auto) else device.value
    show(axis, fmt == Format.json, device_name, plugin, sweeps)
    if fmt != Format.json and not sweeps:
        list_presets(False)


# ---------------------------------------------------------------------------------------------------------------
# env


@app.command("env")
def env_cmd(
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (human) or json (machine)."),
) -> None:
    """Show the environment fingerprint recorded (as env.* columns) with every result row."""
    from ablate.commands.views import show_env

    show_env(fmt == Format.json)


# ---------------------------------------------------------------------------------------------------------------
# run


class Launcher(str, enum.Enum):
    local = "local"
    gpus = "gpus"
    slurm = "slurm"


class SlurmCluster(str, enum.Enum):
    slurm = "slurm"
    local = "local"


_SCALE = "Scale-out (docs/scale-out.md)"


@app.command("run")
def run_cmd(
    suite: Suite = typer.Option(..., "--suite", "-s", help="training, extrapolation or latency."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", autocompletion=complete_preset,
                                         help="Preset of the suite: micro (seconds, tests), tiny (the CPU default), "
                                              "gpu (the CUDA default), and any of the suite's own; `ablate list "
                                              "--presets`."),
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
    out: str = typer.Option("runs", "--out", "-o",
                            help="Folder for the results: <out>/<suite>/<device>-<preset>.jsonl."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data for suites that train: a text file or folder, "
                                        "a .bin token file, a datasets save_to_disk folder, or hf:NAME[:CONFIG] "
                                        "from the local Hugging Face cache (docs/data.md)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="bytes (default), the path of a "
                                            "tokenizer.json, or bpe:N (byte-level BPE of N tokens trained on the "
                                            "training split); same as --set data.tokenizer=... (docs/data.md)."),
    device: Optional[Device] = typer.Option(None, "--device", case_sensitive=False,
                                            help="cpu or cuda (default, auto: cuda if visible)."),
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
    slurm_cluster: SlurmCluster = typer.Option(SlurmCluster.slurm, "--slurm-cluster", rich_help_panel=_SCALE,
                                               help="submitit executor: slurm, or local (same code path on this "
                                                    "machine)."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help=_PLUGIN_HELP),
    log_to: Optional[List[str]] = typer.Option(None, "--log-to", help="Log live training curves and final metrics "
                                               "to wandb, mlflow or tensorboard, one tracker run per trained model "
                                               "(training, extrapolation; repeatable or a comma list; README, "
                                               "Export)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration (presets, --set, "
                                 "--sweep applied) and the plan (tasks, which are done), then exit: nothing runs "
                                 "and nothing is written."),
    summary: bool = typer.Option(True, "--summary/--no-summary", help="End by printing the summary tables of the "
                                 "results file, as `ablate show RESULTS` does."),
) -> None:
    """Run a suite; rows are appended to OUT as they finish, so an interrupted run resumes where it stopped."""
    params = dict(locals())  # every option, by name (first: before any other local name exists)
    from ablate.commands import run as cli_run

    rc = cli_run.run(**_plain(params))  # choices (suite, device, launcher, ...) by name
    if rc:
        raise typer.Exit(rc)


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
    from ablate.commands.views import show_status

    show_status(run_dir, fmt == Format.json, all_tasks, skip_invalid, _SKIP_HINT)


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
    from ablate.reporting.report import build_report
    from ablate.store.results import reading
    from ablate.plan.runner import check_out_dir

    out = check_out_dir(out)
    if plugin:
        from ablate.registry.plugins import use

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
    from ablate.store.results import reading
    from ablate.reporting.show import render

    if plugin:
        from ablate.registry.plugins import use

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
    from ablate.io.export import export
    from ablate.store.results import reading

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


from ablate.regress.compare import DEFAULT_FAIL_IF as _DEFAULT_FAIL_IF  # noqa: E402  (light: no torch, no pandas)


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
    noise: Optional[Path] = typer.Option(None, "--noise", help="Calibration file from `ablate calibrate`: changes on "
                                         "rows it found noisy are reported as noise, never as regressions."),
) -> None:
    """Compare NEW results with BASELINE row by row; exit 1 on a regression, 0 otherwise (docs/regressions.md)."""
    from ablate.commands import run as cli_run

    rc = cli_run.compare(baseline, new, fail_if, fmt.value, allow_env_mismatch, github_json, output, skip_invalid,
                         _SKIP_HINT, noise)
    if rc:
        raise typer.Exit(rc)


@app.command("calibrate")
def calibrate_cmd(
    run_a: Path = typer.Argument(..., help="A run of the preset: a .jsonl file or a folder of them."),
    run_b: Path = typer.Argument(..., help="The same preset run again in another process, on the same machine."),
    fail_if: Optional[List[str]] = typer.Option(None, "--fail-if", help="The rules to calibrate, as in `ablate "
                                                "compare` (default: its defaults)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the calibration (JSON) here, for "
                                       "`ablate compare --noise`."),
    plant: float = typer.Option(5.0, "--plant", help="Percent slowdown planted in one row of RUN_B; the gate must "
                                "catch it."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=_SKIP_HELP),
) -> None:
    """Calibrate the regression gate on two repeats: false alarms (must be 0), each row's repeat spread (rows past
    the threshold are noisy), and a planted slowdown (must be caught); exit 1 otherwise (docs/regressions.md)."""
    from ablate.commands import run as cli_run

    rc = cli_run.calibrate(run_a, run_b, fail_if, out, plant, skip_invalid, _SKIP_HINT)
    if rc:
        raise typer.Exit(rc)


# ---------------------------------------------------------------------------------------------------------------
# nightly


@app.command("nightly")
def nightly_cmd(
    preset_latency: Optional[str] = typer.Option(None, "--preset-latency", autocompletion=complete_latency_preset,
                                                 help="Latency preset (default: gpu on CUDA, tiny on CPU)."),
    preset_extrapolation: Optional[str] = typer.Option(
        None, "--preset-extrapolation", autocompletion=complete_extrapolation_preset,
        help="Extrapolation preset (default: gpu on CUDA, tiny on CPU)."),
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
    suites: str = typer.Option("latency,extrapolation", "--suites", help="Comma-separated suites to run.",
                               autocompletion=complete_suites),
    device: Optional[Device] = typer.Option(None, "--device", case_sensitive=False,
                                            help="cpu or cuda (default, auto: cuda if visible)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Make the report of the new results."),
    pytest_benchmark: bool = typer.Option(False, "--pytest-benchmark/--no-pytest-benchmark",
                                          help="Also run the pytest-benchmark set (tests/benchmarks)."),
    resume: bool = typer.Option(False, "--resume/--no-resume", help="Resume an interrupted nightly in OUT."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """The nightly GPU CI steps, runnable anywhere: run the latency and extrapolation presets, report, compare
    with the baseline (exit 1 on a regression) or write the baseline (docs/regressions.md)."""
    params = dict(locals())  # every option, by name (first: before any other local name exists)
    from ablate.commands import run as cli_run

    rc = cli_run.nightly(**_plain(params))
    if rc:
        raise typer.Exit(rc)


# ---------------------------------------------------------------------------------------------------------------
# version


@app.command("version")
def version_cmd() -> None:
    """Print the ablate version."""
    typer.echo(f"ablate {__version__}")


# ---------------------------------------------------------------------------------------------------------------
# entry point


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
        choice = _choice_error(exc)  # a bad value of a choice option: "unknown suite 'x'; valid: ..."
        if choice is not None:
            _die(choice, EXIT_USAGE)
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
