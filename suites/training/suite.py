"""The run: ``tasks`` (one launcher task per grid point x seed) and ``run`` (the grid, seed-major, resumable, under
a time limit and the run-claims of :class:`ablate.store.runstate.Claims`), with the terminal summary."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ablate.launchers import distributed
from ablate.errors import ConfigError
from ablate.plan.grid import GridPoint
from ablate.core.model import Transformer
from ablate.store.livelog import model_run, open_live
from ablate.core.lr_sweep import sweep as lr_sweep
from ablate.plan.progress import start_progress
from ablate.store.results import ResultWriter, done_keys, row_key, status_from_exception, to_frame
from ablate.plan.runner import Task, results_path, select_tasks
from ablate.plan.suitekit import set_threads, training_setup
from ablate.store.runstate import Claims
from ablate.core.validate import check_fits, estimate_memory_bytes

from .aggregate import grid_rows
from .budget import Budget
from .config import TrainingConfig, config_id, grid_id, grid_points, point_train, resolve, sweeps_lr
from .constants import SUITE
from .measure import _describe, _row_key_fields, eval_sets, run_point, unigram_loss
from .tables import _cell, summary_table


def results_file(opts, device: str, preset: str) -> Path:
    """The results file of a training run: :func:`ablate.plan.runner.results_path`,
    ``<out>/training/<device>-<preset>.jsonl`` (e.g. ``runs/training/cpu-tiny.jsonl``)."""
    return results_path(opts, device, preset)


def task_id(point: GridPoint, seed: int) -> str:
    """A grid point x seed as a launcher task: ``"<point>@s<seed>"`` (e.g. ``modern@s0``)."""
    return f"{point.name}@s{seed}"


def _setup(opts):
    """Everything run() and tasks() share: (device, preset, cfg, corpus, points, reference, seeds, results file)."""
    device, preset, cfg, corpus = training_setup(opts, resolve)
    seq = cfg.train.seq_len
    eval_sets(cfg, corpus)  # the held-out split must hold the test (and tune) documents: refused before a plan
    if len(corpus.train) < seq + 1:
        raise ConfigError(f"training split holds {len(corpus.train)} tokens, fewer than seq_len+1 = {seq + 1}")
    points, reference = grid_points(cfg)
    seeds = [cfg.train.seed + i for i in range(int(opts.seeds))]
    check_memory(cfg, points, device)
    return device, preset, cfg, corpus, points, reference, seeds, results_file(opts, device, preset)


def check_memory(cfg: TrainingConfig, points: list[GridPoint], device: str) -> None:
    """Refuse (one line) a grid with a point whose training step or evaluation cannot fit in the device's memory,
    by the closed-form lower bound of :func:`ablate.core.validate.estimate_memory_bytes`, before any point trains."""
    half = device == "cuda" and cfg.train.amp is not None
    db = {"dtype_bytes": 2 if half else 4, "param_dtype_bytes": 4}
    for p in points:
        tcfg = point_train(cfg, p, cfg.train.seed)
        check_fits(estimate_memory_bytes(p.model, batch=tcfg.batch_size, seq_len=tcfg.seq_len, training=True, **db),
                   device, what=f"training grid point {p.name}", hint="train.batch_size or model.*")
        check_fits(estimate_memory_bytes(p.model, batch=max(1, cfg.eval.batch_tokens // tcfg.seq_len),
                                         seq_len=tcfg.seq_len, training=False, **db),
                   device, what=f"evaluating grid point {p.name}", hint="eval.batch_tokens")


def tasks(opts):
    """(results file, one :class:`ablate.plan.runner.Task` per grid point x seed, seed-major as run() goes)."""
    device, preset, cfg, corpus, points, _, seeds, out = _setup(opts)
    return out, [Task(task_id(p, s), (row_key(_row_key_fields(p, preset, config_id(cfg, p, corpus), s, device,
                                                              corpus)),), f"{p.name} seed {s}")
                 for s in seeds for p in points]


def run(opts) -> Path:
    """Run the grid as ``opts`` (an :class:`ablate.plan.runner.RunOptions`) asks; returns the JSONL results file.

    Under torchrun (``--nproc-per-node``) every rank calls this: rank 0 decides what to run and writes the rows,
    every grid point trains with DDP on all ranks (:mod:`ablate.launchers.distributed`)."""
    t_start = time.perf_counter()
    device, preset, cfg, corpus, points, reference, seeds, out = _setup(opts)
    dinfo = distributed.init(device)
    if dinfo.enabled:
        distributed.check_batch(cfg.train.batch_size, dinfo.world_size)
        if cfg.budget.kind == "time":
            raise ConfigError("budget.kind=time is calibrated on one device; with --nproc-per-node use "
                              "budget.kind=tokens or flops")
    chosen = select_tasks([task_id(p, s) for s in seeds for p in points], opts.only, "training task")
    writer = ResultWriter(out, SUITE, resume=opts.resume, shard=opts.shard, enabled=dinfo.is_main)
    live = open_live(opts, SUITE, device, preset) if dinfo.is_main else None  # --log-to trackers (rank 0)
    gid = grid_id(cfg, corpus)
    budget = Budget(cfg, reference, corpus, device)
    sets = eval_sets(cfg, corpus)
    unigram = unigram_loss(corpus, sets[0])
    sweeps: dict[str, object] = {}  # point name -> its learning-rate sweep (ablate.core.lr_sweep; cached on disk too)

    def point_sweep(point: GridPoint):
        """The point's sweep, run once (the first seed's initialisation and data order) and kept beside the results
        file (``<results>.lr_sweep.json``), so other seeds and resumed runs reuse the choice."""
        if not sweeps_lr(cfg, point):
            return None
        if point.name not in sweeps:
            tcfg = point_train(cfg, point, cfg.train.seed)
            steps, _ = budget.steps(Transformer(point.model), point.model, tcfg)  # the run's steps
            sweeps[point.name] = lr_sweep(point.model, replace(tcfg, steps=steps), corpus, cfg.lr_sweep,
                                          test_tokens=cfg.eval.tokens, device=device, tune=sets[2],
                                          cache=out.with_name(out.stem + ".lr_sweep.json"),
                                          batch_tokens=cfg.eval.batch_tokens, progress=prog or False,
                                          label=f"{point.name} lr sweep")
        return sweeps[point.name]
    threads_before = set_threads(device, cfg.cpu_threads, tf32=True)

    # The grid's declaration, stored in each row: a report can then show points another grid measured.
    declared = [{"point": p.name, "config_id": config_id(cfg, p, corpus), "baseline": p.baseline,
                 "change": p.change, "group": p.group, "point_index": p.index,
                 **{f"axis.{k}": v for k, v in p.settings.items()}} for p in points]

    def key_of(seed: int, point: GridPoint) -> dict:
        return _row_key_fields(point, preset, config_id(cfg, point, corpus), seed, device, corpus)

    # Seed-major: every point once before any point twice, so a time limit still leaves a whole grid.
    jobs = [(seed, p) for seed in seeds for p in points if task_id(p, seed) in chosen]
    # Rank 0's view of what is done decides for every rank (the others must train the same points).
    todo = distributed.broadcast([i for i, (s, p) in enumerate(jobs) if not writer.done(key_of(s, p))], dinfo)
    prog = start_progress(opts.progress and dinfo.is_main)
    overall = prog.add_task("training grid", total=len(jobs), info="") if prog else None
    if prog:
        prog.update(overall, advance=len(jobs) - len(todo))
    ran, left = 0, 0
    claims = Claims(out) if not dinfo.enabled else None  # DDP ranks are one run: rank 0 decides for all
    try:
        for n, i in enumerate(todo):
            seed, point = jobs[i]
            key = key_of(seed, point)
            stop = bool(cfg.time_limit_s and time.perf_counter() - t_start > cfg.time_limit_s)
            if distributed.broadcast(stop, dinfo):
                left = len(todo) - n
                break
            if prog:
                prog.update(overall, info=f"{point.name} seed {seed}")
            tid = task_id(point, seed)
            if claims is not None:  # two runs into one --out: each task is measured by one of them
                if not claims.claim(tid) or (opts.resume and row_key(key) in done_keys(out)):
                    if tid in claims.held:
                        claims.release(tid)
                    if prog:
                        prog.update(overall, advance=1)
                    continue
            desc = {**_describe(point, gid, declared),
                    **{k: v for k, v in corpus.describe().items() if k not in key}}
            run_cfg = {"model": point.model, "train": point_train(cfg, point, seed), "budget": cfg.budget,
                       "grid": cfg.grid, "eval": cfg.eval, "data": cfg.data}
            try:
                # --log-to: a tracker run per point and seed (ablate.store.livelog); without it lrun does nothing
                with model_run(live, f"{point.name}-s{seed}", config=run_cfg, keys=[key]) as lrun:
                    try:
                        swept = point_sweep(point)
                        status, reason, metrics, tcfg = run_point(cfg, point, seed, corpus, device, budget, prog,
                                                                  unigram=unigram, on_log=lrun.on_log, sets=sets,
                                                                  sweep=swept)
                        run_cfg["train"] = tcfg
                        lrun.tap(writer).write(status, key, {**desc, **metrics}, config=run_cfg, reason=reason)
                    except Exception as exc:  # unsupported, OOM, a kernel that fails: a row, and the grid goes on
                        if status_from_exception(exc)[0] == "oom" and device == "cuda":
                            torch.cuda.empty_cache()
                        lrun.tap(writer).write_exception(exc, key, desc, config=run_cfg)
            finally:
                if claims is not None:
                    claims.release(tid)
            ran += 1
            if device == "cuda":
                torch.cuda.empty_cache()
            if prog:
                prog.update(overall, advance=1)
    finally:
        if claims is not None:
            claims.release_all()
        if prog:
            prog.stop()
        torch.set_num_threads(threads_before)
    if claims is not None and claims.skipped:
        sys.stderr.write(f"ablate: {len(claims.skipped)} task(s) were being run by another process into the same "
                         f"--out and were left to it: " + ", ".join(f"{t} ({who})" for t, who in
                                                                      claims.skipped.items()) + "\n")
    if dinfo.is_main:
        _print_summary(out, gid, time.perf_counter() - t_start, ran, left, cfg.time_limit_s)
    if dinfo.enabled:
        distributed.shutdown()
    return out


def _print_summary(out: Path, gid: str, elapsed: float, ran: int, left: int, limit: float) -> None:
    console = Console(width=None if Console().is_terminal else 140)
    try:
        df = to_frame(out) if out.exists() else None
    except Exception as exc:  # the run itself succeeded; never fail on the print
        console.print(f"[yellow]could not read {out}: {exc}[/]")
        df = None
    if df is not None and "grid_id" in df.columns:
        df = grid_rows(df[df["suite"] == SUITE], gid)
        if not df.empty:
            summ = summary_table(df)
            table = Table(title="training: final validation loss (mean ± 95% CI over seeds)")
            cols = ("variant", "seeds", "val loss", "Δ vs baseline", "params", "tokens/s")
            for c in cols:
                table.add_column(c, justify="left" if c == "variant" else "right", no_wrap=c != "seeds")
            for _, r in summ.iterrows():
                table.add_row(*[_cell(r.get(c)) for c in cols])
            console.print(table)
    console.print(f"trained {ran} run(s) in {elapsed:.1f} s; results: {out}")
    if left:
        console.print(f"[yellow]time_limit_s={limit:g} reached: {left} run(s) left; re-run the same command to "
                      f"resume[/]")

