"""Small statistics for seeds and ablation tables: mean, std, 95% t-intervals, differences, Pareto fronts.

No SciPy: the Student-t quantile comes from the regularised incomplete beta function (Numerical Recipes' continued
fraction), accurate to ~1e-12, which is plenty for a table.

    s = summarize([2.31, 2.35, 2.33])          # Summary(n=3, mean=2.33, std=0.02, half_width=0.0497, ...)
    c = compare(base=[2.40, 2.42], other=[2.31, 2.35], paired=True)
    c.verdict                                   # "significant" | "not significant" | "n/a (1 seed)"
    pareto_front(tokens_per_s, val_loss, x_better="high", y_better="low")  # [True, False, ...]

Significance rule (documented in docs/training.md): a difference is *significant* only when

1. its 95% t-interval excludes 0 (paired over seeds when both sides ran the same seeds -- same data order and
   initialisation seed per seed -- else Welch), **and**
2. it is larger than the seed spread (the larger of the two sides' standard deviations).

Otherwise it is reported as "not significant"; with fewer than two seeds on a side, "n/a (1 seed)".

Verdicts an expert can sign (``verdict``). "Not significant" is not "no effect": with three seeds only a large
difference can be detected, so a non-significant difference must never be read as "holds". ``verdict`` reports one of

* **better** / **worse** -- the two-sided (1 - alpha) t-interval of ``other - base`` excludes 0 (paired or Welch, as in
  ``compare`` but without the spread rule); the direction decides the word (``lower_is_better``);
* **equivalent within ±m** -- not significant, and the two one-sided tests (``tost``, Schuirmann) at level alpha reject
  ``|Δ| >= m``, i.e. the (1 - 2 alpha) interval lies inside ``(-m, +m)``; the margin ``m`` must be stated up front;
* **inconclusive (detectable Δ ≥ x with n seeds)** -- neither: ``x = min_detectable_effect`` is the smallest true
  difference a two-sided t-test at alpha would detect with the requested power at the observed seed spread;
* **n/a** -- fewer than two values on a side.

A significant difference is always reported as better/worse, even when it is also inside the margin (a consistent
0.001 improvement *is* an improvement); ``Verdict.within_margin`` (the TOST result) lets a report add "but within ±m".

    v = verdict(base=[2.40, 2.42, 2.41], other=[2.31, 2.35, 2.33], margin=0.02, paired=True)
    v.label, v.text                              # "better", "better (Δ -0.080 [-0.105, -0.055])"

Counts (accuracies, pass rates): ``wilson_interval(k, n)`` (Wilson score interval), ``binomial_sf(k, n, p)`` = P(X >= k)
exactly, ``above_chance(k, n, chance)`` (one-sided exact binomial test); ``norm_ppf`` is the normal quantile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ablate.analysis.distributions import binomial_sf, norm_ppf, t_cdf, t_ppf
from ablate.analysis.pareto import pareto_front

__all__ = ["t_cdf", "t_ppf", "Summary", "summarize", "Comparison", "compare", "pareto_front", "CONFIDENCE",
           "SIGNIFICANT", "NOT_SIGNIFICANT", "ONE_SEED", "norm_ppf", "Equivalence", "tost", "min_detectable_effect",
           "Verdict", "verdict", "VERDICT_LABELS", "wilson_interval", "binomial_sf", "above_chance"]

CONFIDENCE = 0.95
SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "not significant"
ONE_SEED = "n/a (1 seed)"


# ---------------------------------------------------------------------------------------------------------------
# Summaries


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


@dataclass(frozen=True)
class Summary:
    """Mean of ``n`` values with sample std (ddof=1) and the two-sided t-interval at ``confidence``."""

    n: int
    mean: float | None
    std: float | None  # None when n < 2
    sem: float | None
    half_width: float | None  # t_{(1+c)/2, n-1} * sem; None when n < 2
    lo: float | None
    hi: float | None
    confidence: float = CONFIDENCE

    def fmt(self, spec: str = ".4f") -> str:
        """``"2.3412 ± 0.0123"`` (or just the mean with one value, ``"—"`` with none)."""
        if self.mean is None:
            return "—"
        if self.half_width is None:
            return format(self.mean, spec)
        return f"{self.mean:{spec}} ± {self.half_width:{spec}}"


def summarize(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Summary:
    """Mean, std (ddof=1) and t-interval of the finite ``values`` (None / NaN / inf are ignored)."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None, None, None, confidence)
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(1, mean, None, None, None, None, None, confidence)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    sem = std / math.sqrt(n)
    hw = t_ppf(0.5 + confidence / 2.0, n - 1) * sem
    return Summary(n, mean, std, sem, hw, mean - hw, mean + hw, confidence)


# ---------------------------------------------------------------------------------------------------------------
# Differences


@dataclass(frozen=True)
class Comparison:
    """``other - base``: the difference of means, its t-interval and the verdict of the significance rule."""

    delta: float | None
    lo: float | None
    hi: float | None
    spread: float | None  # the larger of the two sides' seed std
    method: str  # "paired" | "welch" | "none"
    verdict: str  # SIGNIFICANT | NOT_SIGNIFICANT | ONE_SEED | "n/a"
    n_base: int = 0
    n_other: int = 0

    @property
    def significant(self) -> bool:
        return self.verdict == SIGNIFICANT

    def fmt(self, spec: str = "+.4f") -> str:
        """``"-0.0312 (sig.)"``, ``"+0.0021 (n.s.)"``, ``"-0.0312"`` (one seed) or ``"—"``."""
        if self.delta is None:
            return "—"
        tag = {SIGNIFICANT: " (sig.)", NOT_SIGNIFICANT: " (n.s.)"}.get(self.verdict, "")
        return f"{self.delta:{spec}}{tag}"


def compare(base: Sequence[float | None], other: Sequence[float | None], *, paired: bool = False,
            confidence: float = CONFIDENCE) -> Comparison:
    """Compare ``other`` against ``base`` (e.g. final validation losses over seeds).

    ``paired=True``: ``base[i]`` and ``other[i]`` share seed ``i``; the interval is the t-interval of the per-seed
    differences (pairs with a missing side are dropped). Otherwise Welch's interval (unequal variances).
    """
    a_vals, b_vals = _samples(base, other, paired)
    sa, sb = summarize(a_vals, confidence), summarize(b_vals, confidence)
    if sa.mean is None or sb.mean is None:
        return Comparison(None, None, None, None, "none", "n/a", sa.n, sb.n)
    delta = sb.mean - sa.mean
    if sa.n < 2 or sb.n < 2:
        return Comparison(delta, None, None, None, "none", ONE_SEED, sa.n, sb.n)
    spread = max(sa.std or 0.0, sb.std or 0.0)
    q = 0.5 + confidence / 2.0
    if paired:
        d = summarize([b - a for a, b in zip(a_vals, b_vals)], confidence)
        lo, hi, method = d.lo, d.hi, "paired"
        if d.std == 0.0:  # identical differences: the interval collapses onto delta
            lo = hi = delta
    else:
        va, vb = (sa.std or 0.0) ** 2 / sa.n, (sb.std or 0.0) ** 2 / sb.n
        se = math.sqrt(va + vb)
        if se == 0.0:
            lo = hi = delta
        else:
            df = (va + vb) ** 2 / ((va ** 2 / (sa.n - 1) if va else 0.0) + (vb ** 2 / (sb.n - 1) if vb else 0.0))
            hw = t_ppf(q, df) * se
            lo, hi = delta - hw, delta + hw
        method = "welch"
    excludes_zero = lo is not None and hi is not None and (lo > 0.0 or hi < 0.0)
    verdict = SIGNIFICANT if excludes_zero and abs(delta) > spread else NOT_SIGNIFICANT
    return Comparison(delta, lo, hi, spread, method, verdict, sa.n, sb.n)


# ---------------------------------------------------------------------------------------------------------------
# Equivalence (TOST), detectable effects and expert verdicts


@dataclass(frozen=True)
class _Diff:
    """``other - base`` with its standard error and degrees of freedom (se/df are None below two values a side)."""

    delta: float | None
    se: float | None
    df: float | None
    sd: float | None  # paired: sd of the differences; Welch: pooled sd (for the detectable effect)
    method: str  # "paired" | "welch" | "none"
    n_base: int
    n_other: int


def _samples(base: Sequence[float | None], other: Sequence[float | None], paired: bool) -> tuple[list, list]:
    """The two samples a comparison uses: the seed pairs with both sides finite (``paired``), else each side's
    finite values."""
    if paired:
        pairs = [(float(a), float(b)) for a, b in zip(base, other)
                 if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return _finite(base), _finite(other)


def _difference(base: Sequence[float | None], other: Sequence[float | None], paired: bool) -> _Diff:
    a_vals, b_vals = _samples(base, other, paired)
    sa, sb = summarize(a_vals), summarize(b_vals)
    if sa.mean is None or sb.mean is None:
        return _Diff(None, None, None, None, "none", sa.n, sb.n)
    delta = sb.mean - sa.mean
    if sa.n < 2 or sb.n < 2:
        return _Diff(delta, None, None, None, "none", sa.n, sb.n)
    if paired:
        d = summarize([y - x for x, y in zip(a_vals, b_vals)])
        assert d.std is not None and d.sem is not None
        return _Diff(delta, d.sem, float(d.n - 1), d.std, "paired", sa.n, sb.n)
    assert sa.std is not None and sb.std is not None
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se = math.sqrt(va + vb)
    df = float(sa.n + sb.n - 2)  # irrelevant when se == 0 (the interval collapses)
    if se > 0.0:
        df = (va + vb) ** 2 / ((va ** 2 / (sa.n - 1) if va else 0.0) + (vb ** 2 / (sb.n - 1) if vb else 0.0))
    pooled = math.sqrt(((sa.n - 1) * sa.std ** 2 + (sb.n - 1) * sb.std ** 2) / (sa.n + sb.n - 2))
    return _Diff(delta, se, df, pooled, "welch", sa.n, sb.n)


def _check_alpha(alpha: float, upper: float = 1.0) -> None:
    if not 0.0 < alpha < upper:
        raise ValueError(f"alpha must be in (0, {upper}), got {alpha}")


def _check_margin(margin: float) -> float:
    margin = float(margin)
    if not (math.isfinite(margin) and margin > 0.0):
        raise ValueError(f"margin must be finite and > 0, got {margin}")
    return margin


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests of ``|other - base| < margin``: ``equivalent`` when the (1 - 2 alpha) interval
    ``[lo, hi]`` lies inside ``(-margin, +margin)`` (equivalently ``p_value < alpha``)."""

    delta: float | None
    lo: float | None  # the (1 - 2 alpha) interval (90% at alpha = 0.05); None below two values a side
    hi: float | None
    margin: float
    p_value: float | None  # max of the two one-sided p-values
    equivalent: bool
    n: int  # pairs (paired) or the smaller side (Welch)
    method: str  # "paired" | "welch" | "none"
    alpha: float = 0.05
    n_base: int = 0
    n_other: int = 0


def tost(base: Sequence[float | None], other: Sequence[float | None], margin: float, *, paired: bool = False,
         alpha: float = 0.05) -> Equivalence:
    """Schuirmann's two one-sided t-tests for equivalence of ``other`` and ``base`` within ``±margin``.

    H0: ``Δ <= -margin`` or ``Δ >= +margin`` (Δ = mean(other) - mean(base)); rejected at level ``alpha`` when both
    one-sided tests reject. Paired over seeds (pairs with a missing side dropped) or Welch, as in ``compare``.
    Fewer than two values on a side: never equivalent, no interval.
    """
    margin = _check_margin(margin)
    _check_alpha(alpha, 0.5)
    d = _difference(base, other, paired)
    n = min(d.n_base, d.n_other)
    if d.se is None or d.df is None or d.delta is None:
        return Equivalence(d.delta, None, None, margin, None, False, n, d.method, alpha, d.n_base, d.n_other)
    if d.se == 0.0:  # no spread: the interval is the point delta
        lo = hi = d.delta
        p_lower = 0.0 if d.delta > -margin else 1.0
        p_upper = 0.0 if d.delta < margin else 1.0
    else:
        hw = t_ppf(1.0 - alpha, d.df) * d.se
        lo, hi = d.delta - hw, d.delta + hw
        p_lower = t_cdf(-(d.delta + margin) / d.se, d.df)  # H0: delta <= -margin
        p_upper = t_cdf((d.delta - margin) / d.se, d.df)  # H0: delta >= +margin
    equivalent = -margin < lo and hi < margin
    return Equivalence(d.delta, lo, hi, margin, max(p_lower, p_upper), equivalent, n, d.method, alpha,
                       d.n_base, d.n_other)


def min_detectable_effect(sd: float | None, n: int, *, paired: bool = True, n_other: int | None = None,
                          alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true ``|Δ|`` a two-sided t-test at ``alpha`` detects with probability ``power``, at seed spread ``sd``.

    ``MDE = (t_{1-alpha/2, df} + t_{power, df}) * se`` -- the standard approximation (it neglects the far rejection
    tail and uses the central t in place of the noncentral one; slightly optimistic for df <= 3). Paired: ``sd`` is the
    sd of the per-seed differences, ``se = sd / sqrt(n)``, ``df = n - 1``. Unpaired: ``sd`` is the pooled sd,
    ``se = sd * sqrt(1/n + 1/n_other)``, ``df = n + n_other - 2`` (``n_other`` defaults to ``n``).
    ``math.inf`` when a side has fewer than two values.
    """
    _check_alpha(alpha)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    m = n if n_other is None else n_other
    if n < 2 or (not paired and m < 2):
        return math.inf
    if sd is None or not sd >= 0.0:
        raise ValueError(f"sd must be >= 0, got {sd}")
    if paired:
        se, df = sd / math.sqrt(n), n - 1
    else:
        se, df = sd * math.sqrt(1.0 / n + 1.0 / m), n + m - 2
    return (t_ppf(1.0 - alpha / 2.0, df) + t_ppf(power, df)) * se


VERDICT_LABELS = ("better", "worse", "equivalent", "inconclusive", "n/a")


@dataclass(frozen=True)
class Verdict:
    """What an expert can sign about ``other`` against ``base``: ``label`` in ``VERDICT_LABELS`` and a one-line
    ``text``. ``lo``/``hi`` is the two-sided (1 - alpha) interval of ``other - base``; ``within_margin`` is the TOST
    result (the (1 - 2 alpha) interval inside ``±margin``), also for better/worse ("better, but within ±m")."""

    label: str
    text: str
    delta: float | None
    lo: float | None
    hi: float | None
    margin: float
    mde: float | None  # min_detectable_effect at the observed spread; None below two values a side
    n: int  # pairs (paired) or the smaller side (Welch)
    method: str  # "paired" | "welch" | "none"
    within_margin: bool = False
    p_equivalence: float | None = None  # the TOST p-value
    n_base: int = 0
    n_other: int = 0

    def __str__(self) -> str:
        return self.text


def _decimals(scale: float, sig: int = 2) -> int:
    """Decimals that show ``scale`` with ``sig`` significant digits (0 when ``scale`` is 0 or not finite -> 3)."""
    if not (math.isfinite(scale) and scale > 0.0):
        return 3
    return min(12, max(0, sig - 1 - math.floor(math.log10(scale))))


def verdict(base: Sequence[float | None], other: Sequence[float | None], *, lower_is_better: bool = True,
            margin: float, paired: bool = False, alpha: float = 0.05, power: float = 0.8) -> Verdict:
    """Better / worse / equivalent within ±margin / inconclusive (with the detectable effect) / n/a.

    better/worse: the two-sided (1 - alpha) interval of ``other - base`` excludes 0 (whatever its size: a significant
    difference inside the margin is still better/worse, with ``within_margin=True``); else equivalent when ``tost``
    at ``alpha`` says so; else inconclusive, quoting ``min_detectable_effect`` at ``power`` for the observed spread
    (Welch: the pooled sd). Fewer than two values on a side: "n/a".
    """
    margin = _check_margin(margin)
    _check_alpha(alpha, 0.5)
    d = _difference(base, other, paired)
    n = min(d.n_base, d.n_other)
    if d.se is None or d.df is None or d.delta is None or d.sd is None:
        text = ONE_SEED if n == 1 else "n/a (no values)"
        return Verdict("n/a", text, d.delta, None, None, margin, None, n, d.method, False, None, d.n_base, d.n_other)
    eq = tost(base, other, margin, paired=paired, alpha=alpha)
    if d.se == 0.0:
        lo = hi = d.delta
    else:
        hw = t_ppf(1.0 - alpha / 2.0, d.df) * d.se
        lo, hi = d.delta - hw, d.delta + hw
    if paired:
        mde = min_detectable_effect(d.sd, n, paired=True, alpha=alpha, power=power)
    else:
        mde = min_detectable_effect(d.sd, d.n_base, paired=False, n_other=d.n_other, alpha=alpha, power=power)
    if lo > 0.0 or hi < 0.0:
        label = "better" if (hi < 0.0) == lower_is_better else "worse"
        k = _decimals(hi - lo if hi > lo else abs(d.delta), 2)  # the interval's width sets the shown digits
        text = f"{label} (Δ {d.delta:+.{k}f} [{lo:.{k}f}, {hi:.{k}f}])"
    elif eq.equivalent:
        label, text = "equivalent", f"equivalent within ±{margin:g}"
    else:
        seeds = f"{n}" if d.n_base == d.n_other else f"{d.n_base} vs {d.n_other}"
        label, text = "inconclusive", f"inconclusive (detectable Δ ≥ {mde:.{_decimals(mde, 2)}f} with {seeds} seeds)"
    return Verdict(label, text, d.delta, lo, hi, margin, mde, n, d.method, eq.equivalent, eq.p_value,
                   d.n_base, d.n_other)


# ---------------------------------------------------------------------------------------------------------------
# Proportions


def _check_counts(k: int, n: int) -> None:
    if int(k) != k or int(n) != n or n < 0 or not 0 <= k <= n:
        raise ValueError(f"need integers 0 <= k <= n, got k={k}, n={n}")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` at ``confidence``; ``(0.0, 1.0)`` when ``n == 0``.

    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``z = norm_ppf((1 + confidence) / 2)``; the bounds
    are exactly 0 at ``k == 0`` and exactly 1 at ``k == n``.
    """
    _check_counts(k, n)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return (0.0, 1.0)
    z = norm_ppf(0.5 + confidence / 2.0)
    p, z2 = k / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def above_chance(k: int, n: int, chance: float, alpha: float = 0.05) -> bool:
    """One-sided exact binomial test: are ``k`` successes in ``n`` trials above the ``chance`` rate?
    True when ``binomial_sf(k, n, chance) <= alpha``."""
    _check_counts(k, n)
    _check_alpha(alpha)
    return binomial_sf(k, n, chance) <= alpha


# ---------------------------------------------------------------------------------------------------------------
# Proportions clustered by seed (retrieval probes: trials within one trained model are not independent of each other)


@dataclass(frozen=True)
class ClusteredProportion:
    """An accuracy measured on several clusters (one trained model per seed) of binomial trials.

    ``mean``: the mean of the per-cluster proportions (each cluster weighs the same). With two clusters or more,
    ``lo``/``hi`` is the two-sided t-interval over the per-cluster proportions (n - 1 degrees of freedom), widened
    to contain the Wilson interval of the pooled trials (so seeds that all score 1.00 keep a binomial interval, not a
    zero-width one) and clipped to [0, 1]: ``method = "t over seeds"``. With one cluster it is the Wilson interval
    of its trials: ``method = "wilson"``. ``method = "none"`` when there are no trials."""

    mean: float | None
    lo: float | None
    hi: float | None
    clusters: int
    correct: int
    trials: int
    per_cluster: tuple[float, ...]
    method: str


def clustered_proportion(correct: Sequence[int], trials: Sequence[int],
                         confidence: float = CONFIDENCE) -> ClusteredProportion:
    """:class:`ClusteredProportion` of ``correct[i]`` successes out of ``trials[i]`` in cluster ``i`` (clusters
    without trials are left out)."""
    if len(correct) != len(trials):
        raise ValueError(f"correct and trials differ in length ({len(correct)} vs {len(trials)})")
    pairs = []
    for k, n in zip(correct, trials):
        _check_counts(k, n)
        if n:
            pairs.append((int(k), int(n)))
    if not pairs:
        return ClusteredProportion(None, None, None, 0, 0, 0, (), "none")
    k_all, n_all = sum(k for k, _ in pairs), sum(n for _, n in pairs)
    props = tuple(k / n for k, n in pairs)
    w_lo, w_hi = wilson_interval(k_all, n_all, confidence)
    if len(pairs) == 1:
        return ClusteredProportion(props[0], w_lo, w_hi, 1, k_all, n_all, props, "wilson")
    s = summarize(props, confidence)
    lo, hi = max(0.0, min(s.lo, w_lo)), min(1.0, max(s.hi, w_hi))
    return ClusteredProportion(s.mean, lo, hi, len(pairs), k_all, n_all, props, "t over seeds")


def clustered_above_chance(correct: Sequence[int], trials: Sequence[int], chance: float,
                           alpha: float = 0.05) -> bool:
    """Is the accuracy of :func:`clustered_proportion` above ``chance``? One cluster: the one-sided exact binomial
    test (:func:`above_chance`). Several: the one-sided t-test of the per-cluster proportions against ``chance``
    (n - 1 degrees of freedom; with no spread between clusters, their common value must exceed ``chance``) *and* the
    binomial test of the pooled trials must both reject at ``alpha``."""
    _check_alpha(alpha)
    c = clustered_proportion(correct, trials)
    if c.clusters == 0:
        return False
    if not above_chance(c.correct, c.trials, chance, alpha):
        return False
    if c.clusters == 1:
        return True
    s = summarize(c.per_cluster)
    if not s.sem:
        return s.mean > chance
    return 1.0 - t_cdf((s.mean - chance) / s.sem, c.clusters - 1) <= alpha
