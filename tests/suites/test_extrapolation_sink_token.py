"""StreamingLLM's sink-token claim (sec. 3.3, Table 3: "a model pre-trained with a sink token needs only that one")
computed from streaming rows: a ``sink_token`` model's ``sinks`` mode keeping only its sink token against its
``recompute``, gated on the vanilla model of the same setup breaking; and the micro preset end to end (the rows
record the sink token, the cache keeps it)."""

from __future__ import annotations

import pandas as pd

import ablate.suites.extrapolation as ex
from ablate.plan.runner import RunOptions
from ablate.store.results import read_rows
from ablate.suites.extrapolation.streaming_report import stream_claims

CLAIM = "A model pre-trained with a sink token needs only that one"


def _rows(ppl_of, kept=1, seeds=(0, 1, 2, 3)):
    """A vanilla model (4 initial tokens kept) and a sink-token model (``kept`` kept): ``ppl_of(att, mode, L, s)``."""
    out = []
    for att, n_sink, sinks in (("sdpa", 0, 4), ("sink_token", 1, kept)):
        for L in (256, 512):
            for mode in ("dense", "window", "sinks", "recompute"):
                for s in seeds:
                    out.append({"metric": "stream_ppl", "status": "ok", "stream_mode": mode, "eval_len": L, "seed": s,
                                "value": ppl_of(att, mode, L, s), "cache_bytes": None if mode == "recompute" else 640,
                                "learned_sink": False, "sink_tokens": n_sink,
                                "sinks": sinks if mode == "sinks" else None, "position": "rope", "attention": att,
                                "train_len": 64, "budget": 64, "config_id": f"c-{att}", "preset": "tiny",
                                "device": "cpu"})
    return pd.DataFrame(out)


def _published(att, mode, L, s):
    base = 6.0 * (1 + 0.004 * ((s * 3) % 4 - 1.5))
    if mode == "window":  # both break without their first token(s); the sink model keeps it in `sinks`
        return base * 20
    return base * (3 if mode == "dense" else 1.01 if mode == "sinks" else 1.0)


def _claims(df):
    return {c.claim.split(" (")[0]: c for c in stream_claims(df)}


def test_the_published_shape_reproduces_and_the_sink_model_is_not_taken_for_a_vanilla_one():
    v = _claims(_rows(_published))
    assert v[CLAIM].verdict == "reproduced", v[CLAIM].detail
    assert "sink_token/rope" in [c.claim for c in stream_claims(_rows(_published)) if c.claim.startswith(CLAIM)][0]
    windows = [c for c in stream_claims(_rows(_published)) if c.claim.startswith("Window attention breaks")]
    assert len(windows) == 1 and "sdpa" in windows[0].claim  # only the vanilla model


def test_far_from_recompute_is_not_reproduced_and_more_kept_tokens_are_not_testable():
    def far(att, mode, L, s):
        return _published(att, mode, L, s) * (1.5 if (att, mode) == ("sink_token", "sinks") else 1.0)

    assert _claims(_rows(far))[CLAIM].verdict == "not reproduced"
    four = _claims(_rows(_published, kept=4))[CLAIM]
    assert four.verdict == "not testable" and "stream.sinks=1" in four.detail


def test_not_testable_when_the_vanilla_model_does_not_break():
    def flat(att, mode, L, s):
        return 6.0 * (1.01 if mode in ("window", "sinks") else 1.0)

    c = _claims(_rows(flat))[CLAIM]
    assert c.verdict == "not testable" and "does not break" in c.detail


def test_micro_rows_record_the_sink_token_and_its_cache_keeps_it(tmp_path):
    opts = RunOptions(suite="extrapolation", preset="micro", out=tmp_path, device="cpu", progress=False,
                      overrides=("positions=rope", "rope_scalings=", "finetune.scalings=", "model.attention=sink_token",
                                 "stream.modes=sinks,recompute", "stream.sinks=1", "stream.sequences=1",
                                 "stream.factors=2", "train.steps=5"))
    rows = [r for r in read_rows(ex.run(opts)) if r["metric"] == "stream_ppl"]
    assert {r["status"] for r in rows} == {"ok"} and all(r["sink_tokens"] == 1 for r in rows)
    sinks = [r for r in rows if r["stream_mode"] == "sinks"][0]
    assert sinks["sinks"] == 1 and sinks["cache_tokens"] == sinks["budget"] - 1  # the sink token + budget - 2 recent
