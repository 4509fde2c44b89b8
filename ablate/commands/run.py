"""The work behind ``ablate run``, ``ablate compare`` and ``ablate nightly`` once typer has parsed the options (the
commands, their options and help texts are in ``ablate.cli``). Imports nothing heavy at import time: the runner,
the launchers and the comparison are imported when a command runs."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import typer

from ablate.commands.views import one_line
from ablate.errors import AblateError, ConfigError

# ---------------------------------------------------------------------------------------------------------------
# run


def summarize(path: Path) -> tuple[str, int]:
    """One-line summary of the rows this process wrote, and how many of them have status ``error``."""
    from ablate.store.results import current_run_id, read_rows

    try:
        rows = [r for r in read_rows(path, missing_ok=True) if r.get("run_id") == current_run_id()]
    except AblateError as exc:
        return f"results: {path} ({exc})", 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0])))
    return f"results: {path} ({len(rows)} new rows{': ' + detail if detail else ''})", counts.get("error", 0)


def gpu_ids(text: Optional[str]) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        ids = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--gpus {text!r} is not a comma-separated list of GPU ids (e.g. 0,1,2)") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r}: ids must be distinct and >= 0")
    return ids


def run(*, suite: str, preset: Optional[str], overrides: Optional[Sequence[str]], sweep: Optional[Sequence[str]],
        grid: Optional[Sequence[str]], seeds: int, out: str, data: Optional[Path], tokenizer: Optional[str],
        device: Optional[str], resume: bool, progress: bool, task: Optional[Sequence[str]], launcher: str,
        gpus: Optional[str], wait: bool, nproc_per_node: int, nnodes: str, node_rank: Optional[int],
        rdzv_backend: Optional[str], rdzv_endpoint: Optional[str], rdzv_id: Optional[str],
        master_addr: Optional[str], master_port: Optional[int], slurm_partition: Optional[str],
        slurm_time: Optional[str], slurm_gpus_per_task: Optional[int], slurm_cpus_per_task: Optional[int],
        slurm_mem_gb: Optional[float], slurm_array_parallelism: int, slurm_opt: Optional[Sequence[str]],
        slurm_cluster: str, plugin: Optional[Sequence[str]], dry_run: bool = False,
        log_to: Optional[Sequence[str]] = None, summary: bool = True) -> int:
    """``ablate run`` with its parsed options (``launcher`` by name): run or launch the suite, print the summary
    line and (``summary``) the summary tables of the results file, as ``ablate show`` prints them; returns the exit
    code (1 when a task did not finish or a measurement failed)."""
    from ablate.launchers import distributed
    from ablate.registry.plugins import use
    from ablate.plan.runner import RunOptions, check_out_dir, run_suite

    out = check_out_dir(out)  # empty, a file, unwritable: one line before anything is written
    if log_to:  # --log-to: an unknown tracker or a missing package is one line before anything runs
        from ablate.store.livelog import parse_targets

        log_to = parse_targets(log_to, suite)
    plugins = use(plugin)  # imported now: a broken plugin stops the run before anything starts
    overrides = list(overrides or ())
    if grid:
        from ablate.plan.grid import to_override

        if suite != "training":
            raise ConfigError(f"--grid is for the training suite, not {suite!r}; use --sweep KEY=V1,V2")
        if sweep:
            raise ConfigError("--grid and --sweep both build the training grid; give every axis as --sweep "
                              "(--grid norm=a,b is --sweep model.norm=a,b)")
        overrides.append(to_override(grid))
    if sweep:
        from ablate.plan.sweep import sweep_overrides

        overrides += sweep_overrides(suite, sweep, overrides)
    if tokenizer is not None:
        overrides.append(f"data.tokenizer={tokenizer}")
    opts = RunOptions(suite=suite, preset=preset, overrides=tuple(overrides), out=out, seeds=seeds,
                      resume=resume, data=data, device=device, progress=progress, only=tuple(task or ()),
                      plugins=plugins, log_to=tuple(log_to or ()))
    if dry_run:
        show_plan(opts)
        return 0
    if distributed.launched():  # a torchrun rank: run the suite (rank 0 writes)
        run_suite(opts)
        return 0
    from ablate.launchers.launch import DistOptions, LaunchOptions, SlurmOptions, launch

    lo = LaunchOptions(
        launcher=launcher, gpus=gpu_ids(gpus), wait=wait,
        dist=DistOptions(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                         rdzv_backend=rdzv_backend, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id,
                         master_addr=master_addr, master_port=master_port),
        slurm=SlurmOptions(partition=slurm_partition, time=slurm_time, gpus_per_task=slurm_gpus_per_task,
                           cpus_per_task=slurm_cpus_per_task, mem_gb=slurm_mem_gb,
                           array_parallelism=slurm_array_parallelism, opts=tuple(slurm_opt or ()),
                           cluster=slurm_cluster))
    res = launch(opts, lo, progress=progress)
    if not res.waited:
        return 0
    path = Path(res.results)
    if summary:
        show_summary(path)
    line, n_errors = summarize(path)
    typer.echo(line)
    if res.failed:
        for t, why in res.failed.items():
            sys.stderr.write(f"ablate: task {t} failed: {one_line(why)}\n")
        sys.stderr.write(f"ablate: {len(res.failed)} of {len(res.submitted)} task(s) did not finish; re-run the "
                         f"same command to retry them (see: ablate status {path.parent})\n")
        return 1
    if n_errors:
        sys.stderr.write(f"ablate: {n_errors} measurement(s) failed with status 'error' "
                         f"(see the reason column in {path})\n")
        return 1
    return 0


def show_summary(path: Path) -> None:
    """The summary tables of the results file ``path`` (what ``ablate show PATH`` prints), before the run's last line.
    The rows are saved whatever happens here: a file that cannot be summarised gets a one-line warning, not an
    error."""
    from ablate.reporting.show import render

    if not path.is_file():
        return
    try:
        text = render([path])
    except Exception as exc:  # noqa: BLE001  (the run is done; its exit code must not depend on the tables)
        sys.stderr.write(f"ablate: warning: no summary table for {path} ({type(exc).__name__}: "
                         f"{one_line(str(exc))}); see `ablate show {path}`\n")
        return
    typer.echo("")
    typer.echo(text, nl=False)
    typer.echo("")


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
            noise: Optional[Path] = None) -> int:
    """``ablate compare`` (``fmt``: table, json or markdown): print and write the comparison; returns the exit
    code (1 on a regression)."""
    from ablate.regress.compare import compare_paths, print_table, render_json, render_markdown, write_github_json
    from ablate.store.results import reading

    noisy = read_noise(noise)
    with reading(skip_invalid=skip_invalid, hint=hint):
        result = compare_paths(baseline, new, fail_if or None, allow_env_mismatch=allow_env_mismatch, noisy=noisy)
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
    return 1 if result.regressed else 0


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


def nightly(*, preset_latency: Optional[str], preset_extrapolation: Optional[str], baseline: Path, out: str,
            write_baseline: bool, fail_if: Optional[Sequence[str]], allow_env_mismatch: bool,
            set_latency: Optional[Sequence[str]], set_extrapolation: Optional[Sequence[str]], suites: str,
            device: Optional[str], report: bool, pytest_benchmark: bool, resume: bool, progress: bool) -> int:
    """``ablate nightly`` with its parsed options; returns the exit code of :func:`ablate.regress.nightly.run_nightly`.
    The command line it records (``argv``) names only the options given, as typed."""
    from ablate.regress.nightly import NightlyOptions, run_nightly
    from ablate.plan.runner import check_out_dir

    out = check_out_dir(out)
    opts = NightlyOptions(out=out, baseline=baseline, preset_latency=preset_latency,
                          preset_extrapolation=preset_extrapolation, set_latency=tuple(set_latency or ()),
                          set_extrapolation=tuple(set_extrapolation or ()),
                          suites=tuple(x.strip() for x in suites.split(",") if x.strip()), device=device,
                          fail_if=tuple(fail_if or ()), allow_env_mismatch=allow_env_mismatch,
                          write_baseline=write_baseline, report=report, pytest_benchmark=pytest_benchmark,
                          resume=resume, progress=progress)
    argv: list[str] = []
    for flag, value in (("--preset-latency", preset_latency), ("--preset-extrapolation", preset_extrapolation)):
        if value:
            argv += [flag, value]
    argv += ["--baseline", str(baseline), "--out", str(out)]
    argv += [a for s in (set_latency or ()) for a in ("--set-latency", s)]
    argv += [a for s in (set_extrapolation or ()) for a in ("--set-extrapolation", s)]
    argv += [a for f in (fail_if or ()) for a in ("--fail-if", f)]
    if suites != "latency,extrapolation":
        argv += ["--suites", suites]
    if device:
        argv += ["--device", device]
    argv += [flag for flag, on in (("--write-baseline", write_baseline), ("--allow-env-mismatch", allow_env_mismatch),
                                   ("--no-report", not report), ("--pytest-benchmark", pytest_benchmark),
                                   ("--resume", resume)) if on]
    return run_nightly(opts, argv=argv).rc


# ---------------------------------------------------------------------------------------------------------------
# run --dry-run


def show_plan(opts) -> None:
    """``ablate run --dry-run``: the resolved configuration (every setting, after presets, --set and --sweep) and the
    plan (results file, tasks, which are done already), then exit without running or writing anything."""
    from ablate.core.config import flatten
    from ablate.store.results import done_keys
    from ablate.plan.runner import default_preset, resolve_device, suite_tasks

    device = resolve_device(opts.device)
    opts = dataclasses.replace(opts, device=device)
    path, tasks = suite_tasks(opts)  # resolves, validates and plans exactly as the run would
    module = importlib.import_module(f"ablate.suites.{opts.suite}")
    preset = opts.preset or default_preset(opts.suite, device)
    cfg = module.resolve(preset, opts.overrides)
    done = done_keys(path) if opts.resume and path.exists() else set()
    typer.echo(f"suite: {opts.suite}   preset: {preset}   device: {device}   seeds: {opts.seeds}")
    typer.echo(f"results: {path}" + ("" if opts.resume else "   (--no-resume: every task runs again)"))
    typer.echo("configuration:")
    for key, value in flatten(cfg).items():
        typer.echo(f"  {key} = {value!r}")
    owed = [t for t in tasks if not (t.keys and done and set(t.keys) <= done)]
    typer.echo(f"plan: {len(tasks)} task(s), {len(tasks) - len(owed)} done already, {len(owed)} to run")
    for t in tasks:
        state = "done" if t not in owed else "todo"
        rows = f"{len(t.keys)} row(s)" if t.keys is not None else "rows known when it runs"
        typer.echo(f"  [{state}] {t.id}: {t.label} ({rows})")
    for line in _estimate(module, cfg, opts, device):
        typer.echo(line)
    typer.echo("dry run: nothing was run or written")


def _estimate(module, cfg, opts, device: str) -> list[str]:
    """The dry run's cost lines (:mod:`ablate.plan.estimate`) for a suite that lists what it trains: FLOPs of the whole
    plan and its time at the throughput earlier rows of this machine measured (results/ of the checkout, --out)."""
    from ablate.store.env import fingerprint, source_root
    from ablate.plan.estimate import estimate_lines, measured_rate

    if not hasattr(module, "train_jobs"):
        return []
    jobs, evals = module.train_jobs(cfg, list(range(opts.seeds)))
    fp = fingerprint()
    where = [p for p in ((source_root() or Path(".")) / "results", Path(opts.out)) if p.exists()]
    rate = measured_rate(device, where=where, gpu=fp.get("gpu"), cpu=fp.get("cpu"))
    return estimate_lines(jobs, evals, rate, device=device)
