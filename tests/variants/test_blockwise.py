"""Blockwise causal attention (``ablate.variants.attention.blockwise``) against two references on fresh random inputs
(``ABLATE_TEST_SEED``), float64:

* one attention call: a transcription of the LeX reference (``sunyt32/torchscale`` ``MultiheadAttention``, "divide
  block"): k, v padded by ``h = B/2`` in front, windows of ``B`` keys unfolded with step ``h``, each window's ``h``
  queries masked with ``triu(-inf, h + 1)`` plus the padding mask -- against the dense rule :func:`bca_allowed`;
* a whole model: its logits under :func:`blockwise_logits` (blocks through a cache) against one full forward whose
  every layer is masked densely with :func:`bca_allowed` (a naive softmax), for several positions and depths."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from ablate.core.config import ModelConfig
from ablate.core.evaluate import evaluate
from ablate.core.model import Transformer
from ablate.errors import ConfigError
from ablate.registry.keys import load_all
from ablate.variants.attention.blockwise import bca_allowed, bca_refusal, blockwise_logits

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
F64 = torch.float64
load_all()


def _lex_reference(q, k, v, block):
    """The reference's blockwise attention of (N, T, d) q, k, v (T > block), float64; T padded at the end to a multiple
    of h as its decoder does, the padded keys masked like its padding mask."""
    n, t, d = q.shape
    h = block // 2
    tp = -(-t // h) * h
    q, k, v = (F.pad(z, (0, 0, 0, tp - t)) for z in (q, k, v))
    pad = torch.zeros(n, tp, dtype=torch.bool)
    pad[:, t:] = True
    nb = tp // h
    qb = q.view(n, nb, h, d)
    kw = F.pad(k, (0, 0, h, 0)).unfold(1, block, h).transpose(-1, -2)  # (n, nb, block, d)
    vw = F.pad(v, (0, 0, h, 0)).unfold(1, block, h).transpose(-1, -2)
    padw = F.pad(pad, (h, 0), value=True).unfold(1, block, h)  # (n, nb, block)
    w = qb @ kw.transpose(-1, -2) / d ** 0.5
    w = w + torch.triu(torch.full((h, block), float("-inf"), dtype=F64), h + 1)
    w = w.masked_fill(padw[:, :, None, :], float("-inf"))
    out = torch.softmax(w, dim=-1) @ vw
    return out.reshape(n, tp, d)[:, :t]


@pytest.mark.parametrize("t,block", [(40, 8), (37, 8), (33, 16), (12, 4)])
def test_the_dense_rule_is_the_lex_reference(t, block):
    torch.manual_seed(SEED % 2**31 + t)
    q, k, v = (torch.randn(3, t, 8, dtype=F64) for _ in range(3))
    allowed = bca_allowed(t, block)
    s = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~allowed, float("-inf"))
    ours = torch.softmax(s, dim=-1) @ v
    torch.testing.assert_close(ours, _lex_reference(q, k, v, block), rtol=1e-12, atol=1e-12,
                               msg=lambda m: f"{NOTE} {m}")
    h = block // 2  # every query sees between h + 1 and block keys past the first block; none as far as block
    seen = allowed.sum(-1)[h:]
    assert int(seen.min()) == min(h + 1, t) and int(seen.max()) <= block
    dist = torch.arange(t)[:, None] - torch.arange(t)[None, :]
    assert int(dist[allowed].max()) < block


def test_no_blocks_up_to_the_block_size():
    assert torch.equal(bca_allowed(8, 8), torch.ones(8, 8, dtype=torch.bool).tril())


def _masked_kernel(block):
    def attn(q, k, v, *, causal, bias=None, window=None, scale=None):
        assert causal and window is None and q.shape[2] == k.shape[2]
        t = q.shape[2]
        k, v = (z.repeat_interleave(q.shape[1] // z.shape[1], dim=1) for z in (k, v))
        s = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
        if bias is not None:
            s = s + bias.dense(t, t, q.device, q.dtype)
        return torch.softmax(s.masked_fill(~bca_allowed(t, block, q.device), float("-inf")), dim=-1) @ v
    return attn


@pytest.mark.parametrize("position,layers,kv", [("xpos", 2, None), ("rope", 3, 1), ("alibi", 2, None),
                                                ("t5_bias", 2, None), ("none", 2, None)])
def test_blockwise_model_equals_a_dense_masked_forward_in_every_layer(position, layers, kv):
    torch.manual_seed(SEED % 2**31 + layers)
    cfg = ModelConfig(vocab_size=31, d_model=32, n_layers=layers, n_heads=2, n_kv_heads=kv, ffn_mult=2.0,
                      train_len=8, max_len=64, position=position, attention="sdpa")
    model = Transformer(cfg).double().eval()
    x = torch.randint(0, 31, (2, 37))
    with torch.no_grad():
        ours = blockwise_logits(model, x, 8)
        full = model(x)
        for b in model.blocks:
            b.attn.attn = _masked_kernel(8)
        ref = model(x)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    assert not torch.allclose(ours[:, 8:], full[:, 8:], atol=1e-6)  # the blocks changed what the model saw
    torch.testing.assert_close(ours[:, :8], full[:, :8], rtol=1e-9, atol=1e-9)  # the first block: unchanged


@pytest.mark.parametrize("attention", ["mla", "diff", "qknorm", "sinks"])
def test_every_layer_runs_blockwise_and_the_first_blocks_match_the_full_forward(attention):
    torch.manual_seed(SEED % 2**31 + 7)
    cfg = ModelConfig(vocab_size=31, d_model=32, n_layers=2, n_heads=2, ffn_mult=2.0, train_len=8, max_len=64,
                      position="xpos", attention=attention)
    model = Transformer(cfg).double().eval()
    x = torch.randint(0, 31, (2, 21))
    with torch.no_grad():
        ours, full = blockwise_logits(model, x, 8), model(x)
        short = blockwise_logits(model, x[:, :8], 8)
    torch.testing.assert_close(ours[:, :8], full[:, :8], rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    torch.testing.assert_close(short, full[:, :8], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(ours[:, 8:], full[:, 8:], atol=1e-6)


def test_evaluate_scores_blockwise_past_the_block_only():
    torch.manual_seed(SEED % 2**31 + 11)
    cfg = ModelConfig(vocab_size=31, d_model=32, n_layers=2, n_heads=2, ffn_mult=2.0, train_len=8, max_len=64,
                      position="xpos")
    model = Transformer(cfg).eval()
    val = torch.randint(0, 31, (400,)).numpy()
    plain, bca = (evaluate(model, val, 32, tokens=128, block=b) for b in (None, 8))
    assert abs(plain.loss - bca.loss) > 1e-6
    at_block = [evaluate(model, val, 8, tokens=64, block=b).loss for b in (None, 8)]
    assert at_block[0] == pytest.approx(at_block[1], abs=1e-6)


def test_refusals_name_the_reason():
    cfg = ModelConfig(vocab_size=31, d_model=32, n_layers=1, n_heads=2, train_len=8, max_len=64, position="rope")
    assert "even" in bca_refusal(cfg, 7) and "even" in bca_refusal(cfg, 0) and bca_refusal(cfg, 8) is None
    with pytest.raises(ConfigError, match="re-rotates"):
        model = Transformer(cfg)
        model.set_position("rope_dynamic_ntk", rope_scale=2.0)
        blockwise_logits(model, torch.zeros(1, 20, dtype=torch.long), 8)
