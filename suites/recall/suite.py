"""The run: the recall suite's part of the run loop (:mod:`ablate.plan.suitekit`): the plan (one task per grid
point x seed), the measurement (:func:`run_point`, its row), the dry run's cost (``train_jobs``) and the terminal
summary; resume, claims, failure rows and progress are the loop's."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ablate.core.validate import check_fits, estimate_memory_bytes
from ablate.plan.estimate import (EvalWork, Rate, TrainJob, estimate_lines, eval_flops, job_flops, measured_rate,
                                  measured_where, ok_rows)
from ablate.plan.runner import default_preset, resolve_device, results_path
from ablate.plan.suitekit import Plan, Run, Suite, SuiteTask, task_id

from .config import RecallConfig, RecallPoint, config_id, points, resolve, steps_of
from .constants import SUITE
from .measure import eval_sets, point_work, run_point

KEY_FIELDS = ("point", "attention", "position", "d_model", "n_heads", "n_kv_heads", "window", "seq_len", "kv_pairs",
              "lr")


def row_key_fields(point: RecallPoint, preset: str, cid: str, seed: int, device: str) -> dict[str, Any]:
    d = point.describe()
    return {**{k: d[k] for k in KEY_FIELDS}, "seed": seed, "preset": preset, "device": device, "config_id": cid}


def check_memory(cfg: RecallConfig, pts: list[RecallPoint], device: str) -> None:
    """Refuse (one line) a point whose training step cannot fit in the device's memory, before any point trains."""
    half = device == "cuda" and cfg.train.amp is not None
    for p in pts:
        check_fits(estimate_memory_bytes(p.model, batch=p.batch_size, seq_len=p.seq_len, training=True,
                                         dtype_bytes=2 if half else 4, param_dtype_bytes=4),
                   device, what=f"recall grid point {p.name}", hint="data.batch_sizes / train.batch_size or the grid")


class Recall(Suite[RecallConfig]):
    """Seed-major (every point once before any point twice), one task and one row per grid point x seed."""

    name = SUITE
    title = "recall grid"

    def plan(self, opts) -> Plan[RecallConfig]:
        device = resolve_device(opts.device)
        preset = opts.preset or default_preset(opts.suite, device)
        cfg = resolve(preset, opts.overrides)
        pts = points(cfg)
        check_memory(cfg, pts, device)
        tasks = []
        for seed in range(int(opts.seeds)):
            for p in pts:
                key = row_key_fields(p, preset, config_id(cfg, p), seed, device)
                run_cfg = {"model": p.model, "data": cfg.data, "train": cfg.train, "el_bytes": cfg.el_bytes}
                tasks.append(SuiteTask(task_id(p.name, seed), f"{p.name} seed {seed}", (key,), (key,),
                                       run_name=f"{p.name}-s{seed}", config=run_cfg, work=(p, seed)))
        return Plan(device, preset, cfg, results_path(opts, device, preset), tasks, None, cfg.cpu_threads)

    def begin(self, run: Run[RecallConfig]) -> None:
        run.state["sets"] = {}

    def stop(self, run: Run[RecallConfig]) -> bool:
        limit = run.cfg.time_limit_s
        return bool(limit and time.perf_counter() - run.t_start > limit)

    def failure_fields(self, run: Run[RecallConfig], task: SuiteTask, key: dict) -> dict:
        point, _ = task.work
        return {k: v for k, v in point.describe().items() if k not in key} | {"metric": "accuracy", "value": None,
                                                                              "unit": "fraction"}

    def measure(self, run: Run[RecallConfig], task: SuiteTask, todo: list[dict]) -> None:
        (key,), (point, seed) = todo, task.work
        sets = run.state["sets"]
        task_key = (point.seq_len, point.kv_pairs)
        if task_key not in sets:  # one validation/test set per (length, pairs), shared by every point and seed
            sets[task_key] = eval_sets(run.cfg, *task_key)
        status, reason, metrics = run_point(run.cfg, point, seed, sets[task_key], run.device, run.progress,
                                            on_log=run.on_log)
        run.rows.write(status, key, {k: v for k, v in metrics.items() if k not in key}, config=task.config,
                       reason=reason)

    def summary(self, run: Run[RecallConfig]) -> None:
        from .console import print_summary

        print_summary(run.plan.results, time.perf_counter() - run.t_start, run.measured, run.left,
                      run.cfg.time_limit_s, tables=run.opts.summary_tables)


SUITE_KIT = Recall()


def tasks(opts):
    """(results file, one :class:`ablate.plan.runner.Task` per grid point x seed)."""
    return SUITE_KIT.tasks(opts)


def run(opts) -> Path:
    """Run the grid as ``opts`` (an :class:`ablate.plan.runner.RunOptions`) asks; returns the JSONL results file."""
    return SUITE_KIT.run(opts)


def train_jobs(cfg: RecallConfig, seeds: list[int]) -> tuple[list[TrainJob], list[EvalWork]]:
    """What the grid trains (one model per point and seed) and its evaluation forwards (validation at every curve
    point, then the test set), for :mod:`ablate.plan.estimate` (``ablate run --dry-run``)."""
    jobs, evals = [], []
    for _ in seeds:
        for p in points(cfg):
            job, work = point_work(cfg, p)
            jobs.append(job)
            evals.append(work)
    return jobs, evals


@dataclass(frozen=True)
class StepCost:
    """Seconds of a run = ``steps x step_s + FLOPs / flops_per_s``, fitted to earlier recall rows (``source``)."""

    step_s: float
    flops_per_s: float
    source: str

    def seconds(self, jobs: list[TrainJob], evals: list[EvalWork]) -> float:
        return (sum(j.steps for j in jobs) * self.step_s
                + (sum(job_flops(j) for j in jobs) + sum(eval_flops(w) for w in evals)) / self.flops_per_s)


def recall_cost(device: str, where: list[Path], *, gpu: str | None, cpu: str | None) -> StepCost | None:
    """What earlier ok recall rows of this kind of machine under ``where`` took: seconds (on CPU ``cpu_s / threads``,
    what an idle machine gives -- a shared one takes longer in wall time; on CUDA ``run_s``) against their steps and
    FLOPs (training + evaluation). These narrow models spend much of a step in per-step overhead (Python, small
    kernels), so FLOPs alone mispredict them: with rows of two sizes or more, a per-step time and a FLOP rate are
    fitted by least squares; otherwise (or when the fit is not positive) the median FLOP/s, with no per-step term."""
    pts, threads = [], set()
    for r in ok_rows(where):
        if r.get("suite") != SUITE or str(r.get("device", "")).split(":")[0] != device:
            continue
        if device == "cuda" and (not gpu or gpu.lower() not in str(r.get("env.gpu", "")).lower()):
            continue
        if device == "cpu" and cpu and r.get("env.cpu") != cpu:
            continue
        flops = sum(v for v in (r.get("train_flops"), r.get("eval_flops")) if isinstance(v, (int, float)))
        n = r.get("threads") or 1
        secs = r.get("cpu_s") / n if device == "cpu" and isinstance(r.get("cpu_s"), (int, float)) else r.get("run_s")
        if flops > 0 and isinstance(secs, (int, float)) and secs > 0:
            steps = r.get("steps") if isinstance(r.get("steps"), int) and r.get("steps") > 0 else None
            pts.append((steps, flops, float(secs)))
            threads.add(str(n))
    if not pts:
        return None
    per = "CPU-second per torch thread" if device == "cpu" else "wall second"
    at = f", at {'/'.join(sorted(threads))} thread(s)" if device == "cpu" else ""
    sized = [(s, f, t) for s, f, t in pts if s]
    if len({round(f / s, -3) for s, f, _ in sized}) > 1:
        a = np.array([[s, f] for s, f, _ in sized], dtype=float)
        (step_s, inv), *_ = np.linalg.lstsq(a, np.array([t for *_, t in sized]), rcond=None)
        if step_s > 0 and inv > 0:
            return StepCost(float(step_s), float(1 / inv), f"fitted to {len(sized)} measured recall rows: "
                            f"{step_s * 1e3:.3g} ms per training step + FLOPs at {1e-9 / inv:.3g} GFLOP/s, per {per}"
                            + at)
    rate = statistics.median(f / t for _, f, t in pts)
    return StepCost(0.0, rate, f"median of {len(pts)} measured recall rows, FLOPs per {per}" + at)


def dry_run_estimate(cfg: RecallConfig, opts, device: str) -> list[str]:
    """``ablate run --dry-run``'s cost lines: the plan's time as earlier recall rows of this machine measured
    (:func:`recall_cost`; printed as the plan's FLOPs over that time); without such rows the language-model suites' rate, said to be optimistic."""
    from ablate.store.env import fingerprint

    jobs, evals = train_jobs(cfg, list(range(int(opts.seeds))))
    fp, where = fingerprint(), measured_where(opts.out)
    cost = recall_cost(device, where, gpu=fp.get("gpu"), cpu=fp.get("cpu"))
    if cost is not None:  # estimate_lines prints time at a rate: the plan's FLOPs over the fitted seconds
        flops = sum(job_flops(j) for j in jobs) + sum(eval_flops(w) for w in evals)
        return estimate_lines(jobs, evals, Rate(flops / cost.seconds(jobs, evals), cost.source), device=device)
    lines = estimate_lines(jobs, evals, measured_rate(device, where=where, gpu=fp.get("gpu"), cpu=fp.get("cpu")),
                           device=device)
    return lines + ["estimate: no recall rows of this machine under results/: the rate above (if any) is the "
                    "language-model suites'; recall's narrow models run several times slower per FLOP "
                    f"(docs/recall.md), so expect longer"]
