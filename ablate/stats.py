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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["t_cdf", "t_ppf", "Summary", "summarize", "Comparison", "compare", "pareto_front", "CONFIDENCE",
           "SIGNIFICANT", "NOT_SIGNIFICANT", "ONE_SEED"]

CONFIDENCE = 0.95
SIGNIFICANT = "significant"
NOT_SIGNIFICANT = "not significant"
ONE_SEED = "n/a (1 seed)"


# ---------------------------------------------------------------------------------------------------------------
# Student t distribution


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (``df`` may be fractional, as in Welch)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if t == 0:
        return 0.5
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The quantile: ``t`` with ``t_cdf(t, df) == p`` (bisection to ~1e-12). ``t_ppf(0.975, 2) = 4.3027``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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
    if paired:
        pairs = [(float(a), float(b)) for a, b in zip(base, other)
                 if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))]
        a_vals, b_vals = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        a_vals, b_vals = _finite(base), _finite(other)
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
# Pareto front


def pareto_front(x: Sequence[float | None], y: Sequence[float | None], *, x_better: str = "high",
                 y_better: str = "low") -> list[bool]:
    """Which points are Pareto-optimal: no other point is at least as good on both axes and better on one.

    ``x_better`` / ``y_better``: ``"high"`` or ``"low"``. Points with a missing or non-finite coordinate are never
    on the front. Duplicated optimal points are all on the front.
    """
    for name, v in (("x_better", x_better), ("y_better", y_better)):
        if v not in ("high", "low"):
            raise ValueError(f"{name} must be 'high' or 'low', got {v!r}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    sx = 1.0 if x_better == "low" else -1.0
    sy = 1.0 if y_better == "low" else -1.0
    pts: list[tuple[float, float] | None] = []
    for a, b in zip(x, y):
        ok = a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))
        pts.append((sx * float(a), sy * float(b)) if ok else None)  # now both "lower is better"
    out = []
    for i, p in enumerate(pts):
        if p is None:
            out.append(False)
            continue
        dominated = any(q is not None and j != i and q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1])
                        for j, q in enumerate(pts))
        out.append(not dominated)
    return out
