"""The work behind ``ablate compare``, ``ablate calibrate`` and ``ablate nightly`` once typer has parsed the options
(``nightly`` takes them as one typed object, :class:`NightlyArgs`). Imports nothing heavy at import time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import typer

from ablate.commands.run import RunArgs
from ablate.errors import ConfigError

# ---------------------------------------------------------------------------------------------------------------
# compare


def read_noise(noise: Optional[Path]) -> set:
    """The noisy rows of an ``ablate calibrate`` file (empty without one); one-line error for a bad file."""
    if noise is None:
        return set()

    from ablate.regress.calibrate import noisy_identities

    try:
        data = json.loads(Path(noise).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--noise {noise}: cannot read a calibration file ({type(exc).__name__}: {exc}); make one "
                          "with `ablate calibrate RUN_A RUN_B --out FILE`") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--noise {noise}: not an ablate calibration file (a JSON object is expected)")
    return noisy_identities(data)


def compare(baseline: Path, new: Path, fail_if: Optional[Sequence[str]], fmt: str, allow_env_mismatch: bool,
            github_json: Optional[Path], output: Optional[Path], skip_invalid: bool, hint: str,
            noise: Optional[Path] = None, allow_missing: bool = False) -> int:
    """``ablate compare`` (``fmt``: table, json or markdown): print and write the comparison; returns the exit
    code: 1 on a regression, and when no row matched or a baseline row is missing (unless ``allow_missing``), with
    one line on stderr saying why."""
    from ablate.regress.compare import compare_paths, print_table, render_json, render_markdown, write_github_json
    from ablate.store.results import reading

    noisy = read_noise(noise)
    with reading(skip_invalid=skip_invalid, hint=hint):
        result = compare_paths(baseline, new, fail_if or None, allow_env_mismatch=allow_env_mismatch, noisy=noisy,
                               allow_missing=allow_missing)
    if github_json is not None:
        write_github_json(result, github_json)
    if fmt == "table":
        print_table(result)
        text = render_markdown(result) if output is not None else ""
    else:
        text = render_json(result) if fmt == "json" else render_markdown(result)
        typer.echo(text, nl=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    if result.failed:
        typer.echo(f"compare: FAIL: {result.fail_reason}", err=True)
        return 1
    return 0


def calibrate(run_a: Path, run_b: Path, fail_if: Optional[Sequence[str]], out: Optional[Path], plant: float,
              skip_invalid: bool, hint: str) -> int:
    """``ablate calibrate``: the gate on two repeated runs (false alarms, repeat spread, noisy rows, a planted
    slowdown); writes the calibration file; returns 1 when a false alarm remains or the planted change is missed."""
    from ablate.regress.calibrate import calibrate as run_calibration
    from ablate.regress.compare import load_rows
    from ablate.store.results import reading

    if out is not None and out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the calibration file's path, e.g. --out noise.json")
    with reading(skip_invalid=skip_invalid, hint=hint):
        cal = run_calibration(load_rows(run_a, "run A"), load_rows(run_b, "run B"), fail_if or None,
                              plant_percent=plant)
    for row in cal.false_alarm_rows:
        typer.echo(f"  false alarm: {row}")
    for n in cal.noisy:
        typer.echo(f"  noisy: {n['config']} {n['metric']}: repeat spread {n['spread_pct']:.2f}% ({n['rule']})")
    typer.echo(cal.summary())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(cal.to_json(), encoding="utf-8")
        tmp.replace(out)
        typer.echo(f"calibration: {out} (use it with `ablate compare --noise {out}`)")
    return 0 if cal.ok else 1


# ---------------------------------------------------------------------------------------------------------------
# nightly


@dataclasses.dataclass(frozen=True)
class NightlyArgs:
    """Every option of ``ablate nightly``, as typed (``device`` by name; repeatable options as tuples)."""

    preset_latency: Optional[str] = None
    preset_extrapolation: Optional[str] = None
    baseline: Path = Path("results/baselines")
    out: str = "nightly"
    write_baseline: bool = False
    first_night: bool = False
    fail_if: tuple[str, ...] = ()
    allow_env_mismatch: bool = False
    allow_missing: bool = False
    set_latency: tuple[str, ...] = ()
    set_extrapolation: tuple[str, ...] = ()
    suites: str = "latency,extrapolation"
    device: Optional[str] = None
    report: bool = True
    pytest_benchmark: bool = False
    resume: bool = False
    progress: bool = True

    __post_init__ = RunArgs.__post_init__


def nightly(a: NightlyArgs) -> int:
    """``ablate nightly``; returns the exit code of :func:`ablate.regress.nightly.run_nightly`. The command line it
    records (``argv``) names only the options given, as typed."""
    from ablate.regress.nightly import NightlyOptions, run_nightly
    from ablate.plan.runner import check_out_dir

    out = check_out_dir(a.out)
    opts = NightlyOptions(out=out, baseline=a.baseline, preset_latency=a.preset_latency,
                          preset_extrapolation=a.preset_extrapolation, set_latency=a.set_latency,
                          set_extrapolation=a.set_extrapolation,
                          suites=tuple(x.strip() for x in a.suites.split(",") if x.strip()), device=a.device,
                          fail_if=a.fail_if, allow_env_mismatch=a.allow_env_mismatch,
                          write_baseline=a.write_baseline, first_night=a.first_night,
                          allow_missing=a.allow_missing, report=a.report, pytest_benchmark=a.pytest_benchmark,
                          resume=a.resume, progress=a.progress)
    argv: list[str] = []
    for flag, value in (("--preset-latency", a.preset_latency), ("--preset-extrapolation", a.preset_extrapolation)):
        if value:
            argv += [flag, value]
    argv += ["--baseline", str(a.baseline), "--out", str(out)]
    argv += [x for v in a.set_latency for x in ("--set-latency", v)]
    argv += [x for v in a.set_extrapolation for x in ("--set-extrapolation", v)]
    argv += [x for v in a.fail_if for x in ("--fail-if", v)]
    if a.suites != "latency,extrapolation":
        argv += ["--suites", a.suites]
    if a.device:
        argv += ["--device", a.device]
    argv += [flag for flag, on in (("--write-baseline", a.write_baseline), ("--first-night", a.first_night),
                                   ("--allow-env-mismatch", a.allow_env_mismatch),
                                   ("--allow-missing", a.allow_missing),
                                   ("--no-report", not a.report), ("--pytest-benchmark", a.pytest_benchmark),
                                   ("--resume", a.resume)) if on]
    return run_nightly(opts, argv=argv).rc
