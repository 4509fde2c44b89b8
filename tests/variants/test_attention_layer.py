"""The attention layer (ablate.variants.attention.layer / .cache): every registered layer vs a float64 reference
written here, q and k transformed apart, the spec's parameter and cache-byte counts vs what the model allocates, the
rolling cache vs full attention restricted to its window, and a layer of its own (a toy latent-KV attention)
registered from a test-local plug-in and run in the model.

Inputs are fresh random numbers on every run; a failure message carries the seed (``ABLATE_TEST_SEED=<seed>``).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ablate.core.config import ModelConfig
from ablate.core.flops import cache_bytes, matmul_params, step_flops
from ablate.core.model import Transformer
from ablate.core.validate import estimate_memory_bytes, is_valid, param_count
from ablate.errors import ConfigError
from ablate.registry import plugins
from ablate.registry.keys import ATTENTION, REGISTRIES, load_all
from ablate.registry.plugins import PLUGINS_ENV
from ablate.variants.attention import (LAYERS, SPECS, KVCache, MultiHeadAttention, RollingKVCache, SinkKVCache,
                                       StaticKVCache, layer_spec)
from ablate.variants.positions import NoPE, Position, build_position

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
F64 = torch.float64

load_all()
BASE = ModelConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_mult=2.0, train_len=8,
                   max_len=64)
POSITIONS = ["rope", "alibi", "t5_bias", "none"]


def _seed(salt: str) -> None:
    torch.manual_seed((SEED + sum(map(ord, salt))) % 2**31)


def _cfg(key: str, position: str = "rope", **over) -> ModelConfig:
    window = 3 if "window" in SPECS.get(layer_spec(key).kernel).requires else None
    return replace(BASE, attention=key, position=position, window=window, **over)


def _cpu_ok(cfg: ModelConfig) -> str | None:
    """Why ``cfg`` cannot run a float64 forward on CPU (None: it can)."""
    ok, why = is_valid(cfg)
    if not ok:
        return why
    ok, why = ATTENTION.get(cfg.attention).available("cpu")
    if not ok:
        return why
    if not layer_spec(cfg.attention).supports_on("float64", "cpu"):
        return "no float64 on cpu"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Every registered layer vs a float64 reference (projections, rotation and bias written out here).


def _reference_layer(layer: MultiHeadAttention, x: torch.Tensor, pos: Position, cfg: ModelConfig) -> torch.Tensor:
    b, t, _ = x.shape
    h, hkv, hd = cfg.n_heads, cfg.kv_heads, cfg.head_dim

    def lin(m, inp):
        return inp @ m.weight.t() + (m.bias if m.bias is not None else 0)

    q = lin(layer.q, x).reshape(b, t, h, hd).permute(0, 2, 1, 3)
    kv = lin(layer.kv, x).reshape(b, t, 2, hkv, hd)
    k, v = kv[:, :, 0].permute(0, 2, 1, 3), kv[:, :, 1].permute(0, 2, 1, 3)
    q, k = pos.rotate_q(q, 0, t), pos.rotate_k(k, 0, t)
    kernel = layer_spec(cfg.attention).kernel_spec
    if kernel.reference_name != "naive":  # linear attention: its own O(n^2) form is the function it computes
        y = kernel.reference(q, k, v, causal=cfg.causal)
    else:
        g = h // hkv
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        s = q @ k.transpose(-2, -1) / math.sqrt(hd)
        sb = pos.score_bias()
        if sb is not None:
            s = s + sb.dense(t, t, x.device, F64)
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        keep = j <= i if cfg.causal else torch.ones(t, t, dtype=torch.bool)
        if cfg.window is not None:
            keep = keep & (j > i - cfg.window)
        y = torch.softmax(s.masked_fill(~keep, float("-inf")), -1) @ v
    return lin(layer.out, y.permute(0, 2, 1, 3).reshape(b, t, h * hd))


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("key", ATTENTION.keys())
def test_every_layer_matches_the_float64_reference(key, position):
    cfg = _cfg(key, position)
    why = _cpu_ok(cfg)
    if why:
        pytest.skip(why)
    _seed(key + position)
    layer = layer_spec(key).build(cfg).double()
    if type(layer) is not MultiHeadAttention:  # a subclass (qknorm, sinks, diff) changes what the layer computes
        pytest.skip("a layer of its own: checked by its own test")
    pos = build_position(position, cfg).double()
    for p in pos.parameters():
        p.data.normal_()
    x = torch.randn(2, 11, cfg.d_model, dtype=F64)
    with torch.no_grad():
        got = layer(x, pos, pos.score_bias(), None, 0)
        want = _reference_layer(layer, x, pos, cfg)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m: f"{key}/{position} {NOTE}: {m}")


def test_the_reference_catches_a_layer_that_skips_the_key_transform():
    class Wrong(MultiHeadAttention):
        def transform_k(self, k, pos, offset, seq_len):
            return k

    cfg = _cfg("naive", "rope")
    _seed("wrong")
    layer, pos = Wrong(cfg).double(), build_position("rope", cfg)
    x = torch.randn(2, 9, cfg.d_model, dtype=F64)
    with torch.no_grad():
        assert not torch.allclose(layer(x, pos, None, None, 0), _reference_layer(layer, x, pos, cfg), atol=1e-6)


def test_kernel_keys_are_standard_layers_with_unchanged_parameter_names():
    for key in SPECS:
        s = layer_spec(key)
        assert s.kernel == key and s.cache.names == ("k", "v") and s.key == key
    names = [n for n, _ in Transformer(_cfg("sdpa", bias=True)).named_parameters() if ".attn." in n]
    assert names[:6] == ["blocks.0.attn.q.weight", "blocks.0.attn.q.bias", "blocks.0.attn.kv.weight",
                         "blocks.0.attn.kv.bias", "blocks.0.attn.out.weight", "blocks.0.attn.out.bias"]


def test_capabilities_come_from_the_spec():
    assert {k for k in SPECS if layer_spec(k).materialises_scores} == {"naive", "sdpa_math"}
    assert {k for k in SPECS if layer_spec(k).native_bias} == {"flash_attn", "flex"}
    mem = [estimate_memory_bytes(_cfg(k, "alibi"), batch=2, seq_len=64, training=False)["activations"]
           for k in ("naive", "sdpa", "flex")]
    assert mem[0] > mem[1] > mem[2]  # scores materialised > dense ALiBi bias built > native slopes


# ---------------------------------------------------------------------------------------------------------------
# q and k are transformed apart.


class XPosLike(NoPE):
    """xPos's opposite scaling (Sun et al. 2022) without its rotation: q * zeta^(p/g), k * zeta^(-p/g), so a score
    is multiplied by zeta^((i - j) / g), a function of the distance only."""

    ZETA, GAMMA = 1.5, 4.0

    def _scale(self, x: torch.Tensor, offset: int, sign: float) -> torch.Tensor:
        p = torch.arange(offset, offset + x.shape[-2], dtype=x.dtype)[:, None]
        return x * self.ZETA ** (sign * p / self.GAMMA)

    def rotate_q(self, q, offset=0, seq_len=None):
        return self._scale(q, offset, 1.0)

    def rotate_k(self, k, offset=0, seq_len=None):
        return self._scale(k, offset, -1.0)

    def rotate(self, x, offset=0, seq_len=None):  # the shared hook must not be the one used
        raise AssertionError("the layer must call rotate_q / rotate_k")


def test_layer_transforms_q_and_k_separately():
    cfg = _cfg("naive", "none", n_kv_heads=None)
    _seed("xpos")
    model = Transformer(cfg).double().eval()
    model.pos = XPosLike(cfg)
    layer = model.blocks[0].attn
    x = torch.randn(1, 7, cfg.d_model, dtype=F64)
    with torch.no_grad():
        got = layer(x, model.pos, None, None, 0)
        q, k, v = layer.project(x)
        i, j = torch.arange(7)[:, None], torch.arange(7)[None, :]
        s = (q @ k.transpose(-2, -1)) / math.sqrt(cfg.head_dim) * XPosLike.ZETA ** ((i - j) / XPosLike.GAMMA)
        y = torch.softmax(s.masked_fill(j > i, float("-inf")), -1) @ v
        want = layer.out(y.transpose(1, 2).reshape(1, 7, -1))
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        # keys are cached as transformed at their own positions: decoding equals the full forward
        idx = torch.randint(0, cfg.vocab_size, (2, 10))
        full = model(idx)
        cache = model.new_cache()
        steps = torch.cat([model(idx[:, :4], cache)] + [model(idx[:, t:t + 1], cache) for t in range(4, 10)], 1)
        torch.testing.assert_close(steps, full, rtol=1e-9, atol=1e-9)


def test_qk_hooks_take_a_norm_before_rotation():
    class QKNorm(MultiHeadAttention):
        def transform_q(self, q, pos, offset, seq_len):
            return pos.rotate_q(F.rms_norm(q, (q.shape[-1],)), offset, seq_len)

        def transform_k(self, k, pos, offset, seq_len):
            return pos.rotate_k(F.rms_norm(k, (k.shape[-1],)), offset, seq_len)

    cfg = _cfg("naive", "rope")
    _seed("qknorm")
    layer, pos = QKNorm(cfg).double(), build_position("rope", cfg)
    x = torch.randn(2, 6, cfg.d_model, dtype=F64) * 50
    with torch.no_grad():
        q, k, _ = layer.project(x)
        qn = layer.transform_q(q, pos, 0, 6)
        assert torch.allclose(qn.norm(dim=-1), torch.full_like(qn.norm(dim=-1), math.sqrt(cfg.head_dim)))
        assert torch.isfinite(layer(x, pos, None, None, 0)).all()


# ---------------------------------------------------------------------------------------------------------------
# The spec's counts are what the model allocates.


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("key", ["sdpa", "linear", "sliding_window"])
def test_spec_params_and_cache_bytes_equal_what_the_model_allocates(key, kv_heads, bias):
    cfg = _cfg(key, "rope", n_kv_heads=kv_heads, bias=bias)
    s = layer_spec(key)
    model = Transformer(cfg).eval()
    assert sum(p.numel() for p in model.blocks[0].attn.parameters()) == s.param_count(cfg)
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 9))
    growing, static = model.new_cache(), model.new_cache(static_len=20, batch=3)
    with torch.no_grad():
        for cache in (growing, static):
            model(idx[:, :6], cache)
            model(idx[:, 6:], cache)
    el = 4
    assert growing.nbytes() == static.nbytes() == s.cache_bytes(cfg, 9, el, 3) == cache_bytes(cfg, 9, el, 3)
    assert sum(b.numel() * b.element_size() for b in static.tensors()) == s.cache_bytes(cfg, 20, el, 3)
    assert s.cache_bytes(cfg, 9, el, 3) == 2 * cfg.n_layers * cfg.kv_heads * cfg.head_dim * 9 * el * 3
    est = estimate_memory_bytes(cfg, batch=3, seq_len=1, training=False, kv_cache_len=9)
    assert est["kv_cache"] == growing.nbytes() and est["n_params"] == model.num_params()


# ---------------------------------------------------------------------------------------------------------------
# The rolling (evicting) cache.


@pytest.mark.parametrize("position", ["rope", "alibi", "t5_bias", "none"])
@pytest.mark.parametrize("key", ["naive", "sdpa", "flex"])
def test_rolling_cache_keeps_the_window_and_decodes_windowed_attention(key, position):
    W, n = 4, 13
    cfg = _cfg(key, position)
    _seed("roll" + key + position)
    model = Transformer(cfg).double().eval()
    windowed = Transformer(replace(cfg, window=W)).double().eval()
    windowed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in model.pos.parameters():
            p.normal_()
        windowed.pos.load_state_dict(model.pos.state_dict())
        idx = torch.randint(0, cfg.vocab_size, (2, n))
        want = windowed(idx)
        cache = model.new_cache(window=W)
        assert isinstance(cache, RollingKVCache)
        outs = [model(idx[:, :6], cache)]  # a prefill longer than the window, then one token at a time
        assert all(b.shape[2] == W for b in cache.tensors())
        for t in range(6, n):
            outs.append(model(idx[:, t:t + 1], cache))
            assert cache.length == t + 1 and all(b.shape[2] == W for b in cache.tensors())
    torch.testing.assert_close(torch.cat(outs, 1), want, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    el = 8
    assert cache.nbytes() == layer_spec(key).cache_bytes(cfg, W, el, 2) == cache_bytes(cfg, n, el, 2, window=W)


def _sinks_and_window(sinks: int, recent: int):
    """Naive attention where query p sees keys j < sinks and p - recent < j <= p (written out here)."""
    def attn(q, k, v, *, causal, bias=None, window=None, scale=None):
        tq, tk = q.shape[2], k.shape[2]
        g = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        p, j = torch.arange(tk - tq, tk)[:, None], torch.arange(tk)[None, :]
        keep = (j <= p) & ((j < sinks) | (j > p - recent))
        s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return torch.softmax(s.masked_fill(~keep, float("-inf")), -1) @ v

    return attn


@pytest.mark.parametrize("position", ["rope", "none"])
def test_sink_cache_keeps_the_sinks_and_the_recent_tokens(position):
    S, W, n = 2, 4, 14
    cfg = _cfg("naive", position)
    _seed("sink" + position)
    model = Transformer(cfg).double().eval()
    reference = Transformer(cfg).double().eval()
    reference.load_state_dict(model.state_dict())
    for block in reference.blocks:
        block.attn.attn = _sinks_and_window(S, W)
    idx = torch.randint(0, cfg.vocab_size, (2, n))
    with torch.no_grad():
        want = reference(idx)
        cache = model.new_cache(window=W, sinks=S)
        outs = [model(idx[:, :S + W - 1], cache)]  # a prompt the reference also attends in full
        for t in range(S + W - 1, n):
            outs.append(model(idx[:, t:t + 1], cache))
            assert all(b.shape[2] == S + W - 1 for b in cache.tensors())
        every = model.new_cache()
        model(idx, every)
    torch.testing.assert_close(torch.cat(outs, 1), want, rtol=1e-9, atol=1e-9, msg=lambda m: f"{NOTE} {m}")
    for kept, full in zip(cache.buffers, every.buffers):  # layer 0: its keys depend on the tokens alone
        torch.testing.assert_close(kept[0], torch.cat([full[0][:, :, :S], full[0][:, :, n - (W - 1):n]], 2),
                                   rtol=1e-12, atol=1e-12)
    assert cache.nbytes() == cache_bytes(cfg, n, 8, 2, window=W, sinks=S) == layer_spec("naive").cache_bytes(
        cfg, S + W - 1, 8, 2)
    with pytest.raises(ConfigError, match="no score bias"):
        Transformer(_cfg("naive", "alibi")).new_cache(window=W, sinks=S)


def test_rolling_cache_refusals_are_one_line():
    model = Transformer(_cfg("sdpa", "rope_dynamic_ntk"))
    with pytest.raises(ConfigError, match="an evicting cache cannot keep its positions") as info:
        model.new_cache(window=4)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="window >= 1"):
        Transformer(_cfg("sdpa")).new_cache(window=0)
    with pytest.raises(ConfigError, match="either static"):
        Transformer(_cfg("sdpa")).new_cache(window=4, static_len=8)
    with pytest.raises(ConfigError, match="'linear' cannot mask a window"):
        Transformer(_cfg("linear")).new_cache(window=4)
    assert layer_spec("linear").cache_kinds() == ("growing", "static", "sink")
    assert layer_spec("sdpa").cache_kinds() == ("growing", "static", "sink", "rolling")


def test_cache_classes_share_one_protocol():
    for cls in (KVCache, StaticKVCache, RollingKVCache, SinkKVCache):
        for name in ("update", "held", "window", "tensors", "nbytes"):
            assert callable(getattr(cls, name)), (cls, name)
    assert Transformer(_cfg("sdpa")).new_cache(window=3).window() == 3 and KVCache(1).window() is None


# ---------------------------------------------------------------------------------------------------------------
# A layer of its own from a plug-in: a toy latent-KV attention (one (B, T, r) latent cached per layer).

TOY_PLUGIN = '''
"""A toy latent-KV attention: x -> latent c (cached, rank r) -> per-head k, v; q from x; SDPA in between."""
import torch
from torch import nn
from ablate.variants.attention import CacheLayout, LayerSpec, attention_fn

RANK = 8


class ToyLatent(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.h, self.hd = cfg.n_heads, cfg.head_dim
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.down = nn.Linear(cfg.d_model, RANK, bias=False)
        self.up = nn.Linear(RANK, 2 * cfg.n_heads * cfg.head_dim, bias=False)
        self.out = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.attn, self.causal = attention_fn("sdpa"), cfg.causal

    def forward(self, x, pos, bias, cache, layer):
        b, t, _ = x.shape
        offset = cache.length if cache is not None else 0
        c = self.down(x)
        if cache is not None:
            (c,) = cache.update(layer, c)
        n = c.shape[1]
        q = pos.rotate_q(self.q(x).view(b, t, self.h, self.hd).transpose(1, 2), offset, offset + t)
        k, v = self.up(c).view(b, n, 2, self.h, self.hd).permute(2, 0, 3, 1, 4)
        k = pos.rotate_k(k, offset + t - n, offset + t)
        y = self.attn(q, k, v, causal=self.causal, bias=bias)
        return self.out(y.transpose(1, 2).reshape(b, t, self.h * self.hd))


def params(cfg):
    d, hhd = cfg.d_model, cfg.n_heads * cfg.head_dim
    return d * hhd + d * RANK + RANK * 2 * hhd + hhd * d


LayerSpec(key="toy_latent", module=ToyLatent, kernel="sdpa", description="toy latent-KV attention",
          params=params, unsupported=("gqa", "window"),
          cache=CacheLayout(names=("latent",), shapes=lambda cfg, b, n: ((b, n, RANK),), time_dim=1),
          check=lambda cfg: "has no projection biases (bias=False)" if cfg.bias else None).register()
'''


@pytest.fixture
def toy_layer(tmp_path, monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, "")
    monkeypatch.delenv(PLUGINS_ENV)
    entries = {axis: dict(reg._entries) for axis, reg in REGISTRIES.items()}
    state = (dict(plugins._LOADED), dict(plugins._FAILED))
    modules = set(sys.modules)
    path = Path(tmp_path) / "toy_latent_layer.py"
    path.write_text(TOY_PLUGIN)
    plugins.use([str(path)])
    yield layer_spec("toy_latent")
    for axis, reg in REGISTRIES.items():
        reg._entries.clear()
        reg._entries.update(entries[axis])
    for d, old in zip((plugins._LOADED, plugins._FAILED), state):
        d.clear()
        d.update(old)
    LAYERS.pop("toy_latent", None)
    for name in set(sys.modules) - modules:
        if "toy_latent_layer" in name:
            del sys.modules[name]


def test_a_plugin_layer_runs_in_the_model(toy_layer):
    assert ATTENTION.get("toy_latent").origin.startswith("plugin ")
    cfg = replace(BASE, attention="toy_latent", n_kv_heads=None, position="rope")
    with pytest.raises(ConfigError, match="'toy_latent': has no projection biases"):
        Transformer(replace(cfg, bias=True))
    with pytest.raises(ConfigError, match="'toy_latent' does not support grouped KV heads"):
        Transformer(replace(cfg, n_kv_heads=2))
    _seed("toy")
    model = Transformer(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 10))
    loss = model.loss(idx, torch.roll(idx, -1, 1))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    # counts come from its spec and equal what it allocates
    assert sum(p.numel() for p in model.blocks[0].attn.parameters()) == toy_layer.param_count(cfg)
    assert model.num_params() == param_count(cfg)
    assert step_flops(matmul_params(model), cfg, 2, 10)[0] > 0
    model = model.double().eval()
    with torch.no_grad():
        full = model(idx)
        for cache in (model.new_cache(), model.new_cache(static_len=16, batch=2)):
            steps = [model(idx[:, :4], cache)] + [model(idx[:, t:t + 1], cache) for t in range(4, 10)]
            torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-9, atol=1e-9)
            assert all(b.shape[:1] == (2,) and b.shape[2] == 8 for b in cache.tensors())
        assert cache.nbytes() == toy_layer.cache_bytes(cfg, 10, 8, 2) == cfg.n_layers * 10 * 8 * 8 * 2
        assert sum(b.numel() * b.element_size() for b in cache.tensors()) == toy_layer.cache_bytes(cfg, 16, 8, 2)
    assert not toy_layer.supports_on("window", "cpu") and toy_layer.supports_on("causal", "cpu")
    assert toy_layer.cache_kinds() == ("growing", "static", "sink")
