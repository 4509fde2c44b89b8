"""Attention registry: every kernel vs the naive reference, the reference vs an independent loop, linear attention
vs its O(n^2) form, the registry contract, and (GPU only) bf16/fp16 forward/backward errors vs float64.

Inputs are fresh random numbers on every run. A failure message carries the seed; rerun with
``ABLATE_TEST_SEED=<seed> pytest tests/variants/test_attention.py`` to reproduce it.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F

import ablate.variants.attention as A
from ablate.variants.attention import contract as A_contract
from ablate.variants.attention import flex as A_flex
from ablate.variants.attention import sdpa as A_sdpa
from ablate.errors import AblateError, ConfigError, UnavailableError, UnknownKeyError
from ablate.registry.keys import ATTENTION

SEED = int(os.environ.get("ABLATE_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
SEED_NOTE = f"[reproduce with ABLATE_TEST_SEED={SEED}]"
F64 = torch.float64

CONTRACT_KEYS = {"naive", "sdpa", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "flash_attn",
                 "xformers", "flex", "sliding_window", "linear"}
NAIVE = A.attention_fn("naive")
SOFTMAX_KEYS = [k for k in A.KEYS if k != "naive" and A.spec(k).reference is NAIVE]  # all compared against `naive`


def _gen(request: pytest.FixtureRequest, salt: str = "") -> torch.Generator:
    return torch.Generator().manual_seed(SEED ^ zlib.crc32((request.node.nodeid + salt).encode()))


# ---------------------------------------------------------------------------------------------------------------
# A stand-in for ablate.variants.positions.ScoreBias (same attributes, written independently here).


class StandInBias:
    """ALiBi (``alibi_slopes`` set) or an arbitrary dense bias indexed by absolute (query, key) position."""

    def __init__(self, *, slopes: torch.Tensor | None = None, table: torch.Tensor | None = None, causal: bool = True):
        self.alibi_slopes = slopes
        self.table = table
        self.causal = causal
        self.kind = "alibi" if slopes is not None else "t5"
        self.calls = 0

    def dense(self, tq: int, tk: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
        self.calls += 1
        if self.alibi_slopes is not None:
            p = torch.arange(tk - tq, tk, dtype=F64)[:, None]
            j = torch.arange(tk, dtype=F64)[None, :]
            dist = (p - j) if self.causal else (p - j).abs()
            out = -self.alibi_slopes.to(F64)[:, None, None] * dist
        else:
            assert self.table is not None and tk <= self.table.shape[-1]
            out = self.table[:, tk - tq:tk, :tk]
        return out.to(device=device, dtype=dtype)


class Case(NamedTuple):
    name: str
    causal: bool
    tq: int
    tk: int
    hkv: int
    bias: str | None = None  # "alibi" | "dense" | None
    window: int | None = None
    scale: float | None = None


H, B, D = 4, 2, 8
CASES = [
    Case("causal", True, 12, 12, 4),
    Case("bidir", False, 12, 12, 4),
    Case("causal-kvcache-gqa", True, 5, 17, 2),
    Case("bidir-kvcache-mqa", False, 5, 17, 1, scale=0.6),
    Case("decode-mqa", True, 1, 17, 1),
    Case("alibi-causal", True, 12, 12, 4, "alibi"),
    Case("alibi-bidir-kvcache-gqa", False, 5, 17, 2, "alibi"),
    Case("dense-causal-gqa", True, 12, 12, 2, "dense"),
    Case("dense-bidir-kvcache", False, 5, 17, 4, "dense", scale=0.5),
    Case("window", True, 12, 12, 4, window=4),
    Case("window-kvcache-gqa", True, 5, 17, 2, window=3, scale=0.25),
    Case("window-alibi-kvcache-mqa", True, 5, 17, 1, "alibi", window=6),
    Case("window-dense-gqa", True, 12, 12, 2, "dense", window=5),
    Case("window-wider-than-sequence", True, 12, 12, 2, window=40),
]
CASE_BY_NAME = {c.name: c for c in CASES}


def make_inputs(case: Case, gen: torch.Generator, *, h: int = H, b: int = B, d: int = D):
    q = torch.randn(b, h, case.tq, d, generator=gen, dtype=F64) * 1.5
    k = torch.randn(b, case.hkv, case.tk, d, generator=gen, dtype=F64)
    v = torch.randn(b, case.hkv, case.tk, d, generator=gen, dtype=F64)
    bias = None
    if case.bias == "alibi":
        bias = StandInBias(slopes=torch.rand(h, generator=gen, dtype=F64) * 0.45 + 0.05, causal=case.causal)
    elif case.bias == "dense":
        bias = StandInBias(table=torch.randn(h, case.tk, case.tk, generator=gen, dtype=F64) * 1.5)
    return q, k, v, bias


def call(key: str, q, k, v, case: Case, bias) -> torch.Tensor:
    return A.attention_fn(key)(q, k, v, causal=case.causal, bias=bias, window=case.window, scale=case.scale)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def assert_close(out: torch.Tensor, ref: torch.Tensor, what: str, tol: float = 1e-9) -> None:
    """float64 comparison: relative Frobenius error and max abs error both below ``tol``."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{what}: non-finite output {SEED_NOTE}"
    err, mx = rel_err(out, ref), (out.double() - ref.double()).abs().max().item()
    assert err < tol and mx < tol, f"{what}: rel err {err:.3e}, max abs err {mx:.3e} (tol {tol:g}) {SEED_NOTE}"


# ---------------------------------------------------------------------------------------------------------------
# An independent reference: explicit loops, exp/normalise by hand, ALiBi computed from the slopes.


def loop_reference(q, k, v, *, causal, bias=None, window=None, scale=None, offset=None, kv_head=None,
                   window_slack=0, reverse_bias_heads=False):
    """Keyword arguments after ``scale`` inject known bugs (used to prove the comparisons can fail)."""
    b_, h_, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    g = h_ // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    off = tk - tq if offset is None else offset
    head_of = kv_head or (lambda h: h // g)
    slopes = None if bias is None else bias.alibi_slopes
    dense = None if bias is None or slopes is not None else bias.dense(tq, tk, "cpu", F64)
    out = torch.empty(b_, h_, tq, v.shape[-1], dtype=F64)
    for bi in range(b_):
        for h in range(h_):
            kh = head_of(h)
            hb = h_ - 1 - h if reverse_bias_heads else h
            for i in range(tq):
                p = off + i
                s = torch.mv(k[bi, kh].double(), q[bi, h, i].double()) * scale
                if slopes is not None:
                    s = s - slopes[hb].double() * torch.tensor([abs(p - j) for j in range(tk)], dtype=F64)
                elif dense is not None:
                    s = s + dense[hb, i]
                keep = torch.tensor([(not causal or j <= p) and (window is None or j > p - window + window_slack)
                                     for j in range(tk)])
                s = torch.where(keep, s, torch.tensor(float("-inf"), dtype=F64))
                w = torch.exp(s - s.max())
                out[bi, h, i] = (w / w.sum()) @ v[bi, kh].double()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_naive_matches_independent_loop_reference(case, request):
    q, k, v, bias = make_inputs(case, _gen(request))
    ref = loop_reference(q, k, v, causal=case.causal, bias=bias, window=case.window, scale=case.scale)
    assert_close(call("naive", q, k, v, case, bias), ref, f"naive vs loop [{case.name}]")


# Known bugs injected into the loop reference: each must make the comparison with `naive` fail on its case.
FAULTS = [
    ("top-left instead of bottom-right causal alignment", "causal-kvcache-gqa", dict(offset=0)),
    ("decode query aligned to key 0", "decode-mqa", dict(offset=0)),
    ("scale 1/D instead of 1/sqrt(D)", "causal", dict(scale=1.0 / D)),
    ("explicit scale ignored", "bidir-kvcache-mqa", dict(scale=None)),
    ("GQA heads tiled (h % Hkv) instead of interleaved (h // G)", "causal-kvcache-gqa",
     dict(kv_head=lambda h: h % 2)),
    ("GQA heads tiled under a window", "window-kvcache-gqa", dict(kv_head=lambda h: h % 2)),
    ("window one key too wide", "window", dict(window_slack=-1)),
    ("window one key too narrow", "window-kvcache-gqa", dict(window_slack=1)),
    ("ALiBi slopes on the wrong heads", "alibi-causal", dict(reverse_bias_heads=True)),
    ("ALiBi distance not bottom-right aligned", "alibi-bidir-kvcache-gqa", dict(offset=0)),
    ("dense bias on the wrong heads", "dense-causal-gqa", dict(reverse_bias_heads=True)),
    ("dense bias dropped", "dense-bidir-kvcache", dict(bias=None)),
    ("causal mask dropped", "causal", dict(causal=False)),
]


@pytest.mark.parametrize("fault,case_name,inject", FAULTS, ids=[f[0] for f in FAULTS])
def test_comparison_catches_known_bugs(fault, case_name, inject, request):
    case = CASE_BY_NAME[case_name]
    q, k, v, bias = make_inputs(case, _gen(request))
    kw = dict(causal=case.causal, bias=bias, window=case.window, scale=case.scale)
    good = call("naive", q, k, v, case, bias)
    assert_close(loop_reference(q, k, v, **kw), good, "unfaulted loop")
    kw.update(inject)
    with pytest.raises(AssertionError):
        assert_close(loop_reference(q, k, v, **kw), good, fault)


# ---------------------------------------------------------------------------------------------------------------
# Every kernel on this machine's CPU vs `naive`, or a clear refusal where its capabilities say no.


def _needs(case: Case) -> list[str]:
    need = ["causal" if case.causal else "bidirectional"]
    if case.window is not None:
        need.append("window")
    if case.hkv != H:
        need.append("gqa")
    if case.tq < case.tk:
        need.append("kv_cache")
    return need


def _expect_supported(key: str, case: Case, device: str) -> bool:
    ok = all(A.supports(key, f, device) for f in _needs(case))
    if case.bias == "alibi":
        ok = ok and (A.supports(key, "alibi", device) or A.supports(key, "bias", device))
    elif case.bias == "dense":
        ok = ok and A.supports(key, "bias", device)
    if "window" in A.spec(key).requires and case.window is None:
        ok = False
    return ok


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("key", SOFTMAX_KEYS)
def test_kernel_matches_naive_on_cpu(key, case, request):
    ok, reason = ATTENTION[key].available("cpu")
    if not ok:
        pytest.skip(f"{key} unavailable on cpu: {reason}")
    q, k, v, bias = make_inputs(case, _gen(request))
    if not _expect_supported(key, case, "cpu"):
        with pytest.raises((UnavailableError, ConfigError)) as info:
            call(key, q, k, v, case, bias)
        msg = str(info.value)
        assert msg and "\n" not in msg and key in msg, msg
        return
    out = call(key, q, k, v, case, bias)
    assert out.dtype == F64 and out.shape == q.shape
    assert_close(out, call("naive", q, k, v, case, bias), f"{key} vs naive [{case.name}]")


# What each CPU-available key must accept on CPU (pins the capability table so the test above cannot pass by
# refusing everything).
CPU_MATRIX = {
    "sdpa": {c.name for c in CASES},
    "sdpa_flash": {c.name for c in CASES if c.bias != "dense"},  # CPU flash: no mask that requires grad
    "sdpa_math": {c.name for c in CASES},
    "flex": {c.name for c in CASES},
    "sliding_window": {c.name for c in CASES if c.window is not None},
}


@pytest.mark.parametrize("key", sorted(CPU_MATRIX))
def test_cpu_support_matrix(key):
    assert ATTENTION[key].available("cpu") == (True, "")
    assert {c.name for c in CASES if _expect_supported(key, c, "cpu")} == CPU_MATRIX[key]


BACKWARD_CASES = ["causal-kvcache-gqa", "alibi-bidir-kvcache-gqa", "window-dense-gqa", "decode-mqa"]


@pytest.mark.parametrize("case_name", BACKWARD_CASES)
@pytest.mark.parametrize("key", ["sdpa", "sdpa_flash", "sdpa_math", "sliding_window", "flex"])
def test_gradients_match_naive_on_cpu(key, case_name, request):
    case = CASE_BY_NAME[case_name]
    if key == "sliding_window" and case.window is None:
        pytest.skip("sliding_window needs a window")
    q, k, v, bias = make_inputs(case, _gen(request))
    if not _expect_supported(key, case, "cpu"):
        pytest.skip(f"{key} does not take [{case_name}] on cpu (refusal tested above)")
    if not A.supports(key, "backward", "cpu"):
        with pytest.raises(UnavailableError, match="backward"):
            call(key, q.requires_grad_(), k, v, case, bias)
        return
    gout = torch.randn(B, H, case.tq, D, generator=_gen(request, "g"), dtype=F64)
    grads = {}
    for name in (key, "naive"):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        (call(name, *leaves, case, bias) * gout).sum().backward()
        grads[name] = [t.grad for t in leaves]
    for which, g_key, g_ref in zip("qkv", grads[key], grads["naive"]):
        assert_close(g_key, g_ref, f"d{which} {key} vs naive [{case_name}]")


@pytest.mark.parametrize("key", ["sdpa", "sdpa_math", "sliding_window", "sdpa_flash"])
def test_learned_bias_gradients_on_cpu(key, request):
    """A bias that requires grad (T5-style, ALiBi with learned slopes) gets the same gradient as through naive."""
    for case_name in ("window-dense-gqa", "window-alibi-kvcache-mqa"):
        case = CASE_BY_NAME[case_name]
        q, k, v, bias = make_inputs(case, _gen(request, case_name))
        param = bias.table if bias.table is not None else bias.alibi_slopes
        if not A.supports(key, "bias", "cpu") and (case.bias == "dense" or not A.supports(key, "alibi", "cpu")):
            continue
        if key == "sdpa_flash":  # its CPU kernel takes a constant ALiBi mask but cannot differentiate into it
            param.requires_grad_()
            with pytest.raises(UnavailableError, match="requires grad"):
                call(key, q, k, v, case, bias)
            continue
        grads = []
        for name in (key, "naive"):
            param.grad = None
            param.requires_grad_()
            call(name, q, k, v, case, bias).square().sum().backward()
            grads.append(param.grad.clone())
        assert grads[0].abs().sum() > 0
        assert_close(grads[0], grads[1], f"bias grad {key} vs naive [{case_name}]")


def test_flex_refuses_backward_on_cpu():
    q, k, v, _ = make_inputs(CASES[0], torch.Generator().manual_seed(SEED))
    with pytest.raises(UnavailableError, match="backward"):
        A.attention_fn("flex")(q.requires_grad_(), k, v, causal=True)
    with torch.no_grad():  # inference is fine
        A.attention_fn("flex")(q, k, v, causal=True)


# ---------------------------------------------------------------------------------------------------------------
# Linear attention.


def linear_quadratic(q, k, v, *, causal):
    """O(n^2) form: A = phi(Q) phi(K)^T (bottom-right causal mask), out = A V / rowsum(A)."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    a = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)
    if causal:
        tq, tk = q.shape[2], k.shape[2]
        a = a * (torch.arange(tk)[None, :] <= torch.arange(tk - tq, tk)[:, None])
    return (a @ v) / a.sum(-1, keepdim=True)


LINEAR_SHAPES = [(37, 37, 2), (13, 37, 1), (1, 37, 4), (40, 40, 4)]


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tq,tk,hkv", LINEAR_SHAPES)
def test_linear_matches_quadratic_form(tq, tk, hkv, causal, chunk, request):
    case = Case("linear", causal, tq, tk, hkv)
    q, k, v, _ = make_inputs(case, _gen(request))
    ref = linear_quadratic(q, k, v, causal=causal)
    out = A.linear_attention(q, k, v, causal=causal, chunk_size=chunk)
    assert_close(out, ref, f"linear chunk={chunk} causal={causal} Tq={tq} Tk={tk} Hkv={hkv}")


def test_linear_quadratic_reference_can_fail(request):
    """The chunked scan differs measurably from softmax attention and from a top-left-aligned mask."""
    case = Case("linear", True, 13, 37, 2)
    q, k, v, _ = make_inputs(case, _gen(request))
    out = A.linear_attention(q, k, v, causal=True)
    with pytest.raises(AssertionError):
        assert_close(out, linear_quadratic(q, k[:, :, :13], v[:, :, :13], causal=True), "top-left linear")
    with pytest.raises(AssertionError):
        assert_close(out, A.attention_fn("naive")(q, k, v, causal=True), "softmax")
    with pytest.raises(AssertionError):  # GQA mapping
        assert_close(out, linear_quadratic(q, k.flip(1), v.flip(1), causal=True), "tiled heads")


def test_linear_registered_entry_ignores_scale(request):
    case = Case("linear", True, 9, 21, 2)
    q, k, v, _ = make_inputs(case, _gen(request))
    fn = A.attention_fn("linear")
    out = fn(q, k, v, causal=True)
    assert_close(out, linear_quadratic(q, k, v, causal=True), "linear entry")
    assert_close(fn(q, k, v, causal=True, scale=0.01), out, "linear with scale")
    assert A.backend_of("linear", q, k, v, causal=True) == "linear:chunked"


def test_linear_refuses_bias_and_window(request):
    q, k, v, bias = make_inputs(CASE_BY_NAME["alibi-causal"], _gen(request))
    fn = A.attention_fn("linear")
    with pytest.raises(UnavailableError, match="bias|ALiBi"):
        fn(q, k, v, causal=True, bias=bias)
    with pytest.raises(UnavailableError, match="window"):
        fn(q, k, v, causal=True, window=4)
    assert not A.supports("linear", "bias") and not A.supports("linear", "window")


def _largest_square_output(fn) -> tuple[int, list[tuple[int, ...]]]:
    """Run ``fn`` under a dispatch recorder; return the largest min(last two dims) of any op output."""
    from torch.utils._python_dispatch import TorchDispatchMode

    shapes: list[tuple[int, ...]] = []

    class Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dim() >= 2:
                    shapes.append(tuple(t.shape))
            return out

    with Rec():
        fn()
    return max(min(s[-1], s[-2]) for s in shapes), shapes


@pytest.mark.parametrize("causal", [True, False])
def test_linear_never_materialises_n_by_n(causal, request):
    n = 1024
    g = _gen(request)
    q = torch.randn(1, 2, n, 16, generator=g)
    k = torch.randn(1, 1, n, 16, generator=g)
    v = torch.randn(1, 1, n, 16, generator=g)
    biggest, shapes = _largest_square_output(lambda: A.attention_fn("linear")(q, k, v, causal=causal))
    assert biggest <= max(A.LINEAR_CHUNK, 16), f"linear made a {biggest}x{biggest}+ intermediate: {sorted(set(shapes))}"
    # the detector itself flags softmax attention on the same inputs
    assert _largest_square_output(lambda: A.attention_fn("naive")(q, k, v, causal=causal))[0] >= n


# ---------------------------------------------------------------------------------------------------------------
# Registry contract, errors, backend_of.


def test_registry_has_exactly_the_contract_keys():
    # every other key is a layer of its own over one of these kernels (tests/variants/test_layers_modern.py)
    assert set(A.kernel_keys()) == CONTRACT_KEYS and set(ATTENTION.keys()) == CONTRACT_KEYS | set(A.LAYERS)
    assert set(A.KEYS) == CONTRACT_KEYS


@pytest.mark.parametrize("key", sorted(CONTRACT_KEYS))
def test_entries_describe_themselves(key):
    e = ATTENTION[key]
    assert e.description.strip() and "\n" not in e.description
    assert e.paper.strip() and "\n" not in e.paper
    assert e.fn is A.attention_fn(key)
    for device in (None, "cpu", "cuda"):
        ok, reason = e.available(device)
        assert isinstance(ok, bool) and isinstance(reason, str)
        if not ok:
            assert reason.strip() and "\n" not in reason
    for f in A.FEATURES:
        assert f in e.supports
        assert isinstance(e.supports[f], (bool, tuple))
    assert set(e.supports["devices"]) <= {"cpu", "cuda"} and e.supports["devices"]
    assert set(e.supports["dtypes"]) <= {"float16", "bfloat16", "float32", "float64"} and e.supports["dtypes"]
    e.as_dict()  # JSON-able summary works


ENTRIES_SNAPSHOT = Path(__file__).parents[1] / "data" / "attention_entries.json"
# reasons that depend on which optional packages are installed (the snapshot was taken without them)
_OPTIONAL_PACKAGE_KEYS = ("flash_attn", "xformers")


def test_registry_view_matches_the_snapshot():
    """``ablate list`` for attention (``Entry.as_dict`` of every key, in order) is what it was before the attention
    module became a package of per-backend modules: keys, descriptions, papers, supports and CPU availability."""
    want = json.loads(ENTRIES_SNAPSHOT.read_text())
    got = [ATTENTION[k].as_dict("cpu") for k in A.kernel_keys()]
    assert [e["key"] for e in got] == [e["key"] for e in want] == list(A.KEYS)
    for g, w in zip(got, want):
        g = {f: g[f] for f in w}  # every field the snapshot has, unchanged (fields added to as_dict later are free)
        if g["key"] in _OPTIONAL_PACKAGE_KEYS:
            assert g["available"] is False and g["reason"].startswith("needs CUDA"), g
            g, w = {**g, "reason": ""}, {**w, "reason": ""}
        assert json.loads(json.dumps(g)) == w, g["key"]


def _spec_shape_kwargs(**over: Any) -> dict[str, Any]:
    kw = dict(batch=2, n_heads=4, n_kv_heads=2, seq_len=16, head_dim=8, causal=True, window=None)
    kw.update(over)
    return kw


@pytest.mark.parametrize("key", sorted(CONTRACT_KEYS))
def test_every_key_has_a_complete_spec(key, request):
    """Registering a key states everything about it: the spec's fields are all set and consistent with the entry."""
    s = A.spec(key)
    e = ATTENTION[key]
    assert isinstance(s, A.AttentionSpec) and A.SPECS[key] is s and s.key == key
    assert s.fn is e.fn and s.description == e.description and s.paper == e.paper
    assert s.static_supports() == dict(e.supports)
    assert s.caps and set(s.caps) <= {"cpu", "cuda"}
    for dev, caps in s.caps.items():
        assert set(caps) == set(A.FEATURES) | {"dtypes"}, dev
        assert all(isinstance(caps[f], bool) for f in A.FEATURES)
        assert caps["dtypes"] and set(caps["dtypes"]) <= {"float16", "bfloat16", "float32", "float64"}
    for dev in ("cpu", "cuda", "mps"):  # a missing device has a one-line reason
        if dev not in s.caps:
            ok, reason = s.available(dev)
            assert ok is False and reason.strip() and "\n" not in reason
    assert s.probe is None or callable(s.probe)
    assert callable(s.backend_name) and callable(s.reference) and callable(s.flops)
    assert isinstance(s.compiled, bool) and isinstance(s.materialises_scores, bool) and isinstance(s.native_bias, bool)
    if s.compiled:
        assert callable(s.compiles_on) and s.is_compiled("cuda")
    else:
        assert not s.is_compiled("cuda") and not s.is_compiled("cpu")
    assert s.refusal is None or callable(s.refusal)
    assert s.feature_check is None or callable(s.feature_check)
    # requires: known settings, each a ModelConfig field
    from dataclasses import fields

    from ablate.core.config import ModelConfig

    assert isinstance(s.requires, tuple) and set(s.requires) <= set(A.SETTINGS)
    assert set(s.requires) <= {f.name for f in fields(ModelConfig)}
    # flops: a positive count with a known convention, for every pass and mask
    windows = (None, 5) if s.caps[next(iter(s.caps))]["window"] else (None,)
    for pas in ("fwd", "bwd", "fwd_bwd"):
        for causal in (True, False):
            for window in windows if causal else (None,):
                fl, conv = s.flops(pas, **_spec_shape_kwargs(causal=causal, window=window))
                assert isinstance(fl, float) and fl > 0 and math.isfinite(fl), (pas, causal, window)
                assert conv in (A_contract.FLOPS_FA, A_contract.FLOPS_LINEAR)
    # the reference runs under the contract's signature (float64, the key's own features)
    q, k, v, _ = make_inputs(CASE_BY_NAME["causal-kvcache-gqa"], _gen(request))
    out = s.reference(q, k, v, causal=True, window=4 if s.requires else None)
    assert out.shape == q.shape and out.dtype == F64 and torch.isfinite(out).all()


def test_spec_flops_follow_each_kernels_convention():
    """Softmax kernels: the FlashAttention convention (ablate.core.flops.attention_flops); linear: its algorithm's count
    (ablate.core.flops.linear_attention_flops with LINEAR_CHUNK, or the chunk asked for)."""
    from ablate.core.flops import attention_flops, linear_attention_flops

    for key in A.KEYS:
        for pas in ("fwd", "bwd", "fwd_bwd"):
            for causal, window in ((True, None), (False, None), (True, 5)):
                kw = _spec_shape_kwargs(causal=causal, window=window, seq_len=200)
                fa = attention_flops(2, 4, 200, 200, 8, causal=causal, window=window, mode=pas)
                lin = linear_attention_flops(2, 4, 2, 200, 200, 8, causal=causal, chunk=A.LINEAR_CHUNK, mode=pas)
                want = (lin, "linear") if key == "linear" else (fa, "fa")
                assert A.spec(key).flops(pas, **kw) == want, (key, pas, causal, window)
    lin7 = linear_attention_flops(2, 4, 2, 200, 200, 8, causal=True, chunk=7, mode="fwd")
    assert A.spec("linear").flops("fwd", **_spec_shape_kwargs(seq_len=200), chunk=7) == (lin7, "linear")
    assert A.spec("sdpa").flops("fwd", **_spec_shape_kwargs(), chunk=7) == A.spec("sdpa").flops("fwd",
                                                                                                **_spec_shape_kwargs())


def test_spec_facts_that_replace_key_names(request):
    """What callers ask the spec instead of comparing key names: required settings, compilation, reference, memory."""
    assert [k for k in A.KEYS if A.spec(k).requires] == ["sliding_window"]
    assert A.spec("sliding_window").requires == ("window",)
    q, k, v, _ = make_inputs(CASES[0], _gen(request))
    with pytest.raises(ConfigError, match=r"sliding_window needs a window \(cfg.window=W\)"):
        A.check_call("sliding_window", q, k, v, True, None, None)
    assert [k for k in A.KEYS if A.spec(k).compiled] == ["flex"]
    assert A.spec("flex").is_compiled("cuda")
    cpu_compiled = os.environ.get("ABLATE_FLEX_COMPILE_CPU", "") not in ("", "0")
    assert A.spec("flex").is_compiled("cpu") == cpu_compiled
    assert {k for k in A.KEYS if A.spec(k).materialises_scores} == {"naive", "sdpa_math"}
    assert {k for k in A.KEYS if A.spec(k).native_bias} == {"flash_attn", "flex"}
    assert [k for k in A.KEYS if A.spec(k).reference is not NAIVE] == ["linear"]
    for causal in (True, False):  # linear's reference is its O(n^2) form
        assert_close(A.spec("linear").reference(q, k, v, causal=causal), linear_quadratic(q, k, v, causal=causal),
                     f"linear reference causal={causal}")
    with pytest.raises(UnknownKeyError, match="flash3.*naive"):
        A.spec("flash3")


def test_unavailable_keys_give_reasons_and_raise_clearly():
    q, k, v, _ = make_inputs(CASES[0], torch.Generator().manual_seed(SEED))
    for key in sorted(CONTRACT_KEYS):
        ok, reason = ATTENTION[key].available("cpu")
        if ok:
            continue
        assert reason.strip()
        with pytest.raises(UnavailableError) as info:
            A.attention_fn(key)(q, k, v, causal=True)
        assert key in str(info.value) and reason in str(info.value) and "\n" not in str(info.value)
    # the documented reasons on a CPU-only machine
    assert "needs CUDA" in ATTENTION["flash_attn"].available("cpu")[1]
    assert "needs CUDA" in ATTENTION["sdpa_efficient"].available("cpu")[1]
    if not torch.cuda.is_available():
        assert ATTENTION["xformers"].available()[0] is False


def test_unknown_key_lists_valid_keys():
    q, k, v, _ = make_inputs(CASES[0], torch.Generator().manual_seed(SEED))
    for thunk in (lambda: ATTENTION.get("flash3"), lambda: A.attention_fn("flash3"),
                  lambda: A.check_call("flash3", q, k, v, True), lambda: A.supports("flash3", "causal"),
                  lambda: A.backend_of("flash3", q, k, v, causal=True)):
        with pytest.raises(UnknownKeyError) as info:
            thunk()
        msg = str(info.value)
        assert "flash3" in msg and all(key in msg for key in CONTRACT_KEYS)


def test_invalid_requests_raise_config_errors():
    g = torch.Generator().manual_seed(SEED)
    q, k, v = (torch.randn(1, 4, 6, 8, generator=g, dtype=F64) for _ in range(3))
    naive = A.attention_fn("naive")
    bad = [
        lambda: naive(q, k[:, :, :3], v[:, :, :3], causal=True),  # Tq > Tk
        lambda: naive(q, k[:, :3], v[:, :3], causal=True),  # 4 heads over 3 kv heads
        lambda: naive(q, k, v, causal=False, window=3),  # window without causal
        lambda: naive(q, k, v, causal=True, window=0),
        lambda: naive(q, k.float(), v, causal=True),  # dtype mismatch
        lambda: naive(q[0], k, v, causal=True),  # not 4-D
        lambda: naive(q, k, v, causal=True, bias=object()),  # not a ScoreBias
        lambda: A.attention_fn("sliding_window")(q, k, v, causal=True),  # no window
        lambda: A.linear_attention(q, k, v, causal=True, chunk_size=0),
        lambda: A.supports("naive", "telepathy"),
    ]
    for i, thunk in enumerate(bad):
        with pytest.raises(ConfigError) as info:
            thunk()
        assert str(info.value) and "\n" not in str(info.value), i


def test_check_call_refuses_unsupported_dtype_and_feature():
    q, k, v, bias = make_inputs(CASE_BY_NAME["dense-causal-gqa"], torch.Generator().manual_seed(SEED))
    A.check_call("sdpa", q, k, v, True, bias, None)  # fine
    with pytest.raises(UnavailableError, match="bias"):
        A.check_call("linear", q, k, v, True, bias, None)
    with pytest.raises(UnavailableError, match="bidirectional"):
        A.check_call("sliding_window", q, k, v, False, None, None)
    with pytest.raises(AblateError):
        A.check_call("flash_attn", q, k, v, True)  # float64 (and no CUDA here): refused either way
    assert not A.supports("flash_attn", torch.float32, "cuda") and A.supports("flash_attn", "bfloat16", "cuda")
    assert A.supports("sdpa_flash", "alibi", "cpu") and not A.supports("sdpa_flash", "alibi", "cuda")
    assert ATTENTION["sdpa_flash"].supports["alibi"] == ("cpu",) and ATTENTION["sdpa_flash"].supports["bias"] is False


def test_forced_sdpa_refusal_becomes_unavailable_error_with_torchs_reason():
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    bad_mask = torch.zeros(2, 4, 4)  # 3-D float masks are refused by the CPU flash kernel
    with pytest.raises(UnavailableError, match="sdpa_flash.*refused.*mask") as info:
        A_sdpa._run_forced("sdpa_flash", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bad_mask))
    assert "\n" not in str(info.value)


def test_backend_of_names_what_runs_on_cpu(request):
    case = CASE_BY_NAME["causal-kvcache-gqa"]
    q, k, v, _ = make_inputs(case, _gen(request))
    names = {key: A.backend_of(key, q, k, v, causal=True) for key in ("naive", "sdpa", "sdpa_flash", "sdpa_math",
                                                                     "flex", "linear")}
    assert names["naive"] == "naive"
    assert names["sdpa_math"] == "sdpa:math"  # the math path shows no fused aten op
    assert names["sdpa_flash"] == "sdpa:flash_cpu"  # ... the forced flash path does: the detector is not constant
    assert names["sdpa"] in ("sdpa:flash_cpu", "sdpa:math")
    assert names["flex"] == "flex:eager"
    assert names["linear"] == "linear:chunked"
    assert A.backend_of("linear", q, k, v, causal=False) == "linear:parallel"
    sw = A.backend_of("sliding_window", q, k, v, causal=True, window=3)
    assert sw.startswith("sliding_window:sdpa:"), sw
    with pytest.raises(UnavailableError):
        A.backend_of("linear", q, k, v, causal=True, window=3)


def test_lower_right_causal_bias_builds_under_a_dispatch_mode(request):
    """backend_of runs SDPA under a TorchDispatchMode; torch's CausalBias (a Tensor subclass) cannot be constructed
    inside one ("Creating a new Tensor subclass CausalBias but the raw Tensor object is already associated ..."), which
    broke sdpa_flash/sdpa_efficient with Tq < Tk causal on CUDA. The CPU run below goes through the same recorder."""
    case = CASE_BY_NAME["causal-kvcache-gqa"]
    q, k, v, _ = make_inputs(case, _gen(request))
    ke, ve = A_contract.expand_kv_heads(k, v, H)
    outs = []
    ops = A_sdpa._record_aten_ops(lambda: outs.append(F.scaled_dot_product_attention(
        q, ke, ve, attn_mask=A_sdpa._causal_lower_right(case.tq, case.tk))))
    assert ops  # the recorder saw the attention call itself
    assert_close(outs[0], call("naive", q, k, v, case, None), "CausalBias lower-right vs naive")
    with pytest.raises(AssertionError):  # and the bias really is bottom-right (top-left would differ)
        assert_close(outs[0], F.scaled_dot_product_attention(q, ke, ve, is_causal=True), "top-left")


# (key, dev, H, Hkv, Tq, Tk, causal, has_bias, window) -> (route, expand_kv)
ROUTES = [
    (("sdpa_efficient", "cuda", 4, 2, 64, 192, False, False, None), ("plain", True)),  # efficient takes no GQA
    (("sdpa_efficient", "cuda", 4, 2, 128, 128, True, True, None), ("mask", True)),
    (("sdpa_efficient", "cuda", 4, 4, 5, 17, True, False, None), ("lower_right", False)),
    (("sdpa_efficient", "cuda", 4, 1, 1, 17, True, False, None), ("plain", True)),  # one query: no mask at all
    (("sdpa", "cpu", 4, 4, 1, 17, True, False, None), ("plain", False)),  # a decode step: no mask, any kernel
    (("sdpa", "cpu", 4, 4, 1, 17, True, False, 8), ("mask", False)),  # ... unless a window hides keys
    (("sdpa_flash", "cuda", 4, 2, 5, 17, True, False, None), ("lower_right", True)),
    (("sdpa_flash", "cuda", 4, 2, 5, 17, False, False, None), ("plain", False)),  # enable_gqa
    (("sdpa_flash", "cpu", 4, 2, 5, 17, True, False, None), ("mask", False)),
    (("sdpa_cudnn", "cuda", 4, 2, 5, 17, True, False, None), ("mask", False)),
    (("sdpa", "cuda", 4, 2, 5, 17, True, False, 3), ("mask", False)),
    (("sdpa_math", "cuda", 4, 2, 12, 12, True, False, None), ("plain", False)),
]


@pytest.mark.parametrize("args,expected", ROUTES)
def test_sdpa_route_expands_kv_only_where_the_kernel_path_has_no_gqa(args, expected):
    assert A_sdpa._sdpa_route(*args) == expected


def test_flex_dense_bias_tile_dtype_and_kernel_options(request):
    """The dense bias is captured in the input dtype for half inputs (float32 otherwise) and, on CUDA, compiled with
    2 pipeline stages; ALiBi (slopes only) keeps the default kernel options."""
    _, _, _, dense = make_inputs(CASE_BY_NAME["dense-causal-gqa"], _gen(request))
    _, _, _, alibi = make_inputs(CASE_BY_NAME["alibi-causal"], _gen(request, "a"))

    def captured(mod):
        return [c.cell_contents for c in mod.__closure__ if isinstance(c.cell_contents, torch.Tensor)]

    for dtype, want in ((torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16),
                        (torch.float32, torch.float32), (F64, F64)):
        (t,) = captured(A_flex._flex_score_mod(dense, 12, 12, torch.device("cpu"), dtype))
        assert t.dtype == want and t.is_contiguous() and t.shape == (H, 12, 12)
    (sl,) = captured(A_flex._flex_score_mod(alibi, 12, 12, torch.device("cpu"), torch.bfloat16))
    assert sl.dtype == torch.float32
    assert A_flex._flex_kernel_options("cuda", dense) == {"num_stages": 2}
    assert A_flex._flex_kernel_options("cuda", alibi) is None and A_flex._flex_kernel_options("cuda", None) is None
    assert A_flex._flex_kernel_options("cpu", dense) is None


def test_compiled_kernel_never_falls_back_to_eager(monkeypatch):
    """Past the recompile limit dynamo would silently run flex eagerly (what happened to fp16 flex on the first H100
    run); under _run_compiled the limit is raised and hitting it is an UnavailableError."""
    calls = []

    def toy(x):
        calls.append(1)  # runs only while dynamo traces, never when a compiled graph executes
        return x.sin() + 1

    fn = torch.compile(toy, dynamic=False, fullgraph=True, backend="eager")
    monkeypatch.setattr(A_flex, "FLEX_RECOMPILE_LIMIT", 3)
    before = torch._dynamo.config.recompile_limit
    with torch._dynamo.config.patch(recompile_limit=2):
        for n in (1, 2, 3):
            assert_close(A_flex._run_compiled("flex", fn, torch.ones(n, dtype=F64)),
                         torch.ones(n, dtype=F64).sin() + 1, f"compiled toy n={n}")
        assert len(calls) == 3  # three compilations: the guard lifted the limit from 2 to 3
        with pytest.raises(UnavailableError, match="flex: torch.compile cache full .*uncompiled"):
            A_flex._run_compiled("flex", fn, torch.ones(4, dtype=F64))
        assert torch._dynamo.config.recompile_limit == 2 and not torch._dynamo.config.fail_on_recompile_limit_hit
    assert torch._dynamo.config.recompile_limit == before


def test_compiled_kernel_shared_memory_overflow_is_a_clear_refusal():
    text = ("RuntimeError: No valid triton configs. OutOfMemoryError: out of resource: triton_tem_fused_flex_attention_4 "
            "Required: 245760 Hardware limit:232448 Reducing block sizes or `num_stages` may help.")

    def oor():
        raise RuntimeError(text)

    with pytest.raises(UnavailableError, match=r"flex: .*shared memory \(out of resource: .*Required: 245760") as info:
        A_flex._run_compiled("flex", oor)
    assert "\n" not in str(info.value)

    def other():
        raise RuntimeError("some other inductor failure")

    with pytest.raises(RuntimeError, match="some other inductor failure"):
        A_flex._run_compiled("flex", other)


def test_bias_dense_is_used_for_non_native_kernels(request):
    """sdpa adds bias.dense; flex uses the ALiBi slopes natively (never calls dense)."""
    case = CASE_BY_NAME["alibi-causal"]
    q, k, v, bias = make_inputs(case, _gen(request))
    call("sdpa", q, k, v, case, bias)
    assert bias.calls == 1
    call("flex", q, k, v, case, bias)
    assert bias.calls == 1


# ---------------------------------------------------------------------------------------------------------------
# GPU: bf16 / fp16 vs a float64 reference, forward and backward. One line per comparison (`[gpu] ...`, run with -s
# to read them) and, at the end of the session, a summary table: printed (capture bypassed), and also written to
# the file named by $ABLATE_GPU_REPORT when set. Every (key, dtype, case) that runs records exactly one status.

GPU_CASES = [
    Case("causal", True, 128, 128, 4),
    Case("bidir-kvcache-gqa", False, 64, 192, 2),
    Case("causal-kvcache-gqa", True, 64, 192, 2),
    Case("decode-mqa", True, 1, 192, 1),
    Case("alibi-causal", True, 128, 128, 4, "alibi"),
    Case("dense-bidir-gqa", False, 128, 128, 2, "dense"),
    Case("window-gqa", True, 128, 128, 2, window=32),
    Case("window-kvcache-alibi", True, 64, 192, 2, "alibi", window=48),
]
GPU_TOL = 2e-2
_DT_SHORT = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def _fmt_err(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def format_gpu_report(rows: list[dict[str, Any]], header: str = "") -> str:
    """Compact summary of the GPU comparisons: one line per (key, backend, dtype) with the worst forward and worst
    gradient error over its cases, then what was refused / unavailable / failed (every recorded row is counted)."""
    lines = [f"[gpu summary] {header}".rstrip()]
    compared = [r for r in rows if r["status"] in ("ok", "FAIL")]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in compared:
        groups.setdefault((r["key"], r["backend"], r["dtype"]), []).append(r)
    lines.append(f"{'key':15s} {'backend':34s} {'dtype':5s} {'n':>2s} {'worst fwd (case)':29s} worst grad (which, case)")
    for (key, backend, dtype), rs in groups.items():
        wf = max(rs, key=lambda r: r["fwd"] if r["fwd"] is not None else -1.0)
        grads = [(e, n, r["case"]) for r in rs for n, e in (r["grads"] or {}).items()]
        wg = max(grads) if grads else None
        fails = sum(r["status"] == "FAIL" for r in rs)
        lines.append(f"{key:15s} {backend:34s} {dtype:5s} {len(rs):2d} {_fmt_err(wf['fwd'])} {wf['case']:20s} "
                     + (f"{_fmt_err(wg[0])} {wg[1]} {wg[2]}" if wg else "-")
                     + (f"  [{fails} over tol]" if fails else ""))
    other: dict[tuple[str, str, str, str], list[str]] = {}
    for r in rows:
        if r["status"] not in ("ok", "FAIL"):
            other.setdefault((r["status"], r["key"], r["dtype"], r["note"]), []).append(r["case"])
    for (status, key, dtype, note), cases in other.items():
        lines.append(f"{status}: {key} {dtype} [{', '.join(cases)}]: {note}")
    counts = {st: sum(r["status"] == st for r in rows) for st in ("ok", "FAIL", "refused", "unavailable", "error")}
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {st}" for st, n in counts.items()))
    return "\n".join(lines)


def test_format_gpu_report_counts_every_row():
    rows = [dict(key="sdpa", backend="sdpa:cudnn", dtype="bf16", case="causal", status="ok", fwd=3e-3,
                 grads={"dq": 4e-3, "dk": 5e-3, "dv": 1e-3}, note=""),
            dict(key="sdpa", backend="sdpa:cudnn", dtype="bf16", case="decode-mqa", status="FAIL", fwd=3e-2,
                 grads={"dq": 1e-3, "dk": 2e-3, "dv": 1e-3}, note=""),
            dict(key="flex", backend="", dtype="fp16", case="window-gqa", status="refused", fwd=None, grads=None,
                 note="flex does not support x"),
            dict(key="xformers", backend="", dtype="fp16", case="causal", status="unavailable", fwd=None, grads=None,
                 note="not installed"),
            dict(key="flex", backend="", dtype="bf16", case="dense-bidir-gqa", status="error", fwd=None, grads=None,
                 note="InductorError: boom")]
    text = format_gpu_report(rows, "torch x")
    assert "3.00e-02 decode-mqa" in text and "5.00e-03 dk causal" in text and "[1 over tol]" in text
    assert "refused: flex fp16 [window-gqa]: flex does not support x" in text
    assert "error: flex bf16 [dense-bidir-gqa]: InductorError: boom" in text
    assert text.splitlines()[-1] == "5 runs: 1 ok, 1 FAIL, 1 refused, 1 unavailable, 1 error"


@pytest.fixture(scope="session")
def gpu_report(request):
    rows: list[dict[str, Any]] = []
    yield rows
    if not rows:
        return
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no cuda"
    text = format_gpu_report(rows, f"torch {torch.__version__}, {dev}, ABLATE_TEST_SEED={SEED}")
    path = os.environ.get("ABLATE_GPU_REPORT")
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None and hasattr(capman, "global_and_fixture_disabled"):
        with capman.global_and_fixture_disabled():
            print("\n" + text + (f"\n(written to {path})" if path else ""), flush=True)
    else:
        print("\n" + text)


# a forced SDPA key must report its own kernel (never another one)
_FORCED_KERNEL = {"sdpa_flash": "sdpa:flash", "sdpa_efficient": "sdpa:efficient", "sdpa_cudnn": "sdpa:cudnn",
                  "sdpa_math": "sdpa:math"}


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=[c.name for c in GPU_CASES])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("key", list(A.KEYS))
def test_gpu_low_precision_vs_float64(key, dtype, case, request, gpu_report):
    rec: dict[str, Any] = dict(key=key, dtype=_DT_SHORT[dtype], case=case.name, status="running", backend="",
                               fwd=None, grads=None, note="")
    gpu_report.append(rec)
    try:
        _gpu_compare(key, dtype, case, request, rec)
    except BaseException as exc:
        if rec["status"] == "running":
            rec["status"], rec["note"] = "error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        raise


def _gpu_compare(key: str, dtype: torch.dtype, case: Case, request, rec: dict[str, Any]) -> None:
    ok, reason = ATTENTION[key].available("cuda")
    if not ok:
        rec["status"], rec["note"] = "unavailable", reason
        pytest.skip(f"{key} unavailable on cuda: {reason}")
    dev = torch.device("cuda")
    q, k, v, bias = make_inputs(case, _gen(request), d=64)
    q, k, v = q.to(dev), k.to(dev), v.to(dev)
    gout = torch.randn(B, H, case.tq, 64, generator=_gen(request, "g"), dtype=F64).to(dev)
    lp = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    expected = _expect_supported(key, case, "cuda") and A.supports(key, dtype, "cuda")
    # inputs require grad: training needs a backward pass, and one into a learned (T5-style) bias for a dense bias
    expected = expected and A.supports(key, "backward", "cuda")
    if case.bias == "dense":
        expected = expected and A.supports(key, "bias_grad", "cuda")
    try:
        A.check_call(key, *lp, case.causal, bias, case.window)
    except (UnavailableError, ConfigError) as exc:
        assert not expected, f"{key} claims support for [{case.name}] in {dtype} but refuses: {exc}"
        rec["status"], rec["note"] = "refused", str(exc)
        pytest.skip(f"{key} refuses [{case.name}] in {dtype}: {exc}")
    assert expected, f"{key} accepted [{case.name}] in {dtype} although its supports say no"
    backend = rec["backend"] = A.backend_of(key, *lp, causal=case.causal, bias=bias, window=case.window)
    if key in _FORCED_KERNEL:
        assert backend.split("+")[0] == _FORCED_KERNEL[key], f"{key} ran {backend}"
    if key == "sdpa_efficient" and case.hkv != H:
        assert backend.endswith("+expand_kv"), backend
    if key == "flex":
        assert backend == "flex:compiled", backend
    # float64 reference: naive for softmax kernels, the O(n^2) form for linear attention (spec(key).reference)
    ref_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = A.spec(key).reference(*ref_leaves, causal=case.causal, bias=bias, window=case.window, scale=case.scale)
    (ref * gout).sum().backward()
    out = call(key, *lp, case, bias)
    assert out.dtype == dtype and out.shape == ref.shape
    fwd = rec["fwd"] = rel_err(out, ref)
    (out * gout.to(dtype)).sum().backward()
    errs = rec["grads"] = {f"d{n}": rel_err(t.grad, r.grad) for n, t, r in zip("qkv", lp, ref_leaves)}
    ok = fwd < GPU_TOL and all(e < GPU_TOL for e in errs.values())
    rec["status"] = "ok" if ok else "FAIL"
    # leading newline: with -s the line would otherwise be glued to pytest's progress characters (".FFssss[gpu] ...")
    print(f"\n[gpu] {key:15s} {backend:34s} {str(dtype):15s} {case.name:24s} fwd {fwd:.2e} "
          + " ".join(f"{n} {e:.2e}" for n, e in errs.items()))
    assert fwd < GPU_TOL, f"{key} ({backend}) {dtype} [{case.name}] forward rel err {fwd:.3e} {SEED_NOTE}"
    for n, e in errs.items():
        assert e < GPU_TOL, f"{key} ({backend}) {dtype} [{case.name}] {n} rel err {e:.3e} {SEED_NOTE}"


@pytest.mark.gpu
def test_gpu_availability_report():
    for key in A.KEYS:
        ok, reason = ATTENTION[key].available("cuda")
        print(f"[gpu] {key:15s} available={ok} {reason}")
        if key in ("naive", "sdpa", "sdpa_math", "linear", "sliding_window"):
            assert ok, f"{key} must run on any CUDA device: {reason}"


@pytest.mark.parametrize("hkv", [1, 2])
def test_one_query_over_shared_kv_heads_folds_the_heads_into_query_rows(hkv, monkeypatch):
    """A GQA/MQA decode step (one query per head) runs as the group's query rows over its one KV head (each KV head
    read once), with the outputs of naive attention over the expanded heads."""
    import torch.nn.functional as F

    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append((tuple(q.shape), tuple(k.shape))) or real(q, k, v, **kw))
    q, k, v = torch.randn(2, 4, 1, 8, dtype=torch.float64), *torch.randn(2, 2, hkv, 17, 8, dtype=torch.float64)
    got = A_sdpa.sdpa_impl("sdpa", q, k, v, True, None, None, None)
    assert seen == [((2, hkv, 4 // hkv, 8), (2, hkv, 17, 8))]
    ke, ve = k.repeat_interleave(4 // hkv, 1), v.repeat_interleave(4 // hkv, 1)
    want = torch.softmax(q @ ke.transpose(-1, -2) / 8 ** 0.5, -1) @ ve
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

