"""Streaming evaluation (variants/attention/streaming.py) and StreamingLLM's positions in the sink cache: with one
layer (whose keys depend on the tokens alone) each mode equals a fresh forward over exactly the tokens it keeps,
written out here; with a budget past the length every mode is the full forward. Fresh random inputs each run."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from ablate.core.config import ModelConfig
from ablate.core.model import Transformer
from ablate.errors import ConfigError
from ablate.registry.keys import load_all
from ablate.variants.attention.streaming import streaming_nll

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
load_all()
CFG = ModelConfig(vocab_size=31, d_model=32, n_layers=1, n_heads=2, ffn_mult=2.0, train_len=8, max_len=64)


def _model(**over) -> Transformer:
    torch.manual_seed((SEED + len(str(over))) % 2**31)
    return Transformer(replace(CFG, **over)).double().eval()


def _next_loss(model, ctx: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(ctx)[:, -1].float(), target, reduction="none")


@pytest.mark.parametrize("attention, position", [("sdpa", "rope"), ("sinks", "rope"), ("qknorm", "xpos"),
                                                 ("mla", "rope"), ("sdpa", "alibi")])
def test_sinks_mode_is_a_fresh_forward_over_the_kept_tokens_at_positions_in_the_cache(attention, position):
    model = _model(attention=attention, position=position)
    S, budget, n = 2, 6, 16
    idx = torch.randint(0, CFG.vocab_size, (2, n))
    got = streaming_nll(model, idx, mode="sinks", budget=budget, sinks=S)
    with torch.no_grad():
        for t in range(n - 1):
            kept = idx[:, :t + 1] if t + 1 <= budget else torch.cat([idx[:, :S], idx[:, t + 1 - (budget - S):t + 1]], 1)
            torch.testing.assert_close(got[:, t], _next_loss(model, kept, idx[:, t + 1]), rtol=1e-9, atol=1e-9,
                                       msg=lambda m: f"t={t} {NOTE} {m}")


@pytest.mark.parametrize("position", ["rope", "xpos"])
def test_window_and_recompute_modes_see_the_last_budget_tokens(position):
    model = _model(position=position)
    budget, n = 5, 14
    idx = torch.randint(0, CFG.vocab_size, (2, n))
    rec = streaming_nll(model, idx, mode="recompute", budget=budget)
    with torch.no_grad():
        for t in range(n - 1):
            want = _next_loss(model, idx[:, max(0, t + 1 - budget):t + 1], idx[:, t + 1])
            torch.testing.assert_close(rec[:, t], want, rtol=1e-12, atol=1e-12)
    # one layer, relative positions: the rolling cache (absolute positions, window mask) gives the same losses
    torch.testing.assert_close(streaming_nll(model, idx, mode="window", budget=budget), rec, rtol=1e-9, atol=1e-9)


def test_a_budget_past_the_length_is_the_full_forward():
    model = _model(n_layers=2)
    idx = torch.randint(0, CFG.vocab_size, (3, 12))
    with torch.no_grad():
        full = F.cross_entropy(model(idx)[:, :-1].reshape(-1, CFG.vocab_size).float(), idx[:, 1:].reshape(-1),
                               reduction="none").view(3, 11)
    for mode in ("dense", "window", "sinks", "recompute"):
        torch.testing.assert_close(streaming_nll(model, idx, mode=mode, budget=12), full, rtol=1e-9, atol=1e-9)
    with pytest.raises(ConfigError, match="unknown streaming mode"):
        streaming_nll(model, idx, mode="nope", budget=4)
    with pytest.raises(ConfigError, match="sinks < budget"):
        streaming_nll(model, idx, mode="sinks", budget=4, sinks=4)
