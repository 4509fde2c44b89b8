"""The suite's entry points: ``tasks`` (one per trained model, for a launcher) and ``run`` (train and score every
job, resuming a results file, then print the summary)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from ablate.launchers import distributed
from ablate.io.data import check_eval_span
from ablate.errors import ConfigError
from ablate.core.evaluate import span_needed
from ablate.store.livelog import open_live
from ablate.plan.progress import start_progress
from ablate.store.results import ResultWriter, done_keys, row_key
from ablate.plan.runner import Task, results_path, select_tasks
from ablate.plan.suitekit import set_threads, training_setup
from ablate.store.runstate import Claims

from .config import config_id, eval_set, eval_stride, resolve
from .console import _print_summary
from .constants import SUITE
from .measure import _run_job
from .plan import check_memory, plan_caveats, plan_jobs, validate_plan


def _out_dir(opts) -> Path:
    return Path(opts.out)


def _setup(opts):
    """(device, preset, cfg, corpus, jobs, results file): what run() and tasks() share."""
    device, preset, cfg, corpus = training_setup(opts, resolve)
    validate_plan(cfg, device)
    es, stride = eval_set(cfg, corpus), eval_stride(cfg)  # the data must hold the evaluation: refused before a plan
    check_eval_span(es.stream, span_needed(es.tokens, max(cfg.eval_lens), cfg.eval.mode, stride),
                    f"evaluation at eval_len={max(cfg.eval_lens)} ({es.tokens} tokens, {cfg.eval.mode})")
    if len(corpus.train) < cfg.train.seq_len + 1:
        raise ConfigError(f"training split holds {len(corpus.train)} tokens, fewer than seq_len+1 = "
                          f"{cfg.train.seq_len + 1}")
    check_memory(cfg, device)
    seeds = [cfg.train.seed + i for i in range(int(opts.seeds))]
    jobs = plan_jobs(cfg, preset, corpus, device, seeds)
    return device, preset, cfg, corpus, jobs, results_path(opts, device, preset)


def tasks(opts):
    """(results file, one :class:`ablate.plan.runner.Task` per trained model: a position variant x seed [x passkey])."""
    *_, jobs, out = _setup(opts)
    return out, [Task(j.name, tuple(row_key(r.key) for r in j.rows), f"{j.kind} {j.position} seed {j.seed}")
                 for j in jobs]


def run(opts) -> Path:
    """Run the suite as ``opts`` (an :class:`ablate.plan.runner.RunOptions`) asks; returns the JSONL results file."""
    if distributed.launched():
        raise ConfigError("the extrapolation suite runs one process per device; spread its trained variants with "
                          "--launcher gpus or slurm instead of --nproc-per-node")
    t_start = time.perf_counter()
    device, preset, cfg, corpus, jobs, out = _setup(opts)
    chosen = select_tasks([j.name for j in jobs], opts.only, "extrapolation task")
    jobs = [j for j in jobs if j.name in chosen]
    ckpt_dir = _out_dir(opts) / "extrapolation.ckpt"
    caveats = plan_caveats(cfg)
    if caveats and not opts.shard:
        err = Console(stderr=True)
        for line in caveats:
            err.print(f"[yellow]caveat:[/] {line}", highlight=False, soft_wrap=True)
    writer = ResultWriter(out, SUITE, resume=opts.resume, shard=opts.shard)
    live = open_live(opts, SUITE, device, preset)  # --log-to trackers: one tracker run per trained model
    cid = config_id(cfg, corpus)
    threads_before = set_threads(device, cfg.cpu_threads, tf32=True)
    prog = start_progress(opts.progress)
    overall = prog.add_task("extrapolation", total=sum(len(j.rows) for j in jobs), info="") if prog else None
    trained = 0
    claims = Claims(out)
    try:
        for job in jobs:
            todo = [r for r in job.rows if not writer.done(r.key)]
            if prog:
                prog.update(overall, advance=len(job.rows) - len(todo), info=job.name)
            if not todo:
                continue
            if not claims.claim(job.name):  # another live run into this --out is on it
                if prog:
                    prog.update(overall, advance=len(todo))
                continue
            try:
                if opts.resume:  # it may have finished it between our start and our claim
                    finished = done_keys(out)
                    todo = [r for r in todo if row_key(r.key) not in finished]
                trained += _run_job(cfg, job, todo, corpus, device, writer, ckpt_dir, opts, prog, overall,
                                    live=live)
            finally:
                claims.release(job.name)
    finally:
        claims.release_all()
        if prog:
            prog.stop()
        torch.set_num_threads(threads_before)
    if claims.skipped:
        sys.stderr.write(f"ablate: {len(claims.skipped)} task(s) were being run by another process into the same "
                         f"--out and were left to it: " + ", ".join(f"{t} ({who})" for t, who in
                                                                      claims.skipped.items()) + "\n")
    elapsed = time.perf_counter() - t_start
    _print_summary(out, cid, preset, elapsed, trained)
    return out

