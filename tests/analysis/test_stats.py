"""ablate.analysis.stats: t quantiles, seed summaries, differences with the significance rule, Pareto fronts; equivalence
tests, detectable effects and verdicts; normal quantile, Wilson intervals and exact binomial tails.

Reference constants marked "SciPy" were computed with scipy 1.17.1 (scipy.stats.t/norm/binom/nct, ttest_1samp,
ttest_ind, binomtest(...).proportion_ci(method="wilson")) and transcribed; the tests do not import SciPy.
"""

import math
import random
from decimal import Decimal, localcontext
from fractions import Fraction
from statistics import NormalDist

import pytest

from ablate.analysis.stats import (NOT_SIGNIFICANT, ONE_SEED, SIGNIFICANT, VERDICT_LABELS, above_chance, binomial_sf,
                          compare, min_detectable_effect, norm_ppf, pareto_front, summarize, t_cdf, t_ppf, tost,
                          verdict, wilson_interval)
from ablate.analysis.distributions import _bd0, _binom_logpmf, _stirlerr

# Student t quantiles (SciPy; df=2 also from the closed form q sqrt(2 / (1 - q^2)), q = 2p - 1)
T975 = {2: 4.302652729749462, 3: 3.1824463052837078, 4: 2.7764451051977934, 8: 2.306004135204166}
T95 = {2: 2.9199855803537242, 3: 2.3533634348018233, 4: 2.1318467863266495}
T80 = {2: 1.0606601717798214, 3: 0.9784723123633042, 4: 0.9409645772351816, 8: 0.8888895177670202}


def t975_df1() -> float:  # Cauchy: tan(pi (p - 1/2))
    return math.tan(math.pi * 0.475)


def t975_df2() -> float:  # closed form for 2 degrees of freedom: q sqrt(2 / (1 - q^2)), q = 2p - 1
    q = 0.95
    return q * math.sqrt(2.0 / (1.0 - q * q))


def test_t_quantiles_match_closed_forms_and_tables():
    assert t_ppf(0.975, 1) == pytest.approx(t975_df1(), rel=1e-10)
    assert t_ppf(0.975, 2) == pytest.approx(t975_df2(), rel=1e-10)
    # printed tables (to the digits they give)
    for df, want in ((3, 3.182446305), (4, 2.776445105), (9, 2.262157163), (30, 2.042272456)):
        assert t_ppf(0.975, df) == pytest.approx(want, abs=1e-8)
    assert t_ppf(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)  # normal limit
    assert t_ppf(0.025, 4) == pytest.approx(-t_ppf(0.975, 4))
    assert t_ppf(0.5, 3) == 0.0
    for df in (1, 2.5, 7):
        for t in (-3.0, -0.4, 0.0, 1.1, 5.0):
            assert t_cdf(t, df) + t_cdf(-t, df) == pytest.approx(1.0, abs=1e-12)
            assert t_cdf(t_ppf(t_cdf(t, df), df), df) == pytest.approx(t_cdf(t, df), abs=1e-10)
    with pytest.raises(ValueError):
        t_ppf(1.0, 3)


def test_summarize_hand_computed_interval():
    xs = [2.0, 2.2, 2.4]
    s = summarize(xs)
    mean, std = 2.2, 0.2  # sum of squares 0.08 / (3 - 1) = 0.04
    hw = t975_df2() * std / math.sqrt(3)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(mean), pytest.approx(std))
    assert s.half_width == pytest.approx(hw, rel=1e-10)
    assert (s.lo, s.hi) == (pytest.approx(mean - hw), pytest.approx(mean + hw))
    assert s.fmt(".3f") == f"2.200 ± {hw:.3f}"
    # two seeds: t with 1 degree of freedom
    s2 = summarize([1.0, 1.5])
    assert s2.half_width == pytest.approx(t975_df1() * (math.sqrt(0.125) / math.sqrt(2)), rel=1e-10)


def test_summarize_ignores_missing_and_handles_small_n():
    assert summarize([2.0, None, float("nan"), float("inf"), 2.4]).n == 2
    one = summarize([3.0])
    assert (one.n, one.mean, one.std, one.half_width) == (1, 3.0, None, None)
    assert one.fmt() == "3.0000"
    none = summarize([])
    assert none.mean is None and none.fmt() == "—"


def test_compare_paired_welch_and_the_spread_rule():
    # consistent improvement much larger than the seed spread: significant (paired)
    base, other = [2.50, 2.60, 2.55], [2.30, 2.41, 2.34]
    c = compare(base, other, paired=True)
    diffs = [b - a for a, b in zip(base, other)]
    d = summarize(diffs)
    assert c.method == "paired" and c.delta == pytest.approx(d.mean)
    assert (c.lo, c.hi) == (pytest.approx(d.lo), pytest.approx(d.hi))
    assert c.spread == pytest.approx(max(summarize(base).std, summarize(other).std))
    assert c.verdict == SIGNIFICANT and c.significant and c.fmt("+.2f") == "-0.20 (sig.)"
    # the same numbers unpaired: Welch, hand-computed
    w = compare(base, other)
    sa, sb = summarize(base), summarize(other)
    va, vb = sa.std ** 2 / 3, sb.std ** 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    hw = t_ppf(0.975, df) * math.sqrt(va + vb)
    assert w.method == "welch"
    assert (w.lo, w.hi) == (pytest.approx(w.delta - hw), pytest.approx(w.delta + hw))
    # a difference smaller than the seed spread is not significant, even if the paired interval excludes 0
    base2, other2 = [2.0, 2.5, 3.0], [1.99, 2.489, 2.991]
    c2 = compare(base2, other2, paired=True)
    assert c2.hi < 0 and abs(c2.delta) < c2.spread
    assert c2.verdict == NOT_SIGNIFICANT and c2.fmt("+.3f").endswith("(n.s.)")
    # one seed: no test
    c3 = compare([2.0], [1.9])
    assert c3.verdict == ONE_SEED and c3.delta == pytest.approx(-0.1) and c3.lo is None
    assert compare([], [1.0]).delta is None


def test_pareto_front_hand_example():
    # (tokens/s, loss): higher throughput and lower loss are better
    pts = {"fast-bad": (1000, 3.0), "mid": (800, 2.5), "slow-good": (300, 2.0), "dominated": (700, 2.8),
           "tie-dominated": (800, 2.6), "slowest-worst": (100, 3.5), "missing": (None, 2.0)}
    names = list(pts)
    front = pareto_front([pts[n][0] for n in names], [pts[n][1] for n in names], x_better="high", y_better="low")
    assert {n for n, f in zip(names, front) if f} == {"fast-bad", "mid", "slow-good"}
    # step time (lower is better) gives the same front
    front2 = pareto_front([1 / pts[n][0] if pts[n][0] else None for n in names], [pts[n][1] for n in names],
                          x_better="low", y_better="low")
    assert front2 == front
    assert pareto_front([1, 1], [2, 2]) == [True, True]  # equal optimal points are both on the front
    with pytest.raises(ValueError):
        pareto_front([1], [1, 2])
    with pytest.raises(ValueError):
        pareto_front([1], [1], x_better="up")


# ---------------------------------------------------------------------------------------------------------------
# reference constants themselves


def test_transcribed_t_quantiles_agree_with_closed_form_and_t_ppf():
    for p, table in ((0.975, T975), (0.95, T95), (0.8, T80)):
        q = 2 * p - 1
        assert table[2] == pytest.approx(q * math.sqrt(2.0 / (1.0 - q * q)), rel=1e-14)
        for df, want in table.items():
            assert t_ppf(p, df) == pytest.approx(want, rel=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# TOST

# four seeds; per-seed differences other - base = [0.005, -0.002, 0.008, 0.002]
EQ_BASE = [1.00, 1.02, 0.98, 1.01]
EQ_OTHER = [1.005, 1.018, 0.988, 1.012]


def test_tost_paired_hand_computed_interval_and_scipy_p_value():
    # mean 0.00325; squared deviations 3.0625e-6 + 2.75625e-5 + 2.25625e-5 + 1.5625e-6 = 5.475e-5
    mean, sd = 0.00325, math.sqrt(5.475e-5 / 3)
    hw = T95[3] * sd / 2.0  # 90% interval: t_{0.95, 3} * sd / sqrt(4)
    e = tost(EQ_BASE, EQ_OTHER, 0.02, paired=True)
    assert (e.method, e.n, e.n_base, e.n_other, e.margin) == ("paired", 4, 4, 4, 0.02)
    assert e.delta == pytest.approx(mean, abs=1e-12)
    assert (e.lo, e.hi) == (pytest.approx(mean - hw, abs=1e-12), pytest.approx(mean + hw, abs=1e-12))
    assert (e.lo, e.hi) == (pytest.approx(-0.0017767865002600415, abs=1e-12),  # SciPy ttest_1samp CI 90%
                            pytest.approx(0.00827678650025999, abs=1e-12))
    # SciPy: ttest_1samp(d, +0.02, alternative="less") (the larger of the two one-sided p-values)
    assert e.p_value == pytest.approx(0.002159447224111018, rel=1e-8)
    assert e.equivalent
    # a margin just below the interval's upper end: not equivalent (and p above alpha)
    e2 = tost(EQ_BASE, EQ_OTHER, 0.008, paired=True)
    assert not e2.equivalent and e2.hi > 0.008 and e2.p_value > 0.05
    # a margin just above it: equivalent
    assert tost(EQ_BASE, EQ_OTHER, 0.0083, paired=True).equivalent


def test_tost_welch_is_wider_than_paired_on_the_same_seeds():
    e = tost(EQ_BASE, EQ_OTHER, 0.02)
    sa, sb = summarize(EQ_BASE), summarize(EQ_OTHER)
    va, vb = sa.std ** 2 / 4, sb.std ** 2 / 4
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 3)
    assert df == pytest.approx(5.596965729227719, rel=1e-9)  # SciPy ttest_ind(equal_var=False).df
    assert e.method == "welch"
    # SciPy ttest_ind(..., equal_var=False).confidence_interval(0.90)
    assert (e.lo, e.hi) == (pytest.approx(-0.017858215207627547, abs=1e-11),
                            pytest.approx(0.024358215207627487, abs=1e-11))
    # SciPy: max(ttest_ind(other + m, base, alternative="greater"), ttest_ind(other - m, base, alternative="less"))
    assert e.p_value == pytest.approx(0.08640861915886458, rel=1e-8)
    assert not e.equivalent  # the seed-to-seed spread is not cancelled without pairing
    assert tost(EQ_BASE, EQ_OTHER, 0.02, paired=True).equivalent
    # alpha sets the interval: alpha = 0.025 gives the 95% interval
    e95 = tost(EQ_BASE, EQ_OTHER, 0.02, alpha=0.025)
    assert (e95.lo, e95.hi) == (pytest.approx(-0.02345269558728839, abs=1e-11),
                                pytest.approx(0.02995269558728834, abs=1e-11))


def test_tost_edge_cases():
    # pairs with a missing side are dropped
    e = tost(EQ_BASE + [None, 5.0], EQ_OTHER + [1.0, float("nan")], 0.02, paired=True)
    assert e.n == 4 and e.p_value == pytest.approx(tost(EQ_BASE, EQ_OTHER, 0.02, paired=True).p_value)
    # fewer than two values on a side: never equivalent, no interval
    one = tost([1.0], [1.0, 1.0], 0.5)
    assert not one.equivalent and one.lo is None and one.p_value is None and one.delta == 0.0
    assert tost([], [], 0.5).delta is None
    # zero spread: the interval is the point delta
    z = tost([1.0, 1.0], [1.01, 1.01], 0.02)
    assert (z.lo, z.hi, z.equivalent, z.p_value) == (pytest.approx(0.01), pytest.approx(0.01), True, 0.0)
    assert not tost([1.0, 1.0], [1.03, 1.03], 0.02).equivalent
    for bad in (0.0, -0.1, math.inf, math.nan):
        with pytest.raises(ValueError):
            tost(EQ_BASE, EQ_OTHER, bad)
    with pytest.raises(ValueError):
        tost(EQ_BASE, EQ_OTHER, 0.02, alpha=0.5)


def test_tost_properties_on_random_data():
    rng = random.Random(1234)
    for _ in range(120):
        n = rng.randint(2, 8)
        paired = rng.random() < 0.5
        base = [rng.gauss(2.0, 0.05) for _ in range(n)]
        other = [b + rng.gauss(rng.uniform(-0.05, 0.05), 0.02) for b in base] if paired else \
            [rng.gauss(2.0 + rng.uniform(-0.05, 0.05), 0.05) for _ in range(rng.randint(2, 8))]
        margin = rng.uniform(0.005, 0.2)
        e = tost(base, other, margin, paired=paired)
        # the p-value and the interval give the same decision
        assert e.equivalent == (e.p_value < 0.05)
        assert e.lo <= e.delta <= e.hi
        # equivalence is monotone in the margin
        if e.equivalent:
            assert tost(base, other, margin * 1.5, paired=paired).equivalent
        else:
            assert not tost(base, other, margin / 1.5, paired=paired).equivalent
        # shifting both sides leaves the test unchanged; the 90% interval lies inside compare's 95% interval
        s = tost([x + 7.0 for x in base], [x + 7.0 for x in other], margin, paired=paired)
        assert s.p_value == pytest.approx(e.p_value, abs=1e-7)
        c = compare(base, other, paired=paired)
        assert c.lo <= e.lo and e.hi <= c.hi


# ---------------------------------------------------------------------------------------------------------------
# minimum detectable effect


def test_min_detectable_effect_transcribed_values():
    # paired, n=3 seeds, sd of the differences 0.01: (t_{.975,2} + t_{.8,2}) * 0.01 / sqrt(3)
    want = (T975[2] + T80[2]) * 0.01 / math.sqrt(3)
    assert want == pytest.approx(0.030965101474461248, rel=1e-12)
    assert min_detectable_effect(0.01, 3) == pytest.approx(want, rel=1e-10)
    # unpaired, 5 + 5 seeds, pooled sd 1: df 8, se sqrt(2/5)
    assert min_detectable_effect(1.0, 5, paired=False) == pytest.approx((T975[8] + T80[8]) * math.sqrt(0.4),
                                                                         rel=1e-10)
    assert min_detectable_effect(1.0, 5, paired=False, n_other=5) == min_detectable_effect(1.0, 5, paired=False)
    # unequal sides: 3 + 3 -> df 4
    assert min_detectable_effect(2.0, 3, paired=False, n_other=3) == pytest.approx(
        (T975[4] + T80[4]) * 2.0 * math.sqrt(2 / 3), rel=1e-10)
    # linear in sd, shrinks with n, grows with power and with stricter alpha
    assert min_detectable_effect(0.02, 3) == pytest.approx(2 * want, rel=1e-10)
    assert min_detectable_effect(0.01, 10) < min_detectable_effect(0.01, 5) < want
    assert min_detectable_effect(0.01, 3, power=0.9) > want
    assert min_detectable_effect(0.01, 3, alpha=0.01) > want
    assert min_detectable_effect(0.0, 4) == 0.0
    # too few seeds: infinite
    assert min_detectable_effect(0.01, 1) == math.inf
    assert min_detectable_effect(None, 1) == math.inf
    assert min_detectable_effect(0.01, 5, paired=False, n_other=1) == math.inf
    with pytest.raises(ValueError):
        min_detectable_effect(-1.0, 3)
    with pytest.raises(ValueError):
        min_detectable_effect(0.01, 3, power=1.0)


def test_min_detectable_effect_has_about_the_stated_power():
    # exact power of the two-sided paired t-test at Δ = MDE (SciPy noncentral t, sd = 1): the approximation is
    # close at 10 seeds and somewhat optimistic at 3
    assert min_detectable_effect(1.0, 10) == pytest.approx(0.9947137350096734, rel=1e-9)
    assert min_detectable_effect(1.0, 3) == pytest.approx(3.096510147446125, rel=1e-9)
    # brute force: simulate paired t-tests with true Δ = MDE and count rejections (exact power 0.79900 at n=10)
    rng = random.Random(7)
    n, sims = 10, 20000
    delta = min_detectable_effect(1.0, n)
    crit = t_ppf(0.975, n - 1)
    hits = 0
    for _ in range(sims):
        d = [rng.gauss(delta, 1.0) for _ in range(n)]
        mean = math.fsum(d) / n
        sem = math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1) / n)
        hits += abs(mean / sem) > crit
    assert hits / sims == pytest.approx(0.7989964904488682, abs=0.015)  # ~5 standard errors


# ---------------------------------------------------------------------------------------------------------------
# verdicts


def test_verdict_better_and_worse_hand_computed():
    base, other = [2.40, 2.42, 2.41], [2.31, 2.35, 2.33]  # differences -0.09, -0.07, -0.08: sd 0.01
    hw = T975[2] * 0.01 / math.sqrt(3)
    v = verdict(base, other, margin=0.02, paired=True)
    assert v.label == "better" and v.method == "paired" and v.n == 3
    assert v.delta == pytest.approx(-0.08)
    assert (v.lo, v.hi) == (pytest.approx(-0.08 - hw), pytest.approx(-0.08 + hw))
    assert v.text == "better (Δ -0.080 [-0.105, -0.055])" and str(v) == v.text
    assert v.mde == pytest.approx((T975[2] + T80[2]) * 0.01 / math.sqrt(3))
    assert not v.within_margin and v.margin == 0.02
    # higher is better (e.g. accuracy): the same numbers are worse
    w = verdict(base, other, margin=0.02, paired=True, lower_is_better=False)
    assert w.label == "worse" and w.text == "worse (Δ -0.080 [-0.105, -0.055])"
    # the interval is compare's interval
    c = compare(base, other, paired=True)
    assert (v.lo, v.hi) == (pytest.approx(c.lo), pytest.approx(c.hi))
    cw = compare(base, other)
    vw = verdict(base, other, margin=0.02)
    assert vw.method == "welch" and (vw.lo, vw.hi) == (pytest.approx(cw.lo), pytest.approx(cw.hi))


def test_verdict_significant_but_within_margin_is_better_not_equivalent():
    base = [1.00, 1.01, 0.99]
    other = [0.9990, 1.0089, 0.9891]  # differences -0.0010, -0.0011, -0.0009; seed spread 0.01
    v = verdict(base, other, margin=0.02, paired=True)
    assert v.hi < 0 and v.label == "better"
    assert v.within_margin  # "better, but within ±0.02"
    assert v.p_equivalence < 0.05
    # the old rule calls this "not significant" (smaller than the seed spread)
    assert compare(base, other, paired=True).verdict == NOT_SIGNIFICANT


def test_verdict_equivalent_inconclusive_and_na():
    eq = verdict([1.0, 1.001, 0.999], [1.0005, 0.9995, 1.0002], margin=0.02)
    assert eq.label == "equivalent" and eq.text == "equivalent within ±0.02" and eq.within_margin
    assert eq.lo < 0 < eq.hi
    # paired seeds that are equivalent, while Welch on the same numbers is inconclusive
    assert verdict(EQ_BASE, EQ_OTHER, margin=0.02, paired=True).label == "equivalent"
    assert verdict(EQ_BASE, EQ_OTHER, margin=0.02).label == "inconclusive"
    # inconclusive: noisy seeds; the detectable effect uses the pooled sd (hand computed)
    base, other = [1.0, 1.1, 0.9], [1.05, 0.95, 1.02]
    var_b = 0.01  # deviations ±0.1, 0: 0.02 / 2
    var_o = (13 ** 2 + 17 ** 2 + 4 ** 2) / 300 ** 2 / 2  # mean 3.02/3: deviations 13/300, -17/300, 4/300
    pooled = math.sqrt((var_b + var_o) / 2)
    mde = (T975[4] + T80[4]) * pooled * math.sqrt(2 / 3)
    assert mde == pytest.approx(0.24123414327003737, rel=1e-12)  # SciPy
    v = verdict(base, other, margin=0.02)
    assert v.label == "inconclusive" and not v.within_margin
    assert v.mde == pytest.approx(0.24123414327003737, rel=1e-10)
    assert (v.lo, v.hi) == (pytest.approx(-0.20043932363309755, abs=1e-10),  # SciPy Welch 95% interval
                            pytest.approx(0.21377265696643075, abs=1e-10))
    assert v.text == "inconclusive (detectable Δ ≥ 0.24 with 3 seeds)"
    u = verdict(base, other + [1.0], margin=0.02)
    assert u.label == "inconclusive" and u.text.endswith("with 3 vs 4 seeds)") and u.n == 3
    # fewer than two values on a side
    na = verdict([2.0], [1.9, 1.8], margin=0.02)
    assert (na.label, na.text, na.lo, na.mde, na.n) == ("n/a", ONE_SEED, None, None, 1)
    assert na.delta == pytest.approx(-0.15)
    # paired with a single complete pair
    assert verdict([1.0, None, 3.0], [1.1, 2.0, None], margin=0.1, paired=True).text == ONE_SEED
    none = verdict([], [1.0], margin=0.1)
    assert none.label == "n/a" and none.delta is None
    # zero spread on both sides
    assert verdict([1.0, 1.0], [0.5, 0.5], margin=0.02).text == "better (Δ -0.50 [-0.50, -0.50])"
    assert verdict([1.0, 1.0], [1.0, 1.0], margin=0.02).label == "equivalent"
    with pytest.raises(TypeError):
        verdict([1.0, 2.0], [1.0, 2.0])  # the margin must be stated
    with pytest.raises(ValueError):
        verdict([1.0, 2.0], [1.0, 2.0], margin=0.0)


def test_verdict_properties_on_random_data():
    rng = random.Random(99)
    swap = {"better": "worse", "worse": "better"}
    seen = set()
    for _ in range(150):
        n = rng.randint(1, 6)
        paired = rng.random() < 0.5
        base = [rng.gauss(2.0, 0.03) for _ in range(n)]
        if paired:
            other = [b + rng.gauss(rng.choice([0.0, 0.02, -0.05]), rng.choice([0.001, 0.01, 0.05])) for b in base]
        else:
            other = [rng.gauss(2.0 + rng.choice([0.0, 0.02, -0.05]), 0.03) for _ in range(rng.randint(1, 6))]
        margin = rng.choice([0.005, 0.02, 0.1])
        lower = rng.random() < 0.5
        v = verdict(base, other, margin=margin, paired=paired, lower_is_better=lower)
        seen.add(v.label)
        assert v.label in VERDICT_LABELS and v.text.startswith(v.label)
        # swapping base and other with the direction flipped: the same verdict, the interval mirrored
        s = verdict(other, base, margin=margin, paired=paired, lower_is_better=not lower)
        assert s.label == v.label and s.within_margin == v.within_margin and s.n == v.n
        # swapping only base and other: better <-> worse
        assert verdict(other, base, margin=margin, paired=paired, lower_is_better=lower).label == \
            swap.get(v.label, v.label)
        if v.label == "n/a":
            assert min(v.n_base, v.n_other) < 2
            continue
        assert s.delta == pytest.approx(-v.delta, abs=1e-12)
        assert (s.lo, s.hi) == (pytest.approx(-v.hi, abs=1e-12), pytest.approx(-v.lo, abs=1e-12))
        assert s.mde == pytest.approx(v.mde)
        # the branches
        excludes_zero = v.lo > 0 or v.hi < 0
        e = tost(base, other, margin, paired=paired)
        assert v.within_margin == e.equivalent
        assert (v.label in ("better", "worse")) == excludes_zero
        if not excludes_zero:
            assert v.label == ("equivalent" if e.equivalent else "inconclusive")
        if v.label in ("better", "worse"):
            assert (v.label == "better") == ((v.delta < 0) == lower)
    assert seen == set(VERDICT_LABELS)


# ---------------------------------------------------------------------------------------------------------------
# normal quantile, Wilson intervals, binomial tails


def test_norm_ppf_known_values():
    known = {0.975: 1.959963984540054, 0.8: 0.8416212335729143, 0.9: 1.2815515655446004,
             0.995: 2.5758293035489004, 0.999: 3.090232306167813, 0.3: -0.5244005127080409,
             0.02425: -1.972961051311885, 1e-10: -6.361340902404056, 1e-300: -37.0470962993612}  # SciPy
    for p, want in known.items():
        assert norm_ppf(p) == pytest.approx(want, rel=1e-14, abs=1e-15)
    assert norm_ppf(0.5) == 0.0
    for p in (0.025, 0.2, 0.4999, 1e-5):
        assert norm_ppf(p) == pytest.approx(-norm_ppf(1.0 - p), rel=1e-10)  # 1 - p is rounded
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            norm_ppf(p)
    # an independent implementation (Wichura's AS241 in the standard library) on a grid, and the round trip
    ref = NormalDist()
    for i in range(1, 2000):
        p = i / 2000
        assert norm_ppf(p) == pytest.approx(ref.inv_cdf(p), rel=1e-13, abs=1e-14)
    for x in (-30.0, -8.0, -3.3, -0.7, 0.2):
        p = 0.5 * math.erfc(-x / math.sqrt(2))
        assert norm_ppf(p) == pytest.approx(x, rel=1e-13)
    # far tail, where the normal density underflows
    assert math.isfinite(norm_ppf(5e-324)) and norm_ppf(5e-324) < -38


def test_wilson_interval_transcribed_values():
    cases = {(0, 10): (0.0, 0.27753279986288926), (5, 10): (0.236593090512564, 0.7634069094874361),
             (10, 10): (0.7224672001371109, 1.0), (81, 263): (0.2552885198782742, 0.36620957698280004),
             (1, 1): (0.20654931437723745, 1.0), (3, 7): (0.1582198552514697, 0.7495416354723428)}  # SciPy
    for (k, n), (lo, hi) in cases.items():
        got = wilson_interval(k, n)
        assert got == (pytest.approx(lo, abs=1e-14), pytest.approx(hi, abs=1e-14))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(81, 263, 0.99) == (pytest.approx(0.24013690268760768, abs=1e-14),
                                              pytest.approx(0.3852825023182298, abs=1e-14))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for bad in ((-1, 5), (6, 5), (1.5, 5), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, confidence=1.0)


def test_wilson_interval_properties():
    rng = random.Random(5)
    z = 1.959963984540054
    for _ in range(500):
        n = rng.randint(1, 2000)
        k = rng.randint(0, n)
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
        # the bounds solve the score equation (k/n - pi)^2 = z^2 pi (1 - pi) / n
        for b in (lo, hi):
            if 0.0 < b < 1.0:
                assert (k / n - b) ** 2 == pytest.approx(z * z * b * (1 - b) / n, rel=1e-9, abs=1e-15)
        # mirror symmetry, narrowing with n at the same proportion, widening with confidence
        mlo, mhi = wilson_interval(n - k, n)
        assert (mlo, mhi) == (pytest.approx(1 - hi, abs=1e-12), pytest.approx(1 - lo, abs=1e-12))
        lo4, hi4 = wilson_interval(4 * k, 4 * n)
        assert hi4 - lo4 < hi - lo
        lo99, hi99 = wilson_interval(k, n, 0.99)
        assert lo99 <= lo and hi <= hi99 and hi99 - lo99 > hi - lo


def _sf_exact(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)), Fraction(0))


def test_binomial_sf_against_exact_fractions():
    for n in list(range(0, 26)) + [40, 63]:
        for p in (Fraction(1, 2), Fraction(1, 3), Fraction(1, 100), Fraction(9, 10), Fraction(1, 1024)):
            for k in range(-1, n + 2):
                want = _sf_exact(k, n, p)
                got = binomial_sf(k, n, float(p))
                assert got == pytest.approx(float(want), rel=1e-12, abs=1e-300), (k, n, p)
    assert binomial_sf(100, 100, 0.5) == pytest.approx(2.0 ** -100, rel=1e-13)
    assert binomial_sf(0, 5, 0.3) == 1.0 and binomial_sf(6, 5, 0.3) == 0.0
    assert binomial_sf(1, 5, 0.0) == 0.0 and binomial_sf(5, 5, 1.0) == 1.0
    with pytest.raises(ValueError):
        binomial_sf(1, 5, 1.5)
    with pytest.raises(ValueError):
        binomial_sf(1, -1, 0.5)


def test_binomial_pmf_building_blocks_against_high_precision():
    with localcontext() as ctx:
        ctx.prec = 50
        half_log_2pi = (2 * Decimal(math.pi)).ln() / 2  # pi to double precision: fine at 1e-15
        log_fact = Decimal(0)
        for n in range(1, 1001):
            log_fact += Decimal(n).ln()
            if n in (1, 2, 5, 15, 16, 20, 35, 36, 50, 80, 81, 100, 500, 501, 1000):
                want = log_fact - (Decimal(n) + Decimal("0.5")) * Decimal(n).ln() + n - half_log_2pi
                assert _stirlerr(n) == pytest.approx(float(want), rel=1e-12, abs=1e-15), n
        # bd0(x, m) = x log(x/m) + m - x, where the plain formula cancels badly for x close to m
        for x, m in ((1000001, 1000000.0), (50500, 50000.0), (3, 2.5), (10, 1.0), (1, 30.0)):
            dx, dm = Decimal(x), Decimal(m)
            want = dx * (dx / dm).ln() + dm - dx
            assert _bd0(x, m) == pytest.approx(float(want), rel=1e-13), (x, m)
    # the log pmf, every x including the ends, against exact fractions
    for n, p in ((1, Fraction(1, 2)), (12, Fraction(1, 3)), (40, Fraction(1, 100)), (200, Fraction(7, 8))):
        for x in range(0, n + 1):
            want = math.comb(n, x) * p ** x * (1 - p) ** (n - x)
            assert _binom_logpmf(x, n, float(p)) == pytest.approx(math.log(want), rel=1e-13, abs=1e-13), (x, n)


def test_binomial_sf_large_n_transcribed():
    cases = {(60, 100, 0.5): 0.028443966820490444, (58, 100, 0.5): 0.06660530960360679,
             (50500, 100000, 0.5): 0.0007911799394257577, (30, 1000, 0.01): 2.059988850971949e-07,
             (700, 1000, 0.7): 0.5155935198141186}  # SciPy binom.sf(k - 1, n, p)
    for (k, n, p), want in cases.items():
        assert binomial_sf(k, n, p) == pytest.approx(want, rel=1e-12)
    # decreasing in k
    vals = [binomial_sf(k, 200, 0.37) for k in range(0, 202)]
    assert all(a >= b for a, b in zip(vals, vals[1:])) and vals[0] == 1.0 and vals[-1] == 0.0


def test_above_chance():
    assert above_chance(60, 100, 0.5)  # P(X >= 60) = 0.0284
    assert not above_chance(58, 100, 0.5)  # 0.0666
    assert not above_chance(60, 100, 0.5, alpha=0.01)
    assert above_chance(4, 4, 0.5, alpha=0.0625)  # P = 1/16 exactly: p <= alpha rejects
    assert not above_chance(4, 4, 0.5, alpha=0.06)
    assert not above_chance(0, 0, 0.5)
    assert above_chance(30, 100, 0.1) and not above_chance(12, 100, 0.1)
    with pytest.raises(ValueError):
        above_chance(5, 4, 0.5)
