"""Fair training, report side (no training: synthetic rows): the convergence flag, an undertrained point never
making a finding reproduced, the GQA parameter caveat, the Pareto front drawn only between resolved neighbours,
and the curve caption naming the documents the curve scored."""

from __future__ import annotations

import pandas as pd
import pytest

from ablate.analysis.stats import summarize
from ablate.suites import training
from ablate.suites.training.aggregate import last_drop
from ablate.suites.training.figures import front_segments
from ablate.suites.training.findings import caveats
from ablate.suites.training.reporting import curve_caption, pareto_caption

STEPS = 100
VAL_STEPS = [20, 40, 60, 80, 100]


def _curve(final: float, tail_drop: float) -> list[float]:
    """A curve that falls 1 nat early and ``tail_drop`` nats over its last 20% (steps 80 -> 100)."""
    return [final + 1.0, final + 0.5, final + 0.2 + tail_drop, final + tail_drop, final]


def _rows(finals: dict[str, list[float]], tail: dict[str, float], glu: dict[str, bool]) -> pd.DataFrame:
    rows = []
    for i, (point, vals) in enumerate(finals.items()):
        for seed, v in enumerate(vals):
            rows.append({"suite": "training", "point": point, "seed": seed, "status": "ok", "val_loss": v,
                         "point_index": i, "baseline": None if i == 0 else "original",
                         "change": "", "group": "original", "activation": "swiglu" if glu[point] else "relu",
                         "activation_glu": glu[point], "config.model.activation": "swiglu" if glu[point] else "relu",
                         "config.model.norm": "layernorm", "config.train.lr": 3e-3, "params": 1000,
                         "tokens_per_s": 1000.0 + seed, "steps": STEPS, "unigram_loss": 5.0,
                         "curve.val_step": VAL_STEPS, "curve.val_loss": _curve(v, tail[point])})
    return pd.DataFrame(rows)


def test_last_drop_is_the_fitted_fall_over_the_last_fifth():
    assert last_drop(VAL_STEPS, _curve(2.0, 0.05), STEPS) == pytest.approx(0.05)
    assert last_drop(VAL_STEPS, _curve(2.0, 0.0), STEPS) == pytest.approx(0.0)
    assert last_drop([10, 20], [3.0, 2.9], 100) == pytest.approx(0.2)  # one point in the window: the last two
    assert last_drop([100], [2.0], 100) is None and last_drop(None, None) is None


def test_an_undertrained_point_never_reproduces_a_finding():
    finals = {"original": [2.50, 2.51, 2.49], "original+swiglu": [2.40, 2.41, 2.39]}  # GLU clearly better
    glu = {"original": False, "original+swiglu": True}
    converged = training.findings_table(_rows(finals, {"original": 0.0, "original+swiglu": 0.0}, glu))
    assert list(converged["verdict"]) == ["reproduced"] and list(converged["caveats"]) == ["—"]
    flagged = training.findings_table(_rows(finals, {"original": 0.0, "original+swiglu": 0.06}, glu))
    assert list(flagged["verdict"]) == ["not testable"] and "measured: reproduced" in flagged["detail"].iloc[0]
    assert "undertrained: original+swiglu still improving (-0.060" in flagged["caveats"].iloc[0]
    stats = {s["point"]: s for s in training.point_stats(_rows(finals, {"original": 0.0, "original+swiglu": 0.06},
                                                                glu))}
    assert stats["original+swiglu"]["still_improving"] and not stats["original"]["still_improving"]
    table = training.summary_table(_rows(finals, {"original": 0.0, "original+swiglu": 0.06}, glu))
    assert table.set_index("variant").loc["original+swiglu", "last 20%"] == "-0.060 still improving"


def test_gqa_with_fewer_parameters_is_labelled_not_equal():
    base, other = {"params": 1000.0}, {"params": 920.0}
    assert caveats("mha", base, "gqa", other, "n_kv_heads") == ["not equal (-8% params)"]
    assert caveats("mha", base, "gqa", {"params": 995.0}, "n_kv_heads") == []


def _pt(name, tps, val):
    return {"point": name, "tokens_per_s": summarize(tps).mean, "tps": summarize(tps), "val": summarize(val)}


def test_front_is_not_drawn_through_overlapping_intervals():
    fast = _pt("fast", [2000, 2010, 1990], [3.00, 3.01, 2.99])
    slow = _pt("slow", [1000, 1010, 990], [2.50, 2.51, 2.49])
    noisy = _pt("noisy", [1500, 1900, 1100], [2.80, 2.60, 3.00])  # overlaps both on throughput
    assert front_segments([fast, slow], [True, True]) == [("slow", "fast")]
    assert front_segments([fast, noisy, slow], [True, True, True]) == []
    one = [_pt("a", [2000], [3.0]), _pt("b", [1000], [2.5])]
    assert front_segments(one, [True, True]) == []  # one seed: no intervals, no front
    assert "no front is drawn" in pareto_caption(one, ["a", "b"], [])


def test_curve_caption_names_the_scored_documents():
    new = pd.DataFrame([{"curve_eval_tokens": 4100, "curve_eval_docs": 2, "eval_tokens": 16400, "eval_docs": 6}])
    assert "the first 2 of the 6 test documents" in curve_caption(new)
    same = pd.DataFrame([{"curve_eval_tokens": 16400, "curve_eval_docs": 6, "eval_tokens": 16400, "eval_docs": 6}])
    assert "the last curve point is the final loss" in curve_caption(same)
    old = pd.DataFrame([{"config.eval.curve_tokens": 4096, "eval_tokens": 32768}])  # rows from before documents
    assert "first 4,096 tokens of the held-out split" in curve_caption(old)
