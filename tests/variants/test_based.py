"""``based`` (Arora et al. 2024) against a float64 transcription of the reference's formula written here (zoology
``mixers/base_conv.py`` BaseConv, ``mixers/based.py`` Based with ``train_view="quadratic"``,
``feature_maps/taylor.py`` TaylorExp): the Taylor kernel, the chunked scan and the recurrent form, the whole layer
(causal, GQA, RoPE at width f), its parameter count, decode-state bytes and FLOPs, cached decoding and training.

Inputs are fresh random numbers on every run; a failure message carries the seed (``ABLATE_TEST_SEED=<seed>``).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest
import torch

from ablate.core.attention_cost import linear_attention_flops
from ablate.core.config import ModelConfig
from ablate.core.flops import cache_bytes
from ablate.core.model import Transformer
from ablate.core.validate import param_count, validate_model
from ablate.errors import ConfigError
from ablate.registry.keys import ATTENTION, load_all
from ablate.suites.recall.measure import state_bytes
from ablate.variants.attention import LAYERS, layer_spec, linear_attention
from ablate.variants.attention.based import FEATURE_DIMS, based_quadratic, based_recurrent, taylor_exp
from ablate.variants.positions import build_position

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)

load_all()
BASE = ModelConfig(vocab_size=41, d_model=32, n_layers=2, n_heads=4, ffn_mult=2.0, train_len=16, max_len=128)


def _seed(salt: str) -> None:
    torch.manual_seed((SEED + sum(map(ord, salt))) % 2**31)


def _rope(x: torch.Tensor, base: float, offset: int = 0) -> torch.Tensor:
    """RoPE as complex multiplication of the half-split pairs (x_i, x_{i+d/2})."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d // 2, dtype=F64) * 2 / d)
    ang = torch.arange(offset, offset + x.shape[-2], dtype=F64)[:, None] * theta[None, :]
    z = torch.complex(x[..., :d // 2], x[..., d // 2:]) * torch.polar(torch.ones_like(ang), ang)
    return torch.cat([z.real, z.imag], dim=-1)


def _kernel(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """phi(q).phi(k) in closed form: 1 + s/sqrt(f) + s^2/(2f), s = q.k."""
    s = q @ k.transpose(-2, -1)
    f = q.shape[-1]
    return 1 + s / math.sqrt(f) + s * s / (2 * f)


def _quadratic(q, k, v, eps=1e-12):
    """Based's quadratic view: A = kernel * tril (bottom-right aligned), y = A v / (A 1 + eps)."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    a = _kernel(q, k)
    tq, tk = q.shape[2], k.shape[2]
    a = a.masked_fill(torch.arange(tk)[None, :] > torch.arange(tk - tq, tk)[:, None], 0.0)
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


def test_registered_with_paper_reference_and_feature_dims():
    for key, f in FEATURE_DIMS.items():
        s = layer_spec(key)
        assert key in LAYERS and "zoology" in ATTENTION[key].paper and s.kernel == "linear"
        assert s.module(BASE).feature_dim == f and f"dim {f}" in s.description
    assert FEATURE_DIMS["based"] == 16


def test_taylor_feature_map_is_the_second_order_expansion_of_exp():
    _seed("taylor")
    f = 8
    q, k = torch.randn(3, 5, f, dtype=F64), torch.randn(3, 7, f, dtype=F64)
    fq, fk = taylor_exp(q), taylor_exp(k)
    assert fq.shape[-1] == 1 + f + f * f
    torch.testing.assert_close(fq @ fk.transpose(-2, -1), _kernel(q, k), **TOL, msg=lambda m: f"{NOTE} {m}")
    # the first terms of exp(s / sqrt(f)): near s = 0 the kernel is exp to third order
    small = torch.randn(1, 1, f, dtype=F64) * 1e-2
    s = (small * small).sum() / math.sqrt(f)
    assert abs(_kernel(small, small).item() - math.exp(s.item())) < s.item() ** 3


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("tq", [13, 4])
def test_chunked_scan_and_recurrent_form_match_the_quadratic_view(kv_heads, tq):
    _seed(f"scan{kv_heads}{tq}")
    q = torch.randn(2, 4, tq, 6, dtype=F64)
    k, v = torch.randn(2, kv_heads, 13, 6, dtype=F64), torch.randn(2, kv_heads, 13, 5, dtype=F64)
    want = _quadratic(q, k, v)
    for chunk in (3, 64):
        got = linear_attention(q, k, v, causal=True, chunk_size=chunk, feature_map=taylor_exp, eps=1e-12)
        torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"chunk {chunk} {NOTE} {m}")
    torch.testing.assert_close(based_quadratic(q, k, v, causal=True), want, **TOL, msg=lambda m: f"quad {NOTE} {m}")
    if tq == 13:
        torch.testing.assert_close(based_recurrent(q, k, v), want, **TOL, msg=lambda m: f"recurrent {NOTE} {m}")
    # non-causal: every key
    g = 4 // kv_heads
    a = _kernel(q, k.repeat_interleave(g, 1))
    nc = (a @ v.repeat_interleave(g, 1)) / (a.sum(-1, keepdim=True) + 1e-12)
    torch.testing.assert_close(linear_attention(q, k, v, causal=False, feature_map=taylor_exp, eps=1e-12), nc, **TOL)
    torch.testing.assert_close(based_quadratic(q, k, v, causal=False), nc, **TOL)


def _layer_reference(layer, x, f, rotate, base):
    """The layer written out: BaseConv (explicit causal taps), q/k/v, RoPE at width f, quadratic Based, out."""
    w, cb = layer.mix.conv.weight[:, 0], layer.mix.conv.bias  # (d, 3), (d,)
    t = x.shape[1]
    pad = torch.cat([x.new_zeros(x.shape[0], 2, x.shape[2]), x], dim=1)
    conv = sum(pad[:, m:m + t] * w[:, m] for m in range(3)) + cb  # out[t] = sum_m w[m] x[t - 2 + m]
    u = conv * (x @ layer.mix.proj.weight.T + layer.mix.proj.bias) + x
    b, h, hkv, hd = x.shape[0], layer.h, layer.hkv, layer.hd
    q = (u @ layer.q.weight.T).view(b, t, h, f).transpose(1, 2)
    k = (u @ layer.k.weight.T).view(b, t, hkv, f).transpose(1, 2)
    v = (u @ layer.v.weight.T).view(b, t, hkv, hd).transpose(1, 2)
    if rotate:
        q, k = _rope(q, base), _rope(k, base)
    y = _quadratic(q, k, v)
    return y.transpose(1, 2).reshape(b, t, h * hd) @ layer.out.weight.T


@pytest.mark.parametrize("key", list(FEATURE_DIMS))
@pytest.mark.parametrize("position,kv_heads,t", [("rope", 4, 11), ("rope", 1, 11), ("none", 2, 11), ("rope", 2, 70)])
def test_layer_matches_the_reference_formula(key, position, kv_heads, t):
    """t = 11: the quadratic view; t = 70 (> LINEAR_CHUNK): the chunked scan over the Taylor features."""
    cfg = replace(BASE, attention=key, position=position, n_kv_heads=kv_heads)
    validate_model(cfg)
    _seed(key + position + str(kv_heads))
    layer = layer_spec(key).build(cfg).double()
    with torch.no_grad():
        for p in layer.parameters():  # away from the initial values (zero biases), so that each one matters
            p.copy_(torch.randn_like(p) * 0.3)
    pos = build_position(position, cfg).double()
    x = torch.randn(2, t, cfg.d_model, dtype=F64)
    got = layer(x, pos, None, None, 0)
    want = _layer_reference(layer, x, FEATURE_DIMS[key], position == "rope", cfg.rope_base)
    torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{key} {NOTE} {m}")
    # causal: changing a later token leaves earlier outputs alone
    x2 = x.clone()
    x2[:, 7:] = torch.randn_like(x2[:, 7:])
    torch.testing.assert_close(layer(x2, pos, None, None, 0)[:, :7], got[:, :7], **TOL)


@pytest.mark.parametrize("key", list(FEATURE_DIMS))
def test_spec_counts_parameters_state_bytes_and_flops(key):
    f = FEATURE_DIMS[key]
    cfg = replace(BASE, attention=key, n_heads=2, n_kv_heads=1)  # d 32, hd 16
    model = Transformer(cfg)
    n = sum(p.numel() for p in model.blocks[0].attn.parameters())
    # conv 32·3 + 32, proj 32² + 32, q 32·2f, k 32·f, v 32·16, out 32·32
    assert n == layer_spec(key).param_count(cfg) == 96 + 32 + 1024 + 32 + 64 * f + 32 * f + 512 + 1024
    assert model.num_params() == param_count(cfg)
    e = 1 + f + f * (f + 1) // 2  # the reference's TaylorExp.expanded_size
    sb, form, what = state_bytes(cfg, 32, 2)
    assert form == "recurrent" and sb == 2 * (16 * e + e + 32 * 3) * 2 and f"E={e}" in what
    assert state_bytes(cfg, 4096, 2)[0] == sb  # fixed in the sequence length
    assert cache_bytes(cfg, 10, 2) == 2 * 32 * 10 * 2  # the cache it decodes with: the layer's input
    flops, conv = layer_spec(key).attention_flops("fwd", cfg, batch=3, seq_len=20)  # one chunk: the quadratic view
    assert conv == "linear" and flops == 3 * (2 * 2 * 400 * (f + 16) + 7 * 2 * 400 + 2 * 20 * 16) + 3 * 20 * 32 * 8
    assert layer_spec(key).attention_flops("fwd_bwd", cfg, batch=3, seq_len=20)[0] == 3 * flops
    flops = layer_spec(key).attention_flops("fwd", cfg, batch=3, seq_len=100)[0]  # the chunked scan
    scan = linear_attention_flops(3, 2, 1, 100, 100, 1 + f + f * f, 16, causal=True, chunk=64)
    assert flops == scan + 3 * 100 * 32 * 8


def test_linear_state_bytes_unchanged():
    cfg = replace(BASE, attention="linear", n_heads=1, d_model=32)
    assert state_bytes(cfg, 32, 2) == (4224, "recurrent", "recurrent state (d_k x d_v + d_k per KV head)")


def test_cached_decoding_equals_the_full_forward_and_it_trains():
    cfg = replace(BASE, attention="based", n_kv_heads=2)
    _seed("decode")
    model = Transformer(cfg).double().eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(idx)
        for cache in (model.new_cache(), model.new_cache(static_len=12, batch=2)):
            steps = torch.cat([model(idx[:, :4], cache)] + [model(idx[:, i:i + 1], cache) for i in range(4, 12)], 1)
            torch.testing.assert_close(steps, full, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    model = Transformer(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = model.loss(idx, torch.roll(idx, -1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first and all(p.grad is not None for p in model.parameters())


def test_refusals():
    with pytest.raises(ConfigError, match="bias"):
        validate_model(replace(BASE, attention="based", bias=True))
    with pytest.raises(ConfigError):
        validate_model(replace(BASE, attention="based", position="alibi"))
    with pytest.raises(ConfigError, match="rolling"):
        Transformer(replace(BASE, attention="based")).new_cache(window=4)
