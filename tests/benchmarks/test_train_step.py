"""One training step (forward, backward, clip, AdamW) of the reference model through pytest-benchmark."""

from __future__ import annotations

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.core.model import Transformer
from ablate.core.train import TrainConfig, autocast_for, lm_loss, make_optimizer

from _shapes import synced

SHAPES = {
    "cpu": (ModelConfig(d_model=128, n_layers=2, n_heads=4, max_len=256, train_len=128), 8, 128),
    "cuda": (ModelConfig(d_model=1024, n_layers=8, n_heads=8, max_len=4096, train_len=2048), 8, 2048),
}


def _step_fn(device: str):
    cfg, batch, seq = SHAPES[device]
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    tcfg = TrainConfig(steps=1, batch_size=batch, seq_len=seq, amp="bf16" if device == "cuda" else None)
    opt = make_optimizer(model, tcfg, torch.device(device))
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    y = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast_for(torch.device(device), tcfg.amp):
            loss = lm_loss(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        return loss.detach()

    return synced(step, device), batch * seq


def test_train_step_cpu(benchmark):
    step, tokens = _step_fn("cpu")
    step()
    benchmark.extra_info["tokens_per_step"] = tokens
    loss = benchmark(step)
    assert torch.isfinite(loss)


@pytest.mark.gpu
def test_train_step_gpu(benchmark):
    step, tokens = _step_fn("cuda")
    step()
    benchmark.extra_info["tokens_per_step"] = tokens
    loss = benchmark(step)
    assert torch.isfinite(loss)
