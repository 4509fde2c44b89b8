"""StreamingLLM's streaming evaluation in the extrapolation suite (suites/extrapolation/stream.py) and its claims
computed from rows (suites/extrapolation/streaming_report.py): the micro preset end to end (rows, measured cache bytes,
the scored tokens against the harness), refusals in one line, and every verdict rule on rows built here."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import ablate.suites.extrapolation as ex
from ablate.core.model import Transformer
from ablate.errors import ConfigError
from ablate.plan.runner import RunOptions
from ablate.store.results import read_rows, to_frame
from ablate.suites.extrapolation.config import resolve
from ablate.suites.extrapolation.stream import score_stream
from ablate.suites.extrapolation.streaming_report import stream_claims
from ablate.variants.attention.streaming import streaming_nll

MODES = "dense,window,sinks,recompute"


def _opts(tmp_path, *overrides, **kw):
    return RunOptions(suite="extrapolation", preset="micro", overrides=overrides, out=tmp_path, device="cpu",
                      progress=False, **kw)


def test_micro_streaming_rows_cache_bytes_and_report(tmp_path):
    path = ex.run(_opts(tmp_path, "positions=rope", "rope_scalings=", f"stream.modes={MODES}", "stream.sequences=2",
                        "stream.factors=2,4"))
    rows = [r for r in read_rows(path) if r["metric"] == "stream_ppl"]
    assert len(rows) == 2 * 4 and {r["status"] for r in rows} == {"ok"}
    by = {(r["stream_mode"], r["eval_len"]): r for r in rows}
    budget = rows[0]["budget"]
    assert budget == 16 and by[("sinks", 32)]["sinks"] == 4 and all(r["learned_sink"] is False for r in rows)
    # memory: the sinks / window caches hold budget tokens' worth at every length, the dense cache all of them
    assert by[("sinks", 32)]["cache_bytes"] == by[("sinks", 64)]["cache_bytes"] > 0
    assert by[("window", 32)]["cache_bytes"] == by[("window", 64)]["cache_bytes"]
    assert by[("dense", 64)]["cache_bytes"] > by[("dense", 32)]["cache_bytes"]
    assert by[("recompute", 32)]["cache_bytes"] is None
    assert by[("dense", 32)]["scored_tokens"] == 2 * (32 - budget + 1)
    for r in rows:
        assert r["value"] > 1 and math.isclose(math.log(r["value"]), r["loss"], rel_tol=1e-9)
    files = {f.name for f in ex.report(to_frame(path), tmp_path / "rep")}
    assert {"extrapolation_streaming.md", "extrapolation_streaming_claims.md"} <= files
    idx = (tmp_path / "rep" / "extrapolation_index.md").read_text()
    assert "## Streaming (StreamingLLM)" in idx and "Memory stays flat with length" in idx


def test_score_stream_scores_the_harness_losses_past_the_budget():
    cfg = resolve("micro", ["positions=rope", "stream.modes=window"])
    torch.manual_seed(0)
    model = Transformer(cfg.model).eval()
    stream = np.random.default_rng(0).integers(0, cfg.model.vocab_size, 500)
    es = SimpleNamespace(stream=stream, hash="x")
    key = {"eval_len": 40, "budget": 16, "sequences": 3, "stream_mode": "window"}
    got = score_stream(cfg, model, es, key, "cpu")
    toks = torch.as_tensor(stream[:3 * 41], dtype=torch.long).view(3, 41)
    want = streaming_nll(model, toks, mode="window", budget=16)[:, 15:].double().mean().item()
    assert got["loss"] == pytest.approx(want, rel=1e-12) and got["scored_tokens"] == 3 * 25
    assert got["cache_tokens"] == 16


@pytest.mark.parametrize("overrides, match", [
    (["stream.modes=window,nope"], "unknown stream.modes 'nope'; valid: dense, window, sinks, recompute"),
    (["stream.modes=window", "stream.sinks=16"], "stream.budget must be >= 2"),
    (["stream.modes=window", "stream.factors=1"], "must exceed stream.budget"),
    (["stream.modes=window,window"], "name each value once"),
])
def test_bad_stream_settings_are_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        resolve("micro", overrides)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# Claims on rows built here


def _rows(ppl_of, bytes_of=None, sink_model=True, seeds=(0, 1, 2, 3)):
    """Streaming rows of a vanilla and (``sink_model``) a learned-sink model: ``ppl_of(attention, mode, L, seed)``."""
    out = []
    for att in ("sdpa",) + (("sinks",) if sink_model else ()):
        for L in (256, 512):
            for mode in ("dense", "window", "sinks", "recompute"):
                for s in seeds:
                    b = (bytes_of or (lambda a, m, n: {"dense": 100 * n, "recompute": None}.get(m, 6400)))(att, mode, L)
                    out.append({"metric": "stream_ppl", "status": "ok", "stream_mode": mode, "eval_len": L, "seed": s,
                                "value": ppl_of(att, mode, L, s), "cache_bytes": b, "learned_sink": att == "sinks",
                                "sinks": 4 if mode == "sinks" else None, "position": "rope", "attention": att,
                                "train_len": 64, "budget": 64, "config_id": f"c-{att}", "preset": "tiny",
                                "device": "cpu"})
    return pd.DataFrame(out)


def _jitter(s):
    return 1 + 0.004 * ((s * 3) % 4 - 1.5)


def streamingllm(att, mode, L, s):
    """The published shape: window explodes on the vanilla model, sinks ≈ recompute, the sink model needs none."""
    base = 6.0 * _jitter(s)
    if mode == "window" and att == "sdpa":
        return base * 20
    if mode == "dense":
        return base * 3
    return base * (1.01 if mode != "recompute" else 1.0)


def _verdicts(df):
    return {c.claim.split(" (")[0]: c for c in stream_claims(df)}


def test_the_published_shape_reproduces_every_claim():
    v = _verdicts(_rows(streamingllm))
    assert set(v) == {"Window attention breaks once the first tokens leave the cache",
                      "Keeping 4 initial tokens stays close to sliding window with re-computation",
                      "A model pre-trained with a sink needs only that one", "Memory stays flat with length"}
    assert {c.verdict for c in v.values()} == {"reproduced"}, {k: (c.verdict, c.detail) for k, c in v.items()}


def test_window_that_does_not_break_makes_the_sink_claim_not_testable():
    def flat(att, mode, L, s):
        return 6.0 * _jitter(s) * (1.01 if mode in ("window", "sinks") else 1.0)

    v = _verdicts(_rows(flat))
    assert v["Window attention breaks once the first tokens leave the cache"].verdict == "not reproduced"
    assert "another regime" in v["Window attention breaks once the first tokens leave the cache"].caveats
    sink = v["A model pre-trained with a sink needs only that one"]
    assert sink.verdict == "not testable" and "measured: reproduced" in sink.detail
    keep = v["Keeping 4 initial tokens stays close to sliding window with re-computation"]
    assert keep.verdict == "not testable" and "nothing to restore" in keep.detail and "measured: reproduced" in keep.detail
    alone = _verdicts(_rows(flat).query("attention == 'sinks'"))
    assert alone["A model pre-trained with a sink needs only that one"].verdict == "not testable"


def test_sinks_far_from_recompute_is_not_reproduced():  # window breaks: the comparison counts
    def far(att, mode, L, s):
        return streamingllm(att, mode, L, s) * (1.5 if mode == "sinks" else 1.0)

    v = _verdicts(_rows(far, sink_model=False))
    assert v["Keeping 4 initial tokens stays close to sliding window with re-computation"].verdict == "not reproduced"


def test_memory_claim_is_exact():
    grows = _verdicts(_rows(streamingllm, bytes_of=lambda a, m, n: 10 * n if m != "recompute" else None))
    assert grows["Memory stays flat with length"].verdict == "not reproduced"


def test_one_seed_is_inconclusive_and_no_rows_no_claims():
    v = _verdicts(_rows(streamingllm, seeds=(0,), sink_model=False))
    assert v["Window attention breaks once the first tokens leave the cache"].verdict == "inconclusive"
    assert stream_claims(pd.DataFrame()) == [] and stream_claims(None) == []
