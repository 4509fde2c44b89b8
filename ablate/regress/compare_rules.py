"""Rules of ``ablate compare`` (re-exported by :mod:`ablate.regress.compare`, which documents them): the metrics' directions
(:data:`METRICS`), ``--fail-if`` thresholds (:func:`parse_fail_if`), a row's comparable values and timing spread,
which metrics are gated or reported only (:func:`not_gated_reason`) and their noise rules (:func:`noise_rule`), and
the verdict records (:class:`Entry`, :class:`Comparison`)."""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ablate.errors import ConfigError


# ---------------------------------------------------------------------------------------------------------------
# Metric directions


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # "lower" | "higher"
    unit: str
    kind: str = "other"  # "time": proportional to the timed median; "rate": inversely proportional; "other"
    seconds_per_unit: float | None = None  # for pytest-benchmark aliases: absolute amounts given in seconds


def metric_entry(name: str, better: str, unit: str, kind: str = "other", spu: float | None = None) -> tuple[str, Metric]:
    return name, Metric(name, better, unit, kind, spu)


# The declared directions. Columns not listed here (spreads, counts, FLOP counts, config-derived sizes, errors
# against the reference) are never compared.
METRICS: dict[str, Metric] = dict([
    # latency suite (suites/latency.py): time_ms is the median; p20_ms/p80_ms its spread
    metric_entry("time_ms", "lower", "ms", "time", 1e-3),
    metric_entry("mean_ms", "lower", "ms", "time", 1e-3),
    metric_entry("tflops", "higher", "TFLOP/s", "rate"),
    metric_entry("tokens_per_s", "higher", "tokens/s", "rate"),
    metric_entry("mfu", "higher", "fraction", "rate"),
    metric_entry("peak_mem_bytes", "lower", "bytes"),
    metric_entry("step_extra_mem_bytes", "lower", "bytes"),
    metric_entry("kv_bytes", "lower", "bytes"),
    metric_entry("kv_bytes_allocated", "lower", "bytes"),
    metric_entry("first_call_s", "lower", "s"),
    metric_entry("compile_s", "lower", "s"),
    # wall times of a whole training / evaluation (extrapolation and training suites)
    metric_entry("train_s", "lower", "s"),
    metric_entry("eval_s", "lower", "s"),
    # extrapolation suite
    metric_entry("ppl", "lower", "ppl"),
    metric_entry("loss", "lower", "nats/token"),
    metric_entry("bpb", "lower", "bits/byte"),
    metric_entry("passkey_acc", "higher", "fraction"),  # the `value` of metric=passkey_acc rows
    metric_entry("train_loss", "lower", "nats/token"),
    metric_entry("train_tokens_per_s", "higher", "tokens/s"),
    # training suite
    metric_entry("val_loss", "lower", "nats/token"),
    metric_entry("val_ppl", "lower", "ppl"),
    metric_entry("val_bpb", "lower", "bits/byte"),
    metric_entry("step_ms", "lower", "ms", "other", 1e-3),
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
    optional: bool = False  # ``METRIC?:AMOUNT``: no compared row carrying the metric is fine (else exit 2)

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


EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(\??)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*$")


def parse_fail_if(exprs: Iterable[str], optional: bool = False) -> list[FailIf]:
    """Parse ``METRIC:AMOUNT%`` (relative) or ``METRIC:AMOUNT`` (absolute) expressions (pytest-benchmark syntax).

    ``METRIC`` is a column of :data:`METRICS` or a pytest-benchmark stat alias (``median`` → ``time_ms``, ``mean`` →
    ``mean_ms``); an alias's absolute amount is in seconds (``median:0.001`` = 1 ms), a column's in its own unit.
    A gate must see its metric: :func:`ablate.regress.compare.compare` refuses (exit 2) an expression whose metric no
    compared row carries, unless it is marked optional with ``?`` after the name (``tflops?:10%``). ``optional``
    marks every expression so (the defaults: :data:`DEFAULT_FAIL_IF` spans every suite's metrics).
    """
    out: list[FailIf] = []
    for text in exprs:
        m = EXPR.match(str(text))
        if not m:
            raise ConfigError(f"--fail-if {text!r} is not METRIC:AMOUNT or METRIC:AMOUNT% (e.g. median:5%, "
                              f"time_ms:0.5, tflops:10%; METRIC?:AMOUNT when the rows may lack the metric)")
        name, opt, amount, pct = m.group(1), bool(m.group(2)), float(m.group(3)), bool(m.group(4))
        alias = name in ALIASES
        metric = ALIASES.get(name, name)
        if metric not in METRICS:
            valid = ", ".join(sorted(METRICS) + sorted(ALIASES))
            raise ConfigError(f"--fail-if {text!r}: unknown metric {name!r}; valid: {valid}")
        if alias and not pct:
            spu = METRICS[metric].seconds_per_unit or 1.0
            amount = amount / spu  # seconds -> the column's unit
        out.append(FailIf(str(text).strip(), metric, amount, pct, opt or optional))
    return out



# ---------------------------------------------------------------------------------------------------------------
# A row's values and timing spread


def number_or_none(v: Any) -> float | None:
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
        v = number_or_none(row.get(name))
        if v is not None:
            out[name] = v
    named = row.get("metric")
    if isinstance(named, str) and named in METRICS and named not in row:
        v = number_or_none(row.get("value"))
        if v is not None:
            out[named] = v
    return out


# The noise floor of a timing band (so an unchanged re-run passes where p20..p80 has no width: one timed block, or
# identical samples). A band is widened to at least +-FLOOR_SPREAD / sqrt(n) of the median, n the timed samples it
# came from (``samples``; a zero-width band without it counts as one sample), and to at least the timer's resolution.
# 0.25: the run-to-run spread of one timed sample taken as a quarter of the median -- measured re-runs of the CPU
# micro preset differ by far more on a loaded machine (those rows are marked contended, docs/reliability.md).
FLOOR_SPREAD = 0.25
TIMER_RESOLUTION_MS = {"cuda_events": 5e-4, "triton.do_bench": 5e-4}  # CUDA events: ~0.5 us; else perf_counter's
PERF_COUNTER_MS = time.get_clock_info("perf_counter").resolution * 1e3


def band_floor(row: Mapping[str, Any], mid: float, lo: float, hi: float) -> float:
    """The least half-width of the row's timing band, relative to its median ``mid`` (see :data:`FLOOR_SPREAD`)."""
    n = number_or_none(row.get("samples"))
    if n is None and hi <= lo:
        n = 1.0
    res = TIMER_RESOLUTION_MS.get(str(row.get("timing")), PERF_COUNTER_MS)
    floor = max(res / mid, FLOOR_SPREAD / math.sqrt(n) if n and n >= 1 else 0.0)
    return min(floor, 0.9)


def timing_band(row: Mapping[str, Any], metric: str, value: float) -> tuple[float, float] | None:
    """The p20..p80 band of ``metric`` from the row's timing spread (widened to :func:`band_floor`), or None when
    the row has none."""
    kind = METRICS[metric].kind
    if kind not in ("time", "rate"):
        return None
    mid, lo, hi = number_or_none(row.get(SPREAD_MID)), number_or_none(row.get(SPREAD_LO)), number_or_none(row.get(SPREAD_HI))
    if mid is None and row.get("unit") == "ms":
        mid = number_or_none(row.get("value"))
    if not mid or lo is None or hi is None or mid <= 0 or lo <= 0 or hi < lo:
        return None
    floor = band_floor(row, mid, lo, hi)
    rlo, rhi = min(lo / mid, 1.0 - floor), max(hi / mid, 1.0 + floor)
    if kind == "time":
        return value * rlo, value * rhi
    return value / rhi, value / rlo


# ---------------------------------------------------------------------------------------------------------------
# Gated or reported only; noise rules


def device_class(row: Mapping[str, Any]) -> str:
    return str(row.get("device") or "").split(":")[0].strip().lower()


def process_memory(row: Mapping[str, Any]) -> str:
    """Why the row's measured peak memory is process-wide rather than per run ("" when it is per run)."""
    kind = row.get("peak_mem_kind")
    dev = device_class(row)
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
            why = process_memory(r)
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


SKIPPED_CONTENDED = "skipped-contended: timed while another run shared the device (env.contended)"


def contended_note(b: Mapping[str, Any] | None, n: Mapping[str, Any] | None) -> str:
    """Why the timings of this row pair are not gated: a side was measured while another run shared its device
    (``env.contended``, :mod:`ablate.store.writers`); "" when neither was."""
    parts = []
    for side, r in (("baseline", b), ("new", n)):
        if r is not None and (r.get("env.contended") is True or r.get("contended") is True):
            who = r.get("env.contended_by") or r.get("contended_by") or "another run"
            parts.append(f"{side} timed while {who} shared the device")
    return "; ".join(parts)


def threshold_text(rule: FailIf, unit: str) -> str:
    if rule.percent:
        return f"{rule.text} (worse by more than {rule.amount:g}% of the baseline)"
    return f"{rule.text} (worse by more than {rule.amount:g} {unit}, absolute)"


def noise_rule(metric: str, rules: Sequence[FailIf]) -> str:
    """The rule that decides whether a change of ``metric`` counts: its thresholds, then the spread rule."""
    info = METRICS[metric]
    thr = " or ".join(threshold_text(r, info.unit) for r in rules) or "no --fail-if expression"
    if info.kind in ("time", "rate"):
        band = ("the p20–p80 band" if info.kind == "time"
                else "the timing's p20–p80 band carried over (a rate is inversely proportional to the time)")
        return (f"{thr}; then it counts only if it clears {band} of both sides (new value outside the baseline band "
                f"and baseline value outside the new band), else it is noise; a band is at least ±{FLOOR_SPREAD:g}/√n "
                f"of the median (n timed samples) and the timer's resolution; rows without p20/p80: threshold alone")
    if metric in QUALITY_METRICS:
        return f"{thr}; deterministic for a fixed seed, data and device, no spread measured: the tolerance alone"
    return f"{thr}; no spread measured: the threshold alone"


def applied_rule(metric: str, tripped: FailIf, bb: tuple | None, nb: tuple | None) -> str:
    """The noise rule as applied to one comparison (short: the expression that tripped and the spread used)."""
    info = METRICS[metric]
    thr = threshold_text(tripped, info.unit)
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
    contended_rows: int = 0  # matched rows on which a side was timed while another writer ran (never gated)
    why_not_gated: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.contended_rows and not (self.gated_rows or self.reported_rows):
            return "skipped (contended)"
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


CATEGORIES = ("regression", "improvement", "noise", "reported", "skipped-contended", "new", "missing")


@dataclass
class Comparison:
    entries: list[Entry] = field(default_factory=list)
    fail_if: list[FailIf] = field(default_factory=list)
    matched_rows: int = 0
    unchanged: int = 0  # gated metric comparisons within every threshold
    reported_only: int = 0  # metric comparisons with a --fail-if that are reported but not gated
    metrics: dict[str, MetricGate] = field(default_factory=dict)
    other_hardware: int = 0  # baseline rows from machines NEW did not run on
    calibrated_noisy: int = 0  # changes past a threshold on rows a calibration found noisy (reported as noise)
    env_note: str = ""
    baseline_env: list[tuple[Any, Any, Any]] = field(default_factory=list)
    new_env: list[tuple[Any, Any, Any]] = field(default_factory=list)
    github: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    allow_missing: bool = False  # no match / missing baseline rows do not fail (--allow-missing)

    def by(self, category: str) -> list[Entry]:
        return [e for e in self.entries if e.category == category]

    @property
    def regressed(self) -> bool:
        return any(e.category == "regression" for e in self.entries)

    @property
    def failed(self) -> bool:
        """A regression, or (unless ``allow_missing``) nothing matched or a baseline row is missing: a gate that
        compared nothing does not pass."""
        return bool(self.fail_reason)

    @property
    def fail_reason(self) -> str:
        """Why the comparison fails, in one line ("" when it passes)."""
        n_reg = len(self.by("regression"))
        if n_reg:
            return f"{n_reg} regression(s)"
        if self.allow_missing:
            return ""
        missing = self.by("missing")
        if not self.matched_rows:
            return (f"no row matched: baseline and new share no configuration ({len(self.by('new'))} new, "
                    f"{len(missing)} missing), so nothing was compared; pass --allow-missing to accept that")
        if missing:
            first = missing[0]
            return (f"{len(missing)} baseline row(s) missing from new results (first: {first.suite} {first.config}: "
                    f"{first.note or first.new}); pass --allow-missing to accept that")
        return ""

    def counts(self) -> dict[str, int]:
        c = {k: len(self.by(k)) for k in CATEGORIES}
        c["unchanged"] = self.unchanged
        c["reported_only"] = self.reported_only
        c["matched_rows"] = self.matched_rows
        c["other_hardware"] = self.other_hardware
        return c

    def summary(self) -> str:
        c = self.counts()
        verdict = "FAIL" if self.failed else "ok"
        return (f"compare: {verdict}: {c['regression']} regression(s), {c['improvement']} improvement(s), "
                f"{c['noise']} within noise, {c['new']} new, {c['missing']} missing; {c['matched_rows']} rows "
                f"matched, {c['unchanged']} metric(s) unchanged"
                + (f", {c['reported_only']} reported only (not gated: {self._not_gated_metrics()})"
                   if c["reported_only"] else "")
                + f"; fail-if {', '.join(f.text for f in self.fail_if)}"
                + (f"; {c['skipped-contended']} row(s) timed while another run shared the device: timings not "
                   f"gated (skipped-contended)" if c["skipped-contended"] else "")
                + (f"; {c['other_hardware']} baseline row(s) from other hardware not compared"
                   if c["other_hardware"] else "")
                + (f"; {self.calibrated_noisy} change(s) on rows the calibration found noisy, reported as noise"
                   if self.calibrated_noisy else "")
                + (f"; {self.env_note}" if self.env_note else ""))


    def _not_gated_metrics(self) -> str:
        return ", ".join(m.metric for m in self.metrics.values() if m.fail_if and m.reported_rows)
