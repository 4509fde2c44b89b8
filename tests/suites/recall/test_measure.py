"""Loss and accuracy at the answer positions only; decode state bytes; training never sees a held-out example."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ablate.core.config import ModelConfig
from ablate.suites.recall import PRESETS, points, resolve
from ablate.suites.recall.data import IGNORE, multiquery_ar, row_hashes
from ablate.suites.recall.measure import mqar_loss, score, state_bytes, train_stream


class Fixed(torch.nn.Module):
    """A 'model' returning the logits it was given (batch-sliced), whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.start = 0

    def forward(self, x):
        out = self.logits[self.start:self.start + len(x)]
        self.start += len(x)
        return out


def test_loss_counts_the_answer_positions_only():
    b = multiquery_ar(32, 6, 16, 2, np.random.SeedSequence().entropy)
    x, y = torch.from_numpy(b.inputs), torch.from_numpy(b.labels)
    logits = torch.randn(6, 16, 32, dtype=torch.float64)
    mask = y != IGNORE
    ref = -torch.log_softmax(logits, -1).gather(-1, y.clamp_min(0)[..., None])[..., 0][mask].mean()
    got = mqar_loss(lambda _: logits.float(), x, y)
    assert torch.allclose(got.double(), ref, atol=1e-5)
    noisy = logits.clone()
    noisy[~mask] += 100 * torch.randn_like(noisy[~mask])  # anything at the other positions changes nothing
    assert torch.allclose(mqar_loss(lambda _: noisy.float(), x, y), got, atol=1e-6)
    assert not torch.allclose(got.double(), F.cross_entropy(logits.reshape(-1, 32), x.reshape(-1)))


def test_score_is_accuracy_at_the_answers():
    b = multiquery_ar(32, 10, 16, 2, np.random.SeedSequence().entropy)
    y = torch.from_numpy(b.labels)
    logits = torch.randn(10, 16, 32)
    right = torch.rand(10, 16) < 0.5  # make a known half of the answers right
    for i, j in zip(*torch.nonzero(y != IGNORE, as_tuple=True)):
        logits[i, j, y[i, j]] = 50.0 if right[i, j] else -50.0
    s = score(Fixed(logits), b, "cpu", batch=4)
    mask = y != IGNORE
    assert s["answers"] == int(mask.sum()) == 20
    assert s["correct"] == int(right[mask].sum())
    assert sum(s["dist_total"]) == 20 and sum(s["dist_correct"]) == s["correct"]


def test_state_bytes_follow_each_forms_formula():
    m = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, attention="sdpa")
    kv, form, _ = state_bytes(m, 128, 2)
    assert form == "kv" and kv == 2 * 2 * 2 * 16 * 128 * 2  # k and v x layers x kv heads x head dim x T x bytes
    w, form, _ = state_bytes(ModelConfig(**{**vars(m), "attention": "sliding_window", "window": 8}), 128, 2)
    assert form == "window" and w == 2 * 2 * 2 * 16 * 8 * 2
    r, form, _ = state_bytes(ModelConfig(**{**vars(m), "attention": "linear"}), 128, 2)
    assert form == "recurrent" and r == 2 * 2 * (16 * 16 + 16) * 2
    assert state_bytes(ModelConfig(**{**vars(m), "attention": "linear"}), 4096, 2)[0] == r  # fixed in T


def test_no_held_out_example_is_ever_trained_on():
    # a vocabulary so small that training draws repeat the held-out examples often
    cfg = resolve("micro", ["data.vocab_size=10", "data.seq_lens=8", "data.kv_pairs=2", "train.batch_size=64"])
    point = points(cfg)[0]
    held = multiquery_ar(10, 60, 8, 2, [1, 2, 3], random_non_queries=False).inputs
    keys = row_hashes(held)
    dropped = [0]
    batches = train_stream(cfg, point, 0, keys, "cpu", dropped)
    for step in range(20):
        x, y = batches(step)
        assert not (row_hashes(x.numpy()) & keys)
        assert ((y != IGNORE).sum(1) == 2).all()
    assert dropped[0] > 0  # the check had something to catch
    a, _ = batches(3)
    assert torch.equal(a, batches(3)[0])  # a pure function of (seed, step)


def test_presets_resolve_and_the_gpu_rung_is_figure_2():
    for name in PRESETS:
        resolve(name)
    g = resolve("gpu")
    assert g.data.vocab_size == 8192 and g.data.seq_lens == (64, 128, 256, 512) and g.data.kv_pairs == (4, 8, 16, 64)
    assert g.grid.d_models == (64, 128, 256, 512) and len(g.grid.lrs) == 4 and g.model.n_layers == 2
    assert g.train.examples == 64 * 100_000 and g.data.test_examples == 3000
