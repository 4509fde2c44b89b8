"""The distributions behind :mod:`ablate.analysis.stats`, without SciPy: Student's t (CDF and quantile, from the
regularised incomplete beta function by Numerical Recipes' continued fraction, ~1e-12), the standard normal (Acklam's
quantile refined by a Halley step, ~1e-15) and the exact binomial tail (Loader's saddle-point pmf, ~1e-13)."""

from __future__ import annotations

import functools
import math

__all__ = ["t_cdf", "t_ppf", "norm_ppf", "binomial_sf"]


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


@functools.lru_cache(maxsize=4096)  # reports ask the same few (p, df) thousands of times (one bisection is ~50 t_cdf)
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
# Normal quantile

_ACKLAM_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
             -3.066479806614716e+01, 2.506628277459239e+00)
_ACKLAM_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
             -1.328068155288572e+01)
_ACKLAM_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
             4.374664141464968e+00, 2.938163982698783e+00)
_ACKLAM_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def norm_ppf(p: float) -> float:
    """Standard normal quantile: ``x`` with ``Phi(x) == p``, for ``0 < p < 1``. ``norm_ppf(0.975) = 1.95996...``.

    Acklam's rational approximation (relative error 1.15e-9) refined by one Halley step on ``math.erfc``; the result
    is accurate to ~1e-15 relative. ``p > 0.5`` is mapped to the lower tail (``1 - p`` is exact there).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p > 0.5:
        return -norm_ppf(1.0 - p)
    if p == 0.5:
        return 0.0
    a, b, c, d = _ACKLAM_A, _ACKLAM_B, _ACKLAM_C, _ACKLAM_D
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        x = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
        x /= (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
        x /= ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0
    # Halley: e = Phi(x) - p, u = e / phi(x) (in log space: phi underflows far in the tail)
    e = 0.5 * math.erfc(-x / math.sqrt(2.0)) - p
    if e != 0.0:
        u = math.copysign(math.exp(math.log(abs(e)) + 0.5 * x * x + _LOG_SQRT_2PI), e)
        x -= u / (1.0 + 0.5 * x * u)
    return x


# ---------------------------------------------------------------------------------------------------------------
# Binomial tail


def _stirlerr(n: int) -> float:
    """``log(n!) - log(sqrt(2 pi n) (n/e)^n)`` (Loader 2000): lgamma for small n, the Stirling series above 15."""
    if n <= 15:
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - _LOG_SQRT_2PI
    nn = float(n) * n
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def _bd0(x: float, m: float) -> float:
    """``x log(x/m) + m - x`` without cancellation when ``x`` is close to ``m`` (Loader 2000)."""
    if abs(x - m) < 0.1 * (x + m):
        v = (x - m) / (x + m)
        s = (x - m) * v
        ej, v = 2.0 * x * v, v * v
        for j in range(1, 1000):
            ej *= v
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
        return s
    return x * math.log(x / m) + m - x


def _binom_logpmf(x: int, n: int, p: float) -> float:
    """``log P(X = x)``, ``X ~ Binomial(n, p)``, ``0 < p < 1``: Loader's saddle-point form, ~1e-15 relative even for
    large ``n`` (plain ``lgamma`` differences lose ~``n * 1e-16``)."""
    q = 1.0 - p
    if x == 0:
        return n * math.log1p(-p)
    if x == n:
        return n * math.log(p)
    lc = _stirlerr(n) - _stirlerr(x) - _stirlerr(n - x) - _bd0(x, n * p) - _bd0(n - x, n * q)
    return lc - 0.5 * (math.log(2.0 * math.pi * x) + math.log1p(-x / n))


def binomial_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``: the exact sum of the pmf over ``k..n`` (each term in log space, by
    Loader's saddle-point method; ~1e-13 relative). ``k <= 0`` gives 1, ``k > n`` gives 0. Costs ``n - k + 1``
    terms: fine for ``n`` up to ~10^6.
    """
    if int(k) != k or int(n) != n or n < 0:
        raise ValueError(f"need integers k and n >= 0, got k={k}, n={n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    k, n = int(k), int(n)
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    logs = [_binom_logpmf(i, n, p) for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))
