"""TensorBoard's HParams dashboard for ``ablate export --to tensorboard`` (and ``ablate run --log-to tensorboard``,
sessions only, as each model finishes): one session (a run folder) per row, so
rows compare side by side in one table, filtered and sorted by any setting.

:func:`hparams_table` says what is written, as plain data: the typed hyperparameters (:class:`HParam`: the row's
key fields -- the variant keys, seed, lengths --, every ``config.*`` setting, and ``suite``, ``run_id``, ``status``),
the metric names, and one :class:`Session` per row (its hyperparameter values and its measured numbers: ``value``
named by the row's ``metric``, and every other finite column of :data:`ablate.store.schema.NUMBER_COLUMNS`).
:func:`write_hparams` writes it with TensorBoard's own protos (``tensorboard.plugins.hparams``): the experiment
(each hyperparameter's type and domain, the metrics) in ``<out>/hparams``, and each row's session start (its
values), scalars (step 0) and end (its status) in ``<out>/hparams/<suite>-<run_id>/<label>``.

Types: a column whose values are all booleans is ``DATA_TYPE_BOOL``; all numbers ``DATA_TYPE_FLOAT64`` (HParams has
no integer type: integers keep their exact value, and a discrete domain of them); anything else ``DATA_TYPE_STRING``
(a list as JSON text, a column mixing types as text throughout). A domain is discrete (the values present, sorted)
up to :data:`MAX_DISCRETE` values, else an interval (numbers) or none (text). A missing value is left out of the
session (an empty cell).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ablate.io.frames import json_text
from ablate.io.tracker_runs import LABEL_SKIP, scalar_labels, step_of
from ablate.io.trackers import safe_name, tensorboard_writer
from ablate.store.schema import CONFIG_PREFIX, NUMBER_COLUMNS

__all__ = ["HPARAMS_DIR", "MAX_DISCRETE", "HParam", "Session", "HParamsTable", "hparams_table", "write_hparams"]

HPARAMS_DIR = "hparams"
MAX_DISCRETE = 64
RUN_COLUMNS = ("suite", "run_id", "status")  # beside the key fields and config.*: which run, and what came of it
# status -> the session's end status (TensorBoard's Status enum names); other statuses: STATUS_UNKNOWN
END_STATUS = {"ok": "STATUS_SUCCESS", "error": "STATUS_FAILURE", "oom": "STATUS_FAILURE",
              "diverged": "STATUS_FAILURE"}


@dataclass
class HParam:
    """One hyperparameter: ``kind`` is ``bool``, ``number`` or ``str``; ``domain`` the sorted values (discrete),
    ``(min, max)`` (an interval of numbers) or None; ``differs``: whether rows hold more than one value."""

    name: str
    kind: str
    domain: list[Any] | tuple[float, float] | None
    differs: bool
    integer: bool = False


@dataclass
class Session:
    """One row: its run folder (relative to ``<out>/hparams``), its hyperparameter values (typed as the
    :class:`HParam` says; missing ones left out), its metrics and its ``status``."""

    name: str
    hparams: dict[str, Any]
    metrics: dict[str, float]
    status: str
    row_key: str = ""


@dataclass
class HParamsTable:
    hparams: list[HParam] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)  # name -> unit ("" when none)
    sessions: list[Session] = field(default_factory=list)


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "str"


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json_text(v)


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _hparam_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = dict.fromkeys(RUN_COLUMNS)
    for r in rows:
        for k in r.get("key_fields") or []:
            if k not in LABEL_SKIP:
                names.setdefault(k, None)
    for r in rows:
        for c in r:
            if c.startswith(CONFIG_PREFIX):
                names.setdefault(c, None)
    return list(names)


def _hparam(name: str, values: list[Any]) -> HParam | None:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None
    kinds = {_kind(v) for v in present}
    kind = kinds.pop() if len(kinds) == 1 else "str"
    if kind == "str":
        present = [_text(v) for v in present]
    distinct = sorted(set(present))
    integer = kind == "number" and all(isinstance(v, int) or float(v).is_integer() for v in present)
    domain: Any = None
    if len(distinct) <= MAX_DISCRETE:
        domain = distinct
    elif kind == "number":
        domain = (float(distinct[0]), float(distinct[-1]))
    return HParam(name, kind, domain, len(distinct) > 1, integer)


def _value(hp: HParam, v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hp.kind == "str":
        return _text(v)
    if hp.kind == "number" and not math.isfinite(v):
        return None
    return v


def _metrics(r: Mapping[str, Any]) -> dict[str, float]:
    """A row's measured numbers: ``value`` as its ``metric``, then the other finite number columns."""
    out: dict[str, float] = {}
    metric = r.get("metric") if isinstance(r.get("metric"), str) and r.get("metric") else None
    if metric is not None and _finite(r.get("value")) is not None:
        out[safe_name(metric)] = _finite(r.get("value"))
    for c in NUMBER_COLUMNS:
        if c != "value" and safe_name(c) not in out and _finite(r.get(c)) is not None:
            out[safe_name(c)] = _finite(r.get(c))
    return out


def _session_names(rows: list[dict[str, Any]]) -> list[str]:
    """``<suite>-<run_id>/<label>``: the key fields that vary within the run, its length axis (and its metric
    where the run holds several);
    ``#1``, ``#2``, ... added where rows would share a name."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((str(r.get("suite")), str(r.get("run_id"))), []).append(i)
    names = [""] * len(rows)
    for (suite, run_id), idx in groups.items():
        run = safe_name(f"{suite}-{run_id}").replace("/", "_")
        rs = [rows[i] for i in idx]
        many = len({r.get("metric") for r in rs}) > 1
        for i, r, label in zip(idx, rs, scalar_labels(rs, skip=LABEL_SKIP + ("metric",))):
            axis, step = step_of(r)
            parts = [] if label == "all" else [label]
            parts += [f"{axis}={step}"] if axis else []
            parts += [f"metric={r.get('metric')}"] if many else []
            names[i] = f"{run}/{safe_name(','.join(parts) or 'row').replace('/', '_')}"
    count: dict[str, int] = {}
    for n in names:
        count[n] = count.get(n, 0) + 1
    out, k = [], {}
    for n in names:  # rows no key field tells apart (--all-rows: a re-measured row): numbered
        k[n] = k.get(n, 0) + 1
        out.append(f"{n} #{k[n]}" if count[n] > 1 else n)
    return out


def hparams_table(rows: Sequence[Mapping[str, Any]]) -> HParamsTable:
    """What :func:`write_hparams` writes for ``rows`` (see the module docstring), in row order."""
    rows = [dict(r) for r in rows]
    hps = [hp for hp in (_hparam(n, [r.get(n) for r in rows]) for n in _hparam_names(rows)) if hp is not None]
    table = HParamsTable(hparams=hps)
    for r, name in zip(rows, _session_names(rows)):
        values = {hp.name: _value(hp, r.get(hp.name)) for hp in hps}
        metrics = _metrics(r) if r.get("status") == "ok" else {}
        for m in metrics:
            unit = r.get("unit") if m == safe_name(str(r.get("metric"))) and isinstance(r.get("unit"), str) else ""
            if unit or m not in table.metrics:
                table.metrics[m] = unit or table.metrics.get(m, "")
        table.sessions.append(Session(name, {k: v for k, v in values.items() if v is not None}, metrics,
                                      str(r.get("status")), str(r.get("row_key") or "")))
    return table


# ---------------------------------------------------------------------------------------------------------------
# Event files


def _summary(tag: str, data: Any) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(
        data))])


def _set_value(msg: Any, hp: HParam, v: Any) -> None:
    """Fill a protobuf ``Value`` (``msg``) with ``v`` as ``hp``'s type."""
    if hp.kind == "bool":
        msg.bool_value = bool(v)
    elif hp.kind == "number":
        msg.number_value = float(v)
    else:
        msg.string_value = str(v)


def _experiment(table: HParamsTable, created: float) -> Any:
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    types = {"bool": "DATA_TYPE_BOOL", "number": "DATA_TYPE_FLOAT64", "str": "DATA_TYPE_STRING"}
    infos = []
    for hp in table.hparams:
        info = api_pb2.HParamInfo(name=hp.name, type=api_pb2.DataType.Value(types[hp.kind]), differs=hp.differs,
                                  description="integer" if hp.integer else "")
        if isinstance(hp.domain, list):
            for v in hp.domain:
                _set_value(info.domain_discrete.values.add(), hp, v)
        elif isinstance(hp.domain, tuple):
            info.domain_interval.CopyFrom(api_pb2.Interval(min_value=hp.domain[0], max_value=hp.domain[1]))
        infos.append(info)
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m), display_name=m, description=unit)
               for m, unit in table.metrics.items()]
    exp = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=created)
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp))


def write_hparams(rows: Sequence[Mapping[str, Any]], out: Path, *, experiment: bool = True) -> list[str]:
    """Write the HParams experiment and one session per row under ``out / HPARAMS_DIR``; the session folders.

    ``experiment=False`` writes the sessions only (``ablate run --log-to tensorboard``: one model's rows at a time):
    TensorBoard then builds the experiment from every session under its ``--logdir``, so the models of a sweep, and
    of several runs, compare in one table."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    table = hparams_table(rows)
    by_name = {hp.name: hp for hp in table.hparams}
    root = Path(out) / HPARAMS_DIR
    now = time.time()
    if experiment:
        writer = tensorboard_writer(root)
        try:
            writer.file_writer.add_summary(_experiment(table, now))
        finally:
            writer.close()
    done = []
    for s in table.sessions:
        start = plugin_data_pb2.SessionStartInfo(group_name=s.name, start_time_secs=now)
        for k, v in s.hparams.items():
            _set_value(start.hparams[k], by_name[k], v)
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(END_STATUS.get(s.status, "STATUS_UNKNOWN")),
                                             end_time_secs=now)
        writer = tensorboard_writer(root / s.name)
        try:
            writer.file_writer.add_summary(_summary(metadata.SESSION_START_INFO_TAG,
                                                    plugin_data_pb2.HParamsPluginData(session_start_info=start)))
            for m, v in s.metrics.items():
                writer.add_scalar(m, v, global_step=0)
            writer.file_writer.add_summary(_summary(metadata.SESSION_END_INFO_TAG,
                                                    plugin_data_pb2.HParamsPluginData(session_end_info=end)))
        finally:
            writer.close()
        done.append(str(root / s.name))
    return done
