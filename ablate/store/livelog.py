"""``ablate run --log-to wandb|mlflow|tensorboard``: live training curves and final metrics in experiment trackers.

One tracker run per trained model (training suite: a grid point x seed; extrapolation suite: a trained variant x
seed [x probe]), named ``<suite>-<model>`` (``training-original-s0``, ``extrapolation-rope-s0``):

* **params / config**: the model's settings as its rows record them (``config.*``), the key fields its rows share
  (``preset``, ``seed``, ``config_id``, ...), ``suite``, ``model``, ``run_id``, ``device``;
* **tags** (MLflow tags; W&B config and tags; a TensorBoard text): the environment fingerprint (``env.*``: git
  commit, torch, GPU, host) and the ``ablate.*`` identity of the run;
* **live scalars** while the model trains, at each log point (``train.log_every``) and each evaluation:
  ``curve.train_loss``, ``curve.lr``, ``curve.tokens``, ``curve.tokens_per_s`` and ``curve.val_loss``, against
  the training step (steps completed: the ``curve.step`` / ``curve.val_step`` of the training suite's rows, so a
  logged curve is the row's curve);
* **final metrics**, when each measurement row is written: the row's ``value`` as ``<metric>`` and each other
  measured number (:data:`ablate.store.schema.NUMBER_COLUMNS`) by its column name, labelled with the key fields that
  vary between the model's rows (``ppl/position-rope`` plots perplexity against ``eval_len``); a row without a
  length axis (the training suite's) logs at the last training step;
* at the end, the rows themselves (W&B Table ``rows``, MLflow artifact ``rows.csv``, ``rows.csv`` beside the
  TensorBoard events), and the run's status: finished; failed (an exception, or a row with status ``error`` /
  ``oom``); killed (Ctrl-C, SIGTERM). The tracker run is closed in every case.

Where each tracker writes:

* **TensorBoard**: ``<out>/tb/<suite>/<device>-<preset>/<model>/<run_id>/`` (``tensorboard --logdir <out>/tb``),
  and, when the model finishes, one HParams session per row under ``<run_id>/hparams/`` (typed settings, the
  measured numbers as metrics: :mod:`ablate.io.tb_hparams`), so the HParams tab compares the models of every run;
* **MLflow**: ``$MLFLOW_TRACKING_URI`` when set, else the file store ``<out>/mlruns``; experiment
  ``$MLFLOW_EXPERIMENT_NAME`` or ``ablate``;
* **W&B**: project ``$WANDB_PROJECT`` or ``ablate``, grouped by ``<suite>-<run_id>``; files under ``<out>/wandb``
  (unless ``$WANDB_DIR``); ``WANDB_MODE=offline`` and the other ``WANDB_*`` settings apply.

The trackers are optional extras (:mod:`ablate.io.trackers`): ``--log-to`` with a missing package is one line naming
the extra, exit 2, before anything runs. A tracker that fails later (a server gone) prints one warning and stops
logging; the measurements and their rows go on. Without ``--log-to`` nothing here runs and the suites' rows are
unchanged. The suites use it as::

    live = livelog.open_live(opts, SUITE, device, preset)     # None without --log-to
    with livelog.model_run(live, "original-s0", config=run_cfg, keys=[key]) as lrun:
        res = train(..., on_log=lrun.on_log)                  # on_log is None without --log-to
        lrun.tap(writer).write("ok", key, metrics, config=run_cfg)
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ablate.errors import ConfigError
from ablate.store.schema import SUITES
from ablate.io.trackers import TRACKERS, check_tracker, markdown_table, safe_name

__all__ = ["FLAG", "TRAINING_SUITES", "CURVE_TAGS", "parse_targets", "tensorboard_dir", "mlflow_store", "LiveLog",
           "ModelRun", "open_live", "model_run", "row_scalars"]

FLAG = "--log-to"
TRAINING_SUITES = ("training", "extrapolation")  # the suites that train models (latency only times them)
TB_DIR = "tb"
MLRUNS_DIR = "mlruns"
DEFAULT_PROJECT = "ablate"
# train()'s on_log entries -> scalar tags (the training suite's row columns: curve.train_loss, curve.val_loss).
CURVE_TAGS = {"train_loss": "curve.train_loss", "lr": "curve.lr", "tokens": "curve.tokens",
              "tokens_per_s": "curve.tokens_per_s", "val_loss": "curve.val_loss"}
# Row statuses that make the tracker run "failed" (diverged / unsupported are results, not failures).
FAILED_ROWS = ("error", "oom")


def parse_targets(values: Iterable[str] | None, suite: str | None = None) -> tuple[str, ...]:
    """``--log-to`` values (repeatable, or a comma list) as distinct tracker names, in order; an unknown name, a
    suite that trains nothing, or a missing package is one line (the last naming the extra to install)."""
    targets: list[str] = []
    for value in values or ():
        for part in str(value).split(","):
            part = part.strip().lower()
            if part and part not in targets:
                targets.append(part)
    for t in targets:
        if t not in TRACKERS:
            raise ConfigError(f"{FLAG} {t!r}: unknown tracker; valid: {', '.join(TRACKERS)}")
    if targets and suite in SUITES and suite not in TRAINING_SUITES:  # (an unknown suite: its own error later)
        raise ConfigError(f"{FLAG} logs the models a suite trains ({', '.join(TRAINING_SUITES)}); the {suite} suite "
                          f"trains none: log its rows with `ablate export RESULTS --to {targets[0]}`")
    for t in targets:
        check_tracker(t, FLAG)
    return tuple(targets)


def tensorboard_dir(out: str | os.PathLike, suite: str, device: str, preset: str) -> Path:
    """Where a run's TensorBoard event files go: ``<out>/tb/<suite>/<device>-<preset>/`` (one folder per model and
    run id below it)."""
    return Path(out) / TB_DIR / suite / f"{device}-{preset}"


def mlflow_store(out: str | os.PathLike) -> str | None:
    """The MLflow store: None (MLflow's own, i.e. ``$MLFLOW_TRACKING_URI``) when that is set, else the file store
    ``<out>/mlruns``."""
    return None if os.environ.get("MLFLOW_TRACKING_URI") else str(Path(out) / MLRUNS_DIR)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _text(v: Any) -> str:

    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def row_scalars(row: Mapping[str, Any], label: str = "") -> tuple[str | None, int | None, dict[str, float]]:
    """(length axis, its value, {tag: value}) of an ``ok`` row: ``value`` as ``<metric>``, each other measured
    number column by name, each tag followed by ``/<label>`` when there is one. The axis is the first of
    :data:`ablate.io.tracker_runs.STEP_AXES` among the row's key fields (None: none)."""
    from ablate.store.schema import NUMBER_COLUMNS

    from ablate.io.tracker_runs import step_of

    axis, step = step_of(row)
    suffix = f"/{label}" if label else ""
    metric = row.get("metric") if isinstance(row.get("metric"), str) and row.get("metric") else None
    values: dict[str, float] = {}
    v = _number(row.get("value"))
    if metric is not None and v is not None:
        values[safe_name(metric + suffix)] = v
    for c in NUMBER_COLUMNS:
        if c in ("value", metric) or c not in row:
            continue
        v = _number(row.get(c))
        if v is not None:
            values[safe_name(c + suffix)] = v
    return axis, (step if axis is not None else None), values


# ---------------------------------------------------------------------------------------------------------------
# Sinks: one tracker's run of one model


class _TensorBoardSink:
    def __init__(self, live: "LiveLog", run: "ModelRun"):
        from ablate.io.trackers import tensorboard_writer

        self.logdir = tensorboard_dir(live.out, live.suite, live.device, live.preset) / run.name / live.run_id
        self.writer = tensorboard_writer(self.logdir)
        self.writer.add_text("params", markdown_table(run.params), global_step=0)
        self.writer.add_text("tags", markdown_table(run.tags, "tag"), global_step=0)
        self.writer.flush()

    def scalars(self, step: int, values: Mapping[str, float], axis: str | None = None) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, global_step=step)
        self.writer.flush()  # live: readable as it trains

    def finish(self, status: str, rows: list[dict]) -> None:
        try:
            self.writer.add_text("status", status, global_step=0)
        finally:
            self.writer.close()
        if rows:
            from ablate.io.frames import write_csv
            from ablate.io.tb_hparams import write_hparams

            write_csv(rows, self.logdir / "rows.csv")
            write_hparams(rows, self.logdir, experiment=False)  # the HParams tab: one session per row


class _MLflowSink:
    def __init__(self, live: "LiveLog", run: "ModelRun"):
        from mlflow.entities import Param

        self.client, experiment_id = live.mlflow()
        r = self.client.create_run(experiment_id, run_name=run.full_name,
                                   tags={k: v[:5000] for k, v in run.tags.items()})
        self.run_id = r.info.run_id
        params = [Param(k, v[:500]) for k, v in run.params.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def scalars(self, step: int, values: Mapping[str, float], axis: str | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, v, now, int(step)) for tag, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def finish(self, status: str, rows: list[dict]) -> None:
        try:
            if rows:
                from ablate.io.frames import flat_frame

                self.client.log_text(self.run_id, flat_frame(rows).to_csv(index=False), "rows.csv")
        finally:
            self.client.set_terminated(self.run_id, status)


class _WandbSink:
    EXIT = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}

    def __init__(self, live: "LiveLog", run: "ModelRun"):
        from ablate.io.trackers import wandb_init

        self.wb = wandb_init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, name=run.full_name,
                             group=safe_name(f"{live.suite}-{live.run_id}"), job_type="ablate-run",
                             tags=["ablate", live.suite, live.device, live.preset],
                             config={**run.params, **run.tags},
                             out=None if os.environ.get("WANDB_DIR") else Path(live.out))
        self.axes: set[str] = set()

    def scalars(self, step: int, values: Mapping[str, float], axis: str | None = None) -> None:
        if axis is None:  # the training step: W&B's own step (it only goes up)
            self.wb.log(dict(values), step=int(step))
            return
        for tag in values:  # a row's length axis: its own x-axis, whatever the training step reached
            if tag not in self.axes:
                self.wb.define_metric(tag, step_metric=axis)
                self.axes.add(tag)
        self.wb.log({**values, axis: step})

    def finish(self, status: str, rows: list[dict]) -> None:
        try:
            if rows:
                import wandb

                from ablate.io.frames import flat_frame

                frame = flat_frame(rows).astype(object)
                self.wb.log({"rows": wandb.Table(dataframe=frame.where(frame.notna(), None))})
        finally:
            self.wb.finish(exit_code=self.EXIT.get(status, 1))


_SINKS = {"tensorboard": _TensorBoardSink, "mlflow": _MLflowSink, "wandb": _WandbSink}


# ---------------------------------------------------------------------------------------------------------------
# The run's trackers, and one model's tracker runs


class LiveLog:
    """The trackers of one ``ablate run`` process (``targets``: names of :data:`ablate.io.trackers.TRACKERS`). Checks
    every package, and opens the MLflow store, when made: before anything trains."""

    def __init__(self, targets: Sequence[str], *, out: str | os.PathLike, suite: str, device: str, preset: str,
                 run_id: str | None = None):
        from ablate.store.results import current_run_id

        self.targets = parse_targets(targets, suite)
        self.out, self.suite, self.device, self.preset = Path(out), suite, device, preset
        self.run_id = run_id or current_run_id()
        self.dead: dict[str, str] = {}  # tracker -> why it stopped logging
        self._mlflow: tuple[Any, str] | None = None
        if "mlflow" in self.targets:
            self.mlflow()

    def mlflow(self) -> tuple[Any, str]:
        """(client, experiment id) of the MLflow store (:func:`mlflow_store`), opened once."""
        if self._mlflow is None:
            from ablate.io.trackers import mlflow_experiment

            self._mlflow = mlflow_experiment(mlflow_store(self.out),
                                             os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT)
        return self._mlflow

    def active(self) -> list[str]:
        return [t for t in self.targets if t not in self.dead]

    def guard(self, target: str, fn: Any) -> Any:
        """``fn()``; a tracker that fails stops logging (one warning), the run goes on. Ctrl-C is not caught."""
        if target in self.dead:
            return None
        try:
            return fn()
        except Exception as exc:
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            self.dead[target] = why
            sys.stderr.write(f"ablate: warning: {FLAG} {target} stopped logging ({why}); the run goes on\n")
            return None

    @contextmanager
    def model_run(self, name: str, config: Any = None, keys: Sequence[Mapping[str, Any]] = ()) -> Iterator["ModelRun"]:
        """One tracker run per tracker for the model ``name``, closed however the block ends (see the module
        docstring); ``config``: its settings (as the rows' ``config``), ``keys``: the key fields of its rows."""
        run = ModelRun(self, name, config, keys)
        status = "FINISHED"
        try:
            yield run
        except KeyboardInterrupt:  # Ctrl-C, and SIGTERM (ablate.errors.Terminated)
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            run.close(status)


class ModelRun:
    """One model's tracker runs: ``on_log`` (the :func:`ablate.core.train.train` callback), ``row`` (a written row),
    ``tap`` (a results writer whose rows are logged as they are written)."""

    def __init__(self, live: LiveLog, name: str, config: Any, keys: Sequence[Mapping[str, Any]]):
        from ablate.store.env import env_columns
        from ablate.store.results import flatten, to_jsonable

        self.live, self.name = live, safe_name(name).replace("/", "_")
        self.full_name = safe_name(f"{live.suite}-{name}").replace("/", "_")
        keys = [dict(k) for k in keys]
        params: dict[str, str] = {"suite": live.suite, "model": self.name, "run_id": live.run_id,
                                  "device": live.device, "preset": live.preset}
        if keys:
            for k, v in keys[0].items():
                if all(k in other and other[k] == v for other in keys[1:]) and v is not None:
                    params[safe_name(k)] = _text(to_jsonable(v))
        if config is not None:
            for k, v in flatten(to_jsonable({"config": config})).items():
                if v is not None:
                    params[safe_name(k)] = _text(v)
        self.params = params
        tags = {f"ablate.{k}": params[k] for k in ("suite", "model", "run_id", "device", "preset")}
        tags.update({safe_name(k): _text(v) for k, v in env_columns().items() if v is not None})
        self.tags = tags
        self.labels = _row_labels(keys)
        self.last_step = 0
        self.rows: list[dict] = []
        self.sinks: dict[str, Any] = {}
        for t in live.active():
            sink = live.guard(t, lambda t=t: _SINKS[t](live, self))
            if sink is not None:
                self.sinks[t] = sink

    def _each(self, call: Any) -> None:
        for t, sink in list(self.sinks.items()):
            if t in self.live.dead:
                continue
            self.live.guard(t, lambda sink=sink: call(sink))

    def on_log(self, entry: Mapping[str, Any]) -> None:
        """A training log point or an evaluation (:func:`ablate.core.train.log_entry`): its numbers, at its step."""
        step = int(entry.get("step") or 0)
        values = {CURVE_TAGS.get(k, safe_name(f"curve.{k}")): v for k, v in
                  ((k, _number(v)) for k, v in entry.items() if k not in ("step", "elapsed")) if v is not None}
        self.last_step = max(self.last_step, step)
        if values:
            self._each(lambda sink: sink.scalars(step, values))

    def row(self, row: Mapping[str, Any]) -> None:
        """A measurement row as written: its numbers (``ok`` rows), and it is kept for the rows table."""
        self.rows.append(dict(row))
        if row.get("status") != "ok":
            return
        axis, step, values = row_scalars(row, self.labels.get(str(row.get("row_key")), ""))
        if values:
            self._each(lambda sink: sink.scalars(self.last_step if step is None else step, values, axis))

    def tap(self, writer: Any) -> "_Tap":
        """``writer`` (an :class:`ablate.store.results.ResultWriter`) whose written rows are logged here too."""
        return _Tap(writer, self)

    def close(self, status: str) -> None:
        if status == "FINISHED" and any(r.get("status") in FAILED_ROWS for r in self.rows):
            status = "FAILED"
        self._each(lambda sink: sink.finish(status, self.rows))
        self.sinks.clear()


def _row_labels(keys: list[dict]) -> dict[str, str]:
    """row_key -> label of the rows a model owes: the key fields that vary between them (as
    :func:`ablate.io.tracker_runs.tracker_runs` labels them), "" when none does."""
    if len(keys) < 2:
        return {}
    from ablate.io.tracker_runs import LABEL_SKIP, scalar_labels
    from ablate.store.results import row_key

    rows = [{**k, "key_fields": sorted(k)} for k in keys]
    return {row_key(k): ("" if label == "all" else label) for k, label in zip(keys, scalar_labels(rows, skip=LABEL_SKIP))}


class _Tap:
    """A results writer whose rows also go to a :class:`ModelRun` (everything else is the writer's)."""

    def __init__(self, writer: Any, run: ModelRun):
        self._writer, self._run = writer, run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    def write(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        row = self._writer.write(*args, **kwargs)
        self._run.row(row)
        return row

    def write_exception(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        row = self._writer.write_exception(*args, **kwargs)
        self._run.row(row)
        return row


class _NullRun:
    """What :func:`model_run` yields without ``--log-to``: nothing is called, nothing changes."""

    on_log = None

    def row(self, row: Mapping[str, Any]) -> None:
        return None

    def tap(self, writer: Any) -> Any:
        return writer


_NULL_RUN = _NullRun()


def open_live(opts: Any, suite: str, device: str, preset: str) -> LiveLog | None:
    """The :class:`LiveLog` of a suite's run (``opts``: its :class:`ablate.plan.runner.RunOptions`); None without
    ``--log-to``."""
    targets = tuple(getattr(opts, "log_to", ()) or ())
    if not targets:
        return None
    return LiveLog(targets, out=opts.out, suite=suite, device=device, preset=preset)


@contextmanager
def model_run(live: LiveLog | None, name: str, config: Any = None,
              keys: Sequence[Mapping[str, Any]] = ()) -> Iterator[Any]:
    """``live.model_run(...)``, or a no-op run (``on_log`` None, ``tap`` the writer itself) when ``live`` is None."""
    if live is None:
        yield _NULL_RUN
        return
    with live.model_run(name, config, keys) as run:
        yield run
