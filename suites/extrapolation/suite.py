"""The suite's part of the run loop (:mod:`ablate.plan.suitekit`): the plan (one task per trained model: a position
variant x seed [x probe, x fine-tuning]), the measurement (train or load the model, score its rows) and the summary."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from ablate.core.evaluate import span_needed
from ablate.errors import ConfigError
from ablate.io.data import check_eval_span
from ablate.plan.runner import results_path
from ablate.plan.suitekit import Plan, Run, Suite, SuiteTask, training_setup

from .config import ExtrapolationConfig, config_id, eval_set, eval_stride
from .console import print_summary as _print_summary
from .constants import SUITE
from .measure import train_and_score, row_unit
from .pretrained import TASK as PRETRAINED, plan_pretrained, resolve, score
from .plan import RowSpec, check_memory, job_model, plan_caveats, plan_jobs, validate_plan


class Extrapolation(Suite[ExtrapolationConfig]):
    name = SUITE
    title = "extrapolation"
    torchrun = ("the extrapolation suite runs one process per device; spread its trained variants with --launcher "
                "gpus or slurm instead of --nproc-per-node")

    def plan(self, opts) -> Plan[ExtrapolationConfig]:
        device, preset, cfg, corpus = training_setup(opts, resolve)
        if cfg.pretrained:  # --model hf:...: a checkpoint scored, nothing trained
            return plan_pretrained(opts, device, preset, cfg, corpus)
        validate_plan(cfg, device)
        es, stride = eval_set(cfg, corpus), eval_stride(cfg)  # the data must hold the evaluation: refused first
        check_eval_span(es.stream, span_needed(es.tokens, max(cfg.eval_lens), cfg.eval.mode, stride),
                        f"evaluation at eval_len={max(cfg.eval_lens)} ({es.tokens} tokens, {cfg.eval.mode})")
        if len(corpus.train) < cfg.train.seq_len + 1:
            raise ConfigError(f"training split holds {len(corpus.train)} tokens, fewer than seq_len+1 = "
                              f"{cfg.train.seq_len + 1}")
        check_memory(cfg, device)
        jobs = plan_jobs(cfg, preset, corpus, device, [cfg.train.seed + i for i in range(int(opts.seeds))])
        tasks = [SuiteTask(j.task_id, f"{j.kind} {j.position} seed {j.seed}", tuple(j.rows),
                           tuple(r.key for r in j.rows), run_name=j.name, work=j,
                           config=replace(cfg, model=job_model(cfg, j.position), train=replace(cfg.train, seed=j.seed)))
                 for j in jobs]
        return Plan(device, preset, cfg, results_path(opts, device, preset), tasks, corpus, cfg.cpu_threads)

    def begin(self, run: Run[ExtrapolationConfig]) -> None:
        caveats = [] if run.cfg.pretrained else plan_caveats(run.cfg)  # the trained models' settings
        if caveats and not run.opts.shard:
            err = Console(stderr=True)
            for line in caveats:
                err.print(f"[yellow]caveat:[/] {line}", highlight=False, soft_wrap=True)

    def measure(self, run: Run[ExtrapolationConfig], task: SuiteTask, todo: list[RowSpec]) -> int:
        """Train (or load) the job's model and score ``todo``; 1 when a model was trained."""
        if task.work == PRETRAINED:
            return score(run, task, todo)
        return train_and_score(run.cfg, task.work, todo, run.plan.corpus, run.device, run.rows,
                                Path(run.opts.out) / "extrapolation.ckpt", run.opts, run.progress, run.overall,
                                task.config, run.on_log)

    def failure_fields(self, run, task: SuiteTask, item: RowSpec) -> dict:
        return {"value": None, "unit": row_unit(item)}

    def summary(self, run: Run[ExtrapolationConfig]) -> None:
        _print_summary(run.plan.results, config_id(run.cfg, run.plan.corpus), run.plan.preset,
                       time.perf_counter() - run.t_start, run.measured, tables=run.opts.summary_tables)


SUITE_KIT = Extrapolation()
tasks = SUITE_KIT.tasks
run = SUITE_KIT.run
