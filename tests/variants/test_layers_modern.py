"""The attention layers of issue 22 -- ``qknorm``, ``sinks``, ``diff``, ``mla`` / ``mla_q`` -- each against a float64
transcription of its reference code written here (not through the code under test), its spec's parameter count and
cache bytes against what the model allocates, cached decoding against the full forward, and the limits where a layer
reduces to the standard one.

References transcribed: transformers ``Qwen3Attention`` (q_norm / k_norm on ``view(..., heads, head_dim)`` before
RoPE); transformers ``GptOssAttention`` / ``eager_attention_forward`` (the sink logit appended to each row, its
probability dropped); microsoft/unilm ``Diff-Transformer/multihead_diffattn.py`` (``MultiheadDiffAttn.forward``);
transformers ``DeepseekV3Attention.forward`` (training path) and DeepSeek-V3 ``inference/model.py`` ``MLA`` (absorb).
RoPE in the references is complex multiplication of the half-split pairs (``theta_i = base^(-2i/d)``).

Inputs are fresh random numbers on every run; a failure message carries the seed (``ABLATE_TEST_SEED=<seed>``).
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.core.flops import cache_bytes, step_flops
from ablate.core.model import Transformer
from ablate.core.validate import param_count, validate_model
from ablate.errors import ConfigError
from ablate.registry.keys import ATTENTION, load_all
from ablate.variants.attention import LAYERS, MultiHeadAttention, layer_spec
from ablate.variants.attention.diff import lambda_init
from ablate.variants.positions import build_position

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)

load_all()
BASE = ModelConfig(vocab_size=41, d_model=64, n_layers=2, n_heads=4, ffn_mult=2.0, train_len=16, max_len=64)
NEW = ("qknorm", "sinks", "diff", "mla", "mla_q")


def _seed(salt: str) -> None:
    torch.manual_seed((SEED + sum(map(ord, salt))) % 2**31)


def _rope(x: torch.Tensor, base: float, offset: int = 0) -> torch.Tensor:
    """RoPE as complex multiplication of the half-split pairs (x_i, x_{i+d/2}), positions offset.."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d // 2, dtype=F64) * 2 / d)
    ang = torch.arange(offset, offset + x.shape[-2], dtype=F64)[:, None] * theta[None, :]
    z = torch.complex(x[..., :d // 2], x[..., d // 2:]) * torch.polar(torch.ones_like(ang), ang)
    return torch.cat([z.real, z.imag], dim=-1)


def _causal(scores: torch.Tensor, window: int | None = None) -> torch.Tensor:
    tq, tk = scores.shape[-2:]
    i, j = torch.arange(tk - tq, tk)[:, None], torch.arange(tk)[None, :]
    hide = (j > i) | ((j <= i - window) if window else False)
    return scores.masked_fill(hide, float("-inf"))


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _randomise(module: torch.nn.Module) -> None:
    """Gains, sinks and lambdas away from their initial values, so that each one matters."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * (0.1 if "lambda" in name else 1.0) + (0 if "lambda" in name else 0.5))


def _layer(key: str, position: str = "rope", **over) -> tuple[torch.nn.Module, object, ModelConfig]:
    cfg = replace(BASE, attention=key, position=position, **over)
    validate_model(cfg)
    _seed(key + position + str(over))
    layer = layer_spec(key).build(cfg).double()
    _randomise(layer)
    return layer, build_position(position, cfg).double(), cfg


def test_registered_with_paper_and_reference():
    for key in NEW:
        e = ATTENTION[key]
        assert key in LAYERS and e.paper and "reference" in e.paper and "\n" not in e.description, key
        assert layer_spec(key).kernel == "sdpa"


# ---------------------------------------------------------------------------------------------------------------
# QK-norm (transformers Qwen3Attention)


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_qknorm_matches_qwen3_attention(norm, kv_heads):
    layer, pos, cfg = _layer("qknorm", norm=norm, n_kv_heads=kv_heads, norm_eps=1e-6)
    b, t, h, hd = 2, 9, cfg.n_heads, cfg.head_dim
    x = torch.randn(b, t, cfg.d_model, dtype=F64) * 3

    def qnorm(v, m):
        if norm == "rmsnorm":
            return _rms(v, m.weight, cfg.norm_eps)
        mu, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mu) / torch.sqrt(var + cfg.norm_eps) * m.weight + m.bias

    wk, wv = layer.kv.weight[:kv_heads * hd], layer.kv.weight[kv_heads * hd:]
    q = qnorm((x @ layer.q.weight.T).view(b, t, h, hd), layer.q_norm).transpose(1, 2)
    k = qnorm((x @ wk.T).view(b, t, kv_heads, hd), layer.k_norm).transpose(1, 2)
    v = (x @ wv.T).view(b, t, kv_heads, hd).transpose(1, 2)
    q, k = _rope(q, cfg.rope_base), _rope(k, cfg.rope_base)
    k, v = k.repeat_interleave(h // kv_heads, 1), v.repeat_interleave(h // kv_heads, 1)
    y = torch.softmax(_causal(q @ k.transpose(-1, -2) / math.sqrt(hd)), -1) @ v
    want = y.transpose(1, 2).reshape(b, t, h * hd) @ layer.out.weight.T
    with torch.no_grad():
        got = layer(x, pos, None, None, 0)
        torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{NOTE} {m}")
        # a layer without the norms is caught by this reference
        plain = MultiHeadAttention(cfg).double()
        plain.load_state_dict({k_: v_ for k_, v_ in layer.state_dict().items() if "_norm" not in k_})
        assert not torch.allclose(plain(x, pos, None, None, 0), want, atol=1e-4)


def test_qknorm_bounds_the_logits_whatever_the_input_scale():
    layer, pos, cfg = _layer("qknorm")
    with torch.no_grad():
        for s in (1.0, 1e3):
            q, k, _ = layer.project(torch.randn(1, 8, cfg.d_model, dtype=F64) * s)
            qn, kn = layer.transform_q(q, pos, 0, 8), layer.transform_k(k, pos, 0, 8)
            bound = cfg.head_dim * layer.q_norm.weight.abs().max() * layer.k_norm.weight.abs().max()
            assert (qn @ kn.transpose(-1, -2)).abs().max() <= bound * (1 + 1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Learned sinks (transformers GptOssAttention / eager_attention_forward)


def _gpt_oss_core(q, k, v, sinks, scale, bias=None, window=None):
    scores = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        scores = scores + bias
    scores = _causal(scores, window)  # gpt-oss's sliding-window layers: the mask hides keys, never the sink
    sink = sinks.reshape(1, -1, 1, 1).expand(q.shape[0], -1, q.shape[-2], -1)
    combined = torch.cat([scores, sink], dim=-1)
    combined = combined - combined.max(dim=-1, keepdim=True).values
    return torch.softmax(combined, dim=-1)[..., :-1] @ v


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("position", ["rope", "alibi"])
@pytest.mark.parametrize("kv_heads", [4, 1])
def test_sinks_match_gpt_oss_eager_attention(position, kv_heads, window):
    layer, pos, cfg = _layer("sinks", position, n_kv_heads=kv_heads, window=window)
    b, t, h, hd = 2, 10, cfg.n_heads, cfg.head_dim
    x = torch.randn(b, t, cfg.d_model, dtype=F64)
    q = (x @ layer.q.weight.T).view(b, t, h, hd).transpose(1, 2)
    kv = (x @ layer.kv.weight.T).view(b, t, 2, kv_heads, hd)
    k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
    if position == "rope":
        q, k = _rope(q, cfg.rope_base), _rope(k, cfg.rope_base)
    k, v = k.repeat_interleave(h // kv_heads, 1), v.repeat_interleave(h // kv_heads, 1)
    sb = pos.score_bias()
    bias = sb.dense(t, t, x.device, F64) if sb is not None else None
    y = _gpt_oss_core(q, k, v, layer.sinks, 1 / math.sqrt(hd), bias, window)
    want = y.transpose(1, 2).reshape(b, t, h * hd) @ layer.out.weight.T
    with torch.no_grad():
        got = layer(x, pos, sb, None, 0)
    torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{NOTE} {m}")


def test_sinks_at_minus_infinity_are_the_standard_layer():
    layer, pos, cfg = _layer("sinks")
    plain = MultiHeadAttention(cfg).double()
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "sinks"})
    x = torch.randn(2, 7, cfg.d_model, dtype=F64)
    with torch.no_grad():
        layer.sinks.fill_(-1e4)
        torch.testing.assert_close(layer(x, pos, None, None, 0), plain(x, pos, None, None, 0), **TOL)
        layer.sinks.fill_(3.0)  # a sink that takes weight shrinks every output towards 0
        assert layer(x, pos, None, None, 0).norm() < plain(x, pos, None, None, 0).norm()


def test_sinks_decode_with_a_rolling_cache_as_windowed_attention_and_stream_with_the_sink_cache():
    cfg = replace(BASE, attention="sinks")
    _seed("sinkroll")
    model = Transformer(cfg).double().eval()
    windowed = Transformer(replace(cfg, window=4)).double().eval()
    windowed.load_state_dict(model.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (2, 13))
    with torch.no_grad():
        cache = model.new_cache(window=4)
        steps = torch.cat([model(idx[:, :6], cache)] + [model(idx[:, i:i + 1], cache) for i in range(6, 13)], 1)
        torch.testing.assert_close(steps, windowed(idx), rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    _seed("sinkstream")
    model = Transformer(cfg).double().eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 20))
    with torch.no_grad():
        cache = model.new_cache(window=5, sinks=2)
        for i in range(20):
            out = model(idx[:, i:i + 1], cache)
            assert torch.isfinite(out).all() and cache.held() == min(i + 1, 6)
    assert cache.nbytes() == cache_bytes(cfg, 20, 8, 2, window=5, sinks=2) == layer_spec("sinks").cache_bytes(
        cfg, 6, 8, 2)


# ---------------------------------------------------------------------------------------------------------------
# Differential attention (microsoft/unilm Diff-Transformer multihead_diffattn.py)


def _diff_reference(layer, x, cfg, depth, rotate):
    """MultiheadDiffAttn.forward with num_heads = H/2, num_kv_heads = Hkv/2, head_dim = d/H (the reference's
    d/num_heads/2), our kv projection's two halves as its k_proj and v_proj, and the rotation given."""
    b, t, _ = x.shape
    nh, nkv, hd = cfg.n_heads // 2, cfg.kv_heads // 2, cfg.head_dim
    n_rep = nh // nkv
    wk, wv = layer.kv.weight[:2 * nkv * hd], layer.kv.weight[2 * nkv * hd:]
    q = (x @ layer.q.weight.T).view(b, t, 2 * nh, hd)
    k = (x @ wk.T).view(b, t, 2 * nkv, hd)
    v = (x @ wv.T).view(b, t, nkv, 2 * hd)
    q, k = rotate(q.transpose(1, 2)), rotate(k.transpose(1, 2))
    k = k.repeat_interleave(n_rep, 1)
    v = v.transpose(1, 2).repeat_interleave(n_rep, 1)
    w = torch.softmax(_causal(q * hd ** -0.5 @ k.transpose(-1, -2)), -1)
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * depth)
    lam = (torch.exp(torch.sum(layer.lambda_q1 * layer.lambda_k1)) - torch.exp(torch.sum(layer.lambda_q2 *
                                                                                        layer.lambda_k2)) + lam_init)
    w = w.view(b, nh, 2, t, t)
    attn = (w[:, :, 0] - lam * w[:, :, 1]) @ v
    attn = _rms(attn, layer.subln, 1e-5) * (1 - lam_init)
    return attn.transpose(1, 2).reshape(b, t, nh * 2 * hd) @ layer.out.weight.T


@pytest.mark.parametrize("position", ["none", "rope"])
@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("depth", [0, 3])
def test_diff_matches_multihead_diffattn(position, kv_heads, depth):
    layer, pos, cfg = _layer("diff", position, n_kv_heads=kv_heads)
    x = torch.randn(2, 9, cfg.d_model, dtype=F64)
    rotate = (lambda z: _rope(z, cfg.rope_base)) if position == "rope" else (lambda z: z)
    want = _diff_reference(layer, x, cfg, depth, rotate)
    with torch.no_grad():
        got = layer(x, pos, None, None, depth)
    torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{NOTE} {m}")


def test_diff_lambda_init_and_refusals():
    assert lambda_init(0) == pytest.approx(0.2) and lambda_init(3) == pytest.approx(0.8 - 0.6 * math.exp(-0.9))
    with pytest.raises(ConfigError, match="even number of heads"):
        validate_model(replace(BASE, attention="diff", n_kv_heads=1))
    cfg = replace(BASE, attention="diff")
    want = step_flops(0, replace(cfg, attention="sdpa", d_model=96, n_heads=4), 2, 32)[0]  # head_dim 1.5·16
    assert step_flops(0, cfg, 2, 32)[0] == want


# ---------------------------------------------------------------------------------------------------------------
# Multi-head latent attention (transformers DeepseekV3Attention; DeepSeek-V3 inference MLA, absorb)


def _deepseek_reference(layer, x, cfg):
    b, t, _ = x.shape
    h, hd, dc, dr = cfg.n_heads, cfg.head_dim, layer.dc, layer.dr
    eps = cfg.norm_eps
    if hasattr(layer, "q"):
        qs = x @ layer.q.weight.T
    else:
        qs = _rms(x @ layer.q_a.weight.T, layer.q_a_norm, eps) @ layer.q_b.weight.T
    qs = qs.view(b, t, h, hd + dr).transpose(1, 2)
    q_pass, q_rot = qs[..., :hd], qs[..., hd:]
    ckv = x @ layer.kv_a.weight.T
    k_pass, k_rot = ckv[..., :dc], ckv[..., dc:]
    k_pass = (_rms(k_pass, layer.kv_norm, eps) @ layer.kv_b.weight.T).view(b, t, h, 2 * hd).transpose(1, 2)
    k_pass, value = k_pass[..., :hd], k_pass[..., hd:]
    k_rot = k_rot.view(b, 1, t, dr)
    q_rot, k_rot = _rope(q_rot, cfg.rope_base), _rope(k_rot, cfg.rope_base)
    k_rot = k_rot.expand(b, h, t, dr)
    qf, kf = torch.cat([q_pass, q_rot], -1), torch.cat([k_pass, k_rot], -1)
    w = torch.softmax(_causal(qf @ kf.transpose(-1, -2) * (hd + dr) ** -0.5), -1)
    return (w @ value).transpose(1, 2).reshape(b, t, h * hd) @ layer.out.weight.T


@pytest.mark.parametrize("key", ["mla", "mla_q"])
@pytest.mark.parametrize("rank", [None, 8, 40])  # d_c: the default 4·head_dim, narrower, wider than head_dim
def test_mla_matches_deepseek_v3_attention(key, rank):
    layer, pos, cfg = _layer(key, kv_lora_rank=rank)
    assert layer.dc == (rank or 4 * cfg.head_dim) and layer.kv_a.weight.shape[0] == layer.dc + cfg.head_dim // 2
    x = torch.randn(2, 11, cfg.d_model, dtype=F64)
    with torch.no_grad():
        got = layer(x, pos, None, None, 0)
    torch.testing.assert_close(got, _deepseek_reference(layer, x, cfg), **TOL, msg=lambda m: f"{NOTE} {m}")


@pytest.mark.parametrize("key", ["mla", "mla_q"])
@pytest.mark.parametrize("position", ["rope", "xpos", "rope_dynamic_ntk", "alibi"])
def test_mla_absorbed_decode_equals_the_naive_path_and_the_full_forward(key, position):
    cfg = replace(BASE, attention=key, position=position, train_len=8)
    _seed("mla" + key + position)
    model = Transformer(cfg).double().eval()
    for block in model.blocks:
        _randomise(block.attn)
    idx = torch.randint(0, cfg.vocab_size, (2, 14))
    outs = {}
    with torch.no_grad():
        full = model(idx)
        for absorb in (True, False):
            for block in model.blocks:
                block.attn.absorb = absorb
            cache = model.new_cache()
            outs[absorb] = torch.cat([model(idx[:, :5], cache)] + [model(idx[:, i:i + 1], cache)
                                                                   for i in range(5, 14)], 1)
    torch.testing.assert_close(outs[True], outs[False], **TOL, msg=lambda m: f"{NOTE} {m}")
    if position != "rope_dynamic_ntk":  # its frequencies follow the length decoded so far, not the final one
        torch.testing.assert_close(outs[True], full, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    assert [tuple(t_.shape) for t_ in cache.tensors()[:1]] == [(2, cache.buffers[0][0].shape[1], 4 * cfg.head_dim)]


def _spy_kernel(layer) -> list[tuple[int, int, int]]:
    """Record the head dims of q, k and v of every call the layer makes to its attention kernel."""
    seen, kernel = [], layer.attn

    def spy(q, k, v, **kw):
        seen.append((q.shape[-1], k.shape[-1], v.shape[-1]))
        return kernel(q, k, v, **kw)

    layer.attn = spy
    return seen


@pytest.mark.parametrize("key, absorb", [("mla", False), ("mla", True), ("diff", None)])
def test_layers_give_their_kernel_one_head_dim_for_q_k_and_v(key, absorb):
    """The fused kernels (SDPA's flash / efficient / cuDNN, CPU flash) need q, k and v of one head dim, else SDPA
    falls to its much slower math path: MLA's naive path pads the values with zeros to
    hd + d_R, its absorbed path attends with the latent keys as values, DIFF reads its 2hd-wide values in two halves
    (the reference's flash version); all keep the true outputs and, training, gradients."""
    layer, pos, cfg = _layer(key)
    seen = _spy_kernel(layer)
    x = torch.randn(2, 11, cfg.d_model, dtype=F64, requires_grad=not absorb)
    if key == "mla":
        layer.absorb = absorb
        want = _deepseek_reference(layer, x, cfg)
    else:
        want = _diff_reference(layer, x, cfg, 1, lambda z: _rope(z, cfg.rope_base))
    with torch.set_grad_enabled(not absorb):
        got = layer(x, pos, None, None, 1)
    assert seen and all(a == b == c for a, b, c in seen), seen
    torch.testing.assert_close(got, want, **TOL, msg=lambda m: f"{NOTE} {m}")
    if not absorb:
        g = torch.randn_like(got)
        (a,) = torch.autograd.grad(got, x, g)
        (b,) = torch.autograd.grad(want, x, g)
        torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{NOTE} {m}")


def test_mla_cache_is_the_latent_and_the_shared_rotary_key():
    cfg = replace(BASE, attention="mla", n_heads=2)  # head_dim 32: d_c 128, d_R 16
    s = layer_spec("mla")
    assert s.cache_per_token(cfg) == 4 * 32 + 16 == 2.25 * 2 * cfg.head_dim  # DeepSeek-V2: GQA with 2.25 groups
    assert s.cache_per_token(cfg) / layer_spec("sdpa").cache_per_token(cfg) == 4.5 / 4
    model = Transformer(cfg).eval()
    growing, static = model.new_cache(), model.new_cache(static_len=16, batch=3)
    idx = torch.randint(0, cfg.vocab_size, (3, 9))
    with torch.no_grad():
        for cache in (growing, static):
            model(idx[:, :4], cache)
            model(idx[:, 4:], cache)
    assert growing.nbytes() == static.nbytes() == s.cache_bytes(cfg, 9, 4, 3) == cache_bytes(cfg, 9, 4, 3)
    assert growing.nbytes() == cfg.n_layers * (4 * 32 + 16) * 9 * 4 * 3
    with pytest.raises(ConfigError, match="grouped KV heads"):
        validate_model(replace(cfg, n_kv_heads=1))
    with pytest.raises(ConfigError, match="no projection biases"):
        validate_model(replace(cfg, bias=True))


# ---------------------------------------------------------------------------------------------------------------
# Every new layer: counts from its spec, cached decoding, training.


@pytest.mark.parametrize("key", NEW)
@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_spec_counts_equal_what_the_model_allocates(key, norm):
    cfg = replace(BASE, attention=key, norm=norm)
    model = Transformer(cfg)
    assert sum(p.numel() for p in model.blocks[0].attn.parameters()) == layer_spec(key).param_count(cfg)
    assert model.num_params() == param_count(cfg)
    if key == "diff":  # equal parameters to the baseline, up to lambda (4·hd) and the head-wise norm (2·hd)
        assert model.num_params() - Transformer(replace(cfg, attention="sdpa")).num_params() == 2 * 6 * 16


@pytest.mark.parametrize("key", NEW)
def test_cached_decoding_equals_the_full_forward_and_it_trains(key):
    cfg = replace(BASE, attention=key, n_kv_heads=None if key.startswith("mla") else 2)
    _seed("decode" + key)
    model = Transformer(cfg).double().eval()
    for block in model.blocks:
        _randomise(block.attn)
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        steps = torch.cat([model(idx[:, :4], cache)] + [model(idx[:, i:i + 1], cache) for i in range(4, 12)], 1)
    torch.testing.assert_close(steps, full, rtol=1e-9, atol=1e-9, msg=lambda m: f"{key} {NOTE} {m}")
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


# ---------------------------------------------------------------------------------------------------------------
# The max-attention-logit probe (the QK-norm claim's instability signal)


@pytest.mark.parametrize("key", ["sdpa", "qknorm", "mla", "diff"])
def test_max_attention_logit_is_the_largest_scaled_score(key):
    from ablate.variants.attention.logits import max_attention_logit

    cfg = replace(BASE, attention=key, window=5 if key == "sdpa" else None)
    _seed("logit" + key)
    model = Transformer(cfg).double().eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 9))
    seen = []
    for block in model.blocks:  # the scores each layer's kernel sees, written out from its inputs
        fn = block.attn.attn

        def spy(q, k, v, *, causal, bias=None, window=None, scale=None, fn=fn):
            k2 = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
            s = q @ k2.transpose(-1, -2) * (scale or q.shape[-1] ** -0.5)
            i, j = torch.arange(s.shape[-2])[:, None], torch.arange(s.shape[-1])[None, :]
            keep = (j <= i) & ((j > i - window) if window else True)
            seen.append(s.abs().masked_fill(~keep, 0).max().item())
            return fn(q, k, v, causal=causal, bias=bias, window=window, scale=scale)

        block.attn.attn = spy
    with torch.no_grad():
        model(idx)
    got = max_attention_logit(model, idx)  # wraps the spies: they run again, but only the probe's value counts
    assert got == pytest.approx(max(seen), rel=1e-6) and got > 0
    assert all(block.attn.attn.__name__ == "spy" for block in model.blocks)  # the kernels are put back
