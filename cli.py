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
    ablate calibrate RUN_A RUN_B [--out F]           the regression gate's noise on two repeats of a preset
    ablate nightly [--write-baseline]                the nightly GPU CI steps, runnable locally
    ablate version

``--plugin MODULE_OR_FILE`` (run, list, report; repeatable) and ``$ABLATE_PLUGINS`` add third-party variants
(ablate.registry.plugins, docs/adding-a-variant.md).

The commands and their options (with help texts; `ablate run --help` groups its options in panels: what to run,
where results go, resuming & selection, logging & trackers, and the launchers) are here; the work behind them is in
ablate.commands (run: run/compare/calibrate/nightly, views: what list/env/status/report/show/export print,
choices: the fixed vocabularies and shell completion, entry: the console-script entry). Stdout carries results;
progress bars and messages go to stderr.

User errors print one line ``ablate: error: <message>`` on stderr and exit 2 (a value outside an option's choices
names the valid ones); Ctrl-C exits 130, SIGTERM 143. ``ablate --install-completion`` installs shell completion,
which lists the choices of every option with a fixed vocabulary (ablate.commands.choices).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ablate import __version__
from ablate.commands.choices import (CompareFormat, Device, ExportTarget, Format, Launcher, SlurmCluster, Suite,
                                     complete_axis, complete_extrapolation_preset, complete_latency_preset,
                                     complete_preset, complete_suites)
from ablate.commands.entry import HelpCommand, HelpGroup  # --help wraps long words instead of cutting them
from ablate.commands.views import AXES  # noqa: F401  (tests import it from here)

app = typer.Typer(
    name="ablate",
    cls=HelpGroup,
    help="Benchmark and ablation harness for Transformer components.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; choices below complete (ablate.commands.choices)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


@app.command("list", cls=HelpCommand)
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


@app.command("env", cls=HelpCommand)
def env_cmd(
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (human) or json (machine)."),
) -> None:
    """Show the environment fingerprint recorded (as env.* columns) with every result row."""
    from ablate.commands.views import show_env

    show_env(fmt == Format.json)


# ---------------------------------------------------------------------------------------------------------------
# run


# The panels of `ablate run --help`, in this order.
_WHAT = "What to run"
_WHERE = "Where results go"
_RESUME = "Resuming & selection"
_LOG = "Logging & trackers"
_LAUNCH = "Launchers: GPUs and Slurm (docs/scale-out.md)"
_TORCHRUN = "Launchers: torchrun, DDP training (docs/scale-out.md)"


@app.command("run", cls=HelpCommand)
def run_cmd(
    # What to run
    suite: Optional[Suite] = typer.Option(None, "--suite", "-s", rich_help_panel=_WHAT,
                                          help="training, extrapolation or latency (required unless --config names "
                                               "it)."),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", autocompletion=complete_preset, rich_help_panel=_WHAT,
                                         help="Preset of the suite: micro (seconds, tests), tiny (the CPU default), "
                                              "gpu (the CUDA default), and any of the suite's own; `ablate list "
                                              "--presets`."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", rich_help_panel=_WHAT,
                                                  help="Override a setting: key=value (dotted keys reach nested "
                                                       "settings); repeatable."),
    sweep: Optional[List[str]] = typer.Option(None, "--sweep", rich_help_panel=_WHAT,
                                              help="Vary a setting: KEY=V1,V2 (repeatable), the same in every suite, "
                                                   "e.g. --sweep model.position=rope,alibi (extrapolation, latency), "
                                                   "--sweep model.attention=sdpa,flex (latency), --sweep "
                                                   "model.norm=layernorm,rmsnorm (training: factorial over model.* "
                                                   "and train.*); `ablate list --sweeps` shows what each suite "
                                                   "sweeps."),
    grid: Optional[List[str]] = typer.Option(None, "--grid", hidden=True, rich_help_panel=_WHAT,
                                             help="Legacy, undocumented: --grid AXIS=V1,V2 is --sweep "
                                                  "model.AXIS=V1,V2 (training)."),
    config: Optional[Path] = typer.Option(None, "--config", rich_help_panel=_WHAT,
                                          help="A sweep file (TOML; YAML with the yaml extra): suite, preset, seeds, "
                                               "a [set] table (as --set) and a [sweep] table of lists (as --sweep); "
                                               "the command line adds to it (docs/training.md, Sweep files)."),
    print_config: bool = typer.Option(False, "--print-config", rich_help_panel=_WHAT,
                                      help="Print what to run (suite, preset, seeds, --set, --sweep) as a --config "
                                           "TOML file on stdout, with every resolved setting as comments; nothing "
                                           "runs."),
    seeds: Optional[int] = typer.Option(None, "--seeds", rich_help_panel=_WHAT,
                                        help="Number of seeds (0..K-1; default 1, or the --config file's)."),
    data: Optional[Path] = typer.Option(None, "--data", rich_help_panel=_WHAT,
                                        help="Data for suites that train: a text file or folder, a .bin token file, "
                                             "a datasets save_to_disk folder, or hf:NAME[:CONFIG] from the local "
                                             "Hugging Face cache (docs/data.md)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", rich_help_panel=_WHAT,
                                            help="bytes (default), the path of a tokenizer.json, or bpe:N (byte-level "
                                                 "BPE of N tokens trained on the training split); same as --set "
                                                 "data.tokenizer=... (docs/data.md)."),
    model: Optional[str] = typer.Option(None, "--model", rich_help_panel=_WHAT,
                                        help="Extrapolation: score a pretrained causal LM instead of training, "
                                             "hf:NAME_OR_PATH (a local folder or a hub name in the local cache; "
                                             "needs the hf extra) under each RoPE scaling (docs/extrapolation.md)."),
    device: Optional[Device] = typer.Option(None, "--device", case_sensitive=False, rich_help_panel=_WHAT,
                                            help="cpu or cuda (default, auto: cuda if visible)."),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", rich_help_panel=_WHAT, help=_PLUGIN_HELP),
    # Where results go
    out: str = typer.Option("runs", "--out", "-o", rich_help_panel=_WHERE,
                            help="Folder for the results: <out>/<suite>/<device>-<preset>.jsonl."),
    summary: bool = typer.Option(True, "--summary/--no-summary", rich_help_panel=_WHERE,
                                 help="End by printing the summary tables of the results file on stdout, as `ablate "
                                      "show RESULTS` does (--no-summary: only the line counting the rows)."),
    # Resuming & selection
    resume: bool = typer.Option(True, "--resume/--no-resume", rich_help_panel=_RESUME,
                                help="Skip measurements already in the results (with a launcher: submit only the "
                                     "tasks that are not done)."),
    task: Optional[List[str]] = typer.Option(None, "--task", rich_help_panel=_RESUME,
                                             help="Run only this task of the sweep, by its id (modern@s0, "
                                                  "alibi@s0, kernel-sdpa); repeatable. --dry-run lists the ids; so "
                                                  "does `ablate status`."),
    dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=_RESUME,
                                 help="Print the resolved configuration (presets, --set, --sweep applied) and the "
                                      "plan (the tasks, or those --task selects, and which are done), then exit: "
                                      "nothing runs and nothing is written."),
    # Logging & trackers
    progress: bool = typer.Option(True, "--progress/--no-progress", rich_help_panel=_LOG,
                                  help="Show progress bars (on stderr; stdout carries the results only)."),
    log_to: Optional[List[str]] = typer.Option(None, "--log-to", rich_help_panel=_LOG,
                                               help="Log live training curves and final metrics to wandb, mlflow or "
                                                    "tensorboard, one tracker run per trained model (training, "
                                                    "extrapolation; repeatable or a comma list; README, Export)."),
    # Launchers: GPUs and Slurm
    launcher: Launcher = typer.Option(Launcher.local, "--launcher", rich_help_panel=_LAUNCH,
                                      help="local: this process; gpus: one worker per visible GPU; slurm: a "
                                           "submitit job array, one task per element."),
    gpus: Optional[str] = typer.Option(None, "--gpus", rich_help_panel=_LAUNCH,
                                       help="--launcher gpus: GPU ids to use, e.g. 0,1,2 (default: all visible)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", rich_help_panel=_LAUNCH,
                              help="--launcher slurm: wait for the jobs (--no-wait: submit and return)."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", rich_help_panel=_LAUNCH,
                                                  help="--launcher slurm: the partition (sbatch --partition; "
                                                       "default: the cluster's)."),
    slurm_time: Optional[str] = typer.Option(None, "--slurm-time", rich_help_panel=_LAUNCH,
                                             help="--launcher slurm, per task: minutes or [D-]HH:MM[:SS] (default "
                                                  "4:00:00)."),
    slurm_gpus_per_task: Optional[int] = typer.Option(None, "--slurm-gpus-per-task", rich_help_panel=_LAUNCH,
                                                      help="--launcher slurm: GPUs per task (default: 1 for a CUDA "
                                                           "sweep, 0 for a CPU one)."),
    slurm_cpus_per_task: Optional[int] = typer.Option(None, "--slurm-cpus-per-task", rich_help_panel=_LAUNCH,
                                                      help="--launcher slurm: CPU cores per task (default: the "
                                                           "cluster's)."),
    slurm_mem_gb: Optional[float] = typer.Option(None, "--slurm-mem-gb", rich_help_panel=_LAUNCH,
                                                 help="--launcher slurm: memory per task in GB (default: the "
                                                      "cluster's)."),
    slurm_array_parallelism: int = typer.Option(64, "--slurm-array-parallelism", rich_help_panel=_LAUNCH,
                                                help="--launcher slurm: array elements running at once."),
    slurm_opt: Optional[List[str]] = typer.Option(None, "--slurm-opt", rich_help_panel=_LAUNCH,
                                                  help="--launcher slurm: any other sbatch option, key=value "
                                                       "(account=..., qos=...); repeatable."),
    slurm_cluster: SlurmCluster = typer.Option(SlurmCluster.slurm, "--slurm-cluster", rich_help_panel=_LAUNCH,
                                               help="--launcher slurm: the submitit executor, slurm, or local (the "
                                                    "same code path on this machine)."),
    # Launchers: torchrun
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", rich_help_panel=_TORCHRUN,
                                       help="Training: DDP processes per node, started by torchrun (each grid point "
                                            "trains on all of them; same global batch)."),
    nnodes: str = typer.Option("1", "--nnodes", rich_help_panel=_TORCHRUN,
                               help="torchrun --nnodes: the number of nodes (N or MIN:MAX)."),
    node_rank: Optional[int] = typer.Option(None, "--node-rank", rich_help_panel=_TORCHRUN,
                                            help="torchrun --node-rank: this node's rank (0..nnodes-1)."),
    rdzv_backend: Optional[str] = typer.Option(None, "--rdzv-backend", rich_help_panel=_TORCHRUN,
                                               help="torchrun --rdzv-backend: the rendezvous backend (e.g. c10d)."),
    rdzv_endpoint: Optional[str] = typer.Option(None, "--rdzv-endpoint", rich_help_panel=_TORCHRUN,
                                                help="torchrun --rdzv-endpoint: HOST:PORT of the rendezvous."),
    rdzv_id: Optional[str] = typer.Option(None, "--rdzv-id", rich_help_panel=_TORCHRUN,
                                          help="torchrun --rdzv-id: the job id every node of the run shares."),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", rich_help_panel=_TORCHRUN,
                                              help="torchrun --master-addr: address of the rank-0 node (static "
                                                   "rendezvous)."),
    master_port: Optional[int] = typer.Option(None, "--master-port", rich_help_panel=_TORCHRUN,
                                              help="torchrun --master-port: port on the rank-0 node (static "
                                                   "rendezvous)."),
) -> None:
    """Run a suite; rows are appended to OUT as they finish, so an interrupted run resumes where it stopped. Stdout
    carries the results (the summary tables, the results line); progress and messages go to stderr."""
    from ablate.commands.run import RunArgs, run

    rc = run(RunArgs(
        suite=suite, preset=preset, overrides=overrides, sweep=sweep, grid=grid, config=config,
        print_config=print_config, seeds=seeds, data=data,
        tokenizer=tokenizer, model=model, device=device, plugin=plugin, out=out, summary=summary, resume=resume, task=task,
        dry_run=dry_run, progress=progress, log_to=log_to, launcher=launcher, gpus=gpus, wait=wait,
        slurm_partition=slurm_partition, slurm_time=slurm_time, slurm_gpus_per_task=slurm_gpus_per_task,
        slurm_cpus_per_task=slurm_cpus_per_task, slurm_mem_gb=slurm_mem_gb,
        slurm_array_parallelism=slurm_array_parallelism, slurm_opt=slurm_opt, slurm_cluster=slurm_cluster,
        nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank, rdzv_backend=rdzv_backend,
        rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id, master_addr=master_addr, master_port=master_port))
    if rc:
        raise typer.Exit(rc)


# ---------------------------------------------------------------------------------------------------------------
# status

_SKIP_HELP = ("Leave out rows that break the results schema (docs/results-schema.md), with a warning saying how many "
              "were skipped in which file (default: such a row is an error).")
_SKIP_HINT = "fix or remove that line, or pass --skip-invalid to leave invalid rows out"


@app.command("status", cls=HelpCommand)
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


@app.command("report", cls=HelpCommand)
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
    from ablate.commands.views import make_report

    make_report(results, out, skip_invalid, plugin, _SKIP_HINT)


# ---------------------------------------------------------------------------------------------------------------
# show


@app.command("show", cls=HelpCommand)
def show_cmd(
    results: List[Path] = typer.Argument(..., help="Results files (.jsonl) or folders of them."),
    all_tables: bool = typer.Option(False, "--all", help="Every table of the report, not only the summary ones."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help=_SKIP_HELP),
    plugin: Optional[List[str]] = typer.Option(None, "--plugin", help="Load this plugin's variants first, as in "
                                               "`ablate report`; repeatable."),
) -> None:
    """Print the summary tables of results files as Markdown: the tables `ablate report` writes, nothing written."""
    from ablate.commands.views import show_results

    show_results(results, all_tables, skip_invalid, plugin, _SKIP_HINT)


# ---------------------------------------------------------------------------------------------------------------
# export


@app.command("export", cls=HelpCommand)
def export_cmd(
    results: List[Path] = typer.Argument(..., help="Results files (.jsonl) or folders of them."),
    to: ExportTarget = typer.Option(..., "--to", "-t", help="parquet or csv (one column per field), or a tracker: "
                                    "wandb, mlflow, tensorboard (one run per suite and run id; tensorboard also one "
                                    "HParams session per row)."),
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
    from ablate.commands.views import export_results

    export_results(results, to.value, out, project, all_rows, skip_invalid, _SKIP_HINT)


# ---------------------------------------------------------------------------------------------------------------
# compare


from ablate.regress.compare import DEFAULT_FAIL_IF as _DEFAULT_FAIL_IF  # noqa: E402  (light: no torch, no pandas)


@app.command("compare", cls=HelpCommand)
def compare_cmd(
    baseline: Path = typer.Argument(..., help="Baseline results: a .jsonl file or a folder of them."),
    new: Path = typer.Argument(..., help="New results: a .jsonl file or a folder of them."),
    fail_if: Optional[List[str]] = typer.Option(
        None, "--fail-if", help="METRIC:AMOUNT% or METRIC:AMOUNT (pytest-benchmark syntax, e.g. median:5%, "
                                "time_ms:10%, tflops:10%, ppl:2%); repeatable. A metric no compared row has is "
                                "refused unless marked optional: tflops?:10%. Default: "
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
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Pass even when no row matched or baseline "
                                       "rows are missing from NEW (default: exit 1, a gate that compared nothing "
                                       "does not pass)."),
) -> None:
    """Compare NEW results with BASELINE row by row; exit 1 on a regression, when no row matched or when a baseline
    row is missing (unless --allow-missing), 0 otherwise (docs/regressions.md)."""
    from ablate.commands import gates as cli_run

    rc = cli_run.compare(baseline, new, fail_if, fmt.value, allow_env_mismatch, github_json, output, skip_invalid,
                         _SKIP_HINT, noise, allow_missing)
    if rc:
        raise typer.Exit(rc)


@app.command("calibrate", cls=HelpCommand)
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
    from ablate.commands import gates as cli_run

    rc = cli_run.calibrate(run_a, run_b, fail_if, out, plant, skip_invalid, _SKIP_HINT)
    if rc:
        raise typer.Exit(rc)


# ---------------------------------------------------------------------------------------------------------------
# nightly


@app.command("nightly", cls=HelpCommand)
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
    first_night: bool = typer.Option(False, "--first-night", help="When the baseline has no rows for this machine, "
                                     "write this run as the baseline and say so (exit 0) instead of refusing; "
                                     "compare as usual once there is one."),
    fail_if: Optional[List[str]] = typer.Option(None, "--fail-if", help="As in `ablate compare`; repeatable."),
    allow_env_mismatch: bool = typer.Option(False, "--allow-env-mismatch", help="As in `ablate compare`."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="As in `ablate compare`."),
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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars (on stderr)."),
) -> None:
    """The nightly GPU CI steps, runnable anywhere: run the latency and extrapolation presets, report, compare
    with the baseline (exit 1 on a regression, or when rows are missing) or write the baseline (docs/regressions.md)."""
    from ablate.commands.gates import NightlyArgs, nightly

    rc = nightly(NightlyArgs(
        preset_latency=preset_latency, preset_extrapolation=preset_extrapolation, baseline=baseline, out=out,
        write_baseline=write_baseline, first_night=first_night, fail_if=fail_if,
        allow_env_mismatch=allow_env_mismatch, allow_missing=allow_missing,
        set_latency=set_latency, set_extrapolation=set_extrapolation, suites=suites, device=device, report=report,
        pytest_benchmark=pytest_benchmark, resume=resume, progress=progress))
    if rc:
        raise typer.Exit(rc)


# ---------------------------------------------------------------------------------------------------------------
# version


@app.command("version", cls=HelpCommand)
def version_cmd() -> None:
    """Print the ablate version."""
    typer.echo(f"ablate {__version__}")


# ---------------------------------------------------------------------------------------------------------------
# entry point


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry: run the app; user errors → one line on stderr and exit 2, Ctrl-C → exit 130, SIGTERM →
    143 (ablate.commands.entry)."""
    from ablate.commands.entry import main as run_app

    run_app(app, argv)


if __name__ == "__main__":
    main()
