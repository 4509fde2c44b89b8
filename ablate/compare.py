"""``ablate compare BASELINE NEW``: regression tracking between two sets of results (JSONL files or folders).

Rows are matched by their configuration: the suite plus the row's identifying fields (``key_fields``: variant keys,
shape, dtype, ``device`` class ...) -- without the hardware name (``device_name``), which is checked separately as
part of the environment (below). Each metric is compared in its own direction (:data:`METRICS`: time, memory and
loss lower-is-better; TFLOP/s, tokens/s, MFU higher-is-better).

Thresholds use pytest-benchmark's ``--benchmark-compare-fail`` syntax, repeatable (see :func:`parse_fail_if`)::

    time_ms:5%        the median time may grow by at most 5 %
    tflops:10%        TFLOP/s may drop by at most 10 % (the direction comes from the metric)
    median:0.001      pytest-benchmark's stat names are accepted too; their absolute amounts are in seconds
    peak_mem_bytes:1048576   an absolute amount in the metric's own unit

Noise: a latency row carries the spread of its timing (``p20_ms`` / ``p80_ms`` around the median ``time_ms``). A
change counts as a regression only when it clears the spread measured on *both* sides: the new median lies outside
the baseline's p20..p80 band *and* the baseline median lies outside the new band. Metrics derived from the same
timing (TFLOP/s, tokens/s, MFU) get the same relative band. A change past the threshold but inside the spread is
listed as ``noise`` and does not fail.

Environments: each row's hardware signature is (GPU name, torch major version, ``device_name``). Rows are compared
only between equal signatures; when the two sides share none (a different GPU, torch 2 vs 3, another CPU or thread
count) the comparison is refused with one line, unless ``allow_env_mismatch`` (then rows are matched by
configuration alone). Baseline rows from other machines than any in NEW are set aside (``other hardware``).

Statuses: a row ``ok`` in the baseline that became ``error``, ``diverged`` or ``oom`` is a regression; one that
became ``unavailable``/``unsupported`` or disappeared is ``missing``; a row only NEW measured is ``new``.

Gated or reported only (:func:`not_gated_reason`): some columns measure the process rather than the variant, and are
compared and shown but never fail the run (category ``reported``, note ``not gated: <why>``):

* peak memory (``peak_mem_bytes``, ``step_extra_mem_bytes``) unless it is a per-run measurement: rows with
  ``peak_mem_kind == "cpu_maxrss"`` (``ru_maxrss``, the whole process's high-water mark) and rows on a non-CUDA
  ``device`` that do not say how memory was measured (the extrapolation suite's CPU rows) are process-wide peak RSS;
  ``cuda_max_allocated`` rows and CUDA rows without a kind (the latency suite's per-call allocator peak) are gated;
* wall times and the rates derived from them (``time_ms``, ``tokens_per_s``, ``train_tokens_per_s``, ``train_s``,
  ``eval_s``, ``step_ms`` ...) of a run that loaded a checkpoint (``from_checkpoint: true`` on either side): they time
  the resume, or copy a timing made by another process, not the variant;
* ``first_call_s`` / ``compile_s``: one synchronised first call, which includes the process's one-time costs (CUDA
  context and library loading for the first kernel of a process, torch.compile's in-memory and on-disk caches).

Every metric with a ``--fail-if`` expression carries its noise rule in the output (:func:`noise_rule`), and
``Comparison.metrics`` says per metric whether it was gated, on how many rows, and why not.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ablate.errors import AblateError, ConfigError, ResultsFileError
from ablate.results import PathLike, read_rows, row_key

__all__ = ["METRICS", "ALIASES", "DEFAULT_FAIL_IF", "HW_KEY_FIELDS", "REGRESSION_STATUSES", "Metric", "FailIf",
           "MEASURED_MEM_METRICS", "PER_RUN_MEM_KINDS", "TIMING_METRICS", "FIRST_CALL_METRICS", "QUALITY_METRICS",
           "not_gated_reason", "noise_rule", "MetricGate", "Entry", "Comparison", "EnvMismatchError", "parse_fail_if",
           "load_rows", "hw_signature", "identity",
           "describe", "compare", "compare_paths", "render_markdown", "render_json", "github_benchmark_json",
           "write_github_json", "metric_values", "print_table", "format_table", "table_rows", "metric_rows",
           "CATEGORIES"]


class EnvMismatchError(AblateError):
    """BASELINE and NEW were measured on different hardware / torch major versions."""


# ---------------------------------------------------------------------------------------------------------------
# Metric directions


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # "lower" | "higher"
    unit: str
    kind: str = "other"  # "time": proportional to the timed median; "rate": inversely proportional; "other"
    seconds_per_unit: float | None = None  # for pytest-benchmark aliases: absolute amounts given in seconds


def _m(name: str, better: str, unit: str, kind: str = "other", spu: float | None = None) -> tuple[str, Metric]:
    return name, Metric(name, better, unit, kind, spu)


# The declared directions. Columns not listed here (spreads, counts, FLOP counts, config-derived sizes, errors
# against the reference) are never compared.
METRICS: dict[str, Metric] = dict([
    # latency suite (suites/latency.py): time_ms is the median; p20_ms/p80_ms its spread
    _m("time_ms", "lower", "ms", "time", 1e-3),
    _m("mean_ms", "lower", "ms", "time", 1e-3),
    _m("tflops", "higher", "TFLOP/s", "rate"),
    _m("tokens_per_s", "higher", "tokens/s", "rate"),
    _m("mfu", "higher", "fraction", "rate"),
    _m("peak_mem_bytes", "lower", "bytes"),
    _m("step_extra_mem_bytes", "lower", "bytes"),
    _m("kv_bytes", "lower", "bytes"),
    _m("kv_bytes_allocated", "lower", "bytes"),
    _m("first_call_s", "lower", "s"),
    _m("compile_s", "lower", "s"),
    # wall times of a whole training / evaluation (extrapolation and training suites)
    _m("train_s", "lower", "s"),
    _m("eval_s", "lower", "s"),
    # extrapolation suite
    _m("ppl", "lower", "ppl"),
    _m("loss", "lower", "nats/token"),
    _m("bpb", "lower", "bits/byte"),
    _m("passkey_acc", "higher", "fraction"),  # the `value` of metric=passkey_acc rows
    _m("train_loss", "lower", "nats/token"),
    _m("train_tokens_per_s", "higher", "tokens/s"),
    # training suite
    _m("val_loss", "lower", "nats/token"),
    _m("val_ppl", "lower", "ppl"),
    _m("val_bpb", "lower", "bits/byte"),
    _m("step_ms", "lower", "ms", "other", 1e-3),
])

# pytest-benchmark stat names -> our columns (absolute amounts for these are in seconds, as in pytest-benchmark)
ALIASES: dict[str, str] = {"median": "time_ms", "mean": "mean_ms"}

# Used when no --fail-if is given.
DEFAULT_FAIL_IF: tuple[str, ...] = ("time_ms:10%", "peak_mem_bytes:10%", "ppl:5%", "val_loss:5%",
                                    "passkey_acc:0.1")

# Key fields that name the hardware rather than the configuration: checked as environment, not matched on.
HW_KEY_FIELDS = frozenset({"device_name"})
# A row ok in the baseline whose new status is one of these is a regression.
REGRESSION_STATUSES = frozenset({"error", "diverged", "oom"})
SPREAD_LO, SPREAD_HI, SPREAD_MID = "p20_ms", "p80_ms", "time_ms"

# Measured peak memory: gated only where it is a per-run measurement (see not_gated_reason).
MEASURED_MEM_METRICS = frozenset({"peak_mem_bytes", "step_extra_mem_bytes"})
PER_RUN_MEM_KINDS = frozenset({"cuda_max_allocated"})
# Wall-clock metrics and the rates computed from them: of a checkpoint-loaded run they time the resume.
TIMING_METRICS = frozenset({n for n, m in METRICS.items() if m.kind in ("time", "rate")}
                           | {"step_ms", "train_tokens_per_s", "train_s", "eval_s", "first_call_s", "compile_s"})
# One-shot first calls: process warm-up and compile caches, whatever ran before in the process.
FIRST_CALL_METRICS = frozenset({"first_call_s", "compile_s"})
# Model quality: deterministic for a fixed seed, data and device, so no spread is measured.
QUALITY_METRICS = frozenset({"ppl", "loss", "bpb", "train_loss", "val_loss", "val_ppl", "val_bpb", "passkey_acc"})


@dataclass(frozen=True)
class FailIf:
    """One ``--fail-if`` expression: ``metric`` may get worse by at most ``amount`` (percent or absolute)."""

    text: str
    metric: str
    amount: float
    percent: bool

    def exceeds(self, base: float, new: float, better: str) -> tuple[bool, bool]:
        """(worse past the threshold, better past the threshold)."""
        delta = new - base
        worse = delta if better == "lower" else -delta
        if self.percent:
            if base == 0:  # any change from zero is an infinite relative change
                return worse > 0, worse < 0
            rel = worse / abs(base) * 100.0
            return rel > self.amount, -rel > self.amount
        return worse > self.amount, -worse > self.amount


_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*$")


def parse_fail_if(exprs: Iterable[str]) -> list[FailIf]:
    """Parse ``METRIC:AMOUNT%`` (relative) or ``METRIC:AMOUNT`` (absolute) expressions (pytest-benchmark syntax).

    ``METRIC`` is a column of :data:`METRICS` or a pytest-benchmark stat alias (``median`` → ``time_ms``, ``mean`` →
    ``mean_ms``); an alias's absolute amount is in seconds (``median:0.001`` = 1 ms), a column's in its own unit.
    """
    out: list[FailIf] = []
    for text in exprs:
        m = _EXPR.match(str(text))
        if not m:
            raise ConfigError(f"--fail-if {text!r} is not METRIC:AMOUNT or METRIC:AMOUNT% (e.g. median:5%, "
                              f"time_ms:0.5, tflops:10%)")
        name, amount, pct = m.group(1), float(m.group(2)), bool(m.group(3))
        alias = name in ALIASES
        metric = ALIASES.get(name, name)
        if metric not in METRICS:
            valid = ", ".join(sorted(METRICS) + sorted(ALIASES))
            raise ConfigError(f"--fail-if {text!r}: unknown metric {name!r}; valid: {valid}")
        if alias and not pct:
            spu = METRICS[metric].seconds_per_unit or 1.0
            amount = amount / spu  # seconds -> the column's unit
        out.append(FailIf(str(text).strip(), metric, amount, pct))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Rows


def load_rows(paths: PathLike | Sequence[PathLike], what: str = "results") -> list[dict[str, Any]]:
    """Rows of files/folders, newest per (suite, row_key, env.hostname) as in ``to_frame``; empty → error."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows = read_rows(list(paths))
    if not rows:
        raise ResultsFileError(f"no result rows in {what} {', '.join(str(p) for p in paths)}")
    indexed = sorted(enumerate(rows), key=lambda ir: (str(ir[1].get("timestamp") or ""), ir[0]))
    newest: dict[Any, int] = {}
    keyless: list[int] = []
    for pos, r in indexed:
        if not r.get("row_key"):
            keyless.append(pos)
            continue
        newest[(r.get("suite"), r.get("row_key"), r.get("env.hostname"))] = pos
    keep = sorted(set(newest.values()) | set(keyless))
    return [rows[i] for i in keep]


def _torch_major(v: Any) -> str | None:
    if not v:
        return None
    return str(v).split(".")[0]


def hw_signature(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(GPU name, torch major, device_name) of a row: rows are compared only within one signature."""
    return (row.get("env.gpu") or None, _torch_major(row.get("env.torch")), row.get("device_name") or None)


def _key_fields(row: Mapping[str, Any]) -> list[str]:
    kf = row.get("key_fields")
    return [str(k) for k in kf] if isinstance(kf, list) else []


def identity(row: Mapping[str, Any]) -> tuple[str, str]:
    """(suite, hash of the identifying fields without the hardware name): the configuration a row measured."""
    kf = _key_fields(row)
    if not kf:
        return str(row.get("suite")), str(row.get("row_key"))
    return str(row.get("suite")), row_key({k: row.get(k) for k in kf if k not in HW_KEY_FIELDS})


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    return str(v)


def describe(row: Mapping[str, Any]) -> str:
    """``k=v`` of the identifying fields (without device_name and empty ones), in key order: a readable config."""
    kf = _key_fields(row)
    parts = [f"{k}={_fmt_value(row.get(k))}" for k in kf if k not in HW_KEY_FIELDS and row.get(k) is not None]
    return " ".join(parts) if parts else str(row.get("row_key"))


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    return None


def metric_values(row: Mapping[str, Any]) -> dict[str, float]:
    """The comparable metrics of a row (finite numbers of :data:`METRICS` columns); the generic ``value`` counts as
    the metric the row names (``metric``) when no column of that name exists (e.g. ``passkey_acc``)."""
    out: dict[str, float] = {}
    for name in METRICS:
        v = _num(row.get(name))
        if v is not None:
            out[name] = v
    named = row.get("metric")
    if isinstance(named, str) and named in METRICS and named not in row:
        v = _num(row.get("value"))
        if v is not None:
            out[named] = v
    return out


def _band(row: Mapping[str, Any], metric: str, value: float) -> tuple[float, float] | None:
    """The p20..p80 band of ``metric`` from the row's timing spread, or None when the row has none."""
    kind = METRICS[metric].kind
    if kind not in ("time", "rate"):
        return None
    mid, lo, hi = _num(row.get(SPREAD_MID)), _num(row.get(SPREAD_LO)), _num(row.get(SPREAD_HI))
    if mid is None and row.get("unit") == "ms":
        mid = _num(row.get("value"))
    if not mid or lo is None or hi is None or mid <= 0 or lo <= 0 or hi < lo:
        return None
    rlo, rhi = lo / mid, hi / mid
    if kind == "time":
        return value * rlo, value * rhi
    return value / rhi, value / rlo


# ---------------------------------------------------------------------------------------------------------------
# Gated or reported only; noise rules


def _device_class(row: Mapping[str, Any]) -> str:
    return str(row.get("device") or "").split(":")[0].strip().lower()


def _process_memory(row: Mapping[str, Any]) -> str:
    """Why the row's measured peak memory is process-wide rather than per run ("" when it is per run)."""
    kind = row.get("peak_mem_kind")
    dev = _device_class(row)
    where = "CPU" if dev in ("cpu", "") else dev.upper()
    if kind:
        if kind in PER_RUN_MEM_KINDS:
            return ""
        if kind == "cpu_maxrss":
            return f"process-wide peak RSS on {where} (peak_mem_kind=cpu_maxrss: the process's high-water mark)"
        return f"peak_mem_kind={kind} is not a per-run measurement"
    if dev and dev != "cuda":
        return f"process-wide peak RSS on {where} (no per-run measurement on {where})"
    return ""  # CUDA rows (per-call allocator peak) and rows that do not name a device


def not_gated_reason(metric: str, rows: Iterable[Mapping[str, Any] | None]) -> str:
    """Why ``metric`` of these rows (the baseline and/or new row of one configuration) is reported but not gated,
    or "" when it is gated. The metric measures the process rather than the variant when it is:

    * measured peak memory that is not a per-run measurement (``peak_mem_kind == "cpu_maxrss"``, or a non-CUDA
      device without a kind: ``ru_maxrss``, the whole process's high-water mark);
    * a one-shot first call (``first_call_s``, ``compile_s``): process warm-up and compile-cache state;
    * a wall time or a rate from one (:data:`TIMING_METRICS`) of a run that loaded a checkpoint
      (``from_checkpoint: true``): it times the resume, or copies a timing another process made.
    """
    rows = [r for r in rows if r is not None]
    if metric in MEASURED_MEM_METRICS:
        for r in rows:
            why = _process_memory(r)
            if why:
                return why
        kinds = sorted({str(r.get("peak_mem_kind")) for r in rows if r.get("peak_mem_kind")})
        if len(kinds) > 1:
            return f"peak memory measured differently on the two sides ({' vs '.join(kinds)})"
    if metric in FIRST_CALL_METRICS:
        return "one-shot first call: includes the process's warm-up and compile-cache state"
    if metric in TIMING_METRICS and any(r.get("from_checkpoint") is True for r in rows):
        return ("timing of a checkpoint-loaded (resumed) run (from_checkpoint=true): it times the resume, not the "
                "variant")
    return ""


def _threshold_text(rule: FailIf, unit: str) -> str:
    if rule.percent:
        return f"{rule.text} (worse by more than {rule.amount:g}% of the baseline)"
    return f"{rule.text} (worse by more than {rule.amount:g} {unit}, absolute)"


def noise_rule(metric: str, rules: Sequence[FailIf]) -> str:
    """The rule that decides whether a change of ``metric`` counts: its thresholds, then the spread rule."""
    info = METRICS[metric]
    thr = " or ".join(_threshold_text(r, info.unit) for r in rules) or "no --fail-if expression"
    if info.kind in ("time", "rate"):
        band = ("the p20–p80 band" if info.kind == "time"
                else "the timing's p20–p80 band carried over (a rate is inversely proportional to the time)")
        return (f"{thr}; then it counts only if it clears {band} of both sides (new value outside the baseline band "
                f"and baseline value outside the new band), else it is noise; rows without p20/p80: threshold alone")
    if metric in QUALITY_METRICS:
        return f"{thr}; deterministic for a fixed seed, data and device, no spread measured: the tolerance alone"
    return f"{thr}; no spread measured: the threshold alone"


def _entry_rule(metric: str, tripped: FailIf, bb: tuple | None, nb: tuple | None) -> str:
    """The noise rule as applied to one comparison (short: the expression that tripped and the spread used)."""
    info = METRICS[metric]
    thr = _threshold_text(tripped, info.unit)
    if info.kind in ("time", "rate"):
        if bb is not None and nb is not None:
            return f"{thr} + outside both sides' p20–p80 bands"
        if bb is not None or nb is not None:
            return f"{thr} + outside the p20–p80 band of the side that has one"
        return f"{thr}; no p20–p80 in the rows: threshold alone"
    if metric in QUALITY_METRICS:
        return f"{thr}; deterministic, no spread: tolerance alone"
    return f"{thr}; no spread: threshold alone"


@dataclass
class MetricGate:
    """Per metric: its thresholds and noise rule, and on how many matched rows it was gated or reported only."""

    metric: str
    unit: str
    better: str
    fail_if: list[str] = field(default_factory=list)
    noise_rule: str = ""
    gated_rows: int = 0  # matched rows on which a --fail-if expression judged it
    reported_rows: int = 0  # matched rows on which it has a --fail-if expression but measures the process
    unjudged_rows: int = 0  # matched rows carrying it when no --fail-if expression names it
    why_not_gated: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.gated_rows and self.reported_rows:
            return "partly gated"
        if self.gated_rows:
            return "gated"
        if self.reported_rows:
            return "not gated"
        return "gated (no rows)" if self.fail_if else "not gated"

    @property
    def gated(self) -> bool:
        return bool(self.fail_if) and self.reported_rows == 0

    def why_text(self) -> str:
        return "; ".join(f"not gated: {why} ({n} row(s))" for why, n in sorted(self.why_not_gated.items()))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status, "gated": self.gated}


# ---------------------------------------------------------------------------------------------------------------
# Comparison


@dataclass
class Entry:
    category: str  # regression | improvement | noise | new | missing
    suite: str
    config: str
    metric: str = ""
    unit: str = ""
    better: str = ""
    baseline: float | str | None = None
    new: float | str | None = None
    change_pct: float | None = None
    baseline_band: tuple[float, float] | None = None
    new_band: tuple[float, float] | None = None
    rule: str = ""
    note: str = ""
    gated: bool | None = None  # None for new / missing rows
    noise_rule: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("baseline_band", "new_band"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


CATEGORIES = ("regression", "improvement", "noise", "reported", "new", "missing")


@dataclass
class Comparison:
    entries: list[Entry] = field(default_factory=list)
    fail_if: list[FailIf] = field(default_factory=list)
    matched_rows: int = 0
    unchanged: int = 0  # gated metric comparisons within every threshold
    reported_only: int = 0  # metric comparisons with a --fail-if that are reported but not gated
    metrics: dict[str, MetricGate] = field(default_factory=dict)
    other_hardware: int = 0  # baseline rows from machines NEW did not run on
    env_note: str = ""
    baseline_env: list[tuple[Any, Any, Any]] = field(default_factory=list)
    new_env: list[tuple[Any, Any, Any]] = field(default_factory=list)
    github: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def by(self, category: str) -> list[Entry]:
        return [e for e in self.entries if e.category == category]

    @property
    def regressed(self) -> bool:
        return any(e.category == "regression" for e in self.entries)

    def counts(self) -> dict[str, int]:
        c = {k: len(self.by(k)) for k in CATEGORIES}
        c["unchanged"] = self.unchanged
        c["reported_only"] = self.reported_only
        c["matched_rows"] = self.matched_rows
        c["other_hardware"] = self.other_hardware
        return c

    def summary(self) -> str:
        c = self.counts()
        verdict = "FAIL" if self.regressed else "ok"
        return (f"compare: {verdict}: {c['regression']} regression(s), {c['improvement']} improvement(s), "
                f"{c['noise']} within noise, {c['new']} new, {c['missing']} missing; {c['matched_rows']} rows "
                f"matched, {c['unchanged']} metric(s) unchanged"
                + (f", {c['reported_only']} reported only (not gated: {self._not_gated_metrics()})"
                   if c["reported_only"] else "")
                + f"; fail-if {', '.join(f.text for f in self.fail_if)}"
                + (f"; {c['other_hardware']} baseline row(s) from other hardware not compared"
                   if c["other_hardware"] else "")
                + (f"; {self.env_note}" if self.env_note else ""))


    def _not_gated_metrics(self) -> str:
        return ", ".join(m.metric for m in self.metrics.values() if m.fail_if and m.reported_rows)


def _sig_text(sig: tuple[Any, Any, Any]) -> str:
    gpu, torch_major, dev = sig
    bits = [f"GPU {gpu!r}" if gpu else "no GPU", f"torch {torch_major}" if torch_major else "torch ?"]
    if dev and dev != gpu:
        bits.append(f"device {dev!r}")
    return ", ".join(bits)


def _sides(bsigs: set, nsigs: set) -> str:
    def side(sigs: set) -> str:
        return " / ".join(sorted(_sig_text(s) for s in sigs)) or "nothing"

    return f"baseline measured on {side(bsigs)}; new on {side(nsigs)}"


def _mismatch_message(bsigs: set, nsigs: set) -> str:
    return (f"environments differ: {_sides(bsigs, nsigs)} (different GPU, torch major version or device); pass "
            f"--allow-env-mismatch to compare anyway")


def _newest(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: str(r.get("timestamp") or "")):
        out[r["_match"]] = r
    return out


def _distinct(new_v: float, base_v: float, nb: tuple | None, bb: tuple | None, worse_is_up: bool) -> bool:
    """Does the change clear the spread of both sides? (each median outside the other side's p20..p80 band)"""
    if worse_is_up:  # the new value lies above the baseline
        ok_base = bb is None or new_v > bb[1]
        ok_new = nb is None or base_v < nb[0]
    else:
        ok_base = bb is None or new_v < bb[0]
        ok_new = nb is None or base_v > nb[1]
    return ok_base and ok_new


def compare(baseline: list[dict[str, Any]], new: list[dict[str, Any]], fail_if: Sequence[str] | None = None, *,
            allow_env_mismatch: bool = False) -> Comparison:
    """Compare rows of NEW against BASELINE (both as returned by :func:`load_rows`)."""
    rules = parse_fail_if(fail_if if fail_if else DEFAULT_FAIL_IF)
    by_metric: dict[str, list[FailIf]] = {}
    for r in rules:
        by_metric.setdefault(r.metric, []).append(r)
    result = Comparison(fail_if=rules)
    for m in sorted(by_metric):
        info = METRICS[m]
        result.metrics[m] = MetricGate(m, info.unit, info.better, [r.text for r in by_metric[m]],
                                       noise_rule(m, by_metric[m]))
    bsigs = {hw_signature(r) for r in baseline}
    nsigs = {hw_signature(r) for r in new}
    result.baseline_env, result.new_env = sorted(bsigs, key=str), sorted(nsigs, key=str)
    common = bsigs & nsigs
    loose = False
    if not common:
        if not allow_env_mismatch:
            raise EnvMismatchError(_mismatch_message(bsigs, nsigs))
        loose = True
        result.env_note = "environment mismatch allowed: " + _sides(bsigs, nsigs)
    b_rows, n_rows = [], []
    for r in baseline:
        sig = hw_signature(r)
        if not loose and sig not in common:
            result.other_hardware += 1
            continue
        b_rows.append({**r, "_match": identity(r) + (() if loose else (sig,))})
    for r in new:
        sig = hw_signature(r)
        n_rows.append({**r, "_match": identity(r) + (() if loose else (sig,))})
    bmap, nmap = _newest(b_rows), _newest(n_rows)

    def order(k: Any) -> tuple:
        r = nmap.get(k) or bmap.get(k)
        return (str(r.get("suite")), describe(r), str(k))

    github_small: list[dict[str, Any]] = []
    github_big: list[dict[str, Any]] = []
    for key in sorted(set(bmap) | set(nmap), key=order):
        b, n = bmap.get(key), nmap.get(key)
        ref = n or b
        suite, config = str(ref.get("suite")), describe(ref)
        if n is None:
            if b.get("status") == "ok":
                result.entries.append(Entry("missing", suite, config, note="not in new results"))
            continue
        n_ok = n.get("status") == "ok"
        if b is None or b.get("status") != "ok":
            if n_ok:
                note = "not in baseline" if b is None else f"baseline status {b.get('status')}"
                result.entries.append(Entry("new", suite, config, note=note))
                _github(n, None, suite, config, by_metric, github_small, github_big)
            continue
        if not n_ok:
            st = str(n.get("status"))
            cat = "regression" if st in REGRESSION_STATUSES else "missing"
            result.entries.append(Entry(cat, suite, config, metric="status", baseline="ok", new=st,
                                        note=str(n.get("reason") or ""), gated=cat == "regression",
                                        noise_rule="ok -> error / diverged / oom is a regression; -> unavailable / "
                                                   "unsupported is missing"))
            continue
        result.matched_rows += 1
        bv, nv = metric_values(b), metric_values(n)
        _github(n, b, suite, config, by_metric, github_small, github_big)
        for metric in sorted(set(bv) & set(nv)):
            info = METRICS[metric]
            if metric not in by_metric:
                gate = result.metrics.setdefault(metric, MetricGate(metric, info.unit, info.better))
                gate.unjudged_rows += 1
                why = "no --fail-if expression (not judged)"
                gate.why_not_gated[why] = gate.why_not_gated.get(why, 0) + 1
                continue
            gate = result.metrics[metric]
            why_not = not_gated_reason(metric, (b, n))
            base_v, new_v = bv[metric], nv[metric]
            bb, nb = _band(b, metric, base_v), _band(n, metric, new_v)
            worse_flags = [(r, *r.exceeds(base_v, new_v, info.better)) for r in by_metric[metric]]
            worse_rule = next((r for r, w, _ in worse_flags if w), None)
            better_rule = next((r for r, _, g in worse_flags if g), None)
            change = (new_v - base_v) / abs(base_v) * 100.0 if base_v else None
            if why_not:
                gate.reported_rows += 1
                gate.why_not_gated[why_not] = gate.why_not_gated.get(why_not, 0) + 1
                result.reported_only += 1
            else:
                gate.gated_rows += 1
            if worse_rule is None and better_rule is None:
                if not why_not:
                    result.unchanged += 1
                continue
            rule = worse_rule or better_rule
            worse = worse_rule is not None
            went_up = new_v > base_v
            if why_not:  # past the threshold, shown, never a regression
                result.entries.append(Entry("reported", suite, config, metric, info.unit, info.better, base_v,
                                            new_v, change, bb, nb, rule.text, f"not gated: {why_not}", False, ""))
                continue
            entry_rule = _entry_rule(metric, rule, bb, nb)
            if _distinct(new_v, base_v, nb, bb, went_up):
                cat = "regression" if worse else "improvement"
                note = ""
            else:
                cat = "noise"
                note = ("worse" if worse else "better") + " past the threshold but inside the p20..p80 spread"
            result.entries.append(Entry(cat, suite, config, metric, info.unit, info.better, base_v, new_v, change,
                                        bb, nb, rule.text, note, True, entry_rule))
    result.github = {"customSmallerIsBetter": github_small, "customBiggerIsBetter": github_big}
    return result


def _github(n: Mapping[str, Any], b: Mapping[str, Any] | None, suite: str, config: str,
            by_metric: Mapping[str, list[FailIf]], small: list, big: list) -> None:
    """github-action-benchmark entries ({name, unit, value, extra}) for the gated metrics of a new row (not those
    that measure the process: github-action-benchmark alerts on its own)."""
    nv = metric_values(n)
    bv = metric_values(b) if b is not None else {}
    for metric in sorted(set(nv) & set(by_metric)):
        if not_gated_reason(metric, (b, n)):
            continue
        info = METRICS[metric]
        extra = []
        band = _band(n, metric, nv[metric])
        if band:
            extra.append(f"p20-p80 {band[0]:.4g}-{band[1]:.4g}")
        if metric in bv:
            extra.append(f"baseline {bv[metric]:.4g}")
        if n.get("env.git_commit"):
            extra.append(f"commit {str(n['env.git_commit'])[:12]}")
        item = {"name": f"{suite} {config} {metric}", "unit": info.unit, "value": nv[metric],
                "extra": "; ".join(extra)}
        (small if info.better == "lower" else big).append(item)


def compare_paths(baseline: PathLike | Sequence[PathLike], new: PathLike | Sequence[PathLike],
                  fail_if: Sequence[str] | None = None, *, allow_env_mismatch: bool = False) -> Comparison:
    return compare(load_rows(baseline, "baseline"), load_rows(new, "new"), fail_if,
                   allow_env_mismatch=allow_env_mismatch)


# ---------------------------------------------------------------------------------------------------------------
# Output


def _num_text(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return format(v, ".4g")
    return str(v)


def _change_text(e: Entry) -> str:
    if e.change_pct is None:
        return "—"
    return f"{e.change_pct:+.1f}%"


def _band_text(b: tuple[float, float] | None) -> str:
    return "—" if b is None else f"{b[0]:.4g}–{b[1]:.4g}"


def table_rows(result: Comparison) -> list[dict[str, str]]:
    """One dict per entry, as strings (for the terminal table and Markdown)."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    out = []
    for e in sorted(result.entries, key=lambda e: order[e.category]):
        out.append({"": e.category, "suite": e.suite, "configuration": e.config, "metric": e.metric,
                    "baseline": _num_text(e.baseline), "new": _num_text(e.new), "change": _change_text(e),
                    "baseline p20–p80": _band_text(e.baseline_band), "new p20–p80": _band_text(e.new_band),
                    "rule": e.rule, "gated": "—" if e.gated is None else ("yes" if e.gated else "no"),
                    "noise rule": e.noise_rule, "note": e.note})
    return out


def metric_rows(result: Comparison) -> list[dict[str, str]]:
    """One dict per metric (those with a --fail-if first): gated or not, on how many rows, the fail-if expressions,
    the noise rule and why not gated (as strings, for the terminal table and Markdown)."""
    gates = sorted(result.metrics.values(), key=lambda g: (not g.fail_if, g.metric))
    out = []
    for g in gates:
        if g.fail_if:
            rows = f"{g.gated_rows} gated" + (f", {g.reported_rows} reported only" if g.reported_rows else "")
        else:
            rows = f"{g.unjudged_rows} not judged"
        out.append({"metric": g.metric, "gate": g.status, "rows": rows, "fail-if": ", ".join(g.fail_if) or "—",
                    "noise rule": g.noise_rule if g.fail_if else "—", "why not gated": g.why_text() or "—"})
    return out


def render_markdown(result: Comparison, title: str = "ablate compare") -> str:
    import pandas as pd

    from ablate.tables import to_markdown

    lines = [f"## {title}", "", ("**Regression**" if result.regressed else "**No regression**") + ": "
             + result.summary().split(": ", 2)[-1], ""]
    rows = table_rows(result)
    for cat in CATEGORIES:
        sub = [r for r in rows if r[""] == cat]
        if not sub:
            continue
        df = pd.DataFrame(sub).drop(columns=["", "rule", "gated"])
        if cat in ("new", "missing"):
            df = df[["suite", "configuration", "metric", "baseline", "new", "note"]]
        elif cat == "reported":
            df = df[["suite", "configuration", "metric", "baseline", "new", "change", "note"]]
        title_ = f"{cat} ({len(sub)})" if cat != "reported" else f"reported, not gated ({len(sub)})"
        lines += [f"### {title_}", "", to_markdown(df, na_rep="—").rstrip(), ""]
    mrows = metric_rows(result)
    if mrows:
        lines += ["### metrics: gated or reported only, and the noise rule", "",
                  to_markdown(pd.DataFrame(mrows), na_rep="—").rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def render_json(result: Comparison) -> str:
    data = {"regressed": result.regressed, "summary": result.counts(),
            "fail_if": [asdict(f) for f in result.fail_if], "env_note": result.env_note,
            "baseline_env": [list(s) for s in result.baseline_env], "new_env": [list(s) for s in result.new_env],
            "metrics": [g.as_dict() for g in sorted(result.metrics.values(), key=lambda g: (not g.fail_if, g.metric))],
            "entries": [e.as_dict() for e in result.entries]}
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"


def github_benchmark_json(result: Comparison) -> dict[str, list[dict[str, Any]]]:
    """github-action-benchmark custom data: {"customSmallerIsBetter": [...], "customBiggerIsBetter": [...]}."""
    return result.github


def write_github_json(result: Comparison, folder: PathLike) -> list[Path]:
    """Write ``customSmallerIsBetter.json`` and ``customBiggerIsBetter.json`` (each a list of {name, unit, value,
    extra}) into ``folder``: the ``output-file-path`` of github-action-benchmark with ``tool`` of the same name."""
    folder = Path(folder)
    if folder.suffix == ".json":
        raise ConfigError(f"--github-json takes a folder (it writes customSmallerIsBetter.json and "
                          f"customBiggerIsBetter.json into it), got {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for tool, items in result.github.items():
        p = folder / f"{tool}.json"
        p.write_text(json.dumps(items, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        written.append(p)
    return written


def format_table(result: Comparison) -> str:
    """The human table (plain text, regressions first; the configuration last so long ones do not break the
    columns), then the summary line."""
    rows = table_rows(result)
    lines = []
    if rows:
        cols = ["", "suite", "metric", "baseline", "new", "change", "baseline p20–p80", "new p20–p80",
                "configuration", "noise rule", "note"]
        data = [[r[c] for c in cols] for r in rows]
        widths = [max(len(c), *(len(d[i]) for d in data)) for i, c in enumerate(cols)]
        numeric = {"baseline", "new", "change"}

        def line(cells: list[str]) -> str:
            out = [c.rjust(w) if cols[i] in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            return "  ".join(out).rstrip()

        lines.append(line(cols))
        lines.append("  ".join("-" * w for w in widths))
        lines += [line(d) for d in data]
        lines.append("")
    mrows = metric_rows(result)
    if mrows:
        mcols = ["metric", "gate", "rows", "noise rule / why not gated"]
        mdata = [[m["metric"], m["gate"], m["rows"],
                  " | ".join(x for x in (m["noise rule"], m["why not gated"]) if x != "—")] for m in mrows]
        mw = [max(len(c), *(len(d[i]) for d in mdata)) for i, c in enumerate(mcols[:-1])]
        lines.append("metrics: " + "  ".join(c.ljust(w) for c, w in zip(mcols[:-1], mw)) + "  " + mcols[-1])
        lines += ["         " + "  ".join(c.ljust(w) for c, w in zip(d[:-1], mw)) + "  " + d[-1] for d in mdata]
        lines.append("")
    lines.append(result.summary())
    return "\n".join(lines) + "\n"


def print_table(result: Comparison, file: Any = None) -> None:
    import sys

    (file or sys.stdout).write(format_table(result))
