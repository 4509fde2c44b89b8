"""ablate.core.timing and ablate.core.flops: timing statistics, FLOP conventions against hand counts, peaks, KV-cache bytes."""

from __future__ import annotations

import itertools

import pytest
import torch

from ablate.core import flops as F
from ablate.core import timing as T


# ---------------------------------------------------------------------------------------------------------------
# FLOPs


def brute_pairs(tq: int, tk: int, causal: bool, window: int | None) -> int:
    """Attended (query, key) pairs counted from the explicit mask (queries are the last tq of tk positions)."""
    p = torch.arange(tk - tq, tk)[:, None]
    j = torch.arange(tk)[None, :]
    m = torch.ones(tq, tk, dtype=torch.bool)
    if causal:
        m &= j <= p
    if window is not None:
        m &= j > p - window
    return int(m.sum())


def test_attended_pairs_match_brute_force_masks():
    for tq, tk in itertools.product(range(0, 11), range(0, 11)):
        if tq > tk:
            continue
        assert F.attended_pairs(tq, tk, False) == brute_pairs(tq, tk, False, None) == tq * tk
        for w in (None, 1, 2, 3, 5, 10, 64):
            assert F.attended_pairs(tq, tk, True, w) == brute_pairs(tq, tk, True, w), (tq, tk, w)
    assert F.attended_pairs(4096, 4096, True, 1024) == brute_pairs(4096, 4096, True, 1024)


def test_attended_pairs_rejects_bad_requests():
    with pytest.raises(ValueError):
        F.attended_pairs(5, 4, True)
    with pytest.raises(ValueError):
        F.attended_pairs(4, 4, False, window=2)
    with pytest.raises(ValueError):
        F.attended_pairs(4, 4, True, window=0)


def test_flashattention_convention_hand_counts():
    # b=2, h=3, n=8, d=16: forward = 4 * b * h * n^2 * d
    fwd = 4 * 2 * 3 * 8 * 8 * 16
    assert F.attention_flops(2, 3, 8, 8, 16, causal=False) == fwd
    assert F.attention_flops(2, 3, 8, 8, 16, causal=True) == fwd / 2  # halved, the papers' convention
    assert F.attention_flops(2, 3, 8, 8, 16, causal=False, mode="bwd") == 2.5 * fwd
    assert F.attention_flops(2, 3, 8, 8, 16, causal=True, mode="fwd_bwd") == 3.5 * fwd / 2
    # exact count on request: n(n+1)/2 pairs
    assert F.attention_fwd_flops(1, 1, 8, 8, 16, causal=True, convention="exact") == 4 * 16 * 36
    # a window counts only its band: W=3 on n=8 -> 1+2+3*6 = 21 pairs
    assert F.attention_fwd_flops(1, 1, 8, 8, 16, causal=True, window=3) == 4 * 16 * 21
    # decoding one token against 100 keys: 100 pairs, not 100/2
    assert F.attention_fwd_flops(1, 1, 1, 100, 64, causal=True) == 4 * 64 * 100
    # the FA3 paper's shape: 16k tokens, hidden 2048, hd 128, n = 16k -> b=1, h=16
    assert F.attention_fwd_flops(1, 16, 16384, 16384, 128, causal=False) == pytest.approx(2.199e12, rel=1e-3)
    with pytest.raises(ValueError):
        F.attention_flops(1, 1, 4, 4, 4, causal=False, mode="sideways")


def test_tflops_and_mfu():
    assert F.tflops(2e12, 1000.0) == pytest.approx(2.0)
    assert F.tflops(1e12, None) is None
    peak = F.Peak(1000.0, "test")
    assert F.mfu(5e11, 1.0, peak) == pytest.approx(0.5)
    assert F.mfu(5e11, 1.0, F.Peak(None, "none")) is None


def test_model_train_flops_hand_count():
    # 6 N tokens + 3 * layers * forward attention (FA convention, causal halves it)
    n_params, b, t, layers, h, d = 1000, 2, 8, 3, 4, 16
    attn = 4 * b * h * t * t * d / 2
    assert F.model_train_flops(n_params, b, t, n_layers=layers, n_heads=h, head_dim=d) == 6 * n_params * b * t + \
        3 * layers * attn


@pytest.mark.parametrize("b,h,hkv,tq,tk,d,dv,causal,chunk", [
    (2, 4, 4, 100, 100, 8, 8, False, 16), (2, 4, 2, 100, 100, 8, 8, True, 16),  # uneven last chunk, GQA
    (1, 4, 1, 37, 50, 8, 6, True, 8),  # MQA, queries the last 37 of 50 keys, dv != d
    (1, 2, 2, 64, 64, 16, 16, True, 64), (1, 2, 2, 30, 50, 4, 4, False, 8), (1, 2, 2, 5, 5, 4, 4, True, 64)])
def test_linear_attention_flops_match_the_products_that_run(b, h, hkv, tq, tk, d, dv, causal, chunk):
    """The product part of the linear count equals torch's FLOP counter on the real implementation, forward and
    backward (so fwd_bwd too); the element-wise part is small and positive."""
    from torch.utils.flop_counter import FlopCounterMode

    from ablate.variants.attention import linear_attention

    q = torch.randn(b, h, tq, d, requires_grad=True)
    k = torch.randn(b, hkv, tk, d, requires_grad=True)
    v = torch.randn(b, hkv, tk, dv, requires_grad=True)
    with FlopCounterMode(display=False) as fwd_count:
        out = linear_attention(q, k, v, causal=causal, chunk_size=chunk)
    with FlopCounterMode(display=False) as bwd_count:
        out.backward(torch.randn_like(out))
    parts = {m: F.linear_attention_flops_parts(b, h, hkv, tq, tk, d, dv, causal=causal, chunk=chunk, mode=m)
             for m in ("fwd", "bwd", "fwd_bwd")}
    assert parts["fwd"][0] == fwd_count.get_total_flops()
    assert parts["bwd"][0] == bwd_count.get_total_flops()
    assert parts["fwd_bwd"][0] == fwd_count.get_total_flops() + bwd_count.get_total_flops()
    for m, (mm, ew) in parts.items():
        assert 0 < ew < 0.5 * mm
        assert F.linear_attention_flops(b, h, hkv, tq, tk, d, dv, causal=causal, chunk=chunk, mode=m) == mm + ew


def test_linear_attention_flops_hand_count_and_scale():
    # non-causal, b=1, h=1, n=4, d=dv=2: φKᵀV 2·4·2·2, φQ·kv 2·4·2·2, φQ·z 2·4·2; φ(q), φ(k) 2·8 each;
    # z 4·2 adds, division 4·2
    assert F.linear_attention_flops(1, 1, 1, 4, 4, 2, causal=False, chunk=64) == (32 + 32 + 16) + (16 + 16 + 8 + 8)
    # the H100 main grid, n = 16k, hd 128: linear is O(n·d²), far below softmax's O(n²·d) -- never reported as if
    # it were the softmax count (that gave 1834 "TFLOP/s")
    lin = F.linear_attention_flops(1, 16, 16, 16384, 16384, 128, causal=False, chunk=64)
    soft = F.attention_flops(1, 16, 16384, 16384, 128, causal=False)
    assert lin == pytest.approx(1.745e10, rel=1e-3) and soft / lin > 100
    with pytest.raises(ValueError):
        F.linear_attention_flops(1, 1, 1, 4, 4, 2, causal=True, chunk=0)
    with pytest.raises(ValueError):
        F.linear_attention_flops(1, 1, 1, 4, 4, 2, causal=True, chunk=4, mode="sideways")


def test_model_train_flops_attention_override():
    base = F.model_train_flops(1000, 2, 8, n_layers=3, n_heads=4, head_dim=16)
    assert F.model_train_flops(1000, 2, 8, n_layers=3, n_heads=4, head_dim=16, attention_fwd=10.0) == \
        6 * 1000 * 2 * 8 + 3 * 3 * 10.0 < base


def test_matmul_params_counts_linears_and_tied_head():
    from ablate.core.config import ModelConfig
    from ablate.core.model import Transformer

    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, activation="gelu", position="rope")
    model = Transformer(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert F.matmul_params(model) == linear + 64 * 32
    # by hand: per layer q (32x32), kv (32x64), out (32x32), FFN 2 x (32x128)
    assert linear == 2 * (32 * 32 + 32 * 64 + 32 * 32 + 2 * 32 * 128)


@pytest.mark.parametrize("name,value", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.4),
                                        ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0)])
def test_peak_table(name, value, monkeypatch):
    monkeypatch.delenv("ABLATE_PEAK_TFLOPS", raising=False)
    p = F.peak_tflops(name)
    assert p.tflops == value and "bf16 dense" in p.source


def test_peak_unknown_and_override(monkeypatch):
    monkeypatch.delenv("ABLATE_PEAK_TFLOPS", raising=False)
    p = F.peak_tflops("Some Future GPU")
    assert p.tflops is None and "ABLATE_PEAK_TFLOPS" in p.source
    monkeypatch.setenv("ABLATE_PEAK_TFLOPS", "123.5")
    assert F.peak_tflops("NVIDIA H100 80GB HBM3") == F.Peak(123.5, "ABLATE_PEAK_TFLOPS=123.5")


@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
def test_kv_cache_closed_form_equals_measured_nbytes(n_kv_heads):
    from ablate.core.config import ModelConfig
    from ablate.core.model import Transformer

    cfg = ModelConfig(vocab_size=32, d_model=32, n_layers=3, n_heads=4, n_kv_heads=n_kv_heads, max_len=128)
    model = Transformer(cfg).eval()
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.randint(0, 32, (2, 37)), cache)
        model(torch.randint(0, 32, (2, 1)), cache)
    closed = F.cache_bytes(cfg, 38, 4, batch=2)
    assert cache.nbytes() == closed == 2 * 3 * cfg.kv_heads * 8 * 38 * 4 * 2


# ---------------------------------------------------------------------------------------------------------------
# Timing


def test_summarize_quantiles():
    t = T.summarize([float(x) for x in range(1, 11)], "test")
    assert t.median_ms == pytest.approx(5.5)
    assert t.p20_ms == pytest.approx(2.8) and t.p80_ms == pytest.approx(8.2)  # numpy's linear interpolation
    assert t.iqr_ms == pytest.approx(7.75 - 3.25)
    assert t.reps == 10 and t.method == "test"


def test_bench_cpu_statistics_and_grad_to_none():
    x = torch.randn(64, 64, requires_grad=True)
    seen = []

    def fn():
        seen.append(x.grad is None)
        (x * 2).sum().backward()

    t = T.bench(fn, "cpu", grad_to_none=[x], min_run_time=0.01)
    assert t.method == "torch.utils.benchmark"
    assert 0 < t.p20_ms <= t.p80_ms and t.median_ms > 0 and t.reps >= 1
    assert all(seen)  # gradients cleared before every call: nothing accumulates


def test_bench_calls_runs_before_untimed():
    state = {"n": 0, "before": 0}

    def before():
        state["before"] += 1

    def fn():
        state["n"] += 1

    t = T.bench_calls(fn, "cpu", n=7, before=before)
    assert state == {"n": 7, "before": 7} and t.reps == 7


def test_peak_memory_is_none_on_cpu_and_oom_detection():
    assert T.peak_memory(lambda: torch.ones(10), "cpu") is None
    assert T.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not T.is_oom(RuntimeError("shape mismatch"))
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None:
        assert T.is_oom(oom("boom"))


class _FakeTriton:
    """Stands in for ``triton.testing`` on a machine without triton: records how do_bench was called."""

    def __init__(self, supports_all: bool = True):
        self.calls: list[dict] = []
        self.supports_all = supports_all

    def do_bench(self, fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        self.calls.append(dict(warmup=warmup, rep=rep, grad_to_none=grad_to_none, quantiles=quantiles,
                               return_mode=return_mode))
        assert return_mode in (["min", "max", "mean", "median", "all"] if self.supports_all
                               else ["min", "max", "mean", "median"])
        return [1.0, 2.0, 3.0, 4.0]


def _fake_triton(monkeypatch, fake):
    import sys
    import types

    mod = types.ModuleType("triton")
    mod.testing = fake
    monkeypatch.setitem(sys.modules, "triton", mod)
    monkeypatch.setitem(sys.modules, "triton.testing", fake)


def test_bench_cuda_is_do_bench_with_its_defaults(monkeypatch):
    """The suite's CUDA figure is triton's do_bench with do_bench's own warm-up/rep (25/100 ms), once, all reps;
    a triton without return_mode="all" gets the same procedure written out (one run, not extra do_bench runs)."""
    fake = _FakeTriton()
    _fake_triton(monkeypatch, fake)
    x = torch.zeros(1, requires_grad=True)
    t = T.bench_cuda(lambda: None, grad_to_none=[x], use_triton=True)
    assert fake.calls == [dict(warmup=25, rep=100, grad_to_none=[x], quantiles=None, return_mode="all")]
    assert t.method == "triton.do_bench" and t.median_ms == 2.5 and t.reps == 4
    assert T.DO_BENCH_WARMUP_MS == 25 and T.DO_BENCH_REP_MS == 100
    old = _FakeTriton(supports_all=False)
    _fake_triton(monkeypatch, old)
    seen = {}

    def events(fn, *, warmup_ms, rep_ms, grad_to_none):
        seen.update(warmup_ms=warmup_ms, rep_ms=rep_ms)
        return [1.0, 1.0, 4.0]

    monkeypatch.setattr(T, "_event_times", events)
    t = T.bench_cuda(lambda: None, warmup_ms=25, rep_ms=100, use_triton=True)
    assert len(old.calls) == 1 and t.method == "cuda_events" and t.median_ms == 1.0
    assert seen == {"warmup_ms": 25, "rep_ms": 100}


def test_peak_memory_and_ms_on_cpu():
    mem, ms = T.peak_memory_and_ms(lambda: sum(range(10000)), "cpu")
    assert mem is None and ms > 0


def test_first_call_measures_seconds():
    assert 0 <= T.first_call(lambda: sum(range(1000)), "cpu") < 5


@pytest.mark.gpu
def test_cuda_timing_triton_and_events_agree():
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    fn = lambda: a @ a  # noqa: E731
    ev = T.bench_cuda(fn, use_triton=False)
    assert ev.method == "cuda_events" and ev.p20_ms <= ev.median_ms <= ev.p80_ms
    if T.triton_available():
        tr = T.bench_cuda(fn, use_triton=True)
        assert tr.method == "triton.do_bench"
        assert tr.median_ms == pytest.approx(ev.median_ms, rel=0.15)
    mem = T.peak_memory(fn, "cuda")
    assert mem is not None and mem >= 4096 * 4096 * 2
