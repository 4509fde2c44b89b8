"""The budget: ``budget.*`` (equal tokens, FLOPs or seconds) turned into a step count per grid point."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ablate.config import ModelConfig
from ablate.data import Batches, Corpus
from ablate.errors import ConfigError
from ablate.flops import matmul_params, step_flops
from ablate.grid import GridPoint
from ablate.model import Transformer
from ablate.train import TrainConfig, train

from .config import TrainingConfig, point_train


def flops_per_step(model, mcfg: ModelConfig, tcfg: TrainConfig) -> float:
    """Training FLOPs of one step (:func:`ablate.flops.step_flops`, the count the latency suite uses too)."""
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

