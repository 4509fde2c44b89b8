"""Position encodings (`ablate.variants.positions`): formulas checked against independent computations.

Inputs are fresh random float64 tensors every run; the seed is printed so a failure can be replayed
(``ABLATE_TEST_SEED=<seed> pytest tests/test_positions.py``).
"""

from __future__ import annotations

import cmath
import math
import os
import random
from dataclasses import replace

import pytest
import torch

from ablate.config import ModelConfig
from ablate.errors import AblateError, PositionRangeError, UnknownKeyError
from ablate.registry import POSITION
from ablate.variants import positions as P

F64 = torch.float64
ROPE_KEYS = ["rope", "rope_pi", "rope_ntk", "rope_dynamic_ntk", "rope_yarn"]
ALL_KEYS = ["none", "sinusoidal", "learned", *ROPE_KEYS, "alibi", "t5_bias"]

# d_model=256, 4 heads -> head_dim 64; train_len 256.
CFG = ModelConfig(d_model=256, n_heads=4, train_len=256, max_len=1024, rope_base=10000.0)


@pytest.fixture
def gen() -> torch.Generator:
    seed = int(os.environ.get("ABLATE_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"ABLATE_TEST_SEED={seed}")
    g = torch.Generator().manual_seed(seed)
    return g


def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------------------------
# Independent references


def theta_ref(d: int, base: float) -> list[float]:
    return [base ** (-(2.0 * i) / d) for i in range(d // 2)]


def rotate_ref(x: torch.Tensor, positions: list[float], freqs: list[float], factor: float = 1.0) -> torch.Tensor:
    """Half-split RoPE by complex multiplication: z_i = x_i + 1j*x_{i+D/2} -> z_i * e^{1j p f_i} * factor."""
    D = x.shape[-1]
    h = D // 2
    out = torch.empty_like(x)
    flat_in = x.reshape(-1, x.shape[-2], D)
    flat_out = out.view(-1, x.shape[-2], D)
    for b in range(flat_in.shape[0]):
        for t, p in enumerate(positions):
            for i in range(h):
                z = complex(flat_in[b, t, i].item(), flat_in[b, t, i + h].item())
                z = z * cmath.exp(1j * p * freqs[i]) * factor
                flat_out[b, t, i] = z.real
                flat_out[b, t, i + h] = z.imag
    return out


def yarn_ref(d: int, base: float, s: float, L: int, alpha: float = 1.0, beta: float = 32.0):
    """Peng et al. 2023: r = L / lambda, lambda = 2 pi / theta; gamma ramps 0 -> 1 linearly in r on [alpha, beta];
    theta' = (1 - gamma) theta / s + gamma theta; sqrt(1/t) = 0.1 ln s + 1."""
    out, regions = [], []
    for th in theta_ref(d, base):
        r = L / (2 * math.pi / th)
        if r < alpha:
            out.append(th / s)
            regions.append("interp")
        elif r > beta:
            out.append(th)
            regions.append("extrap")
        else:
            out.append(th / s + (r - alpha) / (beta - alpha) * (th - th / s))
            regions.append("ramp")
    return out, 0.1 * math.log(s) + 1.0, regions


def build(key: str, **over) -> P.Position:
    return P.build_position(key, replace(CFG, **over))


# ---------------------------------------------------------------------------------------------------------------
# Registry contract


def test_registry_exact_keys_and_metadata():
    assert set(POSITION.keys()) == set(ALL_KEYS)
    for key in ALL_KEYS:
        e = POSITION[key]
        assert isinstance(e.fn, type) and issubclass(e.fn, P.Position), key
        assert e.description and "\n" not in e.description, key
        assert e.paper, key
        assert e.available() == (True, ""), key
        for feat in ("kind", "extrapolates", "params", "needs_bias"):
            assert feat in e.supports, (key, feat)
        assert e.supports["kind"] in ("none", "absolute", "rotary", "bias"), key
        assert e.supports_("needs_bias") == (key in ("alibi", "t5_bias")), key
        assert e.supports_("max_len_bound") == (key == "learned"), key
        e.as_dict()  # JSON-able
        m = P.build_position(key, CFG)
        assert isinstance(m, e.fn)
        n_params = sum(p.numel() for p in m.parameters())
        assert (n_params > 0) == bool(e.supports["params"]) == (key in ("learned", "t5_bias")), key
        if not e.supports["params"]:
            assert m.state_dict() == {}, key  # position-only modules swap freely
        assert m.needs_raw_cache == (key == "rope_dynamic_ntk"), key
    for key in ROPE_KEYS:
        assert POSITION[key].supports["kind"] == "rotary"
        assert isinstance(P.build_position(key, CFG), P.Rotary)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UnknownKeyError) as ei:
        P.build_position("rope_nonsense", CFG)
    msg = str(ei.value)
    assert "unknown position 'rope_nonsense'" in msg
    for key in ALL_KEYS:
        assert key in msg


def test_rope_init_functions_signature():
    assert set(P.ROPE_INIT_FUNCTIONS) >= {"default", "pi", "ntk", "dynamic_ntk", "yarn"}
    for name, fn in P.ROPE_INIT_FUNCTIONS.items():
        inv, factor = fn(64, 10000.0, 2.0, 256, 512)
        assert inv.shape == (32,) and isinstance(factor, float), name


def test_base_defaults_are_identities(gen):
    m = P.Position(CFG)
    x = randn(gen, 2, 5, CFG.d_model)
    q = randn(gen, 2, 4, 5, CFG.head_dim)
    assert m.embed(x, 3) is x and m.rotate(q, 3, 8) is q and m.score_bias() is None
    nope = build("none")
    assert torch.equal(nope.embed(x, 3), x) and torch.equal(nope.rotate(q, 3, 8), q) and nope.score_bias() is None


# ---------------------------------------------------------------------------------------------------------------
# RoPE family


def _rot_at(m, x, pos, seq_len):
    """Rotate a (D,) vector as if at absolute position `pos`."""
    return m.rotate(x.view(1, 1, 1, -1), pos, seq_len).view(-1)


@pytest.mark.parametrize("key", ["rope", "rope_pi", "rope_ntk", "rope_yarn"])
def test_rope_scores_depend_only_on_relative_position(key, gen):
    m = build(key, rope_scale=4.0)
    D = CFG.head_dim
    q, k = randn(gen, D), randn(gen, D)

    def score(mq, nk):
        return torch.dot(_rot_at(m, q, mq, 2048), _rot_at(m, k, nk, 2048)).item()

    for delta in (0, 3, -7, 100):
        ref = score(50 + delta, 50)
        for base_pos in (120, 333, 1500):
            assert score(base_pos + delta, base_pos) == pytest.approx(ref, rel=1e-9, abs=1e-9), (delta, base_pos)
    # and different offsets give different scores (a constant rotation would pass the check above)
    s = [score(60 + d, 60) for d in (0, 1, 2, 5, 17)]
    for a in range(len(s)):
        for b in range(a + 1, len(s)):
            assert abs(s[a] - s[b]) > 1e-6, (s[a], s[b])


def test_rope_matches_complex_reference(gen):
    """Half-split pairing (i, i + D/2), rotation direction and theta_i = base^(-2i/D)."""
    m = build("rope")
    D = CFG.head_dim
    x = randn(gen, 2, 3, 5, D)
    off = 7
    got = m.rotate(x, off, off + 5)
    want = rotate_ref(x, [off + t for t in range(5)], theta_ref(D, CFG.rope_base))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("key", ROPE_KEYS)
def test_every_rope_at_scale_one_is_rope(key, gen):
    x = randn(gen, 2, 3, 40, CFG.head_dim)
    plain = build("rope", rope_scale=1.0)
    m = build(key, rope_scale=1.0)
    for off in (0, 17):
        assert torch.equal(m.rotate(x, off, off + 40), plain.rotate(x, off, off + 40)), key


def test_dynamic_ntk_init_function_clamps_at_one():
    d, base = CFG.head_dim, CFG.rope_base
    plain, _ = P.ROPE_INIT_FUNCTIONS["default"](d, base, 1.0, 256, None)
    for seq_len in (None, 1, 128, 256):
        inv, factor = P.ROPE_INIT_FUNCTIONS["dynamic_ntk"](d, base, 4.0, 256, seq_len)  # scale 4 is ignored
        assert torch.equal(inv, plain) and factor == 1.0, seq_len
    inv, _ = P.ROPE_INIT_FUNCTIONS["dynamic_ntk"](d, base, 4.0, 256, 1024)
    torch.testing.assert_close(inv, torch.tensor(theta_ref(d, base * 4.0 ** (d / (d - 2))), dtype=F64),
                               rtol=1e-12, atol=0)


def test_dynamic_ntk_within_train_len_is_rope(gen):
    x = randn(gen, 1, 2, 32, CFG.head_dim)
    m = build("rope_dynamic_ntk", rope_scale=8.0)  # rope_scale is ignored by the dynamic variant
    plain = build("rope")
    for off, L in ((0, 32), (200, 232), (224, CFG.train_len)):
        assert torch.equal(m.rotate(x, off, L), plain.rotate(x, off, L)), (off, L)


def test_ntk_base_through_inv_freq():
    d, base, s = CFG.head_dim, CFG.rope_base, 4.0
    m = build("rope_ntk", rope_scale=s)
    inv, factor = m.inv_freq()
    new_base = base * s ** (d / (d - 2))
    torch.testing.assert_close(inv, torch.tensor(theta_ref(d, new_base), dtype=F64), rtol=1e-12, atol=0)
    assert factor == 1.0
    # the NTK property: highest frequency untouched, lowest one interpolated exactly by s
    th = theta_ref(d, base)
    assert inv[0].item() == pytest.approx(th[0], rel=1e-12)
    assert inv[-1].item() == pytest.approx(th[-1] / s, rel=1e-12)


def test_pi_is_rope_at_positions_over_s(gen):
    s = 4.0
    pi, plain = build("rope_pi", rope_scale=s), build("rope")
    D = CFG.head_dim
    x = randn(gen, 1, 2, 6, D)
    got = pi.rotate(x, 10, 16)
    want = rotate_ref(x, [(10 + t) / s for t in range(6)], theta_ref(D, CFG.rope_base))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # at position s*m, PI is plain RoPE at position m
    v = randn(gen, D)
    for mpos in (0, 3, 50):
        torch.testing.assert_close(_rot_at(pi, v, int(s) * mpos, 1024), _rot_at(plain, v, mpos, 1024),
                                   rtol=1e-10, atol=1e-10)


def test_yarn_ramp_and_temperature(gen):
    d, base, L = CFG.head_dim, CFG.rope_base, CFG.train_len
    for s in (2.0, 4.0, 16.0):
        m = build("rope_yarn", rope_scale=s)
        inv, factor = m.inv_freq()
        want, want_factor, regions = yarn_ref(d, base, s, L)
        assert {"interp", "ramp", "extrap"} <= set(regions)  # the config exercises all three parts
        torch.testing.assert_close(inv, torch.tensor(want, dtype=F64), rtol=1e-12, atol=0)
        th = theta_ref(d, base)
        for i, reg in enumerate(regions):
            if reg == "extrap":
                assert inv[i].item() == pytest.approx(th[i], rel=1e-12)
            elif reg == "interp":
                assert inv[i].item() == pytest.approx(th[i] / s, rel=1e-12)
            else:
                assert th[i] / s < inv[i].item() < th[i]
        assert factor == pytest.approx(want_factor, rel=1e-12)
        # temperature through the rotation: both q and k scaled, so logits scale by (0.1 ln s + 1)^2
        q, k = randn(gen, d), randn(gen, d)
        pos = 77
        got = torch.dot(_rot_at(m, q, pos, 1024), _rot_at(m, k, pos, 1024)).item()
        assert got == pytest.approx((0.1 * math.log(s) + 1) ** 2 * torch.dot(q, k).item(), rel=1e-9, abs=1e-9)
        x = randn(gen, 1, 1, 3, d)
        torch.testing.assert_close(m.rotate(x, 5, 8), rotate_ref(x, [5, 6, 7], want, want_factor),
                                   rtol=1e-10, atol=1e-10)


def test_dynamic_ntk_beyond_train_len_is_ntk_at_length_ratio(gen):
    d, L0 = CFG.head_dim, CFG.train_len
    dyn = build("rope_dynamic_ntk", rope_scale=1.0)
    x = randn(gen, 1, 2, 8, d)
    for L in (300, 512, 1000):
        s_eff = L / L0
        ntk = build("rope_ntk", rope_scale=s_eff)
        off = L - 8
        torch.testing.assert_close(dyn.rotate(x, off, L), ntk.rotate(x, off, L), rtol=1e-12, atol=1e-12)
        inv, _ = dyn.inv_freq(L)
        torch.testing.assert_close(inv, torch.tensor(theta_ref(d, CFG.rope_base * s_eff ** (d / (d - 2))),
                                                     dtype=F64), rtol=1e-12, atol=0)
    # the same positions rotate differently once the total length changes (hence needs_raw_cache)
    a, b = dyn.rotate(x, 292, 300), dyn.rotate(x, 292, 600)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("key", ROPE_KEYS)
def test_rotate_with_offset_matches_full_sequence(key, gen):
    """KV-cache consistency: rotating a slice at its offset equals rotating everything and slicing."""
    m = build(key, rope_scale=4.0)
    T = 300  # beyond train_len, so dynamic NTK is actually scaling
    x = randn(gen, 2, 3, T, CFG.head_dim)
    full = m.rotate(x, 0, T)
    for off, t in ((0, 1), (1, 5), (150, 7), (T - 1, 1), (T - 40, 40)):
        part = m.rotate(x[:, :, off:off + t], off, T)
        torch.testing.assert_close(part, full[:, :, off:off + t], rtol=1e-12, atol=1e-12)
    # a cache grown from a short table gives what a fresh module gives
    fresh = build(key, rope_scale=4.0)
    m2 = build(key, rope_scale=4.0)
    m2.rotate(x[:, :, :3], 0, T)
    torch.testing.assert_close(m2.rotate(x, 0, T), fresh.rotate(x, 0, T), rtol=0, atol=0)


@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16, torch.float16])
def test_rotate_low_precision_computes_in_float32(dt, gen):
    """Output keeps the input dtype but is the float64 result rounded once (computed in float32, cast back)."""
    m = build("rope_yarn", rope_scale=4.0)
    x = randn(gen, 1, 2, 20, CFG.head_dim).to(dt)  # exactly representable in dt
    ref = m.rotate(x.to(F64), 1000, 1020)
    out = m.rotate(x, 1000, 1020)
    assert out.dtype == dt and out.shape == x.shape
    ulp_rel = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -10}[dt]
    err = (out.to(F64) - ref).abs()
    assert torch.all(err <= ulp_rel * ref.abs() + 1e-5), err.max()


def test_rotary_rejects_odd_head_dim():
    with pytest.raises(AblateError):
        P.build_position("rope", ModelConfig(d_model=30, n_heads=2))


# ---------------------------------------------------------------------------------------------------------------
# ALiBi


def test_alibi_slopes_power_of_two():
    assert P.alibi_slopes(8) == pytest.approx([2.0 ** -i for i in range(1, 9)], rel=1e-15)
    assert P.alibi_slopes(16) == pytest.approx([2.0 ** (-0.5 * i) for i in range(1, 17)], rel=1e-15)
    assert P.alibi_slopes(1) == pytest.approx([2.0 ** -8])


def test_alibi_slopes_non_power_of_two():
    # 6 heads: the 4-head slopes (2^-2, 2^-4, 2^-6, 2^-8), then slopes 1 and 3 of the 8-head set (2^-1, 2^-3)
    assert P.alibi_slopes(6) == pytest.approx([2.0 ** e for e in (-2, -4, -6, -8, -1, -3)], rel=1e-15)
    # 12 heads: the 8-head slopes, then the 1st, 3rd, 5th, 7th of the 16-head set (2^-0.5, 2^-1.5, ...)
    assert P.alibi_slopes(12) == pytest.approx([2.0 ** -i for i in range(1, 9)]
                                               + [2.0 ** e for e in (-0.5, -1.5, -2.5, -3.5)], rel=1e-15)
    # 3 heads: 2^-4 (1-of-2 rule), then the first slope of the 4-head set
    assert P.alibi_slopes(3) == pytest.approx([2.0 ** -4, 2.0 ** -8, 2.0 ** -2], rel=1e-15)
    cfg = ModelConfig(d_model=96, n_heads=6)
    sb = P.build_position("alibi", cfg).score_bias()
    assert sb.kind == "alibi" and sb.alibi_slopes.shape == (6,)
    torch.testing.assert_close(sb.alibi_slopes.to(F64), torch.tensor(P.alibi_slopes(6), dtype=F64))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("Tq,Tk", [(5, 5), (3, 7), (1, 9)])
def test_alibi_bias_values(causal, Tq, Tk):
    cfg = ModelConfig(d_model=64, n_heads=4, causal=causal)
    sb = P.build_position("alibi", cfg).score_bias()
    bias = sb.dense(Tq, Tk, torch.device("cpu"), F64)
    assert bias.shape == (4, Tq, Tk) and bias.dtype == F64
    slopes = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8]
    want = torch.empty(4, Tq, Tk, dtype=F64)
    for h in range(4):
        for i in range(Tq):
            p = Tk - Tq + i
            for j in range(Tk):
                dist = (p - j) if causal else abs(p - j)
                want[h, i, j] = -slopes[h] * dist
    torch.testing.assert_close(bias, want, rtol=0, atol=1e-15)
    # the last query sits at the last key: zero there, more negative further back
    assert torch.all(bias[:, -1, -1] == 0) and torch.all(bias[:, -1, 0] < 0)
    assert sb.dense(Tq, Tk, torch.device("cpu"), torch.float32).dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------------
# Sinusoidal and learned


def test_sinusoidal_equals_formula(gen):
    d = 12
    cfg = ModelConfig(d_model=d, n_heads=2)
    m = P.build_position("sinusoidal", cfg)
    off, T = 37, 9
    x = randn(gen, 2, T, d)
    got = m.embed(x, off) - x
    want = torch.empty(T, d, dtype=F64)
    for t in range(T):
        p = off + t
        for k in range(d):
            i2 = k - (k % 2)  # 2i
            a = p / 10000 ** (i2 / d)
            want[t, k] = math.sin(a) if k % 2 == 0 else math.cos(a)
    torch.testing.assert_close(got, want.expand(2, T, d), rtol=1e-10, atol=1e-12)
    # position 0 is (0, 1, 0, 1, ...): sin on even, cos on odd columns
    z = m.embed(torch.zeros(1, 1, d, dtype=F64), 0)[0, 0]
    assert torch.equal(z, torch.tensor([0.0, 1.0] * (d // 2), dtype=F64))
    # offset consistency, long positions (no max_len)
    full = m.embed(torch.zeros(1, 5000, d, dtype=F64), 0)
    torch.testing.assert_close(m.embed(torch.zeros(1, 10, d, dtype=F64), 4990), full[:, 4990:], rtol=0, atol=0)


def test_learned_offset_and_range(gen):
    cfg = ModelConfig(d_model=16, n_heads=2, max_len=16, init_std=0.5)
    m = P.build_position("learned", cfg).to(F64)
    assert m.weight.shape == (16, 16)
    assert 0.2 < m.weight.std().item() < 0.8  # init normal(0, init_std)
    x = randn(gen, 2, 6, 16)
    torch.testing.assert_close(m.embed(x, 10), x + m.weight[10:16], rtol=0, atol=0)
    full = m.embed(torch.zeros(1, 16, 16, dtype=F64), 0)
    torch.testing.assert_close(m.embed(torch.zeros(1, 3, 16, dtype=F64), 5), full[:, 5:8], rtol=0, atol=0)
    with pytest.raises(PositionRangeError, match=r"^no positions past max_len=16 \(asked for 17\)$"):
        m.embed(randn(gen, 1, 7, 16), 10)
    with pytest.raises(PositionRangeError, match="max_len=16"):
        m.embed(randn(gen, 1, 1, 16), 16)
    with pytest.raises(AblateError):  # user-facing error class
        m.embed(randn(gen, 1, 17, 16), 0)


# ---------------------------------------------------------------------------------------------------------------
# T5 relative bias


def t5_bucket_ref(rel: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> int:
    """rel = key - query. Half the buckets per direction when bidirectional (keys after the query go to the upper
    half); otherwise future keys count as distance 0. Exact buckets below half/2, then log-spaced up to
    max_distance, then the last bucket."""
    if bidirectional:
        size = num_buckets // 2
        start = size if rel > 0 else 0
        dist = abs(rel)
    else:
        size = num_buckets
        start = 0
        dist = max(0, -rel)
    exact = size // 2
    if dist < exact:
        return start + dist
    logbin = exact + int(math.log(dist / exact) / math.log(max_distance / exact) * (size - exact))
    return start + min(logbin, size - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_reference(bidirectional):
    rel = torch.arange(-400, 401)
    got = P.t5_relative_position_bucket(rel, bidirectional, 32, 128)
    want = torch.tensor([t5_bucket_ref(r, bidirectional) for r in rel.tolist()])
    assert torch.equal(got, want)
    assert got.min() >= 0 and got.max() <= 31


def test_t5_bucket_landmarks():
    def b(r, bi):
        return P.t5_relative_position_bucket(torch.tensor([r]), bi).item()
    # bidirectional: past/self in 0..15, future in 16..31
    assert [b(r, True) for r in (0, -1, -7, -8, -1000, 1, 7, 1000)] == [0, 1, 7, 8, 15, 17, 23, 31]
    # causal: future collapses to 0; 16 exact buckets; far past in 31
    assert [b(r, False) for r in (5, 0, -1, -15, -16, -127, -128, -5000)] == [0, 0, 1, 15, 16, 31, 31, 31]


@pytest.mark.parametrize("causal", [True, False])
def test_t5_dense_alignment_and_grad(causal):
    cfg = ModelConfig(d_model=64, n_heads=4, causal=causal, init_std=1.0)
    m = P.build_position("t5_bias", cfg).to(F64)
    assert m.bidirectional == (not causal)
    sb = m.score_bias()
    assert sb.kind == "t5" and sb.alibi_slopes is None
    Tq, Tk = 3, 140
    bias = sb.dense(Tq, Tk, torch.device("cpu"), F64)
    assert bias.shape == (4, Tq, Tk) and bias.dtype == F64
    W = m.relative_attention_bias.weight
    assert W.shape == (32, 4)
    want = torch.empty(4, Tq, Tk, dtype=F64)
    for i in range(Tq):
        p = Tk - Tq + i
        for j in range(Tk):
            want[:, i, j] = W[t5_bucket_ref(j - p, not causal), :]
    torch.testing.assert_close(bias, want.detach(), rtol=0, atol=0)
    bias.sum().backward()
    assert W.grad is not None and W.grad.abs().sum() > 0
    assert sb.dense(Tq, Tk, torch.device("cpu"), torch.float32).dtype == torch.float32


def test_t5_shared_single_table():
    m = P.build_position("t5_bias", CFG)
    assert [n for n, _ in m.named_parameters()] == ["relative_attention_bias.weight"]
