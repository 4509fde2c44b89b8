"""Calibrate the regression gate on repeats: does ``ablate compare`` stay quiet when nothing changed, and does it catch
a change of the size it should?

Give it two runs of the *same* code and preset on the same machine, made in separate processes (A, B):

1. **False alarms**: ``compare(A, B)`` with the rules in force; every regression it reports is a false alarm.
2. **Repeat spread**: for every gated metric of every matched row, ``|B - A| / A``. A row whose repeat spread exceeds
   its threshold is *noisy*: the run-to-run noise of that measurement is larger than the change the gate is meant to
   catch, so a verdict on it would be a coin flip. Noisy rows are listed (with their spread) in the calibration file;
   ``ablate compare --noise FILE`` reports them as ``noisy``, never as regressions, and says how many there were.
3. **Planted slowdown**: B with one measurement made ``plant`` % worse (its time and its p20..p80 band scaled), and
   the comparison run again: the gate must flag it as a regression unless that row is noisy.

The calibration file (JSON) records the rules, the counts, the spread quantiles, the noisy rows and the planted
check, so a nightly job can carry it beside its baseline.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from ablate.regress.compare import compare, describe, identity
from ablate.regress.compare_rules import DEFAULT_FAIL_IF, METRICS, metric_values, parse_fail_if
from ablate.errors import ConfigError

__all__ = ["Calibration", "calibrate", "plant_slowdown", "noisy_identities", "CALIBRATION_VERSION"]

CALIBRATION_VERSION = 1
_BAND = {"time_ms": ("p20_ms", "p80_ms")}


@dataclass
class Calibration:
    fail_if: list[str]
    matched_rows: int = 0
    false_alarms: int = 0
    false_alarm_rows: list[str] = field(default_factory=list)
    spread_quantiles: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> p50/p90/p99/max (%)
    noisy: list[dict[str, Any]] = field(default_factory=list)  # suite, identity, config, metric, spread_pct, rule
    planted: dict[str, Any] = field(default_factory=dict)
    version: int = CALIBRATION_VERSION

    @property
    def ok(self) -> bool:
        """No false alarm and the planted slowdown caught (or the planted row was noisy, which is reported)."""
        return self.false_alarms == 0 and bool(self.planted.get("caught") or self.planted.get("noisy"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def summary(self) -> str:
        q = "; ".join(f"{m}: p50 {v['p50']:.2f}%, p90 {v['p90']:.2f}%, max {v['max']:.2f}%"
                      for m, v in sorted(self.spread_quantiles.items()))
        p = self.planted
        planted = (f"planted {p.get('percent')}% slowdown of {p.get('config')} ({p.get('metric')}): "
                   + ("caught" if p.get("caught") else "noisy row, reported" if p.get("noisy") else "MISSED")
                   if p else "no row to plant a slowdown in")
        return (f"calibrate: {'ok' if self.ok else 'FAIL'}: {self.false_alarms} false alarm(s) in "
                f"{self.matched_rows} repeated row(s); {len(self.noisy)} noisy row(s) (repeat spread past the "
                f"threshold); repeat spread {q or 'n/a'}; {planted}; fail-if {', '.join(self.fail_if)}")


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    v = sorted(values)

    def q(p: float) -> float:
        if len(v) == 1:
            return v[0]
        i = p * (len(v) - 1)
        lo, hi = math.floor(i), math.ceil(i)
        return v[lo] + (v[hi] - v[lo]) * (i - lo)

    return {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": v[-1], "n": float(len(v))}


def plant_slowdown(rows: Sequence[Mapping[str, Any]], percent: float, metric: str = "time_ms",
                   target: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Rows with one ``ok`` measurement of ``metric`` made ``percent`` % worse (its band too): the first such row
    in file order, or the one whose :func:`~ablate.regress.compare.describe` contains ``target``. Returns (rows, that row)."""
    info = METRICS.get(metric)
    if info is None:
        raise ConfigError(f"cannot plant a change in unknown metric {metric!r}; valid: {', '.join(sorted(METRICS))}")
    factor = 1 + percent / 100.0 if info.better == "lower" else 1 / (1 + percent / 100.0)
    out: list[dict[str, Any]] = []
    planted: dict[str, Any] | None = None
    for r in rows:
        r = dict(r)
        if planted is None and r.get("status") == "ok" and metric in metric_values(r) and (
                target is None or target in describe(r)):
            r[metric] = r[metric] * factor
            if r.get("metric") == metric and isinstance(r.get("value"), (int, float)):
                r["value"] = r["value"] * factor
            for col in _BAND.get(metric, ()):
                if isinstance(r.get(col), (int, float)):
                    r[col] = r[col] * factor
            planted = r
        out.append(r)
    return out, planted


def calibrate(run_a: Sequence[Mapping[str, Any]], run_b: Sequence[Mapping[str, Any]],
              fail_if: Sequence[str] | None = None, *, plant_percent: float = 5.0, plant_metric: str = "time_ms",
              plant_target: str | None = None) -> Calibration:
    """Calibrate the gate on two repeated runs (rows as :func:`ablate.regress.compare.load_rows` returns them)."""
    exprs = list(fail_if) if fail_if else list(DEFAULT_FAIL_IF)
    rules = parse_fail_if(exprs)
    by_metric: dict[str, list] = {}
    for r in rules:
        by_metric.setdefault(r.metric, []).append(r)
    cal = Calibration(fail_if=[r.text for r in rules])
    first = compare(list(run_a), list(run_b), exprs)
    cal.matched_rows = first.matched_rows
    alarms = first.by("regression")
    cal.false_alarms = len(alarms)
    cal.false_alarm_rows = [f"{e.suite} {e.config} {e.metric}: {e.baseline} -> {e.new}" for e in alarms]

    a_by = {identity(r): r for r in run_a if r.get("status") == "ok"}
    spreads: dict[str, list[float]] = {}
    for rb in run_b:
        ra = a_by.get(identity(rb))
        if ra is None or rb.get("status") != "ok":
            continue
        va, vb = metric_values(ra), metric_values(rb)
        for m in sorted(set(va) & set(vb) & set(by_metric)):
            if not va[m]:
                continue
            spread = abs(vb[m] - va[m]) / abs(va[m]) * 100.0
            spreads.setdefault(m, []).append(spread)
            if any(r.exceeds(va[m], va[m] * (1 + spread / 100.0), "lower")[0] for r in by_metric[m]):
                cal.noisy.append({"suite": str(rb.get("suite")), "identity": identity(rb)[1], "config": describe(rb),
                                  "metric": m, "spread_pct": spread,
                                  "rule": ", ".join(r.text for r in by_metric[m])})
    cal.spread_quantiles = {m: _quantiles(v) for m, v in spreads.items() if v}

    planted_rows, planted = plant_slowdown(run_b, plant_percent, plant_metric, plant_target)
    if planted is not None:
        noisy_ids = {(n["identity"], n["metric"]) for n in cal.noisy}
        second = compare(list(run_a), planted_rows, exprs)
        target = describe(planted)
        caught = any(e.config == target and e.metric == plant_metric for e in second.by("regression"))
        cal.planted = {"percent": plant_percent, "metric": plant_metric, "config": target, "caught": caught,
                       "noisy": (identity(planted)[1], plant_metric) in noisy_ids,
                       "other_regressions": sum(1 for e in second.by("regression") if e.config != target)}
    return cal


def noisy_identities(calibration: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """``{(suite, identity, metric)}`` of the noisy rows of a calibration file's JSON."""
    try:
        return {(str(n["suite"]), str(n["identity"]), str(n["metric"])) for n in calibration.get("noisy", [])}
    except (TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"not an ablate calibration file (noisy rows unreadable: {exc})") from None
