"""The training loop: schedule, learning, determinism, divergence detection, stats."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablate.core.config import ModelConfig
from ablate.io.data import Batches, load_corpus
from ablate.errors import ConfigError
from ablate.core.model import Transformer
from ablate.core.train import TrainConfig, lr_at, train

MICRO = ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, max_len=16, position="rope")


def _model(seed=0):
    torch.manual_seed(seed)
    return Transformer(MICRO)


def test_schedule_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup=10)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_loss_decreases_on_a_repetitive_task():
    tokens = np.frombuffer(b"abcdefgh" * 2000, dtype=np.uint8)
    cfg = TrainConfig(steps=60, batch_size=8, seq_len=16, lr=1e-2, min_lr=1e-3, warmup=5, log_every=10)
    res = train(_model(), cfg, Batches(tokens, 8, 16, seed=0))
    assert res.ok and res.steps == 60
    assert res.history[0]["train_loss"] > 4.0 and res.history[-1]["train_loss"] < 1.0
    assert {"step", "train_loss", "lr", "tokens", "elapsed"} <= set(res.history[-1])
    assert res.stats["tokens"] == 60 * 8 * 16 and res.stats["tokens_per_s"] > 0
    assert res.stats["peak_mem_bytes"] > 0


def test_same_seed_same_run():
    c = load_corpus()
    cfg = TrainConfig(steps=10, batch_size=4, seq_len=16, log_every=5)
    a = train(_model(), cfg, Batches(c.train, 4, 16, seed=1))
    b = train(_model(), cfg, Batches(c.train, 4, 16, seed=1))
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]


def test_divergence_stops_with_the_exact_step():
    c = load_corpus()

    def nan_at_7(model, x, y):
        logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        nan_at_7.calls += 1
        return loss * float("nan") if nan_at_7.calls == 8 else loss

    nan_at_7.calls = 0
    cfg = TrainConfig(steps=50, batch_size=4, seq_len=16, log_every=5)
    res = train(_model(), cfg, Batches(c.train, 4, 16, seed=0), loss_fn=nan_at_7)
    assert res.status == "diverged" and res.diverged_step == 7 and res.steps == 7
    assert "step 7" in res.reason
    assert nan_at_7.calls < 50  # stopped early


def test_huge_lr_diverges_or_is_reported():
    c = load_corpus()
    cfg = TrainConfig(steps=30, batch_size=4, seq_len=16, lr=1e6, min_lr=1e6, warmup=0, grad_clip=0.0,
                      log_every=1)
    res = train(_model(), cfg, Batches(c.train, 4, 16, seed=0))
    if res.status == "diverged":
        assert 0 <= res.diverged_step < 30 and res.steps == res.diverged_step
    else:  # a finite but useless run is still reported with its (huge) loss
        assert math.isfinite(res.history[-1]["train_loss"]) and res.history[-1]["train_loss"] > 5.0


def test_eval_fn_runs_periodically_and_at_the_end():
    c = load_corpus()
    cfg = TrainConfig(steps=20, batch_size=4, seq_len=16, eval_every=10, log_every=10)
    seen = []

    def ev(model):
        assert not model.training and not torch.is_grad_enabled()
        seen.append(1)
        return {"x": 1.0}

    res = train(_model(), cfg, Batches(c.train, 4, 16, seed=0), eval_fn=ev)
    assert [e["step"] for e in res.evals] == [10, 20]


def test_bad_train_config():
    with pytest.raises(ConfigError):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError):
        TrainConfig(amp="int8")


def _group_of(opt, param):
    return next(g for g in opt.param_groups if any(p is param for p in g["params"]))


def test_t5_bias_table_is_trained_without_weight_decay_at_the_shared_lr():
    """T5 trains its relative-bias table with no weight decay and the one learning rate (Adafactor, no decay; the
    ALiBi paper's fairseq baselines use weight decay 0): the table lands in the no-decay group, matrices stay decayed."""
    import copy

    from ablate.core.train import make_optimizer, no_decay_names

    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, max_len=16,
                                    position="t5_bias"))
    table = model.pos.relative_attention_bias.weight
    assert table.dim() == 2  # a matrix: the old rule (dim >= 2 decays) would have decayed it
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1, lr=2e-3), torch.device("cpu"))
    assert _group_of(opt, table)["weight_decay"] == 0.0
    assert _group_of(opt, model.tok.weight)["weight_decay"] == 0.1
    block_matrix = next(p for p in model.blocks[0].parameters() if p.dim() == 2)
    assert _group_of(opt, block_matrix)["weight_decay"] == 0.1
    assert {g["lr"] for g in opt.param_groups} == {2e-3}  # no separate learning rate (T5 has none)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert no_decay_names(copy.deepcopy(model)) == {"pos.relative_attention_bias.weight"}  # copies keep the rule


def test_t5_bias_table_does_not_shrink_under_weight_decay_alone():
    """With zero gradients, AdamW's decoupled decay shrinks decayed matrices and leaves the T5 table untouched."""
    from ablate.core.train import make_optimizer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, max_len=16,
                                    position="t5_bias"))
    table = model.pos.relative_attention_bias.weight
    before_t, before_e = table.detach().clone(), model.tok.weight.detach().clone()
    opt = make_optimizer(model, TrainConfig(weight_decay=0.5, lr=0.1), torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(table.detach(), before_t)
    assert not torch.equal(model.tok.weight.detach(), before_e)
