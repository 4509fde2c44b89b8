"""The latency suite's ``stream`` part (StreamingLLM's caches in the latency suite): rows, resume, the restored
cache state every timed step starts from, refusals, and the report's table and claims (memory flat with length,
faster than re-computation) on synthetic rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from ablate.analysis.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from ablate.analysis.claims_streaming import flat_memory
from ablate.core.model import Transformer
from ablate.errors import ConfigError
from ablate.plan.runner import RunOptions, run_suite
from ablate.registry.keys import load_all
from ablate.store.results import read_rows
from ablate.variants.attention.streaming import MODES

load_all()
from ablate.suites import latency as L  # noqa: E402
from ablate.suites.latency import stream as S  # noqa: E402
from ablate.suites.latency.constants import STREAM_MODES  # noqa: E402
from ablate.suites.latency.stream_report import stream_claims, stream_table  # noqa: E402


def _run(out: Path, *overrides: str) -> list[dict]:
    path = run_suite(RunOptions(suite="latency", preset="micro", overrides=("parts=stream",) + overrides, out=out,
                                device="cpu", progress=False))
    return read_rows(path)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("stream")
    return out, _run(out, "stream.steps=5")


def test_modes_are_the_streaming_evaluations():
    assert STREAM_MODES == MODES  # the latency part times the caches the extrapolation suite scores


def test_rows_per_length_and_mode_with_measured_cache_bytes(rows):
    _, got = rows
    ss = L.PRESETS["micro"].stream
    assert {(r["tokens"], r["stream_mode"]) for r in got} == {(t, m) for t in ss.tokens for m in STREAM_MODES}
    assert all(r["status"] == "ok" and r["part"] == "stream" for r in got)
    by = {(r["stream_mode"], r["tokens"]): r for r in got}
    short, long = ss.tokens
    for r in got:
        assert r["reps"] == 5 and r["time_ms"] > 0  # stream.steps timed calls
        keys = set(r["key_fields"])
        assert ("stream_budget" in keys) == (r["stream_mode"] != "dense")  # a setting a mode ignores is not its key
        assert ("stream_sinks" in keys) == (r["stream_mode"] == "sinks")
        if r["stream_mode"] == "recompute":
            assert r["kv_bytes"] is None and r["cache_kind"] == "none" and r["attn_keys"] == ss.budget
        else:
            assert r["kv_match"] is True and r["kv_bytes"] == r["kv_bytes_closed_form"] > 0
    mcfg = S.stream_model_config(L.PRESETS["micro"], "mha")
    per_token = 2 * mcfg.n_layers * mcfg.kv_heads * mcfg.head_dim * 4 * L.PRESETS["micro"].decode.batch
    assert by[("dense", short)]["kv_bytes"] == short * per_token and by[("dense", long)]["kv_bytes"] == long * per_token
    assert by[("window", short)]["kv_bytes"] == by[("window", long)]["kv_bytes"] == ss.budget * per_token
    assert by[("sinks", short)]["kv_bytes"] == by[("sinks", long)]["kv_bytes"] == (ss.budget - 1) * per_token
    assert by[("sinks", long)]["kv_tokens"] == ss.budget - 1 and by[("dense", long)]["attn_keys"] == long + 1


def test_resume_measures_nothing_again(rows):
    out, got = rows
    assert len(_run(out, "stream.steps=5")) == len(got)


def test_a_changed_budget_is_a_new_measurement_for_the_modes_that_use_it(tmp_path):
    first = _run(tmp_path)
    after = _run(tmp_path, "stream.budget=16")[len(first):]
    assert {r["stream_mode"] for r in after} == {"window", "sinks", "recompute"}  # dense holds every token anyway


@pytest.mark.parametrize("mode", ["dense", "window", "sinks"])
def test_every_timed_step_starts_from_the_same_cache(mode, monkeypatch):
    """The restore puts back the cache a step found (its tensors and length), so each timed call does the same work
    and decodes the same logits; the growing cache's first step re-allocates (filled in two chunks of 16 to exactly
    its capacity, 32), then it writes in place."""
    monkeypatch.setattr(S, "PREFILL_CHUNK", 16)
    cfg = L.PRESETS["micro"]
    mcfg = S.stream_model_config(cfg, "mha")
    torch.manual_seed(0)
    model = Transformer(mcfg).eval()
    run = S.LayoutRun("mha", mcfg, model, {}, [], torch.Generator().manual_seed(1), torch.float32)
    ctx = type("C", (), {"cfg": cfg, "device": "cpu"})()
    L0 = 32
    cache, restore = S._filled(ctx, run, L0, mode)
    filled = [t.data_ptr() for t in cache.tensors()]
    tok = torch.randint(0, mcfg.vocab_size, (cfg.decode.batch, 1))
    with torch.no_grad():
        restore()
        first = model(tok, cache)
        if mode == "dense":
            restore.keep_grown()
        kept = [t.clone() for t in cache.tensors()]
        ptrs = [t.data_ptr() for t in cache.tensors()]
        for _ in range(3):
            restore()
            assert cache.length == L0
            torch.testing.assert_close(model(tok, cache), first, rtol=0, atol=0)
        if mode == "dense":
            assert ptrs != filled  # the first step grew the cache ...
            assert [t.data_ptr() for t in cache.tensors()] == ptrs  # ... and no timed step re-allocates
        else:
            restore()
            assert cache.held() == {"window": cfg.stream.budget, "sinks": cfg.stream.budget - 1}[mode]
            for a, b in zip(cache.tensors(), kept):  # the restored state is the filled one, not the stepped one
                assert a.shape == b.shape


def test_a_cache_the_model_cannot_keep_is_a_status_row_and_the_sweep_goes_on(tmp_path):
    """Dynamic NTK re-rotates every key at each length: a rolling cache cannot keep its positions (the sinks cache
    keeps raw keys and re-places them every step, as StreamingLLM does, so it can)."""
    got = _run(tmp_path, "model.position=rope_dynamic_ntk")
    status = {r["stream_mode"]: (r["status"], r["reason"]) for r in got}
    assert {m for m, (st, _) in status.items() if st == "ok"} == {"dense", "sinks", "recompute"}
    assert status["window"][0] == "unsupported" and "re-rotates every cached key" in status["window"][1]


@pytest.mark.parametrize("setting, match", [
    ("stream.modes=dense,bogus", "dense, window, sinks, recompute"),
    ("stream.tokens=4", "must be >= stream.budget"),
    ("stream.sinks=8", "1 <= sinks < budget"),
    ("stream.layouts=gqa,xyz", "valid: mha, gqa, mqa"),
    ("stream.warmup_steps=0", "warmup_steps must be an integer >= 1"),  # the first reads the kernel: 0 would be 1
])
def test_bad_stream_settings_are_one_line_refusals(setting, match, tmp_path):
    with pytest.raises(ConfigError, match=match) as err:
        _run(tmp_path, setting)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.rglob("*.jsonl"))  # nothing written


# -- report side (synthetic rows) ------------------------------------------------------------------------------

def _row(mode: str, tokens: int, ms: float, spread: float = 0.05, kv: int | None = 100, budget: int = 8) -> dict:
    r = {"suite": "latency", "part": "stream", "status": "ok", "attention": "sdpa", "position": "rope",
         "layout": "mha", "n_heads": 4, "n_kv_heads": 4, "d_model": 32, "n_layers": 1, "batch": 2,
         "dtype": "float32", "device_name": "cpu", "tokens": tokens, "stream_mode": mode, "time_ms": ms,
         "p20_ms": ms * (1 - spread), "p80_ms": ms * (1 + spread), "tokens_per_s": 2 / ms * 1e3, "reps": 5,
         "kv_bytes": kv, "kv_bytes_closed_form": kv, "kv_match": None if kv is None else True, "attn_keys": budget}
    if mode != "dense":
        r["stream_budget"] = budget
    if mode == "sinks":
        r["stream_sinks"] = 2
    return r


def _frame(sinks_ms=(1.0, 1.0), recompute_ms=(3.0, 3.0), sinks_kv=(70, 70), dense_kv=(240, 480), spread=0.05):
    out = []
    for i, t in enumerate((24, 48)):
        out += [_row("dense", t, 1.0, kv=dense_kv[i]), _row("sinks", t, sinks_ms[i], spread, kv=sinks_kv[i]),
                _row("recompute", t, recompute_ms[i], spread, kv=None)]
    return pd.DataFrame(out)


def _verdicts(df) -> dict[str, str]:
    return {c.claim.split(" (")[0]: c.verdict for c in stream_claims(df)}


def test_claims_reproduced_when_memory_is_flat_and_the_ranges_lie_apart():
    v = _verdicts(_frame())
    assert v == {"Memory stays flat with length": REPRODUCED,
                 "Sinks cache decodes faster than re-computation": REPRODUCED}


def test_speed_claim_not_reproduced_or_inconclusive():
    assert _verdicts(_frame(sinks_ms=(3.0, 3.0), recompute_ms=(1.0, 1.0)))[
        "Sinks cache decodes faster than re-computation"] == NOT_REPRODUCED
    assert _verdicts(_frame(sinks_ms=(1.0, 1.0), recompute_ms=(1.05, 3.0)))[
        "Sinks cache decodes faster than re-computation"] == INCONCLUSIVE  # ranges overlap at one length
    # a faster median is not enough: wide ranges that overlap are inconclusive
    assert _verdicts(_frame(sinks_ms=(1.0, 1.0), recompute_ms=(1.5, 1.5), spread=0.3))[
        "Sinks cache decodes faster than re-computation"] == INCONCLUSIVE


def test_memory_claim_not_reproduced_when_the_kept_cache_grows():
    assert _verdicts(_frame(sinks_kv=(70, 140)))["Memory stays flat with length"] == NOT_REPRODUCED
    assert _verdicts(_frame(dense_kv=(240, 240)))["Memory stays flat with length"] == INCONCLUSIVE


def test_flat_memory_verdicts():
    assert flat_memory({1: [5], 2: [5]}, {1: [5], 2: [9]}) == (
        REPRODUCED, "sinks cache bytes identical at every length; dense grows with length")
    assert flat_memory({1: [5], 2: [6]}, {})[0] == NOT_REPRODUCED
    assert flat_memory({1: [5], 2: [5]}, {}) == (REPRODUCED, "sinks cache bytes identical at every length; no dense "
                                                 "rows to contrast")


def test_table_speedup_is_recompute_over_the_mode_at_the_same_length():
    t = stream_table(_frame())
    sinks = t[t["mode"] == "sinks"]
    assert list(sinks["× recompute"]) == [3.0, 3.0] and list(t["tokens"]) == [24, 24, 24, 48, 48, 48]
    assert t[t["mode"] == "recompute"]["× recompute"].isna().all()


def test_report_and_show_have_the_stream_section(rows, tmp_path):
    from ablate.plan.runner import report_rows
    from ablate.reporting.show import render
    from ablate.store.frame import to_frame

    out, _ = rows
    written = report_rows(to_frame(out), tmp_path / "rep")
    names = {p.name for p in written["latency"]}
    assert {"latency_stream.md", "latency_stream_claims.md", "latency_stream.png"} <= names
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "## Streaming decode (StreamingLLM's caches)" in index and "Memory stays flat with length" in index
    assert "## latency: stream" in render([out])


def test_no_stream_rows_no_section():
    assert stream_table(pd.DataFrame([{**_row("dense", 24, 1.0), "part": "decode"}])).empty
    assert stream_claims(pd.DataFrame()) == []


def test_the_backend_is_read_off_the_layers_own_kernel_call(monkeypatch):
    """Decode, prefill and stream rows name the kernel from the call the layer really made (MLA's absorbed decode
    attends a (d_c + d_R)-wide latent with one shared head), not from a probe of the config's heads and head dim."""
    from ablate.suites.latency import decode as D

    cfg = replace(S.stream_model_config(L.PRESETS["micro"], "mha"), attention="mla")
    model = Transformer(cfg).eval()
    seen = []
    monkeypatch.setattr(D, "backend_of", lambda key, q, k, v, **kw: seen.append((key, q.shape, k.shape)) or "x")
    cache = model.new_cache()
    idx = torch.randint(0, cfg.vocab_size, (2, 5))
    assert D.observed_backend(model, lambda: model(idx, cache)) == "x"
    (key, q, k), = seen
    latent = model.blocks[0].attn.dc + model.blocks[0].attn.dr
    assert key == "sdpa" and q[-1] == k[-1] == latent and k[1] == 1  # the absorbed path's call
    seen.clear()
    before = model.blocks[0].attn.attn
    assert D.observed_backend(model, lambda: None) is None  # no forward: no kernel call, nothing named
    assert seen == [] and model.blocks[0].attn.attn is before  # the spy is removed
