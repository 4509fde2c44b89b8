"""The RoPE-scaling fine-tuning stage: train at ``L``, continue ``k`` steps at ``s·L`` with the scaled RoPE, then score.

This is the protocol behind the published PI and YaRN numbers (Chen et al. 2023: Llama 7B-65B fine-tuned ~1,000
steps at the new window; Peng et al. 2023, Table 1: Llama-2 7B fine-tuned to 8k, PI and NTK on 1B tokens, YaRN on
400M, ~400 steps), scaled down to a rung as a fraction of the pre-training steps:

* the pre-trained ``rope`` model of the same seed (its checkpoint; trained first if missing) gets the scaling at a
  **fixed** ``s = finetune.scale`` (its frequencies and, for YaRN, its temperature) and continues ``finetune.steps``
  steps on windows of ``s · train_len`` tokens, ``train.batch_size / s`` of them a step, so a step holds as many
  tokens as a pre-training step;
* AdamW state starts fresh (as both papers' fine-tuning does), weight decay 0 (both papers), a linear warm-up over 5%
  of the steps (YaRN: 20 of 400), then a constant rate ``finetune.lr`` (default ``train.min_lr``, where the
  pre-training schedule ended; both papers fine-tune at 2e-5, below Llama's peak pre-training rate of 3e-4);
* batches continue the pre-training data stream: fine-tuning step ``i`` draws from generator ``(seed, train.steps +
  i)``, windows the pre-training never drew as such;
* ``train_len`` stays the pre-training length (YaRN's and dynamic NTK's original context), so ``rope_scale = s`` means
  what it means without fine-tuning.

The fine-tuned weights are cached beside the pre-trained ones (``extrapolation.ckpt/``), named by the job and a hash
of the fine-tuning settings, and reused on resume like them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ablate.io.data import Batches
from ablate.store.results import row_key
from ablate.core.train import train

from .config import ExtrapolationConfig

__all__ = ["FineTune", "finetunes", "finetune_train_config", "finetune_key", "run_finetune", "WARMUP_FRACTION"]

WARMUP_FRACTION = 0.05  # of the fine-tuning steps (YaRN: 20 warm-up steps of 400)


@dataclass(frozen=True)
class FineTune:
    """One fine-tuning run's settings, everything that shapes its weights besides the pre-trained model."""

    scaling: str  # the RoPE scaling trained with (a registered rope_* key)
    scale: float  # s, fixed
    steps: int
    seq_len: int  # s * train_len
    batch_size: int  # sequences per step (train.batch_size / s, at least 1)
    lr: float
    warmup: int
    stream_offset: int  # batches continue the pre-training stream from this step

    @property
    def tag(self) -> str:
        """``ft-rope_pi-x4``: the part of a task name that says which fine-tuning."""
        return f"ft-{self.scaling}-x{self.scale:g}"

    @property
    def id(self) -> str:
        """A short hash of the settings (checkpoint names)."""
        return row_key(dataclasses.asdict(self))[:12]


def finetunes(cfg: ExtrapolationConfig) -> list[FineTune]:
    """The fine-tuning runs a configuration asks for (one per scaling in ``finetune.scalings``; empty: none)."""
    ft = cfg.finetune
    if not ft.scalings:
        return []
    s = float(ft.scale)
    L = int(cfg.model.train_len)
    steps = int(ft.steps)
    return [FineTune(scaling=name, scale=s, steps=steps, seq_len=int(round(s * L)),
                     batch_size=max(1, int(cfg.train.batch_size // s)),
                     lr=float(ft.lr if ft.lr is not None else cfg.train.min_lr),
                     warmup=max(1, int(math.ceil(WARMUP_FRACTION * steps))), stream_offset=int(cfg.train.steps))
            for name in ft.scalings]


def finetune_key(ft: FineTune) -> dict[str, Any]:
    """The key fields of a fine-tuned model's rows (besides position / rope_scale): what ran."""
    return {"finetune_steps": ft.steps, "finetune_len": ft.seq_len, "finetune_lr": ft.lr}


def finetune_train_config(cfg: ExtrapolationConfig, ft: FineTune, seed: int):
    """The :class:`ablate.core.train.TrainConfig` of one fine-tuning run: ``lr`` constant after the warm-up, no decay."""
    return replace(cfg.train, steps=ft.steps, batch_size=ft.batch_size, seq_len=ft.seq_len, lr=ft.lr, min_lr=ft.lr,
                   warmup=ft.warmup, weight_decay=0.0, seed=seed, eval_every=0,
                   log_every=max(1, min(cfg.train.log_every, ft.steps)))


def run_finetune(cfg: ExtrapolationConfig, ft: FineTune, model, corpus, seed: int, device: str, ckpt: Path,
                 progress: Any, reuse: bool, base_info: dict, name: str,
                 load: Callable[[Path], dict | None], save: Callable[[Path, dict], None]) -> tuple[Any, dict]:
    """Fine-tune the pre-trained ``model`` (in place) as ``ft`` says, or load the cached fine-tuned weights; returns
    (model or None when fine-tuning diverged, info). ``load(path)`` returns a checkpoint payload or None (missing or
    unusable); ``save(path, payload)`` writes one. The info merges the pre-training run's (``train_*``) with the
    fine-tuning run's (``finetune_*``)."""
    model.set_position(ft.scaling, rope_scale=ft.scale)
    payload = load(ckpt) if reuse else None
    if payload is not None:
        info = {**base_info, **payload["info"], "from_checkpoint": True}
        if payload.get("state_dict") is None:
            return None, info
        model.load_state_dict(payload["state_dict"])
        return model, info
    tcfg = finetune_train_config(cfg, ft, seed)
    stream = Batches(corpus.train, ft.batch_size, ft.seq_len, seed=seed, device=device)
    res = train(model, tcfg, lambda step: stream(ft.stream_offset + step), device=device, progress=progress,
                description=f"fine-tune {name}")
    ft_info = {"finetune_status": res.status, "finetune_reason": res.reason, "finetune_diverged_step":
               res.diverged_step, "finetune_loss": res.stats.get("final_train_loss"),
               "finetune_s": res.stats.get("elapsed_s"), "finetune_tokens_per_s": res.stats.get("tokens_per_s"),
               "finetune_tokens": ft.steps * ft.batch_size * ft.seq_len, "finetune_batch": ft.batch_size,
               "finetune_warmup": ft.warmup, "finetune_scaling": ft.scaling, "finetune_scale": ft.scale,
               "finetune_fraction": ft.steps / max(1, cfg.train.steps)}
    save(ckpt, {"info": ft_info, "state_dict": model.state_dict() if res.ok else None,
                "finetune": dataclasses.asdict(ft), "history": res.history})
    info = {**base_info, **ft_info, "from_checkpoint": bool(base_info.get("from_checkpoint"))}
    if not res.ok:
        info.update(train_status=res.status, train_reason=f"fine-tuning: {res.reason}",
                    diverged_step=res.diverged_step)
        return None, info
    if device == "cuda":
        torch.cuda.empty_cache()
    return model, info
