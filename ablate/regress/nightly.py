"""``ablate nightly``: exactly the steps of the nightly GPU CI job (``.github/workflows/nightly-gpu.yml``), runnable
on any machine, so the workflow can be tested off GitHub.

Steps (each recorded in ``OUT/nightly.json`` with the equivalent command line):

1. environment: ``OUT/env.json`` (``ablate env``) and ``OUT/nvidia-smi.txt`` when ``nvidia-smi`` exists;
2. ``ablate run --suite latency --preset P`` and ``ablate run --suite extrapolation --preset P`` with ``--out
   OUT/results``, i.e. into ``OUT/results/<suite>/<device>-<preset>.jsonl`` (:func:`ablate.plan.runner.results_path`;
   fresh measurements: ``--no-resume`` unless ``resume``);
3. optionally the pytest-benchmark set (``pytest tests/benchmarks -m benchmark --benchmark-enable
   --benchmark-json OUT/pytest-benchmark.json``);
4. ``ablate report OUT/results --out OUT/report``;
5. either ``write_baseline``: copy the new rows to ``BASELINE/<machine>/<suite>-<preset>.jsonl`` (no comparison),
   or ``ablate compare BASELINE OUT/results`` (the baseline rows of the suites run) writing ``OUT/compare.md``,
   ``OUT/compare.json`` and github-action-benchmark data in ``OUT/github-benchmark/``; exit 1 on a regression, and
   when no row matched or a baseline row is missing (unless ``allow_missing``).

First night (``first_night``, ``--first-night``): when BASELINE holds no rows of these suites for this machine
(GPU and torch major version), the nightly writes this run's rows as the baseline instead of refusing, says so
(``first night: ...`` on stderr, ``first_night: true`` in ``nightly.json``) and exits 0; any later night with a
baseline compares as usual. Without it a missing baseline is refused before anything runs (exit 2).

The suites' progress and status lines go to stderr; stdout carries only the comparison (their own summary tables are
off: ``RunOptions.summary_tables=False``, as ``ablate run`` does).

Test hook: ``ABLATE_NIGHTLY_SLOWDOWN=1.2`` multiplies the timing metrics of the rows this nightly just measured by
1.2 (and divides the rates -- TFLOP/s, tokens/s, MFU -- by it) before the report and the comparison, and marks those
rows with ``planted_slowdown``. It plants a 20 % slowdown that goes through the real comparison; see
``docs/regressions.md``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ablate.store.atomic import write_text
from ablate.errors import AblateError, ConfigError, ResultsFileError

__all__ = ["NightlyOptions", "NightlyResult", "run_nightly", "SLOWDOWN_ENV", "NIGHTLY_SUITES", "machine_slug",
           "plant_slowdown", "write_baseline"]

SLOWDOWN_ENV = "ABLATE_NIGHTLY_SLOWDOWN"
NIGHTLY_SUITES = ("latency", "extrapolation")
# columns scaled by the planted slowdown: times (x f) and rates (/ f)
_TIME_COLS = ("time_ms", "p20_ms", "p80_ms", "mean_ms", "iqr_ms", "step_ms")
_RATE_COLS = ("tflops", "tokens_per_s", "mfu", "train_tokens_per_s")


@dataclass
class NightlyOptions:
    out: Path = Path("nightly")
    baseline: Path = Path("results/baselines")
    preset_latency: str | None = None  # None: the suite's default for the device (gpu on CUDA, tiny on CPU)
    preset_extrapolation: str | None = None
    set_latency: tuple[str, ...] = ()
    set_extrapolation: tuple[str, ...] = ()
    suites: tuple[str, ...] = NIGHTLY_SUITES
    device: str | None = None
    fail_if: tuple[str, ...] = ()
    allow_env_mismatch: bool = False
    write_baseline: bool = False
    first_night: bool = False  # no baseline for this machine: write it (and say so) instead of refusing
    allow_missing: bool = False  # as `ablate compare --allow-missing`
    report: bool = True
    pytest_benchmark: bool = False
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.out, self.baseline = Path(self.out), Path(self.baseline)
        self.set_latency, self.set_extrapolation = tuple(self.set_latency), tuple(self.set_extrapolation)
        self.suites, self.fail_if = tuple(self.suites), tuple(self.fail_if)


@dataclass
class NightlyResult:
    rc: int
    out: Path
    results: dict[str, Path] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    regressed: bool = False
    baseline_files: list[Path] = field(default_factory=list)
    summary: str = ""
    first_night: bool = False  # no baseline for this machine: this run's rows were written as the baseline


def _q(p: Any) -> str:
    from ablate.reporting.report import display_path

    return display_path(p) if isinstance(p, Path) else str(p)


def _cmd(*parts: Any) -> str:
    return shlex.join([_q(p) for p in parts])


def _echo(msg: str) -> None:
    sys.stderr.write(f"nightly: {msg}\n")
    sys.stderr.flush()


def machine_slug(rows: Sequence[dict[str, Any]]) -> str:
    """A folder name for the machine the rows were measured on: the GPU name on CUDA, else the CPU name."""
    names = [r.get("env.gpu") if r.get("device") == "cuda" else None for r in rows]
    name = next((n for n in names if n), None)
    if name is None:
        name = next((r.get("env.gpu") for r in rows if r.get("env.gpu") and r.get("device") != "cpu"), None)
    if name is None:
        name = "cpu-" + str(next((r.get("env.cpu") for r in rows if r.get("env.cpu")), "unknown"))
    slug = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    return slug or "unknown"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from ablate.store.results import read_rows

    return read_rows(path, missing_ok=True)


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
                             for r in rows))


def plant_slowdown(path: Path, factor: float, skip: int = 0) -> int:
    """Scale the timing metrics of the ok rows of ``path`` after its first ``skip`` rows (those this nightly
    appended) by ``factor`` (rates by 1/factor); returns how many rows changed. They get ``planted_slowdown``."""
    rows = _read_jsonl(path)
    n = 0
    for r in rows[skip:]:
        if r.get("status") != "ok":
            continue
        for c in _TIME_COLS:
            if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool):
                r[c] = r[c] * factor
        if r.get("unit") == "ms" and isinstance(r.get("value"), (int, float)):
            r["value"] = r["value"] * factor
        for c in _RATE_COLS:
            if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool):
                r[c] = r[c] / factor
        r["planted_slowdown"] = factor
        n += 1
    _write_jsonl(path, rows)
    return n


def _newest_rows(paths: Sequence[Path]) -> list[dict[str, Any]]:
    from ablate.regress.compare import load_rows

    return load_rows(list(paths), "new")


def write_baseline(results: dict[str, tuple[Path, str]], baseline: Path) -> list[Path]:
    """Copy each suite's new rows (newest per measurement) to ``baseline/<machine>/<suite>-<preset>.jsonl``."""
    written = []
    for suite, (path, preset) in results.items():
        rows = _newest_rows([path])
        dest = baseline / machine_slug(rows) / f"{suite}-{preset}.jsonl"
        _write_jsonl(dest, rows)
        busy = sum(1 for r in rows if r.get("env.contended") is True)
        if busy:  # their timings never gate (ablate.regress.compare): say so while the baseline can be redone
            _echo(f"warning: {busy} of {len(rows)} {suite} baseline row(s) were timed while contended "
                  f"({next(r.get('env.contended_by') for r in rows if r.get('env.contended') is True)}); their "
                  "timings will not gate until the baseline is written on a quiet machine")
        written.append(dest)
    return written


def _baseline_rows(baseline: Path, suites: Sequence[str]) -> list[dict[str, Any]]:
    """The baseline's rows of ``suites`` (newest per measurement); [] when there is no baseline file."""
    from ablate.regress.compare import load_rows
    from ablate.store.results import iter_files

    if not baseline.exists() or not iter_files(baseline):
        return []
    return [r for r in load_rows(baseline, "baseline") if r.get("suite") in suites]


def _same_machine(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether a baseline row (``rows``) shares this machine's GPU and torch major version; without one the
    comparison would refuse afterwards anyway, after the whole GPU run."""
    from ablate.regress.compare import hw_signature
    from ablate.store.env import env_columns

    here = hw_signature(env_columns())[:2]
    return here in {hw_signature(r)[:2] for r in rows}


def _env_mismatch(baseline: Path, rows: Sequence[dict[str, Any]]) -> Exception:
    """The one-line refusal when no baseline row is from this machine."""
    from ablate.regress.compare import EnvMismatchError, hw_signature
    from ablate.store.env import env_columns

    def text(sig: tuple) -> str:
        return (f"GPU {sig[0]!r}" if sig[0] else "no GPU") + f", torch {sig[1] or '?'}"

    here = hw_signature(env_columns())[:2]
    have = " / ".join(sorted(text(s) for s in {hw_signature(r)[:2] for r in rows}))
    return EnvMismatchError(f"environments differ: the baseline under {baseline} was measured on {have}; this "
                                f"machine has {text(here)}; pass --allow-env-mismatch to compare anyway, or write a "
                                f"baseline for this machine with --write-baseline (or --first-night)")


def _preset_of(suite: str, opts: NightlyOptions, device: str) -> str:
    from ablate.plan.runner import canonical_preset, default_preset

    given = canonical_preset(opts.preset_latency if suite == "latency" else opts.preset_extrapolation)
    return given or default_preset(suite, device)  # every suite: gpu on CUDA, tiny on CPU


def _step(result: NightlyResult, name: str, command: str, fn: Callable[[], Any]) -> Any:
    _echo(f"== {name}: {command}")
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"step": name, "command": command}
    result.steps.append(rec)
    try:
        value = fn()
        rec["status"] = "ok"
        return value
    except BaseException as exc:
        rec["status"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
        raise
    finally:
        rec["seconds"] = round(time.perf_counter() - t0, 3)


def _pytest_benchmark(out: Path) -> tuple[int, str]:
    from ablate.store.env import source_root

    root = source_root()
    bench_dir = (root / "tests" / "benchmarks") if root is not None else None
    if bench_dir is None or not bench_dir.is_dir():
        return 0, "skipped: tests/benchmarks not found (ablate is not running from a source checkout)"
    json_out = (out / "pytest-benchmark.json").resolve()
    cmd = [sys.executable, "-m", "pytest", str(bench_dir), "-m", "benchmark", "--benchmark-enable",
           f"--benchmark-json={json_out}", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    (out / "pytest-benchmark.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode, tail


def run_nightly(opts: NightlyOptions, *, argv: Sequence[str] | None = None) -> NightlyResult:
    """Run the nightly steps; returns the result with ``rc`` 0 (pass), 1 (regression or a failed benchmark).

    User errors (unknown preset, missing baseline, mismatched environment) raise AblateError subclasses.
    """
    from ablate.regress.compare import compare, load_rows, render_json, render_markdown, write_github_json, format_table
    from ablate.store.env import fingerprint
    from ablate.store.results import current_run_id
    from ablate.plan.runner import RunOptions, resolve_device, results_path, run_suite

    for s in opts.suites:
        if s not in NIGHTLY_SUITES:
            raise ConfigError(f"unknown nightly suite {s!r}; valid: {', '.join(NIGHTLY_SUITES)}")
    if not opts.suites:
        raise ConfigError("no suites to run")
    slowdown_text = os.environ.get(SLOWDOWN_ENV, "").strip()
    try:
        slowdown = float(slowdown_text) if slowdown_text else None
    except ValueError:
        raise ConfigError(f"{SLOWDOWN_ENV}={slowdown_text!r} is not a number") from None
    if slowdown is not None and not slowdown > 0:
        raise ConfigError(f"{SLOWDOWN_ENV} must be > 0, got {slowdown_text}")
    # Refuse early (before an hour of GPU time) when there is nothing to compare against -- or, on the first night,
    # write this run as the baseline.
    first_night = False
    if not opts.write_baseline:
        base_rows = _baseline_rows(opts.baseline, opts.suites)
        if not base_rows:
            if not opts.first_night:
                raise ResultsFileError(
                    f"no baseline results for {', '.join(opts.suites)} under {opts.baseline}; make one on the "
                    f"reference machine with: ablate nightly --write-baseline --baseline {opts.baseline} (or pass "
                    f"--first-night to write it on a night without one)")
            first_night = True
        elif not opts.allow_env_mismatch and not _same_machine(base_rows):
            if not opts.first_night:
                raise _env_mismatch(opts.baseline, base_rows)
            first_night = True
    device = resolve_device(opts.device)
    writes_baseline = opts.write_baseline or first_night
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    result = NightlyResult(rc=0, out=out, first_night=first_night)
    if first_night:
        _echo(f"first night: no baseline for this machine under {_q(opts.baseline)}: this run's rows become the "
              f"baseline; nothing is compared tonight")
    nightly_cmd = shlex.join(["ablate", "nightly", *argv]) if argv is not None else "ablate nightly (Python API)"

    presets: dict[str, tuple[Path, str]] = {}
    run_id = current_run_id()

    def steps() -> None:
        # 1. environment
        def env_step() -> None:
            (out / "env.json").write_text(json.dumps(fingerprint(), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
            if shutil.which("nvidia-smi"):
                proc = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60)
                (out / "nvidia-smi.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")

        _step(result, "env", _cmd("ablate", "env", "--format", "json"), env_step)

        # 2. suites
        for suite in opts.suites:
            preset = _preset_of(suite, opts, device)
            sets = opts.set_latency if suite == "latency" else opts.set_extrapolation
            dest = out / "results"  # the run writes <dest>/<suite>/<device>-<preset>.jsonl (ablate.plan.runner.results_path)
            cmd = ["ablate", "run", "--suite", suite, "--preset", preset, "--device", device, "--out", dest]
            for s in sets:
                cmd += ["--set", s]
            if not opts.resume:
                cmd.append("--no-resume")
            command = _cmd(*cmd)
            result.commands.append(command)
            ro = RunOptions(suite=suite, preset=preset, overrides=tuple(sets), out=dest, resume=opts.resume,
                            device=device, progress=opts.progress,
                            summary_tables=False)  # stdout: the comparison only; progress and status on stderr
            expected = results_path(ro)
            before = {expected.resolve(): len(_read_jsonl(expected))} if expected.is_file() else {}
            path = _step(result, f"run {suite}", command, lambda ro=ro: run_suite(ro))
            result.results[suite] = Path(path)
            presets[suite] = (Path(path), preset)
            if slowdown is not None:
                n = plant_slowdown(Path(path), slowdown, before.get(Path(path).resolve(), 0))
                _echo(f"{SLOWDOWN_ENV}={slowdown:g}: timing metrics of {n} new {suite} row(s) scaled (test hook)")

        # 3. pytest-benchmark
        if opts.pytest_benchmark:
            command = _cmd("pytest", "tests/benchmarks", "-m", "benchmark", "--benchmark-enable",
                           f"--benchmark-json={_q(out / 'pytest-benchmark.json')}")
            rc, tail = _step(result, "pytest-benchmark", command, lambda: _pytest_benchmark(out))
            result.steps[-1]["result"] = tail
            _echo(f"pytest-benchmark: {tail}")
            if rc not in (0, 5):
                _echo(f"pytest-benchmark failed (exit {rc}); see {out / 'pytest-benchmark.log'}")
                result.rc = 1

        # 4. report
        results_dir = out / "results"
        if opts.report:
            rcmd = _cmd("ablate", "report", results_dir, "--out", out / "report")

            def report_step() -> None:
                from ablate.reporting.report import build_report

                build_report([results_dir], out / "report", command=rcmd, data_commands=result.commands)

            _step(result, "report", rcmd, report_step)

        # 5. baseline or comparison
        if writes_baseline:
            bcmd = f"copy {_q(results_dir)} -> {_q(opts.baseline)}/<machine>/<suite>-<preset>.jsonl"
            result.baseline_files = _step(result, "write baseline", bcmd,
                                          lambda: write_baseline(presets, opts.baseline))
            for f in result.baseline_files:
                _echo(f"baseline written: {_q(f)}")
            _echo(f"commit it: git add {' '.join(_q(f) for f in result.baseline_files)} && git commit -m 'nightly "
                  f"baseline'")
            result.summary = f"baseline written ({len(result.baseline_files)} file(s))"
            if first_night:
                result.summary = (f"first night: no baseline for this machine, so nothing was compared; "
                                  f"{result.summary}: commit it to gate the next night")
        else:
            ccmd = ["ablate", "compare", opts.baseline, results_dir, "--format", "markdown", "--output",
                    out / "compare.md", "--github-json", out / "github-benchmark"]
            for f in opts.fail_if:
                ccmd += ["--fail-if", f]
            if opts.allow_env_mismatch:
                ccmd.append("--allow-env-mismatch")
            if opts.allow_missing:
                ccmd.append("--allow-missing")

            def compare_step():
                res = compare(_baseline_rows(opts.baseline, opts.suites),
                              load_rows([presets[s][0] for s in opts.suites], "new"),
                              list(opts.fail_if) or None, allow_env_mismatch=opts.allow_env_mismatch,
                              allow_missing=opts.allow_missing)
                (out / "compare.md").write_text(render_markdown(res, "ablate nightly: compare"), encoding="utf-8")
                (out / "compare.json").write_text(render_json(res), encoding="utf-8")
                write_github_json(res, out / "github-benchmark")
                return res

            res = _step(result, "compare", _cmd(*ccmd), compare_step)
            sys.stdout.write(format_table(res))
            result.regressed = res.regressed
            result.summary = res.summary()
            if res.failed:
                _echo(f"compare: FAIL: {res.fail_reason}")
                result.rc = 1

    failure: BaseException | None = None
    try:
        steps()
    except BaseException as exc:  # the manifest still says how far it got
        failure = exc
        result.rc = 2 if isinstance(exc, AblateError) else (130 if isinstance(exc, KeyboardInterrupt) else 1)
        result.summary = f"stopped: {type(exc).__name__}: {' '.join(str(exc).split())}"
    errors = _error_rows(result.results.values())
    if errors:
        _echo(f"{errors} new row(s) with status 'error' (a failing measurement; see the reason column)")
    manifest = {"command": nightly_cmd, "device": device, "rc": result.rc, "regressed": result.regressed,
                "first_night": result.first_night,
                "summary": result.summary, "planted_slowdown": slowdown, "run_id": run_id, "error_rows": errors,
                "results": {k: _q(v) for k, v in result.results.items()}, "steps": result.steps,
                "baseline_files": [_q(f) for f in result.baseline_files]}
    (out / "nightly.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if failure is not None:
        raise failure
    _echo(f"done (exit {result.rc}): {result.summary}")
    return result


def _error_rows(paths: Any) -> int:
    n = 0
    for p in paths:
        try:
            n += sum(1 for r in _read_jsonl(Path(p)) if r.get("status") == "error")
        except Exception:
            pass
    return n
