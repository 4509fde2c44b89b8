"""Static KV cache and decode steps: every mode decodes what the full forward pass computes."""

from __future__ import annotations

import pytest
import torch

from ablate.core.config import ModelConfig
from ablate.core.decode import MODES, DecodeStep
from ablate.errors import ConfigError, UnavailableError
from ablate.core.flops import cache_bytes, decode_step_bytes, peak_bandwidth
from ablate.core.model import KVCache, StaticKVCache, Transformer

POSITIONS = ["rope", "alibi", "rope_dynamic_ntk", "learned", "t5_bias", "sinusoidal", "none"]


def _model(position: str = "rope", n_kv_heads: int | None = None, device: str = "cpu", **kw) -> Transformer:
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, ()).item()))  # fresh weights every run
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, train_len=16, max_len=64,
                      position=position, vocab_size=61, **kw)
    return Transformer(cfg).to(device).eval()


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
def test_static_cache_decodes_what_the_full_forward_computes(position, n_kv_heads):
    model = _model(position, n_kv_heads).double()
    idx = torch.randint(0, 61, (2, 23))
    with torch.no_grad():
        full = model(idx)
        static = model.new_cache(static_len=40, batch=2)
        growing = model.new_cache()
        assert isinstance(static, StaticKVCache) and type(growing) is KVCache
        outs_s = [model(idx[:, :15], static)]
        outs_g = [model(idx[:, :15], growing)]
        for t in range(15, 23):
            outs_s.append(model(idx[:, t:t + 1], static))
            outs_g.append(model(idx[:, t:t + 1], growing))
    got_s, got_g = torch.cat(outs_s, dim=1), torch.cat(outs_g, dim=1)
    assert torch.equal(got_s, got_g)
    if model.pos.needs_raw_cache:
        # dynamic NTK: a prompt token's hidden states depend on the length when it was computed, so incremental
        # decoding differs from one full window past layer 1 (as in transformers); the caches agree with each other
        assert not torch.allclose(got_s[:, -1], full[:, -1], atol=1e-10, rtol=1e-9)
    else:
        assert torch.allclose(got_s, full, atol=1e-10, rtol=1e-9), (got_s - full).abs().max()
    assert static.length == 23 and static.nbytes() == growing.nbytes()
    assert static.nbytes() == cache_bytes(model.cfg, 23, 8, batch=2) == 2 * 2 * (n_kv_heads or 4) * 8 * 23 * 8 * 2


def test_static_cache_refuses_to_overflow_and_never_reallocates():
    model = _model()
    cache = model.new_cache(static_len=8, batch=1)
    ptrs = [b.data_ptr() for b in cache.k + cache.v]
    with torch.no_grad():
        model(torch.randint(0, 61, (1, 8)), cache)
        assert [b.data_ptr() for b in cache.k + cache.v] == ptrs
        with pytest.raises(ConfigError, match="static KV cache full: 8 \\+ 1 tokens > max_len=8"):
            model(torch.randint(0, 61, (1, 1)), cache)


def _reference_logits(model, prompt, token):
    with torch.no_grad():
        return model(torch.cat([prompt, token], dim=1))[:, -1:]


@pytest.mark.parametrize("position", ["rope", "alibi", "t5_bias"])
def test_eager_step_is_the_same_step_every_call(position):
    model = _model(position).double()
    prompt, token = torch.randint(0, 61, (2, 20)), torch.randint(0, 61, (2, 1))
    cache = model.new_cache(static_len=32, batch=2)
    with torch.no_grad():
        model(prompt, cache)
    step = DecodeStep(model, cache, token, context=20, mode="eager")
    want = _reference_logits(model, prompt, token)
    for _ in range(3):  # each call resets to the context: identical work, identical logits
        assert torch.allclose(step(), want, atol=1e-10, rtol=1e-9)
    assert step.backend == "eager"


def test_compiled_step_matches_eager():
    pytest.importorskip("torch._inductor")
    model = _model("rope")
    prompt, token = torch.randint(0, 61, (1, 12)), torch.randint(0, 61, (1, 1))
    cache = model.new_cache(static_len=16, batch=1)
    with torch.no_grad():
        model(prompt, cache)
    want = _reference_logits(model, prompt, token)
    step = DecodeStep(model, cache, token, context=12, mode="compile")
    try:
        got = step()
    except Exception as exc:  # no C++ toolchain for inductor here: not this test's subject
        pytest.skip(f"torch.compile cannot build on this machine: {type(exc).__name__}: {str(exc)[:200]}")
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert torch.allclose(step(), want, atol=1e-4, rtol=1e-4)
    assert step.backend == "compiled:default"


def test_bad_decode_requests_are_one_line_errors():
    model = _model()
    cache = model.new_cache(static_len=8, batch=1)
    tok = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ConfigError, match="unknown decode mode 'fast'; valid: eager, graph, compile"):
        DecodeStep(model, cache, tok, 4, mode="fast")
    with pytest.raises(ConfigError, match="does not fit"):
        DecodeStep(model, cache, tok, 8)
    with pytest.raises(ConfigError, match="needs a StaticKVCache"):
        DecodeStep(model, model.new_cache(), tok, 4)
    if not torch.cuda.is_available():
        with pytest.raises(UnavailableError, match="needs CUDA"):
            DecodeStep(model, cache, tok, 4, mode="graph")
    assert MODES == ("eager", "graph", "compile")


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["graph", "compile"])
def test_graphed_and_compiled_steps_match_eager_on_cuda(mode):
    model = _model("rope", n_kv_heads=2, device="cuda").to(torch.bfloat16)
    prompt = torch.randint(0, 61, (2, 40), device="cuda")
    token = torch.randint(0, 61, (2, 1), device="cuda")
    cache = model.new_cache(static_len=48, batch=2)
    with torch.no_grad():
        model(prompt, cache)
    want = DecodeStep(model, cache, token, 40, mode="eager")().float().clone()
    step = DecodeStep(model, cache, token, 40, mode=mode)
    for _ in range(3):
        got = step().float()
        assert torch.allclose(got, want, atol=3e-2, rtol=3e-2), (got - want).abs().max()


def test_decode_bytes_and_bandwidth_peaks(monkeypatch):
    mcfg = ModelConfig(d_model=1024, n_layers=8, n_heads=16)  # head_dim 64
    kv = cache_bytes(mcfg, 32768, 2, batch=1)
    assert kv == 2 * 8 * 16 * 64 * 32768 * 2
    assert decode_step_bytes(10**9, kv, mcfg, el_bytes=2, batch=1) == 10**9 + kv + 2 * 8 * 16 * 64 * 2
    monkeypatch.delenv("ABLATE_PEAK_GBPS", raising=False)
    assert peak_bandwidth("NVIDIA H100 80GB HBM3").tflops == 3350.0
    assert peak_bandwidth("NVIDIA H200").tflops == 4800.0
    assert peak_bandwidth("NVIDIA H100 PCIe").tflops == 2000.0
    assert peak_bandwidth("Some GPU").tflops is None
    monkeypatch.setenv("ABLATE_PEAK_GBPS", "1234")
    assert peak_bandwidth("NVIDIA H100 80GB HBM3").tflops == 1234.0


def test_latency_decode_part_rows_per_mode(tmp_path):
    """The latency suite's decode part: one row per layout x context x mode; eager rows keep their old keys (no
    decode_mode), a mode that cannot run here is a status row with the reason, and the table shows the mode."""
    from ablate.store.results import read_rows
    from ablate.plan.runner import RunOptions, run_suite
    from ablate.suites import latency as L

    path = run_suite(RunOptions(suite="latency", preset="micro", device="cpu", progress=False, out=tmp_path,
                                overrides=("parts=decode", "decode.modes=eager,graph", "decode.layouts=mha,mqa")))
    rows = read_rows(path)
    assert len(rows) == 2 * 2 * 2  # layouts x contexts (16, 32) x modes
    eager = [r for r in rows if "decode_mode" not in r]
    graph = [r for r in rows if r.get("decode_mode") == "graph"]
    assert len(eager) == len(graph) == 4
    for r in eager:
        assert r["status"] == "ok" and r["decode_backend"] == "eager" and r["time_ms"] > 0
        assert r["bytes_per_step"] == r["param_bytes"] + r["kv_bytes"] + 2 * r["n_layers"] * r["n_kv_heads"] * \
            (r["d_model"] // r["n_heads"]) * 4 * r["batch"]
        assert r["achieved_gbps"] == pytest.approx(r["bytes_per_step"] / (r["time_ms"] / 1e3) / 1e9)
        assert r["bw_util"] is None and r["kv_match"] is True
    for r in graph:
        assert r["status"] == "unsupported" and "needs CUDA" in r["reason"]  # terminal on this device
    from ablate.store.results import to_frame

    table = L.decode_table(to_frame(path))
    assert list(table["mode"]) == ["eager"] * 4 and "GB/s" in table.columns
    again = run_suite(RunOptions(suite="latency", preset="micro", device="cpu", progress=False, out=tmp_path,
                                 overrides=("parts=decode", "decode.modes=eager,graph", "decode.layouts=mha,mqa")))
    assert len(read_rows(again)) == 8  # resumed: every point is done (status rows included)


@pytest.mark.gpu
def test_latency_decode_graph_rows_on_cuda(tmp_path):
    from ablate.store.results import read_rows
    from ablate.plan.runner import RunOptions, run_suite

    path = run_suite(RunOptions(suite="latency", preset="micro", device="cuda", progress=False, out=tmp_path,
                                overrides=("parts=decode", "decode.modes=eager,graph")))
    rows = read_rows(path)
    assert {r["status"] for r in rows} == {"ok"}, [r.get("reason") for r in rows]
    graph = [r for r in rows if r.get("decode_mode") == "graph"]
    assert graph and all(r["decode_backend"] == "cuda_graph" and r["bw_util"] is not None for r in graph)


def _cpu_attention_keys() -> list[str]:
    from ablate.registry.keys import ATTENTION, load_all

    load_all()
    keys = ATTENTION.available_keys("cpu")
    assert {"sdpa", "mla", "based", "sink_token", "sliding_window"} <= set(keys)
    return keys


@pytest.mark.parametrize("attention", _cpu_attention_keys())
def test_a_context_fed_in_chunks_through_the_cache_equals_the_full_forward(attention):
    """What the latency suite's decode does to fill a long context (suites/latency/decode.py, PREFILL_CHUNK)."""
    from ablate.core.evaluate import incremental_logits

    window = 6 if attention == "sliding_window" else None
    model = _model(attention=attention, window=window).double()
    idx = torch.randint(0, 61, (2, 21))
    with torch.no_grad():
        full = model(idx)
        chunked = incremental_logits(model, idx, prefill=5, chunk=4)
    torch.testing.assert_close(chunked, full, rtol=1e-9, atol=1e-9)
