"""The evaluation protocol (:mod:`ablate.core.evaluate`): windows, equal scored tokens at every length and mode, the
passkey sequences; a context-free model whose loss cannot depend on the evaluation length or mode is the reference."""

import math

import numpy as np
import pytest
import torch

from ablate.core.evaluate import evaluate, passkey_accuracy, passkey_sequences, plan_windows
from ablate.errors import ConfigError
from ablate.io.data import load_corpus


class Bigram(torch.nn.Module):
    """Context-free predictions: its loss cannot depend on the evaluation length or mode."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.e = torch.nn.Embedding(256, 256)

    def forward(self, x):
        return self.e(x)


@pytest.mark.parametrize("mode, stride", [("nonoverlap", None), ("sliding", 1), ("sliding", 5), ("sliding", 32)])
@pytest.mark.parametrize("L", [1, 7, 32, 100])
def test_windows_score_exactly_the_same_targets(mode, stride, L):
    if stride is not None and stride > L:
        stride = L
    targets = []
    for w in plan_windows(300, L, mode, stride):
        assert 0 <= w.lo < w.hi <= L and w.start >= 0
        targets += [w.start + p + 1 for p in range(w.lo, w.hi)]
    assert targets == list(range(1, 301))


def test_sliding_windows_see_long_context():
    for w in plan_windows(1000, 64, "sliding", 16)[1:]:
        assert w.lo >= 48 and w.hi == 64  # every later window scores its last (<= 16) positions: >= 48 of context


def test_equal_tokens_at_every_length_and_mode():
    val = load_corpus().val
    m = Bigram()
    res = [evaluate(m, val, L, tokens=1024, mode=mode, stride=s)
           for L in (16, 64, 256) for mode, s in (("nonoverlap", None), ("sliding", 8))]
    assert {r.tokens for r in res} == {1024}
    assert max(r.loss for r in res) - min(r.loss for r in res) < 1e-9  # same targets -> same context-free loss
    r = res[0]
    assert r.ppl == pytest.approx(math.exp(r.loss)) and r.bpb == pytest.approx(r.loss / math.log(2))


def test_sliding_equals_nonoverlap_when_stride_is_the_window():
    from ablate.core.config import ModelConfig
    from ablate.core.model import Transformer

    torch.manual_seed(0)
    m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, train_len=16, position="alibi"))
    val = load_corpus().val
    a = evaluate(m, val, 32, tokens=512)
    b = evaluate(m, val, 32, tokens=512, mode="sliding", stride=32)
    c = evaluate(m, val, 32, tokens=512, mode="sliding", stride=4)
    assert a.loss == pytest.approx(b.loss, abs=1e-6) and a.pos_loss == b.pos_loss
    assert c.tokens == 512 and c.windows > a.windows
    assert len(a.pos_loss) == 32 and a.pos_bin == 1


def test_eval_longer_than_validation_is_an_error():
    with pytest.raises(ConfigError, match="validation split holds only"):
        evaluate(Bigram(), np.zeros(100, dtype=np.uint8), 64, tokens=128)


def test_passkey_sequences_and_probe():
    seqs, keys = passkey_sequences(4, 40, 0.5, 3, np.random.default_rng(0))
    assert seqs.shape == (4, 41)
    for s, k in zip(seqs, keys):
        text = bytes(s).decode()
        key = "".join(map(str, k))
        assert text.endswith(" key=" + key) and text.count("key=" + key) == 2
    assert 0.0 <= passkey_accuracy(Bigram(), 40, 0.5, trials=8, digits=3) <= 1.0
