"""What ``ablate export --to wandb|mlflow|tensorboard`` logs, as plain data: :func:`tracker_runs` (one
:class:`TrackerRun` per ``(suite, run_id)``: params, scalars, rows), with each row's step (:func:`step_of`, the first
of :data:`STEP_AXES` among its key fields) and label (:func:`scalar_labels`), which ``ablate run --log-to`` uses too.
Every name is importable from :mod:`ablate.io.export` too."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ablate.io.frames import columns, hashable, json_text
from ablate.io.trackers import safe_name
from ablate.store.results import PathLike
from ablate.store.schema import NUMBER_COLUMNS, RESERVED_COLUMNS

STEP_AXES = ("eval_len", "seq_len", "context", "prompt_len")
# Key fields left out of scalar labels: identifiers that vary with the variant keys beside them.
LABEL_SKIP = ("config_id", "grid_id", "device_name")
CURVE_PREFIX = "curve."


def _value_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v if isinstance(v, str) else json_text(v)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


@dataclass
class TrackerRun:
    """One tracker run: ``name`` (``<suite>-<run_id>``), ``params`` (the run's constant columns, as text),
    ``scalars`` ((tag, step, value), sorted by step then tag) and ``rows`` (the run's rows)."""

    name: str
    suite: str
    run_id: str
    params: dict[str, str] = field(default_factory=dict)
    scalars: list[tuple[str, int, float]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def by_step(self) -> list[tuple[int, dict[str, float]]]:
        steps: dict[int, dict[str, float]] = {}
        for tag, step, value in self.scalars:
            steps.setdefault(step, {})[tag] = value
        return sorted(steps.items())


def step_of(r: Mapping[str, Any]) -> tuple[str | None, int]:
    kf = r.get("key_fields") or []
    for axis in STEP_AXES:
        if axis in kf:
            v = r.get(axis)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                return axis, int(v)
    return None, 0


def scalar_labels(rows: list[dict[str, Any]], *, skip: Sequence[str]) -> list[str]:
    """Each row's label: its key fields whose values vary within ``rows`` (minus ``skip``), ``k=v`` joined by ``,``."""
    values: dict[str, set] = {}
    for r in rows:
        for k in r.get("key_fields") or []:
            values.setdefault(k, set()).add(hashable(r.get(k)))
    for k in values:  # a key field some rows lack (a fine-tuning stage) varies: absent is a value of its own
        if any(k not in (r.get("key_fields") or []) for r in rows):
            values[k].add(None)
    varying = [k for k in sorted(values) if len(values[k]) > 1 and k not in skip and k != "metric"]
    for k in reversed(list(varying)):  # a key the others determine (trained_position beside position) says nothing
        others = [x for x in varying if x != k]
        seen: dict[tuple, set] = {}
        for r in rows:
            seen.setdefault(tuple(hashable(r.get(x)) for x in others), set()).add(hashable(r.get(k)))
        if others and all(len(v) == 1 for v in seen.values()):
            varying = others
    out = []
    for r in rows:
        axis, _ = step_of(r)
        parts = [f"{k}={_value_text(r.get(k))}" for k in varying
                 if k in (r.get("key_fields") or []) and k != axis and r.get(k) is not None]
        out.append(",".join(parts) or "all")
    return out


def _points(r: Mapping[str, Any], label: str, many_metrics: bool = False) -> list[tuple[str, int, float]]:
    """The scalars of one ``ok`` row: its ``value`` (named by ``metric``), its other measured number columns (their
    label names the row's metric too when the run holds several), and its ``curve.*`` lists against their steps."""
    _, step = step_of(r)
    pts: list[tuple[str, int, float]] = []
    metric = r.get("metric") if isinstance(r.get("metric"), str) and r.get("metric") else None
    v = _number(r.get("value"))
    if metric is not None and v is not None:
        pts.append((safe_name(f"{metric}/{label}"), step, v))
    other = f"{label},metric={metric}" if metric is not None and many_metrics else label
    for c in NUMBER_COLUMNS:
        if c == "value" or c == metric or c not in r:
            continue
        v = _number(r.get(c))
        if v is not None:
            pts.append((safe_name(f"{c}/{other}"), step, v))
    for c, ys in r.items():
        if not c.startswith(CURVE_PREFIX) or not isinstance(ys, list):
            continue
        name = c[len(CURVE_PREFIX):]
        if name in ("step", "val_step", "tokens"):
            continue
        xs = r.get(f"{CURVE_PREFIX}val_step" if name.startswith("val_") else f"{CURVE_PREFIX}step")
        if not isinstance(xs, list) or len(xs) != len(ys):
            continue
        for x, y in zip(xs, ys):
            xv, yv = _number(x), _number(y)
            if xv is not None and yv is not None:
                pts.append((safe_name(f"{c}/{label}"), int(xv), yv))
    return pts


def tracker_runs(rows: Sequence[Mapping[str, Any]], sources: Sequence[PathLike] = ()) -> list[TrackerRun]:
    """The tracker runs for ``rows``: one per ``(suite, run_id)``, in order of first appearance."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r.get("suite")), str(r.get("run_id"))), []).append(dict(r))
    runs = []
    for (suite, run_id), rs in groups.items():
        run = TrackerRun(name=safe_name(f"{suite}-{run_id}").replace("/", "_"), suite=suite, run_id=run_id, rows=rs)
        params: dict[str, str] = {"suite": suite, "run_id": run_id}
        if sources:
            params["results"] = ", ".join(str(s) for s in sources)
        for c in columns(rs):
            if c in RESERVED_COLUMNS or c.startswith(CURVE_PREFIX):
                continue
            vals = {hashable(r.get(c)) for r in rs}
            if len(vals) == 1 and all(c in r for r in rs):
                v = rs[0].get(c)
                if v is not None:
                    params[safe_name(c)] = _value_text(v)[:500]
        run.params = params
        ok = [r for r in rs if r.get("status") == "ok"]
        many = len({r.get("metric") for r in ok if r.get("metric") is not None}) > 1
        scalars: dict[tuple[str, int], float] = {}
        for skip in (LABEL_SKIP, ()):  # labels without the identifier columns unless they are needed to tell apart
            labels = scalar_labels(ok, skip=skip)
            scalars, clash = {}, False
            for r, label in zip(ok, labels):
                for tag, step, value in _points(r, label, many):
                    clash = clash or (tag, step) in scalars
                    scalars[(tag, step)] = value
            if not clash:
                break
        if clash:  # still ambiguous (rows differing in no key field): the row key tells them apart
            scalars = {}
            for r, label in zip(ok, scalar_labels(ok, skip=())):
                for tag, step, value in _points(r, f"{label},row={r.get('row_key')}", many):
                    scalars[(tag, step)] = value
        run.scalars = sorted(((t, s, v) for (t, s), v in scalars.items()), key=lambda p: (p[1], p[0]))
        runs.append(run)
    return runs
