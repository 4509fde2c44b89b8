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
    tflops?:10%       optional: without "?", a metric no compared row carries is refused (exit 2, one line)

Noise: a latency row carries the spread of its timing (``p20_ms`` / ``p80_ms`` around the median ``time_ms``). A
change counts as a regression only when it clears the spread measured on *both* sides: the new median lies outside
the baseline's p20..p80 band *and* the baseline median lies outside the new band. Metrics derived from the same
timing (TFLOP/s, tokens/s, MFU) get the same relative band. A change past the threshold but inside the spread is
listed as ``noise`` and does not fail. A band is at least ±0.25/√n of the median (n timed samples) and the timer's
resolution (:func:`ablate.regress.compare_rules.band_floor`), so a zero-width band does not fail an unchanged re-run.

Environments: each row's hardware signature is (GPU name, torch major version, ``device_name``). Rows are compared
only between equal signatures; when the two sides share none (a different GPU, torch 2 vs 3, another CPU or thread
count) the comparison is refused with one line, unless ``allow_env_mismatch`` (then rows are matched by
configuration alone). Baseline rows from other machines than any in NEW are set aside (``other hardware``).

Statuses: a row ``ok`` in the baseline that became ``error``, ``diverged`` or ``oom`` is a regression; one that
became ``unavailable``/``unsupported`` or disappeared is ``missing``; a row only NEW measured is ``new``.

A gate cannot pass on nothing: the comparison fails (``Comparison.failed``, exit 1) when no row matched or a
baseline row is missing from NEW, unless ``allow_missing`` (``--allow-missing``); ``Comparison.fail_reason`` says
why in one line. Corpus-trained rows are matched by the corpus hash (``data.hash``) and their recorded settings,
never by the corpus's name, which holds a machine path for ``stdlib`` (:func:`identity`).

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

Layout: this module matches rows and builds the :class:`Comparison`; the rules (directions, thresholds, noise rules,
gating, the verdict records) live in :mod:`ablate.regress.compare_rules` and the output formats in
:mod:`ablate.regress.compare_format`. Every name is importable from here, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ablate.regress.compare_format import (band_text, change_text, num_text, format_table,  # noqa: F401
                                   github_benchmark_json, metric_rows, print_table, render_json, render_markdown,
                                   table_rows, write_github_json)
from ablate.regress.compare_rules import (EXPR, ALIASES, CATEGORIES, DEFAULT_FAIL_IF, FIRST_CALL_METRICS,  # noqa: F401
                                  HW_KEY_FIELDS, MEASURED_MEM_METRICS, METRICS, PER_RUN_MEM_KINDS, QUALITY_METRICS,
                                  REGRESSION_STATUSES, SPREAD_HI, SPREAD_LO, SPREAD_MID, TIMING_METRICS, Comparison,
                                  Entry, FailIf, Metric, MetricGate, timing_band, device_class, applied_rule, metric_entry, number_or_none,
                                  process_memory, threshold_text, metric_values, noise_rule, not_gated_reason,
                                  parse_fail_if, SKIPPED_CONTENDED, contended_note)
from ablate.errors import AblateError, ConfigError, ResultsFileError
from ablate.store.frame import latest_rows
from ablate.store.reader import iter_rows
from ablate.store.results import PathLike, row_key

__all__ = ["METRICS", "ALIASES", "DEFAULT_FAIL_IF", "HW_KEY_FIELDS", "REGRESSION_STATUSES", "Metric", "FailIf",
           "MEASURED_MEM_METRICS", "PER_RUN_MEM_KINDS", "TIMING_METRICS", "FIRST_CALL_METRICS", "QUALITY_METRICS",
           "not_gated_reason", "noise_rule", "MetricGate", "Entry", "Comparison", "EnvMismatchError", "parse_fail_if",
           "load_rows", "hw_signature", "identity", "settings_keys",
           "describe", "compare", "compare_paths", "render_markdown", "render_json", "github_benchmark_json",
           "write_github_json", "metric_values", "print_table", "format_table", "table_rows", "metric_rows",
           "CATEGORIES"]


class EnvMismatchError(AblateError):
    """BASELINE and NEW were measured on different hardware / torch major versions."""


# ---------------------------------------------------------------------------------------------------------------
# Rows


def load_rows(paths: PathLike | Sequence[PathLike], what: str = "results") -> list[dict[str, Any]]:
    """Rows of files/folders, newest per (suite, row_key, env.hostname) as in ``to_frame``; empty → error. Read in
    one streaming pass (:func:`ablate.store.frame.latest_rows`): only the rows kept are held."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows = latest_rows(iter_rows(list(paths)), machine=("env.hostname",))
    if not rows:
        raise ResultsFileError(f"no result rows in {what} {', '.join(str(p) for p in paths)}")
    return rows


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


# The settings a corpus-trained row's ``config_id`` hashes, as its ``config.*`` columns record them, by suite (other
# suites: the default). ``config_id`` also hashes the corpus's *name*, which holds a machine path for ``stdlib``
# (``stdlib (/usr/lib/python3.11)``) and ``--data PATH``; rows with a corpus hash (``data.hash``) are matched by
# these settings and the hash instead, so the same corpus under another Python prefix or folder still matches.
_SETTINGS_GROUPS = {"training": ("model", "train", "budget", "eval", "data"),
                    "extrapolation": ("model", "train", "data")}
_DEFAULT_SETTINGS_GROUPS = ("model", "train", "budget", "data")
_NOT_SETTINGS = frozenset({"config.train.seed", "config.data.tokenizer"})  # a key field; a path (the hash covers it)
_PATH_KEY_FIELDS = frozenset({"data", "config_id"})  # replaced by the corpus hash and the settings


def settings_keys(row: Mapping[str, Any]) -> list[str]:
    """The ``config.*`` columns of ``row`` that stand in for its ``config_id`` (see :func:`identity`)."""
    groups = _SETTINGS_GROUPS.get(str(row.get("suite")), _DEFAULT_SETTINGS_GROUPS)
    prefixes = tuple(f"config.{g}." for g in groups)
    return sorted(k for k in row if k.startswith(prefixes) and k not in _NOT_SETTINGS)


def identity(row: Mapping[str, Any], shared: set[str] | frozenset[str] | None = None) -> tuple[str, str]:
    """(suite, hash of the identifying fields without the hardware name): the configuration a row measured.

    A row trained on a corpus (it carries the corpus hash ``data.hash``) is identified by that hash and its recorded
    settings instead of ``data`` and ``config_id``, which hold the corpus's name -- a machine path for ``stdlib`` and
    ``--data PATH``. ``shared``: only these ``config.*`` columns count (:func:`compare` passes those both sides
    record, so a setting added by a newer version does not split otherwise equal rows)."""
    kf = _key_fields(row)
    if not kf:
        return str(row.get("suite")), str(row.get("row_key"))
    fields = {k: row.get(k) for k in kf if k not in HW_KEY_FIELDS}
    corpus = row.get("data.hash")
    if corpus and _PATH_KEY_FIELDS & set(fields):
        for k in _PATH_KEY_FIELDS:
            fields.pop(k, None)
        fields["corpus_hash"] = str(corpus)
        fields["settings"] = {k: row.get(k) for k in settings_keys(row) if shared is None or k in shared}
    return str(row.get("suite")), row_key(fields)


def _data_text(row: Mapping[str, Any]) -> str:
    """The corpus of a row without a machine path: ``stdlib#b60ac180`` for ``stdlib (/usr/lib/python3.11)``."""
    name = str(row.get("data"))
    if row.get("data.hash"):
        name = name.split(" (", 1)[0]
        if "/" in name or "\\" in name:
            name = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or name
        return f"{name}#{str(row['data.hash'])[:8]}"
    return name


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    return str(v)


def describe(row: Mapping[str, Any]) -> str:
    """``k=v`` of the identifying fields (without device_name and empty ones), in key order: a readable config."""
    kf = _key_fields(row)
    parts = [f"{k}={_data_text(row) if k == 'data' else _fmt_value(row.get(k))}" for k in kf
             if k not in HW_KEY_FIELDS and row.get(k) is not None]
    return " ".join(parts) if parts else str(row.get("row_key"))


# ---------------------------------------------------------------------------------------------------------------
# Comparison


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
            allow_env_mismatch: bool = False, noisy: set[tuple[str, str, str]] | None = None,
            allow_missing: bool = False) -> Comparison:
    """Compare rows of NEW against BASELINE (both as returned by :func:`load_rows`). ``noisy``: ``(suite, identity,
    metric)`` found noisy by a calibration on repeats (:mod:`ablate.regress.calibrate`): a change there past the threshold is
    reported as noise with the reason, never as a regression or an improvement. The comparison fails
    (:attr:`Comparison.failed`) on a regression, and also when no row matched or a baseline row is missing from NEW,
    unless ``allow_missing``."""
    noisy = noisy or set()
    rules = parse_fail_if(fail_if) if fail_if else parse_fail_if(DEFAULT_FAIL_IF, optional=True)
    by_metric: dict[str, list[FailIf]] = {}
    for r in rules:
        by_metric.setdefault(r.metric, []).append(r)
    result = Comparison(fail_if=rules, allow_missing=allow_missing)
    # the settings columns both sides record (a newer version's added setting does not split equal rows)
    shared = ({k for r in baseline for k in r if k.startswith("config.")}
              & {k for r in new for k in r if k.startswith("config.")})
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
        b_rows.append({**r, "_match": identity(r, shared) + (() if loose else (sig,))})
    for r in new:
        sig = hw_signature(r)
        n_rows.append({**r, "_match": identity(r, shared) + (() if loose else (sig,))})
    bmap, nmap = _newest(b_rows), _newest(n_rows)

    def order(k: Any) -> tuple:
        r = nmap.get(k) or bmap.get(k)
        return (str(r.get("suite")), describe(r), str(k))

    carried: set[str] = set()  # the metrics matched rows carry on both sides
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
        carried.update(set(bv) & set(nv))
        busy, skipped = contended_note(b, n), []
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
            if busy and metric in TIMING_METRICS:  # never gate on a contended timing
                gate.contended_rows += 1
                gate.why_not_gated[SKIPPED_CONTENDED] = gate.why_not_gated.get(SKIPPED_CONTENDED, 0) + 1
                skipped.append(metric)
                continue
            why_not = not_gated_reason(metric, (b, n))
            base_v, new_v = bv[metric], nv[metric]
            bb, nb = timing_band(b, metric, base_v), timing_band(n, metric, new_v)
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
            entry_rule = applied_rule(metric, rule, bb, nb)
            if (suite, identity(ref)[1], metric) in noisy:
                result.calibrated_noisy += 1
                result.entries.append(Entry("noise", suite, config, metric, info.unit, info.better, base_v, new_v,
                                            change, bb, nb, rule.text, ("worse" if worse else "better")
                                            + " past the threshold, but the calibration found this row's repeat "
                                              "spread larger than the threshold (noisy)", True, entry_rule))
                continue
            if _distinct(new_v, base_v, nb, bb, went_up):
                cat = "regression" if worse else "improvement"
                note = ""
            else:
                cat = "noise"
                note = ("worse" if worse else "better") + " past the threshold but inside the p20..p80 spread"
            result.entries.append(Entry(cat, suite, config, metric, info.unit, info.better, base_v, new_v, change,
                                        bb, nb, rule.text, note, True, entry_rule))
        if skipped:
            result.entries.append(Entry("skipped-contended", suite, config, ", ".join(skipped), note=busy,
                                        gated=False, noise_rule="a contended timing is never gated"))
    result.github = {"customSmallerIsBetter": github_small, "customBiggerIsBetter": github_big}
    _refuse_blind_gates(result, by_metric, carried)
    return result


def _refuse_blind_gates(result: Comparison, by_metric: Mapping[str, list[FailIf]], carried: set[str]) -> None:
    """A ``--fail-if`` metric that no compared row carries (on both sides) gates nothing: refused in one line
    (exit 2) unless the expression is optional (``tflops?:10%``). Nothing compared at all is ``fail_reason``'s."""
    if not result.matched_rows:
        return
    for metric, rules in sorted(by_metric.items()):
        gate = result.metrics[metric]
        if gate.gated_rows or gate.reported_rows or gate.contended_rows or all(r.optional for r in rules):
            continue
        text = next(r.text for r in rules if not r.optional)
        name, _, amount = text.partition(":")
        has = ", ".join(sorted(carried)) or "none of the compared metrics"
        raise ConfigError(f"--fail-if {text}: no compared row has {metric} ({result.matched_rows} row(s) matched; "
                          f"they carry {has}); drop it, or mark it optional: --fail-if {name.strip()}?:{amount}")


def _github(n: Mapping[str, Any], b: Mapping[str, Any] | None, suite: str, config: str,
            by_metric: Mapping[str, list[FailIf]], small: list, big: list) -> None:
    """github-action-benchmark entries ({name, unit, value, extra}) for the gated metrics of a new row (not those
    that measure the process: github-action-benchmark alerts on its own)."""
    nv = metric_values(n)
    bv = metric_values(b) if b is not None else {}
    for metric in sorted(set(nv) & set(by_metric)):
        if not_gated_reason(metric, (b, n)) or (metric in TIMING_METRICS and contended_note(None, n)):
            continue
        info = METRICS[metric]
        extra = []
        band = timing_band(n, metric, nv[metric])
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
                  fail_if: Sequence[str] | None = None, *, allow_env_mismatch: bool = False,
                  noisy: set[tuple[str, str, str]] | None = None, allow_missing: bool = False) -> Comparison:
    return compare(load_rows(baseline, "baseline"), load_rows(new, "new"), fail_if,
                   allow_env_mismatch=allow_env_mismatch, noisy=noisy, allow_missing=allow_missing)
