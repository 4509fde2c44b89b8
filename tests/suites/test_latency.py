"""The latency suite on micro shapes (CPU, seconds): row schema, status rows, resume, checks, report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from ablate.errors import ConfigError, UnknownKeyError
from ablate.registry.keys import ATTENTION, load_all
from ablate.variants.attention import kernel_keys
from ablate.store.results import read_rows
from ablate.plan.runner import RunOptions, results_path, run_suite

load_all()
from ablate.suites import latency as L  # noqa: E402

# a small kernel sweep: 2 main shapes + MQA, ALiBi and window feature shapes
KERNEL_ONLY = ("parts=kernel", "kernels.seq_lens=32", "kernels.causal=false,true", "kernels.layouts=mqa",
               "kernels.min_run_time=0.001")


def micro_file(out: Path) -> Path:
    """The results file of a ``--preset micro --device cpu`` latency run into ``out`` (the one rule of every suite)."""
    return results_path(RunOptions(suite="latency", preset="micro", out=out, device="cpu"))


def run(tmp_path: Path, *overrides: str, resume: bool = True) -> list[dict]:
    path = run_suite(RunOptions(suite="latency", preset="micro", overrides=overrides, out=tmp_path, device="cpu",
                                progress=False, resume=resume))
    assert path == micro_file(tmp_path) == tmp_path / "latency" / "cpu-micro.jsonl"
    return read_rows(path)


MODEL_PARTS = ("parts=position,train,decode,prefill", "train.choices=base", "decode.prompt_lens=32",
               "positions.keys=none,rope,alibi,sinusoidal")


@pytest.fixture(scope="module")
def kernel_rows(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("lat")
    return out, run(out, *KERNEL_ONLY)


@pytest.fixture(scope="module")
def model_rows(kernel_rows) -> list[dict]:
    """The model-level parts, appended to the kernel rows' file (the report test reads both)."""
    out, rows = kernel_rows
    return run(out, *MODEL_PARTS)[len(rows):]


REQUIRED = ("schema_version", "suite", "status", "reason", "row_key", "key_fields", "run_id", "timestamp", "metric",
            "value", "unit", "part", "device", "device_name", "env.torch", "env.python")
KERNEL_KEYS = ("attention", "pass", "seq_len", "batch", "n_heads", "n_kv_heads", "head_dim", "causal", "dtype",
               "bias", "window")
KERNEL_OK = ("time_ms", "p20_ms", "p80_ms", "reps", "timing", "flops", "tflops", "peak_mem_bytes", "rel_err",
             "check_ref", "tol", "backend", "layout", "first_call_s")


def test_kernel_rows_schema(kernel_rows):
    _, rows = kernel_rows
    assert rows and all(r["suite"] == "latency" for r in rows)
    for r in rows:
        for c in REQUIRED:
            assert c in r, c
        assert r["status"] in ("ok", "unavailable", "unsupported", "oom", "error", "diverged")
        assert r["metric"] == "time_ms" and r["unit"] == "ms"
        assert r["part"] == "kernel"
        assert set(KERNEL_KEYS) <= set(r["key_fields"])
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok
    for r in ok:
        for c in KERNEL_OK:
            assert c in r, c
        assert r["value"] == r["time_ms"] > 0 and r["p20_ms"] <= r["p80_ms"]
        assert r["peak_mem_bytes"] is None and r["mem_note"] == "n/a on cpu"
        assert r["rel_err"] <= r["tol"]
        assert r["tflops"] == pytest.approx(r["flops"] / (r["time_ms"] * 1e-3) / 1e12)
        if r["pass"] != "fwd":
            assert r["grad_rel_err"] <= r["grad_tol"]
    # every CPU-capable key was measured on a main shape; sliding_window only where there is a window
    measured = {r["attention"] for r in ok}
    assert {"naive", "sdpa", "sdpa_math", "flex", "linear", "sliding_window"} <= measured
    assert all(r["window"] is not None for r in ok if r["attention"] == "sliding_window")
    assert {r["backend"] for r in ok if r["attention"] == "sdpa"} <= {"sdpa:flash_cpu", "sdpa:math"}
    # the window shape counts only its band
    w = next(r for r in ok if r["attention"] == "naive" and r["window"] and r["pass"] == "fwd")
    from ablate.core.flops import attention_fwd_flops

    assert w["flops"] == attention_fwd_flops(w["batch"], w["n_heads"], w["seq_len"], w["seq_len"], w["head_dim"],
                                             causal=True, window=w["window"])


def test_status_rows_for_missing_package_and_missing_features(kernel_rows):
    _, rows = kernel_rows
    xf = [r for r in rows if r["attention"] == "xformers"]
    assert len(xf) == 1 and xf[0]["status"] == "unavailable" and "xformers" in xf[0]["reason"]
    # a key that lacks a feature: linear has no ALiBi and no window
    lin = [r for r in rows if r["attention"] == "linear" and (r["bias"] == "alibi" or r["window"])]
    assert lin and all(r["status"] == "unsupported" for r in lin)
    assert any("ALiBi" in r["reason"] for r in lin) and any("window" in r["reason"] for r in lin)
    # flex has no backward on CPU: its fwd is timed, its backward passes are status rows
    flex = [r for r in rows if r["attention"] == "flex" and r["bias"] == "none" and not r["window"]]
    assert {r["status"] for r in flex if r["pass"] == "fwd"} == {"ok"}
    assert {r["status"] for r in flex if r["pass"] != "fwd"} == {"unsupported"}


def test_resume_adds_no_rows(kernel_rows):
    out, _ = kernel_rows
    before = read_rows(micro_file(out))
    again = run(out, *KERNEL_ONLY)
    assert len(again) == len(before)


def test_missing_package_row_and_resume(tmp_path, monkeypatch):
    entry = ATTENTION.get("sdpa_math")
    gone = dataclasses.replace(entry, availability=lambda device=None: (False, "pretend-pkg not installed"))
    monkeypatch.setitem(ATTENTION._entries, "sdpa_math", gone)
    over = ("parts=kernel", "kernels.keys=sdpa_math,sdpa", "kernels.seq_lens=32", "kernels.causal=true",
            "kernels.layouts=", "kernels.alibi=false", "kernels.windows=", "kernels.min_run_time=0.001")
    rows = run(tmp_path, *over)
    miss = [r for r in rows if r["attention"] == "sdpa_math"]
    assert len(miss) == 1 and miss[0]["status"] == "unavailable"
    assert "pretend-pkg not installed" in miss[0]["reason"]
    assert {r["status"] for r in rows if r["attention"] == "sdpa"} == {"ok"}
    assert len(run(tmp_path, *over)) == len(rows)  # nothing changed: nothing new written
    monkeypatch.setitem(ATTENTION._entries, "sdpa_math", entry)  # "installed" now: it gets measured
    rows2 = run(tmp_path, *over)
    assert {r["status"] for r in rows2[len(rows):]} == {"ok"}
    assert {r["attention"] for r in rows2[len(rows):]} == {"sdpa_math"}


def test_impossible_shape_gives_status_rows(tmp_path, monkeypatch):
    bad = [(L.Shape("main", 32, 2, 4, 3, 16, True, "float32", "none", None, ("fwd", "fwd_bwd")), ["naive", "sdpa"]),
           (L.Shape("main", 32, 2, 2, 2, 16, False, "float32", "none", 8, ("fwd",)), ["naive"]),
           (L.Shape("main", 32, 2, 2, 2, 16, True, "float32", "none", None, ("fwd",)), ["sliding_window"])]
    monkeypatch.setattr(L, "plan_kernels", lambda cfg, device: bad)
    rows = run(tmp_path, "parts=kernel", "kernels.keys=naive,sdpa,sliding_window", "kernels.min_run_time=0.001")
    assert len(rows) == 2 * 2 + 1 + 1
    assert all(r["status"] == "unsupported" for r in rows)
    assert any("multiple of key/value heads" in r["reason"] for r in rows)  # 4 query heads over 3 kv heads
    assert any("requires causal" in r["reason"] for r in rows)  # a window without causal
    assert any("needs a window" in r["reason"] for r in rows)


def _replace_sdpa(monkeypatch, entry, fn):
    """``sdpa`` becomes ``fn``: its registered call and the package call the suite times (``spec.native``)."""
    from ablate.variants.attention import contract as C

    monkeypatch.setitem(ATTENTION._entries, "sdpa", dataclasses.replace(entry, fn=fn))
    monkeypatch.setitem(C.SPECS, "sdpa", dataclasses.replace(C.SPECS["sdpa"], fn=fn, native=fn))


def test_wrong_kernel_is_not_timed(tmp_path, monkeypatch):
    entry = ATTENTION.get("sdpa")
    real = entry.fn

    def off_by_a_bit(q, k, v, **kw):
        return real(q, k, v, **kw) * 1.05

    _replace_sdpa(monkeypatch, entry, off_by_a_bit)
    rows = run(tmp_path, "parts=kernel", "kernels.keys=sdpa,naive", "kernels.seq_lens=32", "kernels.causal=true",
               "kernels.layouts=", "kernels.alibi=false", "kernels.windows=", "kernels.min_run_time=0.001")
    bad = [r for r in rows if r["attention"] == "sdpa"]
    assert bad and all(r["status"] == "error" and "wrong output" in r["reason"] for r in bad)
    assert all(r.get("time_ms") is None for r in bad)
    assert {r["status"] for r in rows if r["attention"] == "naive"} == {"ok"}


def test_wrong_gradients_are_not_timed(tmp_path, monkeypatch):
    entry = ATTENTION.get("sdpa")
    real = entry.fn

    def right_value_wrong_grad(q, k, v, **kw):
        out = real(q, k, v, **kw)
        return out.detach() + (out - out.detach()) * 1.5  # the same values, 1.5x the gradients

    _replace_sdpa(monkeypatch, entry, right_value_wrong_grad)
    rows = run(tmp_path, "parts=kernel", "kernels.keys=sdpa", "kernels.seq_lens=32", "kernels.causal=true",
               "kernels.layouts=", "kernels.alibi=false", "kernels.windows=", "kernels.min_run_time=0.001")
    by = {r["pass"]: r for r in rows}
    assert by["fwd"]["status"] == "ok" and by["fwd"]["rel_err"] < 1e-5
    for p in ("bwd", "fwd_bwd"):
        assert by[p]["status"] == "error" and "wrong gradients" in by[p]["reason"] and by[p].get("time_ms") is None


def test_oom_gives_status_row_and_sweep_goes_on(tmp_path, monkeypatch):
    entry = ATTENTION.get("sdpa")
    oom = getattr(torch.cuda, "OutOfMemoryError", None) or RuntimeError

    def boom(q, k, v, **kw):
        raise oom("CUDA out of memory. Tried to allocate 80.00 GiB")

    _replace_sdpa(monkeypatch, entry, boom)
    rows = run(tmp_path, "parts=kernel", "kernels.keys=sdpa,naive", "kernels.seq_lens=32", "kernels.causal=true",
               "kernels.layouts=", "kernels.alibi=false", "kernels.windows=", "kernels.min_run_time=0.001")
    assert {r["status"] for r in rows if r["attention"] == "sdpa"} == {"oom"}
    assert {r["status"] for r in rows if r["attention"] == "naive"} == {"ok"}


def test_model_parts_and_kv_cache_closed_form(model_rows):
    rows = model_rows
    by = {}
    for r in rows:
        by.setdefault(r["part"], []).append(r)
    assert set(by) == {"position", "train", "decode", "prefill"}
    assert all(r["status"] == "ok" for r in rows), [(r["part"], r["reason"]) for r in rows if r["status"] != "ok"]
    dec = by["decode"]
    assert {r["layout"] for r in dec} == {"mha", "gqa", "mqa"}
    for r in dec:
        assert r["kv_match"] and r["kv_bytes"] == r["kv_bytes_closed_form"] == (
            2 * r["n_layers"] * r["n_kv_heads"] * (r["d_model"] // r["n_heads"]) * r["context"] * 4 * r["batch"])
    mqa = {r["context"]: r["kv_bytes"] for r in dec if r["layout"] == "mqa"}
    mha = {r["context"]: r["kv_bytes"] for r in dec if r["layout"] == "mha"}
    assert all(mha[c] == 4 * mqa[c] for c in mqa)  # 4 heads vs 1
    for r in by["train"]:
        assert r["tokens_per_s"] > 0 and r["mfu"] is None and "MFU n/a" in r["peak_source"]
        assert r["model_flops"] > 0
    ops = {(r["position"], r["op"]) for r in by["position"]}
    assert ("rope", "rotate_qk") in ops and ("alibi", "bias_dense") in ops and ("sinusoidal", "embed") in ops
    assert ("none", "all") in ops and ("none", "rotate_qk") not in ops
    assert {r["prompt_len"] for r in by["prefill"]} == {32}


def test_report_from_jsonl_alone(kernel_rows, model_rows, tmp_path):
    out, _ = kernel_rows
    from ablate.store.results import to_frame
    from ablate.plan.runner import report_rows

    written = report_rows(to_frame(micro_file(out)), tmp_path / "rep")["latency"]
    names = {p.name for p in written}
    for need in ("index.md", "latency_tflops_fwd.md", "latency_tflops_fwd.tex", "latency_tflops_fwd.png",
                 "latency_tflops_fwd.svg", "latency_kernel_best.md", "latency_status.md", "latency_decode.md",
                 "latency_decode.png", "latency_prefill.png"):
        assert need in names, need
    assert any(n.startswith("latency_kernels_float32_hd16_causal_mha") for n in names)
    assert all(p.exists() for p in written)
    idx = (tmp_path / "rep" / "index.md").read_text()
    assert idx.startswith("<!-- ablate:latency -->") and "xformers" in idx
    table = (tmp_path / "rep" / "latency_kernels_float32_hd16_causal_mha.md").read_text()
    assert "× sdpa" in table and "rel err" in table and "| index" not in table
    assert "latency_positions.md" in names and "latency_train.md" in names


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="unknown latency preset"):
        L.resolve("huge")
    with pytest.raises(UnknownKeyError, match="valid: naive"):
        L.resolve("micro", ["kernels.keys=nope"])
    with pytest.raises(ConfigError, match="unknown pass"):
        L.resolve("micro", ["kernels.passes=sideways"])
    with pytest.raises(ConfigError, match="not divisible"):
        L.resolve("micro", ["kernels.head_dims=5"])
    with pytest.raises(ConfigError, match="train choice"):
        L.resolve("micro", ["train.choices=nonsense"])
    with pytest.raises(ConfigError, match="needs CUDA"):
        run_suite(RunOptions(suite="latency", preset="gpu", out=Path("/nonexistent"), device="cpu", progress=False))


def test_presets_plan():
    gpu = L.resolve("gpu")
    plan = L.plan_kernels(gpu, "cuda")
    main = [s for s, _ in plan if s.group == "main"]
    assert {s.seq_len for s in main} == {512, 1024, 2048, 4096, 8192, 16384}
    assert all(s.batch * s.seq_len == 16384 and s.n_heads * s.head_dim == 2048 for s, _ in plan)
    assert {s.group for s, _ in plan} >= {"gqa", "mqa", "dtype", "alibi", "window"}
    flex_lens = {s.seq_len for s, keys in plan if s.group == "main" and "flex" in keys}
    assert flex_lens == {2048, 16384}  # compiled per shape: a lean subset on the GPU preset
    cpu = L.resolve("tiny")
    keys = {k for _, ks in L.plan_kernels(cpu, "cpu") for k in ks}
    assert keys == set(kernel_keys())  # every kernel appears (unavailable ones as one status row each)
    assert "gpu" == L.default_preset("cuda") and "tiny" == L.default_preset("cpu")


def test_the_reference_each_key_is_checked_against_is_its_registrations():
    """The suite checks a kernel against ``spec(key).reference`` and names it by ``reference_name``: linear
    attention against its O(n^2) form (which the chunked kernel must match), softmax kernels against naive."""
    assert L.attention_spec("linear").reference_name == "linear O(n^2)"
    assert L.attention_spec("sdpa").reference is L.attention_spec("naive").fn
    torch.manual_seed(0)
    q = torch.randn(1, 4, 33, 8, dtype=torch.float64)
    k = torch.randn(1, 2, 40, 8, dtype=torch.float64)
    v = torch.randn(1, 2, 40, 8, dtype=torch.float64)
    for causal in (False, True):
        ref = L.attention_spec("linear").reference(q, k, v, causal=causal)
        got = ATTENTION.get("linear").fn(q, k, v, causal=causal)
        assert torch.allclose(got, ref, rtol=1e-9, atol=1e-10)


def test_rows_are_strict_json(kernel_rows):
    out, _ = kernel_rows
    for line in micro_file(out).read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-finite {c}"))


@pytest.mark.gpu
def test_gpu_micro_kernels(tmp_path):
    path = run_suite(RunOptions(suite="latency", preset="micro", out=tmp_path, device="cuda", progress=False,
                                overrides=("parts=kernel", "kernels.dtype=bfloat16", "kernels.seq_lens=256",
                                           "kernels.head_dims=64", "kernels.hidden=128",
                                           "kernels.feature_head_dim=64", "kernels.feature_seq_len=256",
                                           "kernels.keys=")))
    rows = read_rows(path)
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["peak_mem_bytes"] is not None and r["peak_mem_bytes"] >= 0 for r in ok)
    assert not [r for r in rows if r["status"] == "error"], [r["reason"] for r in rows if r["status"] == "error"]


# ---------------------------------------------------------------------------------------------------------------
# FLOPs of linear attention, caps, timing settings, compiled backward, derived-column rewrite


def test_linear_rows_count_their_own_flops(kernel_rows):
    """linear computes another function with another algorithm: its flops are those of that algorithm, its
    softmax-equivalent rate is only ever `equiv_tflops`; every other key keeps the FlashAttention count."""
    from ablate.core.flops import attention_flops, linear_attention_flops
    from ablate.variants.attention import LINEAR_CHUNK

    _, rows = kernel_rows
    ok = [r for r in rows if r["status"] == "ok"]
    lin = [r for r in ok if r["attention"] == "linear"]
    assert lin and {r["pass"] for r in lin} == {"fwd", "bwd", "fwd_bwd"} and {r["causal"] for r in lin} == {False, True}
    for r in lin:
        assert r["flops_convention"] == "linear" and r["linear_chunk"] == LINEAR_CHUNK
        assert r["flops"] == linear_attention_flops(r["batch"], r["n_heads"], r["n_kv_heads"], r["seq_len"],
                                                    r["seq_len"], r["head_dim"], causal=r["causal"],
                                                    chunk=LINEAR_CHUNK, mode=r["pass"])
        soft = attention_flops(r["batch"], r["n_heads"], r["seq_len"], r["seq_len"], r["head_dim"],
                               causal=r["causal"], mode=r["pass"])
        assert r["equiv_tflops"] == pytest.approx(soft / (r["time_ms"] * 1e-3) / 1e12)
        assert r["tflops"] == pytest.approx(r["flops"] / (r["time_ms"] * 1e-3) / 1e12)
    for r in ok:
        if r["attention"] != "linear":
            assert r["flops_convention"] == "fa" and "equiv_tflops" not in r


def test_report_tflops_tables_leave_linear_out(kernel_rows, tmp_path):
    out, _ = kernel_rows
    from ablate.store.results import to_frame
    from ablate.plan.runner import report_rows

    report_rows(to_frame(micro_file(out)), tmp_path / "rep")
    piv = (tmp_path / "rep" / "latency_tflops_fwd.md").read_text()
    assert "| linear" not in piv and "| sdpa" in piv and "Linear attention is not in the TFLOP/s" in piv
    assert "Linear attention is not in the TFLOP/s" in (tmp_path / "rep" / "index.md").read_text()
    shape = (tmp_path / "rep" / "latency_kernels_float32_hd16_causal_mha.md").read_text()
    assert "| linear" in shape  # still in the per-shape tables, with its own FLOPs


def test_caps_drop_passes_on_the_main_grid_only():
    cfg = L.resolve("micro", ["kernels.caps=sdpa_math:32,naive/bwd:32,linear/causal:32,sdpa/full/fwd_bwd:32"])
    shape = lambda n, causal, group="main": L.Shape(group, n, 2, 2, 2, 16, causal, "float32", "none", None,  # noqa
                                                    L.PASSES)
    assert L.kernel_passes(cfg, shape(64, False), "sdpa_math") == []
    assert L.kernel_passes(cfg, shape(32, False), "sdpa_math") == list(L.PASSES)  # at the cap: measured
    assert L.kernel_passes(cfg, shape(64, True), "naive") == ["fwd", "fwd_bwd"]
    assert L.kernel_passes(cfg, shape(64, False), "linear") == list(L.PASSES)
    assert L.kernel_passes(cfg, shape(64, True), "linear") == []
    assert L.kernel_passes(cfg, shape(64, False), "sdpa") == ["fwd", "bwd"]
    assert L.kernel_passes(cfg, shape(64, True), "sdpa") == list(L.PASSES)
    assert L.kernel_passes(cfg, shape(64, True, "gqa"), "sdpa_math") == list(L.PASSES)  # features run all keys
    plan = L.plan_kernels(cfg, "cpu")
    assert not [s for s, keys in plan if s.group == "main" and s.seq_len > 32 and "sdpa_math" in keys]
    for bad in ("sdpa_math", "sdpa_math:x", "nope:64", "naive/sideways:64", "naive/bwd/fwd:64"):
        with pytest.raises((ConfigError, UnknownKeyError)):
            L.resolve("micro", [f"kernels.caps={bad}"])


def test_gpu_preset_times_like_do_bench_and_fits_its_budget_plan():
    from ablate.core.timing import DO_BENCH_REP_MS, DO_BENCH_WARMUP_MS

    gpu = L.resolve("gpu")
    k = gpu.kernels
    assert (k.warmup_ms, k.rep_ms) == (DO_BENCH_WARMUP_MS, DO_BENCH_REP_MS) == (25, 100)
    # whole preset <= 9 minutes: the budgets (a measurement already started may finish past them) leave room
    assert gpu.budget_s <= 480 and k.budget_s < gpu.budget_s
    plan = L.plan_kernels(gpu, "cuda")
    main = [(s, keys) for s, keys in plan if s.group == "main"]
    assert not [s for s, keys in main if "sdpa_math" in keys and s.seq_len > 4096]
    naive16 = [L.kernel_passes(gpu, s, "naive") for s, keys in main if s.seq_len == 16384 and "naive" in keys]
    assert naive16 and all(p == ["fwd"] for p in naive16)
    assert not [s for s, keys in main if "linear" in keys and s.causal and s.seq_len > 8192]
    assert [s for s, keys in main if "linear" in keys and not s.causal and s.seq_len == 16384]


def test_ctx_bench_passes_do_bench_settings(monkeypatch):
    """Fast calls: exactly do_bench's warm-up/rep. Slow calls: rep raised to min_reps (+0.5 for do_bench's
    rounding), warm-up unchanged."""
    seen = []
    monkeypatch.setattr(L, "bench", lambda fn, device, **kw: seen.append(kw))
    ctx = L.Ctx.__new__(L.Ctx)
    ctx.cfg, ctx.device = L.resolve("gpu"), "cuda"
    ctx.bench(lambda: None, est_ms=1.8)
    ctx.bench(lambda: None, est_ms=200.0)
    assert (seen[0]["warmup_ms"], seen[0]["rep_ms"]) == (25, 100)
    assert (seen[1]["warmup_ms"], seen[1]["rep_ms"]) == (25, 3.5 * 200.0)


def _toy_compiled(x, w):
    return (torch.sin(x @ w) * x).relu() @ w


class _DonatingBackward(torch.autograd.Function):
    """Refuses backward(retain_graph=True) with AOT autograd's message, as a compiled graph with donated buffers
    does (whether torch.compile donates depends on the graph, so the fallback is tested with this stand-in)."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        if torch._C._autograd._get_current_graph_task_keep_graph():
            raise RuntimeError("This backward function was compiled with non-empty donated buffers which requires "
                               "create_graph=False and retain_graph=False.")
        return g * 2


def test_compiled_backward_is_timed_with_retain_graph(monkeypatch):
    """torch.compile's AOT autograd donates saved buffers and then refuses backward(retain_graph=True) -- the
    error all 7 flex `bwd` rows of the first H100 run got. Inside the suite's context the same timing works;
    should a backward still refuse, the backward of a fresh forward is timed and `timing` says so."""
    monkeypatch.setenv("ABLATE_FLEX_COMPILE_CPU", "1")  # "flex" counts as compiled here, so the context applies
    ctx_mgr, label = L.no_donated_buffers("flex", "cpu")
    assert L.no_donated_buffers("naive", "cpu")[1] is None  # nothing compiled: nothing changed
    if label is None:
        pytest.skip("this torch has no torch._functorch.config.donated_buffer (nor donated buffers)")
    ctx = L.Ctx.__new__(L.Ctx)
    ctx.cfg, ctx.device = L.resolve("micro", ["kernels.min_run_time=0.001"]), "cpu"
    x = torch.randn(64, 64, requires_grad=True)  # (at 32 x 32 torch 2.13 donates nothing for this graph)
    w = torch.randn(64, 64, requires_grad=True)
    dout = torch.ones(64, 64)
    with ctx_mgr:
        f = torch.compile(_toy_compiled, dynamic=False, fullgraph=True)
        f(x, w).backward(dout)  # the suite's first (checked) backward, then the timed retain_graph ones
        t, mem = L.time_backward(ctx, lambda: f(x, w), dout, [x, w])
    assert t.method == "torch.utils.benchmark" and t.median_ms > 0 and mem is None
    t2, _ = L.time_backward(ctx, lambda: _DonatingBackward.apply(x), dout, [x])
    assert "fresh untimed forward" in t2.method and t2.reps >= ctx.cfg.kernels.min_reps and t2.median_ms > 0
    with pytest.raises(RuntimeError, match="shape"):  # any other error is not swallowed
        L.time_backward(ctx, lambda: x @ w, torch.ones(3), [x, w])


def test_recompute_flops_rewrites_only_derived_columns(kernel_rows, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("recompute_flops", Path(__file__).parents[2] / "scripts" /
                                                  "recompute_flops.py")
    rf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rf)
    out, _ = kernel_rows
    lines = micro_file(out).read_text().splitlines(keepends=True)
    assert rf.recompute_file(micro_file(out), write=False) == {}  # rows written now are already right
    # an old-style linear row: softmax count, no convention column
    old = []
    for line in lines:
        r = json.loads(line)
        if r.get("part") == "kernel" and r.get("attention") == "linear" and r["status"] == "ok":
            from ablate.core.flops import attention_flops

            r["flops"] = attention_flops(r["batch"], r["n_heads"], r["seq_len"], r["seq_len"], r["head_dim"],
                                         causal=r["causal"], mode=r["pass"])
            r["tflops"] = r["flops"] / (r["time_ms"] * 1e-3) / 1e12
            for c in ("flops_convention", "linear_chunk", "equiv_tflops"):
                r.pop(c)
            line = rf._dumps(r) + "\n"
        old.append(line)
    f = tmp_path / "old.jsonl"
    f.write_text("".join(old))
    changed = rf.recompute_file(f)
    assert changed and all(k.startswith("kernel/linear") for k in changed)
    new = f.read_text().splitlines(keepends=True)
    assert len(new) == len(lines)
    for a, b in zip(lines, new):  # back to what the suite writes (key order aside), times untouched
        assert json.loads(a) == json.loads(b)
    assert rf.recompute_file(f) == {}  # idempotent
    assert rf.main(["--check", str(f)]) == 0


def test_a_spent_budget_writes_skipped_rows_that_a_resumed_run_measures(tmp_path):
    """budget_s so small that it is spent before the first measurement: every planned row is a `skipped` row naming
    the budget (none silently missing); a resumed run with the budget lifted measures them all."""
    first = run(tmp_path, *KERNEL_ONLY, "budget_s=0.000001")
    # keys that cannot run here are told up front (unavailable); every other planned row is skipped, not missing
    assert {r["status"] for r in first} == {"skipped", "unavailable"}
    first = [r for r in first if r["status"] == "skipped"]
    assert all(r["reason"].startswith("budget: the run's time budget ran out before this measurement (budget_s)")
               and "--set budget_s=SECONDS" in r["reason"] for r in first)  # the setting to raise, by name
    before = len(read_rows(micro_file(tmp_path)))
    again = run(tmp_path, *KERNEL_ONLY, "budget_s=0.000001")
    assert len(again) == before  # still over budget, same reason: nothing new written
    final = run(tmp_path, *KERNEL_ONLY)
    latest = {}
    for r in final:
        latest[r["row_key"]] = r
    skipped_keys = {r["row_key"] for r in first}
    assert skipped_keys <= set(latest) and all(latest[k]["status"] != "skipped" for k in skipped_keys)


def test_a_spent_part_budget_names_the_parts_setting(tmp_path, capsys):
    rows = run(tmp_path, "parts=stream", "stream.budget_s=0.000001")
    assert rows and {r["status"] for r in rows} == {"skipped"}
    assert all("the stream part's time budget ran out before this measurement (stream.budget_s)" in r["reason"]
               and "--set stream.budget_s=SECONDS" in r["reason"] for r in rows)
    assert "--set: budget_s, stream.budget_s; 0 = no limit" in capsys.readouterr().err


def test_a_key_in_another_layout_is_timed_through_its_own_call(tmp_path):
    """A kernel whose package takes (B, T, H, D) (flash-attn's layout) gets contiguous inputs in that layout and its
    native call is what is timed -- no layout copy inside the timed region; the conversion is timed apart
    (layout_ms), and outputs and gradients are still checked against naive."""
    import torch.nn.functional as F

    from ablate.registry.keys import ATTENTION
    from ablate.variants.attention import contract as C

    seen = []

    def native(qt, kt, vt, *, causal, bias=None, window=None, scale=None):
        seen.append(all(x.is_contiguous() for x in (qt, kt, vt)) and qt.shape[1] > qt.shape[2])
        g = qt.shape[2] // kt.shape[2]
        q, k, v = qt.transpose(1, 2), kt.transpose(1, 2), vt.transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                             is_causal=causal, scale=scale)
        return out.transpose(1, 2)

    def fn(q, k, v, *, causal, bias=None, window=None, scale=None):
        C.check_call("bthd_test", q, k, v, causal, bias, window)
        return native(*(x.transpose(1, 2).contiguous() for x in (q, k, v)), causal=causal).transpose(1, 2)

    entries, specs = dict(ATTENTION._entries), dict(C.SPECS)
    try:
        C.AttentionSpec(key="bthd_test", fn=fn, description="test kernel in (B, T, H, D)", paper="-",
                        caps={"cpu": C.full_caps(bias=False, alibi=False, window=False, bias_grad=False,
                                                 dtypes=C.ALL_DTYPES)},
                        flops=C.fa_flops, reference=ATTENTION.get("naive").fn,
                        backend_name=lambda *a: "bthd_test", layout="bthd", native=native,
                        native_name="test.native").register()
        rows = run(tmp_path, *KERNEL_ONLY, "kernels.keys=bthd_test")
    finally:
        ATTENTION._entries.clear()
        ATTENTION._entries.update(entries)
        C.SPECS.clear()
        C.SPECS.update(specs)
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and {r["pass"] for r in ok} == {"fwd", "bwd", "fwd_bwd"}
    for r in ok:
        assert r["timed_call"] == "test.native" and r["input_layout"] == "bthd" and r["layout_ms"] > 0
        assert r["rel_err"] <= r["tol"] and r["grad_rel_err"] <= r["grad_tol"]
    assert seen and all(seen)  # every call got contiguous (B, T, H, D) tensors


def test_train_step_eager_and_compiled_side_by_side(tmp_path):
    """train.modes=eager,compiled: a compiled row beside each eager one (eager keys unchanged), its compile time
    apart, both with MFU's FLOPs (causal halved) and PaLM's (unhalved) counted; the table shows the mode."""
    rows = run(tmp_path, "parts=train", "train.choices=base", "train.modes=eager,compiled")
    by = {r.get("train_mode", "eager"): r for r in rows}
    assert set(by) == {"eager", "compiled"}, [(r["status"], r.get("reason")) for r in rows]
    if by["compiled"]["status"] != "ok":  # no C++ toolchain for inductor: a status row saying so is the contract
        pytest.skip(f"torch.compile cannot build here: {by['compiled']['reason'][:200]}")
    assert by["eager"]["train_backend"] == "eager" and by["compiled"]["train_backend"] == "compiled"
    assert by["compiled"]["compile_s"] is not None and by["eager"]["compile_s"] is None
    for r in by.values():
        assert r["model_flops_palm"] > r["model_flops"]  # causal attention: PaLM counts the masked half too
    table = L.train_table(pd.DataFrame(rows))
    assert list(table["mode"]) == ["eager", "compiled"] and "MFU % (PaLM)" in table.columns
