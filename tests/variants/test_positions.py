"""Position encodings (`ablate.variants.positions`): formulas checked against independent computations.

Inputs are fresh random float64 tensors every run; the seed is printed so a failure can be replayed
(``ABLATE_TEST_SEED=<seed> pytest tests/variants/test_positions.py``).
"""

from __future__ import annotations

import cmath
import math
import os
import random
import dataclasses
from dataclasses import replace

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.errors import AblateError, ConfigError, PositionRangeError, UnknownKeyError
from ablate.registry.keys import POSITION
from ablate.variants import positions as P

F64 = torch.float64
ROPE_KEYS = ["rope", "rope_pi", "rope_ntk", "rope_dynamic_ntk", "rope_yarn", "rope_pi_temp", "rope_ntk_temp",
             "rope_yarn_notemp"]
ALL_KEYS = ["none", "sinusoidal", "learned", *ROPE_KEYS, "alibi", "t5_bias", "xpos"]  # xpos: tests/variants/test_xpos.py

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


def yarn_ref(d: int, base: float, s: float, L: int, beta_fast: float = 32.0, beta_slow: float = 1.0):
    """jquesnelle/yarn ``scaled_rope/LlamaYaRNScaledRotaryEmbedding.py`` ``yarn()``, transcribed in plain Python:
    correction dims ``d ln(L / (rot 2 pi)) / (2 ln base)`` for beta_fast (floor, >= 0) and beta_slow (ceil,
    <= d-1); ``mask_i = 1 - clamp((i - low) / (high - low), 0, 1)`` (high += 0.001 when equal);
    ``inv_i = interp_i (1 - mask_i) + extrap_i mask_i``; mscale ``0.1 ln s + 1`` (1 for s <= 1).
    Returns (inv_freq list, mscale, (low, high))."""
    def correction_dim(rot):
        return (d * math.log(L / (rot * 2 * math.pi))) / (2 * math.log(base))

    low = max(math.floor(correction_dim(beta_fast)), 0)
    high = min(math.ceil(correction_dim(beta_slow)), d - 1)
    hi = high + 0.001 if low == high else high
    out = []
    for i in range(d // 2):
        pos_freq = base ** ((2 * i) / d)
        extrap, interp = 1.0 / pos_freq, 1.0 / (s * pos_freq)
        mask = 1.0 - min(max((i - low) / (hi - low), 0.0), 1.0)
        out.append(interp * (1 - mask) + extrap * mask)
    return out, (1.0 if s <= 1 else 0.1 * math.log(s) + 1.0), (low, high)


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


# Numbers printed by the reference implementations (float32), hard-coded so that any change of formula fails.
# YaRN: jquesnelle/yarn scaled_rope/LlamaYaRNScaledRotaryEmbedding.py (commit a18e549), run as
# LlamaYaRNScaledRotaryEmbedding(d, base=base, scale=s, original_max_position_embeddings=L): (low, high) from its
# find_correction_range(32, 1, d, base, L), .mscale, and .inv_freq[i]. transformers 5.24.0's
# _compute_yarn_parameters gives the same numbers.
# (head_dim, base, scale, original length, low, high, attention factor, {i: inv_freq[i]})
YARN_TABLE = [
    (32, 1e4, 16, 64, 0, 5, 1.2772588722239782,
     {0: 1.00000000e+00, 1: 4.56902325e-01, 2: 1.97642356e-01, 4: 2.50000004e-02, 15: 1.11142463e-05}),
    (64, 1e4, 4, 2048, 8, 21, 1.138629436111989,
     {0: 1.00000000e+00, 8: 1.00000001e-01, 9: 7.06631020e-02, 14: 1.16272122e-02, 20: 9.73008573e-04,
      31: 3.33380376e-05}),
    (128, 1e4, 16, 4096, 20, 46, 1.2772588722239782,
     {0: 1.00000000e+00, 20: 5.62341288e-02, 21: 4.69408594e-02, 33: 4.60043550e-03, 45: 1.51771645e-04,
      63: 7.21738706e-06}),
    (128, 5e5, 4, 4096, 14, 32, 1.138629436111989,
     {0: 1.00000000e+00, 14: 5.66696189e-02, 15: 4.42405455e-02, 23: 5.59516205e-03, 31: 5.06346987e-04,
      63: 6.13785176e-07}),
    (64, 5e5, 2, 64, 0, 6, 1.0693147180559945,
     {0: 1.00000000e+00, 1: 6.08301163e-01, 3: 2.19170868e-01, 5: 7.50676394e-02, 31: 1.50692904e-06}),
    (32, 5e5, 4, 2048, 2, 8, 1.138629436111989,
     {0: 1.00000000e+00, 2: 1.93922758e-01, 3: 7.47224614e-02, 5: 1.03502758e-02, 7: 1.20429229e-03,
      15: 1.13541762e-06}),
    (128, 1e4, 2, 64, 0, 17, 1.0693147180559945,
     {0: 1.00000000e+00, 1: 8.40494812e-01, 8: 2.41821229e-01, 16: 5.29411770e-02, 63: 5.77390965e-05}),
    (32, 1e4, 2, 4096, 5, 12, 1.0693147180559945,
     {0: 1.00000000e+00, 5: 5.62341288e-02, 6: 2.93640085e-02, 8: 7.85714202e-03, 11: 1.01615966e-03,
      15: 8.89139701e-05}),
    (64, 1e4, 16, 4096, 10, 23, 1.2772588722239782,
     {0: 1.00000000e+00, 10: 5.62341288e-02, 11: 3.91285680e-02, 16: 5.67307696e-03, 22: 2.39383779e-04,
      31: 8.33450940e-06}),
    (128, 5e5, 16, 2048, 11, 29, 1.2772588722239782,
     {0: 1.00000000e+00, 11: 1.04830950e-01, 12: 8.09493363e-02, 20: 8.79773404e-03, 28: 3.67978297e-04,
      63: 1.53446294e-07}),
]
# PI: transformers 5.24.0 ROPE_INIT_FUNCTIONS["linear"] (factor s). NTK-aware: jquesnelle/yarn
# scaled_rope/LlamaNTKScaledRotaryEmbedding.py (alpha = s). (head_dim, base, s, L, attention factor, {i: inv_freq})
PI_TABLE = [
    (32, 1e4, 16, 64, 1.0, {1: 3.51463333e-02, 4: 6.25000009e-03, 8: 6.24999986e-04, 15: 1.11142463e-05}),
    (64, 5e5, 4, 2048, 1.0, {1: 1.65900320e-01, 8: 9.40150768e-03, 16: 3.53553361e-04, 31: 7.53464519e-07}),
    (128, 1e4, 2, 4096, 1.0, {1: 4.32982177e-01, 16: 5.00000007e-02, 32: 4.99999989e-03, 63: 5.77390965e-05}),
    (128, 5e5, 16, 2048, 1.0, {1: 5.09135760e-02, 16: 2.35037692e-03, 32: 8.83883404e-05, 63: 1.53446294e-07}),
]
NTK_TABLE = [
    (32, 1e4, 16, 64, 1.0, {1: 4.67439413e-01, 4: 4.77420799e-02, 8: 2.27930630e-03, 15: 1.11142463e-05}),
    (64, 5e5, 4, 2048, 1.0, {1: 6.34579301e-01, 8: 2.62958482e-02, 16: 6.91471621e-04, 31: 7.53464519e-07}),
    (128, 1e4, 2, 4096, 1.0, {1: 8.56488883e-01, 16: 8.38586614e-02, 32: 7.03227567e-03, 63: 5.77390965e-05}),
    (128, 5e5, 16, 2048, 1.0, {1: 7.79543877e-01, 16: 1.85972713e-02, 32: 3.45858542e-04, 63: 1.53446294e-07}),
]
# Dynamic NTK: transformers 5.24.0 ROPE_INIT_FUNCTIONS["dynamic"] with factor 1, max_position_embeddings = L, at
# seq_len n. (head_dim, base, L, n, attention factor, {i: inv_freq})
DYNAMIC_TABLE = [
    (32, 1e4, 64, 100, 1.0, {1: 5.45856714e-01, 4: 8.87799039e-02, 8: 7.88187142e-03, 15: 1.13809881e-04}),
    (64, 5e5, 2048, 3000, 1.0, {1: 6.55479491e-01, 8: 3.40778865e-02, 16: 1.16130232e-03, 31: 2.05746073e-06}),
    (128, 1e4, 4096, 12288, 1.0, {1: 8.50994289e-01, 16: 7.56530315e-02, 32: 5.72338188e-03, 63: 3.84927334e-05}),
    (128, 5e5, 2048, 2048, 1.0, {1: 8.14617217e-01, 16: 3.76060307e-02, 32: 1.41421345e-03, 63: 2.45514070e-06}),
]
# The references compute in float32 (we in float64): their inv_freq is within a few float32 ulps, amplified by
# at most s in YaRN's ramp mix; 5e-6 relative covers it (observed max: see test_rope_init_matches_transformers).
F32_RTOL = 5e-6


def _assert_table_row(inv, factor, want_factor, want):
    assert factor == pytest.approx(want_factor, rel=1e-12, abs=0)
    for i, v in want.items():
        assert inv[i].item() == pytest.approx(v, rel=F32_RTOL, abs=0), (i, inv[i].item(), v)


def test_yarn_table_from_reference_code():
    desc = POSITION["rope_yarn"].description  # what `ablate list` prints
    assert "reference code" in desc and "beta_fast=32" in desc and "beta_slow=1" in desc and "0.1 ln s + 1" in desc
    assert {r[0] for r in YARN_TABLE} == {32, 64, 128} and {r[1] for r in YARN_TABLE} == {1e4, 5e5}
    assert {r[2] for r in YARN_TABLE} == {2, 4, 16} and {r[3] for r in YARN_TABLE} == {64, 2048, 4096}
    for d, base, s, L, low, high, factor, want in YARN_TABLE:
        assert P.yarn_correction_range(d, base, L) == (low, high), (d, base, L)
        inv, f = P.ROPE_INIT_FUNCTIONS["yarn"](d, base, float(s), L, None)
        _assert_table_row(inv, f, factor, want)
        # the module uses the same numbers, with train_len as the original length
        m = P.build_position("rope_yarn", ModelConfig(d_model=4 * d, n_heads=4, train_len=L, rope_base=base,
                                                      rope_scale=float(s)))
        got, f2 = m.inv_freq()
        assert torch.equal(got, inv) and f2 == f


def test_pi_ntk_dynamic_tables_from_reference_code():
    for d, base, s, L, factor, want in PI_TABLE:
        _assert_table_row(*P.ROPE_INIT_FUNCTIONS["pi"](d, base, float(s), L, None), factor, want)
    for d, base, s, L, factor, want in NTK_TABLE:
        _assert_table_row(*P.ROPE_INIT_FUNCTIONS["ntk"](d, base, float(s), L, None), factor, want)
    for d, base, L, n, factor, want in DYNAMIC_TABLE:
        _assert_table_row(*P.ROPE_INIT_FUNCTIONS["dynamic_ntk"](d, base, 1.0, L, n), factor, want)
        # transformers' base * ((factor * n / L) - (factor - 1))^(d/(d-2)) with factor 1, n clamped at L
        new_base = base * (max(n, L) / L) ** (d / (d - 2))
        inv, _ = P.ROPE_INIT_FUNCTIONS["dynamic_ntk"](d, base, 1.0, L, n)
        torch.testing.assert_close(inv, torch.tensor(theta_ref(d, new_base), dtype=F64), rtol=1e-12, atol=0)


def test_yarn_matches_reference_transcription_on_random_configs(gen):
    """Random (head_dim, base, s, L), plus the clamp corners: low == high == 0 (L = 4), high < 0 (L = 1: nothing
    interpolated in the reference), high clamped at d - 1 (base 10)."""
    r = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
    cases = [(8, 10.0, 2.0, 4096), (32, 1e4, 4.0, 4), (128, 1e4, 4.0, 1), (64, 1e4, 0.5, 2048)]
    for _ in range(40):
        cases.append((2 * r.randint(2, 128), 10 ** r.uniform(2, 6.5), 2 ** r.uniform(0.1, 6),
                      int(2 ** r.uniform(3, 16))))
    assert [P.yarn_correction_range(d, b, L) for d, b, _, L in cases[:3]] == [(5, 7), (0, 0), (0, -12)]
    for d, base, s, L in cases:
        want, want_factor, (low, high) = yarn_ref(d, base, s, L)
        assert P.yarn_correction_range(d, base, L) == (low, high), (d, base, L)
        inv, factor = P.ROPE_INIT_FUNCTIONS["yarn"](d, base, s, L, None)
        torch.testing.assert_close(inv, torch.tensor(want, dtype=F64), rtol=1e-12, atol=0)
        assert factor == pytest.approx(want_factor, rel=1e-15)
        # the ramp is linear in the dimension index between low and high (not in L / wavelength)
        th = torch.tensor(theta_ref(d, base), dtype=F64)
        if s != 1 and low < high and low <= d // 2 - 1:
            ramp = (th - inv) / (th - th / s)  # 0: theta_i kept, 1: theta_i / s
            top = min(high, d // 2 - 1)
            idx = torch.arange(low, top + 1, dtype=F64)
            torch.testing.assert_close(ramp[low:top + 1], (idx - low) / (high - low), rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(ramp[top:], torch.full_like(ramp[top:], min(1.0, (top - low) / (high - low))),
                                       rtol=1e-9, atol=1e-9)
            plain, _ = P.ROPE_INIT_FUNCTIONS["default"](d, base, 1.0, L, None)
            assert torch.equal(inv[:low + 1], plain[:low + 1])  # dims i <= low keep plain RoPE's theta_i exactly


def test_yarn_temperature_through_rotation(gen):
    d, base, L = CFG.head_dim, CFG.rope_base, CFG.train_len
    for s in (2.0, 4.0, 16.0):
        m = build("rope_yarn", rope_scale=s)
        want, want_factor, _ = yarn_ref(d, base, s, L)
        # both q and k are scaled, so logits scale by (0.1 ln s + 1)^2
        q, k = randn(gen, d), randn(gen, d)
        got = torch.dot(_rot_at(m, q, 77, 1024), _rot_at(m, k, 77, 1024)).item()
        assert got == pytest.approx((0.1 * math.log(s) + 1) ** 2 * torch.dot(q, k).item(), rel=1e-9, abs=1e-9)
        x = randn(gen, 1, 1, 3, d)
        torch.testing.assert_close(m.rotate(x, 5, 8), rotate_ref(x, [5, 6, 7], want, want_factor),
                                   rtol=1e-10, atol=1e-10)


def mscale_ref(s: float) -> float:
    """YaRN's ``get_mscale`` (jquesnelle/yarn LlamaYaRNScaledRotaryEmbedding.py; transformers'
    ``_compute_yarn_parameters`` with no attention_factor / mscale keys): 0.1 ln s + 1 for s > 1, else 1."""
    return 1.0 if s <= 1 else 0.1 * math.log(s) + 1.0


# (registered key, reference frequencies(d, base, s, L), attention factor(s)): PI is transformers' "linear"
# (theta / s), NTK-aware jquesnelle/yarn LlamaNTKScaledRotaryEmbedding (base * s^(d/(d-2))), YaRN the reference
# yarn() above; "temperature on" multiplies q and k by get_mscale(s), "off" (transformers' yarn with
# attention_factor=1.0) by 1.
TEMPERATURE_VARIANTS = [
    ("rope_pi_temp", lambda d, b, s, L: [t / s for t in theta_ref(d, b)], mscale_ref),
    ("rope_ntk_temp", lambda d, b, s, L: theta_ref(d, b * s ** (d / (d - 2))), mscale_ref),
    ("rope_yarn_notemp", lambda d, b, s, L: yarn_ref(d, b, s, L)[0], lambda s: 1.0),
]


def test_temperature_switch_matches_references_on_random_configs(gen):
    """Each temperature variant's frequencies and attention factor against the reference transcriptions, on random
    (head_dim, base, s, L), and the registry metadata says which rules carry a temperature."""
    r = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
    cases = [(32, 1e4, 16.0, 64), (64, 5e5, 4.0, 2048), (128, 1e4, 1.0, 256), (16, 1e4, 0.5, 64)]
    for _ in range(30):
        cases.append((2 * r.randint(2, 128), 10 ** r.uniform(2, 6.5), 2 ** r.uniform(0.1, 6),
                      int(2 ** r.uniform(3, 16))))
    for key, ref_inv, ref_factor in TEMPERATURE_VARIANTS:
        scaling = POSITION[key].supports["scaling"]
        assert POSITION[key].supports["rescales"] == "rope" and P.ROPE_TEMPERATURE[scaling] == (key != "rope_yarn_notemp")
        assert POSITION[key].supports["temperature"] == P.ROPE_TEMPERATURE[scaling]
        for d, base, s, L in cases:
            inv, factor = P.ROPE_INIT_FUNCTIONS[scaling](d, base, s, L, None)
            torch.testing.assert_close(inv, torch.tensor(ref_inv(d, base, s, L), dtype=F64), rtol=1e-12, atol=0)
            assert factor == pytest.approx(ref_factor(s), rel=1e-15), (key, s)
            cfg = ModelConfig(d_model=4 * d, n_heads=4, train_len=L, rope_base=base, rope_scale=s)
            assert P.rope_attention_factor(key, cfg) == factor
    for key in ("rope", "rope_pi", "rope_ntk", "rope_dynamic_ntk", "rope_yarn"):
        scaling = POSITION[key].supports.get("scaling", "default")
        assert P.ROPE_TEMPERATURE[scaling] == (key == "rope_yarn"), key
    assert P.rope_attention_factor("alibi", replace(CFG, rope_scale=4.0)) == 1.0
    assert P.rope_attention_factor("rope_yarn", replace(CFG, rope_scale=4.0)) == pytest.approx(1.138629436111989)


@pytest.mark.parametrize("key", ["rope_pi_temp", "rope_ntk_temp", "rope_yarn_notemp"])
def test_temperature_switch_through_rotation(key, gen):
    """Rotated q.k at equal positions scale by the factor squared; the rotation equals the complex-number reference
    with the reference frequencies and factor; switching the temperature changes exactly the factor."""
    d, base, L = CFG.head_dim, CFG.rope_base, CFG.train_len
    ref_inv, ref_factor = next((f, g) for k, f, g in TEMPERATURE_VARIANTS if k == key)
    partner = {"rope_pi_temp": "rope_pi", "rope_ntk_temp": "rope_ntk", "rope_yarn_notemp": "rope_yarn"}[key]
    for s in (2.0, 4.0, 16.0):
        m, other = build(key, rope_scale=s), build(partner, rope_scale=s)
        q, k = randn(gen, d), randn(gen, d)
        got = torch.dot(_rot_at(m, q, 77, 1024), _rot_at(m, k, 77, 1024)).item()
        assert got == pytest.approx(ref_factor(s) ** 2 * torch.dot(q, k).item(), rel=1e-9, abs=1e-9)
        x = randn(gen, 1, 2, 4, d)
        torch.testing.assert_close(m.rotate(x, 300, 304), rotate_ref(x, [300, 301, 302, 303], ref_inv(d, base, s, L),
                                                                     ref_factor(s)), rtol=1e-10, atol=1e-10)
        # the partner rule (temperature flipped) rotates by the same angles, scaled by its own factor
        ratio = P.rope_attention_factor(partner, replace(CFG, rope_scale=s)) / ref_factor(s)
        assert ratio != pytest.approx(1.0)
        torch.testing.assert_close(other.rotate(x, 300, 304), m.rotate(x, 300, 304) * ratio, rtol=1e-12, atol=1e-12)


def _hf_config(LlamaConfig, d, base, L, rope_scaling):
    """A minimal config every transformers >= 4.45 reads the same way: head_dim = hidden_size / heads, and
    max_position_embeddings = L doubles as YaRN's original length (no original_max_position_embeddings key,
    which some versions turn into factor = max_position_embeddings / original)."""
    return LlamaConfig(hidden_size=4 * d, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=L, rope_theta=base, rope_scaling=rope_scaling)


def test_rope_init_matches_transformers():
    """Ours against transformers' own rope init functions ("yarn", "linear", "dynamic") on the full grid."""
    transformers = pytest.importorskip("transformers", minversion="4.45",
                                       reason="transformers not installed (pip install 'ablate-bench[refs]')")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS as HF

    worst = {"yarn": 0.0, "linear": 0.0, "dynamic": 0.0}

    def check(kind, got, want):
        got_inv, got_f = got
        want_inv, want_f = want
        want_inv = want_inv.to(F64)
        assert got_f == pytest.approx(float(want_f), rel=1e-12), kind
        dev = ((got_inv - want_inv).abs() / want_inv.abs()).max().item()
        worst[kind] = max(worst[kind], dev)
        torch.testing.assert_close(got_inv, want_inv, rtol=F32_RTOL, atol=0)

    for d in (32, 64, 128):
        for base in (1e4, 5e5):
            for s in (2.0, 4.0, 16.0):
                for L in (64, 2048, 4096):
                    check("yarn", P.ROPE_INIT_FUNCTIONS["yarn"](d, base, s, L, None),
                          HF["yarn"](_hf_config(LlamaConfig, d, base, L, {"rope_type": "yarn", "factor": s}), None))
                    check("yarn", P.ROPE_INIT_FUNCTIONS["yarn_notemp"](d, base, s, L, None),
                          HF["yarn"](_hf_config(LlamaConfig, d, base, L, {"rope_type": "yarn", "factor": s,
                                                                          "attention_factor": 1.0}), None))
                    check("linear", P.ROPE_INIT_FUNCTIONS["pi"](d, base, s, L, None),
                          HF["linear"](_hf_config(LlamaConfig, d, base, L, {"rope_type": "linear", "factor": s}),
                                       None))
                    dyn = _hf_config(LlamaConfig, d, base, L, {"rope_type": "dynamic", "factor": 1.0})
                    n = int(s * L)
                    want = HF["dynamic"](dyn, None, seq_len=n)
                    check("dynamic", P.ROPE_INIT_FUNCTIONS["dynamic_ntk"](d, base, 1.0, L, n), want)
                    check("dynamic", P.ROPE_INIT_FUNCTIONS["ntk"](d, base, s, L, None), want)  # static NTK at n/L
                    check("dynamic", P.ROPE_INIT_FUNCTIONS["dynamic_ntk"](d, base, 1.0, L, L // 2),
                          HF["dynamic"](dyn, None, seq_len=L // 2))
    print(f"transformers {transformers.__version__}: max relative deviation {worst}")


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
    # with fairseq's embedding treatment the table is N(0, d^-1/2), as fairseq's learned positional embedding
    fs = P.build_position("learned", ModelConfig(d_model=256, n_heads=2, max_len=512, init_std=0.5,
                                                 scale_embeddings=True))
    assert 0.055 < fs.weight.std().item() < 0.07  # 256^-1/2 = 0.0625 (131k samples: +-1% at 3 sigma)
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
    assert m.max_distance == 64  # tied to train_len 256 (auto rule); Tk = 140 reaches past it
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
            want[:, i, j] = W[t5_bucket_ref(j - p, not causal, 32, 64), :]
    torch.testing.assert_close(bias, want.detach(), rtol=0, atol=0)
    bias.sum().backward()
    assert W.grad is not None and W.grad.abs().sum() > 0
    assert sb.dense(Tq, Tk, torch.device("cpu"), torch.float32).dtype == torch.float32


def test_t5_shared_single_table():
    m = P.build_position("t5_bias", CFG)
    assert [n for n, _ in m.named_parameters()] == ["relative_attention_bias.weight"]


# ---------------------------------------------------------------------------------------------------------------
# T5 max_distance tied to train_len


def _t5_buckets_ref(max_dist: int, bidirectional: bool, max_distance: int) -> set[int]:
    """Buckets of every key-query offset with |offset| <= max_dist (past and, if bidirectional, future keys)."""
    rels = range(-max_dist, max_dist + 1) if bidirectional else range(-max_dist, 1)
    return {t5_bucket_ref(r, bidirectional, 32, max_distance) for r in rels}


@pytest.mark.parametrize("train_len,causal,want", [(512, False, 128), (64, True, 32), (64, False, 16),
                                                   (16, True, 32), (256, True, 64), (1024, True, 256),
                                                   (2048, False, 512)])
def test_t5_max_distance_auto_rule(train_len, causal, want):
    """None: max(train_len // 4, 2 * max_exact), max_exact = (32 if causal else 16) // 2."""
    cfg = ModelConfig(d_model=64, n_heads=4, train_len=train_len, causal=causal)
    assert cfg.t5_max_distance is None
    assert P.t5_max_distance(cfg) == want == max(train_len // 4, 2 * ((32 if causal else 16) // 2))
    assert P.build_position("t5_bias", cfg).max_distance == want


def test_t5_max_distance_explicit_and_refused():
    cfg = ModelConfig(d_model=64, n_heads=4, train_len=64, causal=True)
    assert P.t5_max_distance(replace(cfg, t5_max_distance=128)) == 128
    assert P.build_position("t5_bias", replace(cfg, t5_max_distance=17)).max_distance == 17
    assert P.build_position("t5_bias", replace(cfg, causal=False, t5_max_distance=9)).max_distance == 9
    for causal, bad, exact in ((True, 16, 16), (True, 0, 16), (False, 8, 8), (False, -3, 8)):
        with pytest.raises(ConfigError) as ei:
            P.build_position("t5_bias", replace(cfg, causal=causal, t5_max_distance=bad))
        msg = str(ei.value)
        assert "\n" not in msg and f"t5_max_distance must be an integer > {exact}" in msg and f"got {bad}" in msg


@pytest.mark.parametrize("causal", [True, False])
def test_t5_auto_rule_leaves_no_untrained_bucket(causal):
    """At train_len 64 every bucket reachable at any distance is reached by some distance < train_len."""
    cfg = ModelConfig(d_model=64, n_heads=4, train_len=64, causal=causal)
    m = P.build_position("t5_bias", cfg)
    trained = _t5_buckets_ref(63, not causal, m.max_distance)
    assert _t5_buckets_ref(5000, not causal, m.max_distance) == trained
    # never used at any distance: causal bucket 20 (log steps finer than 1 token near max_exact = 16: distance 19
    # -> 19, 20 -> 21); bidirectional bucket 16 (a future key at distance 0 does not exist; as in T5 itself)
    assert trained == set(range(32)) - ({20} if causal else {16})
    # the module's own buckets over a long window only use those
    assert set(m.buckets(1, 3000).unique().tolist()) <= trained


def test_t5_explicit_128_at_train_len_64_leaves_untrained_buckets():
    cfg = ModelConfig(d_model=64, n_heads=4, train_len=64, causal=True, t5_max_distance=128)
    m = P.build_position("t5_bias", cfg)
    assert m.max_distance == 128
    trained = _t5_buckets_ref(63, False, 128)
    untrained = _t5_buckets_ref(5000, False, 128) - trained
    assert untrained == {27, 28, 29, 30, 31}
    assert set(m.buckets(1, 1024).unique().tolist()) & untrained == untrained  # used at eval length 1024


# ---------------------------------------------------------------------------------------------------------------
# Caveats


TINY = ModelConfig(d_model=128, n_heads=4, train_len=64, max_len=4096)  # head_dim 32, the `tiny` preset's shape


def _codes(key, cfg, lens, incremental=False):
    out = P.position_caveats(key, cfg, lens, incremental)
    for c in out:
        assert isinstance(c, P.Caveat) and c.message and "\n" not in c.message
    return [c.code for c in out]


def test_caveats_default_empty_and_unknown_key():
    for key in ("none", "sinusoidal", "rope", "rope_pi", "rope_ntk", "alibi"):
        assert P.position_caveats(key, TINY, [64, 1024, 100000]) == [], key
    with pytest.raises(UnknownKeyError):
        P.position_caveats("nope", TINY, [64])
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.Caveat("a", "b").code = "c"


def test_caveat_t5_untrained_buckets():
    cfg = replace(TINY, t5_max_distance=128)
    (c,) = P.position_caveats("t5_bias", cfg, [64, 128, 1024])
    # independent count: causal buckets used at 1024 but not at distances < 64 -> 27..31, bucket 27 from distance 67
    untrained = _t5_buckets_ref(1023, False, 128) - _t5_buckets_ref(63, False, 128)
    first = min(d for d in range(1024) if t5_bucket_ref(-d, False, 32, 128) in untrained)
    assert (untrained, first) == (set(range(27, 32)), 67)
    assert c.code == "t5_untrained_buckets"
    assert c.message == ("t5_bias (32 causal buckets, max_distance 128): buckets 27-31 (distances >= 67) are used "
                         "from eval length 128 but never reached at train_len 64 (distances <= 63); their bias stays "
                         "at its initialisation")
    # bidirectional: both halves
    (c,) = P.position_caveats("t5_bias", replace(cfg, causal=False), [256])
    untrained = _t5_buckets_ref(255, True, 128) - _t5_buckets_ref(63, True, 128)
    assert untrained == {14, 15, 30, 31} and "buckets 14-15, 30-31 (distances >= 64)" in c.message
    # not flagged: eval within the trained distances, the auto rule, or a window capping distances in both
    assert _codes("t5_bias", cfg, [16, 64]) == []
    assert _codes("t5_bias", TINY, [64, 128, 1024, 16384]) == []
    assert _codes("t5_bias", replace(TINY, causal=False), [64, 16384]) == []
    assert _codes("t5_bias", replace(cfg, window=32), [1024]) == []
    assert _codes("t5_bias", replace(cfg, window=100), [1024]) == ["t5_untrained_buckets"]


def test_caveat_yarn_mostly_interpolated():
    (c,) = P.position_caveats("rope_yarn", TINY, [64, 256, 1024])
    assert c.code == "yarn_mostly_interpolated"
    assert c.message == ("rope_yarn at scale 16 from original length 64 (head_dim 32, base 10000): only 1 of 16 "
                         "frequencies keeps its RoPE value (beta_fast=32 rotations need wavelengths <= 2.0 tokens); "
                         "it acts like position interpolation plus a temperature")
    # the count, from the reference transcription: frequencies left exactly at theta_i
    for d, L, kept in ((32, 64, 1), (128, 4096, 21), (64, 256, 1), (64, 1024, 6), (64, 2048, 9)):
        want, _, _ = yarn_ref(d, 1e4, 16.0, L)
        assert sum(abs(w - t) <= 1e-12 * t for w, t in zip(want, theta_ref(d, 1e4))) == kept, (d, L)
    # an explicit rope_scale flags even within train_len; its value is the one named
    (c,) = P.position_caveats("rope_yarn", replace(TINY, rope_scale=4.0), [64])
    assert "at scale 4 from original length 64" in c.message
    # head_dim 64: at original length 1024, 6 of 32 kept (< 8) is flagged; at 2048, 9 of 32 is not
    (c,) = P.position_caveats("rope_yarn", ModelConfig(d_model=256, n_heads=4, train_len=1024), [4096])
    assert "only 6 of 32 frequencies keep their RoPE value" in c.message and "<= 32.0 tokens" in c.message
    assert _codes("rope_yarn", ModelConfig(d_model=256, n_heads=4, train_len=2048), [4096]) == []
    # Llama-2 shape: head_dim 128, base 1e4, original length 4096 keeps 21 of 64 -> not flagged
    assert _codes("rope_yarn", ModelConfig(d_model=4096, n_heads=32, train_len=4096), [8192, 65536]) == []
    # no scaling at all: plain RoPE, nothing to say
    assert _codes("rope_yarn", TINY, [16, 64]) == []


def test_caveat_dynamic_equals_static():
    (c,) = P.position_caveats("rope_dynamic_ntk", TINY, [64, 128, 1024])
    assert c.code == "dynamic_equals_static" and "128, 1024" in c.message and "2, 16" in c.message
    assert _codes("rope_dynamic_ntk", TINY, [64, 128, 1024], incremental=True) == []
    assert _codes("rope_dynamic_ntk", TINY, [32, 64]) == []


def test_caveat_learned_table_short():
    (c,) = P.position_caveats("learned", replace(TINY, max_len=512), [64, 256, 1024])
    assert c.code == "learned_table_short" and "max_len=512" in c.message and "1024" in c.message
    assert _codes("learned", replace(TINY, max_len=1024), [64, 1024]) == []

