"""``ablate export RESULTS... --to parquet|csv|wandb|mlflow|tensorboard [--out PATH]``: results outside ablate.

Which rows: those the reports use -- the newest row of each measurement (:func:`ablate.store.frame.latest_rows`, as
:func:`ablate.store.frame.to_frame` keeps them), read once, streaming, and checked as everywhere (``skip_invalid``);
``all_rows=True`` keeps every stored row (re-measured ones too).

**Files** (``csv``, ``parquet``): one line per row, one column per field (rows are flat already: ``config.*``,
``env.*``, ``curve.*`` and the rest, in the order they first appear). A column keeps its JSON type where it has one
(booleans, integers -- nullable --, floats, text); a list (``key_fields``, ``curve.val_loss``, ``grid_points``,
...) is JSON text in CSV, and a native list column in Parquet when its items are scalars of one type (else JSON
text); a column mixing types (say text and numbers) is text. Written atomically: a failure leaves no file.

**Trackers** (``wandb``, ``mlflow``, ``tensorboard``): one tracker run per ``ablate run`` invocation of a suite,
i.e. per ``(suite, run_id)`` of the rows, named ``<suite>-<run_id>``:

* its config / params: the columns holding one value in all of the run's rows (``config.*``, ``env.*``, device,
  preset, ...), plus ``suite``, ``run_id`` and the results file(s);
* its scalars, one per measured number of each ``ok`` row: ``<metric>/<label>`` for ``value`` (named by the row's
  ``metric``) and for each other measured column of :data:`ablate.store.schema.NUMBER_COLUMNS` present in the row, where
  ``<label>`` is the row's key fields that vary within the run (``position-rope seed-0``; left out: the length
  axis, ``config_id`` and any key the others determine). The step is the row's length axis (the first of :data:`STEP_AXES` among its key fields:
  ``eval_len``, ``seq_len``, ``context``, ``prompt_len``), so ``ppl/position-rope seed-0`` plots perplexity against
  evaluation length and ``time_ms/attention-sdpa ...`` time against sequence length; rows without one log at step
  0. Training curves (``curve.train_loss`` against ``curve.step``, ``curve.val_loss`` against ``curve.val_step``)
  are logged as ``curve.<name>/<label>`` at their own steps -- the loss curves of every grid point and seed;
* the rows themselves as a table: a W&B Table ``rows``; ``rows.csv`` as an MLflow artifact; ``rows.csv`` in the
  TensorBoard run folder.

TensorBoard also gets its HParams dashboard (:mod:`ablate.io.tb_hparams`): one session per row under
``<out>/hparams/``, its key fields and ``config.*`` settings as typed hyperparameters (booleans, numbers, text) and
its measured numbers as metrics, so rows compare side by side in one table.

Names are restricted to letters, digits, ``_ - . /`` and spaces (what MLflow accepts everywhere), the same for
every tracker (the adapters, shared with ``ablate run --log-to``, are in :mod:`ablate.io.trackers`).
:func:`tracker_runs` gives exactly what is logged, as plain data (the tests compare it with the
rows and with what each tracker read back).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ablate.errors import ConfigError, ResultsFileError, UnavailableError
from ablate.store.frame import latest_rows
from ablate.store.paths import PathLike, iter_files
from ablate.store.reader import iter_rows
from ablate.io.frames import columns, flat_frame, hashable, write_csv, write_parquet  # noqa: F401
from ablate.io.tb_hparams import write_hparams
from ablate.io.tracker_runs import (CURVE_PREFIX, LABEL_SKIP, STEP_AXES, TrackerRun, scalar_labels,  # noqa: F401
                                   step_of, tracker_runs)
from ablate.io.trackers import EXTRAS as TRACKER_EXTRAS
from ablate.io.trackers import (TRACKERS, check_tracker, install_hint, markdown_table, mlflow_experiment, safe_name,
                             tensorboard_writer, wandb_init)

__all__ = ["TARGETS", "FILE_TARGETS", "TRACKERS", "EXTRAS", "STEP_AXES", "TrackerRun", "ExportResult", "export_rows",
           "export", "select_rows", "flat_frame", "tracker_runs", "safe_name", "default_out", "check_target"]

FILE_TARGETS = ("csv", "parquet")
TARGETS = FILE_TARGETS + TRACKERS
# The optional extra of ablate-bench that installs each target's package (csv needs none).
EXTRAS = {"parquet": ("pyarrow", "parquet"), **TRACKER_EXTRAS}
DEFAULT_PROJECT = "ablate"


def _install_hint(target: str) -> str:
    return install_hint(target, "--to", EXTRAS)


def check_target(target: str) -> None:
    """Raise a one-line :class:`UnavailableError` naming the extra to install when ``target``'s package is missing."""
    if target not in TARGETS:
        raise ConfigError(f"unknown export target {target!r}; valid: {', '.join(TARGETS)}")
    if target in TRACKERS:
        check_tracker(target, "--to")
    elif target == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise UnavailableError(_install_hint(target)) from None


# ---------------------------------------------------------------------------------------------------------------
# Rows


def select_rows(paths: Sequence[PathLike], *, all_rows: bool = False) -> list[dict[str, Any]]:
    """The rows to export, as stored (JSON types kept): the newest row per measurement, as
    :func:`ablate.store.frame.to_frame` keeps them (``all_rows``: every row), in file order. Read in one streaming
    pass: only the rows kept are held."""
    rows = iter_rows(paths)
    return list(rows) if all_rows else latest_rows(rows)


# ---------------------------------------------------------------------------------------------------------------
# Trackers: logging


def _log_wandb(runs: list[TrackerRun], out: Path | None, project: str) -> list[str]:
    import wandb

    done = []
    for run in runs:
        wb = wandb_init(project=project, name=run.name, group=run.suite, job_type="ablate-export",
                        tags=["ablate", run.suite], config=run.params, out=out)
        try:
            steps = run.by_step()
            for step, metrics in steps:
                wb.log(metrics, step=step)
            table = wandb.Table(dataframe=flat_frame(run.rows).astype(object).where(lambda d: d.notna(), None))
            wb.log({"rows": table}, step=steps[-1][0] if steps else 0)
            done.append(getattr(wb, "dir", None) or run.name)
        finally:
            wb.finish()
    return done


def _log_mlflow(runs: list[TrackerRun], out: str | None, project: str) -> list[str]:

    from mlflow.entities import Metric, Param

    client, experiment_id = mlflow_experiment(out, project)
    done = []
    for run in runs:
        r = client.create_run(experiment_id, run_name=run.name,
                              tags={"ablate.suite": run.suite, "ablate.run_id": run.run_id})
        run_id = r.info.run_id
        try:
            params = [Param(k, v) for k, v in run.params.items()]
            for i in range(0, len(params), 100):
                client.log_batch(run_id, params=params[i:i + 100])
            now = int(time.time() * 1000)
            metrics = [Metric(tag, value, now, step) for tag, step, value in run.scalars]
            for i in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[i:i + 1000])
            client.log_text(run_id, flat_frame(run.rows).to_csv(index=False), "rows.csv")
            client.set_terminated(run_id, "FINISHED")
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        done.append(run_id)
    return done


def _log_tensorboard(runs: list[TrackerRun], out: Path) -> list[str]:
    done = []
    for run in runs:
        logdir = out / run.name
        writer = tensorboard_writer(logdir)
        try:
            for tag, step, value in run.scalars:
                writer.add_scalar(tag, value, global_step=step)
            writer.add_text("params", markdown_table(run.params), global_step=0)
        finally:
            writer.close()
        write_csv(run.rows, logdir / "rows.csv")
        done.append(str(logdir))
    return done


# ---------------------------------------------------------------------------------------------------------------
# Entry


def default_out(target: str, inputs: Sequence[PathLike]) -> Path | None:
    """Where a target writes when ``--out`` is not given: ``<name>.csv`` / ``<name>.parquet`` in the current folder
    (``name``: the results file's stem, or the folder's name), ``runs/tensorboard`` for TensorBoard; W&B and MLflow
    use their own defaults (``./wandb``, ``$MLFLOW_TRACKING_URI`` or ``./mlruns``)."""
    if target in FILE_TARGETS:
        first = Path(inputs[0]) if inputs else Path("results")
        stem = first.name[: -len(".jsonl")] if first.name.endswith(".jsonl") else first.name
        if len(inputs) > 1 or not stem or stem in (".", ".."):
            stem = "results"
        return Path(f"{stem}.{target}")
    if target == "tensorboard":
        return Path("runs") / "tensorboard"
    return None


def _check_out(target: str, out: Path | None) -> None:
    if out is None:
        return
    if target in FILE_TARGETS:
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; give the {target} file to write, e.g. --out "
                              f"{out / ('results.' + target)}")
        anchor = out.parent
        while not anchor.exists() and anchor != anchor.parent:
            anchor = anchor.parent
        if not anchor.is_dir():
            raise ConfigError(f"--out {out} cannot be created: {anchor} is not a folder")
        if not os.access(anchor, os.W_OK):
            raise ConfigError(f"--out {out} cannot be written: {anchor} is not writable")
    elif target in ("tensorboard", "wandb"):
        from ablate.plan.runner import check_out_dir

        check_out_dir(out)


@dataclass
class ExportResult:
    target: str
    rows: int
    columns: int = 0
    path: Path | None = None
    runs: list[str] = field(default_factory=list)
    sessions: int = 0  # TensorBoard: HParams sessions written (one per row) under <path>/hparams


def export_rows(rows: Sequence[Mapping[str, Any]], target: str, out: PathLike | None = None, *,
                project: str = DEFAULT_PROJECT, sources: Sequence[PathLike] = ()) -> ExportResult:
    """Write ``rows`` to ``target`` (see the module docstring); ``out`` as for :func:`export`."""
    check_target(target)
    rows = [dict(r) for r in rows]
    if target == "csv":
        path = write_csv(rows, Path(out))
        return ExportResult(target, len(rows), len(columns(rows)), path)
    if target == "parquet":
        path = write_parquet(rows, Path(out))
        return ExportResult(target, len(rows), len(columns(rows)), path)
    runs = tracker_runs(rows, sources)
    if target == "tensorboard":
        done = _log_tensorboard(runs, Path(out))
        return ExportResult(target, len(rows), path=Path(out), runs=done,
                            sessions=len(write_hparams(rows, Path(out))))
    if target == "mlflow":
        return ExportResult(target, len(rows), path=None if out is None else Path(str(out)),
                            runs=_log_mlflow(runs, None if out is None else str(out), project))
    return ExportResult(target, len(rows), path=None if out is None else Path(out),
                        runs=_log_wandb(runs, None if out is None else Path(out), project))


def export(inputs: Sequence[PathLike], target: str, out: PathLike | None = None, *, all_rows: bool = False,
           project: str = DEFAULT_PROJECT) -> ExportResult:
    """Export the rows of ``inputs`` (results files or folders) to ``target``.

    ``out``: the file (csv, parquet), the log folder (tensorboard, one sub-folder per run), the W&B ``dir``, or the
    MLflow tracking URI or folder (a file store); ``None``: :func:`default_out`. ``project``: the W&B project or
    MLflow experiment. Everything the user can get wrong (unknown target, missing package, missing results, no
    rows, an ``out`` that cannot be written) raises a one-line :class:`ablate.errors.AblateError` before anything is
    written."""
    if target not in TARGETS:
        raise ConfigError(f"unknown export target {target!r}; valid: {', '.join(TARGETS)}")
    inputs = list(inputs)
    if not inputs:
        raise ConfigError("no results given; name results files (.jsonl) or folders of them")
    out_path: Any = out
    if out is None:
        out_path = default_out(target, inputs)
    elif target != "mlflow":
        out_path = Path(out).expanduser()
    _check_out(target, out_path if isinstance(out_path, Path) else None)
    check_target(target)
    iter_files(inputs)  # a missing path: one line
    rows = select_rows(inputs, all_rows=all_rows)
    if not rows:
        raise ResultsFileError(f"no result rows in {', '.join(str(p) for p in inputs)}")
    return export_rows(rows, target, out_path, project=project, sources=[str(p) for p in inputs])
