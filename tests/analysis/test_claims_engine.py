"""The claims engine: intervals over seeds x documents, Holm over the lengths a claim covers, the parity gate and
the undertrained rule (ablate.analysis.crossed, ablate.analysis.claims)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ablate.analysis.claims import (INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Cell, Context, Check, contrast,
                           extrapolation_claims, judge)
from ablate.analysis.crossed import crossed_estimate, holm, seed_estimate, weighted_matrix


def _coverage(sa, sb, se, S=3, D=30, reps=1500, seed=0, fn=crossed_estimate):
    rng = np.random.default_rng(seed)
    hit = 0
    for _ in range(reps):
        y = rng.normal(0, sa, (S, 1)) + rng.normal(0, sb, (1, D)) + rng.normal(0, se, (S, D))
        lo, hi = fn(y).interval()
        hit += lo <= 0.0 <= hi
    return hit / reps


@pytest.mark.parametrize("sa,sb,se", [(1.0, 0.05, 0.5), (0.05, 1.0, 0.5), (0.5, 0.5, 0.5)])
def test_crossed_interval_covers_seed_and_document_variation(sa, sb, se):
    assert 0.91 <= _coverage(sa, sb, se) <= 0.99


def test_a_seed_only_interval_misses_document_variation():
    """The text held fixed: per-seed means share every document's effect, and their interval undercovers (the
    reason the crossed interval exists)."""
    per_seed = lambda y: seed_estimate(y.mean(1))  # noqa: E731
    assert _coverage(0.05, 1.0, 0.3, fn=per_seed) < 0.6


def test_crossed_estimate_reduces_to_the_paired_t_with_one_document():
    y = np.array([[0.1], [0.3], [0.2]])
    e, t = crossed_estimate(y), seed_estimate([0.1, 0.3, 0.2])
    assert e.method == "seeds" and e.delta == pytest.approx(t.delta) and e.se == pytest.approx(t.se) and e.df == 2


def test_one_seed_has_no_interval():
    e = crossed_estimate(np.ones((1, 5)))
    assert e.se is None and e.interval() == (None, None)


def test_holm_matches_the_step_down_rule():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_weighted_matrix_mean_is_the_token_weighted_loss():
    sums, tokens = np.array([[10.0, 1.0, 30.0]]), np.array([5, 1, 20])
    assert weighted_matrix(sums, tokens).mean() == pytest.approx(41.0 / 26.0)


def _cell(seed_loss, docs=8, spread=0.3, seed=0, eval_set="E"):
    """A cell whose per-seed mean loss is ``seed_loss[s]``, spread over ``docs`` equal documents."""
    rng = np.random.default_rng(seed)
    doc_eff = rng.normal(0, spread, docs)
    tokens = (100,) * docs
    dl = {s: tuple((mu + doc_eff - doc_eff.mean()) * 100) for s, mu in seed_loss.items()}
    return Cell({s: math.exp(mu) for s, mu in seed_loss.items()}, dl, tokens, eval_set)


def test_contrast_uses_documents_only_when_every_term_has_the_same_sample():
    a, b = _cell({0: 2.0, 1: 2.1, 2: 2.05}), _cell({0: 1.5, 1: 1.6, 2: 1.55}, seed=1)
    e = contrast([(1.0, a), (-1.0, b)])
    assert e.method == "seeds x documents" and e.delta == pytest.approx(0.5) and e.units == 8
    other = _cell({0: 1.5, 1: 1.6, 2: 1.55}, eval_set="F")
    assert contrast([(1.0, a), (-1.0, other)]).method == "seeds"
    bare = Cell({0: math.exp(1.5), 1: math.exp(1.6), 2: math.exp(1.55)})
    assert contrast([(1.0, a), (-1.0, bare)]).method == "seeds"


def _est(delta, se=0.01, df=10):
    from ablate.analysis.crossed import Estimate

    return Estimate(delta, se, df, 3, 20, "seeds x documents")


def test_judge_holds_only_at_every_length():
    good = [Check(f"{k}×", _est(-0.2), "better") for k in (2, 4, 8)]
    assert judge(good)[0] == REPRODUCED
    open_ = good + [Check("16×", _est(-0.01, se=0.02), "better")]
    v, by, detail = judge(open_)
    assert v == INCONCLUSIVE and "holds at 2×, 4×, 8×" in detail and "open at 16×" in detail and "16×" in by
    against = good + [Check("16×", _est(+0.2), "better")]
    assert judge(against)[0] == NOT_REPRODUCED


def test_holm_makes_a_marginal_length_open():
    """One-sided p = 0.02 at each of 4 lengths: significant alone (< 0.025: the 95% interval excludes 0), not after
    Holm (4 x 0.02 > 0.025 for the smallest)."""
    from ablate.analysis.stats import t_ppf

    se = 1.0
    delta = -t_ppf(0.98, 10) * se  # one-sided p = 0.02
    tests = [Check(f"{k}×", _est(delta, se=se), "better") for k in (2, 4, 8, 16)]
    assert judge(tests[:1])[0] == REPRODUCED
    assert judge(tests)[0] == INCONCLUSIVE


def _shape(train_len=64, seeds=(0, 1, 2), at_train=None):
    lens = [train_len * f for f in (1, 2, 4, 8, 16)]
    growth = {"sinusoidal": [0, 0.7, 1.1, 1.4, 1.6], "rope": [0, 0.1, 0.3, 0.5, 0.8], "t5_bias": [0, 0.05, 0.1, 0.2, 0.3],
              "alibi": [0, -0.01, -0.02, -0.02, -0.02], "rope_ntk": [0, 0.02, 0.1, 0.2, 0.3],
              "rope_dynamic_ntk": [0, 0.02, 0.08, 0.15, 0.25], "rope_yarn": [0, 0.02, 0.09, 0.17, 0.28],
              "rope_pi": [0, 0.6, 1.0, 1.3, 1.4]}
    at_train = at_train or {}
    cells = {}
    for pos, g in growth.items():
        base = 1.8 + at_train.get(pos, 0.0)
        for i, (L, d) in enumerate(zip(lens, g)):
            cells[(pos, L)] = _cell({s: base + d + 0.003 * s for s in seeds}, seed=i)
    trained = {p: ("rope" if p.startswith("rope_") else p) for p in growth}
    return cells, trained


def test_undertrained_variant_makes_its_claims_not_testable():
    cells, trained = _shape(at_train={"sinusoidal": 0.3})
    ok = {c.claim: c for c in extrapolation_claims(cells, 64, Context(trained=trained))}
    assert ok["Sinusoidal perplexity explodes just past the training length"].verdict == REPRODUCED
    flagged = {c.claim: c for c in extrapolation_claims(cells, 64, Context(trained=trained,
                                                                        undertrained={"sinusoidal": 1.35}))}
    c = flagged["Sinusoidal perplexity explodes just past the training length"]
    assert c.verdict == NOT_TESTABLE and "undertrained" in c.caveats and "measured: reproduced" in c.detail


def test_parity_claim_with_an_undertrained_variant_is_not_testable():
    """Off parity at train_len because a variant is undertrained says nothing about the published parity of
    converged models: not testable (the measured verdict in the detail), not "not reproduced"."""
    name = "At the training length the position methods are on par"
    cells, trained = _shape()
    assert {c.claim: c for c in extrapolation_claims(cells, 64, Context(trained=trained))}[name].verdict == REPRODUCED
    off, _ = _shape(at_train={"sinusoidal": 0.3})  # x1.35 of ALiBi at train_len
    plain = {c.claim: c for c in extrapolation_claims(off, 64, Context(trained=trained))}[name]
    assert plain.verdict == NOT_REPRODUCED  # off parity with nothing flagged: contradicted
    flagged = {c.claim: c for c in extrapolation_claims(off, 64, Context(trained=trained,
                                                                     undertrained={"sinusoidal": 1.35}))}[name]
    assert flagged.verdict == NOT_TESTABLE and "undertrained" in flagged.caveats
    assert "measured: not reproduced" in flagged.detail


def test_parity_gate_blocks_comparisons_of_models_off_par_at_train_len():
    cells, trained = _shape(at_train={"t5_bias": 0.2})  # t5 x1.22 of rope at train_len
    res = {c.claim: c for c in extrapolation_claims(cells, 64, Context(trained=trained))}
    t5 = res["T5 bias degrades more slowly than rotary"]
    assert t5.verdict == NOT_TESTABLE and "parity gate" in t5.caveats
    # the scalings compare against the model they rescale: on par by construction, so they are scored
    assert res["NTK-aware scaling without fine-tuning keeps perplexity lower than plain RoPE past the training "
               "length"].verdict == REPRODUCED
    cells2, _ = _shape(at_train={"t5_bias": 0.02})  # x1.02: inside the gate
    res2 = {c.claim: c for c in extrapolation_claims(cells2, 64, Context(trained=trained))}
    assert res2["T5 bias degrades more slowly than rotary"].verdict == REPRODUCED


def test_claims_name_the_protocol_and_show_every_length():
    cells, trained = _shape()
    res = extrapolation_claims(cells, 64, Context(trained=trained, protocol="sliding window, stride 64",
                                                  mode="sliding"))
    flat = next(c for c in res if c.claim.startswith("ALiBi stays flat"))
    assert flat.protocol == "sliding window, stride 64" and "early-token" not in flat.caveats
    assert [p.split()[0] for p in flat.by_length.split("; ")] == ["2×", "4×", "8×", "16×"]
    nonover = extrapolation_claims(cells, 64, Context(trained=trained))
    assert "early-token" in next(c for c in nonover if c.claim.startswith("ALiBi stays flat")).caveats


def test_a_single_test_holds_exactly_when_the_shown_interval_excludes_the_threshold():
    from ablate.analysis.stats import t_ppf

    for q, want in ((0.97, INCONCLUSIVE), (0.98, REPRODUCED)):  # one-sided p 0.03 (CI spans 0) / 0.02 (excludes)
        e = _est(-t_ppf(q, 10) * 1.0, se=1.0)
        lo, hi = e.interval()
        assert judge([Check("2×", e, "better")])[0] == want and (hi < 0) == (want == REPRODUCED)
