"""Published claims vs rows (`ablate.analysis.claims`): each verdict follows from the intervals, in both directions."""

from __future__ import annotations

import pytest

from ablate.analysis.claims import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, better_claim, claims_frame,
                           extrapolation_claims, parity_claim, threshold_claim)

SEEDS = (0, 1, 2)


def per_seed(*values):
    return dict(zip(SEEDS, values))


def test_threshold_claim_three_ways():
    base = per_seed(10.0, 10.2, 9.9)
    assert threshold_claim(per_seed(20.0, 21.0, 20.5), base, 1.5, above=True)[0] == REPRODUCED
    assert threshold_claim(per_seed(10.5, 10.6, 10.3), base, 1.5, above=True)[0] == NOT_REPRODUCED
    assert threshold_claim(per_seed(12.0, 25.0, 14.0), base, 1.5, above=True)[0] == INCONCLUSIVE
    assert threshold_claim(per_seed(10.0, 10.1, 9.8), base, 1.1, above=False)[0] == REPRODUCED
    one = threshold_claim({0: 30.0}, {0: 10.0}, 1.5, above=True)
    assert one[0] == INCONCLUSIVE and "1 seed" in one[1] and "×3.00" in one[1]


def test_threshold_claim_reports_the_geometric_ratio_and_interval():
    verdict, ours, _ = threshold_claim(per_seed(20.0, 20.0, 20.0), per_seed(10.0, 10.0, 10.0), 1.5, above=True)
    assert verdict == REPRODUCED and ours.startswith("×2.00 [2.00, 2.00]")


def test_better_claim_directions():
    worse = per_seed(10.0, 10.4, 9.7)
    assert better_claim(per_seed(8.0, 8.3, 7.8), worse)[0] == REPRODUCED
    assert better_claim(per_seed(12.0, 12.5, 11.6), worse)[0] == NOT_REPRODUCED
    # the same within 0.1%: equivalent within ±5%, which is not the claimed difference
    eq = better_claim(per_seed(10.01, 10.39, 9.71), worse)
    assert eq[0] == NOT_REPRODUCED and "equivalent" in eq[2]
    assert better_claim(per_seed(8.0, 13.0, 9.0), worse)[0] == INCONCLUSIVE
    assert better_claim({0: 8.0}, {0: 10.0})[0] == INCONCLUSIVE


def test_parity_and_not_worse():
    a = per_seed(10.0, 10.4, 9.7)
    assert parity_claim(a, per_seed(10.02, 10.41, 9.69))[0] == REPRODUCED
    assert parity_claim(a, per_seed(12.0, 12.5, 11.6))[0] == NOT_REPRODUCED
    assert parity_claim(a, per_seed(8.0, 8.3, 7.8))[0] == NOT_REPRODUCED  # much better is not "on par"
    assert parity_claim(a, per_seed(8.0, 8.3, 7.8), not_worse=True)[0] == REPRODUCED
    assert parity_claim(a, per_seed(7.0, 13.0, 10.0))[0] == INCONCLUSIVE


def test_loss_scale_claims_use_nats():
    base = per_seed(2.40, 2.42, 2.41)
    assert better_claim(per_seed(2.30, 2.33, 2.31), base, log_scale=False)[0] == REPRODUCED
    v, ours, _ = parity_claim(base, per_seed(2.401, 2.419, 2.411), log_scale=False)
    assert v == REPRODUCED and ours.startswith("Δ +0.0")


def _alibi_like(noise=0.0):
    """Per-seed perplexities with the published shape (ALiBi flat, sinusoidal explodes, rope degrades)."""
    lens = [64, 128, 256, 512, 1024]
    shape = {"sinusoidal": [6.0, 12.0, 19.0, 25.0, 31.0], "rope": [6.0, 6.8, 8.0, 10.0, 13.0],
             "t5_bias": [6.0, 6.3, 6.6, 7.0, 7.5], "alibi": [6.0, 5.95, 5.9, 5.9, 5.9],
             "rope_ntk": [6.0, 6.1, 6.5, 8.0, 10.0], "rope_dynamic_ntk": [6.0, 6.1, 6.4, 7.5, 9.0],
             "rope_yarn": [6.0, 6.2, 6.6, 7.6, 9.5], "rope_pi": [6.0, 11.0, 20.0, 28.0, 32.0]}
    out = {}
    for pos, vals in shape.items():
        for L, v in zip(lens, vals):
            out[(pos, L)] = {s: v * (1 + noise * (s - 1) * (0.3 if pos == "alibi" else 1.0)) + 0.01 * s
                             for s in SEEDS}
    return out


def test_extrapolation_claims_reproduced_on_the_published_shape():
    res = extrapolation_claims(_alibi_like(noise=0.002), 64)
    assert len(res) == 11
    verdicts = {r.claim: r.verdict for r in res}
    assert all(v == REPRODUCED for v in verdicts.values()), verdicts
    frame = claims_frame(res)
    assert list(frame.columns)[:2] == ["claim", "published"] and len(frame) == 11


def test_extrapolation_claims_not_reproduced_when_the_shape_is_inverted():
    ppl = _alibi_like(noise=0.002)
    for L in (128, 256, 512, 1024):  # ALiBi blows up, sinusoidal stays flat
        ppl[("alibi", L)], ppl[("sinusoidal", L)] = ppl[("sinusoidal", L)], {s: 6.0 + 0.01 * s for s in SEEDS}
    verdicts = {r.claim: r.verdict for r in extrapolation_claims(ppl, 64)}
    assert verdicts["Sinusoidal perplexity explodes just past the training length"] == NOT_REPRODUCED
    assert verdicts["ALiBi stays flat (even improves) far past the training length"] == NOT_REPRODUCED
    assert verdicts["ALiBi has the lowest perplexity at the longest length"] == NOT_REPRODUCED


def test_extrapolation_claims_with_one_seed_are_inconclusive():
    ppl = {k: {0: v[0]} for k, v in _alibi_like().items()}
    assert {r.verdict for r in extrapolation_claims(ppl, 64)} == {INCONCLUSIVE}


def test_missing_variants_drop_their_claims():
    ppl = {k: v for k, v in _alibi_like().items() if k[0] in ("alibi", "rope")}
    claims = {r.claim for r in extrapolation_claims(ppl, 64)}
    assert claims == {"Rotary degrades within a few hundred tokens past the training length",
                      "ALiBi stays flat (even improves) far past the training length",
                      "ALiBi has the lowest perplexity at the longest length",
                      "At the training length the position methods are on par"}


@pytest.mark.parametrize("bad", [{}, {("alibi", 64): {0: 5.0}}])
def test_no_longer_lengths_no_claims(bad):
    assert extrapolation_claims(bad, 64) == []
