"""ablate.stats: t quantiles, seed summaries, differences with the significance rule, Pareto fronts."""

import math

import pytest

from ablate.stats import (NOT_SIGNIFICANT, ONE_SEED, SIGNIFICANT, compare, pareto_front, summarize, t_cdf,
                          t_ppf)


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
