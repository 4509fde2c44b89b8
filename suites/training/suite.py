"""The run: the training suite's part of the run loop (:mod:`ablate.plan.suitekit`): the plan (one task per grid
point x seed), the measurement (:func:`run_point`, its row) and the terminal summary; resume, claims, failure rows,
the time limit's stop and the torchrun ranks are the loop's."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ablate.core.lr_sweep import sweep as lr_sweep
from ablate.core.model import Transformer
from ablate.core.validate import check_fits, estimate_memory_bytes
from ablate.errors import ConfigError
from ablate.launchers import distributed
from ablate.plan.grid import GridPoint
from ablate.plan.runner import results_path
from ablate.plan.suitekit import Plan, Run, Suite, SuiteTask, training_setup
from ablate.plan.suitekit import task_id as kit_task_id
from ablate.store.frame import summary_frame

from .aggregate import grid_rows
from .budget import Budget
from .config import TrainingConfig, config_id, grid_id, grid_points, point_train, resolve, sweeps_lr
from .constants import SUITE
from .measure import describe as _describe, eval_sets, row_key_fields as _row_key_fields, run_point, unigram_loss
from .tables import cell as _cell, summary_table


def results_file(opts, device: str, preset: str) -> Path:
    """The results file of a training run: :func:`ablate.plan.runner.results_path`,
    ``<out>/training/<device>-<preset>.jsonl`` (e.g. ``runs/training/cpu-tiny.jsonl``)."""
    return results_path(opts, device, preset)


def task_id(point: GridPoint, seed: int) -> str:
    """A grid point x seed as a launcher task (:func:`ablate.plan.suitekit.task_id`): ``modern@s0``,
    ``modern-swiglu-to-relu@s0``."""
    return kit_task_id(point.name, seed)


def _setup(opts):
    """Everything the plan holds: (device, preset, cfg, corpus, points, reference, seeds, results file)."""
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


class Training(Suite[TrainingConfig]):
    """The grid, seed-major (every point once before any point twice, so a time limit still leaves a whole grid),
    one task and one row per grid point x seed. Under torchrun (``--nproc-per-node``) every rank runs the loop:
    rank 0 decides what to run and writes the rows, every point trains with DDP on all ranks."""

    name = SUITE
    title = "training grid"

    def plan(self, opts) -> Plan[TrainingConfig]:
        device, preset, cfg, corpus, points, reference, seeds, out = _setup(opts)
        tasks = []
        for seed in seeds:
            for p in points:
                key = _row_key_fields(p, preset, config_id(cfg, p, corpus), seed, device, corpus)
                run_cfg = {"model": p.model, "train": point_train(cfg, p, seed), "budget": cfg.budget,
                           "grid": cfg.grid, "eval": cfg.eval, "data": cfg.data}
                tasks.append(SuiteTask(task_id(p, seed), f"{p.name} seed {seed}", (key,), (key,),
                                       run_name=f"{p.name}-s{seed}", config=run_cfg, work=(p, seed)))
        return Plan(device, preset, cfg, out, tasks, corpus, cfg.cpu_threads,
                    {"points": points, "reference": reference})

    def check_distributed(self, plan: Plan[TrainingConfig], dist) -> None:
        distributed.check_batch(plan.cfg.train.batch_size, dist.world_size)
        if plan.cfg.budget.kind == "time":
            raise ConfigError("budget.kind=time is calibrated on one device; with --nproc-per-node use "
                              "budget.kind=tokens or flops")

    def begin(self, run: Run[TrainingConfig]) -> None:
        cfg, corpus, points = run.cfg, run.plan.corpus, run.plan.extra["points"]
        sets = eval_sets(cfg, corpus)
        gid = grid_id(cfg, corpus)
        # The grid's declaration, stored in each row: a report can then show points another grid measured.
        declared = [{"point": p.name, "config_id": config_id(cfg, p, corpus), "baseline": p.baseline,
                     "change": p.change, "group": p.group, "point_index": p.index,
                     **{f"axis.{k}": v for k, v in p.settings.items()}} for p in points]
        run.state.update(gid=gid, declared=declared, sets=sets, unigram=unigram_loss(corpus, sets[0]), sweeps={},
                         budget=Budget(cfg, run.plan.extra["reference"], corpus, run.device))

    def stop(self, run: Run[TrainingConfig]) -> bool:
        limit = run.cfg.time_limit_s
        return bool(limit and time.perf_counter() - run.t_start > limit)

    def failure_fields(self, run: Run[TrainingConfig], task: SuiteTask, key: dict) -> dict:
        point, _seed = task.work
        return {**_describe(point, run.state["gid"], run.state["declared"]),
                **{k: v for k, v in run.plan.corpus.describe().items() if k not in key}}

    def measure(self, run: Run[TrainingConfig], task: SuiteTask, todo: list[dict]) -> None:
        (key,), (point, seed), st = todo, task.work, run.state
        swept = _point_sweep(run, point)
        status, reason, metrics, tcfg = run_point(run.cfg, point, seed, run.plan.corpus, run.device, st["budget"],
                                                  run.progress, unigram=st["unigram"], on_log=run.on_log,
                                                  sets=st["sets"], sweep=swept)
        run.rows.write(status, key, {**self.failure_fields(run, task, key), **metrics},
                       config={**task.config, "train": tcfg}, reason=reason)

    def summary(self, run: Run[TrainingConfig]) -> None:
        _print_summary(run.plan.results, run.state["gid"], time.perf_counter() - run.t_start, run.measured,
                       run.left, run.cfg.time_limit_s, tables=run.opts.summary_tables)


def _point_sweep(run: Run[TrainingConfig], point: GridPoint):
    """The point's learning-rate sweep (:mod:`ablate.core.lr_sweep`; None when it sweeps none), run once (the first
    seed's initialisation and data order) and kept beside the results file (``<results>.lr_sweep.json``), so other
    seeds and resumed runs reuse the choice."""
    cfg, sweeps = run.cfg, run.state["sweeps"]
    if not sweeps_lr(cfg, point):
        return None
    if point.name not in sweeps:
        tcfg = point_train(cfg, point, cfg.train.seed)
        steps, _ = run.state["budget"].steps(Transformer(point.model), point.model, tcfg)  # the run's steps
        out = run.plan.results
        sweeps[point.name] = lr_sweep(point.model, replace(tcfg, steps=steps), run.plan.corpus, cfg.lr_sweep,
                                      test_tokens=cfg.eval.tokens, device=run.device, tune=run.state["sets"][2],
                                      cache=out.with_name(out.stem + ".lr_sweep.json"),
                                      batch_tokens=cfg.eval.batch_tokens, progress=run.progress or False,
                                      label=f"{point.name} lr sweep")
    return sweeps[point.name]


SUITE_KIT = Training()


def tasks(opts):
    """(results file, one :class:`ablate.plan.runner.Task` per grid point x seed, seed-major as run() goes)."""
    return SUITE_KIT.tasks(opts)


def run(opts) -> Path:
    """Run the grid as ``opts`` (an :class:`ablate.plan.runner.RunOptions`) asks; returns the JSONL results file."""
    return SUITE_KIT.run(opts)


def _print_summary(out: Path, gid: str, elapsed: float, ran: int, left: int, limit: float, tables: bool = True) -> None:
    console = Console(width=None if Console().is_terminal else 140)
    df = summary_frame(out)
    if tables and df is not None and "grid_id" in df.columns:
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

