"""The budget: ``budget.*`` (equal tokens, FLOPs or seconds) turned into a step count per grid point."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ablate.core.config import ModelConfig
from ablate.io.corpus import Corpus
from ablate.io.data import Batches
from ablate.errors import ConfigError
from ablate.plan.estimate import EvalWork, TrainJob, model_matmul_params, planned_vocab
from ablate.core.flops import matmul_params, step_flops
from ablate.plan.grid import GridPoint
from ablate.core.lr_sweep import sweep_jobs
from ablate.core.model import Transformer
from ablate.core.train import TrainConfig, train

from .config import TrainingConfig, grid_points, point_train, sweeps_lr


def flops_per_step(model, mcfg: ModelConfig, tcfg: TrainConfig) -> float:
    """Training FLOPs of one step (:func:`ablate.core.flops.step_flops`, the count the latency suite uses too)."""
    return step_flops(matmul_params(model), mcfg, tcfg.batch_size, tcfg.seq_len)[0]


def _calibrate(mcfg: ModelConfig, tcfg: TrainConfig, corpus: Corpus, device: str, steps: int) -> float:
    """Steady training tokens/s of ``mcfg``, timed on a throw-away model (the real run is untouched)."""
    state = torch.random.get_rng_state()
    try:
        model = Transformer(mcfg).to(device)
        cal = replace(tcfg, steps=steps, warmup=0, log_every=steps, eval_every=0)
        res = train(model, cal, Batches(corpus.train, cal.batch_size, cal.seq_len, seed=10_000 + tcfg.seed,
                                        device=device), device=device)
    finally:
        torch.random.set_rng_state(state)
    tps = res.stats.get("steady_tokens_per_s") or res.stats.get("tokens_per_s")
    if not tps:
        raise ConfigError("could not time the model for budget.kind=time (no steady steps); raise budget.calib_steps")
    return float(tps)


class Budget:
    """Turns ``budget.*`` into a step count per point (equal tokens, FLOPs or seconds)."""

    def __init__(self, cfg: TrainingConfig, reference: GridPoint, corpus: Corpus, device: str):
        self.cfg, self.reference, self.corpus, self.device = cfg, reference, corpus, device
        self._ref_value: float | None = None

    def value(self) -> float:
        """The per-run budget in its unit (tokens, FLOPs or seconds)."""
        b, tr = self.cfg.budget, self.cfg.train
        if b.kind == "tokens":
            return float(b.tokens or tr.steps * tr.batch_size * tr.seq_len)
        if self._ref_value is None:
            rt = point_train(self.cfg, self.reference, self.cfg.train.seed)
            if b.kind == "flops":
                self._ref_value = b.flops or flops_per_step(Transformer(self.reference.model), self.reference.model,
                                                            rt) * tr.steps
            else:
                if b.seconds:
                    self._ref_value = b.seconds
                else:
                    tps = _calibrate(self.reference.model, rt, self.corpus, self.device, b.calib_steps)
                    self._ref_value = tr.steps * rt.batch_size * rt.seq_len / tps
        return float(self._ref_value)

    def steps(self, model, mcfg: ModelConfig, tcfg: TrainConfig) -> tuple[int, dict[str, Any]]:
        kind = self.cfg.budget.kind
        per_step_tokens = tcfg.batch_size * tcfg.seq_len
        info: dict[str, Any] = {"budget_kind": kind, "budget_value": self.value()}
        if kind == "tokens":
            steps = int(self.value() // per_step_tokens)
        elif kind == "flops":
            steps = int(self.value() // flops_per_step(model, mcfg, tcfg))
        else:
            tps = _calibrate(mcfg, tcfg, self.corpus, self.device, self.cfg.budget.calib_steps)
            info["calib_tokens_per_s"] = tps
            steps = int(self.value() * tps // per_step_tokens)
        if steps < 1:
            raise ConfigError(f"budget {kind}={self.value():.4g} is less than one training step of this model")
        return steps, info



def train_jobs(cfg: TrainingConfig, seeds: list[int]) -> tuple[list[TrainJob], list[EvalWork]]:
    """What the grid trains (one model per point and seed, its steps from the budget: equal tokens or FLOPs; a
    time budget is taken as the reference's steps; plus each point's learning-rate sweep, labelled ``lr_sweep:``)
    and its evaluation forwards, for :mod:`ablate.plan.estimate`."""
    points, reference = grid_points(cfg)
    b, tr = cfg.budget, cfg.train
    ref_tcfg = point_train(cfg, reference, tr.seed)
    ref_flops = b.flops or (step_flops(model_matmul_params(reference.model), reference.model, ref_tcfg.batch_size,
                                       ref_tcfg.seq_len)[0] * tr.steps)
    jobs: list[TrainJob] = []
    evals: list[EvalWork] = []
    for seed in seeds:
        for p in points:
            t = point_train(cfg, p, seed)
            per_step = t.batch_size * t.seq_len
            if b.kind == "tokens":
                steps = int(float(b.tokens or tr.steps * tr.batch_size * tr.seq_len) // per_step)
            elif b.kind == "flops":
                steps = int(ref_flops // step_flops(model_matmul_params(p.model), p.model, t.batch_size, t.seq_len)[0])
            else:
                steps = tr.steps
            m = planned_vocab(p.model, cfg.data.tokenizer)
            if seed == seeds[0] and sweeps_lr(cfg, p):  # the point's learning-rate sweep, once for all seeds
                sj, se = sweep_jobs(m, replace(t, steps=max(1, steps)), cfg.lr_sweep, p.name)
                jobs += sj
                evals += se
            jobs.append(TrainJob(m, t.batch_size, t.seq_len, max(1, steps), f"{p.name}-s{seed}"))
            curves = (steps // t.eval_every) if t.eval_every else 0
            evals.append(EvalWork(m, t.seq_len, cfg.eval.tokens + curves * cfg.eval.curve_tokens))
    return jobs, evals
